/**
 * A TCP dial through libc (Deno on Linux): `socket` + nonblocking `connect`
 * through FFI, handed to Deno as an ordinary `Deno.TcpConn`.
 *
 * Why: `Deno.connect` always answers in a later turn of the event loop, even
 * when the kernel completed the handshake inside the `connect` call (which it
 * does on veth and loopback, and often on a LAN): measured in
 * `bench/server_bench.ts --breakdown`, ~67 µs for the call and ~114 µs more
 * until the promise resolved, on a path whose RTT is ~50 µs: the receive
 * loop's batch, its flush and whatever else is queued run first. The
 * forwarder sends the client's SYN-ACK only when the upstream answered, so
 * that wait is the client's connect time. Here a check right after
 * `connect` sees such a connection at once, and the SYN-ACK can go out in the
 * same turn (`getpeername` succeeds once connected). Otherwise the
 * connecting socket goes to Deno and a zero-length write waits for it on
 * Deno's event loop (no thread per dial); an abort closes it. Measured
 * (server_bench --breakdown, 3 alternating runs each, load average ~5): SYN
 * in → SYN-ACK out 0.235–0.281 ms median with this dial, 0.300–0.352 ms with
 * `Deno.connect` (`WGSTACK_DIAL=deno`). {@linkcode dialTcpNow} answers
 * without a promise, and its {@linkcode FfiTcpConn} becomes a Deno
 * connection only on first use, so the forwarder answers the SYN within the
 * receive and wraps the socket after the SYN-ACK left: 0.12–0.14 ms.
 *
 * The connected descriptor becomes a `Deno.TcpConn` through `node:net`'s
 * handle (`TCPWrap.open(fd)`, then `takeStream()` for its resource id) and
 * the `TcpConn` class of an earlier `Deno.connect` (taught with
 * {@linkcode learnTcpConn}): neither is public API, so every step is checked
 * once, and the first failure turns this path off for the process (callers
 * use `Deno.connect`). Off as well without FFI permission, without
 * unrestricted net permission (the FFI call would bypass `--allow-net=…`), on
 * other systems, for host names (only address literals are dialled here),
 * and with `WGSTACK_DIAL=deno` in the environment.
 *
 * @module
 */

import * as net from "node:net";
import { decodeSockaddr, encodeAddress } from "./_udp_ffi.ts";

const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const EINPROGRESS = 115;
const EINTR = 4;
const ECONNREFUSED = 111;
const ETIMEDOUT = 110;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type TcpConnClass = new (
  rid: number,
  remoteAddr: Deno.NetAddr,
  localAddr: Deno.NetAddr,
) => Deno.TcpConn;
type TcpWrap = { open(fd: number): number; takeStream(): number; close(): void };
type TcpWrapClass = new (type: number) => TcpWrap;

interface Dialer {
  c: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
  errno: Deno.UnsafePointerView;
}

let dialer: Dialer | null | undefined;
let tcpConnClass: TcpConnClass | undefined;
let tcpWrapClass: TcpWrapClass | undefined;
/** How the dials of this process went (see {@linkcode ffiDialStats}). */
const counts = { connectedInCall: 0, waited: 0, notUsed: 0 };
/** Set when a step failed: the process dials with `Deno.connect` from then on. */
let broken = false;
const one = new Int32Array([1]);
const oneBytes = new Uint8Array(one.buffer);
const EMPTY = new Uint8Array(0);
const peer = new Uint8Array(28);
/** The destination of the dial being made (one at a time: the calls are synchronous). */
const sa = new Uint8Array(28);
const peerLength = new Uint32Array(1);
const peerLengthBytes = new Uint8Array(peerLength.buffer);

