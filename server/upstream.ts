/**
 * Upstream proxies for forwarding: TCP through a SOCKS5 `CONNECT` (RFC 1928,
 * username/password RFC 1929) or an HTTP `CONNECT` (RFC 9110 §9.3.6, Basic
 * auth), UDP through a SOCKS5 `UDP ASSOCIATE`.
 *
 * Hand-written rather than the `socks` npm package: that package hands back a
 * `node:net` socket, while the relay reads and writes a `Deno.TcpConn`
 * directly (pull-based, so the client's TCP window is the upstream's pace);
 * the handshakes are a few dozen bytes each way.
 *
 * Failures carry the answer a client's SYN gets (see {@linkcode ProxyError}):
 * a proxy that cannot be reached or times out → ICMP unreachable, a proxy
 * that refuses (credentials, its rules, the destination refused) → RST, as a
 * direct dial's would.
 *
 * @module
 */

import { formatIp, parseIp } from "@wgstack/wireguard";
import type { UpstreamConn } from "./forward.ts";
import { isIpv4Mapped } from "./_util.ts";
import { udpReceiveSize } from "./_allocator.ts";

/** A parsed upstream URL. */
export interface UpstreamProxy {
  /** `socks5` sends addresses, `socks5h` sends the flow's hostname when known, `http` uses CONNECT. */
  readonly kind: "socks5" | "socks5h" | "http";
  /** The proxy's host (an IP address or a name Deno resolves). */
  readonly hostname: string;
  /** The proxy's port. */
  readonly port: number;
  /** Username, when the URL had one. */
  readonly username?: string;
  /** Password, when the URL had one. */
  readonly password?: string;
  /** The URL without the password, for logs. */
  readonly label: string;
}

/** Where a flow goes through the proxy. */
export interface ProxyTarget {
  /** The destination address the client used. */
  address: string;
  /** The destination port. */
  port: number;
  /** The flow's hostname, sent instead of the address by `socks5h` and `http`. */
  hostname?: string;
}

/** A failed proxy handshake, with how the client's SYN is answered. */
export class ProxyError extends Error {
  /** `"rst"` (the proxy refused) or `"icmp"` (the proxy or the destination is unreachable). */
  readonly answer: "rst" | "icmp";
  /** Creates the error. */
  constructor(message: string, answer: "rst" | "icmp") {
    super(message);
    this.name = "ProxyError";
    this.answer = answer;
  }
}

/**
 * Parses `socks5://[user:pass@]host:port`, `socks5h://…` or
 * `http://[user:pass@]host:port`. Throws `TypeError` with the reason.
 *
 * @example
 * ```ts
 * import { parseUpstream } from "./upstream.ts";
 * const p = parseUpstream("socks5h://me:secret@192.0.2.9:1080");
 * p.kind; // "socks5h"
 * p.label; // "socks5h://me@192.0.2.9:1080"
 * ```
 */
export function parseUpstream(text: string): UpstreamProxy {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    // The text may hold a password: not repeated in the message.
    throw new TypeError("Upstream is not a URL (socks5://, socks5h:// or http://)");
  }
  const kind = url.protocol.slice(0, -1);
  if (kind !== "socks5" && kind !== "socks5h" && kind !== "http") {
    throw new TypeError(`Upstream scheme must be socks5, socks5h or http, not "${kind}"`);
  }
  if (!url.hostname) throw new TypeError("Upstream URL has no host");
  if (url.pathname !== "/" && url.pathname !== "" || url.search || url.hash) {
    throw new TypeError("Upstream URL must be scheme://[user:pass@]host:port only");
  }
  const port = url.port ? Number(url.port) : kind === "http" ? 8080 : 1080;
  const username = url.username ? decodeCredential(url.username) : undefined;
  const password = url.password ? decodeCredential(url.password) : undefined;
  if (kind !== "http" && ((username?.length ?? 0) > 255 || (password?.length ?? 0) > 255)) {
    throw new RangeError("SOCKS5 username and password are at most 255 bytes (RFC 1929)");
  }
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const userPart = username ? `${encodeURIComponent(username)}@` : "";
  return {
    kind,
    hostname,
    port,
    username,
    password,
    label: `${kind}://${userPart}${url.host}`,
  };
}

