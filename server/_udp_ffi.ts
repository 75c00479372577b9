/**
 * A batching UDP socket for Deno on Linux, on libc through `Deno.dlopen`:
 * `recvmmsg` receives up to {@linkcode RECV_BATCH} datagrams per call and
 * `sendmmsg` sends every datagram queued since the last flush in one
 * synchronous call.
 *
 * Waiting for datagrams (see {@linkcode FfiUdpOptions.wait}): by default the
 * socket is opened by `Deno.listenDatagram`, so Deno's event loop wakes the
 * JS thread when the first datagram arrives (one wake-up, as for any Deno
 * socket); it is taken with Deno's receive, and what else is queued with
 * `recvmmsg(MSG_DONTWAIT)` on the JS thread, up to `EAGER_BATCHES` batches
 * before the loop yields to the event loop again. Where `Deno.listenDatagram`
 * is missing (no `--unstable-net`) or with `wait: "thread"`, a blocking
 * `recvmmsg` runs off the JS thread as a nonblocking FFI call instead: a
 * receive thread wakes, then wakes the JS thread (measured: about 40 µs more
 * per idle round trip on this VM).
 *
 * Why: `Deno.listenDatagram` costs one async op, one promise and one copy per
 * datagram each way (10–16 µs per send on loopback), which dominates the
 * server's profile; batching pays the op once per batch.
 *
 * Memory, set up once per socket and never reallocated:
 * - receive ring: `mmsghdr[RECV_BATCH] | iovec[] | sockaddr_in6[] | cmsg[] | data[]`.
 *   Each slot holds a full-size datagram (64 KiB) so nothing is truncated;
 *   the pages are only touched as far as datagrams fill them.
 * - send ring: the same layout with {@linkcode SEND_SLOT} bytes per slot;
 *   bigger datagrams go out at once with `sendto` (after the queue, to keep
 *   the order). Behind it a second header array and one control message per
 *   header for UDP GSO (below).
 *
 * UDP GSO (Linux ≥ 4.18, `UDP_SEGMENT`): at a flush, runs of queued
 * datagrams to the same destination with the same length (the last one of a
 * run may be shorter) go out as ONE message whose iovecs are the ring slots
 * (no copying) with a `UDP_SEGMENT` control message carrying the length; the
 * kernel cuts it back into the same datagrams (in software or on the NIC),
 * so the per-datagram syscall and stack work is paid once per run. At most
 * {@linkcode GSO_MAX_SEGMENTS} datagrams and 65507 payload bytes (65527 to a
 * native IPv6 destination) per message. Receivers see ordinary datagrams.
 * Support is probed once per socket with `setsockopt(UDP_SEGMENT)`; if a GSO
 * send still fails with EIO, EINVAL, ENOPROTOOPT or EOPNOTSUPP, GSO is turned
 * off for that socket and the datagrams are sent again without it (on
 * EMSGSIZE, a segment larger than the path MTU allows, only datagrams of at
 * least that size stop being grouped). Off with `WGSTACK_UDP_GSO=0` in the
 * environment or `openFfiUdpSocket(options, { gso: false })`;
 * {@linkcode ffiUdpGsoStatus} tells what happened.
 *
 * UDP GRO (Linux ≥ 5.0, `UDP_GRO`) is the same on receive: the kernel may
 * hand over a run of equal-size datagrams from one sender as ONE message
 * (up to 64 KiB; the last one may be shorter) with a `UDP_GRO` control
 * message giving the segment size; the receive loop cuts it back into the
 * original datagrams (views of the slot, no copying) and delivers them in
 * order, each counted in `stats().received`. Probed once per socket with
 * `setsockopt(UDP_GRO)`; where the kernel refuses it, datagrams simply
 * arrive one by one. Off with `WGSTACK_UDP_GRO=0` or `{ gro: false }`;
 * {@linkcode ffiUdpGroStatus} tells what happened.
 *
 * The receive ring is written by the kernel only while a `recvmmsg` call is
 * in flight and read by JS only after it has resolved; the send ring is only
 * touched on the JS thread. With the receive thread, the socket is blocking
 * with `SO_RCVTIMEO`, so the receive call comes back at least every
 * {@linkcode RECV_TIMEOUT_MS}; `close()` also wakes it with
 * `shutdown(SHUT_RD)`, and the descriptor is closed only after the call
 * returned (no reuse race). Sends use
 * `MSG_DONTWAIT`: a full socket buffer drops and counts, never blocks.
 *
 * Struct layouts are those of Linux on LP64 (x86_64, aarch64); other systems
 * get `null` from {@linkcode openFfiUdpSocket} and use another adapter.
 *
 * @module
 */

import { formatAddress, parseAddress } from "@wgstack/netstack";
import { isIpv4Mapped } from "./_util.ts";
import {
  type UdpEndpoint,
  type UdpSocket,
  type UdpSocketOptions,
  type UdpSocketStats,
  unmapAddress,
} from "./socket.ts";

/** Datagrams per `recvmmsg` call. */
export const RECV_BATCH = 64;
/** Bytes per receive slot: the largest UDP payload fits (IPv6 65527, IPv4 65507). */
const RECV_SLOT = 65536;
/** Datagrams queued before a `sendmmsg` flush is forced. */
export const SEND_BATCH = 64;
/** Bytes per send slot; bigger datagrams are sent directly with `sendto`. */
export const SEND_SLOT = 2048;
/** Most datagrams in one GSO message (the kernel's UDP_MAX_SEGMENTS: 64, 128 on newer kernels). */
export const GSO_MAX_SEGMENTS = 64;
/** Most payload bytes in one GSO message to an IPv4 (or IPv4-mapped) destination. */
export const GSO_MAX_BYTES_V4 = 65507;
/** Most payload bytes in one GSO message to an IPv6 destination. */
export const GSO_MAX_BYTES_V6 = 65527;
/**
 * Batches read at once on the JS thread (`MSG_DONTWAIT`) after one that
 * waited, before the loop waits (and so yields to the event loop) again: a
 * busy socket pays the hop to the receive thread once per this many batches.
 */
const EAGER_BATCHES = 4;
/**
 * Microtask turns the receive loop waits after a batch, before its flush:
 * what the batch set going through promises and finished without I/O (a
 * dial that connected within its call, answered with a SYN-ACK) queues its
 * datagrams into the same flush instead of waiting behind it (a `sendmmsg`
 * and the next receive call). Measured (server_bench --breakdown, 2
 * alternating runs, load average ~8): SYN in → SYN-ACK out 0.279–0.310 ms
 * median with 16 turns, 0.364–0.385 ms with none; ping 0.52–0.58 ms vs
 * 0.61–0.68 ms.
 */
const SETTLE_TICKS = 16;
/** Longest a receive call blocks before it checks whether the socket closed. */
const RECV_TIMEOUT_MS = 200;
/**
 * After GRO is turned off, how long the receive thread watches for a message
 * the kernel coalesced just before, before the wait moves to the event loop.
 */
