/**
 * The destination policy of forwarding: which addresses and ports a client
 * may reach through the server. A client is authenticated, not trusted, so
 * by default it may not reach the server itself (loopback, every address of
 * its own interfaces), cloud metadata services, link-local, multicast or
 * broadcast addresses. Private ranges stay allowed unless asked otherwise.
 *
 * @module
 */

import { networkInterfaces } from "node:os";
import { AllowedIps, formatIp, parseCidr, parseIp } from "@wgstack/wireguard";
import { isIpv4Mapped } from "./_util.ts";
import { unrefTimer } from "./_timers.ts";

/** Why a destination was refused. */
export type RefusalReason =
  | "loopback"
  | "unspecified"
  | "this-network"
  | "own-address"
  | "link-local"
  | "metadata"
  | "multicast"
  | "broadcast"
  | "tunnel"
  | "private"
  | "rule"
  | "malformed";

/** One ordered `allow`/`deny` rule: a prefix and optionally port ranges. */
export interface PolicyRule {
  /** What a match does. */
  action: "allow" | "deny";
  /** The prefix, e.g. `"10.0.0.0/8"` or `"2001:db8::/32"`. */
  cidr: string;
  /** Inclusive port ranges; absent or empty: every port. */
  ports?: [number, number][];
}

/** An interface address as `Deno.networkInterfaces()` reports it. */
export interface PolicyInterface {
  /** `"IPv4"` or `"IPv6"`. */
  family: "IPv4" | "IPv6";
  /** Address text (an IPv6 address may carry a `%scope`). */
  address: string;
  /** `address/prefix`, when known (subnet-directed broadcast is computed from it). */
  cidr?: string;
}

/** Options of {@linkcode DestinationPolicy}. */
export interface DestinationPolicyOptions {
  /**
   * Rules checked in order; the first that matches decides. Strings use the
   * `--allow`/`--deny` syntax without the action, see {@linkcode parsePolicyRule}.
   * An `allow` rule lifts a built-in refusal (loopback, own address,
   * metadata, …) only when it names one host (/32 or /128): `allow
   * 127.0.0.1:8080` opens one local service, `allow 10.0.0.0/8` does not open
   * the server's own 10.x address.
   */
  rules?: PolicyRule[];
  /** Refuse RFC 1918, 100.64.0.0/10 (CGNAT) and fc00::/7 (ULA) too. Default false. */
  denyPrivate?: boolean;
  /**
   * Prefixes of the tunnel itself (e.g. the server's `Address` CIDRs): other
   * clients are not reachable through the forwarder. Refused as `"tunnel"`.
   */
  tunnelSubnets?: string[];
  /** The server's own interfaces; default `networkInterfaces()` of `node:os`. Read now and on refresh. */
  interfaces?: () => PolicyInterface[];
  /** Re-read the interfaces this often (ms); default 30 000, 0 for never. */
  refreshMs?: number;
}

/** Counters of a {@linkcode DestinationPolicy}. */
export interface DestinationPolicyStats {
  /** Destinations allowed. */
  allowed: number;
  /** Destinations refused, by reason. */
  refused: Partial<Record<RefusalReason, number>>;
  /** Addresses of the server's own interfaces known now (plus their broadcasts). */
  ownAddresses: number;
}

/** Built-in refusals, longest prefix wins (so the metadata /32 beats link-local /16). */
const BUILT_IN: [string, RefusalReason][] = [
  ["0.0.0.0/8", "this-network"], // RFC 791: "this network"; 0.0.0.0 is "this host"
  ["0.0.0.0/32", "unspecified"],
  ["127.0.0.0/8", "loopback"], // RFC 1122 §3.2.1.3
  ["169.254.0.0/16", "link-local"], // RFC 3927
  ["169.254.169.254/32", "metadata"], // AWS, GCP, Azure, OpenStack metadata service
  ["169.254.170.2/32", "metadata"], // AWS ECS task metadata
  ["224.0.0.0/4", "multicast"], // RFC 5771
  ["255.255.255.255/32", "broadcast"], // RFC 919 limited broadcast
  ["::/128", "unspecified"], // RFC 4291 §2.5.2
  ["::1/128", "loopback"], // RFC 4291 §2.5.3
  ["fe80::/10", "link-local"], // RFC 4291 §2.5.6
  ["fd00:ec2::254/128", "metadata"], // AWS IPv6 metadata service
  ["ff00::/8", "multicast"], // RFC 4291 §2.7
];

const PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"];

/**
 * The IPv4 addresses an IPv6 address stands for: IPv4-mapped
 * (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2), IPv4-compatible (`::a.b.c.d`,
 * deprecated by RFC 4291 §2.5.5.1) and NAT64 (`64:ff9b::/96`, RFC 6052, and
 * the local-use `64:ff9b:1::/48`, RFC 8215, read at each RFC 6052 prefix
 * length whose suffix is zero, since the operator picks one). Empty for
 * other addresses.
 */
export function embeddedIpv4(address: Uint8Array): Uint8Array[] {
  if (address.length !== 16) return [];
  const zeros = (from: number, to: number) => address.subarray(from, to).every((b) => b === 0);
  if (isIpv4Mapped(address)) return [address.slice(12)];
  if (zeros(0, 12)) {
    // :: and ::1 are IPv6's own; ::0.0.0.2 and up are IPv4-compatible.
    return zeros(12, 15) && address[15] <= 1 ? [] : [address.slice(12)];
  }
  const head = (address[0] << 8) | address[1];
  const second = (address[2] << 8) | address[3];
  if (head !== 0x0064 || second !== 0xff9b) return [];
  const third = (address[4] << 8) | address[5];
  if (zeros(4, 12)) return [address.slice(12)]; // 64:ff9b::/96
  if (third !== 0x0001) return [];
  // RFC 6052 §2.2: where the 32 IPv4 bits sit for each prefix length (bits
  // 64–71, byte 8, are always skipped) and where the zero suffix starts. A
  // layout counts when its suffix is zero and it does not read 0.0.0.0/8
  // (which a translator never reaches).
  const layouts: [number[], number][] = [
    [[6, 7, 9, 10], 11], // /48
    [[7, 9, 10, 11], 12], // /56
    [[9, 10, 11, 12], 13], // /64
    [[12, 13, 14, 15], 16], // /96
  ];
  const out: Uint8Array[] = [];
  for (const [idx, suffix] of layouts) {
    if (!zeros(suffix, 16) || address[idx[0]] === 0) continue;
    out.push(Uint8Array.from(idx, (i) => address[i]));
  }
  return out;
}

/**
 * Parses a rule's target: `CIDR`, `CIDR:PORTS` (IPv4), `[CIDR]:PORTS` (IPv6)
 * or a bare IPv6 CIDR. PORTS is a comma-separated list of ports and
 * `low-high` ranges.
 *
 * @throws {RangeError} When the text is not a prefix with optional ports.
 *
 * @example
 * ```ts
 * import { parsePolicyRule } from "./policy.ts";
 * parsePolicyRule("deny", "10.0.0.0/8:22,8000-8999");
 * // { action: "deny", cidr: "10.0.0.0/8", ports: [[22, 22], [8000, 8999]] }
 * parsePolicyRule("allow", "[2001:db8::/32]:443").ports; // [[443, 443]]
 * ```
 */
export function parsePolicyRule(action: "allow" | "deny", text: string): PolicyRule {
  let cidr = text;
  let ports: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  if (bracket) {
    cidr = bracket[1];
    ports = bracket[2];
  } else if (text.indexOf(":") === text.lastIndexOf(":") && text.includes(":")) {
    const colon = text.indexOf(":");
    cidr = text.slice(0, colon);
    ports = text.slice(colon + 1);
  }
  parseCidr(cidr); // validates
  const rule: PolicyRule = { action, cidr };
  if (ports !== undefined) rule.ports = parsePorts(ports, text);
  return rule;
}

