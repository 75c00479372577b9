/**
 * Forwarding: each TCP connection a client opens through the tunnel is
 * dialled at its original destination first (the client gets its SYN-ACK
 * only when that worked, a RST when it was refused, an ICMP unreachable when
 * it timed out), then relayed both ways with backpressure and half-close.
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
import { LogLimiter } from "./log_limit.ts";
import { unrefTimer } from "./_timers.ts";
import { isIpv4Mapped, positiveInteger } from "./_util.ts";
import { formatIp, parseIp } from "@wgstack/wireguard";

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
}

/** Limits of a {@linkcode Forwarder}; defaults derive from the file descriptor limit. */
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

/** Options of {@linkcode Forwarder} (and `serve({ forward })`). */
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
}

/** Counters of a {@linkcode Forwarder}. */
export interface ForwarderStats {
  /** TCP connections relayed. */
  tcpAccepted: number;
  /** TCP connections refused (policy, upstream refused, limits). */
  tcpRefused: number;
  /** TCP dials that timed out or found no route. */
  tcpUnreachable: number;
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
async function defaultConnect(
  hostname: string,
  port: number,
  signal: AbortSignal,
): Promise<UpstreamConn> {
  const conn = await Deno.connect({ hostname, port, signal, autoSelectFamily: false });
  conn.setNoDelay(true);
  return conn;
}

/** Canonical address text (so `::ffff:192.0.2.1` and `192.0.2.1` compare equal). */
function canonical(text: string): string {
  const bytes = parseIp(text.split("%")[0]);
  if (!bytes) return text;
  return formatIp(isIpv4Mapped(bytes) ? bytes.subarray(12) : bytes);
}

interface Dial {
  key: string;
  peer: string;
  abort: AbortController;
  /** Bumped by each SYN request that joins; only the latest gets the upstream. */
  generation: number;
  promise: Promise<UpstreamConn>;
  /** `promise`, or a rejection as soon as the dial is cancelled (its waiters need not wait for the socket). */
  settled: Promise<UpstreamConn>;
  cancel: (reason: Error) => void;
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
  #local: Set<string>;
  #dns?: { hostname: string; port: number };
  #refuseWith: "rst" | "icmp-prohibited";
  #timeoutMs: number;
  #onTimeout: "icmp" | "rst";
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
  #stats = {
    tcpAccepted: 0,
    tcpRefused: 0,
    tcpUnreachable: 0,
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
    this.#local = new Set((options.localAddresses ?? []).map(canonical));
    this.#dns = options.dns;
    this.#refuseWith = options.refuseWith === "icmp" ? "icmp-prohibited" : "rst";
    this.#timeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#onTimeout = options.onTimeout ?? "icmp";
    this.#idleMs = options.tcpIdleTimeoutMs ?? 7_440_000;
    this.#dnsIdleMs = options.dnsIdleMs ?? 10_000;
    this.#limits = forwardLimits(options.limits);
    this.#connect = options.connect ?? defaultConnect;
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
    };
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
    if (this.#local.size > 0 && this.#local.has(canonical(destination.address))) {
      if (destination.port === 53 && this.#dns) return this.#dns;
      return "tunnel";
    }
    const reason = this.#policy.check(destination.address, destination.port);
    return reason ?? { hostname: destination.address, port: destination.port };
  }

