/**
 * Forwarding: each TCP connection a client opens through the tunnel is
 * dialled at its original destination first (the client gets its SYN-ACK
 * only when that worked, a RST when it was refused, an ICMP unreachable when
 * it timed out), then relayed both ways with backpressure and half-close
 * (with `synAck: "immediate"` the SYN-ACK goes first and a failed dial
 * resets the connection, see {@linkcode ForwardOptions.synAck}).
 * Each UDP flow gets its own socket towards its destination. DNS to the
 * server's tunnel address goes to a resolver.
 *
 * Clients are authenticated, not trusted: every destination passes the
 * {@linkcode DestinationPolicy}; pending dials and upstream sockets have
 * global caps (derived from the process's file descriptor limit) and
 * per-peer quotas; a full table evicts from the peer using the most.
 *
 * Uses `Deno.connect` and `Deno.listenDatagram` (Deno only).
 *
 * @module
 */

import { readFileSync } from "node:fs";
import type { FlowInfo, ServeLogRecord, TcpStream, UdpStream } from "./serve.ts";
import type { UdpEndpoint } from "./udp.ts";
import {
  DestinationPolicy,
  type DestinationPolicyStats,
  type PolicyInterface,
  type PolicyRule,
  type RefusalReason,
} from "./policy.ts";
import { LogLimiter } from "./_log_limit.ts";
import { unrefTimer } from "./_timers.ts";
import { isIpv4Mapped, positiveInteger } from "./_util.ts";
import { parseIp } from "@wgstack/wireguard";
import {
  associateUdp,
  dialThrough,
  openDirectUdp,
  parseUpstream,
  ProxyError,
  type UdpUpstream,
  type UpstreamProxy,
} from "./upstream.ts";
import { type FirstBytes, type HostnameSource, sniffFirstBytes } from "./sniff.ts";
import { QuicSniffer } from "./_sniff_quic.ts";
import { DomainRules } from "./domains.ts";
import { dialTcpFfi, dialTcpNow, FfiTcpConn, learnTcpConn } from "./_dial_ffi.ts";
import {
  blockedAnswer,
  DnsNames,
  type DnsNamesOptions,
  type DnsNamesStats,
  queryName,
} from "./dns_names.ts";
import { type FlowEntry, type FlowPage, type FlowQuery, FlowTable } from "./flows.ts";

/** The upstream side of a relayed TCP connection (a `Deno.TcpConn` fits). */
export interface UpstreamConn {
  /** Reads into `p`; `null` at EOF. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`. */
  write(p: Uint8Array): Promise<number>;
  /** Sends FIN, keeps reading. */
  closeWrite(): Promise<void>;
  /** Closes both directions. */
  close(): void;
}

/** What {@linkcode Forwarder.accept} decided, with the dialled upstream when accepted. */
export interface TcpDial {
  /** The answer to the client's SYN. */
  decision: "accept" | "rst" | "icmp" | "icmp-prohibited" | "drop";
  /** The connected upstream (only with `"accept"`): hand it to {@linkcode Forwarder.relay}. */
  upstream?: UpstreamConn;
  /** The flow's hostname known at dial time (from DNS answers), if any. */
  hostname?: string;
}

/** A flow as the forwarder sees it: with its hostname when one is known. */
export interface ForwardFlowInfo extends FlowInfo {
  /** The name the client reached the destination by, best source first (SNI/Host, then DNS). */
  readonly hostname?: string;
  /** Where {@linkcode ForwardFlowInfo.hostname} came from. */
  readonly hostnameSource?: HostnameSource;
}

/** Limits of forwarding (`serve({ forward })`); defaults derive from the file descriptor limit. */
export interface ForwardLimits {
  /**
   * Upstream sockets at once (TCP dials and connections, UDP sockets). Default
   * 3/4 of (the soft `RLIMIT_NOFILE` − 128), at most 65 536.
   */
  upstreamSockets?: number;
  /** Upstream sockets one peer may hold. Default half of `upstreamSockets`. */
  peerUpstreamSockets?: number;
  /** TCP dials in progress at once. Default min(1024, upstreamSockets / 4). */
  pendingDials?: number;
  /** TCP dials in progress per peer. Default half of `pendingDials`. */
  peerPendingDials?: number;
}

/** Options of forwarding: `serve({ forward })`. */
export interface ForwardOptions {
  /** Ordered allow/deny rules, see {@linkcode DestinationPolicy}. */
  rules?: PolicyRule[];
  /** Refuse private ranges too (RFC 1918, 100.64.0.0/10, fc00::/7). Default false. */
  denyPrivate?: boolean;
  /** The tunnel subnets (e.g. the server's `Address` CIDRs): not forwarded. */
  tunnelSubnets?: string[];
  /** The server's tunnel addresses: DNS sent there goes to {@linkcode ForwardOptions.dns}. */
  localAddresses?: string[];
  /** Resolver for DNS to the tunnel addresses; without it such queries are refused. */
  dns?: { hostname: string; port: number };
  /** How a SYN to a refused destination is answered: `"rst"` (default) or `"icmp"` (administratively prohibited). */
  refuseWith?: "rst" | "icmp";
  /**
   * When a client's SYN is answered. `"after-dial"` (default): once the
   * destination answered, so a refused port gets a RST and an unreachable
   * one an ICMP error, as if the client had reached it directly.
   * `"immediate"`: at once for every destination the policy and the limits
   * allow, while the dial runs (the client's first bytes wait, bounded by
   * the receive window); a dial that fails then resets the established
   * connection ({@linkcode ForwarderStats.resetAfterAccept}). This saves
   * the client the dial on every connect, at the cost that a closed or
   * unreachable port looks open until the reset (port scans see every
   * allowed port open; happy-eyeballs clients and retry logic that act on
   * a connect error see a reset after connecting instead).
   */
  synAck?: "after-dial" | "immediate";
  /** Dial timeout in ms. Default 10 000. */
  connectTimeoutMs?: number;
  /** What a dial timeout answers: `"icmp"` (default, host unreachable) or `"rst"`. */
  onTimeout?: "icmp" | "rst";
  /**
   * A forwarded TCP connection with no byte either way for this long (ms) is
   * closed (upstream closed, client reset). Default 7 440 000 (2 h 4 min,
   * RFC 5382 REQ-5). 0 disables.
   */
  tcpIdleTimeoutMs?: number;
  /** DNS relays end after this long without a datagram (ms). Default 10 000. */
  dnsIdleMs?: number;
  /** Caps and quotas. */
  limits?: ForwardLimits;
  /** The server's interfaces (tests); default `networkInterfaces()` of `node:os`. */
  interfaces?: () => PolicyInterface[];
  /** Dials upstream; default `Deno.connect`. */
  connect?: (hostname: string, port: number, signal: AbortSignal) => Promise<UpstreamConn>;
  /**
   * Send flows through a proxy: `socks5://[user:pass@]host:port` (TCP and UDP),
   * `socks5h://…` (the same, sending the flow's DNS-derived hostname instead of
   * its address when known), `http://[user:pass@]host:port` (TCP through
   * CONNECT). A function picks per flow (e.g. per peer); `undefined` dials
   * directly. The destination policy and domain rules apply first; DNS to the
   * tunnel address goes to its resolver directly.
   */
  upstream?:
    | string
    | UpstreamProxy
    | ((info: ForwardFlowInfo) => string | UpstreamProxy | undefined);
  /** UDP of flows whose upstream is an HTTP proxy: `"refuse"` (default, ICMP prohibited) or `"direct"`. */
  upstreamUdp?: "direct" | "refuse";
  /**
   * Read the hostname from each TCP connection's first bytes (TLS SNI, HTTP
   * Host), holding them at most `timeoutMs` (default 300) and `maxBytes`
   * (default 16 KiB). Default on; `false` turns it off.
   */
  sniff?: boolean | { timeoutMs?: number; maxBytes?: number };
  /** Hostname patterns refused (`name`, `*.suffix`, `*`), see {@linkcode DomainRules}. */
  denyDomains?: string[];
  /** Hostname patterns allowed where a less specific deny pattern matches. */
  allowDomains?: string[];
  /** How the DNS forwarder answers a query for a denied name: `"nxdomain"` (default), `"zero"` (0.0.0.0 / ::) or `"off"`. */
  dnsBlock?: "nxdomain" | "zero" | "off";
  /** Bounds of the address → name table learnt from DNS answers. */
  dnsNames?: DnsNamesOptions;
  /** How many recently closed flows {@linkcode Forwarder.flows} keeps. Default 256; 0: none. */
  closedFlows?: number;
}

