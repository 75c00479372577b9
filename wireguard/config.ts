/**
 * WireGuard configuration files: the `wg setconf` format and the wg-quick
 * superset (`Address`, `DNS`, `MTU`, `Table`, `PreUp`…`PostDown`,
 * `SaveConfig`), parsed into plain values and formatted back.
 *
 * The parser follows `wg(8)` and `wg-quick(8)`: key names are
 * case-insensitive, `#` starts a comment anywhere on a line, a value is what
 * follows the first `=` (base64 keys end in `=`), list values are
 * comma-separated and list keys may repeat. Errors name the file and line.
 *
 * @module
 */

import { type Cidr, formatCidr, parseCidr } from "./allowed_ips.ts";
import { formatIp, type IpPrefix, parseIp, parseIpPrefix } from "./ip.ts";
import { keyFromBase64, keyToBase64 } from "./keys.ts";

/** Length in bytes of a Curve25519 key or a preshared key. */
const KEY_BYTES = 32;

/** A parsed configuration file: one `[Interface]` and any number of `[Peer]`s. */
export interface WgConfig {
  /** The `[Interface]` section. */
  interface: WgInterface;
  /** The `[Peer]` sections, in file order; public keys are unique. */
  peers: WgPeer[];
}

/**
 * The `[Interface]` section. Fields marked wg-quick are not understood by
 * `wg setconf`; the parser only sets optional fields that appear in the file.
 */
export interface WgInterface {
  /** `PrivateKey`: the 32-byte Curve25519 private key. */
  privateKey: Uint8Array;
  /** `ListenPort`: the UDP port (0 means pick one). */
  listenPort?: number;
  /** `FwMark`: the firewall mark of outgoing packets; 0 (`off`) means none. */
  fwMark?: number;
  /** `Address` (wg-quick): interface addresses with their prefix, host bits kept. */
  addresses?: IpPrefix[];
  /** `DNS` (wg-quick): name server addresses. */
  dns?: Uint8Array[];
  /** `DNS` (wg-quick): the non-address `DNS` entries, which are search domains. */
  dnsSearch?: string[];
  /** `MTU` (wg-quick). */
  mtu?: number;
  /** `Table` (wg-quick): `off`, `auto`, a table number or name. */
  table?: string;
  /** `PreUp` (wg-quick): shell commands, in order. */
  preUp?: string[];
  /** `PostUp` (wg-quick): shell commands, in order. */
  postUp?: string[];
  /** `PreDown` (wg-quick): shell commands, in order. */
  preDown?: string[];
  /** `PostDown` (wg-quick): shell commands, in order. */
  postDown?: string[];
  /** `SaveConfig` (wg-quick). */
  saveConfig?: boolean;
}

/** A `[Peer]` section. */
export interface WgPeer {
  /** `PublicKey`: the peer's 32-byte Curve25519 public key. */
  publicKey: Uint8Array;
  /** `PresharedKey`: an optional 32-byte symmetric key mixed into the handshake. */
  presharedKey?: Uint8Array;
  /** `AllowedIPs`: the prefixes routed to this peer, host bits cleared, without repeats. */
  allowedIps: Cidr[];
  /** `Endpoint`: where to send to before the peer has been heard from. */
  endpoint?: ConfigEndpoint;
  /** `PersistentKeepalive`: seconds between keepalives; 0 (`off`) disables them. */
  persistentKeepalive?: number;
}

/** A peer endpoint as written: a host name or IP address (no brackets) and a port. */
export interface ConfigEndpoint {
  /** A host name, IPv4 address or IPv6 address (optionally with a `%zone`). */
  host: string;
  /** UDP port, 1–65535. */
  port: number;
}

/** Something in a file that is accepted but probably not what the author meant. */
export interface ConfigWarning {
  /** The file name given to {@linkcode parseConfig}, if any. */
  filename?: string;
  /** 1-based line number. */
  line: number;
  /** What is wrong, e.g. `unknown key "Foo" in [Peer] ignored`. */
  message: string;
}

/** Options of {@linkcode parseConfig}. */
export interface ParseConfigOptions {
  /** The name used in error and warning messages, e.g. `wg0.conf`. */
  filename?: string;
}

