/**
 * Forward mode: each TCP connection a client opens through the tunnel is
 * dialled at its original destination first (the client gets its SYN-ACK
 * only when that worked, a RST when it was refused, an ICMP unreachable
 * when it timed out), then relayed both ways with backpressure and
 * half-close. Each UDP flow gets its own socket towards its destination.
 * DNS to the server's tunnel address goes to the machine's resolver.
 *
 * @module
 */

import type { Logger } from "./log.ts";
import type { DnsUpstream } from "./dns.ts";
import { canonicalIp, ipVersionOf, subnetMatcher } from "./net.ts";
import { formatHostPort } from "./args.ts";

/** An address and port. */
export interface Endpoint {
  /** IP address text. */
  readonly address: string;
  /** Port. */
  readonly port: number;
}

/** Who opened a connection or flow and where it goes (the server's `FlowInfo`). */
export interface FlowMeta {
  /** The WireGuard peer it came through. */
  readonly peer: { readonly publicKey: string; readonly name?: string };
  /** 4 or 6. */
  readonly ipVersion: 4 | 6;
  /** The client's inner address and port. */
  readonly source: Endpoint;
  /** The destination the client dialled. */
  readonly destination: Endpoint;
}

/** A TCP connection from a client (the server's `TcpStream`). */
export interface ClientTcp extends FlowMeta {
  /** Bytes from the client; ends on FIN, errors on RST. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the client; `close()` sends FIN. */
  readonly writable: WritableStream<Uint8Array>;
  /** Sends RST. */
  reset(): void;
}

/** A UDP flow from a client (the server's `UdpStream`). */
export interface ClientUdp extends FlowMeta {
  /** Datagrams from the client; ends when the flow expires. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Datagrams to the client. */
  readonly writable: WritableStream<Uint8Array>;
}

/** What the forwarder tells the server about a new TCP connection. */
export type Decision = "accept" | "rst" | "icmp" | "drop";

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

/** Options of {@linkcode Forwarder}. */
export interface ForwarderOptions {
  /** Where records go. */
  logger: Logger;
  /** The server's tunnel addresses: DNS sent there is forwarded to {@linkcode ForwarderOptions.dns}. */
  localAddresses: string[];
  /**
   * The tunnel subnets (the server's `Address` CIDRs, e.g. `10.44.0.1/24`).
   * Other addresses in them are not forwarded: they belong to the tunnel,
   * not to the network behind the server (client-to-client traffic is not
   * routed).
   */
  tunnelSubnets?: string[];
  /** Resolver for DNS to the tunnel addresses; without it such queries are refused. */
  dns?: DnsUpstream;
  /** Dial timeout in milliseconds. Default 10 000. */
  connectTimeoutMs?: number;
  /** DNS relays end after this long without a datagram (ms). Default 10 000. */
  dnsIdleMs?: number;
  /** What a dial timeout answers: `"icmp"` (default, host unreachable) or `"rst"`. */
  onTimeout?: "icmp" | "rst";
  /**
   * Let clients reach this machine's loopback addresses (127.0.0.0/8, ::1)
   * and the unspecified address. Default false: a client must not get at
   * services that listen only locally.
   */
  allowLoopback?: boolean;
  /** Dials upstream; default `Deno.connect`. */
  connect?: (hostname: string, port: number, signal: AbortSignal) => Promise<UpstreamConn>;
}

/** Counters of a {@linkcode Forwarder}. */
export interface ForwarderStats {
  /** TCP connections relayed. */
  tcpAccepted: number;
  /** TCP connections refused upstream (answered with RST). */
  tcpRefused: number;
  /** TCP dials that timed out or found no route (answered with ICMP or RST). */
  tcpUnreachable: number;
  /** UDP flows relayed (DNS included). */
  udpFlows: number;
  /** Bytes from clients to destinations (TCP and UDP payload). */
  bytesUp: number;
  /** Bytes from destinations to clients. */
  bytesDown: number;
}

const PENDING_TTL_MS = 30_000;
const READ_SIZE = 64 * 1024;

