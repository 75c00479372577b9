/**
 * One TCP connection: the RFC 9293 state machine with RFC 5961 (blind
 * attack mitigations: exact-match RST, challenge ACKs rate-limited per
 * connection), RFC 7323 (window scale, timestamps, PAWS), RFC 2018 / RFC 2883
 * (SACK and DSACK generation, with the window and queue in `receiver.ts`),
 * loss recovery in `recovery.ts` (RFC 8985
 * RACK-TLP with SACK, a learned duplicate-ACK threshold and RFC 6582 NewReno
 * without it, RFC 6937 PRR, undo of spurious recoveries and timeouts by
 * timestamps (RFC 3522 / RFC 4015), by F-RTO without them (RFC 5682) and by
 * DSACK (RFC 3708)), RFC 6298 (RTO;
 * Karn's rule also for timestamp echoes), RFC 5681 + RFC 9438 (congestion
 * control; BBR in `bbr.ts`, the default) with pacing when the controller sets a rate,
 * delayed ACKs (RFC 1122 §4.2.3.2: every second segment or 40 ms; one ACK
 * per batch of input, at its end, however many in-order segments it brought),
 * zero-window probing, optional keepalives; and the web-stream face the user
 * sees.
 *
 * Choices documented here:
 * - `readable.cancel()` does not reset: the connection keeps ACKing and
 *   discards further data with a fully open window, so the peer never hangs;
 *   the user closes the writable (or calls `reset()`) to end the connection.
 *   If the peer never sends its FIN, a FIN_WAIT_2 without reader ends after
 *   `timeWait` ms.
 * - The receive window is the free space of our own receive queue
 *   (`rcvBuf - queued`); the `ReadableStream` has a high-water mark of 0 and
 *   pulls from that queue (coalescing up to 64 KiB per read), so bytes the
 *   consumer has not read hold the window shut. This is the byte-length
 *   strategy of the brief done by hand, because a stream's high-water mark
 *   cannot grow. `rcvBuf` starts at `receiveBuffer` (64 KiB) and grows (at least doubling), up
 *   to `maxReceiveBuffer` (6 MiB), when in one receiver RTT the peer
 *   delivered at least half of it while the consumer kept the queue below
 *   half (the window, not the reader, limited the transfer).
 * - `write()` resolves once the whole chunk was copied into the send buffer
 *   (limit `sendBuffer`, 256 KiB, doubling up to `maxSendBuffer` when the
 *   path window reaches half of it). Buffers are allocated on demand and
 *   freed when acknowledged: an idle connection holds none.
 * - After a timeout the first segment not SACKed is sent again at once, and
 *   every other one sent at least RACK.rtt + reo_wnd ago is marked lost and
 *   sent again in order under the collapsed window (RFC 8985 §6.3; RACK
 *   judges the rest as ACKs return). SACK marks are kept across the first
 *   timeout; a second marks everything lost and drops them in case the
 *   receiver reneged; no
 *   new fast recovery reduces the window for data sent before the timeout
 *   (RFC 6582 §3.2). ssthresh falls once per episode.
 * - Pure ACKs carry SND.MAX when the peer's window covers it, so a peer that
 *   already holds data we are resending after a timeout accepts them; an
 *   unacceptable pure ACK is answered at most every 500 ms (no ACK wars).
 * - State changes caused by stream callbacks only set flags and call
 *   `wake()`; segments go out from `input`/`poll` (`reset()` is a direct user
 *   call and sends its RST at once).
 *
 * @module
 */

import type { IpAddress } from "../addr.ts";
import type { TcpConnectionLike, TcpConnectionStats } from "./api.ts";

export type { TcpConnectionStats } from "./api.ts";
import {
  fillTcpChecksum,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  tcpHeaderLength,
  type TcpRepr,
  writeTcpHeader,
} from "../wire/tcp.ts";
import { Accepted, Receiver } from "./receiver.ts";
import { type CongestionControl, Cubic, NewReno } from "./congestion.ts";
import { Bbr } from "./bbr.ts";
import { RttEstimator } from "./rtt.ts";
import { type AckResult, LossRecovery, newAckResult, type SentSegment } from "./recovery.ts";
import { SendBuffer } from "./send_buffer.ts";
import type { ByteBudget } from "../quota.ts";
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from "./seq.ts";

/** Connection states (RFC 9293 §3.3.2). LISTEN lives in the layer. */
export const TcpState = {
  /** No connection. */
  CLOSED: 0,
  /** Our SYN is out. */
  SYN_SENT: 1,
  /** We answered a SYN with SYN-ACK. */
  SYN_RECEIVED: 2,
  /** Data flows both ways. */
  ESTABLISHED: 3,
  /** We sent FIN, not yet acknowledged. */
  FIN_WAIT_1: 4,
  /** Our FIN is acknowledged; waiting for the peer's. */
  FIN_WAIT_2: 5,
  /** The peer sent FIN; we may still send. */
  CLOSE_WAIT: 6,
  /** Both sent FIN, ours not yet acknowledged. */
  CLOSING: 7,
  /** We sent FIN after the peer's; waiting for its ACK. */
  LAST_ACK: 8,
  /** Both FINs done; lingering 2·MSL for stray segments. */
  TIME_WAIT: 9,
} as const;
/** A value of {@linkcode TcpState}. */
export type TcpStateValue = typeof TcpState[keyof typeof TcpState];

const STATE_NAMES = [
  "CLOSED",
  "SYN_SENT",
  "SYN_RECEIVED",
  "ESTABLISHED",
  "FIN_WAIT_1",
  "FIN_WAIT_2",
  "CLOSE_WAIT",
  "CLOSING",
  "LAST_ACK",
  "TIME_WAIT",
] as const;

/** Why a connection failed, as the error its streams carry. */
export class TcpError extends Error {
  /** ECONNRESET, ECONNREFUSED, ETIMEDOUT, ECONNABORTED or EHOSTUNREACH. */
  readonly code: string;
  /** Creates an error with a POSIX-style `code`. */
  constructor(code: string, message: string) {
    super(message);
    this.name = "TcpError";
    this.code = code;
  }
}

/** Keepalive probing (RFC 1122 §4.2.3.6). */
export interface TcpKeepAliveOptions {
  /** Idle time before the first probe, ms (default 7 200 000). */
  idle?: number;
  /** Time between unanswered probes, ms (default 75 000). */
  interval?: number;
  /** Unanswered probes before the connection is dropped (default 9). */
  count?: number;
}

/** The congestion controllers a connection can use. */
export const TCP_CONGESTION_CONTROLS = ["cubic", "newreno", "bbr"] as const;
/** A value of {@linkcode TCP_CONGESTION_CONTROLS}. */
export type TcpCongestionControl = typeof TCP_CONGESTION_CONTROLS[number];

/** Options of the TCP layer (all optional). */
export interface TcpOptions {
  /** Link MTU used for our MSS: MTU − 40 (IPv4) or − 60 (IPv6). Default 1420. */
  mtu?: number;
  /** Initial receive buffer (window) per connection, bytes. Default 65 536. */
  receiveBuffer?: number;
  /** Largest receive buffer after growth, bytes. Default 6 MiB (as Linux's tcp_rmem). */
  maxReceiveBuffer?: number;
  /** Initial send buffer limit, bytes. Default 262 144. */
  sendBuffer?: number;
  /** Largest send buffer after growth, bytes. Default 6 MiB. */
  maxSendBuffer?: number;
  /**
   * Congestion controller: "bbr" (default; BBRv3 with pacing, see `bbr.ts`),
   * "cubic" or "newreno". BBR is the default because on a lossy last hop it
   * keeps the link busy where CUBIC halves on every random loss (measured
   * against Linux in `bench/impaired_bench.ts`), at parity on a clean path.
   */
  congestionControl?: TcpCongestionControl;
  /** Nagle's algorithm (RFC 896). Default false (like TCP_NODELAY). */
  nagle?: boolean;
  /** Delayed-ACK timer, ms (≤ 40 recommended). Default 40; 0 ACKs every segment. */
  delayedAck?: number;
  /** Offer SACK (RFC 2018). Default true. */
  sack?: boolean;
  /** Offer timestamps (RFC 7323). Default true. */
  timestamps?: boolean;
  /** Offer window scaling (RFC 7323). Default true. */
  windowScale?: boolean;
  /** TIME_WAIT duration (2·MSL), ms. Default 60 000. */
  timeWait?: number;
  /** Minimum RTO, ms. Default 200. */
  minRto?: number;
  /** Maximum RTO, ms. Default 60 000. */
  maxRto?: number;
  /** SYN / SYN-ACK retransmissions before giving up. Default 6. */
  synRetries?: number;
  /** Data retransmissions (timeouts in a row) before giving up. Default 12. */
  retries?: number;
  /** Keepalive probing; off when absent. */
  keepAlive?: TcpKeepAliveOptions;
  /** Most connections (any state) in the table. Default 65 536. */
  maxConnections?: number;
  /** Most half-open connections (SYNs awaiting a decision or the final ACK). Default 1024. */
  maxHalfOpen?: number;
  /**
   * Most connections in TIME_WAIT; the oldest is dropped beyond it. Default 4096. Each keeps
   * about 2.4 KB of heap there (`bench/time_wait_memory_bench.ts`).
   */
  maxTimeWait?: number;
  /**
   * Most connections of one source (the `source` passed with its packets,
   * e.g. a WireGuard peer). Default half of `maxConnections`.
   */
  maxConnectionsPerSource?: number;
  /** Most half-open connections of one source. Default half of `maxHalfOpen`. */
  maxHalfOpenPerSource?: number;
  /** Most TIME_WAIT connections of one source. Default half of `maxTimeWait`. */
  maxTimeWaitPerSource?: number;
  /**
   * Most bytes held in the send buffers of one source's connections
   * (bytes written for its clients and not yet acknowledged). When reached,
   * `write()` on that source's connections waits: a client that stops
   * reading holds at most this much. Default 32 MiB.
   */
  sendBytesPerSource?: number;
  /**
   * Most bytes queued for the consumers of one source's connections
   * (received, not yet read) plus the windows offered to it and not yet
   * filled. When reached, their receive windows close until the consumers
   * read: a source whose data nobody reads fast enough holds at most this
   * much, plus one segment per connection that held no unread byte when
   * offered it (so none of them stalls). Default 32 MiB.
   */
  receiveBytesPerSource?: number;
  /** Secret for ISNs and timestamp offsets (8+ bytes). Random by default. */
  secret?: Uint8Array;
}

/** Options with every default filled in. */
export interface ResolvedTcpOptions {
  /** See {@linkcode TcpOptions}. */
  mtu: number;
  /** See {@linkcode TcpOptions}. */
  receiveBuffer: number;
  /** See {@linkcode TcpOptions}. */
  maxReceiveBuffer: number;
  /** See {@linkcode TcpOptions}. */
  sendBuffer: number;
  /** See {@linkcode TcpOptions}. */
  maxSendBuffer: number;
  /** See {@linkcode TcpOptions}. */
  congestionControl: TcpCongestionControl;
  /** See {@linkcode TcpOptions}. */
  nagle: boolean;
  /** See {@linkcode TcpOptions}. */
  delayedAck: number;
  /** See {@linkcode TcpOptions}. */
  sack: boolean;
  /** See {@linkcode TcpOptions}. */
  timestamps: boolean;
  /** See {@linkcode TcpOptions}. */
  windowScale: boolean;
  /** See {@linkcode TcpOptions}. */
  timeWait: number;
  /** See {@linkcode TcpOptions}. */
  minRto: number;
  /** See {@linkcode TcpOptions}. */
  maxRto: number;
  /** See {@linkcode TcpOptions}. */
  synRetries: number;
  /** See {@linkcode TcpOptions}. */
  retries: number;
  /** Keepalive, or null when off. */
  keepAlive: Required<TcpKeepAliveOptions> | null;
  /** See {@linkcode TcpOptions}. */
  maxConnections: number;
  /** See {@linkcode TcpOptions}. */
  maxHalfOpen: number;
  /** See {@linkcode TcpOptions}. */
  maxTimeWait: number;
  /** See {@linkcode TcpOptions}. */
  maxConnectionsPerSource: number;
  /** See {@linkcode TcpOptions}. */
  maxHalfOpenPerSource: number;
  /** See {@linkcode TcpOptions}. */
  maxTimeWaitPerSource: number;
  /** See {@linkcode TcpOptions}. */
  sendBytesPerSource: number;
  /** See {@linkcode TcpOptions}. */
  receiveBytesPerSource: number;
}