/** Options of {@linkcode formatConfig}. */
export interface FormatConfigOptions {
  /**
   * Include the wg-quick keys (default true). With false the output is what
   * `wg setconf` accepts: no `Address`, `DNS`, `MTU`, `Table`, `PreUp`,
   * `PostUp`, `PreDown`, `PostDown` or `SaveConfig`.
   */
  wgQuick?: boolean;
}

/**
 * An invalid configuration file. The message starts with the location,
 * e.g. `wg0.conf:7: invalid PublicKey: expected a 32-byte key in base64 (44 characters)`.
 */
export class ConfigError extends Error {
  /** The file name given to {@linkcode parseConfig}, if any. */
  readonly filename: string | undefined;
  /** 1-based line number, or undefined when the problem is the file as a whole. */
  readonly line: number | undefined;
  /** The message without the location prefix. */
  readonly reason: string;

  /**
   * Creates an error whose message is `reason` prefixed with the location.
   *
   * @param reason What is wrong, without the location.
   * @param line The 1-based line, when there is one.
   * @param filename The file name, when known.
   */
  constructor(reason: string, line?: number, filename?: string) {
    super(withLocation(reason, line, filename));
    this.name = "ConfigError";
    this.reason = reason;
    this.line = line;
    this.filename = filename;
  }
}

function withLocation(reason: string, line?: number, filename?: string): string {
  if (filename !== undefined && line !== undefined) return `${filename}:${line}: ${reason}`;
  if (filename !== undefined) return `${filename}: ${reason}`;
  if (line !== undefined) return `line ${line}: ${reason}`;
  return reason.charAt(0).toUpperCase() + reason.slice(1);
}

// ---------------------------------------------------------------------------
// Values

/**
 * Decodes a base64 key with {@linkcode keyFromBase64} (canonical 44-character
 * form only, like `wg`), or calls `invalid` with its reason.
 */
function decodeKey(text: string, invalid: (reason: string) => never): Uint8Array {
  try {
    return keyFromBase64(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return invalid(reason.charAt(0).toLowerCase() + reason.slice(1));
  }
}

function encodeKey(key: Uint8Array, what: string): string {
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) {
    throw new TypeError(`${what} must be a Uint8Array of ${KEY_BYTES} bytes`);
  }
  return keyToBase64(key);
}

/** A decimal integer without sign, spaces or leading zeros, or null. */
function parseDecimal(text: string, max: number): number | null {
  if (!/^(0|[1-9][0-9]{0,9})$/.test(text)) return null;
  const value = Number(text);
  return value <= max ? value : null;
}

/** One DNS label: letters, digits, `_` and inner `-`, 1–63 characters. */
const LABEL = "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?";
const HOSTNAME_PATTERN = new RegExp(`^${LABEL}(?:\\.${LABEL})*\\.?$`);

/** True for a plausible host or domain name; an all-digit last label is not one (RFC 3696 §2). */
function isHostname(text: string): boolean {
  if (text.length > 253 || !HOSTNAME_PATTERN.test(text)) return false;
  const labels = text.replace(/\.$/, "").split(".");
  return !/^[0-9]+$/.test(labels[labels.length - 1]);
}

/** An IPv6 address with an optional `%zone`, as accepted inside `[...]`. */
function isIpv6Host(text: string): boolean {
  const percent = text.indexOf("%");
  const address = parseIp(percent < 0 ? text : text.slice(0, percent));
  if (address === null || address.length !== 16) return false;
  return percent < 0 || /^[A-Za-z0-9_.-]{1,15}$/.test(text.slice(percent + 1));
}

function parseEndpoint(text: string): ConfigEndpoint | null {
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") return null;
    host = text.slice(1, close);
    if (!isIpv6Host(host)) return null;
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon < 0) return null;
    host = text.slice(0, colon);
    if (host.includes(":")) return null; // a bare IPv6 address needs brackets
    if (parseIp(host) === null && !isHostname(host)) return null;
    portText = text.slice(colon + 1);
  }
  const port = parseDecimal(portText, 65535);
  if (port === null || port === 0) return null;
  return { host, port };
}