const GRO_SETTLE_MS = 1;
/**
 * Busy stretches in a row in which the kernel coalesced nothing (no GRO on
 * the path, e.g. veth) after which GRO is no longer turned on for one...
 */
const GRO_MAX_MISSES = 8;
/** ...until this many more full batches have passed (then it is tried again). */
const GRO_RETRY_BATCHES = 1024;
/** Highest descriptor searched for the socket `Deno.listenDatagram` opened. */
const MAX_ADOPT_FD = 4096;
/** Requested kernel socket buffer sizes. */
const SOCKET_BUFFER = 4 * 1024 * 1024;

// Linux constants (identical on x86_64 and aarch64: asm-generic).
const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SO_RCVTIMEO = 20;
const SO_TYPE = 3;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;
const SOL_UDP = 17;
const UDP_SEGMENT = 103;
const UDP_GRO = 104;
const MSG_DONTWAIT = 0x40;
const MSG_WAITFORONE = 0x10000;
const SHUT_RD = 0;
const POLLIN = 1;
const EINTR = 4;
const EIO = 5;
const EINVAL = 22;
const EMSGSIZE = 90;
const ENOPROTOOPT = 92;
const EOPNOTSUPP = 95;
const EAGAIN = 11;
const EACCES = 13;
const ENOBUFS = 105;
const EADDRINUSE = 98;
const EADDRNOTAVAIL = 99;