/** A %-decoded user name or password; a broken escape is a `TypeError` (not echoed: a secret). */
function decodeCredential(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new TypeError("Upstream user name or password has a malformed %-escape");
  }
}

/** A TCP connection as the dialers need it (a `Deno.TcpConn` fits). */
export type ProxyConn = UpstreamConn;

/** Options of {@linkcode dialThrough}. */
export interface DialThroughOptions {
  /** Cancels the dial (the connection to the proxy is closed). */
  signal?: AbortSignal;
  /** Opens the TCP connection to the proxy; default `Deno.connect`. */
  connect?: (hostname: string, port: number, signal: AbortSignal) => Promise<ProxyConn>;
}

function defaultConnect(hostname: string, port: number, signal: AbortSignal): Promise<ProxyConn> {
  return Deno.connect({ hostname, port, signal });
}

const encoder = new TextEncoder();

/**
 * Opens a TCP connection to `target` through `proxy`: resolves with the
 * connection once the proxy reported success (bytes after that are the
 * destination's), or rejects with a {@linkcode ProxyError}.
 */
export async function dialThrough(
  proxy: UpstreamProxy,
  target: ProxyTarget,
  options: DialThroughOptions = {},
): Promise<ProxyConn> {
  const conn = await connectProxy(proxy, options);
  return await handshake(conn, proxy, options.signal, async () => {
    if (proxy.kind === "http") return await httpConnect(conn, proxy, target);
    await socksGreet(conn, proxy);
    await socksRequest(conn, CMD_CONNECT, socksAddress(proxy, target), target.port);
    return conn;
  });
}

/**
 * Runs a handshake on `conn`: an abort of `signal` closes the connection
 * (so a proxy that never answers cannot hold the dial); any failure closes
 * it and becomes a {@linkcode ProxyError} (or the abort reason).
 */
async function handshake<T>(
  conn: ProxyConn,
  proxy: UpstreamProxy,
  signal: AbortSignal | undefined,
  steps: () => Promise<T>,
): Promise<T> {
  const close = () => {
    try {
      conn.close();
    } catch {
      // already closed
    }
  };
  signal?.addEventListener("abort", close, { once: true });
  try {
    return await steps();
  } catch (error) {
    close();
    if (signal?.aborted) throw signal.reason;
    throw asProxyError(error, proxy);
  } finally {
    signal?.removeEventListener("abort", close);
  }
}

async function connectProxy(proxy: UpstreamProxy, options: DialThroughOptions) {
  try {
    const signal = options.signal ?? new AbortController().signal;
    return await (options.connect ?? defaultConnect)(proxy.hostname, proxy.port, signal);
  } catch (error) {
    if (options.signal?.aborted) throw options.signal.reason;
    throw new ProxyError(
      `proxy ${proxy.label} unreachable: ${error instanceof Error ? error.message : error}`,
      "icmp",
    );
  }
}

function asProxyError(error: unknown, proxy: UpstreamProxy): ProxyError {
  if (error instanceof ProxyError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new ProxyError(`proxy ${proxy.label}: ${message}`, "rst");
}

// --- SOCKS5 (RFC 1928, RFC 1929) ---

const CMD_CONNECT = 1;
const CMD_UDP_ASSOCIATE = 3;
const ATYP_IPV4 = 1;
const ATYP_DOMAIN = 3;
const ATYP_IPV6 = 4;

/** RFC 1928 §6 reply codes: text, and the answer a client's SYN gets. */
const SOCKS_REPLIES: Record<number, [string, "rst" | "icmp"]> = {
  1: ["general SOCKS server failure", "rst"],
  2: ["connection not allowed by ruleset", "rst"],
  3: ["network unreachable", "icmp"],
  4: ["host unreachable", "icmp"],
  5: ["connection refused", "rst"],
  6: ["TTL expired", "icmp"],
  7: ["command not supported", "rst"],
  8: ["address type not supported", "rst"],
};

async function readExact(conn: ProxyConn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new ProxyError("proxy closed the connection during the handshake", "rst");
    got += r;
  }
  return out;
}

async function writeAll(conn: ProxyConn, data: Uint8Array): Promise<void> {
  while (data.length > 0) data = data.subarray(await conn.write(data));
}