function load(): Dialer | null {
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (deno?.build?.os !== "linux" || typeof deno.dlopen !== "function") return null;
  if (deno.build.arch !== "x86_64" && deno.build.arch !== "aarch64") return null;
  try {
    // Ask first: a bare dlopen or env read would prompt on a terminal.
    if (deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    if (deno.permissions.querySync({ name: "net" }).state !== "granted") return null;
    const env = { name: "env", variable: "WGSTACK_DIAL" } as const;
    if (
      deno.permissions.querySync(env).state === "granted" &&
      deno.env.get("WGSTACK_DIAL")?.trim().toLowerCase() === "deno"
    ) return null;
    const lib = deno.dlopen("libc.so.6", SYMBOLS);
    return { c: lib.symbols, errno: new Deno.UnsafePointerView(lib.symbols.__errno_location()!) };
  } catch {
    return null;
  }
}

/**
 * Remembers the class of a connection `Deno.connect` made (the FFI dial
 * needs it to hand its descriptors to Deno); the first one is enough.
 */
export function learnTcpConn(conn: Deno.TcpConn): void {
  if (tcpConnClass !== undefined || broken) return;
  const ctor = (conn as { constructor?: unknown }).constructor;
  if (typeof ctor === "function" && ctor.name === "TcpConn") tcpConnClass = ctor as TcpConnClass;
}

/**
 * A socket dialled through libc: connected already when the kernel finished
 * the handshake within the `connect` call (then `connected` is true),
 * otherwise still connecting ({@linkcode FfiTcpConn.wait}). It becomes a
 * `Deno.TcpConn` only on first use, so that an answer that depends on the
 * dial (the client's SYN-ACK) need not wait for that (~20–50 µs, measured
 * in `bench/server_bench.ts --breakdown`).
 */
export class FfiTcpConn {
  /** True when the kernel connected within the `connect` call. */
  readonly connected: boolean;
  #fd: number;
  #hostname: string;
  #port: number;
  #conn: Deno.TcpConn | null = null;
  /** The descriptor was closed (or handed over and lost): never touch the number again. */
  #gone = false;

  /** Wraps `fd` (internal: made by {@linkcode dialTcpNow}). */
  constructor(fd: number, hostname: string, port: number, connected: boolean) {
    this.#fd = fd;
    this.#hostname = hostname;
    this.#port = port;
    this.connected = connected;
  }

  /** The `Deno.TcpConn` of this socket (made now on first use). Throws when closed. */
  get conn(): Deno.TcpConn {
    if (this.#conn !== null) return this.#conn;
    if (this.#gone) throw new Deno.errors.BadResource("The connection is closed");
    // adoptFd closes the descriptor itself when it fails.
    this.#gone = true;
    this.#conn = adoptFd(this.#fd, this.#hostname, this.#port);
    this.#gone = false;
    return this.#conn;
  }

  /**
   * Waits, on Deno's event loop, until a connect in progress finished;
   * rejects like `Deno.connect` (or with the signal's reason once aborted,
   * which closes the socket).
   */
  wait(signal: AbortSignal): Promise<FfiTcpConn> {
    let conn: Deno.TcpConn;
    try {
      conn = this.conn;
    } catch (error) {
      return Promise.reject(error);
    }
    return waitConnected(conn, signal).then(() => this);
  }

  /** Reads into `p`; `null` at EOF. */
  read(p: Uint8Array): Promise<number | null> {
    try {
      return this.conn.read(p);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Writes some of `p`. */
  write(p: Uint8Array): Promise<number> {
    try {
      return this.conn.write(p);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Sends FIN, keeps reading. */
  closeWrite(): Promise<void> {
    try {
      return this.conn.closeWrite();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Closes the socket (directly when Deno never saw it); a second close does nothing. */
  close(): void {
    if (this.#conn !== null) {
      closeQuietly(this.#conn);
      return;
    }
    if (this.#gone) return;
    this.#gone = true;
    dialer!.c.close(this.#fd);
  }
}

/**
 * Dials `hostname` (an address literal) through libc without waiting: a
 * {@linkcode FfiTcpConn} (connected, or connecting: see its `connected`),
 * the error when the call failed at once, or `null` when this path is not
 * available here (the caller uses `Deno.connect`). The connection has
 * Nagle's algorithm off.
 */
export function dialTcpNow(hostname: string, port: number): FfiTcpConn | Error | null {
  if (dialer === undefined && tcpConnClass !== undefined) dialer = load();
  if (broken || !dialer || !(port > 0 && port <= 65535)) return notUsed();
  const family = encodeAddress(hostname, sa, hostname.includes(":"));
  if (family === 0) return notUsed();
  sa[2] = port >> 8;
  sa[3] = port & 0xff;
  const { c } = dialer;
  const fd = takeSocket(family);
  if (fd < 0) return osError("socket", readErrno());
  if (c.connect(fd, sa, family === AF_INET6 ? 28 : 16) !== 0) {
    const errno = readErrno();
    if (errno !== EINPROGRESS && errno !== EINTR) {
      c.close(fd);
      return osError("connect", errno);
    }
    // Done within the call already (veth, loopback) when it has a peer: no
    // turn of the event loop. Otherwise (also when refused) Deno waits.
    peerLength[0] = 28;
    if (c.getpeername(fd, peer, peerLengthBytes) !== 0) {
      counts.waited++;
      return new FfiTcpConn(fd, hostname, port, false);
    }
  }
  counts.connectedInCall++;
  return new FfiTcpConn(fd, hostname, port, true);
}

/**
 * Sockets made ahead of the next dials, per address family: `socket` and
 * `setsockopt` took ~8 µs of each client's connect time (measured in
 * `bench/server_bench.ts`: 6.2 + 1.4 µs median). At most
 * {@linkcode SPARE_SOCKETS} per family, made only for families this process
 * has dialled, refilled after the dial's turn (the SYN-ACK has left by then).
 * They stay open for the life of the process, like the library handle.
 */
const spare = new Map<number, number[]>();
/** Spare sockets per family: a browser opens up to 6 connections at once. */
const SPARE_SOCKETS = 6;
let refillQueued = false;

/** A TCP socket of `family` (nonblocking, Nagle off), or -1 with errno set. */
function takeSocket(family: number): number {
  let list = spare.get(family);
  if (!list) spare.set(family, list = []);
  const fd = list.pop() ?? newSocket(family);
  if (!refillQueued) {
    refillQueued = true;
    queueMicrotask(refillSpares);
  }
  return fd;
}

function newSocket(family: number): number {
  const { c } = dialer!;
  const fd = c.socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0) c.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, oneBytes, 4);
  return fd;
}

function refillSpares(): void {
  refillQueued = false;
  if (broken) return;
  for (const [family, list] of spare) {
    while (list.length < SPARE_SOCKETS) {
      const fd = newSocket(family);
      if (fd < 0) break; // out of descriptors: the dial makes its own (and reports why)
      list.push(fd);
    }
  }
}

/** Spare sockets held now (tests). */
export function spareSocketCount(): number {
  let n = 0;
  for (const list of spare.values()) n += list.length;
  return n;
}

function notUsed(): null {
  counts.notUsed++;
  return null;
}

/**
 * {@linkcode dialTcpNow} as a promise of a `Deno.TcpConn`, or `null` when
 * this path is not available here. The promise rejects like
 * `Deno.connect`'s: `Deno.errors.ConnectionRefused`,
 * `Deno.errors.TimedOut`, another `Error` naming the errno, or the signal's
 * reason once aborted.
 */
export function dialTcpFfi(
  hostname: string,
  port: number,
  signal: AbortSignal,
): Promise<Deno.TcpConn> | null {
  if (signal.aborted) {
    if (dialTcpAvailable(hostname)) return Promise.reject(signal.reason);
    return notUsed();
  }
  const dial = dialTcpNow(hostname, port);
  if (dial === null) return null;
  if (dial instanceof Error) return Promise.reject(dial);
  if (dial.connected) {
    try {
      return Promise.resolve(dial.conn);
    } catch (error) {
      return Promise.reject(error);
    }
  }
  return dial.wait(signal).then((d) => d.conn);
}

/** Whether {@linkcode dialTcpNow} would dial `hostname` (an address literal) itself. */
function dialTcpAvailable(hostname: string): boolean {
  if (dialer === undefined && tcpConnClass !== undefined) dialer = load();
  return !broken && !!dialer && encodeAddress(hostname, sa, hostname.includes(":")) !== 0;
}

/**
 * Waits, on Deno's event loop, for a connect in progress: a zero-length send
 * on a connecting TCP socket waits until it is writable (connected) and then
 * sends nothing, or fails with the connect's error (`ConnectionRefused`, …).
 * An abort closes the connection, which ends that wait.
 */
async function waitConnected(conn: Deno.TcpConn, signal: AbortSignal): Promise<Deno.TcpConn> {
  const onAbort = () => closeQuietly(conn);
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    await conn.write(EMPTY);
  } catch (error) {
    closeQuietly(conn);
    throw signal.aborted ? signal.reason : error;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  if (signal.aborted) {
    closeQuietly(conn);
    throw signal.reason;
  }
  return conn;
}

function closeQuietly(conn: Deno.TcpConn): void {
  try {
    conn.close();
  } catch {
    // closed already
  }
}

/** Hands `fd` (connected or connecting) to Deno; on failure it is closed and this path turned off. */
function adoptFd(fd: number, hostname: string, port: number): Deno.TcpConn {
  const { c } = dialer!;
  const local = new Uint8Array(28);
  const localLength = new Uint32Array([28]);
  c.getsockname(fd, local, new Uint8Array(localLength.buffer));
  const remoteAddr: Deno.NetAddr = { transport: "tcp", hostname: unbracket(hostname), port };
  // Whoever holds the descriptor closes it on failure, once: we, the handle,
  // or (after takeStream) the resource.
  let close: () => void = () => c.close(fd);
  try {
    let wrap: TcpWrap;
    if (tcpWrapClass === undefined) {
      // The first time: through a node:net Socket, which learns the handle's class.
      const socket = new net.Socket({ fd, readable: false, writable: false });
      close = () => socket.destroy();
      wrap = (socket as unknown as { _handle?: TcpWrap })._handle!;
      if (typeof wrap?.takeStream !== "function") throw new TypeError("no TCPWrap.takeStream");
      tcpWrapClass = wrap.constructor as TcpWrapClass;
    } else {
      wrap = new tcpWrapClass(0); // TCPConstants.SOCKET
      const error = wrap.open(fd);
      if (error !== 0) throw new Error(`TCPWrap.open: ${error}`);
      close = () => wrap.close();
    }
    const rid = wrap.takeStream();
    if (typeof rid !== "number") throw new TypeError("TCPWrap.takeStream gave no resource id");
    // The handle lets go of the descriptor (left open, now the resource's);
    // unclosed, it would keep the number registered and refuse its reuse.
    wrap.close();
    // (Should the constructor throw, the resource keeps the descriptor: it
    // cannot be closed without its object. Once per process at most.)
    close = () => {};
    return new tcpConnClass!(rid, remoteAddr, localAddress(local));
  } catch (error) {
    broken = true;
    close();
    throw new Error(`Cannot hand a dialled socket to Deno (FFI dial now off): ${error}`);
  }
}

function localAddress(sa: Uint8Array): Deno.NetAddr {
  const endpoint = decodeSockaddr(sa, 0);
  return { transport: "tcp", hostname: endpoint?.address ?? "0.0.0.0", port: endpoint?.port ?? 0 };
}

function unbracket(hostname: string): string {
  return hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
}

/**
 * Counts of this process's dials: connected within the `connect` call (no
 * wait), waited for off the JS thread, and left to `Deno.connect`.
 */
export function ffiDialStats(): { connectedInCall: number; waited: number; notUsed: number } {
  return { ...counts };
}

function readErrno(): number {
  return dialer!.errno.getInt32();
}

function osError(call: string, errno: number): Error {
  const text = `${call} failed (os error ${errno})`;
  if (errno === ECONNREFUSED) return new Deno.errors.ConnectionRefused(text);
  if (errno === ETIMEDOUT) return new Deno.errors.TimedOut(text);
  return new Error(text);
}