/** Counters of forwarding (`stats().forward` of a server with `forward`). */
export interface ForwarderStats {
  /** TCP connections relayed. */
  tcpAccepted: number;
  /** TCP connections refused (policy, upstream refused, limits). */
  tcpRefused: number;
  /** TCP dials that timed out or found no route. */
  tcpUnreachable: number;
  /**
   * Connections accepted before their dial (`synAck: "immediate"`) that
   * were reset because the dial failed or was cancelled (also counted as
   * refused, unreachable or evicted).
   */
  resetAfterAccept: number;
  /** Dials cancelled because a newer dial needed the slot. */
  dialsEvicted: number;
  /** SYNs that joined a dial already running for their 4-tuple. */
  dialsJoined: number;
  /** Connections and flows refused because an upstream socket cap or quota was reached. */
  limitRefused: number;
  /** TCP connections closed by the idle timeout. */
  tcpIdleClosed: number;
  /** UDP flows relayed (DNS included). */
  udpFlows: number;
  /** UDP flows refused by the policy. */
  udpRefused: number;
  /** Bytes from clients to destinations (TCP and UDP payload). */
  bytesUp: number;
  /** Bytes from destinations to clients. */
  bytesDown: number;
  /** Dials in progress now. */
  pendingDials: number;
  /** Upstream sockets open now (dials included). */
  upstreamSockets: number;
  /** The most upstream sockets open at once. */
  upstreamSocketsPeak: number;
  /** The caps in force. */
  limits: Required<ForwardLimits>;
  /** Destination policy counters. */
  policy: DestinationPolicyStats;
  /** How long the TCP dials that connected took. */
  dialSeconds: DialHistogram;
  /** Flows named by each source (a TCP connection named by DNS and then SNI counts once, as SNI). */
  hostnames: Record<HostnameSource, number>;
  /** TCP connections and UDP flows refused by the domain rules. */
  domainRefused: number;
  /** DNS queries answered as blocked by the domain rules. */
  dnsBlocked: number;
  /** Flows dialled through an upstream proxy. */
  proxied: number;
  /** The address → name table. */
  dnsNames: DnsNamesStats;
}

/** Durations in buckets, as a Prometheus histogram counts them. */
export interface DialHistogram {
  /** Upper bounds of the buckets in seconds, ascending (the last bucket, +Inf, is `count`). */
  readonly bounds: readonly number[];
  /** Durations at or below each bound (cumulative). */
  readonly counts: number[];
  /** Sum of all durations in seconds. */
  sum: number;
  /** Number of durations. */
  count: number;
}

/** Bucket bounds of {@linkcode ForwarderStats.dialSeconds} (1 ms to 10 s). */
const DIAL_BOUNDS: readonly number[] = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/**
 * The soft limit on open file descriptors of this process (Linux
 * `/proc/self/limits`), or `undefined` where it cannot be read.
 */
export function fileDescriptorLimit(): number | undefined {
  try {
    const text = readFileSync("/proc/self/limits", "utf8");
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(text);
    if (!m) return undefined;
    return m[1] === "unlimited" ? Infinity : Number(m[1]);
  } catch {
    return undefined;
  }
}

/** The caps and quotas for `limits`, defaults filled in from `fdLimit` (default 1024). */
export function forwardLimits(
  limits: ForwardLimits = {},
  fdLimit: number = fileDescriptorLimit() ?? 1024,
): Required<ForwardLimits> {
  const fromFds = Math.floor((Math.min(fdLimit, 1 << 20) - 128) * 0.75);
  const upstreamSockets = limits.upstreamSockets ?? Math.max(16, Math.min(65536, fromFds));
  const pendingDials = limits.pendingDials ??
    Math.max(4, Math.min(1024, Math.floor(upstreamSockets / 4)));
  const out = {
    upstreamSockets,
    peerUpstreamSockets: limits.peerUpstreamSockets ??
      Math.max(1, Math.floor(upstreamSockets / 2)),
    pendingDials,
    peerPendingDials: limits.peerPendingDials ?? Math.max(1, Math.floor(pendingDials / 2)),
  };
  for (const [name, value] of Object.entries(out)) positiveInteger(value, `limits.${name}`);
  return out;
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : "Error";
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function peerLabel(info: FlowInfo): string {
  return info.peer.name ?? info.peer.publicKey;
}

/**
 * `Deno.connect` with Nagle's algorithm off: the client's own stack already
 * decided how to cut its bytes into segments, and a relay that held back a
 * small write until the previous one is acknowledged would add a round trip
 * (up to the upstream's delayed-ACK time) to request/response exchanges.
 */
export async function defaultConnect(
  hostname: string,
  port: number,
  signal: AbortSignal,
): Promise<UpstreamConn> {
  // Through libc where it can (an answer in the same turn of the event loop
  // when the kernel connected within the call; see _dial_ffi.ts).
  const fast = dialTcpFfi(hostname, port, signal);
  if (fast !== null) return await fast;
  return await connectDeno(hostname, port, signal);
}

/** `Deno.connect` with Nagle's algorithm off (the FFI dial learns Deno's connection class from it). */
async function connectDeno(
  hostname: string,
  port: number,
  signal: AbortSignal,
): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname, port, signal, autoSelectFamily: false });
  conn.setNoDelay(true);
  learnTcpConn(conn);
  return conn;
}

function closeQuietly(conn: UpstreamConn): void {
  try {
    conn.close();
  } catch {
    // closed already
  }
}

/** `bytes`, or the IPv4 address an IPv4-mapped IPv6 address carries. */
function unmapped(bytes: Uint8Array): Uint8Array {
  return bytes.length === 16 && isIpv4Mapped(bytes) ? bytes.subarray(12) : bytes;
}

/** The 4-tuple key of a connection's dial. */
function dialKey(info: FlowInfo): string {
  const { source: s, destination: d } = info;
  return `${s.address}|${s.port}|${d.address}|${d.port}`;
}

/**
 * A dial in the table (its slot and socket counted). A deferred one
 * (`synAck: "immediate"`) has only this record until it runs: the parts
 * below that are marked "once running" come with {@linkcode Forwarder.#runDial}.
 */
interface Dial {
  key: string;
  peer: string;
  /** Bumped by each SYN request that joins; only the latest gets the upstream. */
  generation: number;
  /** Once running: aborts the dial. */
  abort: AbortController | undefined;
  /** Once running: `promise`, or a rejection as soon as the dial is cancelled (its waiters need not wait for the socket). */
  settled: Promise<UpstreamConn> | undefined;
  /** Once running: rejects `settled`. */
  cancel: ((reason: Error) => void) | undefined;
  /** Once running: the timeout. */
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Told when the dial is cancelled before it ran. */
  cancelledEarly: ((reason: Error) => void) | undefined;
  /** The dial itself settled (its slot is a connection's now, or released). */
  done: boolean;
  evicted: boolean;
  timedOut: boolean;
  started: number;
}

/** Per-peer usage. */
interface PeerUse {
  dials: Map<string, Dial>;
  sockets: number;
}

/**
 * The forwarding handlers. `serve({ forward })` wires them for you; use the
 * class directly to combine forwarding with handlers of your own.
 *
 * @example
 * ```ts ignore
 * import { serve } from "@wgstack/server";
 * const server = await serve({
 *   privateKey, peers,
 *   forward: { localAddresses: ["10.44.0.1"], tunnelSubnets: ["10.44.0.1/24"], denyPrivate: true },
 * });
 * ```
 */