async function socksGreet(conn: ProxyConn, proxy: UpstreamProxy): Promise<void> {
  const auth = proxy.username !== undefined;
  // VER 5, methods: "no auth" (0) and, with credentials, username/password (2).
  await writeAll(conn, auth ? Uint8Array.of(5, 2, 0, 2) : Uint8Array.of(5, 1, 0));
  const [ver, method] = await readExact(conn, 2);
  if (ver !== 5) throw new ProxyError("not a SOCKS5 proxy", "rst");
  if (method === 0) return;
  if (method !== 2 || !auth) {
    throw new ProxyError(
      method === 0xff ? "proxy accepts none of our auth methods" : `proxy chose method ${method}`,
      "rst",
    );
  }
  const user = encoder.encode(proxy.username);
  const pass = encoder.encode(proxy.password ?? "");
  await writeAll(conn, Uint8Array.of(1, user.length, ...user, pass.length, ...pass));
  const [, status] = await readExact(conn, 2);
  if (status !== 0) throw new ProxyError("proxy rejected the username/password", "rst");
}

/** DST.ADDR of a request: the hostname (socks5h, when known) or the address. */
function socksAddress(proxy: UpstreamProxy, target: ProxyTarget): Uint8Array {
  if (proxy.kind === "socks5h" && target.hostname) {
    const name = encoder.encode(target.hostname);
    if (name.length > 0 && name.length <= 255) {
      return Uint8Array.of(ATYP_DOMAIN, name.length, ...name);
    }
  }
  return addressField(target.address);
}

function addressField(address: string): Uint8Array {
  const bytes = parseIp(address.split("%")[0]);
  if (!bytes) {
    const name = encoder.encode(address);
    if (name.length === 0 || name.length > 255) throw new RangeError(`Bad address "${address}"`);
    return Uint8Array.of(ATYP_DOMAIN, name.length, ...name);
  }
  return Uint8Array.of(bytes.length === 4 ? ATYP_IPV4 : ATYP_IPV6, ...bytes);
}

/** Sends a request, reads the reply; resolves with BND.ADDR/BND.PORT. */
async function socksRequest(
  conn: ProxyConn,
  command: number,
  address: Uint8Array,
  port: number,
): Promise<{ address: string; port: number }> {
  await writeAll(conn, Uint8Array.of(5, command, 0, ...address, port >> 8, port & 0xff));
  const [ver, rep, , atyp] = await readExact(conn, 4);
  if (ver !== 5) throw new ProxyError("bad SOCKS5 reply", "rst");
  if (rep !== 0) {
    const [text, answer] = SOCKS_REPLIES[rep] ?? [`reply code ${rep}`, "rst"];
    throw new ProxyError(`proxy: ${text}`, answer);
  }
  let bound: string;
  if (atyp === ATYP_IPV4) bound = formatIp(await readExact(conn, 4));
  else if (atyp === ATYP_IPV6) bound = formatIp(await readExact(conn, 16));
  else if (atyp === ATYP_DOMAIN) {
    const [n] = await readExact(conn, 1);
    bound = new TextDecoder().decode(await readExact(conn, n));
  } else throw new ProxyError(`bad SOCKS5 reply address type ${atyp}`, "rst");
  const p = await readExact(conn, 2);
  return { address: bound, port: (p[0] << 8) | p[1] };
}

// --- HTTP CONNECT ---

/** The most a proxy's CONNECT response header may take. */
const HTTP_HEAD_MAX = 8192;

async function httpConnect(
  conn: ProxyConn,
  proxy: UpstreamProxy,
  target: ProxyTarget,
): Promise<ProxyConn> {
  const host = target.hostname ?? target.address;
  const authority = host.includes(":") ? `[${host}]:${target.port}` : `${host}:${target.port}`;
  let head = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
  if (proxy.username !== undefined) {
    const token = btoa(String.fromCharCode(
      ...encoder.encode(`${proxy.username}:${proxy.password ?? ""}`),
    ));
    head += `Proxy-Authorization: Basic ${token}\r\n`;
  }
  await writeAll(conn, encoder.encode(head + "\r\n"));
  const buf = new Uint8Array(HTTP_HEAD_MAX);
  let got = 0;
  let end = -1;
  while (end < 0) {
    if (got === buf.length) throw new ProxyError("proxy response header too long", "rst");
    const n = await conn.read(buf.subarray(got));
    if (n === null) throw new ProxyError("proxy closed the connection during CONNECT", "rst");
    const from = Math.max(0, got - 3);
    got += n;
    for (let i = from; i + 3 < got; i++) {
      if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) {
        end = i + 4;
        break;
      }
    }
  }
  const status = new TextDecoder().decode(buf.subarray(0, buf.indexOf(13)));
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(status);
  if (!m) throw new ProxyError("not an HTTP proxy response", "rst");
  const code = Number(m[1]);
  if (code < 200 || code > 299) {
    // 502/503/504: the proxy could not reach the destination.
    const answer = code === 504 ? "icmp" : "rst";
    throw new ProxyError(`proxy answered "${status.slice(9, 80)}"`, answer);
  }
  return end === got ? conn : withLeftover(conn, buf.slice(end, got));
}