// struct mmsghdr { struct msghdr { void *name; socklen_t namelen; struct
// iovec *iov; size_t iovlen; void *control; size_t controllen; int flags; };
// unsigned msg_len; } on LP64: offsets 0, 8, 16, 24, 32, 40, 48, 56; 64 bytes.
const MMSG_SIZE = 64;
const IOV_SIZE = 16;
const SA_STRIDE = 32; // sockaddr_in6 is 28 bytes
const SA6_LEN = 28;
const SA4_LEN = 16;
// struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } + u16:
// CMSG_LEN(2) = 18 (checked exactly by the kernel), CMSG_SPACE(2) = 24.
const GSO_CMSG_LEN = 18;
const GSO_CMSG_SPACE = 24;
// Control buffer per receive slot: room for the UDP_GRO message, CMSG_SPACE(4)
// = 24 bytes, and one more of that size should the kernel ever add another.
const RECV_CMSG_SPACE = 48;
/** CMSG_LEN(sizeof(int)): the UDP_GRO message's length (header 16 + int). */
const GRO_CMSG_LEN = 20;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  recvmmsg: {
    parameters: ["i32", "pointer", "u32", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  recvmmsgNow: {
    name: "recvmmsg",
    parameters: ["i32", "pointer", "u32", "i32", "pointer"],
    result: "i32",
  },
  sendmmsg: { parameters: ["i32", "pointer", "u32", "i32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

/** Options of the FFI adapter beyond {@linkcode UdpSocketOptions}. */
export interface FfiUdpOptions {
  /**
   * Whether to send with UDP GSO where the kernel supports it. Default: on,
   * unless the environment has `WGSTACK_UDP_GSO=0` (read only when env
   * access to that variable is granted).
   */
  gso?: boolean;
  /**
   * Whether to receive with UDP GRO where the kernel supports it. Default:
   * on, unless the environment has `WGSTACK_UDP_GRO=0`.
   */
  gro?: boolean;
  /**
   * How the receive loop waits when the socket is idle:
   * - `"event-loop"` (the default where `Deno.listenDatagram` exists, i.e.
   *   with `--unstable-net`): the socket is opened by `Deno.listenDatagram`,
   *   so Deno's own event loop (epoll) wakes the JS thread when a datagram
   *   arrives: one wake-up per idle datagram instead of two (a receive
   *   thread, then the JS thread). The first datagram comes through Deno's
   *   receive, the rest of the batch through `recvmmsg` on the JS thread.
   *   UDP GRO is on only while the loop is draining a busy socket (a full
   *   batch turns it on; it is turned off before the loop waits again, and
   *   where the kernel did coalesce, the receive thread reads what it may
   *   have coalesced just before). Where 8 busy stretches in a row saw
   *   nothing coalesced, GRO is tried again only every 1024 full batches.
   * - `"thread"`: a blocking `recvmmsg` on a receive thread (nonblocking FFI
   *   call), GRO on all the time.
   *
   * `WGSTACK_UDP_WAIT=thread` in the environment picks `"thread"`.
   */
  wait?: FfiUdpWait;
}

/** How the FFI adapter's receive loop waits, see {@linkcode FfiUdpOptions.wait}. */
export type FfiUdpWait = "event-loop" | "thread";

/** What UDP GRO did on one socket (see {@linkcode ffiUdpGroStatus}). */
export interface FfiUdpGroStatus {
  /** GRO is on for this socket (asked for and accepted by the kernel). */
  enabled: boolean;
  /** Coalesced messages received (each carrying 2 or more datagrams). */
  messages: number;
  /** Datagrams cut out of coalesced messages (also counted in `stats().received`). */
  segments: number;
  /** The errno with which the kernel refused `UDP_GRO`, or 0. */
  disabledErrno: number;
  /**
   * Event-loop wait: busy stretches for which GRO was turned on (it stops
   * being turned on where the path coalesces nothing; see
   * {@linkcode FfiUdpOptions.wait}). Always 0 with the receive thread.
   */
  busyPeriods: number;
}

/**
 * The GRO state of a socket opened by {@linkcode openFfiUdpSocket}, or
 * `undefined` for other sockets.
 */
export function ffiUdpGroStatus(socket: UdpSocket): FfiUdpGroStatus | undefined {
  return socket instanceof FfiUdpSocket ? socket.groStatus() : undefined;
}

/**
 * How the receive loop of a socket opened by {@linkcode openFfiUdpSocket}
 * waits (see {@linkcode FfiUdpOptions.wait}), or `undefined` for other
 * sockets.
 */
export function ffiUdpWait(socket: UdpSocket): FfiUdpWait | undefined {
  return socket instanceof FfiUdpSocket ? socket.wait : undefined;
}

/** What UDP GSO did on one socket (see {@linkcode ffiUdpGsoStatus}). */
export interface FfiUdpGsoStatus {
  /** GSO is in use now (asked for, supported, and not turned off by a failure). */
  enabled: boolean;
  /** GSO messages sent (each carrying 2 or more datagrams). */
  messages: number;
  /** Datagrams sent inside GSO messages (also counted in `stats().sent`). */
  segments: number;
  /** GSO messages the kernel refused that were sent again as plain datagrams. */
  fallbacks: number;
  /** The errno of the failure that turned GSO off, or 0. */
  disabledErrno: number;
}

/**
 * The GSO state of a socket opened by {@linkcode openFfiUdpSocket}, or
 * `undefined` for other sockets. Flushes the send queue first.
 */
export function ffiUdpGsoStatus(socket: UdpSocket): FfiUdpGsoStatus | undefined {
  return socket instanceof FfiUdpSocket ? socket.gsoStatus() : undefined;
}

/** The wait asked for by `WGSTACK_UDP_WAIT` (when it may be read), else `undefined`. */
function waitFromEnv(deno: typeof Deno): FfiUdpWait | undefined {
  try {
    const query = { name: "env", variable: "WGSTACK_UDP_WAIT" } as const;
    if (deno.permissions.querySync(query).state !== "granted") return undefined;
    const value = deno.env.get("WGSTACK_UDP_WAIT")?.trim().toLowerCase();
    return value === "thread" || value === "event-loop" ? value : undefined;
  } catch {
    return undefined;
  }
}

/** A socket `Deno.listenDatagram` opened, and its descriptor. */
interface AdoptedSocket {
  conn: Deno.DatagramConn;
  fd: number;
}

/**
 * Opens the socket with `Deno.listenDatagram` (so Deno's event loop watches
 * it) and finds its descriptor: the one UDP socket of this process bound to
 * the same family and port. `undefined` when that is not possible here
 * (no `--unstable-net`, a hostname Deno does not take, no single match); the
 * caller then opens its own socket, which reports bind errors.
 */
function adoptDenoSocket(
  deno: typeof Deno,
  c: Libc["symbols"],
  hostname: string,
  port: number,
  family: number,
): AdoptedSocket | undefined {
  if (typeof deno.listenDatagram !== "function") return undefined;
  let conn: Deno.DatagramConn;
  try {
    conn = deno.listenDatagram({ transport: "udp", hostname, port });
  } catch {
    return undefined;
  }
  const bound = (conn.addr as Deno.NetAddr).port;
  const sa = new Uint8Array(SA6_LEN);
  const len = new Uint32Array(1);
  const lenBytes = new Uint8Array(len.buffer);
  const type = new Int32Array(1);
  const typeBytes = new Uint8Array(type.buffer);
  const found: number[] = [];
  for (let fd = 3; fd < MAX_ADOPT_FD; fd++) {
    len[0] = SA6_LEN;
    if (c.getsockname(fd, sa, lenBytes) !== 0) continue;
    if ((sa[0] | (sa[1] << 8)) !== family || ((sa[2] << 8) | sa[3]) !== bound) continue;
    len[0] = 4;
    if (c.getsockopt(fd, SOL_SOCKET, SO_TYPE, typeBytes, lenBytes) !== 0) continue;
    if (type[0] === SOCK_DGRAM) found.push(fd);
  }
  if (found.length !== 1) {
    conn.close();
    return undefined;
  }
  return { conn, fd: found[0] };
}

/** `false` when the environment says `name=0` (and may be read). */
function flagFromEnv(deno: typeof Deno, name: string): boolean {
  try {
    // Query first: a bare env read would prompt on a terminal without --allow-env.
    const query = { name: "env", variable: name } as const;
    if (deno.permissions.querySync(query).state !== "granted") return true;
    const value = deno.env.get(name)?.trim().toLowerCase();
    return !(value === "0" || value === "off" || value === "false" || value === "no");
  } catch {
    return true;
  }
}

/**
 * Opens a batching UDP socket through libc, or returns `null` when that is
 * not possible here (not Linux x86_64/aarch64, no FFI permission, no
 * `libc.so.6`, hostname not an IP address literal) so the caller can fall
 * back to another adapter. Bind errors (address in use, …) throw.
 *
 * `options.maxPendingSends` does not apply: sends are queued in a fixed ring
 * that is flushed when full. `ffiOptions.gso` and `ffiOptions.gro` turn UDP
 * GSO and GRO on or off (default: on unless `WGSTACK_UDP_GSO=0` or
 * `WGSTACK_UDP_GRO=0`).
 *
 * @example
 * ```ts ignore
 * const socket = openFfiUdpSocket({ hostname: "::", port: 51820 });
 * socket?.listen((data, from) => socket.send(data, from));
 * ```
 */
export function openFfiUdpSocket(
  options: UdpSocketOptions,
  ffiOptions: FfiUdpOptions = {},
): UdpSocket | null {
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (deno?.build?.os !== "linux" || typeof deno.dlopen !== "function") return null;
  if (deno.build.arch !== "x86_64" && deno.build.arch !== "aarch64") return null;
  const hostname = options.hostname ?? "::";
  const bindAddress = new Uint8Array(SA6_LEN);
  const family = encodeBindAddress(hostname, bindAddress);
  if (family === 0) return null;
  let lib: Libc;
  try {
    // Ask first: a bare dlopen would prompt on a terminal without --allow-ffi.
    if (deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    lib = deno.dlopen("libc.so.6", SYMBOLS);
  } catch {
    return null;
  }
  try {
    const gso = ffiOptions.gso ?? flagFromEnv(deno, "WGSTACK_UDP_GSO");
    const gro = ffiOptions.gro ?? flagFromEnv(deno, "WGSTACK_UDP_GRO");
    const wait = ffiOptions.wait ?? waitFromEnv(deno) ?? "event-loop";
    const adopted = wait === "event-loop"
      ? adoptDenoSocket(deno, lib.symbols, hostname, options.port, family)
      : undefined;
    try {
      return new FfiUdpSocket(lib, family, bindAddress, options.port, { gso, gro }, adopted);
    } catch (err) {
      adopted?.conn.close();
      throw err;
    }
  } catch (err) {
    lib.close();
    throw err;
  }
}

class FfiUdpSocket implements UdpSocket {
  readonly addr: UdpEndpoint;
  readonly #lib: Libc;
  readonly #c: Libc["symbols"];
  readonly #fd: number;
  readonly #family: number;
  readonly #errno: Deno.UnsafePointerView;
  readonly #counters: UdpSocketStats = { received: 0, sent: 0, sendDropped: 0, sendErrors: 0 };
  #closed = false;
  #listening = false;
  #receiving = false;
  #released = false;

  // Receive ring.
  readonly #recvBuffer: ArrayBuffer;
  readonly #recvHeaders: Deno.PointerValue;
  readonly #recvU8: Uint8Array;
  readonly #recvU32: Uint32Array;
  readonly #recvSlots: Uint8Array[] = [];
  readonly #recvSa: number; // byte offset of the sockaddr array
  readonly #recvCmsg: number; // byte offset of the control buffers
  readonly #v4Endpoints = new Map<number, UdpEndpoint>();
  #lastV6: UdpEndpoint | undefined;
  readonly #lastV6Sa = new Uint8Array(SA6_LEN);

  // Send ring.
  readonly #sendBuffer: ArrayBuffer;
  readonly #sendHeaders: Deno.PointerValue[] = [];
  readonly #sendU8: Uint8Array;
  readonly #sendU32: Uint32Array;
  readonly #sendSa: number;
  readonly #sendIov: number;
  readonly #sendData: number;
  readonly #saLen: number;
  readonly #addressCache = new Map<string, Uint8Array | null>();
  readonly #scratchSa = new Uint8Array(SA6_LEN);
  readonly #scratchSa4 = this.#scratchSa.subarray(0, SA4_LEN);
  #pending = 0;

  // UDP GSO: one header (and control message) per outgoing message.
  #gso: boolean;
  /** Longest datagram still grouped (lowered when the kernel says EMSGSIZE). */
  #gsoSegmentLimit = SEND_SLOT;
  readonly #gsoHeaders: Deno.PointerValue[] = [];
  readonly #gsoHeaderWord: number; // u32 index of the GSO header array
  readonly #gsoCmsgWord: number; // u32 index of the control messages
  /** First slot of each GSO-path message, and the slot count after the last. */
  readonly #messageStart = new Int32Array(SEND_BATCH + 1);
  #gsoMessages = 0;
  #gsoSegments = 0;
  #gsoFallbacks = 0;
  #gsoErrno = 0;

  // UDP GRO.
  readonly #gro: boolean;
  /** Whether UDP_GRO is set on the socket now (toggled only in event-loop mode). */
  #groOn = false;
  /** `#groMessages` when GRO was last turned on. */
  #groMessagesAtOn = 0;
  /** Busy stretches in a row with nothing coalesced. */
  #groMisses = 0;
  /** Full batches since GRO was last tried while it is being skipped. */
  #groSkipped = 0;
  #groBusyPeriods = 0;
  #groMessages = 0;
  #groSegments = 0;
  #groErrno = 0;

  #flushScheduled = false;
  #inBatch = false;

  // Event-loop wait (see FfiUdpOptions.wait): Deno's socket and a buffer for
  // the datagram that woke the loop; a pollfd for the receive thread.
  readonly #conn: Deno.DatagramConn | undefined;
  readonly #wakeBuffer: Uint8Array | undefined;
  readonly #pollFd = new Uint8Array(8);
  readonly #groFlag = new Int32Array(1);
  readonly #groFlagBytes = new Uint8Array(this.#groFlag.buffer);
  readonly #flushTask = () => {
    this.#flushScheduled = false;
    this.#flush();
  };

  constructor(
    lib: Libc,
    family: number,
    bindAddress: Uint8Array,
    port: number,
    offload: { gso: boolean; gro: boolean },
    adopted?: AdoptedSocket,
  ) {
    let { gso, gro } = offload;
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new RangeError(`The port must be an integer from 0 to 65535, got ${port}`);
    }
    this.#lib = lib;
    this.#c = lib.symbols;
    this.#family = family;
    this.#saLen = family === AF_INET6 ? SA6_LEN : SA4_LEN;
    this.#errno = new Deno.UnsafePointerView(this.#c.__errno_location()!);
    const c = this.#c;
    const fd = adopted?.fd ?? c.socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error(`Cannot create a UDP socket (errno ${this.#readErrno()})`);
    this.#fd = fd;
    this.#conn = adopted?.conn;
    this.#wakeBuffer = adopted ? new Uint8Array(RECV_SLOT) : undefined;
    new DataView(this.#pollFd.buffer).setInt32(0, fd, true);
    this.#pollFd[4] = POLLIN; // events (little-endian short)
    try {
      const int = new Int32Array(1);
      const intBytes = new Uint8Array(int.buffer);
      if (family === AF_INET6 && !adopted) {
        int[0] = 0; // dual-stack: IPv4 peers arrive as IPv4-mapped addresses
        c.setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, intBytes, 4);
      }
      int[0] = SOCKET_BUFFER;
      // The FORCE variants pass the rmem_max/wmem_max limits (root only).
      if (c.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, intBytes, 4) !== 0) {
        c.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, intBytes, 4);
      }
      if (c.setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, intBytes, 4) !== 0) {
        c.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, intBytes, 4);
      }
      if (gso) {
        // Probe: kernels before 4.18 refuse the option (ENOPROTOOPT) and would
        // silently ignore the control message, sending one big datagram.
        // 0 = no socket-wide segmentation; sizes come per message.
        int[0] = 0;
        if (c.setsockopt(fd, SOL_UDP, UDP_SEGMENT, intBytes, 4) !== 0) {
          this.#gsoErrno = this.#readErrno();
          gso = false;
        }
      }
      this.#gso = gso;
      if (gro) {
        // Probe: kernels before 5.0 refuse the option; then nothing is coalesced.
        int[0] = 1;
        if (c.setsockopt(fd, SOL_UDP, UDP_GRO, intBytes, 4) !== 0) {
          this.#groErrno = this.#readErrno();
          gro = false;
        } else if (adopted) {
          // Event-loop mode: on only while draining (see FfiUdpOptions.wait).
          int[0] = 0;
          c.setsockopt(fd, SOL_UDP, UDP_GRO, intBytes, 4);
        } else {
          this.#groOn = true;
        }
      }
      this.#gro = gro;
      if (!adopted) {
        const timeval = new BigInt64Array([0n, BigInt(RECV_TIMEOUT_MS * 1000)]);
        c.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, new Uint8Array(timeval.buffer), 16);
        bindAddress[2] = port >> 8;
        bindAddress[3] = port & 0xff;
        if (c.bind(fd, bindAddress, this.#saLen) !== 0) throw bindError(this.#readErrno(), port);
      }
      const local = new Uint8Array(SA6_LEN);
      const localLen = new Uint32Array([SA6_LEN]);
      if (c.getsockname(fd, local, new Uint8Array(localLen.buffer)) !== 0) {
        throw new Error(`Cannot read the bound address (errno ${this.#readErrno()})`);
      }
      this.addr = decodeSockaddr(local, 0) ?? { address: "", port };
    } catch (err) {
      if (!adopted) c.close(fd); // an adopted one is closed by the caller
      throw err;
    }

    // Receive ring: headers | iovecs | sockaddrs | control buffers | data.
    const recvIov = RECV_BATCH * MMSG_SIZE;
    this.#recvSa = recvIov + RECV_BATCH * IOV_SIZE;
    this.#recvCmsg = this.#recvSa + RECV_BATCH * SA_STRIDE;
    const recvData = this.#recvCmsg + RECV_BATCH * RECV_CMSG_SPACE;
    this.#recvBuffer = new ArrayBuffer(recvData + RECV_BATCH * RECV_SLOT);
    this.#recvU8 = new Uint8Array(this.#recvBuffer);
    this.#recvU32 = new Uint32Array(this.#recvBuffer);
    this.#recvHeaders = Deno.UnsafePointer.of(this.#recvBuffer);
    const recvBase = BigInt(Deno.UnsafePointer.value(this.#recvHeaders));
    for (let i = 0; i < RECV_BATCH; i++) {
      const data = recvData + i * RECV_SLOT;
      initHeader(
        this.#recvU32,
        recvBase,
        i * MMSG_SIZE,
        this.#recvSa + i * SA_STRIDE,
        recvIov + i * IOV_SIZE,
        data,
      );
      writePointer(this.#recvU32, recvIov + i * IOV_SIZE + 8, BigInt(RECV_SLOT));
      if (this.#gro) {
        const header = i * MMSG_SIZE;
        writePointer(
          this.#recvU32,
          header + 32,
          recvBase + BigInt(this.#recvCmsg + i * RECV_CMSG_SPACE),
        );
        this.#recvU32[(header + 40) >> 2] = RECV_CMSG_SPACE; // msg_controllen (in/out)
      }
      this.#recvSlots.push(this.#recvU8.subarray(data, data + RECV_SLOT));
    }

    // Send ring: headers | iovecs | sockaddrs | GSO headers | cmsgs | data.
    this.#sendIov = SEND_BATCH * MMSG_SIZE;
    this.#sendSa = this.#sendIov + SEND_BATCH * IOV_SIZE;
    const gsoHeaders = this.#sendSa + SEND_BATCH * SA_STRIDE;
    const gsoCmsgs = gsoHeaders + SEND_BATCH * MMSG_SIZE;
    this.#gsoHeaderWord = gsoHeaders >> 2;
    this.#gsoCmsgWord = gsoCmsgs >> 2;
    this.#sendData = gsoCmsgs + SEND_BATCH * GSO_CMSG_SPACE;
    this.#sendBuffer = new ArrayBuffer(this.#sendData + SEND_BATCH * SEND_SLOT);
    this.#sendU8 = new Uint8Array(this.#sendBuffer);
    this.#sendU32 = new Uint32Array(this.#sendBuffer);
    const sendPointer = Deno.UnsafePointer.of(this.#sendBuffer);
    const sendBase = BigInt(Deno.UnsafePointer.value(sendPointer));
    for (let i = 0; i < SEND_BATCH; i++) {
      initHeader(
        this.#sendU32,
        sendBase,
        i * MMSG_SIZE,
        this.#sendSa + i * SA_STRIDE,
        this.#sendIov + i * IOV_SIZE,
        this.#sendData + i * SEND_SLOT,
      );
      this.#sendHeaders.push(Deno.UnsafePointer.offset(sendPointer!, i * MMSG_SIZE));
      // GSO header i: its control message is fixed, the rest is set per flush.
      const header = gsoHeaders + i * MMSG_SIZE;
      const cmsg = gsoCmsgs + i * GSO_CMSG_SPACE;
      writePointer(this.#sendU32, header + 32, sendBase + BigInt(cmsg)); // msg_control
      writePointer(this.#sendU32, cmsg, BigInt(GSO_CMSG_LEN)); // cmsg_len
      this.#sendU32[(cmsg >> 2) + 2] = SOL_UDP; // cmsg_level
      this.#sendU32[(cmsg >> 2) + 3] = UDP_SEGMENT; // cmsg_type
      this.#gsoHeaders.push(Deno.UnsafePointer.offset(sendPointer!, header));
    }
  }

  listen(onDatagram: (data: Uint8Array, from: UdpEndpoint) => void): Promise<void> {
    if (this.#listening) {
      return Promise.reject(new TypeError("The socket is already listening"));
    }
    this.#listening = true;
    if (this.#closed) return Promise.resolve();
    return this.#receiveLoop(onDatagram);
  }

  async #receiveLoop(onDatagram: (data: Uint8Array, from: UdpEndpoint) => void): Promise<void> {
    const u32 = this.#recvU32;
    const slots = this.#recvSlots;
    const counters = this.#counters;
    // Batches taken on this thread since the last wait (see EAGER_BATCHES).
    let eager = EAGER_BATCHES;
    try {
      while (!this.#closed) {
        let count = -1;
        if (eager < EAGER_BATCHES) {
          // What arrived while the last batch was processed is read at once,
          // without the hop to the receive thread and back.
          count = this.#c.recvmmsgNow(this.#fd, this.#recvHeaders, RECV_BATCH, MSG_DONTWAIT, null);
        }
        if (count > 0) {
          eager++;
          // A full batch: the socket is busy, let the kernel coalesce (event-loop mode).
          if (count === RECV_BATCH && !this.#groOn) this.#busy();
        } else {
          eager = 0;
          count = this.#conn
            ? await this.#waitOnEventLoop(onDatagram)
            : await this.#receiveWaiting();
          if (count <= 0) continue;
        }
        this.#inBatch = true;
        try {
          for (let i = 0; i < count && !this.#closed; i++) {
            const header = (i * MMSG_SIZE) >> 2;
            const length = u32[header + 14]; // msg_len
            const from = this.#decodeFrom(this.#recvSa + i * SA_STRIDE, u32[header + 2]);
            u32[header + 2] = SA6_LEN; // msg_namelen is in/out: reset for the next call
            const segment = this.#gro ? this.#groSegmentSize(i) : 0;
            if (from === undefined) continue;
            if (segment > 0 && segment < length) {
              this.#deliverSegments(slots[i], length, segment, from, onDatagram);
              continue;
            }
            counters.received++;
            onDatagram(slots[i].subarray(0, length), from);
          }
          for (let k = 0; k < SETTLE_TICKS && !this.#closed; k++) await null;
        } finally {
          this.#inBatch = false;
          this.#flush();
        }
      }
    } catch (err) {
      this.close();
      throw err;
    } finally {
      this.#release();
    }
  }

  /**
   * Event-loop mode: waits for one datagram through Deno's receive (the
   * event loop's epoll wakes this thread) and delivers it; returns 0, or -1
   * when the socket closed. While GRO is on it is turned off first, and the
   * receive thread watches for {@linkcode GRO_SETTLE_MS} (Deno's receive
   * cannot cut a coalesced message apart); returns what that read.
   */
  async #waitOnEventLoop(
    onDatagram: (data: Uint8Array, from: UdpEndpoint) => void,
  ): Promise<number> {
    if (this.#groOn) {
      const coalesced = this.#groMessages > this.#groMessagesAtOn;
      this.#setGro(false);
      this.#groMisses = coalesced ? 0 : this.#groMisses + 1;
      // Where the kernel coalesced in this stretch, a message it coalesced
      // just before GRO went off may still be on its way into the queue: the
      // receive thread, whose read keeps the segment size, watches for it.
      // Elsewhere the loop drains once more (with recvmmsg) and then waits here.
      return coalesced ? await this.#pollWaiting(GRO_SETTLE_MS) : -1;
    }
    let got: [Uint8Array, Deno.Addr];
    try {
      got = await this.#conn!.receive(this.#wakeBuffer);
    } catch (err) {
      if (this.#closed) return -1;
      throw err;
    }
    if (this.#closed) return -1;
    const addr = got[1] as Deno.NetAddr;
    this.#inBatch = true;
    try {
      this.#counters.received++;
      onDatagram(got[0], { address: unmapAddress(addr.hostname), port: addr.port });
      for (let k = 0; k < SETTLE_TICKS && !this.#closed; k++) await null;
    } finally {
      this.#inBatch = false;
      this.#flush();
    }
    return 0;
  }

  /**
   * Waits off the JS thread (poll) up to `timeoutMs` for the socket to be
   * readable, then reads a batch on this thread. Returns the count, or -1
   * (nothing came, or the socket closed).
   */
  async #pollWaiting(timeoutMs: number): Promise<number> {
    this.#receiving = true;
    let ready: number;
    try {
      ready = await this.#c.poll(this.#pollFd, 1n, timeoutMs);
    } finally {
      this.#receiving = false;
    }
    if (this.#closed || ready <= 0) return -1;
    return this.#c.recvmmsgNow(this.#fd, this.#recvHeaders, RECV_BATCH, MSG_DONTWAIT, null);
  }

  /** A full batch in event-loop mode: GRO on, unless it has not been paying off. */
  #busy(): void {
    if (!this.#gro || !this.#conn) return;
    if (this.#groMisses >= GRO_MAX_MISSES) {
      if (++this.#groSkipped < GRO_RETRY_BATCHES) return;
      this.#groSkipped = 0;
      this.#groMisses = GRO_MAX_MISSES - 1; // one more try
    }
    this.#setGro(true);
  }

  /** Turns UDP_GRO on or off (event-loop mode; the thread mode keeps it on). */
  #setGro(on: boolean): void {
    if (!this.#gro || !this.#conn || this.#closed) return;
    this.#groFlag[0] = on ? 1 : 0;
    if (this.#c.setsockopt(this.#fd, SOL_UDP, UDP_GRO, this.#groFlagBytes, 4) === 0) {
      this.#groOn = on;
      if (on) {
        this.#groMessagesAtOn = this.#groMessages;
        this.#groBusyPeriods++;
      }
    }
  }

  /**
   * One `recvmmsg` that waits (off the JS thread) for at least one datagram.
   * Returns the count, or -1 when there was nothing (the timeout) or the
   * socket closed meanwhile.
   */
  async #receiveWaiting(): Promise<number> {
    this.#receiving = true;
    let count: number;
    try {
      count = await this.#c.recvmmsg(this.#fd, this.#recvHeaders, RECV_BATCH, MSG_WAITFORONE, null);
    } finally {
      this.#receiving = false;
    }
    if (this.#closed) return -1;
    if (count >= 0) return count;
    // errno of the worker thread is out of reach: ask again on this thread
    // without waiting, which reads data that arrived meanwhile or tells
    // timeouts (EAGAIN) from real errors.
    count = this.#c.recvmmsgNow(this.#fd, this.#recvHeaders, RECV_BATCH, MSG_DONTWAIT, null);
    if (count < 0) {
      const errno = this.#readErrno();
      // Anything but "nothing there yet" is unexpected: do not spin on it.
      if (errno !== EAGAIN && errno !== EINTR) await delay(10);
    }
    return count;
  }

  send(data: Uint8Array, to: UdpEndpoint): void {
    if (this.#closed) return;
    const sa = this.#sockaddrFor(to);
    if (sa === null) {
      this.#counters.sendErrors++;
      return;
    }
    const length = data.length;
    if (length > SEND_SLOT) {
      this.#flush(); // keep the order
      this.#sendDirect(data, sa);
      return;
    }
    const i = this.#pending++;
    this.#sendU8.set(data, this.#sendData + i * SEND_SLOT);
    this.#sendU8.set(sa, this.#sendSa + i * SA_STRIDE);
    const iov = (this.#sendIov + i * IOV_SIZE) >> 2;
    this.#sendU32[iov + 2] = length; // iov_len (low half; the high half stays 0)
    this.#sendU32[((i * MMSG_SIZE) >> 2) + 2] = sa.length; // msg_namelen
    if (this.#pending === SEND_BATCH) {
      this.#flush();
    } else if (!this.#inBatch && !this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(this.#flushTask);
    }
  }

  flush(): void {
    this.#flush();
  }

  stats(): UdpSocketStats {
    this.#flush();
    return { ...this.#counters };
  }

  close(): void {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    if (this.#receiving) {
      // Wake the blocked recvmmsg; the loop releases the descriptor after it
      // returned. (On an unconnected UDP socket this reports ENOTCONN but
      // still wakes the waiter.)
      this.#c.shutdown(this.#fd, SHUT_RD);
    } else {
      this.#release();
    }
  }

  #release(): void {
    if (this.#released || this.#receiving) return;
    this.#closed = true;
    this.#released = true;
    this.#pending = 0;
    if (this.#conn) {
      try {
        this.#conn.close(); // closes the descriptor; a pending receive ends
      } catch {
        // already closed
      }
    } else {
      this.#c.close(this.#fd);
    }
    this.#lib.close();
  }

  /**
   * The UDP_GRO segment size of receive slot `i`, or 0 when the kernel sent
   * none (a plain datagram). Resets the slot's `msg_controllen` for the next
   * call.
   */
  #groSegmentSize(i: number): number {
    const u32 = this.#recvU32;
    const lengthWord = ((i * MMSG_SIZE) >> 2) + 10;
    const used = u32[lengthWord]; // msg_controllen as the kernel left it (< 2^32)
    u32[lengthWord] = RECV_CMSG_SPACE;
    const base = this.#recvCmsg + i * RECV_CMSG_SPACE;
    let offset = 0;
    // Walk the control messages (CMSG_NXTHDR): length, level, type, data.
    while (offset + GRO_CMSG_LEN <= used) {
      const word = (base + offset) >> 2;
      const cmsgLength = u32[word];
      if (cmsgLength < 16 || u32[word + 1] !== 0 || offset + cmsgLength > used) return 0;
      if (u32[word + 2] === SOL_UDP && u32[word + 3] === UDP_GRO && cmsgLength >= GRO_CMSG_LEN) {
        return u32[word + 4];
      }
      offset += (cmsgLength + 7) & ~7;
    }
    return 0;
  }

  /** Cuts a coalesced message back into its datagrams and delivers them in order. */
  #deliverSegments(
    slot: Uint8Array,
    length: number,
    segment: number,
    from: UdpEndpoint,
    onDatagram: (data: Uint8Array, from: UdpEndpoint) => void,
  ): void {
    this.#groMessages++;
    for (let offset = 0; offset < length && !this.#closed; offset += segment) {
      this.#groSegments++;
      this.#counters.received++;
      onDatagram(slot.subarray(offset, Math.min(length, offset + segment)), from);
    }
  }

  /** How the receive loop waits. */
  get wait(): FfiUdpWait {
    return this.#conn ? "event-loop" : "thread";
  }

  /** The GRO state of this socket. */
  groStatus(): FfiUdpGroStatus {
    return {
      enabled: this.#gro,
      messages: this.#groMessages,
      segments: this.#groSegments,
      disabledErrno: this.#groErrno,
      busyPeriods: this.#groBusyPeriods,
    };
  }

  /** The GSO state of this socket (after sending what is queued). */
  gsoStatus(): FfiUdpGsoStatus {
    this.#flush();
    return {
      enabled: this.#gso,
      messages: this.#gsoMessages,
      segments: this.#gsoSegments,
      fallbacks: this.#gsoFallbacks,
      disabledErrno: this.#gsoErrno,
    };
  }

  /** Sends every queued datagram with as few `sendmmsg` calls as possible. */
  #flush(): void {
    const total = this.#pending;
    if (total === 0 || this.#released) return;
    this.#pending = 0;
    if (this.#gso && total > 1) {
      const messages = this.#groupMessages(total);
      if (messages < total) {
        this.#sendGso(messages, total);
        return;
      }
    }
    this.#sendPlain(0, total, total);
  }

  /**
   * Sends slots `[from, to)` as one datagram each. Returns `false` when the
   * socket buffer is full: then the slots from there up to `total` are
   * counted as dropped (the caller sends nothing more in this flush).
   */
  #sendPlain(from: number, to: number, total: number): boolean {
    const counters = this.#counters;
    let done = from;
    while (done < to) {
      const n = this.#c.sendmmsg(this.#fd, this.#sendHeaders[done], to - done, MSG_DONTWAIT);
      if (n > 0) {
        counters.sent += n;
        done += n;
        continue;
      }
      const errno = n < 0 ? this.#readErrno() : EAGAIN; // 0 sent: treat as full
      if (errno === EINTR) continue;
      if (errno === EAGAIN || errno === ENOBUFS) {
        // The socket buffer is full: drop the rest rather than block.
        counters.sendDropped += total - done;
        return false;
      }
      // This datagram failed (unreachable, bad address, ...): skip it.
      counters.sendErrors++;
      done++;
    }
    return true;
  }

  /**
   * Fills the GSO headers for slots `[0, total)`: each message is a run of
   * slots to the same destination with the same length (the last may be
   * shorter), within the kernel's limits, or a single slot without a control
   * message. Returns the number of messages; `#messageStart` tells their
   * slots.
   */
  #groupMessages(total: number): number {
    const u32 = this.#sendU32;
    const starts = this.#messageStart;
    const iovLen = (this.#sendIov >> 2) + 2; // + 4 * slot: iov_len (low half)
    const saWord = this.#sendSa >> 2; // + 8 * slot
    const limit = this.#gsoSegmentLimit;
    let messages = 0;
    let first = 0;
    while (first < total) {
      const slotHeader = first * (MMSG_SIZE >> 2);
      const size = u32[iovLen + first * 4];
      const nameLen = u32[slotHeader + 2];
      let end = first + 1;
      if (size > 0 && size <= limit) {
        const sa = saWord + first * (SA_STRIDE >> 2);
        const words = nameLen >> 2;
        // Native IPv6 goes out with a 40-byte header, IPv4 (also mapped) with 20.
        const maxBytes = nameLen === SA6_LEN &&
            !(u32[sa + 2] === 0 && u32[sa + 3] === 0 && u32[sa + 4] === 0xffff0000)
          ? GSO_MAX_BYTES_V6
          : GSO_MAX_BYTES_V4;
        const last = Math.min(total, first + GSO_MAX_SEGMENTS);
        let bytes = size;
        while (end < last) {
          const next = u32[iovLen + end * 4];
          if (next > size || next === 0 || bytes + next > maxBytes) break;
          if (u32[end * (MMSG_SIZE >> 2) + 2] !== nameLen) break;
          const other = saWord + end * (SA_STRIDE >> 2);
          let same = true;
          for (let w = 0; w < words; w++) {
            if (u32[sa + w] !== u32[other + w]) {
              same = false;
              break;
            }
          }
          if (!same) break;
          bytes += next;
          end++;
          if (next < size) break; // a shorter datagram ends the run
        }
      }
      const header = this.#gsoHeaderWord + messages * (MMSG_SIZE >> 2);
      u32[header] = u32[slotHeader]; // msg_name: the first slot's sockaddr
      u32[header + 1] = u32[slotHeader + 1];
      u32[header + 2] = nameLen;
      u32[header + 4] = u32[slotHeader + 4]; // msg_iov: the first slot's iovec,
      u32[header + 5] = u32[slotHeader + 5]; // followed by those of the others
      u32[header + 6] = end - first; // msg_iovlen
      if (end - first > 1) {
        u32[header + 10] = GSO_CMSG_SPACE; // msg_controllen
        u32[this.#gsoCmsgWord + messages * (GSO_CMSG_SPACE >> 2) + 4] = size; // u16 segment size
      } else {
        u32[header + 10] = 0;
      }
      starts[messages++] = first;
      first = end;
    }
    starts[messages] = total;
    return messages;
  }

  /** Sends the messages built by {@linkcode #groupMessages}. */
  #sendGso(messages: number, total: number): void {
    const counters = this.#counters;
    const starts = this.#messageStart;
    let done = 0;
    while (done < messages) {
      const n = this.#c.sendmmsg(this.#fd, this.#gsoHeaders[done], messages - done, MSG_DONTWAIT);
      if (n > 0) {
        for (let k = done; k < done + n; k++) {
          const segments = starts[k + 1] - starts[k];
          if (segments > 1) {
            this.#gsoMessages++;
            this.#gsoSegments += segments;
          }
        }
        counters.sent += starts[done + n] - starts[done];
        done += n;
        continue;
      }
      const errno = n < 0 ? this.#readErrno() : EAGAIN; // 0 sent: treat as full
      if (errno === EINTR) continue;
      const first = starts[done];
      const end = starts[done + 1];
      if (errno === EAGAIN || errno === ENOBUFS) {
        counters.sendDropped += total - first;
        return;
      }
      if (end - first === 1) {
        counters.sendErrors++;
        done++;
        continue;
      }
      // The kernel refused a GSO message: send its datagrams again, one each.
      this.#gsoFallbacks++;
      if (
        errno === EIO || errno === EINVAL || errno === ENOPROTOOPT || errno === EOPNOTSUPP
      ) {
        // Not supported here (or not on this route): no more GSO on this socket.
        this.#gso = false;
        this.#gsoErrno = errno;
        this.#sendPlain(first, total, total);
        return;
      }
      if (errno === EMSGSIZE) {
        // A segment does not fit the path MTU (a plain datagram gets fragmented).
        this.#gsoSegmentLimit = Math.min(
          this.#gsoSegmentLimit,
          this.#sendU32[(this.#sendIov >> 2) + first * 4 + 2] - 1,
        );
      }
      if (!this.#sendPlain(first, end, total)) return;
      done++;
    }
  }

  /** The slow path for datagrams bigger than a send slot. */
  #sendDirect(data: Uint8Array, sa: Uint8Array): void {
    for (;;) {
      const n = this.#c.sendto(this.#fd, data, BigInt(data.length), MSG_DONTWAIT, sa, sa.length);
      if (Number(n) >= 0) {
        this.#counters.sent++;
        return;
      }
      const errno = this.#readErrno();
      if (errno === EINTR) continue;
      if (errno === EAGAIN || errno === ENOBUFS) this.#counters.sendDropped++;
      else this.#counters.sendErrors++;
      return;
    }
  }

  /** The encoded destination (cached per address text), or `null` when unusable. */
  #sockaddrFor(to: UdpEndpoint): Uint8Array | null {
    let sa = this.#addressCache.get(to.address);
    if (sa === undefined) {
      if (this.#addressCache.size >= 4096) this.#addressCache.clear();
      const buffer = new Uint8Array(SA6_LEN);
      const family = encodeAddress(to.address, buffer, this.#family === AF_INET6);
      sa = family === 0 ? null : family === AF_INET6 ? buffer : buffer.subarray(0, SA4_LEN);
      // A v4 socket can only reach v4 (and v4-mapped) destinations.
      if (sa !== null && family !== this.#family) sa = null;
      this.#addressCache.set(to.address, sa);
    }
    if (sa === null) return null;
    const port = to.port;
    if (!(port > 0 && port <= 65535)) return null;
    // The cached entry is shared: write the port into a scratch copy.
    const out = sa.length === SA6_LEN ? this.#scratchSa : this.#scratchSa4;
    out.set(sa);
    out[2] = port >> 8;
    out[3] = port & 0xff;
    return out;
  }

  /** The sender of a received datagram (endpoint objects are reused per address). */
  #decodeFrom(offset: number, length: number): UdpEndpoint | undefined {
    const b = this.#recvU8;
    const family = b[offset] | (b[offset + 1] << 8);
    const port = (b[offset + 2] << 8) | b[offset + 3];
    // Where the four IPv4 bytes are: sin_addr, or the tail of a mapped sin6_addr.
    let at: number;
    if (family === AF_INET && length >= SA4_LEN) {
      at = offset + 4;
    } else if (family === AF_INET6 && length >= SA6_LEN) {
      if (!isIpv4Mapped(b, offset + 8)) {
        const last = this.#lastV6Sa;
        if (this.#lastV6 !== undefined && sameBytes(b, offset, last, SA6_LEN)) return this.#lastV6;
        const endpoint = decodeSockaddr(b, offset);
        if (endpoint === undefined) return undefined;
        last.set(b.subarray(offset, offset + SA6_LEN));
        this.#lastV6 = endpoint;
        return endpoint;
      }
      at = offset + 20;
    } else {
      return undefined;
    }
    const ip = ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
    const key = ip * 65536 + port;
    let endpoint = this.#v4Endpoints.get(key);
    if (endpoint === undefined) {
      if (this.#v4Endpoints.size >= 4096) this.#v4Endpoints.clear();
      endpoint = { address: formatAddress(b.subarray(at, at + 4)), port };
      this.#v4Endpoints.set(key, endpoint);
    }
    return endpoint;
  }

  #readErrno(): number {
    return this.#errno.getInt32(0);
  }
}

// ---------------------------------------------------------------------------
// Ring setup

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Writes a 64-bit pointer-sized value (little-endian) at byte `offset`. */
function writePointer(u32: Uint32Array, offset: number, value: bigint): void {
  u32[offset >> 2] = Number(value & 0xffffffffn);
  u32[(offset >> 2) + 1] = Number(value >> 32n);
}

/** Points message header `header` at its sockaddr, iovec and data (offsets into the ring). */
function initHeader(
  u32: Uint32Array,
  base: bigint,
  header: number,
  sa: number,
  iov: number,
  data: number,
): void {
  writePointer(u32, header, base + BigInt(sa)); // msg_name
  u32[(header >> 2) + 2] = SA6_LEN; // msg_namelen
  writePointer(u32, header + 16, base + BigInt(iov)); // msg_iov
  writePointer(u32, header + 24, 1n); // msg_iovlen
  writePointer(u32, iov, base + BigInt(data)); // iov_base
}

function bindError(errno: number, port: number): Error {
  const message = `Cannot bind UDP port ${port} (errno ${errno})`;
  if (errno === EADDRINUSE) return new Deno.errors.AddrInUse(message);
  if (errno === EADDRNOTAVAIL) return new Deno.errors.AddrNotAvailable(message);
  if (errno === EACCES) return new Deno.errors.PermissionDenied(message);
  return new Error(message);
}

// ---------------------------------------------------------------------------
// Addresses

/** Encodes a bind address; returns its family, or 0 when `hostname` is not an IP literal. */
function encodeBindAddress(hostname: string, out: Uint8Array): number {
  const family = encodeAddress(hostname, out, hostname.includes(":"));
  return family;
}

/**
 * Encodes `address` (port 0) into `out` as sockaddr_in6 when `v6` (IPv4 as
 * IPv4-mapped) or sockaddr_in otherwise (IPv4-mapped IPv6 as IPv4). Returns
 * the family written, or 0 when the text is not an address (or an IPv6
 * address for a v4 socket).
 */
export function encodeAddress(address: string, out: Uint8Array, v6: boolean): number {
  out.fill(0);
  // An optional numeric zone (`fe80::1%3`) becomes sin6_scope_id.
  let scope = 0;
  const percent = address.indexOf("%");
  if (percent >= 0) {
    const zone = address.slice(percent + 1);
    if (!/^[0-9]{1,10}$/.test(zone) || Number(zone) > 0xffffffff) return 0;
    scope = Number(zone);
    address = address.slice(0, percent);
  }
  if (address.startsWith("[") && address.endsWith("]")) address = address.slice(1, -1);
  const bytes = parseAddress(address);
  if (bytes === null) return 0;
  if (bytes.length === 4) {
    if (percent >= 0) return 0;
    if (v6) {
      out[0] = AF_INET6;
      out[18] = 0xff;
      out[19] = 0xff;
      out.set(bytes, 20);
      return AF_INET6;
    }
    out[0] = AF_INET;
    out.set(bytes, 4);
    return AF_INET;
  }
  if (!v6) {
    if (!isIpv4Mapped(bytes)) return 0;
    out[0] = AF_INET;
    out.set(bytes.subarray(12, 16), 4);
    return AF_INET;
  }
  out[0] = AF_INET6;
  out.set(bytes, 8);
  out[24] = scope & 0xff;
  out[25] = (scope >>> 8) & 0xff;
  out[26] = (scope >>> 16) & 0xff;
  out[27] = scope >>> 24;
  return AF_INET6;
}

/** Decodes a sockaddr_in / sockaddr_in6 at `offset` (IPv4-mapped as plain IPv4 text). */
export function decodeSockaddr(b: Uint8Array, offset: number): UdpEndpoint | undefined {
  const family = b[offset] | (b[offset + 1] << 8);
  const port = (b[offset + 2] << 8) | b[offset + 3];
  if (family === AF_INET) {
    return { address: formatAddress(b.subarray(offset + 4, offset + 8)), port };
  }
  if (family !== AF_INET6) return undefined;
  if (isIpv4Mapped(b, offset + 8)) {
    return { address: formatAddress(b.subarray(offset + 20, offset + 24)), port };
  }
  // sin6_scope_id is in host order (little-endian on x86_64 and aarch64).
  const scopeId = (b[offset + 24] | (b[offset + 25] << 8) | (b[offset + 26] << 16) |
    (b[offset + 27] << 24)) >>> 0;
  const text = formatAddress(b.subarray(offset + 8, offset + 24));
  return { address: unmapAddress(scopeId === 0 ? text : `${text}%${scopeId}`), port };
}

function sameBytes(a: Uint8Array, offset: number, b: Uint8Array, length: number): boolean {
  for (let i = 0; i < length; i++) if (a[offset + i] !== b[i]) return false;
  return true;
}