export class Forwarder {
  #log: LogLimiter;
  #rawLog: (record: ServeLogRecord) => void;
  #policy: DestinationPolicy;
  /** The server's tunnel addresses (IPv4-mapped ones as IPv4). */
  #local: Uint8Array[];
  #dns?: { hostname: string; port: number };
  #refuseWith: "rst" | "icmp-prohibited";
  #timeoutMs: number;
  #onTimeout: "icmp" | "rst";
  #immediate: boolean;
  #idleMs: number;
  #dnsIdleMs: number;
  #limits: Required<ForwardLimits>;
  #connect: (hostname: string, port: number, signal: AbortSignal) => Promise<UpstreamConn>;
  #dials = new Map<string, Dial>();
  #peers = new Map<string, PeerUse>();
  #sockets = 0;
  #socketsPeak = 0;
  /** Local ports of our UDP upstream sockets (a datagram from one is never a client's). */
  #ownPorts = new Map<number, number>();
  #open = new Set<{ close(): void; lastActive: number; idle?: () => void }>();
  #sweep: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  #dialSeconds: DialHistogram = {
    bounds: DIAL_BOUNDS,
    counts: DIAL_BOUNDS.map(() => 0),
    sum: 0,
    count: 0,
  };
  #domains: DomainRules;
  #names: DnsNames;
  #dnsBlock: "nxdomain" | "zero" | "off";
  #upstream?: (info: ForwardFlowInfo) => UpstreamProxy | undefined;
  #upstreamUdp: "direct" | "refuse";
  #sniff?: { timeoutMs?: number; maxBytes?: number };
  #relaySniff?: RelaySniff;
  #hostnames: Record<HostnameSource, number> = { sni: 0, http: 0, quic: 0, dns: 0 };
  #flows: FlowTable;
  #stats = {
    domainRefused: 0,
    dnsBlocked: 0,
    proxied: 0,
    tcpAccepted: 0,
    tcpRefused: 0,
    tcpUnreachable: 0,
    resetAfterAccept: 0,
    dialsEvicted: 0,
    dialsJoined: 0,
    limitRefused: 0,
    tcpIdleClosed: 0,
    udpFlows: 0,
    udpRefused: 0,
    bytesUp: 0,
    bytesDown: 0,
  };

  /** Creates the handlers; `log` receives records (repetitive ones aggregated). */
  constructor(options: ForwardOptions = {}, log: (record: ServeLogRecord) => void = () => {}) {
    this.#rawLog = log;
    this.#log = new LogLimiter({ log });
    this.#policy = new DestinationPolicy({
      rules: options.rules,
      denyPrivate: options.denyPrivate,
      tunnelSubnets: options.tunnelSubnets,
      interfaces: options.interfaces,
    });
    this.#local = [];
    for (const text of options.localAddresses ?? []) {
      const bytes = parseIp(text.split("%")[0]);
      if (bytes) this.#local.push(unmapped(bytes));
    }
    this.#dns = options.dns;
    this.#refuseWith = options.refuseWith === "icmp" ? "icmp-prohibited" : "rst";
    this.#timeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#onTimeout = options.onTimeout ?? "icmp";
    if (
      options.synAck !== undefined && options.synAck !== "after-dial" &&
      options.synAck !== "immediate"
    ) {
      throw new RangeError(
        `synAck is "after-dial" or "immediate", not ${JSON.stringify(options.synAck)}`,
      );
    }
    this.#immediate = options.synAck === "immediate";
    this.#idleMs = options.tcpIdleTimeoutMs ?? 7_440_000;
    this.#dnsIdleMs = options.dnsIdleMs ?? 10_000;
    this.#limits = forwardLimits(options.limits);
    this.#connect = options.connect ?? defaultConnect;
    this.#domains = new DomainRules({ allow: options.allowDomains, deny: options.denyDomains });
    this.#names = new DnsNames(options.dnsNames);
    this.#dnsBlock = options.dnsBlock ?? "nxdomain";
    this.#flows = new FlowTable({ closed: options.closedFlows });
    this.#upstream = upstreamChooser(options.upstream);
    this.#upstreamUdp = options.upstreamUdp ?? "refuse";
    this.#sniff = options.sniff === false
      ? undefined
      : options.sniff === true || options.sniff === undefined
      ? {}
      : options.sniff;
    const sniff = this.#sniff;
    this.#relaySniff = sniff && {
      options: sniff,
      decide: (relay, name, source) => {
        if (name === undefined) return true;
        [relay.host, relay.hostSource] = [name, source];
        const named = { ...relay.stream, hostname: name, hostnameSource: source };
        if (!this.#domainDenied(named, "tcp")) return true;
        relay.domainRefused = true;
        relay.stream.reset();
        return false;
      },
    };
    if (this.#idleMs > 0) {
      this.#sweep = setInterval(() => this.#reapIdle(), Math.min(60_000, this.#idleMs / 4));
      unrefTimer(this.#sweep);
    }
  }

  /** The destination policy in use. */
  get policy(): DestinationPolicy {
    return this.#policy;
  }

  /** Counters so far. */
  stats(): ForwarderStats {
    return {
      ...this.#stats,
      pendingDials: this.#dials.size,
      upstreamSockets: this.#sockets,
      upstreamSocketsPeak: this.#socketsPeak,
      limits: { ...this.#limits },
      policy: this.#policy.stats(),
      dialSeconds: { ...this.#dialSeconds, counts: [...this.#dialSeconds.counts] },
      hostnames: { ...this.#hostnames },
      dnsNames: this.#names.stats(),
    };
  }

  /**
   * The connections and flows being relayed now, or the recently closed
   * ones: filtered, sorted and paged (see {@linkcode FlowTable.query}).
   *
   * @throws {RangeError} For an invalid query.
   */
  flows(query?: FlowQuery): FlowPage {
    return this.#flows.query(query);
  }

  /** The flow with its DNS-derived hostname, when the peer resolved the destination through us. */
  #named(info: FlowInfo): ForwardFlowInfo {
    const hostname = this.#names.lookup(
      info.peer.publicKey,
      info.destination.address,
      performance.now(),
    );
    return hostname === undefined ? info : { ...info, hostname, hostnameSource: "dns" };
  }

  /** True (counted and logged) when the domain rules refuse `info`'s hostname. */
  #domainDenied(info: ForwardFlowInfo, protocol: "tcp" | "udp"): boolean {
    if (!this.#domains.denies(info.hostname)) return false;
    this.#stats.domainRefused++;
    this.#log.log({
      level: "info",
      event: "domain-refused",
      protocol,
      peer: peerLabel(info),
      source: info.source,
      destination: info.destination,
      host: info.hostname,
      hostSource: info.hostnameSource,
    });
    return true;
  }

  /**
   * True when a datagram from `from` came from this machine's own socket (a
   * forwarding socket or the server's own `port`): it must never reach the
   * WireGuard device (no peer may roam there).
   */
  isOwnSocket(from: UdpEndpoint, serverPort: number): boolean {
    if (from.port !== serverPort && !this.#ownPorts.has(from.port)) return false;
    return this.#policy.isOwnAddress(from.address);
  }

  /**
   * Where a connection or flow to `destination` really goes, or why not. The
   * server's tunnel address has only its DNS service.
   */
  #target(destination: UdpEndpoint): { hostname: string; port: number } | RefusalReason {
    // Parsed once, here: the policy takes the bytes.
    const text = destination.address;
    const bytes = parseIp(text.includes("%") ? text.slice(0, text.indexOf("%")) : text);
    if (!bytes) return this.#policy.check(text, destination.port) ?? "malformed";
    if (this.#local.length > 0 && this.#isLocal(bytes)) {
      if (destination.port === 53 && this.#dns) return this.#dns;
      return "tunnel";
    }
    const reason = this.#policy.check(bytes, destination.port);
    return reason ?? { hostname: destination.address, port: destination.port };
  }

  #isLocal(bytes: Uint8Array): boolean {
    const address = unmapped(bytes);
    for (const local of this.#local) {
      if (local.length !== address.length) continue;
      let i = 0;
      while (i < address.length && local[i] === address[i]) i++;
      if (i === address.length) return true;
    }
    return false;
  }

  /**
   * Whether a new UDP flow may open (checked for the first datagram, before
   * the flow exists): `false` answers the client with ICMP administratively
   * prohibited.
   */
  acceptUdp(info: FlowInfo): boolean {
    if (this.#closed) return false;
    const target = this.#target(info.destination);
    if (typeof target !== "string") {
      if (target === this.#dns) return true;
      const named = this.#named(info);
      if (this.#domainDenied(named, "udp")) return false;
      return this.#udpRoute(named) !== "refuse";
    }
    this.#stats.udpRefused++;
    this.#log.log({
      level: "info",
      event: "udp-refused",
      peer: peerLabel(info),
      source: info.source,
      destination: info.destination,
      reason: target,
    });
    return false;
  }

  #use(peer: string): PeerUse {
    let use = this.#peers.get(peer);
    if (!use) this.#peers.set(peer, use = { dials: new Map(), sockets: 0 });
    return use;
  }

  #take(peer: string): void {
    this.#sockets++;
    if (this.#sockets > this.#socketsPeak) this.#socketsPeak = this.#sockets;
    this.#use(peer).sockets++;
  }

  #releasePeer = (peer: string): void => this.#release(peer);

  #release(peer: string): void {
    this.#sockets--;
    const use = this.#peers.get(peer);
    if (use && --use.sockets === 0 && use.dials.size === 0) this.#peers.delete(peer);
  }

  /** Cancels the oldest dial of `peer`, or of the peer with the most dials. */
  #evictDial(peer?: string): boolean {
    let victim: PeerUse | undefined = peer ? this.#peers.get(peer) : undefined;
    if (!victim || victim.dials.size === 0) {
      victim = undefined;
      for (const use of this.#peers.values()) {
        if (!victim || use.dials.size > victim.dials.size) victim = use;
      }
    }
    const dial = victim?.dials.values().next().value;
    if (!dial) return false;
    this.#stats.dialsEvicted++;
    this.#cancelDial(dial, new DOMException("The dial was evicted by a newer one", "AbortError"));
    return true;
  }

  /** Cancels a dial now: its slot and socket count are free at once, its waiters answer "drop". */
  #cancelDial(dial: Dial, reason: Error): void {
    this.#forgetDial(dial);
    if (dial.evicted || dial.done) return;
    dial.evicted = true;
    clearTimeout(dial.timer);
    this.#release(dial.peer);
    if (dial.cancel) {
      dial.cancel(reason);
      dial.abort!.abort(reason);
    } else dial.cancelledEarly?.(reason);
  }

  #forgetDial(dial: Dial): void {
    if (this.#dials.get(dial.key) !== dial) return;
    this.#dials.delete(dial.key);
    this.#peers.get(dial.peer)?.dials.delete(dial.key);
  }

  /** Makes room for one more dial of `peer`; false when it must be refused. */
  #admit(peer: string): boolean {
    const use = this.#use(peer);
    const l = this.#limits;
    if (use.dials.size >= l.peerPendingDials) this.#evictDial(peer);
    if (this.#dials.size >= l.pendingDials) this.#evictDial();
    if (use.sockets >= l.peerUpstreamSockets && !this.#evictDial(peer)) return false;
    if (this.#sockets >= l.upstreamSockets && !this.#evictDial()) return false;
    return use.sockets < l.peerUpstreamSockets && this.#sockets < l.upstreamSockets;
  }

  /**
   * Dials the connection's destination and decides: `"accept"` with the
   * connected upstream when it answered; `"rst"` (or ICMP administratively
   * prohibited, see {@linkcode ForwardOptions.refuseWith}) when the policy
   * refuses it; `"rst"` when the upstream refused; `"icmp"` (or `"rst"`, see
   * {@linkcode ForwardOptions.onTimeout}) when the dial timed out or found
   * no route; `"drop"` when the dial was evicted or a newer SYN for the same
   * 4-tuple took it over. One dial runs per 4-tuple.
   *
   * With {@linkcode ForwardOptions.synAck} `"immediate"`, an allowed
   * destination is accepted before its dial, which runs once the upstream is
   * first used (the relay waits for it; see {@linkcode Forwarder.relay}).
   */
  accept(info: FlowInfo): Promise<TcpDial> {
    try {
      return Promise.resolve(this.decide(info));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * {@linkcode Forwarder.accept}, without a promise where the answer is known
   * at once: a refusal by the policy, the domain rules or a limit; a dial
   * that connected within its call (the default dial on Linux, when the
   * destination answers as fast as on a LAN or loopback); with `synAck:
   * "immediate"`, every admitted connection. The SYN-ACK can then leave in
   * the same turn of the event loop, before anything else is set up.
   */
  decide(info: FlowInfo): TcpDial | Promise<TcpDial> {
    if (this.#closed) return { decision: "rst" };
    const target = this.#target(info.destination);
    if (typeof target === "string") {
      this.#stats.tcpRefused++;
      this.#logRefused(info, this.#refuseWith, target);
      return { decision: this.#refuseWith };
    }
    const named: ForwardFlowInfo = target === this.#dns ? info : this.#named(info);
    if (this.#domainDenied(named, "tcp")) return { decision: this.#refuseWith };
    const proxy = target === this.#dns ? undefined : this.#upstream?.(named);
    const peer = info.peer.publicKey;
    let key: string | undefined;
    if (this.#dials.size > 0) {
      // A retransmitted SYN of a dial still running joins it.
      key = dialKey(info);
      const dial = this.#dials.get(key);
      if (dial && !this.#immediate) {
        this.#stats.dialsJoined++;
        dial.generation++;
        return this.#awaitDial(dial, info, named, proxy);
      }
      // Immediate mode: the SYN of a new connection on the tuple ends the older one.
      if (dial) {
        this.#cancelDial(dial, new DOMException("A newer SYN took the tuple", "AbortError"));
      }
    }
    if (!this.#admit(peer)) {
      this.#stats.limitRefused++;
      this.#logRefused(info, "rst", "upstream socket limit");
      return { decision: "rst" };
    }
    const started = performance.now();
    const direct = !proxy && this.#connect === defaultConnect;
    if (this.#immediate) {
      // Only the dial's record now; it runs once the upstream is first used
      // (after the SYN-ACK left).
      const dial = this.#registerDial(key ?? dialKey(info), peer, started);
      const upstream = new PendingUpstream(
        dial,
        () =>
          this.#runDial(
            dial,
            (signal) =>
              direct
                ? this.#dialDirect(target, signal)
                : this.#dialVia(target, named, proxy, signal),
          ),
        (conn) => this.#dialled(conn, dial.started, peer, named, proxy),
        (error) => this.#resetAfterDial(info, dial, error),
        () => this.#cancelDial(dial, new DOMException("The connection ended", "AbortError")),
      );
      return { decision: "accept", upstream, hostname: named.hostname };
    }
    if (direct) {
      // The kernel often connects within the call (loopback, veth, a LAN):
      // then the answer is known now, without a dial record or timer.
      const now = dialTcpNow(target.hostname, target.port);
      if (now instanceof FfiTcpConn && now.connected) {
        this.#take(peer);
        const upstream = this.#dialled(now, started, peer, named, proxy);
        return { decision: "accept", upstream, hostname: named.hostname };
      }
      if (now instanceof Error) return this.#dialFailed(info, now, false);
      const dial = this.#registerDial(key ?? dialKey(info), peer, started);
      this.#runDial(
        dial,
        (signal) => now ? now.wait(signal) : connectDeno(target.hostname, target.port, signal),
      );
      return this.#awaitDial(dial, info, named, proxy);
    }
    const dial = this.#registerDial(key ?? dialKey(info), peer, started);
    this.#runDial(dial, (signal) => this.#dialVia(target, named, proxy, signal));
    return this.#awaitDial(dial, info, named, proxy);
  }

  /** The default dial: through libc where it can, else `Deno.connect`. */
  #dialDirect(
    target: { hostname: string; port: number },
    signal: AbortSignal,
  ): Promise<UpstreamConn> {
    const now = dialTcpNow(target.hostname, target.port);
    if (now === null) return connectDeno(target.hostname, target.port, signal);
    if (now instanceof Error) return Promise.reject(now);
    return now.connected ? Promise.resolve(now) : now.wait(signal);
  }

  /** The dial through the `connect` option or a proxy. */
  #dialVia(
    target: { hostname: string; port: number },
    named: ForwardFlowInfo,
    proxy: UpstreamProxy | undefined,
    signal: AbortSignal,
  ): Promise<UpstreamConn> {
    if (!proxy) return this.#connect(target.hostname, target.port, signal);
    this.#stats.proxied++;
    return dialThrough(
      proxy,
      { address: target.hostname, port: target.port, hostname: named.hostname },
      { signal, connect: this.#connect },
    );
  }

  /** Puts a dial in the table: its slot and its socket are taken now. */
  #registerDial(key: string, peer: string, started: number): Dial {
    const d: Dial = {
      key,
      peer,
      generation: 0,
      abort: undefined,
      settled: undefined,
      cancel: undefined,
      timer: undefined,
      cancelledEarly: undefined,
      done: false,
      evicted: false,
      timedOut: false,
      started,
    };
    this.#dials.set(key, d);
    this.#use(peer).dials.set(key, d);
    this.#take(peer);
    return d;
  }

  /**
   * Runs a registered dial under its timeout; returns its `settled`. A
   * cancelled dial does not run.
   */
  #runDial(d: Dial, run: (signal: AbortSignal) => Promise<UpstreamConn>): Promise<UpstreamConn> {
    if (d.evicted) return Promise.reject(new DOMException("The dial was cancelled", "AbortError"));
    const abort = d.abort = new AbortController();
    let promise: Promise<UpstreamConn>;
    try {
      promise = run(abort.signal);
    } catch (error) {
      promise = Promise.reject(error);
    }
    const cancelled = new Promise<never>((_, reject) => d.cancel = reject);
    cancelled.catch(() => {});
    const settled = d.settled = Promise.race([promise, cancelled]);
    const timer = d.timer = setTimeout(() => {
      d.timedOut = true;
      abort.abort(new Deno.errors.TimedOut(`timed out after ${this.#timeoutMs} ms`));
    }, this.#timeoutMs);
    const settle = () => {
      d.done = true;
      clearTimeout(timer);
      this.#forgetDial(d);
    };
    promise.then((conn) => {
      settle();
      // The dial slot becomes a connection's socket; the relay releases it.
      // Nobody takes a connection that arrives after an eviction: close it.
      if (d.evicted) closeQuietly(conn);
    }, () => {
      settle();
      if (!d.evicted) this.#release(d.peer);
    });
    return settled;
  }

  /** Waits for `dial` and answers this request's SYN (`"drop"` when a newer SYN took it over). */
  async #awaitDial(
    dial: Dial,
    info: FlowInfo,
    named: ForwardFlowInfo,
    proxy: UpstreamProxy | undefined,
  ): Promise<TcpDial> {
    const mine = dial.generation;
    let conn: UpstreamConn;
    try {
      conn = await dial.settled!;
    } catch (error) {
      if (dial.evicted || mine !== dial.generation) return { decision: "drop" };
      return this.#dialFailed(info, error, dial.timedOut);
    }
    if (dial.evicted || mine !== dial.generation) return { decision: "drop" };
    if (this.#closed) {
      conn.close();
      this.#release(dial.peer);
      return { decision: "rst" };
    }
    const upstream = this.#dialled(conn, dial.started, dial.peer, named, proxy);
    return { decision: "accept", upstream, hostname: named.hostname };
  }

  /** The answer to a SYN whose dial failed (counted and logged). */
  #dialFailed(info: FlowInfo, error: unknown, timedOut: boolean): TcpDial {
    const decision = this.#failureAnswer(error, timedOut);
    if (decision === "rst" && !timedOut) this.#stats.tcpRefused++;
    else this.#stats.tcpUnreachable++;
    this.#logRefused(info, decision, this.#failureReason(error, timedOut));
    return { decision };
  }

  #failureAnswer(error: unknown, timedOut: boolean): "rst" | "icmp" | "icmp-prohibited" {
    return timedOut
      ? this.#onTimeout
      : error instanceof ProxyError
      ? error.answer
      : error instanceof Deno.errors.ConnectionRefused
      ? "rst"
      : "icmp";
  }

  #failureReason(error: unknown, timedOut: boolean): string {
    return timedOut
      ? `timed out after ${this.#timeoutMs} ms`
      : `${errorName(error)}: ${errorText(error)}`;
  }

  /**
   * A connection accepted before its dial (`synAck: "immediate"`) whose dial
   * failed or was cancelled: counted and logged; its relay resets the client.
   */
  #resetAfterDial(info: FlowInfo, dial: Dial, error: unknown): void {
    this.#stats.resetAfterAccept++;
    if (dial.evicted) return; // counted as evicted
    const answer = this.#failureAnswer(error, dial.timedOut);
    if (answer === "rst" && !dial.timedOut) this.#stats.tcpRefused++;
    else this.#stats.tcpUnreachable++;
    this.#logRefused(info, "reset", this.#failureReason(error, dial.timedOut));
  }

  /** The accepted upstream of a dial that connected (the slot it took becomes the connection's). */
  #dialled(
    conn: UpstreamConn,
    started: number,
    peer: string,
    named: ForwardFlowInfo,
    proxy: UpstreamProxy | undefined,
  ): DialledUpstream {
    const dialMs = performance.now() - started;
    this.#observeDial(dialMs / 1000);
    // No closure over the caller's scope: a connection keeps only its socket,
    // not the dial that made it.
    const upstream = new DialledUpstream(conn, dialMs, this.#releasePeer, peer);
    upstream.hostname = named.hostname;
    upstream.via = proxy?.label;
    return upstream;
  }

  #observeDial(seconds: number): void {
    const h = this.#dialSeconds;
    h.sum += seconds;
    h.count++;
    for (let i = h.bounds.length - 1; i >= 0 && seconds <= h.bounds[i]; i--) h.counts[i]++;
  }

  #logRefused(info: FlowInfo, answer: string, reason: string): void {
    this.#log.log({
      level: "info",
      event: "tcp-refused",
      peer: peerLabel(info),
      source: info.source,
      destination: info.destination,
      answer,
      reason,
    });
  }

  /**
   * A handler that relays its connection to `upstream` (see
   * {@linkcode Forwarder.relay}). It returns nothing: the relay reports its
   * end in the log and the stats, and an idle connection holds no promise
   * for it.
   */
  relayTo(upstream: UpstreamConn): (stream: TcpStream) => void {
    return (stream) => this.#startRelay(stream, upstream);
  }

  /** Relays an accepted connection to the upstream {@linkcode Forwarder.accept} dialled. */
  relay(stream: TcpStream, upstream: UpstreamConn): Promise<void> {
    return new Promise((resolve) => this.#startRelay(stream, upstream, resolve));
  }

  #startRelay(stream: TcpStream, upstream: UpstreamConn, resolve?: () => void): void {
    if (upstream instanceof PendingUpstream) {
      // Accepted before its dial: the client's bytes wait in its receive
      // window until the upstream is there; a failed dial resets the client.
      if (upstream.upstream) return this.#startRelay(stream, upstream.upstream, resolve);
      upstream.start();
      upstream.ready.then(
        () => this.#startRelay(stream, upstream.upstream!, resolve),
        () => {
          stream.reset();
          resolve?.();
        },
      );
      return;
    }
    if (this.#closed) {
      upstream.close();
      stream.reset();
      resolve?.();
      return;
    }
    this.#stats.tcpAccepted++;
    const dialled = upstream as { dialMs?: number; hostname?: string; via?: string };
    // One object per relay (four callbacks, no async frames): idle connections stay small.
    const relay = new RelayHandle(stream, upstream, this.#relayDone, this.#relaySniff, resolve);
    if (dialled.hostname !== undefined) [relay.host, relay.hostSource] = [dialled.hostname, "dns"];
    this.#rawLog({
      level: "info",
      event: "tcp-open",
      peer: peerLabel(stream),
      source: stream.source,
      destination: stream.destination,
      host: relay.host,
      hostSource: relay.hostSource,
      via: dialled.via,
      dialMs: dialled.dialMs === undefined ? undefined : Math.round(dialled.dialMs),
    });
    this.#open.add(relay);
    this.#flows.add(relay);
    relay.start();
  }

  #relayDone = (relay: RelayHandle, result: RelayResult): void => this.#relayEnded(relay, result);

  #relayEnded(relay: RelayHandle, result: RelayResult): void {
    this.#open.delete(relay);
    relay.upstream.close();
    const { stream, idled, domainRefused, hostSource } = relay;
    if (idled) this.#stats.tcpIdleClosed++;
    this.#stats.bytesUp += result.bytesUp;
    this.#stats.bytesDown += result.bytesDown;
    if (hostSource) this.#hostnames[hostSource]++;
    const end = idled
      ? "idle"
      : domainRefused
      ? "domain refused"
      : this.#closed && result.end !== "closed"
      ? "shutdown"
      : result.end;
    this.#flows.end(relay, end);
    this.#rawLog({
      level: result.error && !idled && !domainRefused ? "warn" : "info",
      event: "tcp-close",
      peer: peerLabel(stream),
      source: stream.source,
      destination: stream.destination,
      host: relay.host,
      hostSource,
      bytesUp: result.bytesUp,
      bytesDown: result.bytesDown,
      durationMs: Math.round(performance.now() - relay.started),
      end,
      error: idled || domainRefused ? undefined : result.error,
    });
  }

  #reapIdle(): void {
    const limit = performance.now() - this.#idleMs;
    for (const h of this.#open) if (h.idle && h.lastActive <= limit) h.idle();
  }

  /** Where a UDP flow goes: directly, through a SOCKS5 proxy, or nowhere (HTTP proxy, UDP refused). */
  #udpRoute(info: ForwardFlowInfo): UpstreamProxy | "direct" | "refuse" {
    const proxy = this.#upstream?.(info);
    if (!proxy) return "direct";
    if (proxy.kind !== "http") return proxy;
    return this.#upstreamUdp;
  }

  /** Relays a UDP flow through its own socket (or SOCKS5 association) until the flow expires. */
  async onUdp(flow: UdpStream): Promise<void> {
    const target = this.#closed ? "stopping" : this.#target(flow.destination);
    const isDns = target === this.#dns;
    const named: ForwardFlowInfo = typeof target === "string" || isDns ? flow : this.#named(flow);
    const label = {
      peer: peerLabel(flow),
      source: flow.source,
      destination: flow.destination,
      host: named.hostname,
      hostSource: named.hostnameSource,
    };
    const peer = flow.peer.publicKey;
    const use = this.#use(peer);
    const route = typeof target === "string" || isDns ? "direct" : this.#udpRoute(named);
    // Through a SOCKS5 proxy a flow holds two sockets: its UDP socket and the control connection.
    const slots = typeof route === "object" ? 2 : 1;
    const full = use.sockets + slots > this.#limits.peerUpstreamSockets ||
      this.#sockets + slots > this.#limits.upstreamSockets;
    const refusal = typeof target === "string"
      ? target
      : full
      ? "upstream socket limit"
      : route === "refuse"
      ? "upstream carries no UDP"
      : this.#domainDenied(named, "udp")
      ? "domain"
      : undefined;
    if (refusal !== undefined) {
      if (refusal === "upstream socket limit") this.#stats.limitRefused++;
      else if (refusal !== "domain") this.#stats.udpRefused++;
      if (refusal !== "domain") {
        this.#log.log({ level: "info", event: "udp-refused", ...label, reason: refusal });
      }
      if (use.sockets === 0 && use.dials.size === 0) this.#peers.delete(peer);
      await flow.readable.cancel().catch(() => {});
      await flow.writable.abort().catch(() => {});
      return;
    }
    const to = target as { hostname: string; port: number };
    for (let i = 0; i < slots; i++) this.#take(peer);
    let socket: UdpUpstream;
    try {
      if (route === "direct") {
        socket = openDirectUdp(to);
      } else {
        this.#stats.proxied++;
        const abort = AbortSignal.timeout(this.#timeoutMs);
        socket = await associateUdp(route as UpstreamProxy, {
          address: to.hostname,
          port: to.port,
          hostname: named.hostname,
        }, { signal: abort, connect: this.#connect });
      }
    } catch (error) {
      for (let i = 0; i < slots; i++) this.#release(peer);
      this.#rawLog({
        level: route === "direct" ? "error" : "info",
        event: route === "direct" ? "udp-socket-error" : "udp-refused",
        ...label,
        via: route === "direct" ? undefined : (route as UpstreamProxy).label,
        error: errorText(error),
      });
      await flow.readable.cancel().catch(() => {});
      await flow.writable.abort().catch(() => {});
      return;
    }
    const localPort = socket.localPort;
    this.#ownPorts.set(localPort, (this.#ownPorts.get(localPort) ?? 0) + 1);
    this.#stats.udpFlows++;
    const handle = { lastActive: 0, close: () => socket.close() };
    this.#open.add(handle);
    const started = performance.now();
    this.#rawLog({
      level: "info",
      event: "udp-open",
      ...label,
      via: isDns
        ? `${to.hostname}:${to.port}`
        : route === "direct"
        ? undefined
        : (route as UpstreamProxy).label,
    });
    const counts = { bytesUp: 0, bytesDown: 0, datagramsUp: 0, datagramsDown: 0 };
    const entry: FlowEntry = {
      id: 0,
      protocol: "udp",
      info: flow,
      started,
      state: "open",
      get bytesUp() {
        return counts.bytesUp;
      },
      get bytesDown() {
        return counts.bytesDown;
      },
      get host() {
        return label.host;
      },
      get hostSource() {
        return label.hostSource;
      },
    };
    this.#flows.add(entry);
    let end = "expired";
    let error: string | undefined;
    const reader = flow.readable.getReader();
    // A QUIC client's first datagrams name the host (Initial packets): read, not held.
    let quic = this.#sniff && !isDns ? new QuicSniffer(this.#sniff) : undefined;
    const writer = flow.writable.getWriter();
    // A DNS flow is one query and its answer: stop relaying it soon after, so
    // a busy client does not hold a socket per query for the flow idle time.
    let idleTimer: ReturnType<typeof setTimeout> | undefined;
    const touch = () => {
      if (!isDns) return;
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => {
        end = "idle";
        reader.cancel().catch(() => {});
      }, this.#dnsIdleMs);
    };
    touch();

    const down = (async () => {
      try {
        for (;;) {
          const data = await socket.receive();
          // The answers teach which name each address was resolved from.
          if (isDns) this.#names.learn(peer, data, performance.now());
          await writer.write(data);
          touch();
          counts.bytesDown += data.length;
          counts.datagramsDown++;
        }
      } catch {
        // socket closed (flow over) or client flow gone
      } finally {
        writer.abort().catch(() => {});
      }
    })();

    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        touch();
        if (quic) {
          const state = quic.push(value);
          if (state.done) quic = undefined;
          if (state.done && state.hostname) {
            [label.host, label.hostSource] = [state.hostname, "quic"];
            const quicNamed = {
              ...flow,
              hostname: state.hostname,
              hostnameSource: "quic" as const,
            };
            if (this.#domainDenied(quicNamed, "udp")) {
              end = "domain refused";
              await reader.cancel().catch(() => {});
              break;
            }
          }
        }
        if (isDns) {
          const blocked = this.#blockedDns(value, label);
          if (blocked) {
            await writer.write(blocked).catch(() => {});
            continue;
          }
        }
        try {
          await socket.send(value);
        } catch (e) {
          // Unreachable destinations and the like: UDP loses it, the flow goes on.
          this.#rawLog({ level: "debug", event: "udp-send-error", ...label, error: errorText(e) });
          continue;
        }
        counts.bytesUp += value.length;
        counts.datagramsUp++;
      }
    } catch (e) {
      end = "error";
      error = errorText(e);
    } finally {
      clearTimeout(idleTimer);
      reader.releaseLock();
      socket.close();
      this.#open.delete(handle);
      const n = (this.#ownPorts.get(localPort) ?? 1) - 1;
      if (n > 0) this.#ownPorts.set(localPort, n);
      else this.#ownPorts.delete(localPort);
      for (let i = 0; i < slots; i++) this.#release(peer);
    }
    await down;
    const ended = this.#closed && end === "expired" ? "shutdown" : end;
    this.#flows.end(entry, ended);
    if (label.hostSource) this.#hostnames[label.hostSource]++;
    this.#stats.bytesUp += counts.bytesUp;
    this.#stats.bytesDown += counts.bytesDown;
    this.#rawLog({
      level: "info",
      event: "udp-close",
      ...label,
      ...counts,
      durationMs: Math.round(performance.now() - started),
      end: ended,
      error,
    });
  }

  /** The answer to a DNS query for a denied name (counted and logged), or `undefined`. */
  #blockedDns(query: Uint8Array, label: Record<string, unknown>): Uint8Array | undefined {
    if (this.#dnsBlock === "off" || this.#domains.empty) return undefined;
    const name = queryName(query);
    if (name === undefined || !this.#domains.denies(name)) return undefined;
    const answer = blockedAnswer(query, this.#dnsBlock);
    if (!answer) return undefined;
    this.#stats.dnsBlocked++;
    this.#log.log({
      level: "info",
      event: "dns-blocked",
      ...label,
      host: name,
      answer: this.#dnsBlock,
    });
    return answer;
  }

  /**
   * Cancels every dial and closes every upstream connection and socket,
   * which ends their relays (the clients' connections are reset): for
   * shutdown.
   */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const dial of [...this.#dials.values()]) {
      this.#cancelDial(dial, new DOMException("The server is stopping", "AbortError"));
    }
    for (const h of this.#open) {
      try {
        h.close();
      } catch {
        // already closed
      }
    }
    this.#open.clear();
    this.#policy.close();
    this.#log.flush();
  }
}