/** Fills in defaults and validates `o`; throws `RangeError` on bad values. */
export function resolveTcpOptions(o: TcpOptions = {}): ResolvedTcpOptions {
  const num = (name: string, v: number | undefined, def: number, min: number, max: number) => {
    const x = v ?? def;
    if (typeof x !== "number" || !(x >= min && x <= max)) {
      throw new RangeError(`TCP option ${name} must be between ${min} and ${max}, not ${x}`);
    }
    return x;
  };
  const r: ResolvedTcpOptions = {
    mtu: num("mtu", o.mtu, 1420, 576, 65535),
    receiveBuffer: num("receiveBuffer", o.receiveBuffer, 65536, 1024, 1 << 30),
    maxReceiveBuffer: 0,
    sendBuffer: num("sendBuffer", o.sendBuffer, 262144, 1024, 1 << 30),
    maxSendBuffer: 0,
    congestionControl: o.congestionControl ?? "bbr",
    nagle: o.nagle ?? false,
    delayedAck: num("delayedAck", o.delayedAck, 40, 0, 500),
    sack: o.sack ?? true,
    timestamps: o.timestamps ?? true,
    windowScale: o.windowScale ?? true,
    timeWait: num("timeWait", o.timeWait, 60_000, 0, 240_000),
    minRto: num("minRto", o.minRto, 200, 1, 60_000),
    maxRto: num("maxRto", o.maxRto, 60_000, 100, 600_000),
    synRetries: num("synRetries", o.synRetries, 6, 0, 20),
    retries: num("retries", o.retries, 12, 1, 30),
    keepAlive: o.keepAlive
      ? {
        idle: num("keepAlive.idle", o.keepAlive.idle, 7_200_000, 1, 2 ** 31),
        interval: num("keepAlive.interval", o.keepAlive.interval, 75_000, 1, 2 ** 31),
        count: num("keepAlive.count", o.keepAlive.count, 9, 1, 100),
      }
      : null,
    maxConnections: num("maxConnections", o.maxConnections, 65536, 1, 1 << 24),
    maxHalfOpen: num("maxHalfOpen", o.maxHalfOpen, 1024, 1, 1 << 20),
    maxTimeWait: num("maxTimeWait", o.maxTimeWait, 4096, 0, 1 << 24),
    maxConnectionsPerSource: 0,
    maxHalfOpenPerSource: 0,
    maxTimeWaitPerSource: 0,
    sendBytesPerSource: num("sendBytesPerSource", o.sendBytesPerSource, 32 << 20, 1024, 2 ** 40),
    receiveBytesPerSource: num(
      "receiveBytesPerSource",
      o.receiveBytesPerSource,
      32 << 20,
      1024,
      2 ** 40,
    ),
  };
  const half = (n: number) => Math.max(1, n >> 1);
  r.maxConnectionsPerSource = num(
    "maxConnectionsPerSource",
    o.maxConnectionsPerSource,
    half(r.maxConnections),
    1,
    r.maxConnections,
  );
  r.maxHalfOpenPerSource = num(
    "maxHalfOpenPerSource",
    o.maxHalfOpenPerSource,
    half(r.maxHalfOpen),
    1,
    r.maxHalfOpen,
  );
  r.maxTimeWaitPerSource = num(
    "maxTimeWaitPerSource",
    o.maxTimeWaitPerSource,
    r.maxTimeWait >> 1,
    0,
    r.maxTimeWait,
  );
  r.maxReceiveBuffer = num(
    "maxReceiveBuffer",
    o.maxReceiveBuffer,
    Math.max(6 << 20, r.receiveBuffer),
    r.receiveBuffer,
    1 << 30,
  );
  r.maxSendBuffer = num(
    "maxSendBuffer",
    o.maxSendBuffer,
    Math.max(6 << 20, r.sendBuffer),
    r.sendBuffer,
    1 << 30,
  );
  if (!(TCP_CONGESTION_CONTROLS as readonly string[]).includes(r.congestionControl)) {
    throw new RangeError(`Unknown congestion control ${r.congestionControl}`);
  }
  return r;
}

/** What a connection needs from the layer that owns it (internal). */
export interface ConnectionOwner {
  /** Resolved options. */
  readonly options: ResolvedTcpOptions;
  /** Scratch representation for building segments. */
  readonly scratch: TcpRepr;
  /** The last `now` seen by the layer. */
  readonly lastNow: number;
  /** Sends a finished segment. */
  transmit(conn: Connection, segment: Uint8Array): void;
  /**
   * Optional: a buffer of at least `length` bytes to build the connection's
   * next segment in (passed to `transmit` right after), or `undefined`.
   */
  segmentBuffer?(conn: Connection, length: number): Uint8Array | undefined;
  /** The connection needs `poll` soon (state changed from a stream callback). */
  wakeConnection(conn: Connection): void;
  /**
   * The connection has work for the end of the current batch of input (an
   * ACK that in-order data owes, bytes for its reader): `endBatch` runs at
   * the next `poll`, once however many segments the batch brought.
   */
  deferToBatchEnd(conn: Connection): void;
  /** The connection entered TIME_WAIT. */
  enteredTimeWait(conn: Connection): void;
  /** The connection is gone (CLOSED). */
  released(conn: Connection): void;
}

/** Negotiated SYN options. */
export interface SynOptions {
  /** Peer MSS or -1. */
  mss: number;
  /** Peer window shift or -1. */
  windowScale: number;
  /** Peer sent SACK-permitted. */
  sackPermitted: boolean;
  /** Peer sent timestamps. */
  hasTimestamp: boolean;
  /** Peer TSval. */
  tsVal: number;
}

const S = TcpState;
const EMPTY = new Uint8Array(0);
const NO_BLOCKS = new Uint32Array(0);
/** Scratch results (connections are driven from one thread, never re-entrantly). */
const ACK_RESULT: AckResult = newAckResult();
const REO_TIMER = [0];
/** Worst-case delayed-ACK time added to a probe timeout for a single segment (RFC 8985 §7.2). */
const WC_DEL_ACK = 200;
/** Burst allowance of pacing in ms of sending at the pacing rate (about twice the ~2 ms timer granularity). */
const PACING_QUANTUM_MS = 4;
/** Largest learned duplicate-ACK threshold (Linux caps tp->reordering at 300). */
const MAX_DUP_THRESH = 64;

/**
 * What a connection in TIME_WAIT keeps of its congestion controller and its
 * loss recovery: their last figures, for `stats`, and no state (nothing is
 * sent any more but ACKs). The controllers' objects (BBR's model and
 * filters, the recovery's scoreboard) were about half of what each of up
 * to `maxTimeWait` connections kept alive there (measured in
 * `bench/time_wait_memory_bench.ts`).
 */
class SettledCc implements CongestionControl {
  readonly name: string;
  readonly pacingRate: number;
  readonly modelBased = false;
  cwnd: number;
  ssthresh: number;
  constructor(
    cc: CongestionControl,
    /** `stats.congestionState` at the end. */
    readonly state: string,
    /** `stats.bottleneckBandwidth` at the end. */
    readonly bw: number,
    /** `stats.dsacksReceived` at the end. */
    readonly dsacks: number,
    /** `stats.reorderingWindowMultiplier` at the end. */
    readonly reoWndMult: number,
    /** `stats.minRtt` at the end. */
    readonly minRtt: number,
  ) {
    this.name = cc.name;
    this.pacingRate = cc.pacingRate;
    this.cwnd = cc.cwnd;
    this.ssthresh = cc.ssthresh;
  }
  onRateSample(): void {}
  onRecoveryEnd(): void {}
  setMss(): void {}
  onAck(): void {}
  onCongestion(): void {}
  onTimeout(): void {}
}

function newCongestionControl(
  name: TcpCongestionControl,
  mss: number,
  sack: boolean,
  seed: number,
): CongestionControl {
  if (name === "bbr") return new Bbr(mss, { selectiveAcks: sack, seed: seed || 1 });
  return name === "newreno" ? new NewReno(mss) : new Cubic(mss);
}
const OUR_WSCALE = 7;

/** Where received bytes go: the readable's controller or a {@linkcode DirectReader}. */
interface ReadSide {
  enqueue(chunk: Uint8Array): void;
  close(): void;
  error(error: unknown): void;
}

/** Nobody reads yet: the connection's state is replayed when a reader attaches. */
const NO_READER: ReadSide = { enqueue() {}, close() {}, error() {} };

/** The reader behind {@linkcode Connection.read}: one pending read, like a stream with a high-water mark of 0. */
class DirectReader implements ReadSide {
  #resolve: ((chunk: Uint8Array | null) => void) | null = null;
  #reject: ((error: unknown) => void) | null = null;
  #chunk: Uint8Array | null = null;
  #closed = false;
  #failed = false;
  #error: unknown = undefined;

  read(pull: () => void): Promise<Uint8Array | null> {
    if (this.#resolve) return Promise.reject(new TypeError("A read is already waiting"));
    const chunk = this.#chunk;
    if (chunk) {
      this.#chunk = null;
      return Promise.resolve(chunk);
    }
    if (this.#failed) return Promise.reject(this.#error);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
      pull();
    });
  }

  enqueue(chunk: Uint8Array): void {
    const resolve = this.#resolve;
    if (!resolve) {
      this.#chunk = chunk;
      return;
    }
    this.#resolve = this.#reject = null;
    resolve(chunk);
  }