function formatEndpoint(endpoint: ConfigEndpoint): string {
  const { host, port } = endpoint;
  if (
    typeof host !== "string" ||
    (host.includes(":") ? !isIpv6Host(host) : !isHostname(host) && parseIp(host) === null)
  ) {
    throw new TypeError(`Endpoint host ${JSON.stringify(host)} is not a host name or IP address`);
  }
  checkInteger(port, 1, 65535, "Endpoint port");
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** `FwMark`: `off`, a decimal number or a `0x` hex number up to 2^32 - 1. */
function parseFwMark(text: string): number | null {
  if (text.toLowerCase() === "off") return 0;
  if (/^0[xX][0-9A-Fa-f]{1,8}$/.test(text)) return parseInt(text.slice(2), 16);
  return parseDecimal(text, 0xffffffff);
}

function checkInteger(value: unknown, min: number, max: number, what: string): void {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${what} must be an integer from ${min} to ${max}, not ${value}`);
  }
}

// ---------------------------------------------------------------------------
// Parsing

/** How a section's single-valued keys remember where they were set. */
type SeenKeys = Map<string, number>;

interface PeerDraft {
  line: number;
  publicKey?: Uint8Array;
  publicKeyLine?: number;
  presharedKey?: Uint8Array;
  allowedIps: Cidr[];
  allowedIpsSeen: Set<string>;
  endpoint?: ConfigEndpoint;
  persistentKeepalive?: number;
  seen: SeenKeys;
}

/** Keys of `[Interface]`, lowercased → canonical spelling. */
const INTERFACE_KEYS: ReadonlyMap<string, string> = new Map(
  [
    "PrivateKey",
    "ListenPort",
    "FwMark",
    "Address",
    "DNS",
    "MTU",
    "Table",
    "PreUp",
    "PostUp",
    "PreDown",
    "PostDown",
    "SaveConfig",
  ].map((k) => [k.toLowerCase(), k]),
);

/** Keys of `[Peer]`, lowercased → canonical spelling. */
const PEER_KEYS: ReadonlyMap<string, string> = new Map(
  ["PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive"].map((
    k,
  ) => [k.toLowerCase(), k]),
);

/** Keys that may appear once per section; a repeat overrides with a warning. */
const SINGLE_KEYS = new Set([
  "PrivateKey",
  "ListenPort",
  "FwMark",
  "MTU",
  "Table",
  "SaveConfig",
  "PublicKey",
  "PresharedKey",
  "Endpoint",
  "PersistentKeepalive",
]);

const PREFIX_EXPECTATION = "expected an IP address with an optional /prefix";

/**
 * Parses a `wg` or wg-quick configuration file.
 *
 * Unknown keys are skipped with a warning, like other things that are
 * accepted but suspicious (a key set twice in a section, a prefix listed for
 * two peers, an empty command). Anything else that is wrong throws a
 * {@linkcode ConfigError} naming the line.
 *
 * @throws {ConfigError} For a malformed line, an invalid value, a key outside
 * a section, an unknown section, a second `[Interface]`, a missing
 * `[Interface]` or `PrivateKey`, a peer without `PublicKey`, or two peers
 * with the same `PublicKey`.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * const { config, warnings } = parseConfig(
 *   `[Interface]
 * PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
 * ListenPort = 51820
 *
 * [Peer]
 * PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
 * AllowedIPs = 10.0.0.2/32, fd00::2/128
 * `,
 *   { filename: "wg0.conf" },
 * );
 * config.interface.listenPort; // 51820
 * config.peers[0].allowedIps.length; // 2
 * warnings.length; // 0
 * ```
 */
export function parseConfig(
  text: string,
  options: ParseConfigOptions = {},
): { config: WgConfig; warnings: ConfigWarning[] } {
  if (typeof text !== "string") throw new TypeError("A configuration must be given as a string");
  const { filename } = options;
  const warnings: ConfigWarning[] = [];
  const fail = (line: number | undefined, reason: string): never => {
    throw new ConfigError(reason, line, filename);
  };
  const warn = (line: number, message: string) => {
    warnings.push(filename === undefined ? { line, message } : { filename, line, message });
  };

  let iface: Partial<WgInterface> | undefined;
  let interfaceLine = 0;
  const interfaceSeen: SeenKeys = new Map();
  const peers: PeerDraft[] = [];
  let section: "interface" | "peer" | undefined;
  /** Which peer (by its [Peer] line) each prefix went to, for the overlap warning. */
  const prefixOwners = new Map<string, number>();

  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n|\r/);
  for (let index = 0; index < lines.length; index++) {
    const line = index + 1;
    const hash = lines[index].indexOf("#");
    const content = (hash < 0 ? lines[index] : lines[index].slice(0, hash)).trim();
    if (content === "") continue;

    if (content.startsWith("[")) {
      if (!content.endsWith("]")) fail(line, `invalid section header "${content}"`);
      const name = content.slice(1, -1).trim().toLowerCase();
      if (name === "interface") {
        if (iface !== undefined) {
          fail(line, `duplicate [Interface] section (the first is on line ${interfaceLine})`);
        }
        iface = {};
        interfaceLine = line;
        section = "interface";
      } else if (name === "peer") {
        peers.push({ line, allowedIps: [], allowedIpsSeen: new Set(), seen: new Map() });
        section = "peer";
      } else {
        fail(line, `unknown section "${content}": expected [Interface] or [Peer]`);
      }
      continue;
    }

    const equals = content.indexOf("=");
    if (equals < 0) fail(line, `expected "Key = Value", got "${content}"`);
    const rawKey = content.slice(0, equals).trim();
    const value = content.slice(equals + 1).trim();
    if (rawKey === "") fail(line, `expected "Key = Value", got "${content}"`);
    if (section === undefined) {
      fail(line, `${rawKey} outside a section: expected [Interface] or [Peer] first`);
    }

    const known = (section === "interface" ? INTERFACE_KEYS : PEER_KEYS).get(rawKey.toLowerCase());
    if (known === undefined) {
      const where = section === "interface" ? "[Interface]" : "[Peer]";
      const elsewhere = (section === "interface" ? PEER_KEYS : INTERFACE_KEYS).get(
        rawKey.toLowerCase(),
      );
      warn(
        line,
        elsewhere === undefined
          ? `unknown key "${rawKey}" in ${where} ignored`
          : `${elsewhere} belongs in ${
            section === "interface" ? "[Peer]" : "[Interface]"
          }, not ${where}; ignored`,
      );
      continue;
    }
    const seen = section === "interface" ? interfaceSeen : peers[peers.length - 1].seen;
    if (SINGLE_KEYS.has(known)) {
      const first = seen.get(known);
      if (first !== undefined) {
        warn(line, `${known} is set again (first on line ${first}); the last value wins`);
      }
      seen.set(known, line);
    }
    const invalid = (expectation: string, item?: string): never =>
      fail(line, `invalid ${known}${item === undefined ? "" : ` "${item}"`}: ${expectation}`);
    const items = (): string[] => value.split(",").map((s) => s.trim()).filter((s) => s !== "");

    if (section === "interface") {
      const i = iface!;
      switch (known) {
        case "PrivateKey":
          i.privateKey = decodeKey(value, invalid);
          break;
        case "ListenPort":
          i.listenPort = parseDecimal(value, 65535) ??
            invalid("expected a port number from 0 to 65535");
          break;
        case "FwMark":
          i.fwMark = parseFwMark(value) ??
            invalid(`expected "off" or a number from 0 to 0xffffffff (decimal or 0x hex)`);
          break;
        case "Address":
          for (const item of items()) {
            (i.addresses ??= []).push(parseIpPrefix(item) ?? invalid(PREFIX_EXPECTATION, item));
          }
          break;
        case "DNS":
          for (const item of items()) {
            const address = parseIp(item);
            if (address !== null) (i.dns ??= []).push(address);
            else if (isHostname(item)) (i.dnsSearch ??= []).push(item);
            else invalid("expected an IP address or a search domain", item);
          }
          break;
        case "MTU":
          i.mtu = parseDecimal(value, 65535) ?? invalid("expected a number from 68 to 65535");
          if (i.mtu < 68) invalid("expected a number from 68 to 65535");
          break;
        case "Table":
          if (!/^[A-Za-z0-9_.-]+$/.test(value)) {
            invalid(`expected "off", "auto", or a routing table number or name`);
          }
          i.table = value;
          break;
        case "SaveConfig":
          if (value !== "true" && value !== "false") invalid(`expected "true" or "false"`);
          i.saveConfig = value === "true";
          break;
        default: {
          // PreUp, PostUp, PreDown, PostDown: shell commands kept verbatim.
          const field = (known.charAt(0).toLowerCase() + known.slice(1)) as
            | "preUp"
            | "postUp"
            | "preDown"
            | "postDown";
          if (value === "") warn(line, `empty ${known} command ignored`);
          else (i[field] ??= []).push(value);
        }
      }
      continue;
    }

    const peer = peers[peers.length - 1];
    switch (known) {
      case "PublicKey":
        peer.publicKey = decodeKey(value, invalid);
        peer.publicKeyLine = line;
        break;
      case "PresharedKey":
        peer.presharedKey = decodeKey(value, invalid);
        break;
      case "AllowedIPs":
        for (const item of items()) {
          let cidr: Cidr;
          try {
            cidr = parseCidr(item);
          } catch {
            invalid(PREFIX_EXPECTATION, item);
          }
          const text = formatCidr(cidr!);
          if (peer.allowedIpsSeen.has(text)) continue;
          peer.allowedIpsSeen.add(text);
          peer.allowedIps.push(cidr!);
          const owner = prefixOwners.get(text);
          if (owner !== undefined) {
            warn(
              line,
              `AllowedIPs ${text} is also given to the peer on line ${owner}; the later peer gets it`,
            );
          }
          prefixOwners.set(text, peer.line);
        }
        break;
      case "Endpoint":
        peer.endpoint = parseEndpoint(value) ??
          invalid(`expected host:port or [IPv6]:port with a port from 1 to 65535`, value);
        break;
      case "PersistentKeepalive":
        peer.persistentKeepalive = value.toLowerCase() === "off"
          ? 0
          : parseDecimal(value, 65535) ?? invalid(`expected "off" or seconds from 0 to 65535`);
        break;
    }
  }

  if (iface === undefined) fail(undefined, "missing [Interface] section");
  if (iface!.privateKey === undefined) fail(interfaceLine, "[Interface] has no PrivateKey");

  const keyOwners = new Map<string, number>();
  const outPeers: WgPeer[] = [];
  for (const draft of peers) {
    if (draft.publicKey === undefined) fail(draft.line, "[Peer] has no PublicKey");
    const id = draft.publicKey!.join(",");
    const other = keyOwners.get(id);
    if (other !== undefined) {
      fail(
        draft.publicKeyLine,
        `duplicate peer PublicKey (also used by the peer on line ${other})`,
      );
    }
    keyOwners.set(id, draft.line);
    const peer: WgPeer = { publicKey: draft.publicKey!, allowedIps: draft.allowedIps };
    if (draft.presharedKey !== undefined) peer.presharedKey = draft.presharedKey;
    if (draft.endpoint !== undefined) peer.endpoint = draft.endpoint;
    if (draft.persistentKeepalive !== undefined) {
      peer.persistentKeepalive = draft.persistentKeepalive;
    }
    outPeers.push(peer);
  }
  return { config: { interface: iface as WgInterface, peers: outPeers }, warnings };
}

// ---------------------------------------------------------------------------
// Formatting

/**
 * Writes a configuration file that {@linkcode parseConfig} reads back to an
 * equal value. With `{ wgQuick: false }` the wg-quick keys are left out and
 * the result is what `wg setconf` accepts.
 *
 * @throws {TypeError} When a key is not 32 bytes, an address not 4 or 16
 * bytes, or an endpoint host not a host name or IP address.
 * @throws {RangeError} When a number is out of range, or a command or table
 * cannot be written on one line (it contains a newline or `#`).
 *
 * @example
 * ```ts
 * import { formatConfig, parseConfig } from "./config.ts";
 * const text = `[Interface]
 * PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
 * Address = 10.0.0.1/24
 * `;
 * const { config } = parseConfig(text);
 * formatConfig(config, { wgQuick: false });
 * // "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n"
 * ```
 */
export function formatConfig(config: WgConfig, options: FormatConfigOptions = {}): string {
  const wgQuick = options.wgQuick ?? true;
  const i = config.interface;
  const out: string[] = ["[Interface]"];
  const put = (key: string, value: string) => out.push(`${key} = ${value}`);

  put("PrivateKey", encodeKey(i.privateKey, "PrivateKey"));
  if (i.listenPort !== undefined) {
    checkInteger(i.listenPort, 0, 65535, "ListenPort");
    put("ListenPort", String(i.listenPort));
  }
  if (i.fwMark !== undefined) {
    checkInteger(i.fwMark, 0, 0xffffffff, "FwMark");
    put("FwMark", i.fwMark === 0 ? "off" : `0x${i.fwMark.toString(16)}`);
  }
  if (wgQuick) {
    if (i.addresses !== undefined && i.addresses.length > 0) {
      put("Address", i.addresses.map(formatPrefix).join(", "));
    }
    const dns = [...(i.dns ?? []).map(formatAddress), ...(i.dnsSearch ?? []).map(formatDomain)];
    if (dns.length > 0) put("DNS", dns.join(", "));
    if (i.mtu !== undefined) {
      checkInteger(i.mtu, 68, 65535, "MTU");
      put("MTU", String(i.mtu));
    }
    if (i.table !== undefined) {
      if (typeof i.table !== "string" || !/^[A-Za-z0-9_.-]+$/.test(i.table)) {
        throw new RangeError(
          `Table ${JSON.stringify(i.table)} is not "off", "auto", or a table number or name`,
        );
      }
      put("Table", i.table);
    }
    for (
      const [key, commands] of [
        ["PreUp", i.preUp],
        ["PostUp", i.postUp],
        ["PreDown", i.preDown],
        ["PostDown", i.postDown],
      ] as const
    ) {
      for (const command of commands ?? []) put(key, checkedCommand(command, key));
    }
    if (i.saveConfig !== undefined) put("SaveConfig", i.saveConfig ? "true" : "false");
  }

  for (const peer of config.peers) {
    out.push("", "[Peer]");
    put("PublicKey", encodeKey(peer.publicKey, "PublicKey"));
    if (peer.presharedKey !== undefined) {
      put("PresharedKey", encodeKey(peer.presharedKey, "PresharedKey"));
    }
    if (peer.allowedIps.length > 0) {
      put("AllowedIPs", peer.allowedIps.map(formatAllowedIp).join(", "));
    }
    if (peer.endpoint !== undefined) put("Endpoint", formatEndpoint(peer.endpoint));
    if (peer.persistentKeepalive !== undefined) {
      checkInteger(peer.persistentKeepalive, 0, 65535, "PersistentKeepalive");
      put(
        "PersistentKeepalive",
        peer.persistentKeepalive === 0 ? "off" : String(peer.persistentKeepalive),
      );
    }
  }
  out.push("");
  return out.join("\n");
}

function checkedAddressBytes(address: Uint8Array, what: string): void {
  if (!(address instanceof Uint8Array) || (address.length !== 4 && address.length !== 16)) {
    throw new TypeError(`${what} must be a Uint8Array of 4 or 16 bytes`);
  }
}

function formatAddress(address: Uint8Array): string {
  checkedAddressBytes(address, "A DNS server address");
  return formatIp(address);
}

function formatPrefix(prefix: IpPrefix): string {
  checkedAddressBytes(prefix.address, "An interface address");
  checkInteger(prefix.prefix, 0, prefix.address.length * 8, "An interface address prefix");
  return `${formatIp(prefix.address)}/${prefix.prefix}`;
}

function formatAllowedIp(cidr: Cidr): string {
  checkedAddressBytes(cidr.address, "An AllowedIPs address");
  checkInteger(cidr.prefix, 0, cidr.address.length * 8, "An AllowedIPs prefix");
  // Written as parsed: host bits cleared.
  return formatCidr(parseCidr(formatCidr(cidr)));
}

function formatDomain(domain: string): string {
  if (typeof domain !== "string" || !isHostname(domain)) {
    throw new RangeError(`DNS search domain ${JSON.stringify(domain)} is not a domain name`);
  }
  return domain;
}

function checkedCommand(command: string, key: string): string {
  if (typeof command !== "string" || command.trim() === "" || /[\r\n#]/.test(command)) {
    throw new RangeError(
      `${key} command ${JSON.stringify(command)} must be one non-empty line without "#"`,
    );
  }
  return command.trim();
}