/** A dialled upstream connection; closing it frees its socket slot once. */
class DialledUpstream implements UpstreamConn {
  /** The flow's DNS-derived name at dial time. */
  hostname?: string;
  /** The proxy it went through (its label). */
  via?: string;
  #conn: UpstreamConn;
  #release: ((peer: string) => void) | null;
  #peer: string;
  constructor(
    conn: UpstreamConn,
    readonly dialMs: number,
    release: (peer: string) => void,
    peer: string,
  ) {
    this.#conn = conn;
    this.#release = release;
    this.#peer = peer;
  }
  read(p: Uint8Array): Promise<number | null> {
    return this.#conn.read(p);
  }
  write(p: Uint8Array): Promise<number> {
    return this.#conn.write(p);
  }
  closeWrite(): Promise<void> {
    return this.#conn.closeWrite();
  }
  close(): void {
    const release = this.#release;
    if (!release) return;
    this.#release = null;
    release(this.#peer);
    this.#conn.close();
  }
}

/**
 * The upstream of a connection accepted before its dial (`synAck:
 * "immediate"`): the dial runs on first use (or {@linkcode start}), reads
 * and writes wait for it; `ready` rejects when it failed or was cancelled.
 */
class PendingUpstream implements UpstreamConn {
  /** The connected upstream, once there is one. */
  upstream: DialledUpstream | null = null;
  #dial: Dial;
  #run: () => Promise<UpstreamConn>;
  #connected: (conn: UpstreamConn) => DialledUpstream;
  #failed: (error: unknown) => void;
  #cancel: () => void;
  #ready: Promise<void> | null = null;
  /** Why the dial was cancelled before it ran. */
  #cancelled: Error | null = null;
  #closed = false;
  constructor(
    dial: Dial,
    run: () => Promise<UpstreamConn>,
    connected: (conn: UpstreamConn) => DialledUpstream,
    failed: (error: unknown) => void,
    cancel: () => void,
  ) {
    this.#dial = dial;
    this.#run = run;
    this.#connected = connected;
    this.#failed = failed;
    this.#cancel = cancel;
    dial.cancelledEarly = (reason) => {
      this.#cancelled = reason;
      if (!this.#closed) failed(reason);
    };
  }
  /** Resolves once connected (then {@linkcode upstream} is set); runs the dial. */
  get ready(): Promise<void> {
    if (this.#ready) return this.#ready;
    if (this.#cancelled) {
      // (Counted when it was cancelled.)
      this.#ready = Promise.reject(this.#cancelled);
      this.#ready.catch(() => {});
      return this.#ready;
    }
    const dial = this.#dial;
    this.#ready = this.#run().then((conn) => {
      // (An eviction that raced the connect: the dial closed the socket.)
      if (dial.evicted) throw new DOMException("The dial was evicted", "AbortError");
      const upstream = this.#connected(conn);
      if (this.#closed) {
        upstream.close();
        throw new DOMException("The connection ended", "AbortError");
      }
      this.upstream = upstream;
    });
    this.#ready.catch((error) => {
      if (!this.#closed) this.#failed(error);
    });
    return this.#ready;
  }
  /** Runs the dial (once). */
  start(): void {
    void this.ready;
  }
  #whenConnected(): Promise<DialledUpstream> {
    return this.ready.then(() => this.upstream!);
  }
  read(p: Uint8Array): Promise<number | null> {
    return this.upstream ? this.upstream.read(p) : this.#whenConnected().then((u) => u.read(p));
  }
  write(p: Uint8Array): Promise<number> {
    return this.upstream ? this.upstream.write(p) : this.#whenConnected().then((u) => u.write(p));
  }
  closeWrite(): Promise<void> {
    return this.upstream
      ? this.upstream.closeWrite()
      : this.#whenConnected().then((u) => u.closeWrite());
  }
  close(): void {
    if (this.upstream) return this.upstream.close();
    if (this.#closed) return;
    this.#closed = true;
    this.#cancel();
  }
}