  close(): void {
    if (this.#closed || this.#failed) return;
    this.#closed = true;
    const resolve = this.#resolve;
    if (!resolve) return;
    this.#resolve = this.#reject = null;
    resolve(null);
  }

  error(error: unknown): void {
    if (this.#closed || this.#failed) return;
    this.#failed = true;
    this.#error = error;
    this.#chunk = null;
    const reject = this.#reject;
    if (!reject) return;
    this.#resolve = this.#reject = null;
    reject(error);
  }
}

/** A TCP connection. Created by the layer; users see it as {@linkcode TcpConnectionLike}. */
export class Connection implements TcpConnectionLike {
  /** Our address. */
  readonly localAddress: IpAddress;
  /** Our port. */
  readonly localPort: number;
  /** Peer address. */
  readonly remoteAddress: IpAddress;
  /** Peer port. */
  readonly remotePort: number;
  /** 4 or 6. */
  readonly ipVersion: 4 | 6;
  /** Table key (layer-internal). */
  readonly key: string;
  /** Resolves when the connection is fully closed. */
  readonly closed: Promise<void>;

  /** Current state. */
  state: TcpStateValue = S.CLOSED;
  /** Time-ordered heap bookkeeping (layer-internal). */
  heapAt: number = Infinity;
  /** In the layer's wake list (layer-internal). */
  dirty = false;
  /** In the layer's end-of-batch list (layer-internal). */
  batched = false;
  /** Insertion order for half-open / TIME_WAIT eviction (layer-internal). */
  released = false;
  /** Who the connection is counted against (layer-internal; see `NetStack.input`). */
  source: unknown = undefined;
  /** The send-buffer byte budget of its source (layer-internal; see `useBudgets`). */
  budget: ByteBudget | null = null;

  readonly #owner: ConnectionOwner;
  readonly #o: ResolvedTcpOptions;

  // Send sequence space.
  #iss = 0;
  #sndUna = 0;
  #sndNxt = 0;
  #sndMax = 0;
  #sndWnd = 0;
  #sndWl1 = 0;
  #sndWl2 = 0;
  #maxSndWnd = 0;
  #sndShift = 0;
  #sndMss: number;
  #sendBuf: SendBuffer | null = null;
  #sendLimit: number;
  #finQueued = false;
  #finSent = false;
  #finSeq = 0;
  #finAcked = false;
  #abortQueued = false;

  // Receive sequence space.
  #irs = 0;
  /** RCV.NXT, window, queue, reassembly, SACK/DSACK (receiver.ts). */
  readonly #rcv: Receiver;
  #finReceived = false;
  #oooFinSeq = -1;
  #synAt = 0;

  // Options.
  #wscaleOk = false;
  #sackOk = false;
  #tsOk = false;
  #tsRecent = 0;
  #tsOffset = 0;
  #lastAckSent = 0;

  // Timers (absolute ms, Infinity when off).
  #rtoAt = Infinity;
  #persistAt = Infinity;
  #delackAt = Infinity;
  #timeWaitAt = Infinity;
  #keepaliveAt = Infinity;
  #persistBackoff = 0;
  #probeOut = false;
  #probesUnanswered = 0;
  #retries = 0;

  // Loss recovery (recovery.ts): per-segment records, RACK-TLP, PRR, undo.
  #lr: LossRecovery | null = null;
  #dupAcks = 0;
  /** Duplicate ACKs that start recovery without SACK; learned from spurious recoveries. */
  #dupThresh = 3;
  /** In fast recovery (RFC 6675 / RFC 6937). */
  #inRecovery = false;
  /** This recovery reduced the window and PRR paces it down. */
  #prrActive = false;
  /** After a retransmission timeout, until SND.UNA passes `#recover`. */
  #inLoss = false;
  /** F-RTO (RFC 5682) step: 0 off, 1 first ACK awaited, 2 second ACK awaited. */
  #frto = 0;
  /** A timeout's first retransmission is due: it goes whatever cwnd says. */
  #rtoResend = false;
  #recover = 0;
  #tlpAt = Infinity;
  #reoAt = Infinity;
  /** SND.MAX when the outstanding tail loss probe was sent, -1 none. */
  #tlpEnd = -1;
  #tlpRetrans = false;
  #rtt: RttEstimator;
  #cc: CongestionControl;
  #ccName: TcpCongestionControl;
  // Pacing: a token bucket in bytes, refilled at the controller's pacing rate.
  #paceTokens = 0;
  #paceLast = 0;
  #paceAt = Infinity;

  // ACK scheduling.
  #ackNow = false;
  #unackedSegs = 0;
  #windowUpdate = false;

  // Stream plumbing. The streams are made on first use (an idle relay that
  // reads and writes directly holds none); until then received bytes,
  // closes and errors go to NO_READER and are replayed when one attaches.
  #readCtrl: ReadSide = NO_READER;
  #writeCtrl: WritableStreamDefaultController | null = null;
  #readable: ReadableStream<Uint8Array> | null = null;
  #writable: WritableStream<Uint8Array> | null = null;
  #direct: DirectReader | null = null;
  #directWrite = false;
  #budgetWait = false;
  /**
   * What the writable is (or will be, once made) errored with: made only
   * when someone sees it (an error's stack costs ~15 µs, and a relay that
   * writes with `write()` never makes the writable).
   */
  #writeErrorOf: (() => unknown) | undefined = undefined;
  #writeError: unknown = undefined;
  #readDone = false;
  #writeDone = false;
  #pullWaiting = false;
  #abortHooked = false;
  #pendingWrite: {
    chunk: Uint8Array;
    offset: number;
    resolve: () => void;
    reject: (e: unknown) => void;
  } | null = null;
  #resolveClosed!: () => void;
  #error: TcpError | null = null;

  // Stats.
  #bytesIn = 0;
  #bytesOut = 0;
  #segsIn = 0;
  #segsOut = 0;
  #retransmits = 0;
  #timeouts = 0;
  #fastRecoveries = 0;
  #spuriousRecoveries = 0;
  #spuriousRetransmits = 0;
  #tailLossProbes = 0;
  /** Eifel detection (RFC 3522) armed for the episode's first retransmission. */
  #undoPossible = false;
  #undoCwnd = 0;
  #undoSsthresh = 0;
  /** TSval of our latest retransmission while some data is unacknowledged, or -1. */
  #rexmitTs = -1;
  #dropped = 0;
  #challengeAcks = 0;
  #challengeStart = -Infinity;
  #oowAckAt = -Infinity;
  #challengeBudget = 0;

  /** Creates a connection in CLOSED; the layer then calls `openActive`/`openPassive`. */
  constructor(
    owner: ConnectionOwner,
    tuple: {
      localAddress: IpAddress;
      localPort: number;
      remoteAddress: IpAddress;
      remotePort: number;
    },
    key: string,
    iss: number,
    tsOffset: number,
  ) {
    this.#owner = owner;
    this.#o = owner.options;
    this.localAddress = tuple.localAddress;
    this.localPort = tuple.localPort;
    this.remoteAddress = tuple.remoteAddress;
    this.remotePort = tuple.remotePort;
    this.ipVersion = tuple.localAddress.length === 4 ? 4 : 6;
    this.key = key;
    this.#iss = iss;
    this.#sndUna =
      this.#sndNxt =
      this.#sndMax =
      this.#recover =
        iss;
    this.#tsOffset = tsOffset;
    this.#sndMss = this.ipVersion === 4 ? 536 : 1220;
    this.#rcv = new Receiver(this.#o.receiveBuffer, this.#o.maxReceiveBuffer);
    this.#sendLimit = this.#o.sendBuffer;
    this.#rtt = new RttEstimator({ minRto: this.#o.minRto, maxRto: this.#o.maxRto });
    this.#ccName = this.#o.congestionControl;
    this.#cc = newCongestionControl(this.#ccName, this.#sndMss, false, iss);
    this.closed = new Promise<void>((resolve) => (this.#resolveClosed = resolve));
  }

  /**
   * Counts this connection's send buffer and receive queue against its
   * source's budgets (layer-internal): writes wait while `send` is spent,
   * the receive window closes while `receive` is.
   */
  useBudgets(send: ByteBudget, receive: ByteBudget): void {
    this.budget = send;
    this.#rcv.budget = receive;
    this.#rcv.onBudget = () => {
      this.#budgetWait = true;
      this.#owner.wakeConnection(this);
    };
  }

  /**
   * Bytes from the peer (made on first use). Not available once
   * {@linkcode Connection.read} was used.
   */
  get readable(): ReadableStream<Uint8Array> {
    if (this.#readable) return this.#readable;
    if (this.#direct) {
      throw new TypeError("This connection is read with read(): it has no readable");
    }
    this.#readable = new ReadableStream<Uint8Array>(
      {
        start: (c) => this.#attachReader(c),
        pull: () => this.#onPull(),
        cancel: () => this.#onCancel(),
      },
      { highWaterMark: 0 },
    );
    return this.#readable;
  }

  /**
   * Bytes to the peer (made on first use). Not available once
   * {@linkcode Connection.write} was used.
   */
  get writable(): WritableStream<Uint8Array> {
    if (this.#writable) return this.#writable;
    if (this.#directWrite) {
      throw new TypeError("This connection is written with write(): it has no writable");
    }
    this.#writable = new WritableStream<Uint8Array>(
      {
        start: (c) => {
          this.#writeCtrl = c;
          if (this.#writeErrorOf) c.error(this.#errorOfWritable());
        },
        write: (chunk) => this.#onWrite(chunk),
        close: () => this.#onClose(),
        abort: (reason) => this.#onAbort(reason),
      },
      { highWaterMark: 1 },
    );
    return this.#writable;
  }

  /**
   * The next bytes from the peer (what has arrived, up to 64 KiB), `null`
   * after its FIN; rejects on RST or timeout. One read at a time. The
   * stream-free way to read: no stream objects are made (for relays that
   * hold many idle connections). Throws a `TypeError` once
   * {@linkcode Connection.readable} was used.
   */
  read(): Promise<Uint8Array | null> {
    if (this.#readable) throw new TypeError("This connection is read through its readable");
    if (!this.#direct) this.#attachReader(this.#direct = new DirectReader());
    return this.#direct.read(() => this.#onPull());
  }

  /**
   * Writes `chunk` to the peer: resolves once it is in the send buffer, as
   * a write to {@linkcode Connection.writable} would. One write at a time;
   * {@linkcode Connection.close} half-closes. Throws a `TypeError` once
   * the writable was used.
   */
  write(chunk: Uint8Array): Promise<void> {
    if (this.#writable) throw new TypeError("This connection is written through its writable");
    this.#directWrite = true;
    if (this.#pendingWrite) return Promise.reject(new TypeError("A write is already waiting"));
    try {
      return this.#onWrite(chunk) ?? Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #attachReader(side: ReadSide): void {
    this.#readCtrl = side;
    if (!this.#readDone) return;
    if (this.#error) side.error(this.#error);
    else side.close();
  }

  /** Errors the writable (now, or when it is made). */
  #errorWritable(make: () => unknown): void {
    if (this.#writeErrorOf) return;
    this.#writeErrorOf = make;
    if (!this.#writeCtrl) return;
    try {
      this.#writeCtrl.error(this.#errorOfWritable());
    } catch { /* already closed */ }
  }

  #errorOfWritable(): unknown {
    return this.#writeError ??= this.#writeErrorOf!();
  }

  /** Closes the read side (the stream or direct reader, or the record for one made later). */
  #closeReadable(): void {
    try {
      this.#readCtrl.close();
    } catch { /* already closed */ }
  }

  /** Errors the read side (now, or replayed when one attaches). */
  #failReadable(error: unknown): void {
    try {
      this.#readCtrl.error(error);
    } catch { /* already closed */ }
  }

  // ---------------------------------------------------------------- opening

  /** Our MSS for this address family. */
  #ourMss(): number {
    return this.#o.mtu - (this.ipVersion === 4 ? 40 : 60);
  }

  /** Chooses this connection's congestion controller (before it opens). */
  useCongestionControl(name: TcpCongestionControl): void {
    if (!(TCP_CONGESTION_CONTROLS as readonly string[]).includes(name)) {
      throw new RangeError(`Unknown congestion control ${name}`);
    }
    this.#ccName = name;
    this.#cc = newCongestionControl(name, this.#sndMss, this.#sackOk, this.#iss);
  }

  /** Active open: sends SYN (RFC 9293 §3.10.1). */
  openActive(now: number): void {
    this.state = S.SYN_SENT;
    this.#sndNxt = this.#sndMax = seqAdd(this.#iss, 1);
    this.#sendSyn(now, false);
    this.#synAt = now;
    this.#rtoAt = now + this.#rtt.rto;
  }

  /** Passive open from a SYN the owner accepted: sends SYN-ACK. */
  openPassive(seq: number, syn: SynOptions, now: number): void {
    this.state = S.SYN_RECEIVED;
    this.#irs = seq;
    this.#rcv.start(seqAdd(seq, 1), now);
    this.#applySynOptions(syn);
    this.#sndNxt = this.#sndMax = seqAdd(this.#iss, 1);
    this.#sendSyn(now, true);
    this.#synAt = now;
    this.#rtoAt = now + this.#rtt.rto;
  }

  #applySynOptions(syn: SynOptions): void {
    const o = this.#o;
    const ours = this.#ourMss();
    const peerMss = syn.mss > 0 ? syn.mss : (this.ipVersion === 4 ? 536 : 1220);
    this.#sndMss = Math.max(64, Math.min(peerMss, ours));
    this.#rcv.mss = ours;
    // An option is on only when both sides sent it (RFC 7323 §2.2, §3.2; RFC 2018 §2).
    this.#wscaleOk = o.windowScale && syn.windowScale >= 0;
    this.#sndShift = this.#wscaleOk ? Math.min(14, syn.windowScale) : 0;
    this.#rcv.shift = this.#wscaleOk ? OUR_WSCALE : 0;
    this.#sackOk = o.sack && syn.sackPermitted;
    this.#cc = newCongestionControl(this.#ccName, this.#sndMss, this.#sackOk, this.#iss);
    this.#tsOk = o.timestamps && syn.hasTimestamp;
    if (this.#tsOk) this.#tsRecent = syn.tsVal;
  }

  #sendSyn(now: number, ack: boolean): void {
    const r = this.#owner.scratch;
    r.clear();
    r.srcPort = this.localPort;
    r.dstPort = this.remotePort;
    r.seq = this.#iss;
    r.ack = this.#rcv.nxt;
    r.flags = TCP_SYN | (ack ? TCP_ACK : 0);
    // What the buffer (and the source's receive budget) holds; a retransmitted
    // SYN-ACK never offers less than the first.
    r.window = Math.max(Math.min(65535, this.#rcv.free()), this.#rcv.window);
    r.mss = this.#ourMss();
    const o = this.#o;
    if (ack) {
      // Answer only with what the peer offered.
      if (this.#wscaleOk) r.windowScale = OUR_WSCALE;
      r.sackPermitted = this.#sackOk;
      if (this.#tsOk) {
        r.hasTimestamp = true;
        r.tsVal = this.#tsNow(now);
        r.tsEcr = this.#tsRecent;
      }
      this.#rcv.advEdge = seqAdd(this.#rcv.nxt, r.window);
      this.#rcv.syncBudget();
      this.#lastAckSent = this.#rcv.nxt;
    } else {
      if (o.windowScale) r.windowScale = OUR_WSCALE;
      r.sackPermitted = o.sack;
      if (o.timestamps) {
        r.hasTimestamp = true;
        r.tsVal = this.#tsNow(now);
        r.tsEcr = 0;
      }
    }
    this.#transmit(r, null, 0, 0);
  }

  #tsNow(now: number): number {
    return (Math.floor(now) + this.#tsOffset) >>> 0;
  }

  // ---------------------------------------------------------------- input

  /** Processes one segment for this connection (RFC 9293 §3.10.7). */
  input(seg: TcpRepr, now: number): void {
    this.#segsIn++;
    if (this.state === S.CLOSED) return;
    if (this.#o.keepAlive && this.state !== S.TIME_WAIT) {
      this.#keepaliveAt = now + this.#o.keepAlive.idle;
      this.#probesUnanswered = 0;
    }
    if (this.state === S.SYN_SENT) {
      this.#inputSynSent(seg, now);
      this.#output(now);
      return;
    }
    let flags = seg.flags;
    let seq = seg.seq;
    let payload = seg.payload;

    // PAWS (RFC 7323 §5.3): an old timestamp on a non-RST segment is dropped,
    // except a reordered duplicate ACK (as Linux's tcp_disordered_ack): with
    // reordering, the ACKs that carry SACK information all have SND.UNA as
    // their ACK, and one that was overtaken still says which segments arrived.
    if (
      this.#tsOk && seg.hasTimestamp && !(flags & TCP_RST) && seqLt(seg.tsVal, this.#tsRecent) &&
      !this.#disorderedAck(seg)
    ) {
      this.#dropped++;
      this.#overtakenSack(seg, now);
      if (this.#oowReplyAllowed(seg, now)) this.#ackNow = true;
      this.#output(now);
      return;
    }

    if (this.state === S.SYN_RECEIVED && (flags & TCP_SYN) && seq === this.#irs) {
      if (!(flags & TCP_ACK)) {
        // The peer's SYN again: our SYN-ACK was lost.
        this.#sendSyn(now, true);
        return;
      }
      // Simultaneous open: the peer's SYN-ACK. Its SYN is old; keep the ACK.
      flags &= ~TCP_SYN;
      seq = seqAdd(seq, 1);
    }

    // Sequence acceptability (RFC 9293 §3.10.7.4, first check).
    const wnd = Math.max(0, seqDiff(this.#rcv.advEdge, this.#rcv.nxt));
    const segLen = payload.length + (flags & TCP_SYN ? 1 : 0) + (flags & TCP_FIN ? 1 : 0);
    let ok: boolean;
    if (payload.length === 0 && seq === this.#rcv.nxt) ok = true;
    else if (segLen === 0) {
      ok = wnd === 0
        ? seq === this.#rcv.nxt
        : seqGe(seq, this.#rcv.nxt) && seqLt(seq, seqAdd(this.#rcv.nxt, wnd));
    } else if (wnd === 0) ok = false;
    else {
      const last = seqAdd(seq, segLen - 1);
      const edge = seqAdd(this.#rcv.nxt, wnd);
      ok = (seqGe(seq, this.#rcv.nxt) && seqLt(seq, edge)) ||
        (seqGe(last, this.#rcv.nxt) && seqLt(last, edge));
    }
    if (!ok) {
      if (flags & TCP_RST) {
        this.#dropped++;
        return;
      }
      if (wnd === 0 && seq === this.#rcv.nxt && !(flags & TCP_SYN)) {
        // Zero window: keep the ACK and window information, drop the data.
        payload = EMPTY;
        flags &= ~TCP_FIN;
        this.#ackNow = true;
      } else {
        this.#dropped++;
        if (payload.length > 0 && seqLe(seqAdd(seq, payload.length), this.#rcv.nxt)) {
          // A duplicate of data we already have: report it (RFC 2883 §4.1.1).
          this.#setDsack(seq, seqAdd(seq, payload.length));
        }
        if (this.state === S.TIME_WAIT && (flags & TCP_FIN)) {
          // A retransmitted FIN: our last ACK was lost; restart 2·MSL.
          this.#timeWaitAt = now + this.#o.timeWait;
        }
        if (this.#oowReplyAllowed(seg, now)) this.#ackNow = true;
        this.#output(now);
        return;
      }
    }

    // RST (RFC 5961 §3.2): exact match resets; in window draws a challenge ACK.
    if (flags & TCP_RST) {
      if (this.state === S.TIME_WAIT) {
        // RFC 1337: a RST cannot take back a stream that both FINs ended
        // (e.g. one elicited by our duplicate ACK after the peer closed);
        // the reader keeps what it has not read yet.
        this.#dropped++;
      } else if (seq === this.#rcv.nxt) {
        const refused = this.state === S.SYN_RECEIVED;
        this.#terminate(
          refused
            ? new TcpError("ECONNREFUSED", "Connection refused by peer")
            : new TcpError("ECONNRESET", "Connection reset by peer"),
        );
      } else {
        this.#challengeAck(now);
      }
      return;
    }
    // SYN in a synchronized state (RFC 5961 §4.2): challenge ACK.
    if (flags & TCP_SYN) {
      this.#challengeAck(now);
      return;
    }
    if (!(flags & TCP_ACK)) {
      this.#dropped++;
      return;
    }

    // Trim to the window (data before RCV.NXT, data beyond the right edge).
    if (seqLt(seq, this.#rcv.nxt)) {
      const cut = seqDiff(this.#rcv.nxt, seq);
      if (payload.length > 0) this.#setDsack(seq, seqAdd(seq, Math.min(cut, payload.length)));
      payload = cut >= payload.length ? EMPTY : payload.subarray(cut);
      seq = this.#rcv.nxt;
    }
    const room = Math.max(0, seqDiff(this.#rcv.advEdge, seq));
    if (payload.length > room) {
      payload = payload.subarray(0, room);
      flags &= ~TCP_FIN;
    }

    // ACK acceptability (RFC 5961 §5.2).
    const ack = seg.ack;
    if (this.state === S.SYN_RECEIVED) {
      // RFC 9293 §3.10.7.4: an unacceptable ACK in SYN-RECEIVED draws <SEQ=SEG.ACK><RST>.
      if (!seqGt(ack, this.#sndUna) || seqGt(ack, this.#sndMax)) {
        this.#sendRst(ack, 0, false, now);
        return;
      }
      this.#establish(seg, seq, now);
    } else if (seqGt(ack, this.#sndMax)) {
      this.#ackNow = true;
      this.#output(now);
      return;
    } else if (seqLt(ack, (this.#sndUna - this.#maxSndWnd - 1) >>> 0)) {
      this.#challengeAck(now);
      return;
    }

    // Timestamps (RFC 7323 §4.3): remember TSval of the segment at the left edge.
    if (
      this.#tsOk && seg.hasTimestamp && seqLe(seg.seq, this.#lastAckSent) &&
      seqGe(seg.tsVal, this.#tsRecent)
    ) {
      this.#tsRecent = seg.tsVal;
    }

    this.#processAck(seg, seq, payload.length, flags, now);
    if (this.#isClosed()) return;

    const receiving = this.state === S.ESTABLISHED || this.state === S.FIN_WAIT_1 ||
      this.state === S.FIN_WAIT_2;
    if (payload.length > 0 && receiving) {
      if (this.#tsOk && seg.hasTimestamp && seg.tsEcr !== 0) {
        // Receiver RTT (RFC 7323 §4 style): time since we sent the echoed TSval.
        this.#rcv.rttSample(Math.max(1, seqDiff(this.#tsNow(now), seg.tsEcr)));
      }
      this.#receiveData(seq, payload);
    }
    if ((flags & TCP_FIN) && !this.#finReceived) {
      const finSeq = seqAdd(seq, payload.length);
      if (finSeq === this.#rcv.nxt) this.#receiveFin(now);
      else if (receiving && seqGt(finSeq, this.#rcv.nxt)) this.#oooFinSeq = finSeq;
    }
    this.#output(now);
  }

  /**
   * A pure duplicate ACK (SEQ = RCV.NXT, ACK = SND.UNA, no larger window) whose
   * timestamp is older than TS.Recent by less than an RTO: overtaken on the
   * path, not a wrapped old segment.
   */
  #disorderedAck(seg: TcpRepr): boolean {
    return this.#overtakenAck(seg) && seg.seq === this.#rcv.nxt && seg.ack === this.#sndUna &&
      (seg.window << this.#sndShift) <= this.#sndWnd;
  }

  /** A pure ACK whose timestamp is older than TS.Recent by less than an RTO. */
  #overtakenAck(seg: TcpRepr): boolean {
    return seg.payload.length === 0 && (seg.flags & (TCP_SYN | TCP_FIN | TCP_ACK)) === TCP_ACK &&
      seqDiff(this.#tsRecent, seg.tsVal) <= this.#rtt.rto;
  }

  /**
   * The SACK blocks of an ACK that PAWS refuses because a later ACK overtook
   * it on the path (its timestamp is older by less than an RTO): with
   * reordering, only the later ACK's three blocks would be seen and the
   * islands this one reported would be taken for losses. Only the SACK
   * information is used (RFC 2018 blocks are validated as usual); the ACK,
   * window and timestamp are not.
   */
  #overtakenSack(seg: TcpRepr, now: number): void {
    const lr = this.#lr;
    if (
      !lr || lr.size === 0 || !this.#sackOk || seg.sackCount === 0 ||
      seqGt(seg.ack, this.#sndUna) || !this.#overtakenAck(seg)
    ) return;
    lr.echoedAt = -1;
    lr.onAck(seg.ack, seg.sackBlocks, seg.sackCount, this.#sndUna, this.#sndMax, now, ACK_RESULT);
  }

  /**
   * Whether to answer an unacceptable segment with an ACK. Segments with data,
   * SYN or FIN are always answered (the peer needs our ACK); a pure ACK is
   * answered at most every 500 ms, so two confused ends cannot ping-pong ACKs.
   */
  #oowReplyAllowed(seg: TcpRepr, now: number): boolean {
    if (seg.payload.length > 0 || (seg.flags & (TCP_SYN | TCP_FIN))) return true;
    if (now - this.#oowAckAt < 500) return false;
    this.#oowAckAt = now;
    return true;
  }

  #challengeAck(now: number): void {
    // At most 10 challenge ACKs per second per connection (RFC 5961 §7); a
    // per-connection budget leaks nothing about other connections.
    if (now - this.#challengeStart >= 1000) {
      this.#challengeStart = now;
      this.#challengeBudget = 10;
    }
    if (this.#challengeBudget <= 0) {
      this.#dropped++;
      return;
    }
    this.#challengeBudget--;
    this.#challengeAcks++;
    this.#ackNow = true;
    this.#output(now);
  }

  #inputSynSent(seg: TcpRepr, now: number): void {
    const f = seg.flags;
    if (f & TCP_ACK) {
      // RFC 9293 §3.10.7.3: the ACK must cover our SYN and nothing more.
      if (!seqGt(seg.ack, this.#iss) || seqGt(seg.ack, this.#sndMax)) {
        if (!(f & TCP_RST)) this.#sendRst(seg.ack, 0, false, now);
        this.#dropped++;
        return;
      }
    }
    if (f & TCP_RST) {
      if (f & TCP_ACK) {
        this.#terminate(new TcpError("ECONNREFUSED", "Connection refused"));
      } else this.#dropped++;
      return;
    }
    if (!(f & TCP_SYN)) {
      this.#dropped++;
      return;
    }
    this.#irs = seg.seq;
    this.#rcv.start(seqAdd(seg.seq, 1), now);
    this.#applySynOptions(seg);
    if (f & TCP_ACK) {
      this.#establish(seg, seg.seq, now);
      this.#ackNow = true;
    } else {
      // Simultaneous open (RFC 9293 §3.5, figure 7).
      this.state = S.SYN_RECEIVED;
      this.#sendSyn(now, true);
    }
  }

  /** SYN-ACK exchange finished: the connection is ESTABLISHED. */
  #establish(seg: TcpRepr, seq: number, now: number): void {
    this.state = S.ESTABLISHED;
    // The ACK of our SYN counts as the first RTT sample when not retransmitted.
    if (this.#retries === 0) {
      if (this.#tsOk && seg.hasTimestamp && seg.tsEcr !== 0) {
        this.#rtt.sample(Math.max(0, seqDiff(this.#tsNow(now), seg.tsEcr)));
      }
      this.#rcv.rtt = Math.max(1, now - this.#synAt);
    }
    this.#retries = 0;
    this.#rtt.resetBackoff();
    this.#sndUna = seqAdd(this.#iss, 1);
    if (seqLt(this.#sndNxt, this.#sndUna)) this.#sndNxt = this.#sndUna;
    this.#sndWnd = seg.window << (seg.flags & TCP_SYN ? 0 : this.#sndShift);
    this.#maxSndWnd = this.#sndWnd;
    this.#sndWl1 = seq;
    this.#sndWl2 = seg.ack;
    this.#rtoAt = Infinity;
    this.#cc.setMss(this.#dataMss());
    this.#cc.cwnd = Math.min(10 * this.#dataMss(), Math.max(2 * this.#dataMss(), 14600));
    if (this.#o.keepAlive) this.#keepaliveAt = now + this.#o.keepAlive.idle;
  }

  /** Payload bytes per full segment (MSS minus the timestamp option). */
  #dataMss(): number {
    return this.#sndMss - (this.#tsOk ? 12 : 0);
  }

  #processAck(seg: TcpRepr, seq: number, payloadLen: number, flags: number, now: number): void {
    const ack = seg.ack;
    const una = this.#sndUna;
    const wasWnd = this.#sndWnd;
    const newWnd = seg.window << this.#sndShift;
    const lr = this.#lr;
    const mss = this.#dataMss();
    if (lr && lr.size > 0) {
      const res = ACK_RESULT;
      const sack = this.#sackOk && seg.sackCount > 0;
      // When the echoed TSval was sent (ms), to tell an ACK of an original
      // from one of its retransmission (RFC 8985 §6.2 step 2).
      lr.echoedAt = this.#tsOk && seg.hasTimestamp && seg.tsEcr !== 0
        ? Math.floor(now) - seqDiff(this.#tsNow(now), seg.tsEcr)
        : -1;
      lr.onAck(
        ack,
        sack ? seg.sackBlocks : NO_BLOCKS,
        sack ? seg.sackCount : 0,
        una,
        this.#sndMax,
        now,
        res,
      );
      if (res.dsackRetrans > 0) this.#spuriousRetransmits += res.dsackRetrans;
      // Without timestamps, RTT from the records (Karn: never a retransmission).
      if (!this.#tsOk && lr.ackRtt >= 0) this.#rtt.sample(lr.ackRtt);
      if (seqGt(ack, una)) {
        this.#ackAdvance(ack, seg, res, now);
        if (this.state === S.CLOSED || this.state === S.TIME_WAIT) return;
      } else if (
        ack === una && payloadLen === 0 && !(flags & (TCP_SYN | TCP_FIN)) &&
        newWnd === wasWnd && newWnd > 0 && !sack
      ) {
        // Duplicate ACK (RFC 5681 §2) from a peer without SACK: one segment left the network.
        this.#dupAcks++;
        lr.renoSacked = Math.min(this.#dupAcks * mss, lr.outBytes);
      }
      if (
        this.#frto !== 0 &&
        (seqGt(ack, una) ||
          (payloadLen === 0 && !(flags & (TCP_SYN | TCP_FIN)) && newWnd === wasWnd))
      ) {
        // An ACK that advances SND.UNA, or a duplicate ACK (RFC 5681 §2).
        this.#frtoStep(seqGt(ack, una) ? seqDiff(ack, una) : 0, now);
      }
      // Spurious retransmissions shown by DSACK (RFC 3708): undo once all of
      // the episode's retransmissions came back as duplicates.
      if (res.dsackRetrans > 0 && lr.undoMarker >= 0 && lr.undoRetrans === 0) {
        this.#undo(now);
      }
      // Tail loss probe outcome (RFC 8985 §7.4).
      if (this.#tlpEnd >= 0) {
        if (res.dsack) this.#tlpEnd = -1; // the probe was a duplicate: nothing was lost
        else if (seqGe(ack, this.#tlpEnd)) {
          if (this.#tlpRetrans && !this.#inRecovery && !this.#inLoss && !this.#cc.modelBased) {
            // The probe repaired a loss: respond as fast recovery would.
            this.#cc.onCongestion(lr.inFlight, now);
            this.#cc.cwnd = Math.max(this.#cc.ssthresh, 2 * mss);
          }
          this.#tlpEnd = -1;
        }
      }
      const lost = this.#detectLoss(now);
      this.#afterAck(res, lost, now);
    } else if (seqGt(ack, una)) {
      this.#ackAdvance(ack, seg, null, now);
    }

    // Send window update (RFC 9293 §3.10.7.4, fifth check).
    if (
      seqLt(this.#sndWl1, seq) || (this.#sndWl1 === seq && seqLe(this.#sndWl2, ack))
    ) {
      this.#sndWnd = newWnd;
      this.#sndWl1 = seq;
      this.#sndWl2 = ack;
      if (newWnd > this.#maxSndWnd) this.#maxSndWnd = newWnd;
      if (newWnd > 0) {
        this.#persistAt = Infinity;
        this.#persistBackoff = 0;
        // A write held back while the window was closed (see #take) may go on.
        if (this.#pendingWrite && this.budget) this.#fillFromPendingWrite();
        if (this.#probeOut && ack === this.#sndUna && lr && lr.size === 1) {
          // The window opened without taking the probe byte: it goes again as
          // part of the data that follows.
          lr.clear();
          this.#sndNxt = this.#sndUna;
        }
        this.#probeOut = false;
      }
    }
    this.#probesUnanswered = 0;
  }

  /**
   * Loss detection after an ACK: RACK (RFC 8985) with SACK, else the
   * duplicate-ACK threshold (learned, not fixed at 3) and NewReno's partial
   * ACK rule. Returns the bytes newly marked lost.
   */
  #detectLoss(now: number): number {
    const lr = this.#lr!;
    const mss = this.#dataMss();
    let lost = 0;
    // While F-RTO judges a timeout, its two ACKs decide (RACK would take the
    // ambiguous ACK of the retransmitted first segment for news).
    if (this.#frto !== 0) return 0;
    if (this.#sackOk) {
      const reo = lr.reoWnd(
        this.#inRecovery || this.#inLoss,
        mss,
        this.#rtt.srtt,
        this.#rtt.rttvar,
      );
      lost = lr.detectLoss(now, reo, REO_TIMER);
      this.#reoAt = REO_TIMER[0] > 0 ? now + REO_TIMER[0] : Infinity;
    } else if (this.#dupAcks >= this.#dupThresh && !this.#inRecovery && !this.#inLoss) {
      lost = lr.markHeadLost();
    }
    return lost;
  }

  /** Recovery state and window after an ACK's loss detection. */
  #afterAck(res: AckResult, lost: number, now: number): void {
    const lr = this.#lr!;
    const mss = this.#dataMss();
    const cc = this.#cc;
    if (lost > 0 && !this.#inRecovery && !this.#inLoss) this.#enterRecovery(now);
    if (this.#inRecovery) {
      if (seqGe(this.#sndUna, this.#recover)) {
        // Full ACK: leave recovery (RFC 6675 §5; RFC 6937: cwnd = ssthresh).
        this.#inRecovery = false;
        this.#dupAcks = 0;
        if (!cc.modelBased && this.#prrActive) cc.cwnd = Math.max(cc.ssthresh, mss);
        cc.onRecoveryEnd(now);
        lr.recoveryEnded();
      } else {
        if (!this.#sackOk && res.acked > 0) {
          // NewReno partial ACK (RFC 6582 §3.2 step 5): the next segment is lost too.
          lr.markHeadLost();
        }
        if (!cc.modelBased && this.#prrActive) {
          cc.cwnd = lr.prrWindow(res.delivered, cc.ssthresh, mss);
        }
      }
    } else if (this.#inLoss && seqGe(this.#sndUna, this.#recover)) {
      this.#inLoss = false;
      cc.onRecoveryEnd(now);
    }
    const rs = lr.rateSample(lost);
    if (!this.#inRecovery && res.acked > 0 && rs.priorInFlight * 2 >= cc.cwnd) {
      // Grow only while the window is actually used (RFC 7661 spirit).
      cc.onAck(res.acked, this.#rtt.srtt, now);
    }
    if (res.delivered > 0) cc.onRateSample(rs, now);
  }

  #enterRecovery(now: number): void {
    const lr = this.#lr!;
    this.#inRecovery = true;
    this.#fastRecoveries++;
    const reduce = seqGe(this.#sndUna, this.#recover);
    this.#recover = this.#sndMax;
    // RFC 6582 §3.2 / RFC 6675 §5: losses among data sent before the last
    // episode was repaired do not reduce the window again.
    this.#prrActive = reduce;
    if (!reduce) return;
    this.#startEpisode(now);
    this.#cc.onCongestion(lr.inFlight, now);
    lr.prrStart();
  }

  /** Saves what undo restores, at the start of a recovery or timeout episode. */
  #startEpisode(now: number): void {
    this.#undoCwnd = this.#cc.cwnd;
    this.#undoSsthresh = this.#cc.ssthresh;
    this.#lr!.startEpisode(this.#sndUna, now);
    // Eifel detection (RFC 3522): judged on the first segment retransmitted in
    // this episode that is cumulatively acknowledged (recovery.ts compares
    // the echoed timestamp with that retransmission's).
    this.#undoPossible = this.#tsOk;
  }

  /**
   * The episode's retransmissions were spurious (Eifel, DSACK): restore the
   * window (RFC 3522 / RFC 4015 response), forget loss marks that were not
   * acted on yet, and learn the reordering.
   */
  #undo(now: number): void {
    const lr = this.#lr!;
    const cc = this.#cc;
    this.#spuriousRecoveries++;
    const wasRecovering = this.#inRecovery || this.#inLoss;
    this.#inRecovery = false;
    this.#inLoss = false;
    if (cc instanceof Bbr) {
      // The model restores what it saved (HandleSpuriousLossDetection).
      cc.onSpuriousLoss(now);
    } else {
      cc.cwnd = Math.max(cc.cwnd, this.#undoCwnd);
      cc.ssthresh = Math.max(cc.ssthresh, this.#undoSsthresh);
      if (wasRecovering) cc.onRecoveryEnd(now);
    }
    if (wasRecovering) lr.recoveryEnded();
    if (!this.#sackOk) {
      // Learn the reordering degree (as Linux's tp->reordering for Reno).
      this.#dupThresh = Math.min(MAX_DUP_THRESH, Math.max(this.#dupThresh + 1, this.#dupAcks + 1));
    }
    lr.reorderingSeen = true;
    lr.unmarkLost();
    lr.endEpisode();
    this.#undoPossible = false;
  }

  #ackAdvance(ack: number, seg: TcpRepr, res: AckResult | null, now: number): void {
    let acked = seqDiff(ack, this.#sndUna);
    if (this.#finSent && !this.#finAcked && seqGt(ack, this.#finSeq)) {
      this.#finAcked = true;
      acked -= 1;
    }
    const buf = this.#sendBuf;
    if (buf && acked > 0) this.#dropSent(buf, acked);
    this.#sndUna = ack;
    this.#probeOut = false;
    if (seqLt(this.#sndNxt, ack)) this.#sndNxt = ack;
    this.#lr?.unaAdvanced(ack);

    // RTT from timestamps (RFC 7323 §4.1); without them from the rate sample.
    if (this.#tsOk && seg.hasTimestamp && seg.tsEcr !== 0) {
      // Karn's rule for timestamps: after a retransmission, an echo older than
      // it may belong to an ACK-less stretch long ago (the receiver does not
      // take TSval from duplicates); only echoes of newer segments count.
      if (this.#rexmitTs < 0 || seqGe(seg.tsEcr, this.#rexmitTs)) {
        this.#rtt.sample(Math.max(0, seqDiff(this.#tsNow(now), seg.tsEcr)));
      }
    }
    this.#retries = 0;
    this.#rtt.resetBackoff();

    if (this.#undoPossible && res && res.eifel !== 0) {
      this.#undoPossible = false;
      // The ACK of a segment retransmitted in this episode echoes the
      // original's TSval: the original arrived, the "loss" was reordering or
      // delay (RFC 3522 §2; for timeouts RFC 4015).
      if (res.eifel === 2 && (this.#inRecovery || this.#inLoss)) this.#undo(now);
    }
    const lr = this.#lr;
    if (lr && this.#inRecovery && !this.#sackOk) {
      // A partial ACK covers the retransmission and some of the segments the
      // duplicate ACKs announced (as Linux's tcp_remove_reno_sacks).
      lr.renoSacked = Math.max(0, lr.renoSacked - Math.max(0, acked - this.#dataMss()));
    } else {
      this.#dupAcks = 0;
      if (lr) lr.renoSacked = 0;
    }
    if (this.#sndUna === this.#sndMax) this.#rexmitTs = -1;
    this.#rtoAt = this.#sndUna === this.#sndMax ? Infinity : now + this.#rtt.rto;
    if (this.#sndUna === this.#sndMax) this.#tlpAt = this.#reoAt = Infinity;
    else this.#armProbe(now);

    // Grow the send buffer when the path can use more (up to maxSendBuffer).
    const pathWindow = Math.min(this.#cc.cwnd, this.#sndWnd);
    if (this.#sendLimit < this.#o.maxSendBuffer && pathWindow * 2 > this.#sendLimit) {
      this.#sendLimit = Math.min(this.#o.maxSendBuffer, this.#sendLimit * 2);
      if (buf) buf.limit = this.#sendLimit;
    }
    this.#fillFromPendingWrite();

    if (this.#finAcked) {
      if (this.state === S.FIN_WAIT_1) {
        this.state = S.FIN_WAIT_2;
        // Nobody reads any more: do not wait forever for the peer's FIN.
        if (this.#rcv.discard) this.#timeWaitAt = now + this.#o.timeWait;
      } else if (this.state === S.CLOSING) this.#enterTimeWait(now);
      else if (this.state === S.LAST_ACK) this.#terminate(null);
    }
  }

  /**
   * Arms the tail loss probe (RFC 8985 §7.2): SACK connection, no RTO
   * recovery, no probe outstanding, data in flight. PTO = 2·SRTT (+ a
   * worst-case delayed ACK when one segment is out), never beyond the RTO.
   * In fast recovery it arms the recovery probe instead (`#recoveryProbe`).
   */
  #armProbe(now: number): void {
    const lr = this.#lr;
    if (
      !this.#sackOk || this.#inLoss || (this.#tlpEnd >= 0 && !this.#inRecovery) || !lr ||
      lr.outBytes === 0
    ) {
      this.#tlpAt = Infinity;
      return;
    }
    const srtt = this.#rtt.srtt;
    let pto = srtt > 0 ? Math.max(2 * srtt, 10) : 1000;
    if (lr.size === 1) pto += WC_DEL_ACK;
    this.#tlpAt = Math.min(now + pto, this.#rtoAt);
  }

  #receiveData(seq: number, payload: Uint8Array): void {
    const rcv = this.#rcv;
    const before = rcv.nxt;
    const refused = rcv.refused;
    const what = rcv.accept(seq, payload, this.#owner.lastNow, this.#rtt.srtt);
    if (rcv.refused !== refused) this.#dropped++;
    if (rcv.grew) {
      rcv.grew = false;
      this.#windowUpdate = true;
    }
    if (what === Accepted.OUT_OF_ORDER) {
      this.#ackNow = true; // duplicate ACK with SACK blocks
      return;
    }
    this.#bytesIn += seqDiff(rcv.nxt, before);
    this.#unackedSegs++;
    // At once when a hole was filled or out-of-order data remains (RFC 5681
    // §4.2). Otherwise the reader is fed, and the ACK owed for every second
    // segment (RFC 5681 §4.2) sent, at the end of the batch of input this
    // segment came in (`endBatch`): a batch draws one cumulative ACK and one
    // read, however many in-order segments it brought.
    if (what === Accepted.FILLED || this.#o.delayedAck === 0) this.#ackNow = true;
    else if (this.#delackAt === Infinity) {
      this.#delackAt = this.#owner.lastNow + this.#o.delayedAck;
    }
    this.#owner.deferToBatchEnd(this);
    if (this.#oooFinSeq >= 0 && this.#oooFinSeq === rcv.nxt) {
      this.#oooFinSeq = -1;
      this.#receiveFin(this.#owner.lastNow);
    }
  }

  /** A read is waiting and data is queued: hand it over. */
  #feedReader(): void {
    if (!this.#pullWaiting || this.#readDone) return;
    const chunk = this.#rcv.take();
    if (!chunk) return;
    this.#pullWaiting = false;
    this.#readCtrl.enqueue(chunk);
  }

  #receiveFin(now: number): void {
    this.#finReceived = true;
    this.#rcv.nxt = seqAdd(this.#rcv.nxt, 1);
    this.#rcv.end();
    this.#ackNow = true;
    if (!this.#readDone && this.#rcv.queued === 0 && !this.#rcv.discard) {
      this.#readDone = true;
      this.#pullWaiting = false;
      this.#closeReadable();
    }
    switch (this.state) {
      case S.SYN_RECEIVED:
      case S.ESTABLISHED:
        this.state = S.CLOSE_WAIT;
        break;
      case S.FIN_WAIT_1:
        if (this.#finAcked) this.#enterTimeWait(now);
        else this.state = S.CLOSING;
        break;
      case S.FIN_WAIT_2:
        this.#enterTimeWait(now);
        break;
    }
  }

  #enterTimeWait(now: number): void {
    this.state = S.TIME_WAIT;
    this.#timeWaitAt = now + this.#o.timeWait;
    this.#rtoAt = this.#persistAt = this.#keepaliveAt = Infinity;
    this.#freeSendBuffer();
    this.#rcv.dropReassembly();
    this.#settle();
    this.#tlpAt = this.#reoAt = this.#paceAt = Infinity;
    this.#finishStreams();
    this.#resolveClosed();
    this.#owner.enteredTimeWait(this);
  }

  /** Keeps only the last figures of the congestion controller and the loss recovery (TIME_WAIT). */
  #settle(): void {
    const cc = this.#cc;
    if (cc instanceof SettledCc) return;
    const lr = this.#lr;
    this.#cc = new SettledCc(
      cc,
      this.#congestionState(),
      cc instanceof Bbr ? cc.bw : 0,
      lr ? lr.dsacks : 0,
      lr ? lr.reoWndMult : 1,
      lr ? lr.minRtt : 0,
    );
    this.#lr = null;
  }

  #congestionState(): string {
    const cc = this.#cc;
    if (cc instanceof Bbr || cc instanceof SettledCc) return cc.state;
    return this.#inRecovery ? "recovery" : this.#inLoss ? "loss" : "open";
  }

  // ---------------------------------------------------------------- output

  /** Sends what is due: retransmissions, new data, FIN, ACKs and window updates. */
  #output(now: number): void {
    const st = this.state;
    if (st === S.CLOSED) return;
    if (this.#abortQueued) {
      this.#abortQueued = false;
      this.#sendRst(this.#sndNxt, 0, false, now);
      this.#terminate(new TcpError("ECONNABORTED", "Connection aborted"));
      return;
    }
    if (this.#delackAt <= now) this.#ackNow = true;
    // An ACK goes out before the batch ends: a waiting reader takes what the
    // batch queued first, so that the window it advertises counts it as read.
    if (this.#ackNow && this.batched) this.#feedReader();
    if (this.#windowUpdate) {
      this.#windowUpdate = false;
      if (this.#rcv.updateWorthSending()) this.#ackNow = true;
    }
    if (st === S.SYN_SENT || st === S.SYN_RECEIVED || st === S.TIME_WAIT) {
      if (this.#ackNow && st !== S.SYN_SENT) this.#sendControl(TCP_ACK, this.#ackSeq(), now);
      return;
    }
    let sent = 0;
    const canSend = !this.#finAcked;
    while (canSend && sent < 1024) {
      if (!this.#sendOne(now)) break;
      sent++;
    }
    const lr = this.#lr;
    if (lr && lr.lostPending === 0 && this.#pipe() < this.#cc.cwnd) {
      // Nothing more to send while the window has room: rate samples from now
      // on are application-limited (delivery-rate draft §3.4). So are they
      // while the peer's window holds back data that cwnd would let go (as
      // QUIC senders count flow-control blocking): they measure the
      // receiver, not the path. Measured through wireguard-go at 5 % loss and
      // 50 ms, a Linux client's window of 64–112 KB kept the first rounds at
      // 4–5 Mbit/s, and BBR's Startup took that for a full pipe.
      const unsent = this.#unsentBytes();
      if (
        unsent === 0 ||
        // (The window itself, not room that data above a hole takes up:
        // loss clogs the window too, and that is the path's doing.)
        (this.#sndWnd < this.#cc.cwnd && this.#peerWindowRoom() < Math.min(unsent, this.#sndMss))
      ) {
        lr.markAppLimited();
      }
    }
    if (this.#ackNow) this.#sendControl(TCP_ACK, this.#ackSeq(), now);
    // Persist timer: data waiting, peer window zero, nothing in flight.
    const pending = this.#unsentBytes() > 0 || (this.#finQueued && !this.#finSent);
    if (
      pending && this.#sndWnd === 0 && this.#sndMax === this.#sndUna &&
      this.#persistAt === Infinity
    ) {
      this.#persistAt = now + Math.min(this.#o.maxRto, this.#rtt.rto * 2 ** this.#persistBackoff);
    }
    // Whatever is in flight is timed: by the RTO, or by the persist timer
    // while the window is shut. (A window that shut on data in flight and
    // opened again without SND.UNA moving left neither: the connection
    // waited for a packet that might never come.)
    if (
      this.#sndMax !== this.#sndUna && this.#rtoAt === Infinity && this.#persistAt === Infinity
    ) {
      this.#rtoAt = now + this.#rtt.rto;
    }
  }

  /** Bytes the peer's window still takes beyond SND.NXT. */
  #peerWindowRoom(): number {
    return this.#sndWnd - seqDiff(this.#sndNxt, this.#sndUna);
  }

  #unsentBytes(): number {
    const buf = this.#sendBuf;
    if (!buf) return 0;
    return buf.length - seqDiff(this.#sndNxt, this.#sndUna);
  }

  /** Bytes in flight (RFC 6675 "pipe" as Linux counts it). */
  #pipe(): number {
    return this.#lr ? this.#lr.inFlight : 0;
  }

  /**
   * Pacing (for controllers that set a rate, BBR): true when a segment of
   * `len` bytes may go now. Tokens accrue at the pacing rate up to a quantum
   * of {@linkcode PACING_QUANTUM_MS} of sending (at least two segments, at
   * most 256 KiB): the server's timers fire about every 2 ms at best (nested
   * `setTimeout`, measured), so each wake-up releases what accrued since the
   * last one instead of one segment.
   */
  #paceAllows(len: number, now: number): boolean {
    const rate = this.#cc.pacingRate;
    if (!(rate > 0)) return true;
    const quantum = Math.min(262144, Math.max(2 * this.#dataMss(), rate * PACING_QUANTUM_MS));
    this.#paceTokens = Math.min(quantum, this.#paceTokens + (now - this.#paceLast) * rate);
    this.#paceLast = now;
    if (this.#paceTokens > 0 || this.#paceTokens >= len) return true;
    this.#paceAt = now + Math.max(0.05, (1 - this.#paceTokens) / rate);
    return false;
  }

  #paced(len: number): void {
    if (this.#cc.pacingRate > 0) this.#paceTokens -= len;
    this.#paceAt = Infinity;
  }

  /** Sends one segment if allowed; returns false when nothing (more) can go. */
  #sendOne(now: number): boolean {
    const buf = this.#sendBuf;
    const bufLen = buf ? buf.length : 0;
    const mss = this.#dataMss() - this.#sackOptionLength();
    const cwnd = this.#cc.cwnd;
    const lr = this.#lr;

    // 1. Segments marked lost (RACK, duplicate ACKs, timeout), in sequence order.
    const lost = lr ? lr.nextLost() : null;
    if (lost) {
      // (A timeout's own retransmission, F-RTO's included, goes whatever the
      // rest in flight says.)
      if (
        this.#pipe() + Math.min(lost.length, mss) > cwnd && this.#pipe() > 0 && !this.#rtoResend
      ) {
        return false;
      }
      if (!this.#paceAllows(lost.length, now)) return false;
      this.#rtoResend = false;
      this.#resend(lost, mss, now);
      return true;
    }
    // 2. New data at SND.NXT.
    const offset = seqDiff(this.#sndNxt, this.#sndUna);
    const avail = bufLen - offset;
    const wndRoom = this.#sndWnd - offset;
    let len = Math.min(avail, mss, wndRoom);
    if (len < 0) len = 0;
    if (len > 0) {
      if (len > cwnd - this.#pipe()) return false;
      if (len < mss && len < avail) {
        // Sender SWS avoidance (RFC 9293 §3.8.6.2.1).
        const idle = this.#sndNxt === this.#sndUna;
        if (!(len >= this.#maxSndWnd / 2 || (idle && len === wndRoom))) return false;
      }
      if (this.#o.nagle && len < mss && this.#sndNxt !== this.#sndUna && !this.#finQueued) {
        return false;
      }
      if (!this.#paceAllows(len, now)) return false;
      this.#sendNew(len, now);
      return true;
    }
    // 3. A lone FIN once all data is out.
    if (this.#finQueued && avail === 0 && !this.#finSent) {
      this.#sendNew(0, now);
      return true;
    }
    return false;
  }

  /** Sends `len` new bytes at SND.NXT (plus FIN when closing and they end the buffer). */
  #sendNew(len: number, now: number): void {
    const seq = this.#sndNxt;
    const was = this.#lr;
    if (this.#cc instanceof Bbr && was && was.inFlight === 0 && was.appLimited !== 0) {
      // Restart after idle (BBR §5.4): pace at the estimated rate, not above.
      this.#cc.onIdleRestart(now);
    }
    const fin = this.#sendData(seq, len, now);
    const end = seqAdd(seq, len + (fin ? 1 : 0));
    const lr = this.#lr ??= new LossRecovery({ sack: this.#sackOk });
    lr.sent(seq, end, fin, now);
    this.#sndNxt = end;
    if (seqGt(end, this.#sndMax)) this.#sndMax = end;
    if (this.#inRecovery) lr.prrSent(len);
    this.#paced(len);
    if (this.#rtoAt === Infinity) this.#rtoAt = now + this.#rtt.rto;
    if (this.#tlpAt === Infinity) this.#armProbe(now);
  }

  /** Sends the record `rec` again (in MSS pieces if the MSS shrank since). */
  #resend(rec: SentSegment, mss: number, now: number): void {
    const lr = this.#lr!;
    const dataEnd = rec.fin ? seqAdd(rec.end, -1) : rec.end;
    let at = rec.start;
    do {
      const len = Math.min(mss, Math.max(0, seqDiff(dataEnd, at)));
      this.#sendData(at, len, now);
      at = seqAdd(at, len);
      if (this.#inRecovery) lr.prrSent(len);
      this.#paced(len);
    } while (seqLt(at, dataEnd));
    lr.retransmitted(rec, now);
    this.#retransmits++;
    this.#rexmitTs = this.#tsNow(now);
    if (this.#rtoAt === Infinity) this.#rtoAt = now + this.#rtt.rto;
    if (this.#tlpAt === Infinity && this.#inRecovery) this.#armProbe(now);
  }

  #sackOptionLength(): number {
    if (!this.#sackOk) return 0;
    const blocks = this.#rcv.blockCount(this.#tsOk ? 3 : 4);
    return blocks === 0 ? 0 : 4 + 8 * blocks;
  }

  /** A duplicate segment arrived: DSACK it in the next ACK (RFC 2883). */
  #setDsack(left: number, right: number): void {
    if (!this.#sackOk) return;
    this.#rcv.noteDuplicate(left, right);
    this.#ackNow = true;
  }

  /**
   * Emits `len` bytes at `seq`, plus FIN when they end the buffer and we are
   * closing; returns whether the FIN went. Records are kept by the callers.
   */
  #sendData(seq: number, len: number, now: number): boolean {
    const bufLen = this.#sendBuf ? this.#sendBuf.length : 0;
    const offset = seqDiff(seq, this.#sndUna);
    const fin = this.#finQueued && offset + len === bufLen;
    let flags = TCP_ACK;
    if (fin) flags |= TCP_FIN;
    if (len > 0 && offset + len === bufLen) flags |= TCP_PSH;
    this.#emit(flags, seq, offset, len, now);
    if (fin && !this.#finSent) {
      this.#finSent = true;
      this.#finSeq = seqAdd(seq, len);
      if (this.state === S.ESTABLISHED) this.state = S.FIN_WAIT_1;
      else if (this.state === S.CLOSE_WAIT) this.state = S.LAST_ACK;
    }
    this.#persistAt = Infinity;
    return fin;
  }

  /**
   * The sequence number of a pure ACK: SND.MAX when the peer's window covers
   * it, else SND.NXT. After a timeout SND.NXT falls back to SND.UNA while the
   * peer may already hold bytes up to SND.MAX; an ACK below its RCV.NXT would
   * be unacceptable there, and its ACK field ignored.
   */
  #ackSeq(): number {
    return seqLe(this.#sndMax, seqAdd(this.#sndUna, this.#sndWnd)) ? this.#sndMax : this.#sndNxt;
  }

  #sendControl(flags: number, seq: number, now: number): void {
    this.#emit(flags, seq, 0, 0, now);
  }

  /** Builds and sends a non-SYN segment; every one carries ACK except a bare RST. */
  #emit(flags: number, seq: number, offset: number, len: number, now: number): void {
    const r = this.#owner.scratch;
    r.clear();
    r.srcPort = this.localPort;
    r.dstPort = this.remotePort;
    r.seq = seq;
    r.flags = flags;
    if (flags & TCP_ACK) {
      r.ack = this.#rcv.nxt;
      r.window = this.#rcv.advertise();
    }
    if (this.#tsOk) {
      r.hasTimestamp = true;
      r.tsVal = this.#tsNow(now);
      r.tsEcr = this.#tsRecent;
    }
    if (this.#sackOk && (flags & TCP_ACK)) {
      r.sackCount = this.#rcv.writeBlocks(r.sackBlocks, this.#tsOk ? 3 : 4);
    }
    this.#transmit(r, this.#sendBuf, offset, len);
    this.#bytesOut += len;
    if (flags & TCP_ACK) {
      this.#ackNow = false;
      this.#unackedSegs = 0;
      this.#delackAt = Infinity;
      this.#lastAckSent = this.#rcv.nxt;
    }
  }

  #transmit(r: TcpRepr, buf: SendBuffer | null, offset: number, len: number): void {
    const hl = tcpHeaderLength(r);
    // Built in place in the IP layer's output buffer where the owner offers
    // one (no allocation or copy per segment); else in a buffer of its own.
    const room = this.#owner.segmentBuffer?.(this, hl + len);
    const out = room ? room.subarray(0, hl + len) : new Uint8Array(hl + len);
    writeTcpHeader(r, out, hl);
    if (len > 0 && buf) buf.copyOut(offset, out, hl, len);
    fillTcpChecksum(out, this.localAddress, this.remoteAddress);
    this.#segsOut++;
    this.#owner.transmit(this, out);
  }

  #sendRst(seq: number, ack: number, withAck: boolean, now: number): void {
    const r = this.#owner.scratch;
    r.clear();
    r.srcPort = this.localPort;
    r.dstPort = this.remotePort;
    r.seq = seq;
    r.ack = ack;
    r.flags = TCP_RST | (withAck ? TCP_ACK : 0);
    if (this.#tsOk && withAck) {
      r.hasTimestamp = true;
      r.tsVal = this.#tsNow(now);
      r.tsEcr = this.#tsRecent;
    }
    this.#transmit(r, null, 0, 0);
  }

  // ---------------------------------------------------------------- timers

  /** The earliest timer of this connection (ms), or Infinity. */
  deadline(): number {
    return Math.min(
      this.#rtoAt,
      this.#tlpAt,
      this.#reoAt,
      this.#paceAt,
      this.#persistAt,
      this.#delackAt,
      this.#timeWaitAt,
      this.#keepaliveAt,
    );
  }

  /** Runs due timers and flushes queued work. */
  poll(now: number): void {
    if (this.state === S.CLOSED) return;
    if (this.#timeWaitAt <= now) {
      this.#terminate(null);
      return;
    }
    if (this.#rtoAt <= now) {
      this.#onRto(now);
      if (this.#isClosed()) return;
    }
    if (this.#reoAt <= now) this.#onReorderTimer(now);
    if (this.#tlpAt <= now) this.#onProbeTimer(now);
    if (this.#paceAt <= now) this.#paceAt = Infinity;
    if (this.#persistAt <= now) {
      this.#onPersist(now);
      if (this.#isClosed()) return;
    }
    if (this.#keepaliveAt <= now) {
      this.#onKeepalive(now);
      if (this.#isClosed()) return;
    }
    this.#output(now);
  }

  #onRto(now: number): void {
    this.#rtoAt = Infinity;
    this.#timeouts++;
    const st = this.state;
    if (st === S.SYN_SENT || st === S.SYN_RECEIVED) {
      if (this.#retries >= this.#o.synRetries) {
        this.#terminate(new TcpError("ETIMEDOUT", "Connection timed out"));
        return;
      }
      this.#retries++;
      this.#rtt.backOff();
      this.#retransmits++;
      this.#sendSyn(now, st === S.SYN_RECEIVED);
      this.#rtoAt = now + this.#rtt.rto;
      return;
    }
    if (this.#sndMax === this.#sndUna) return;
    if (this.#sndWnd === 0) {
      // The peer's window is shut: this is zero-window probing, not loss.
      this.#tlpAt = this.#reoAt = Infinity;
      this.#persistAt = now;
      return;
    }
    if (this.#retries >= this.#o.retries) {
      this.#sendRst(this.#sndNxt, 0, false, now);
      this.#terminate(new TcpError("ETIMEDOUT", "Connection timed out"));
      return;
    }
    this.#retries++;
    // RFC 6298 §5.4–5.6 and RFC 5681 §3.1: back off and collapse cwnd; mark
    // lost what RFC 8985 §6.3 says (below). ssthresh falls once per episode,
    // not again on each backoff.
    const lr = this.#lr;
    // F-RTO (RFC 5682) where timestamps cannot tell a spurious timeout: the
    // first timeout of an episode resends only the first segment and lets
    // the next two ACKs decide.
    const frto = !this.#tsOk && this.#retries === 1 && !this.#inLoss && !this.#inRecovery;
    this.#frto = 0;
    if (this.#retries === 1) {
      if (!this.#inLoss && !this.#inRecovery) this.#startEpisode(now);
      else this.#undoPossible = false; // a timeout inside recovery: not Eifel-undoable
      this.#cc.onTimeout(lr ? lr.inFlight : seqDiff(this.#sndMax, this.#sndUna), now);
    } else {
      this.#cc.cwnd = this.#dataMss();
      this.#undoPossible = false;
    }
    this.#rtt.backOff();
    this.#inRecovery = false;
    this.#inLoss = true;
    this.#dupAcks = 0;
    this.#recover = this.#sndMax;
    this.#tlpAt = this.#reoAt = Infinity;
    this.#tlpEnd = -1;
    // Keep SACK information across the first timeout (resend only the holes);
    // forget it after a second one in case the receiver reneged (RFC 2018 §8).
    if (lr) {
      if (frto && lr.markHeadLost() > 0) this.#frto = 1;
      else if (this.#retries >= 2 || !this.#sackOk) {
        // Without SACK nothing (no RACK) would judge the rest later: all of
        // it goes again (RFC 6582 after a timeout).
        lr.markAllLost(this.#retries >= 2);
      } else {
        const reo = lr.reoWnd(true, this.#dataMss(), this.#rtt.srtt, this.#rtt.rttvar);
        lr.markTimedOut(now, reo);
      }
      lr.renoSacked = 0;
      // The first lost segment goes now, whatever the rest in flight says
      // (as the timeout's own retransmission in RFC 6298 §5.4).
      this.#rtoResend = lr.lostPending > 0;
      if (this.#cc.modelBased && this.#retries === 1) {
        // BBR's OnEnterRTO: cwnd = C.inflight + 1 SMSS, after the marking.
        this.#cc.cwnd = Math.max(this.#cc.cwnd, lr.inFlight + this.#dataMss());
      }
    }
    this.#rtoAt = now + this.#rtt.rto;
  }

  /**
   * F-RTO (RFC 5682 §2) after an ACK, while a timeout is being judged: the
   * first ACK that advances SND.UNA lets up to two new segments go (step 2b);
   * if the next ACK advances SND.UNA too, the timeout was spurious and is
   * undone (step 3b), else — or on a duplicate ACK at any step — recovery
   * goes on as usual, every outstanding segment resent.
   */
  #frtoStep(acked: number, now: number): void {
    const lr = this.#lr!;
    if (!this.#inLoss || seqGe(this.#sndUna, this.#recover)) {
      this.#frto = 0;
      return;
    }
    if (acked === 0) return this.#frtoFallBack();
    if (this.#frto === 1) {
      if (this.#unsentBytes() <= 0) return this.#frtoFallBack(); // no new data to test with
      this.#frto = 2;
      const mss = this.#dataMss();
      if (!this.#cc.modelBased) this.#cc.cwnd = Math.max(this.#cc.cwnd, lr.inFlight + 2 * mss);
      return;
    }
    this.#frto = 0;
    this.#undo(now);
  }

  /** F-RTO gave way to conventional recovery (RFC 5682 §2 step 3a): slow start, all resent. */
  #frtoFallBack(): void {
    this.#frto = 0;
    this.#lr!.markAllLost(false);
    if (!this.#cc.modelBased) this.#cc.cwnd = Math.min(this.#cc.cwnd, 2 * this.#dataMss());
  }

  /** The RACK reordering timer (RFC 8985 §6.3): detect losses again. */
  #onReorderTimer(now: number): void {
    this.#reoAt = Infinity;
    const lr = this.#lr;
    if (!lr || lr.outBytes === 0) return;
    const lost = this.#detectLoss(now);
    if (lost > 0 && !this.#inRecovery && !this.#inLoss) {
      this.#enterRecovery(now);
      if (!this.#cc.modelBased && this.#prrActive) {
        this.#cc.cwnd = lr.prrWindow(0, this.#cc.ssthresh, this.#dataMss());
      }
    }
  }

  /**
   * The probe timeout (RFC 8985 §7.3): send one new segment if the window
   * allows, else the last segment again, so that a tail loss draws SACKs
   * (and RACK) instead of waiting for the RTO.
   */
  #onProbeTimer(now: number): void {
    this.#tlpAt = Infinity;
    const lr = this.#lr;
    if (!lr || lr.outBytes === 0 || this.#inLoss) return;
    if (this.#inRecovery) return this.#recoveryProbe(lr, now);
    const mss = this.#dataMss() - this.#sackOptionLength();
    const offset = seqDiff(this.#sndNxt, this.#sndUna);
    const avail = (this.#sendBuf ? this.#sendBuf.length : 0) - offset;
    const len = Math.min(avail, mss, this.#sndWnd - offset);
    this.#tailLossProbes++;
    if (len > 0) {
      this.#sendNew(len, now);
      this.#tlpRetrans = false;
    } else {
      const last = lr.last();
      if (!last) return;
      this.#resend(last, mss, now);
      this.#tlpRetrans = true;
    }
    this.#tlpEnd = this.#sndMax;
    this.#rtoAt = now + this.#rtt.rto;
  }

  /**
   * The recovery probe, our extension of TLP into fast recovery (RFC 8985
   * arms TLP only outside it, as Linux does): when the first segment the
   * receiver lacks was (re)sent a PTO ago and is still not acknowledged, it
   * is sent again. RACK cannot find a lost retransmission when nothing sent
   * after it is delivered (the end of a transfer, or a window that every
   * later segment already filled), and the RTO (at least 200 ms) then stalled
   * short-RTT transfers ten or more times their RTT. A probe that was not
   * needed shows up as a DSACK, like any spurious retransmission.
   */
  #recoveryProbe(lr: LossRecovery, now: number): void {
    const head = lr.headInFlight();
    if (!head) return; // waiting to be sent again: the window decides
    const srtt = this.#rtt.srtt;
    const due = head.xmitTs + (srtt > 0 ? Math.max(2 * srtt, 10) : 1000);
    if (now < due) {
      this.#tlpAt = Math.min(due, this.#rtoAt);
      return;
    }
    this.#tailLossProbes++;
    this.#resend(head, this.#dataMss() - this.#sackOptionLength(), now);
    this.#rtoAt = now + this.#rtt.rto;
  }

  #onPersist(now: number): void {
    this.#persistAt = Infinity;
    if (this.#sndWnd !== 0) return;
    this.#probesUnanswered++;
    if (this.#probesUnanswered > this.#o.retries) {
      this.#sendRst(this.#sndNxt, 0, false, now);
      this.#terminate(new TcpError("ETIMEDOUT", "Connection timed out"));
      return;
    }
    // Zero-window probe (RFC 9293 §3.8.6.1): one byte (or the FIN).
    const buf = this.#sendBuf;
    const bufLen = buf ? buf.length : 0;
    if (this.#sndNxt !== this.#sndUna) {
      // Data outstanding behind a shut window: its first byte again.
      if (bufLen > 0) this.#emit(TCP_ACK, this.#sndUna, 0, 1, now);
      else if (this.#finSent && !this.#finAcked) this.#sendData(this.#sndUna, 0, now);
    } else if (bufLen > 0) {
      // One byte of new data; it counts as sent, so an ACK of it advances normally.
      this.#sendNew(1, now);
      this.#probeOut = true;
    } else if (this.#finQueued && !this.#finSent) {
      this.#sendNew(0, now);
    }
    this.#persistBackoff++;
    this.#rtoAt = this.#tlpAt = this.#reoAt = Infinity;
    this.#persistAt = now + Math.min(this.#o.maxRto, this.#rtt.rto * 2 ** this.#persistBackoff);
  }

  #onKeepalive(now: number): void {
    const ka = this.#o.keepAlive!;
    if (this.state !== S.ESTABLISHED && this.state !== S.CLOSE_WAIT) {
      this.#keepaliveAt = Infinity;
      return;
    }
    if (this.#sndMax !== this.#sndUna) {
      // Data in flight: the retransmission timer watches the peer.
      this.#keepaliveAt = now + ka.idle;
      return;
    }
    if (this.#probesUnanswered >= ka.count) {
      this.#sendRst(this.#sndNxt, 0, false, now);
      this.#terminate(new TcpError("ETIMEDOUT", "Connection timed out (keepalive)"));
      return;
    }
    this.#probesUnanswered++;
    // SEG.SEQ = SND.NXT − 1 with no data draws an ACK (RFC 1122 §4.2.3.6).
    this.#sendControl(TCP_ACK, seqAdd(this.#sndNxt, -1), now);
    this.#keepaliveAt = now + ka.interval;
  }

  // ---------------------------------------------------------------- ICMP

  /** An ICMP error quoting our segment with sequence number `seq`. */
  icmpError(kind: "unreachable" | "packet-too-big", mtu: number | undefined, seq: number): void {
    // Only errors about bytes in flight count (RFC 5927 §4.1).
    const inFlight = seqGe(seq, this.#sndUna) && seqLt(seq, this.#sndMax);
    if (this.state === S.SYN_SENT && kind === "unreachable" && seq === this.#iss) {
      this.#terminate(new TcpError("EHOSTUNREACH", "Destination unreachable"));
      return;
    }
    if (kind !== "packet-too-big" || !inFlight || mtu === undefined) return;
    const mss = Math.max(this.ipVersion === 4 ? 536 : 1220, mtu - (this.ipVersion === 4 ? 40 : 60));
    if (mss >= this.#sndMss) return;
    this.#sndMss = mss;
    this.#cc.setMss(this.#dataMss());
    // Resend what is in flight in smaller segments, without a congestion
    // response (RFC 1191 §6.5 spirit): they are lost at the old size.
    this.#lr?.markAllLost(false);
    this.#owner.wakeConnection(this);
  }

  // ---------------------------------------------------------------- streams

  #onPull(): void {
    const chunk = this.#rcv.take();
    if (chunk) {
      this.#readCtrl.enqueue(chunk);
      this.#maybeWindowUpdate();
      if (this.#rcv.queued === 0 && this.#finReceived && !this.#readDone) {
        this.#readDone = true;
        this.#closeReadable();
      }
      return;
    }
    if (this.#finReceived) {
      if (!this.#readDone) {
        this.#readDone = true;
        this.#closeReadable();
      }
      return;
    }
    this.#pullWaiting = true;
  }

  #maybeWindowUpdate(): void {
    if (this.state < S.ESTABLISHED || this.state === S.TIME_WAIT) return;
    if (this.#finReceived) return;
    if (this.#rcv.updateWorthSending() && !this.#windowUpdate) {
      this.#windowUpdate = true;
      this.#owner.wakeConnection(this);
    }
  }

  #onCancel(): void {
    // Keep ACKing and discard (see module doc): the window opens fully.
    this.#rcv.cancel();
    this.#readDone = true;
    this.#pullWaiting = false;
    if (this.state === S.FIN_WAIT_2) {
      this.#timeWaitAt = this.#owner.lastNow + this.#o.timeWait;
      this.#owner.wakeConnection(this);
    }
    this.#maybeWindowUpdate();
  }

  #onWrite(chunk: Uint8Array): Promise<void> | void {
    if (!(chunk instanceof Uint8Array)) {
      throw new TypeError("A TCP writable accepts Uint8Array chunks only");
    }
    if (this.#error) throw this.#error;
    if (this.state === S.CLOSED || this.state === S.TIME_WAIT || this.#finQueued) {
      throw new TypeError("The connection is closed for writing");
    }
    if (chunk.length === 0) return;
    const n = this.#take(chunk);
    this.#owner.wakeConnection(this);
    if (n === chunk.length) return;
    if (!this.#abortHooked && this.#writeCtrl) {
      // abort() waits for a pending write() before it calls the sink's abort:
      // end that write at once, so a stalled peer cannot hang abort(). Hooked
      // on the first write that has to wait (idle connections stay small).
      this.#abortHooked = true;
      const signal = this.#writeCtrl!.signal;
      signal.addEventListener("abort", () => this.#onAbortSignal(signal.reason), { once: true });
    }
    return new Promise<void>((resolve, reject) => {
      this.#pendingWrite = { chunk, offset: n, resolve, reject };
    });
  }

  /**
   * Copies what fits of `bytes` into the send buffer (its limit and the
   * source's byte budget) and returns how many bytes it took.
   */
  #take(bytes: Uint8Array): number {
    const buf = this.#sendBuf ??= new SendBuffer(this.#sendLimit);
    const budget = this.budget;
    if (!budget) return buf.push(bytes);
    // Bytes the peer cannot take now (its window is closed) hold at most
    // half of the source's budget: the rest stays for its connections that move.
    const held = this.#sndWnd === 0 && buf.length > 0 && budget.used * 2 >= budget.limit;
    const room = held ? 0 : budget.free;
    const n = buf.push(room < bytes.length ? bytes.subarray(0, room) : bytes);
    budget.used += n;
    if (n < bytes.length && (held || budget.free === 0)) {
      budget.wait(() => this.#owner.wakeConnection(this));
    }
    return n;
  }

  /** Drops `n` acknowledged bytes from the front of the send buffer. */
  #dropSent(buf: SendBuffer, n: number): void {
    const k = Math.min(n, buf.length);
    buf.drop(k);
    this.budget?.release(k);
  }

  #freeSendBuffer(): void {
    if (this.#sendBuf) this.budget?.release(this.#sendBuf.length);
    this.#sendBuf = null;
  }

  #fillFromPendingWrite(): void {
    const p = this.#pendingWrite;
    if (!p) return;
    p.offset += this.#take(p.chunk.subarray(p.offset));
    if (p.offset === p.chunk.length) {
      this.#pendingWrite = null;
      p.resolve();
    }
  }

  #onClose(): void {
    if (this.#error) throw this.#error;
    this.#writeDone = true;
    if (this.state === S.CLOSED || this.state === S.TIME_WAIT) return;
    this.#finQueued = true;
    this.#owner.wakeConnection(this);
  }

  #onAbortSignal(reason: unknown): void {
    const p = this.#pendingWrite;
    if (p) {
      this.#pendingWrite = null;
      p.reject(reason);
    }
    this.#onAbort(reason);
  }

  #onAbort(_reason: unknown): void {
    this.#writeDone = true;
    if (this.state === S.CLOSED || this.state === S.TIME_WAIT) return;
    this.#abortQueued = true;
    this.#owner.wakeConnection(this);
  }

  /**
   * Half-closes our side whoever holds the writable (a writer or a pipe): the
   * data already in the send buffer is sent, then FIN. A write still waiting
   * for buffer space is rejected, and the writable is errored so that later
   * writes (and a pipe into it) fail with a `TypeError`.
   */
  close(): void {
    if (this.#writeDone || this.#error) return;
    if (this.state === S.CLOSED || this.state === S.TIME_WAIT) return;
    this.#errorWritable(() => new TypeError("The connection is closed for writing"));
    const p = this.#pendingWrite;
    if (p) {
      this.#pendingWrite = null;
      p.reject(this.#errorOfWritable());
    }
    this.#writeDone = true;
    this.#finQueued = true;
    this.#owner.wakeConnection(this);
  }

  /** Sends RST now and releases the connection (users call this). */
  reset(): void {
    if (this.state === S.CLOSED) return;
    if (this.state !== S.TIME_WAIT) {
      this.#sendRst(this.#sndNxt, this.#rcv.nxt, this.state !== S.SYN_SENT, this.#owner.lastNow);
    }
    this.#terminate(new TcpError("ECONNABORTED", "Connection reset locally"));
  }

  /**
   * Ends TIME_WAIT now, as its timer would (the layer's TIME_WAIT limit):
   * the connection already closed both ways, so no error; data the peer
   * sent and nobody read yet stays readable.
   */
  expireTimeWait(): void {
    if (this.state === S.TIME_WAIT) this.#terminate(null);
  }

  /** Drops the connection without a segment (half-open eviction, layer shutdown). */
  abandon(error: TcpError): void {
    if (this.state === S.CLOSED && (this.#error || this.#readDone)) return;
    this.#terminate(error);
  }

  /**
   * The end of a batch of input (from the layer's poll): feeds the reader
   * what the batch's segments queued and sends the ACK they owe, one for the
   * batch (RFC 5681 §4.2: at least every second segment; a single segment
   * waits for the delayed-ACK timer).
   */
  endBatch(now: number): void {
    if (this.state === S.CLOSED) return;
    this.#feedReader();
    if (this.#unackedSegs >= 2) this.#ackNow = true;
    this.#output(now);
  }

  /** Flushes work queued by stream callbacks (from the layer's poll). */
  flush(now: number): void {
    // A write may wait for its source's byte budget, freed by another connection.
    if (this.#pendingWrite) this.#fillFromPendingWrite();
    if (this.#budgetWait) {
      // The source's receive budget freed up: the window may open again.
      this.#budgetWait = false;
      this.#maybeWindowUpdate();
    }
    this.#output(now);
  }

  #finishStreams(): void {
    // A graceful end: the readable closes once drained (FIN seen); the writable is done.
    if (!this.#writeDone) {
      this.#writeDone = true;
      this.#errorWritable(() => new TcpError("ECONNABORTED", "Connection closed"));
    }
  }

  /** Moves to CLOSED, errors the streams when `error` is set, and releases. */
  #terminate(error: TcpError | null): void {
    const wasTimeWait = this.state === S.TIME_WAIT;
    this.state = S.CLOSED;
    this.#rtoAt =
      this.#persistAt =
      this.#delackAt =
      this.#timeWaitAt =
      this.#keepaliveAt =
        Infinity;
    if (error) {
      this.#error = error;
      if (!this.#readDone) {
        this.#readDone = true;
        this.#failReadable(error);
      }
      if (!this.#writeDone) {
        this.#writeDone = true;
        this.#errorWritable(() => error);
      }
      const p = this.#pendingWrite;
      if (p) {
        this.#pendingWrite = null;
        p.reject(error);
      }
      this.#rcv.clear();
    } else if (!this.#readDone && this.#rcv.queued > 0) {
      // A graceful end with unread data: the readable closes once drained.
      this.#finReceived = true;
    } else if (!this.#readDone) {
      this.#readDone = true;
      this.#closeReadable();
    }
    if (!wasTimeWait) this.#finishStreams();
    this.#freeSendBuffer();
    this.#rcv.dropReassembly();
    this.#rcv.end();
    this.#lr?.clear(); // counters stay for stats
    this.#resolveClosed();
    this.#owner.released(this);
  }

  // ---------------------------------------------------------------- inspection

  #isClosed(): boolean {
    return this.state === S.CLOSED;
  }

  /** True in TIME_WAIT. */
  get inTimeWait(): boolean {
    return this.state === S.TIME_WAIT;
  }

  /** RCV.NXT (for TIME_WAIT reuse decisions). */
  get rcvNxt(): number {
    return this.#rcv.nxt;
  }

  /** Counters, estimates and windows. */
  get stats(): TcpConnectionStats {
    const cc = this.#cc;
    const settled = cc instanceof SettledCc ? cc : null;
    const lr = this.#lr;
    return {
      state: STATE_NAMES[this.state],
      bytesIn: this.#bytesIn,
      bytesOut: this.#bytesOut,
      segmentsIn: this.#segsIn,
      segmentsOut: this.#segsOut,
      retransmits: this.#retransmits,
      timeouts: this.#timeouts,
      fastRecoveries: this.#fastRecoveries,
      spuriousRecoveries: this.#spuriousRecoveries,
      spuriousRetransmits: this.#spuriousRetransmits,
      dsacksReceived: lr ? lr.dsacks : settled ? settled.dsacks : 0,
      tailLossProbes: this.#tailLossProbes,
      reorderingWindowMultiplier: lr ? lr.reoWndMult : settled ? settled.reoWndMult : 1,
      minRtt: lr ? lr.minRtt : settled ? settled.minRtt : 0,
      dupAckThreshold: this.#dupThresh,
      pacingRate: cc.pacingRate,
      congestionControl: cc.name,
      congestionState: this.#congestionState(),
      bottleneckBandwidth: cc instanceof Bbr ? cc.bw : settled ? settled.bw : 0,
      srtt: this.#rtt.srtt,
      rttvar: this.#rtt.rttvar,
      rto: this.#rtt.rto,
      cwnd: cc.cwnd,
      ssthresh: cc.ssthresh,
      sendWindow: this.#sndWnd,
      receiveBuffer: this.#rcv.buf,
      mss: this.#sndMss,
      dropped: this.#dropped,
      challengeAcks: this.#challengeAcks,
    };
  }
}