function parsePorts(text: string, whole: string): [number, number][] {
  const out: [number, number][] = [];
  for (const item of text.split(",")) {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(item);
    const lo = m ? Number(m[1]) : NaN;
    const hi = m ? Number(m[2] ?? m[1]) : NaN;
    if (!(lo >= 0 && hi <= 65535 && lo <= hi)) {
      throw new RangeError(
        `Invalid ports in rule ${
          JSON.stringify(whole)
        }: expected PORT or LOW-HIGH, comma-separated`,
      );
    }
    out.push([lo, hi]);
  }
  return out;
}

interface CompiledRule {
  allow: boolean;
  table: AllowedIps<true>;
  host: boolean;
  ports?: [number, number][];
}

/**
 * Decides whether a client may reach a destination. Addresses are
 * normalised first (IPv4-mapped, IPv4-compatible and NAT64 forms are also
 * checked as the IPv4 address they carry), then the ordered rules are
 * checked, then the built-in refusals:
 *
 * - loopback (127.0.0.0/8, ::1), unspecified (0.0.0.0, ::), "this network" 0.0.0.0/8;
 * - every address of the server's own interfaces, and their subnet-directed broadcasts;
 * - link-local (169.254.0.0/16, fe80::/10) and cloud metadata
 *   (169.254.169.254, 169.254.170.2, fd00:ec2::254);
 * - multicast (224.0.0.0/4, ff00::/8) and limited broadcast 255.255.255.255;
 * - the tunnel subnets, when given;
 * - private ranges, only with {@linkcode DestinationPolicyOptions.denyPrivate}.
 *
 * @example
 * ```ts
 * import { DestinationPolicy } from "./policy.ts";
 * const policy = new DestinationPolicy({
 *   interfaces: () => [{ family: "IPv4", address: "192.0.2.10", cidr: "192.0.2.10/24" }],
 *   refreshMs: 0,
 * });
 * policy.check("::ffff:169.254.169.254", 80); // "metadata"
 * policy.check("192.0.2.255", 53); // "broadcast"
 * policy.check("198.51.100.7", 443); // undefined: allowed
 * ```
 */
export class DestinationPolicy {
  #rules: CompiledRule[];
  #builtIn = new AllowedIps<RefusalReason>();
  #own = new AllowedIps<RefusalReason>();
  #ownCount = 0;
  #interfaces: () => PolicyInterface[];
  #timer: ReturnType<typeof setInterval> | undefined;
  #allowed = 0;
  #refused: Partial<Record<RefusalReason, number>> = {};