/** How relays read a name from the first bytes (one per forwarder). */
interface RelaySniff {
  options: { timeoutMs?: number; maxBytes?: number };
  /** Whether `relay` may go on with `hostname` (false: refused, the client is reset). */
  decide(relay: RelayHandle, hostname: string | undefined, source?: HostnameSource): boolean;
}

/** A function choosing each flow's upstream proxy, from the `upstream` option. */
function upstreamChooser(
  option: ForwardOptions["upstream"],
): ((info: ForwardFlowInfo) => UpstreamProxy | undefined) | undefined {
  if (option === undefined) return undefined;
  const parsed = new Map<string, UpstreamProxy>();
  const resolve = (u: string | UpstreamProxy | undefined): UpstreamProxy | undefined => {
    if (u === undefined || typeof u !== "string") return u;
    let p = parsed.get(u);
    if (!p) {
      p = parseUpstream(u);
      if (parsed.size < 1024) parsed.set(u, p);
    }
    return p;
  };
  if (typeof option !== "function") {
    const fixed = resolve(option);
    return () => fixed;
  }
  return (info) => resolve(option(info));
}

/** How a relayed TCP connection ended. */
export interface RelayResult {
  /** Payload bytes client → upstream. */
  bytesUp: number;
  /** Payload bytes upstream → client. */
  bytesDown: number;
  /** `"closed"` (both sides sent FIN), `"client reset"`, `"upstream reset"`, `"error"`. */
  end: string;
  /** The error message, when there was one. */
  error?: string;
}