/** `conn`, with `first` read before the connection's own bytes. */
function withLeftover(conn: ProxyConn, first: Uint8Array): ProxyConn {
  let pending: Uint8Array | undefined = first;
  return {
    read(p) {
      if (!pending) return conn.read(p);
      const n = Math.min(p.length, pending.length);
      p.set(pending.subarray(0, n));
      pending = n === pending.length ? undefined : pending.subarray(n);
      return Promise.resolve(n);
    },
    write: (p) => conn.write(p),
    closeWrite: () => conn.closeWrite(),
    close: () => conn.close(),
  };
}

// --- UDP ---

/** A UDP flow's socket towards one destination, direct or through a SOCKS5 relay. */
export interface UdpUpstream {
  /** Sends one datagram to the destination. */
  send(data: Uint8Array): Promise<void>;
  /** The next datagram from the destination (others are dropped), a copy of its own; rejects once closed. */
  receive(): Promise<Uint8Array>;
  /** The local UDP port (a datagram from it is never a client's). */
  readonly localPort: number;
  /** Closes the socket (and the SOCKS control connection). */
  close(): void;
}

/** Canonical address text (so `::ffff:192.0.2.1` and `192.0.2.1` compare equal). */
export function canonical(text: string): string {
  const bytes = parseIp(text.split("%")[0]);
  if (!bytes) return text;
  return formatIp(isIpv4Mapped(bytes) ? bytes.subarray(12) : bytes);
}

/**
 * A UDP socket that sends to `target` directly and takes datagrams only from
 * it (endpoint-dependent filtering).
 */
export function openDirectUdp(target: { hostname: string; port: number }): UdpUpstream {
  const socket = new DatagramReader(Deno.listenDatagram({
    transport: "udp",
    hostname: target.hostname.includes(":") ? "::" : "0.0.0.0",
    port: 0,
  }));
  const wanted = canonical(target.hostname);
  return {
    localPort: socket.port,
    send: async (data) => {
      await socket.conn.send(data, {
        transport: "udp",
        hostname: target.hostname,
        port: target.port,
      });
    },
    receive: async () => {
      for (;;) {
        const [data, from] = await socket.receive();
        if (from.port === target.port && canonical(from.hostname) === wanted) return data.slice();
      }
    },
    close: () => socket.close(),
  };
}

/**
 * Receive buffers kept for reuse once their flow ended (64 of them: 4 MiB
 * at most from the heap; with the allocator tuned, mapped blocks of which
 * only the pages datagrams wrote are resident). Each is
 * {@linkcode udpReceiveSize} bytes: the largest datagram (65,507 / 65,527
 * bytes) fits.
 */
const UDP_BUFFER_POOL = 64;
const udpBuffers: Uint8Array[] = [];

/**
 * Drops the receive buffers kept for reuse (internal: `serve()` calls it
 * when it gives memory back after churn): returns how many.
 */
export function releaseUdpBuffers(): number {
  return udpBuffers.splice(0).length;
}

/**
 * A UDP socket read into one buffer of its own, reused for every datagram
 * and, once the socket is closed and its last read settled, for a later
 * socket. (`Deno.DatagramConn.receive()` without a buffer allocates 64 KiB
 * per call, and the datagram it returns is a view that keeps all of it:
 * thousands of short flows and queued datagrams held hundreds of MiB, which
 * the allocator kept after they were freed.)
 */
class DatagramReader {
  #buffer: Uint8Array | null = null;
  #reading = false;
  #closed = false;
  constructor(readonly conn: Deno.DatagramConn) {}