  /**
   * Whether a new UDP flow may open (checked for the first datagram, before
   * the flow exists): `false` answers the client with ICMP administratively
   * prohibited.
   */
  acceptUdp(info: FlowInfo): boolean {
    if (this.#closed) return false;
    const target = this.#target(info.destination);
    if (typeof target !== "string") return true;
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
    if (dial.evicted) return;
    dial.evicted = true;
    this.#release(dial.peer);
    dial.cancel(reason);
    dial.abort.abort(reason);
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
   */
  async accept(info: FlowInfo): Promise<TcpDial> {
    if (this.#closed) return { decision: "rst" };
    const target = this.#target(info.destination);
    if (typeof target === "string") {
      this.#stats.tcpRefused++;
      this.#logRefused(info, this.#refuseWith, target);
      return { decision: this.#refuseWith };
    }
    const key =
      `${info.source.address}|${info.source.port}|${info.destination.address}|${info.destination.port}`;
    let dial = this.#dials.get(key);
    if (dial) {
      this.#stats.dialsJoined++;
      dial.generation++;
    } else {
      const peer = info.peer.publicKey;
      if (!this.#admit(peer)) {
        this.#stats.limitRefused++;
        this.#logRefused(info, "rst", "upstream socket limit");
        return { decision: "rst" };
      }
      const abort = new AbortController();
      const promise = this.#connect(target.hostname, target.port, abort.signal);
      let cancel!: (reason: Error) => void;
      const cancelled = new Promise<never>((_, reject) => cancel = reject);
      cancelled.catch(() => {});
      const d: Dial = {
        key,
        peer,
        abort,
        generation: 0,
        promise,
        settled: Promise.race([promise, cancelled]),
        cancel,
        evicted: false,
        timedOut: false,
        started: performance.now(),
      };
      dial = d;
      const timer = setTimeout(() => {
        d.timedOut = true;
        abort.abort(new Deno.errors.TimedOut(`timed out after ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      this.#dials.set(key, d);
      this.#use(peer).dials.set(key, d);
      this.#take(peer);
      promise.then((conn) => {
        // The dial slot becomes a connection's socket; the relay releases it.
        // Nobody takes a connection that arrives after an eviction: close it.
        if (d.evicted) conn.close();
      }, () => {
        if (!d.evicted) this.#release(peer);
      }).finally(() => {
        clearTimeout(timer);
        this.#forgetDial(d);
      });
    }
    const mine = dial.generation;
    let conn: UpstreamConn;
    try {
      conn = await dial.settled;
    } catch (error) {
      if (dial.evicted || mine !== dial.generation) return { decision: "drop" };
      const timedOut = dial.timedOut;
      const decision = timedOut
        ? this.#onTimeout
        : error instanceof Deno.errors.ConnectionRefused
        ? "rst"
        : "icmp";
      if (decision === "rst" && !timedOut) this.#stats.tcpRefused++;
      else this.#stats.tcpUnreachable++;
      this.#logRefused(
        info,
        decision,
        timedOut
          ? `timed out after ${this.#timeoutMs} ms`
          : `${errorName(error)}: ${errorText(error)}`,
      );
      return { decision };
    }
    if (dial.evicted || mine !== dial.generation) return { decision: "drop" };
    if (this.#closed) {
      conn.close();
      this.#release(dial.peer);
      return { decision: "rst" };
    }
    const dialMs = performance.now() - dial.started;
    this.#observeDial(dialMs / 1000);
    // No closure over this call's scope: a connection keeps only its socket,
    // not the dial that made it.
    const upstream = new DialledUpstream(conn, dialMs, this.#releasePeer, dial.peer);
    return { decision: "accept", upstream };
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

  /** A handler that relays its connection to `upstream` (see {@linkcode Forwarder.relay}). */
  relayTo(upstream: UpstreamConn): (stream: TcpStream) => Promise<void> {
    return (stream) => this.relay(stream, upstream);
  }

  /** Relays an accepted connection to the upstream {@linkcode Forwarder.accept} dialled. */
  relay(stream: TcpStream, upstream: UpstreamConn): Promise<void> {
    if (this.#closed) {
      upstream.close();
      stream.reset();
      return Promise.resolve();
    }
    this.#stats.tcpAccepted++;
    const dialMs = (upstream as { dialMs?: number }).dialMs;
    this.#rawLog({
      level: "info",
      event: "tcp-open",
      peer: peerLabel(stream),
      source: stream.source,
      destination: stream.destination,
      dialMs: dialMs === undefined ? undefined : Math.round(dialMs),
    });
    // One small object per relay (no closures): idle connections stay small.
    const relay = new RelayHandle(stream, upstream);
    this.#open.add(relay);
    return relayTcp(stream, upstream, relay).then((result) => this.#relayEnded(relay, result));
  }

  #relayEnded(relay: RelayHandle, result: RelayResult): void {
    this.#open.delete(relay);
    relay.upstream.close();
    const { stream, idled } = relay;
    if (idled) this.#stats.tcpIdleClosed++;
    this.#stats.bytesUp += result.bytesUp;
    this.#stats.bytesDown += result.bytesDown;
    this.#rawLog({
      level: result.error && !idled ? "warn" : "info",
      event: "tcp-close",
      peer: peerLabel(stream),
      source: stream.source,
      destination: stream.destination,
      bytesUp: result.bytesUp,
      bytesDown: result.bytesDown,
      durationMs: Math.round(performance.now() - relay.started),
      end: idled ? "idle" : this.#closed && result.end !== "closed" ? "shutdown" : result.end,
      error: idled ? undefined : result.error,
    });
  }

  #reapIdle(): void {
    const limit = performance.now() - this.#idleMs;
    for (const h of this.#open) if (h.idle && h.lastActive <= limit) h.idle();
  }

  /** Relays a UDP flow through its own socket until the flow expires. */
  async onUdp(flow: UdpStream): Promise<void> {
    const target = this.#closed ? "stopping" : this.#target(flow.destination);
    const label = { peer: peerLabel(flow), source: flow.source, destination: flow.destination };
    const peer = flow.peer.publicKey;
    const use = this.#use(peer);
    const full = use.sockets >= this.#limits.peerUpstreamSockets ||
      this.#sockets >= this.#limits.upstreamSockets;
    if (typeof target === "string" || full) {
      if (typeof target === "string") this.#stats.udpRefused++;
      else this.#stats.limitRefused++;
      this.#log.log({
        level: "info",
        event: "udp-refused",
        ...label,
        reason: typeof target === "string" ? target : "upstream socket limit",
      });
      if (use.sockets === 0 && use.dials.size === 0) this.#peers.delete(peer);
      await flow.readable.cancel().catch(() => {});
      await flow.writable.abort().catch(() => {});
      return;
    }
    let socket: Deno.DatagramConn;
    try {
      socket = Deno.listenDatagram({
        transport: "udp",
        hostname: target.hostname.includes(":") ? "::" : "0.0.0.0",
        port: 0,
      });
    } catch (error) {
      this.#rawLog({ level: "error", event: "udp-socket-error", error: errorText(error) });
      await flow.readable.cancel().catch(() => {});
      return;
    }
    this.#take(peer);
    const localPort = (socket.addr as Deno.NetAddr).port;
    this.#ownPorts.set(localPort, (this.#ownPorts.get(localPort) ?? 0) + 1);
    this.#stats.udpFlows++;
    const handle = { lastActive: 0, close: () => socket.close() };
    this.#open.add(handle);
    const started = performance.now();
    const isDns = target === this.#dns;
    this.#rawLog({
      level: "info",
      event: "udp-open",
      ...label,
      via: isDns ? `${target.hostname}:${target.port}` : undefined,
    });
    const counts = { bytesUp: 0, bytesDown: 0, datagramsUp: 0, datagramsDown: 0 };
    const wanted = canonical(target.hostname);
    let end = "expired";
    let error: string | undefined;
    const reader = flow.readable.getReader();
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
      const writer = flow.writable.getWriter();
      try {
        for (;;) {
          const [data, from] = await socket.receive();
          const addr = from as Deno.NetAddr;
          // Endpoint-dependent filtering: only the destination may answer.
          if (addr.port !== target.port || canonical(addr.hostname) !== wanted) continue;
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
        try {
          await socket.send(value, {
            transport: "udp",
            hostname: target.hostname,
            port: target.port,
          });
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
      try {
        socket.close();
      } catch {
        // already closed by close()
      }
      this.#open.delete(handle);
      const n = (this.#ownPorts.get(localPort) ?? 1) - 1;
      if (n > 0) this.#ownPorts.set(localPort, n);
      else this.#ownPorts.delete(localPort);
      this.#release(peer);
    }
    await down;
    this.#stats.bytesUp += counts.bytesUp;
    this.#stats.bytesDown += counts.bytesDown;
    this.#rawLog({
      level: "info",
      event: "udp-close",
      ...label,
      ...counts,
      durationMs: Math.round(performance.now() - started),
      end: this.#closed && end === "expired" ? "shutdown" : end,
      error,
    });
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

/** One running TCP relay: its byte counts, last activity and idle closing. */
class RelayHandle {
  bytesUp = 0;
  bytesDown = 0;
  idled = false;
  readonly started: number = performance.now();
  lastActive: number = this.started;
  constructor(readonly stream: TcpStream, readonly upstream: UpstreamConn) {}
  touch(): void {
    this.lastActive = performance.now();
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
 * There is no fixed buffer per connection: each upstream read gets a fresh
 * buffer, 256 bytes after a short read (so an idle connection holds 256
 * bytes), doubling up to 64 KiB while reads fill it; the bytes go to the
 * client without a copy.
 *
 * @param counters Optional totals that are increased as bytes go by, and
 *   `touch()` called on every chunk (idle tracking).
 */
export function relayTcp(
  stream: RelayClient,
  conn: UpstreamConn,
  counters?: { bytesUp: number; bytesDown: number; touch?: () => void },
): Promise<RelayResult> {
  const result: RelayResult = { bytesUp: 0, bytesDown: 0, end: "closed" };
  let failed = false;

  // Ends both sides: closing the upstream and resetting the client (unless
  // it reset itself) end whatever either loop still waits on.
  function fail(end: string, error: unknown, resetClient = true): void {
    if (failed) return;
    failed = true;
    result.end = end;
    const message = errorText(error);
    if (message) result.error = message;
    try {
      conn.close();
    } catch {
      // already closed
    }
    if (resetClient) stream.reset();
  }

  const up = (async () => {
    for (;;) {
      let chunk: Uint8Array | null;
      try {
        chunk = await stream.read();
      } catch (error) {
        return fail("client reset", error, false);
      }
      if (chunk === null) break;
      counters?.touch?.();
      let data = chunk;
      try {
        while (data.length > 0) data = data.subarray(await conn.write(data));
      } catch (error) {
        return fail(upstreamEnd(error), error);
      }
      result.bytesUp += chunk.length;
      if (counters) counters.bytesUp += chunk.length;
    }
    try {
      await conn.closeWrite();
    } catch (error) {
      // The upstream may have closed both ways already; the other loop tells.
      if (!(error instanceof Deno.errors.NotConnected)) fail(upstreamEnd(error), error);
    }
  })();

  const down = (async () => {
    let size = READ_MIN;
    for (;;) {
      const buf = new Uint8Array(size);
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch (error) {
        return fail(upstreamEnd(error), error);
      }
      if (n === null) break;
      counters?.touch?.();
      // A short read keeps only its bytes (no slack held by the stream).
      const chunk = n === size ? buf : n >= size / 2 ? buf.subarray(0, n) : buf.slice(0, n);
      size = n === size ? Math.min(size * 2, READ_MAX) : n < size / 4 ? READ_MIN : size;
      try {
        await stream.write(chunk);
      } catch (error) {
        return fail("client reset", error);
      }
      result.bytesDown += n;
      if (counters) counters.bytesDown += n;
    }
    // FIN to the client after what was written.
    stream.close();
  })();

  // Both loops catch their errors; one small closure waits for both (an idle
  // relay holds little besides the two pending reads).
  return new Promise((resolve) => {
    let running = 2;
    const finished = () => {
      if (--running > 0) return;
      if (!failed) {
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
      if (failed && result.end === "upstream reset" && result.error === undefined) {
        result.error = "connection reset";
      }
      resolve(result);
    };
    up.then(finished, finished);
    down.then(finished, finished);
  });
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