/**
 * The client side of a relay: a {@linkcode TcpStream} fits (the relay uses
 * its stream-free `read`/`write`, so no stream objects are made for it).
 */
export type RelayClient = Pick<TcpStream, "read" | "write" | "close" | "reset">;

/** What {@linkcode relayTcp} counts and asks as it goes. */
export interface RelayCounters {
  /** Payload bytes client → upstream so far. */
  bytesUp: number;
  /** Payload bytes upstream → client so far. */
  bytesDown: number;
  /** Called on every chunk either way. */
  touch?: () => void;
  /** Called when one direction finished with a FIN (`"up"`: the client's, `"down"`: the upstream's). */
  ended?: (direction: "up" | "down") => void;
  /**
   * Reads the client's first bytes before relaying (e.g. `sniffFirstBytes`):
   * `held` goes upstream first, then `pending`'s chunk, then the rest. A
   * rejection ends the relay as a client reset.
   */
  first?: () => Promise<FirstBytes> | undefined;
}

/** Smallest and largest upstream read; an idle connection holds only the smallest. */
const READ_MIN = 256;
const READ_MAX = 64 * 1024;

/**
 * Relays bytes between a client stream and an upstream connection until
 * both directions are finished: client FIN → `closeWrite()` upstream,
 * upstream EOF → close the client's writable (FIN). Each side is read only
 * as fast as the other side takes the bytes. A reset on either side resets
 * or closes the other.
 *
 * There is no fixed buffer per connection: an upstream read gets a buffer
 * of 256 bytes after a short read (so an idle connection holds 256 bytes),
 * growing eightfold up to 64 KiB while reads fill it (256 B, 2 KiB,
 * 16 KiB, 64 KiB: a response reaches full-size reads in its fourth read,
 * not its ninth); the bytes go to the client without a copy, and the
 * buffer is read into again once the client's `write` has resolved (so
 * `write` must be done with a chunk when its promise resolves, as a
 * {@linkcode TcpStream}'s is: it copies into its send buffer). A short read
 * hands over a copy of its bytes instead.
 *
 * @param counters Optional totals that are increased as bytes go by,
 *   `touch()` called on every chunk (idle tracking), and `first()` called
 *   once before relaying (e.g. to read a host name from the first bytes).
 */
