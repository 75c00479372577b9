/**
 * The contract between the IP layer of the stack (`netstack/stack.ts`) and the
 * TCP layer (`netstack/tcp/`). The IP layer parses IP, verifies the TCP
 * checksum (pseudo-header), and hands the TCP segment bytes to
 * {@linkcode TcpLayerLike.input}. The TCP layer builds whole TCP segments
 * (header with checksum filled in, plus payload) and hands them to
 * {@linkcode TcpLayerHost.sendSegment}; the IP layer wraps them in IP.
 *
 * Address convention: "local" is our side of the connection (for a connection
 * a client opened towards us, the original destination it dialled), "remote"
 * is the other side (the client).
 *
 * @module
 */

import type { IpAddress } from "../addr.ts";

/** The four values that identify a TCP connection, seen from our side. */
export interface TcpTuple {
  /** Our address (for an accepted connection: the original destination). */
  readonly localAddress: IpAddress;
  /** Our port (for an accepted connection: the original destination port). */
  readonly localPort: number;
  /** The peer's address (for an accepted connection: the client). */
  readonly remoteAddress: IpAddress;
  /** The peer's port. */
  readonly remotePort: number;
}

/** What the TCP layer needs from the stack that owns it. */
export interface TcpLayerHost {
  /**
   * Sends one TCP segment (header with checksum, then payload) from `src` to
   * `dst`. The IP layer wraps it in an IPv4 or IPv6 header. Called during
   * `input`, `poll`, or (never) from stream callbacks: stream callbacks only
   * queue work and call {@linkcode TcpLayerHost.wake}.
   */
  sendSegment(src: IpAddress, dst: IpAddress, segment: Uint8Array): void;
  /**
   * Optional: room for the next segment from `src` (at least the largest
   * segment the MTU allows), so that the TCP layer builds it in place and
   * {@linkcode TcpLayerHost.sendSegment} gets a prefix of this same buffer
   * and need not copy it. Valid until the next `sendSegment`. Without it,
   * each segment is built in a buffer of its own.
   */
  segmentBuffer?(src: IpAddress): Uint8Array;
  /**
   * Tells the owner that state changed outside `input`/`poll` (a stream write,
   * a read that opened the window, a close), or that an `input` left work
   * for the end of its batch (the ACK in-order data owes, bytes for a
   * reader), so it should call `poll` soon (after the batch of input it is
   * delivering) and re-read `nextDeadline()`.
   */
  wake(): void;
  /**
   * A SYN arrived for a tuple with no connection and within the limits. The
   * owner decides now or later through `request`.
   */
  onSyn(request: TcpSynRequest): void;
}

/** Per-connection choices at accept or connect time. */
export interface TcpConnectOptions {
  /** Congestion controller of this connection (default: the layer's). */
  congestionControl?: "cubic" | "newreno" | "bbr";
}

/**
 * A connection attempt (a SYN) waiting for the owner's decision. The owner may
 * decide after the SYN arrived, e.g. after dialling the real destination.
 * Retransmitted SYNs while pending do not create a second request.
 */
export interface TcpSynRequest {
  /** Who dialled whom. */
  readonly tuple: TcpTuple;
  /** Who sent the SYN: the `source` of the `input` call that carried it. */
  readonly source: unknown;
  /** 4 or 6. */
  readonly ipVersion: 4 | 6;
  /** Accepts: sends SYN-ACK and returns the connection. */
  accept(options?: TcpConnectOptions): TcpConnectionLike;
  /** Refuses with a RST. */
  reset(): void;
  /** Forgets the SYN without answering (the owner may answer with ICMP). */
  drop(): void;
}

/** The face of one TCP connection that users see. */
export interface TcpConnectionLike extends TcpTuple {
  /**
   * Bytes from the peer; closes on FIN, errors on RST or timeout. Made on
   * first use; not available once `read()` was used.
   */
  readonly readable: ReadableStream<Uint8Array>;
  /**
   * Bytes to the peer; `close()` sends FIN (half-close), `abort()` sends RST.
   * Made on first use; not available once `write()` was used.
   */
  readonly writable: WritableStream<Uint8Array>;
  /**
   * The stream-free way to read: the next bytes (up to 64 KiB), `null` after
   * the peer's FIN; rejects on RST or timeout. One read at a time; a
   * `TypeError` once `readable` was used. No stream objects are made, so a
   * relay holding many idle connections stays small.
   */
  read(): Promise<Uint8Array | null>;
  /**
   * The stream-free way to write: resolves once `chunk` is in the send
   * buffer (backpressure as with `writable`). One write at a time; a
   * `TypeError` once `writable` was used. `close()` half-closes.
   */
  write(chunk: Uint8Array): Promise<void>;
  /** 4 or 6. */
  readonly ipVersion: 4 | 6;
  /** Resolves when the connection is fully closed (either way). */
  readonly closed: Promise<void>;
  /** Counters and estimates: bytes, segments, retransmits, RTT, cwnd, state. */
  readonly stats: TcpConnectionStats;
  /**
   * Half-closes our side even while the writable is locked (e.g. by a pipe):
   * data already written is sent, then FIN; later writes fail.
   */
  close(): void;
  /** Sends RST now and releases the connection. */
  reset(): void;
}