  get port(): number {
    return (this.conn.addr as Deno.NetAddr).port;
  }

  /** The next datagram, as a view valid until the next call, and its sender. */
  async receive(): Promise<[Uint8Array, Deno.NetAddr]> {
    if (this.#closed) throw new Deno.errors.BadResource("The socket is closed");
    const buffer = this.#buffer ??= udpBuffers.pop() ?? new Uint8Array(udpReceiveSize());
    this.#reading = true;
    try {
      const [data, from] = await this.conn.receive(buffer);
      return [data, from as Deno.NetAddr];
    } finally {
      this.#reading = false;
      if (this.#closed) this.#release();
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
    // A pending read still owns the buffer: it is released when that read settles.
    if (!this.#reading) this.#release();
  }

  #release(): void {
    const buffer = this.#buffer;
    this.#buffer = null;
    if (buffer && udpBuffers.length < UDP_BUFFER_POOL) udpBuffers.push(buffer);
  }
}

/**
 * A UDP flow to `target` through a SOCKS5 `UDP ASSOCIATE` (RFC 1928 §7): one
 * association per flow, over its own control connection; the association
 * ends when the flow does, and the flow ends when the proxy closes the
 * control connection. Datagrams from anywhere but the proxy's relay, or for
 * another destination, are dropped; fragments (FRAG ≠ 0) are dropped.
 */
export async function associateUdp(
  proxy: UpstreamProxy,
  target: ProxyTarget,
  options: DialThroughOptions = {},
): Promise<UdpUpstream> {
  if (proxy.kind === "http") throw new TypeError("An HTTP proxy carries no UDP");
  const control = await connectProxy(proxy, options);
  const relay = await handshake(control, proxy, options.signal, async () => {
    await socksGreet(control, proxy);
    // We do not know which address the proxy sees us from: 0.0.0.0:0 (RFC 1928 §7).
    return await socksRequest(control, CMD_UDP_ASSOCIATE, Uint8Array.of(ATYP_IPV4, 0, 0, 0, 0), 0);
  });
  // A relay bound to the unspecified address is at the address we reached the proxy at.
  const proxyAddress = (control as Partial<Deno.TcpConn>).remoteAddr?.hostname ?? proxy.hostname;
  const relayHost = relay.address === "0.0.0.0" || relay.address === "::"
    ? proxyAddress
    : relay.address;
  const socket = new DatagramReader(Deno.listenDatagram({
    transport: "udp",
    hostname: relayHost.includes(":") ? "::" : "0.0.0.0",
    port: 0,
  }));
  const header = Uint8Array.of(
    0,
    0,
    0,
    ...socksAddress(proxy, target),
    target.port >> 8,
    target.port & 0xff,
  );
  const wantedRelay = canonical(relayHost);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    socket.close();
    try {
      control.close();
    } catch {
      // already closed
    }
  };
  // The association lives as long as the control connection: watch it.
  (async () => {
    const sink = new Uint8Array(64);
    try {
      while ((await control.read(sink)) !== null) { /* the proxy sends nothing here */ }
    } catch {
      // closed
    }
    close();
  })();
  return {
    localPort: socket.port,
    send: async (data) => {
      const d = new Uint8Array(header.length + data.length);
      d.set(header);
      d.set(data, header.length);
      await socket.conn.send(d, { transport: "udp", hostname: relayHost, port: relay.port });
    },
    receive: async () => {
      for (;;) {
        const [data, from] = await socket.receive();
        if (from.port !== relay.port || canonical(from.hostname) !== wantedRelay) continue;
        const payload = socksUdpPayload(data);
        if (payload) return payload.slice();
      }
    },
    close,
  };
}

/** The payload of a SOCKS5 UDP datagram (RFC 1928 §7), or `null` when malformed or a fragment. */
export function socksUdpPayload(d: Uint8Array): Uint8Array | null {
  if (d.length < 4 || d[2] !== 0) return null;
  let at: number;
  if (d[3] === ATYP_IPV4) at = 4 + 4;
  else if (d[3] === ATYP_IPV6) at = 4 + 16;
  else if (d[3] === ATYP_DOMAIN && d.length > 4) at = 5 + d[4];
  else return null;
  at += 2;
  return at <= d.length ? d.subarray(at) : null;
}