export function relayTcp(
  stream: RelayClient,
  conn: UpstreamConn,
  counters?: RelayCounters,
): Promise<RelayResult> {
  return new Promise((resolve) => new CountingRelay(stream, conn, counters, resolve).start());
}

// What one direction of a relay waits for.
const FIRST = 0;
const READ = 1;
const WRITE = 2;
const CLOSE_WRITE = 3;

/**
 * The relay's engine. Both directions are driven by four callbacks made
 * once per relay (no async frames, no closure or promise per chunk beyond
 * the pending read's `then`): an idle relay holds this object, its 256-byte
 * read buffer and the two pending reads.
 */
class TcpRelay {
  /** Payload bytes client → upstream so far. */
  bytesUp = 0;
  /** Payload bytes upstream → client so far. */
  bytesDown = 0;
  #failed = false;
  #end = "closed";
  #error: string | undefined = undefined;
  #upDone = false;
  #downDone = false;
  #upStep = FIRST;
  /** Chunks `first()` already read, in order, before the client's next ones. */
  #queued: Promise<Uint8Array | null>[] | null = null;
  /** The client chunk being written upstream, and what is left of it. */
  #chunkLength = 0;
  #left: Uint8Array | null = null;
  #downStep = READ;
  #size = READ_MIN;
  /**
   * The upstream read buffer, kept across reads (no allocation per read):
   * the next read starts only once the client's write of the last chunk
   * resolved, so its bytes are no longer needed; a new one when the size changes.
   */
  #buf: Uint8Array | null = null;
  #n = 0;

  constructor(readonly stream: RelayClient, readonly upstream: UpstreamConn) {}

  /** Called on every chunk either way. */
  protected touch(): void {}
  /** Called once before relaying; see {@linkcode RelayCounters.first}. */
  protected first(): Promise<FirstBytes> | undefined {
    return undefined;
  }
  /** Called after each chunk went through (`up` or `down` bytes). */
  protected moved(_up: number, _down: number): void {}
  /** Called when one direction ended with a FIN (`"up"`: the client's, `"down"`: the upstream's). */
  protected halfClosed(_direction: "up" | "down"): void {}
  /** Called once when both directions are finished. */
  protected complete(_result: RelayResult): void {}