/** What the IP layer calls on the TCP layer. */
export interface TcpLayerLike {
  /**
   * One TCP segment whose checksum the IP layer has verified. `segment` is a
   * view that the caller may reuse after the call returns: copy what you keep.
   * `source` is who sent it (see `NetStack.input`): per-source quotas count
   * the connections it opens against it.
   */
  input(src: IpAddress, dst: IpAddress, segment: Uint8Array, now: number, source?: unknown): void;
  /**
   * An ICMP error about a segment we sent: `quoted` is the start of our TCP
   * header as quoted in the ICMP message (at least 8 bytes). `mtu` is set for
   * "packet too big" / "fragmentation needed"; otherwise it is a hard or soft
   * unreachable error.
   */
  icmpError(
    src: IpAddress,
    dst: IpAddress,
    quoted: Uint8Array,
    error: { kind: "unreachable" | "packet-too-big"; mtu?: number },
    now: number,
  ): void;
  /** Runs timers that are due and sends everything queued. */
  poll(now: number): void;
  /** The monotonic time at which `poll` should next run (`Infinity` if none). */
  nextDeadline(): number;
  /**
   * Active open: sends a SYN from `tuple.localAddress:localPort` to
   * `tuple.remoteAddress:remotePort` and returns the connection at once; its
   * writable accepts data immediately (sent once established) and its
   * readable errors if the connection is refused or times out.
   */
  connect(tuple: TcpTuple, now: number, options?: TcpConnectOptions): TcpConnectionLike;
}

/**
 * How a TCP layer is constructed (implemented by `netstack/tcp/layer.ts` as
 * `new TcpLayer(host, options)`).
 */
export type TcpLayerConstructor<Options> = new (
  host: TcpLayerHost,
  options?: Options,
) => TcpLayerLike;

/** Per-connection counters and estimates. */
export interface TcpConnectionStats {
  /** RFC 9293 state name. */
  state: string;
  /** Payload bytes received in sequence (delivered or discarded). */
  bytesIn: number;
  /** Payload bytes sent, retransmissions included. */
  bytesOut: number;
  /** Segments received. */
  segmentsIn: number;
  /** Segments sent. */
  segmentsOut: number;
  /** Segments retransmitted (timeouts, fast retransmit, SACK recovery). */
  retransmits: number;
  /** Retransmission timeouts. */
  timeouts: number;
  /** Fast recoveries undone because the retransmission was spurious (RFC 3522). */
  spuriousRecoveries: number;
  /** Fast-recovery episodes. */
  fastRecoveries: number;
  /** Retransmissions the peer reported as duplicates by DSACK (RFC 3708). */
  spuriousRetransmits: number;
  /** DSACK blocks received (duplicates the peer saw, any cause). */
  dsacksReceived: number;
  /**
   * Tail loss probes sent (RFC 8985 §7), and recovery probes: the first
   * missing segment sent again when, in fast recovery, nothing for a PTO
   * showed what became of its last transmission.
   */
  tailLossProbes: number;
  /** RACK reordering window multiplier (1 = min_RTT/4; grows with DSACKs). */
  reorderingWindowMultiplier: number;
  /** Minimum RTT seen by the sender's records, ms (0 before the first sample). */
  minRtt: number;
  /** Duplicate-ACK threshold in use for a peer without SACK. */
  dupAckThreshold: number;
  /** Pacing rate in bytes per ms (0 = not paced). */
  pacingRate: number;
  /** Congestion controller name. */
  congestionControl: string;
  /**
   * The controller's state: BBR's (e.g. "probe_bw_cruise"), else "open",
   * "recovery" or "loss" (after a timeout).
   */
  congestionState: string;
  /** BBR's bottleneck bandwidth estimate in bytes per ms (0 for other controllers). */
  bottleneckBandwidth: number;
  /** Smoothed RTT, ms. */
  srtt: number;
  /** RTT variation, ms. */
  rttvar: number;
  /** Current RTO, ms. */
  rto: number;
  /** Congestion window, bytes. */
  cwnd: number;
  /** Slow-start threshold, bytes. */
  ssthresh: number;
  /** Peer's window, bytes. */
  sendWindow: number;
  /** Our current receive buffer size, bytes. */
  receiveBuffer: number;
  /** Sender MSS in effect. */
  mss: number;
  /** Segments dropped: out of window, PAWS, or reassembly limits. */
  dropped: number;
  /** Challenge ACKs sent (RFC 5961). */
  challengeAcks: number;
}