function key(info: FlowMeta): string {
  return `${info.source.address}|${info.source.port}|${info.destination.address}|${info.destination.port}`;
}

function peerLabel(info: FlowMeta): string {
  return info.peer.name ?? info.peer.publicKey;
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : "Error";
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function defaultConnect(
  hostname: string,
  port: number,
  signal: AbortSignal,
): Promise<UpstreamConn> {
  return Deno.connect({ hostname, port, signal, autoSelectFamily: false });
}

/**
 * The forward mode handlers: pass {@linkcode Forwarder.accept},
 * {@linkcode Forwarder.onTcp} and {@linkcode Forwarder.onUdp} to `serve()`.
 *
 * @example
 * ```ts ignore
 * const fwd = new Forwarder({ logger, localAddresses: ["10.44.0.1"], dns });
 * await serve({ privateKey, peers, accept: (i) => fwd.accept(i), onTcp: (s) => fwd.onTcp(s), onUdp: (f) => fwd.onUdp(f) });
 * ```
 */
export class Forwarder {
  #log: Logger;
  #local: Set<string>;
  #inTunnel: (address: string) => boolean;
  #dns?: DnsUpstream;
  #timeoutMs: number;
  #onTimeout: "icmp" | "rst";
  #allowLoopback: boolean;
  #dnsIdleMs: number;
  #connect: (hostname: string, port: number, signal: AbortSignal) => Promise<UpstreamConn>;
  /** Upstream connections dialled by `accept`, waiting for their `onTcp`. */
  #pending = new Map<
    string,
    { conn: UpstreamConn; dialMs: number; timer: ReturnType<typeof setTimeout> }
  >();
  #open = new Set<{ close(): void }>();
  #closed = false;
  #stats: ForwarderStats = {
    tcpAccepted: 0,
    tcpRefused: 0,
    tcpUnreachable: 0,
    udpFlows: 0,
    bytesUp: 0,
    bytesDown: 0,
  };

  /** Creates the handlers. */
  constructor(options: ForwarderOptions) {
    this.#log = options.logger;
    this.#local = new Set(options.localAddresses.map(canonicalIp));
    this.#inTunnel = subnetMatcher(options.tunnelSubnets ?? []);
    this.#dns = options.dns;
    this.#timeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#onTimeout = options.onTimeout ?? "icmp";
    this.#allowLoopback = options.allowLoopback ?? false;
    this.#dnsIdleMs = options.dnsIdleMs ?? 10_000;
    this.#connect = options.connect ?? defaultConnect;
  }

  /** Counters so far. */
  stats(): ForwarderStats {
    return { ...this.#stats };
  }

  /** Where a connection or flow to `destination` really goes, or `undefined` when nowhere. */
  #target(destination: Endpoint): { hostname: string; port: number } | undefined {
    if (this.#local.has(canonicalIp(destination.address))) {
      // The server's own tunnel address: only its DNS service exists.
      if (destination.port === 53 && this.#dns) return this.#dns;
      return undefined;
    }
    if (!this.#allowLoopback && isLoopbackOrUnspecified(destination.address)) return undefined;
    if (this.#inTunnel(destination.address)) return undefined;
    return { hostname: destination.address, port: destination.port };
  }

  /**
   * Dials the connection's destination and decides: `"accept"` when it
   * answered, `"rst"` when it refused (or is the tunnel address on a port
   * other than DNS), `"icmp"` (or `"rst"`, see {@linkcode ForwarderOptions.onTimeout})
   * when the dial timed out or found no route.
   */
  async accept(info: FlowMeta): Promise<Decision> {
    if (this.#closed) return "rst";
    const target = this.#target(info.destination);
    if (!target) {
      this.#stats.tcpRefused++;
      this.#logRefused(info, "rst", "no service at a tunnel or loopback address");
      return "rst";
    }
    const started = performance.now();
    const abort = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort(new Deno.errors.TimedOut("connect timed out"));
    }, this.#timeoutMs);
    let conn: UpstreamConn;
    try {
      conn = await this.#connect(target.hostname, target.port, abort.signal);
    } catch (error) {
      const decision: Decision = timedOut
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
      return decision;
    } finally {
      clearTimeout(timer);
    }
    if (this.#closed) {
      conn.close();
      return "rst";
    }
    const k = key(info);
    this.#pending.get(k)?.conn.close();
    clearTimeout(this.#pending.get(k)?.timer);
    const dialMs = performance.now() - started;
    // If the server never hands the connection over (the client gave up,
    // the server is stopping), drop the upstream after a while.
    const ttl = setTimeout(() => {
      const p = this.#pending.get(k);
      if (p?.conn === conn) {
        this.#pending.delete(k);
        conn.close();
      }
    }, PENDING_TTL_MS);
    Deno.unrefTimer(ttl);
    this.#pending.set(k, { conn, dialMs, timer: ttl });
    return "accept";
  }

  #logRefused(info: FlowMeta, decision: Decision, reason: string): void {
    this.#log.log({
      level: "info",
      event: "tcp-refused",
      peer: peerLabel(info),
      source: info.source,
      destination: info.destination,
      answer: decision,
      reason,
    });
  }

  /** Relays an accepted connection to the upstream dialled by {@linkcode Forwarder.accept}. */
  async onTcp(stream: ClientTcp): Promise<void> {
    const k = key(stream);
    const pending = this.#pending.get(k);
    if (!pending) {
      this.#log.log({
        level: "warn",
        event: "tcp-no-upstream",
        peer: peerLabel(stream),
        source: stream.source,
        destination: stream.destination,
      });
      stream.reset();
      return;
    }
    this.#pending.delete(k);
    clearTimeout(pending.timer);
    this.#stats.tcpAccepted++;
    const { conn, dialMs } = pending;
    this.#log.log({
      level: "info",
      event: "tcp-open",
      peer: peerLabel(stream),
      source: stream.source,
      destination: stream.destination,
      dialMs: Math.round(dialMs),
    });
    const handle = { close: () => conn.close() };
    this.#open.add(handle);
    const started = performance.now();
    const result = await relayTcp(stream, conn, this.#stats);
    this.#open.delete(handle);
    this.#log.log({
      level: result.error ? "warn" : "info",
      event: "tcp-close",
      peer: peerLabel(stream),
      source: stream.source,
      destination: stream.destination,
      bytesUp: result.bytesUp,
      bytesDown: result.bytesDown,
      durationMs: Math.round(performance.now() - started),
      end: this.#closed && result.end !== "closed" ? "shutdown" : result.end,
      error: result.error,
    });
  }

  /** Relays a UDP flow through its own socket until the flow expires. */
  async onUdp(flow: ClientUdp): Promise<void> {
    const target = this.#closed ? undefined : this.#target(flow.destination);
    if (!target) {
      this.#log.log({
        level: "debug",
        event: "udp-dropped",
        peer: peerLabel(flow),
        source: flow.source,
        destination: flow.destination,
        reason: this.#closed ? "stopping" : "no service at a tunnel or loopback address",
      });
      await flow.readable.cancel().catch(() => {});
      await flow.writable.abort().catch(() => {});
      return;
    }
    const family = ipVersionOf(target.hostname);
    let socket: Deno.DatagramConn;
    try {
      socket = Deno.listenDatagram({
        transport: "udp",
        hostname: family === 6 ? "::" : "0.0.0.0",
        port: 0,
      });
    } catch (error) {
      this.#log.log({ level: "error", event: "udp-socket-error", error: errorText(error) });
      await flow.readable.cancel().catch(() => {});
      return;
    }
    this.#stats.udpFlows++;
    const handle = { close: () => socket.close() };
    this.#open.add(handle);
    const started = performance.now();
    const label = { peer: peerLabel(flow), source: flow.source, destination: flow.destination };
    this.#log.log({
      level: "info",
      event: "udp-open",
      ...label,
      via: target === this.#dns ? formatHostPort(target.hostname, target.port) : undefined,
    });
    const counts = { bytesUp: 0, bytesDown: 0, datagramsUp: 0, datagramsDown: 0 };
    const wanted = canonicalIp(target.hostname);
    let end = "expired";
    let error: string | undefined;
    const reader = flow.readable.getReader();
    // A DNS flow is one query and its answer: stop relaying it soon after, so
    // a busy client does not hold a socket per query for the netstack's idle time.
    const isDns = target === this.#dns;
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
          if (addr.port !== target.port || canonicalIp(addr.hostname) !== wanted) continue;
          await writer.write(data);
          touch();
          counts.bytesDown += data.length;
          counts.datagramsDown++;
          this.#stats.bytesDown += data.length;
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
          this.#log.log({ level: "debug", event: "udp-send-error", ...label, error: errorText(e) });
          continue;
        }
        counts.bytesUp += value.length;
        counts.datagramsUp++;
        this.#stats.bytesUp += value.length;
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
    }
    await down;
    this.#log.log({
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
   * Closes every upstream connection and socket, which ends their relays
   * (the clients' connections are reset): for shutdown.
   */
  close(): void {
    this.#closed = true;
    for (const { conn, timer } of this.#pending.values()) {
      clearTimeout(timer);
      conn.close();
    }
    this.#pending.clear();
    for (const h of this.#open) {
      try {
        h.close();
      } catch {
        // already closed
      }
    }
    this.#open.clear();
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
 * Relays bytes between a client stream and an upstream connection until
 * both directions are finished: client FIN → `closeWrite()` upstream,
 * upstream EOF → close the client's writable (FIN). Each side is read only
 * as fast as the other side takes the bytes. A reset on either side resets
 * or closes the other.
 *
 * @param counters Optional totals that are increased as bytes go by.
 */
export async function relayTcp(
  stream: ClientTcp,
  conn: UpstreamConn,
  counters?: { bytesUp: number; bytesDown: number },
): Promise<RelayResult> {
  const result: RelayResult = { bytesUp: 0, bytesDown: 0, end: "closed" };
  let failed = false;
  const reader = stream.readable.getReader();
  const writer = stream.writable.getWriter();

  function fail(end: string, error: unknown, resetClient: boolean): void {
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
    // Whatever the reset did to the streams, neither loop may wait on them any more.
    reader.cancel().catch(() => {});
    writer.abort().catch(() => {});
  }

  const up = (async () => {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (error) {
        return fail("client reset", error, false);
      }
      if (chunk.done) break;
      let data = chunk.value;
      try {
        while (data.length > 0) data = data.subarray(await conn.write(data));
      } catch (error) {
        return fail(upstreamEnd(error), error, true);
      }
      result.bytesUp += chunk.value.length;
      if (counters) counters.bytesUp += chunk.value.length;
    }
    try {
      await conn.closeWrite();
    } catch (error) {
      // The upstream may have closed both ways already; the other loop tells.
      if (!(error instanceof Deno.errors.NotConnected)) fail(upstreamEnd(error), error, true);
    }
  })();

  const down = (async () => {
    const buf = new Uint8Array(READ_SIZE);
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch (error) {
        return fail(upstreamEnd(error), error, true);
      }
      if (n === null) break;
      try {
        await writer.write(buf.slice(0, n)); // a copy: the stream may keep it
      } catch (error) {
        return fail("client reset", error, false);
      }
      result.bytesDown += n;
      if (counters) counters.bytesDown += n;
    }
    try {
      await writer.close();
    } catch (error) {
      fail("client reset", error, false);
    }
  })();

  await Promise.all([up, down]);
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
  return result;
}

/** 127.0.0.0/8, 0.0.0.0, ::1, :: and their IPv4-mapped forms. */
function isLoopbackOrUnspecified(address: string): boolean {
  const canonical = canonicalIp(address);
  return canonical === "::" || canonical === "::1" || canonical === "0.0.0.0" ||
    /^127\./.test(canonical);
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