  /** Starts both directions. */
  start(): void {
    let first: Promise<FirstBytes> | undefined;
    try {
      first = this.first();
    } catch (error) {
      this.#upFailed(error);
    }
    if (first) first.then(this.#upOk, this.#upErr);
    else if (!this.#failed) this.#readClient();
    this.#readUpstream();
  }

  // Ends both sides: closing the upstream and resetting the client (unless
  // it reset itself) end whatever the other direction still waits on.
  #fail(end: string, error: unknown, resetClient = true): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#end = end;
    const message = errorText(error);
    if (message) this.#error = message;
    try {
      this.upstream.close();
    } catch {
      // already closed
    }
    if (resetClient) this.stream.reset();
  }

  /** One direction is over; once both are, the relay ends. */
  #finished(up: boolean): void {
    if (up ? this.#upDone : this.#downDone) return;
    if (up) this.#upDone = true;
    else this.#downDone = true;
    if (!this.#upDone || !this.#downDone) return;
    if (!this.#failed) {
      try {
        this.upstream.close();
      } catch {
        // already closed
      }
    }
    if (this.#failed && this.#end === "upstream reset" && this.#error === undefined) {
      this.#error = "connection reset";
    }
    const result: RelayResult = {
      bytesUp: this.bytesUp,
      bytesDown: this.bytesDown,
      end: this.#end,
    };
    if (this.#error !== undefined) result.error = this.#error;
    this.complete(result);
  }

  /** A callback threw (a bug, or a throwing counter): end the relay rather than reject unhandled. */
  #crash(error: unknown, up: boolean): void {
    this.#fail("error", error);
    this.#finished(up);
  }

  // Client → upstream.

  #readClient(): void {
    this.#upStep = READ;
    let next: Promise<Uint8Array | null>;
    try {
      next = this.#queued?.shift() ?? this.stream.read();
    } catch (error) {
      return this.#upErr(error);
    }
    next.then(this.#upOk, this.#upErr);
  }

  #writeUp(data: Uint8Array): void {
    this.#left = data;
    this.#upStep = WRITE;
    try {
      this.upstream.write(data).then(this.#upOk, this.#upErr);
    } catch (error) {
      this.#upErr(error);
    }
  }

  #upOk = (value: unknown): void => {
    try {
      this.#upStepDone(value);
    } catch (error) {
      this.#crash(error, true);
    }
  };

  #upStepDone(value: unknown): void {
    switch (this.#upStep) {
      case FIRST: {
        const first = value as FirstBytes | undefined;
        const queued: Promise<Uint8Array | null>[] = [];
        if (first && first.held.length > 0) queued.push(Promise.resolve(first.held));
        if (first?.ended) queued.push(Promise.resolve(null));
        else if (first?.pending) queued.push(first.pending);
        if (queued.length > 0) this.#queued = queued;
        return this.#readClient();
      }
      case READ: {
        const chunk = value as Uint8Array | null;
        if (chunk === null) {
          this.halfClosed("up");
          this.#upStep = CLOSE_WRITE;
          try {
            this.upstream.closeWrite().then(this.#upOk, this.#upErr);
          } catch (error) {
            this.#upErr(error);
          }
          return;
        }
        this.touch();
        this.#chunkLength = chunk.length;
        if (chunk.length > 0) return this.#writeUp(chunk);
        return this.#readClient();
      }
      case WRITE: {
        const left = this.#left!.subarray(value as number);
        if (left.length > 0) return this.#writeUp(left);
        this.#left = null;
        this.bytesUp += this.#chunkLength;
        this.moved(this.#chunkLength, 0);
        return this.#readClient();
      }
      default:
        return this.#finished(true);
    }
  }

  #upErr = (error: unknown): void => {
    this.#left = null;
    if (this.#upStep === WRITE) this.#fail(upstreamEnd(error), error);
    else if (this.#upStep === CLOSE_WRITE) {
      // The upstream may have closed both ways already; the other direction tells.
      if (!(error instanceof Deno.errors.NotConnected)) this.#fail(upstreamEnd(error), error);
    } else return this.#upFailed(error);
    this.#finished(true);
  };

  /** The client's read failed (a reset, or `first()` refused): the upstream is closed. */
  #upFailed(error: unknown): void {
    this.#upStep = READ;
    this.#fail("client reset", error, false);
    this.#finished(true);
  }

  // Upstream → client.

  #readUpstream(): void {
    let buf = this.#buf;
    if (buf?.length !== this.#size) buf = this.#buf = new Uint8Array(this.#size);
    this.#downStep = READ;
    try {
      this.upstream.read(buf).then(this.#downOk, this.#downErr);
    } catch (error) {
      this.#downErr(error);
    }
  }

  #downOk = (value: unknown): void => {
    try {
      this.#downStepDone(value);
    } catch (error) {
      this.#crash(error, false);
    }
  };

  #downStepDone(value: unknown): void {
    if (this.#downStep === WRITE) {
      this.bytesDown += this.#n;
      this.moved(0, this.#n);
      return this.#readUpstream();
    }
    const n = value as number | null;
    const buf = this.#buf!;
    if (n === null) {
      // FIN to the client after what was written.
      this.#buf = null;
      this.halfClosed("down");
      this.stream.close();
      return this.#finished(false);
    }
    this.touch();
    const size = this.#size;
    // A short read keeps only its bytes (no slack held by the stream).
    const chunk = n === size ? buf : n >= size / 2 ? buf.subarray(0, n) : buf.slice(0, n);
    this.#size = n === size ? Math.min(size * 8, READ_MAX) : n < size / 4 ? READ_MIN : size;
    this.#n = n;
    this.#downStep = WRITE;
    try {
      this.stream.write(chunk).then(this.#downOk, this.#downErr);
    } catch (error) {
      this.#downErr(error);
    }
  }

  #downErr = (error: unknown): void => {
    this.#buf = null;
    if (this.#downStep === WRITE) this.#fail("client reset", error);
    else this.#fail(upstreamEnd(error), error);
    this.#finished(false);
  };
}

/** {@linkcode relayTcp}'s relay: reports to optional counters, resolves with the result. */
class CountingRelay extends TcpRelay {
  constructor(
    stream: RelayClient,
    conn: UpstreamConn,
    readonly counters: RelayCounters | undefined,
    readonly resolve: (result: RelayResult) => void,
  ) {
    super(stream, conn);
  }
  protected override touch(): void {
    this.counters?.touch?.();
  }
  protected override first(): Promise<FirstBytes> | undefined {
    return this.counters?.first?.();
  }
  protected override moved(up: number, down: number): void {
    if (!this.counters) return;
    this.counters.bytesUp += up;
    this.counters.bytesDown += down;
  }
  protected override halfClosed(direction: "up" | "down"): void {
    this.counters?.ended?.(direction);
  }
  protected override complete(result: RelayResult): void {
    this.resolve(result);
  }
}

/** One running TCP relay of a forwarder: its last activity, name, state and idle closing. */
class RelayHandle extends TcpRelay implements FlowEntry {
  id = 0;
  /** `"open"`, then `"client-fin"` or `"server-fin"` after one side's FIN. */
  state = "open";
  idled = false;
  domainRefused = false;
  host?: string;
  hostSource?: HostnameSource;
  readonly started: number = performance.now();
  lastActive: number = this.started;
  constructor(
    override readonly stream: TcpStream,
    upstream: UpstreamConn,
    readonly done: (relay: RelayHandle, result: RelayResult) => void,
    readonly sniff?: RelaySniff,
    readonly resolve?: () => void,
  ) {
    super(stream, upstream);
  }
  get protocol(): "tcp" {
    return "tcp";
  }
  get info(): FlowInfo {
    return this.stream;
  }
  protected override touch(): void {
    this.lastActive = performance.now();
  }
  protected override halfClosed(direction: "up" | "down"): void {
    this.state = this.state === "open"
      ? (direction === "up" ? "client-fin" : "server-fin")
      : "closing";
  }
  /** The client's first bytes, read while looking for a name. */
  protected override first(): Promise<FirstBytes> | undefined {
    const sniff = this.sniff;
    if (!sniff) return undefined;
    return sniffFirstBytes(() => this.stream.read(), {
      ...sniff.options,
      decide: (name, source) => sniff.decide(this, name, source),
    });
  }
  protected override complete(result: RelayResult): void {
    try {
      this.done(this, result);
    } finally {
      this.resolve?.();
    }
  }
  close(): void {
    this.upstream.close();
  }
  /** The idle timeout passed: close the upstream, reset the client. */
  idle(): void {
    this.idled = true;
    this.upstream.close();
    this.stream.reset();
  }
}

function upstreamEnd(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe) {
    return "upstream reset";
  }
  if (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted) {
    return "closed by server";
  }
  return "upstream error";
}