  /** Compiles the rules and reads the interfaces. Throws `RangeError` on a bad rule or prefix. */
  constructor(options: DestinationPolicyOptions = {}) {
    this.#rules = (options.rules ?? []).map((r) => {
      if (r.action !== "allow" && r.action !== "deny") {
        throw new RangeError(`A rule's action is "allow" or "deny", not ${String(r.action)}`);
      }
      const cidr = parseCidr(r.cidr);
      const table = new AllowedIps<true>();
      table.insert(cidr, true);
      return {
        allow: r.action === "allow",
        table,
        host: cidr.prefix === cidr.address.length * 8,
        ports: r.ports && r.ports.length > 0 ? r.ports : undefined,
      };
    });
    // Built-ins last: on an equal prefix, theirs is the reason given.
    if (options.denyPrivate) {
      for (const cidr of PRIVATE) this.#builtIn.insert(parseCidr(cidr), "private");
    }
    for (const cidr of options.tunnelSubnets ?? []) this.#builtIn.insert(parseCidr(cidr), "tunnel");
    for (const [cidr, reason] of BUILT_IN) this.#builtIn.insert(parseCidr(cidr), reason);
    this.#interfaces = options.interfaces ?? defaultInterfaces;
    this.refresh();
    const every = options.refreshMs ?? 30_000;
    if (every > 0) {
      this.#timer = setInterval(() => this.refresh(), every);
      unrefTimer(this.#timer);
    }
  }

  /** Re-reads the server's interface addresses (also done periodically). */
  refresh(): void {
    let list: PolicyInterface[];
    try {
      list = this.#interfaces();
    } catch {
      return; // keep what we knew
    }
    const own = new AllowedIps<RefusalReason>();
    for (const iface of list) {
      const address = parseIp(iface.address.split("%")[0]);
      if (!address) continue;
      own.insert({ address, prefix: address.length * 8 }, "own-address");
      const prefix = iface.cidr ? Number(iface.cidr.slice(iface.cidr.indexOf("/") + 1)) : NaN;
      if (address.length === 4 && prefix >= 0 && prefix <= 30) {
        const broadcast = address.slice();
        for (let bit = prefix; bit < 32; bit++) broadcast[bit >> 3] |= 0x80 >> (bit & 7);
        own.insert({ address: broadcast, prefix: 32 }, "broadcast");
      }
    }
    this.#own = own;
    this.#ownCount = own.size;
  }

  /**
   * The reason `address` (text or 4/16 bytes) on `port` is refused, or
   * `undefined` when it is allowed. Counts the outcome.
   */
  check(address: string | Uint8Array, port: number): RefusalReason | undefined {
    const reason = this.#decide(address, port);
    if (reason === undefined) this.#allowed++;
    else this.#refused[reason] = (this.#refused[reason] ?? 0) + 1;
    return reason;
  }

  #decide(address: string | Uint8Array, port: number): RefusalReason | undefined {
    const bytes = typeof address === "string" ? parseIp(address.split("%")[0]) : address;
    if (!bytes || (bytes.length !== 4 && bytes.length !== 16)) return "malformed";
    // An IPv4 address has one form (nothing allocated for it).
    const forms = bytes.length === 4 ? null : [bytes, ...embeddedIpv4(bytes)];
    let builtIn = this.#own.lookup(bytes) ?? this.#builtIn.lookup(bytes);
    for (let i = 1; forms && !builtIn && i < forms.length; i++) {
      builtIn = this.#own.lookup(forms[i]) ?? this.#builtIn.lookup(forms[i]);
    }
    for (const rule of this.#rules) {
      if (rule.ports && !rule.ports.some(([lo, hi]) => port >= lo && port <= hi)) continue;
      const match = forms
        ? forms.some((form) => rule.table.lookup(form))
        : rule.table.lookup(bytes);
      if (!match) continue;
      if (!rule.allow) return "rule";
      if (builtIn === undefined || rule.host) return undefined;
      return builtIn;
    }
    return builtIn;
  }

  /**
   * True when `address` is this machine: one of its interface addresses,
   * loopback or unspecified (in any of the normalised forms). Not counted.
   */
  isOwnAddress(address: string | Uint8Array): boolean {
    const bytes = typeof address === "string" ? parseIp(address.split("%")[0]) : address;
    if (!bytes || (bytes.length !== 4 && bytes.length !== 16)) return false;
    for (const form of [bytes, ...embeddedIpv4(bytes)]) {
      if (this.#own.lookup(form) === "own-address") return true;
      const b = this.#builtIn.lookup(form);
      if (b === "loopback" || b === "unspecified" || b === "this-network") return true;
    }
    return false;
  }

  /** Counters and the number of own addresses known. */
  stats(): DestinationPolicyStats {
    return { allowed: this.#allowed, refused: { ...this.#refused }, ownAddresses: this.#ownCount };
  }

  /** The addresses treated as the server's own (for logs and tests). */
  ownAddresses(): string[] {
    return [
      ...this.#own.entriesOf("own-address"),
      ...this.#own.entriesOf("broadcast"),
    ].map((c) => formatIp(c.address));
  }

  /** Stops the periodic refresh. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

function defaultInterfaces(): PolicyInterface[] {
  const out: PolicyInterface[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) {
      out.push({
        family: i.family === "IPv6" ? "IPv6" : "IPv4",
        address: i.address,
        cidr: i.cidr ?? undefined,
      });
    }
  }
  return out;
}
