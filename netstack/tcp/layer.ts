/**
 * The TCP layer: the connection table by 4-tuple, SYN handling with limits
 * (half-open connections, total connections, TIME_WAIT), RSTs for segments
 * that belong to no connection (RFC 9293 §3.10.7.1), a timer heap for exact
 * and cheap `nextDeadline()`, and dispatch of ICMP errors.
 *
 * SYN flood policy: SYNs waiting for the owner's decision and accepted
 * connections still in SYN_RECEIVED count as half-open; beyond
 * `maxHalfOpen` the oldest half-open entry is evicted (a pending request is
 * forgotten, a SYN_RECEIVED connection is dropped without a segment). No SYN
 * cookies.
 *
 * Per-source quotas (`../quota.ts`): every entry is counted against the
 * source its SYN came with. Half-open and TIME_WAIT entries beyond a
 * source's quota evict that source's oldest; when a whole table is full,
 * the oldest entry of the source holding the most goes. A SYN of a source
 * at its connection quota reuses one of its TIME_WAIT entries or is dropped;
 * when the connection table is full, a TIME_WAIT entry of the source holding
 * the most TIME_WAIT entries goes, else the oldest connection of the source
 * holding the most connections (never of one holding no more than the
 * newcomer's source). The send buffers of one source's connections share a
 * byte budget (`sendBytesPerSource`), and so do their receive queues and
 * offered windows (`receiveBytesPerSource`: the windows close while it is
 * spent).
 *
 * @module
 */

import type { IpAddress } from "../addr.ts";
import type {
  TcpConnectionLike,
  TcpConnectOptions,
  TcpLayerHost,
  TcpLayerLike,
  TcpSynRequest,
  TcpTuple,
} from "./api.ts";
import { emitTcp, parseTcpInto, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpRepr } from "../wire/tcp.ts";
import {
  Connection,
  type ConnectionOwner,
  type ResolvedTcpOptions,
  resolveTcpOptions,
  type SynOptions,
  TcpError,
  type TcpOptions,
  TcpState,
} from "./connection.ts";
import { KeyedHash } from "./isn.ts";
import { seqAdd, seqGt } from "./seq.ts";
import { ByteBudget, SourceTable } from "../quota.ts";

/** Layer-wide counters. */
export interface TcpLayerStats {
  /** Connections in the table (any state, TIME_WAIT included). */
  connections: number;
  /** SYNs awaiting a decision plus SYN_RECEIVED connections. */
  halfOpen: number;
  /** Connections in TIME_WAIT. */
  timeWait: number;
  /** Segments that failed to parse (bad header or options). */
  malformed: number;
  /** RSTs sent for segments that matched no connection. */
  resetsSent: number;
  /** SYNs dropped because of the connection limit. */
  synDropped: number;
  /** Half-open entries evicted by newer SYNs. */
  halfOpenEvicted: number;
  /** TIME_WAIT connections evicted by the TIME_WAIT limit. */
  timeWaitEvicted: number;
  /** Segments for no connection that were ignored (RSTs, stray segments while a SYN is pending). */
  ignored: number;
  /** SYNs dropped because their source holds its connection quota. */
  synDroppedSourceQuota: number;
  /** Connections aborted to make room for a source holding fewer. */
  connectionsEvicted: number;
  /** Sources with connections (or bytes of closed ones not yet read) now. */
  sources: number;
  /** Entries of the timer heap (each connection's latest deadline, plus stale ones not yet dropped). */
  timers: number;
}

interface HeapEntry {
  at: number;
  conn: Connection;
}

class PendingSyn implements TcpSynRequest {
  readonly tuple: TcpTuple;
  readonly ipVersion: 4 | 6;
  readonly key: string;
  readonly seq: number;
  readonly syn: SynOptions;
  readonly source: unknown;
  #layer: TcpLayer;
  /** "pending", "accepted", "reset", "dropped", "evicted". */
  status = "pending";

  constructor(layer: TcpLayer, tuple: TcpTuple, key: string, seg: TcpRepr, source: unknown) {
    this.#layer = layer;
    this.source = source;
    this.tuple = tuple;
    this.ipVersion = tuple.localAddress.length === 4 ? 4 : 6;
    this.key = key;
    this.seq = seg.seq;
    this.syn = {
      mss: seg.mss,
      windowScale: seg.windowScale,
      sackPermitted: seg.sackPermitted,
      hasTimestamp: seg.hasTimestamp,
      tsVal: seg.tsVal,
    };
  }

  accept(options?: TcpConnectOptions): TcpConnectionLike {
    return this.#layer.acceptSyn(this, options);
  }

  reset(): void {
    this.#layer.resetSyn(this);
  }

  drop(): void {
    this.#layer.dropSyn(this);
  }
}

/** Builds the table key for a tuple (local address, local port, remote address, remote port). */
function tupleKey(local: IpAddress, lport: number, remote: IpAddress, rport: number): string {
  let s = String.fromCharCode(lport, rport);
  for (let i = 0; i < local.length; i += 2) {
    s += String.fromCharCode((local[i] << 8) | local[i + 1]);
  }
  for (let i = 0; i < remote.length; i += 2) {
    s += String.fromCharCode((remote[i] << 8) | remote[i + 1]);
  }
  return s;
}

function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  crypto.getRandomValues(b);
  return b;
}

/** The TCP layer of the stack. See {@linkcode TcpLayerLike}. */
export class TcpLayer implements TcpLayerLike, ConnectionOwner {
  /** Resolved options. */
  readonly options: ResolvedTcpOptions;
  /** Scratch segment representation (internal). */
  readonly scratch: TcpRepr = new TcpRepr();
  /** The latest `now` passed to `input`/`poll`/`connect`. */
  lastNow = 0;

  readonly #host: TcpLayerHost;
  readonly #conns = new Map<string, Connection>();
  /** Half-open entries in arrival order: pending SYNs and SYN_RECEIVED connections. */
  readonly #halfOpen = new Map<string, PendingSyn | Connection>();
  readonly #timeWait = new Map<string, Connection>();
  /** The three tables' keys by source. */
  readonly #connsBy = new SourceTable();
  readonly #halfOpenBy = new SourceTable();
  readonly #timeWaitBy = new SourceTable();
  /** Send-buffer and receive-queue budgets of the sources that have connections. */
  readonly #budgets = new Map<unknown, { send: ByteBudget; receive: ByteBudget }>();
  readonly #heap: HeapEntry[] = [];
  #dirty: Connection[] = [];
  /** Connections with work for the end of the current batch of input (see `deferToBatchEnd`). */
  #batch: Connection[] = [];
  #batchSpare: Connection[] = [];
  /** Inside `input` (which flushes what stream callbacks queue during it). */
  #inInput = false;
  readonly #in = new TcpRepr();
  readonly #hash: KeyedHash;
  readonly #tsHash: KeyedHash;
  readonly #stats: TcpLayerStats = {
    connections: 0,
    halfOpen: 0,
    timeWait: 0,
    malformed: 0,
    resetsSent: 0,
    synDropped: 0,
    halfOpenEvicted: 0,
    timeWaitEvicted: 0,
    ignored: 0,
    synDroppedSourceQuota: 0,
    connectionsEvicted: 0,
    sources: 0,
    timers: 0,
  };
  /** Released connections that may still have heap entries (which keep them in memory). */
  #releasedInHeap = 0;

  /** Creates a layer that sends through `host`. Throws `RangeError` on bad options. */
  constructor(host: TcpLayerHost, options?: TcpOptions) {
    if (!host || typeof host.sendSegment !== "function") {
      throw new TypeError("The TCP layer needs a host with sendSegment, wake and onSyn");
    }
    this.#host = host;
    this.options = resolveTcpOptions(options);
    const secret = options?.secret ?? randomBytes(16);
    if (secret.length < 8) throw new RangeError("The TCP secret needs at least 8 bytes");
    this.#hash = new KeyedHash(secret.subarray(0, 8));
    const k2 = new Uint8Array(8);
    for (let i = 0; i < 8; i++) k2[i] = secret[(i + 8) % secret.length] ^ 0x5c;
    this.#tsHash = new KeyedHash(k2);
  }

  // ------------------------------------------------------------ ConnectionOwner

  /** @internal */
  transmit(conn: Connection, segment: Uint8Array): void {
    this.#host.sendSegment(conn.localAddress, conn.remoteAddress, segment);
  }

  /** @internal */
  segmentBuffer(conn: Connection, length: number): Uint8Array | undefined {
    const room = this.#host.segmentBuffer?.(conn.localAddress);
    return room && room.length >= length ? room : undefined;
  }

  /** @internal */
  wakeConnection(conn: Connection): void {
    if (conn.released) return;
    if (!conn.dirty) {
      conn.dirty = true;
      this.#dirty.push(conn);
    }
    // Inside input the layer flushes the list itself before it returns.
    if (!this.#inInput) this.#host.wake();
  }

  /** @internal */
  deferToBatchEnd(conn: Connection): void {
    if (conn.batched || conn.released) return;
    conn.batched = true;
    this.#batch.push(conn);
    // Once per batch: the owner polls after the batch (the stack holds a wake
    // asked for during input until the input returns).
    if (this.#batch.length === 1) this.#host.wake();
  }

  /** @internal */
  enteredTimeWait(conn: Connection): void {
    this.#halfOpenDelete(conn.key);
    const o = this.options;
    if (o.maxTimeWait === 0 || (conn.source !== undefined && o.maxTimeWaitPerSource === 0)) {
      conn.expireTimeWait();
      return;
    }
    for (;;) {
      const key = this.#timeWaitBy.victim(conn.source, o.maxTimeWaitPerSource, o.maxTimeWait);
      if (key === undefined) break;
      const victim = key === null ? undefined : this.#timeWait.get(key);
      if (!victim) {
        // Nothing of a source holding more: this one does not stay.
        conn.expireTimeWait();
        return;
      }
      this.#stats.timeWaitEvicted++;
      victim.expireTimeWait();
    }
    this.#timeWait.set(conn.key, conn);
    this.#timeWaitBy.add(conn.source, conn.key);
  }

  /** @internal */
  released(conn: Connection): void {
    if (conn.released) return;
    conn.released = true;
    const key = conn.key;
    if (this.#conns.get(key) === conn) {
      this.#conns.delete(key);
      this.#connsBy.delete(conn.source, key);
      const budgets = this.#budgets.get(conn.source);
      // Kept while a closed connection still holds unread bytes charged to it.
      if (
        budgets && this.#connsBy.count(conn.source) === 0 && budgets.send.used === 0 &&
        budgets.receive.used === 0
      ) {
        this.#budgets.delete(conn.source);
      }
    }
    if (this.#halfOpen.get(key) === conn) this.#halfOpenDelete(key);
    if (this.#timeWait.get(key) === conn) {
      this.#timeWait.delete(key);
      this.#timeWaitBy.delete(conn.source, key);
    }
    // A stale heap entry holds its released connection (kilobytes: streams,
    // congestion control) until its time comes, e.g. a keepalive 15 min
    // away. Drop them once they are a quarter of the live connections.
    if (conn.heapAt !== Infinity && ++this.#releasedInHeap > 64 + (this.#conns.size >> 2)) {
      this.#rebuildHeap();
    }
  }

  /** Forgets a half-open entry (a pending SYN or a SYN_RECEIVED connection). */
  #halfOpenDelete(key: string): void {
    const entry = this.#halfOpen.get(key);
    if (!entry) return;
    this.#halfOpen.delete(key);
    this.#halfOpenBy.delete(entry.source, key);
  }

  // ------------------------------------------------------------ TcpLayerLike

  /** Handles one verified TCP segment from `src` to `dst`. */
  input(
    src: IpAddress,
    dst: IpAddress,
    segment: Uint8Array,
    now: number,
    source?: unknown,
  ): void {
    this.lastNow = now;
    const seg = this.#in;
    if (!parseTcpInto(segment, seg)) {
      this.#stats.malformed++;
      return;
    }
    const key = tupleKey(dst, seg.dstPort, src, seg.srcPort);
    let conn = this.#conns.get(key);
    if (
      conn && conn.inTimeWait && (seg.flags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN &&
      seqGt(seg.seq, conn.rcvNxt)
    ) {
      // A new SYN above the old sequence space reopens a TIME_WAIT tuple (RFC 9293 §3.6.1).
      conn.abandon(new TcpError("ECONNABORTED", "Reused"));
      conn = undefined;
    }
    this.#inInput = true;
    try {
      if (conn) {
        const wasHalfOpen = conn.state === TcpState.SYN_RECEIVED;
        conn.input(seg, now);
        if (wasHalfOpen && conn.state !== TcpState.SYN_RECEIVED) this.#halfOpenDelete(key);
        this.#schedule(conn);
      } else {
        this.#noConnection(src, dst, key, seg, source);
      }
      this.#flushDirty(now);
    } finally {
      this.#inInput = false;
    }
  }

  #noConnection(
    src: IpAddress,
    dst: IpAddress,
    key: string,
    seg: TcpRepr,
    source: unknown,
  ): void {
    const f = seg.flags;
    if (f & TCP_RST) {
      this.#stats.ignored++;
      return;
    }
    const pending = this.#halfOpen.get(key);
    if (pending) {
      // A retransmitted SYN (or anything else) while the owner decides.
      this.#stats.ignored++;
      return;
    }
    if ((f & (TCP_SYN | TCP_FIN)) === (TCP_SYN | TCP_FIN)) {
      // SYN+FIN is never legitimate (a scanner's probe): drop it, as Linux does.
      this.#stats.malformed++;
      return;
    }
    if ((f & (TCP_SYN | TCP_ACK)) === TCP_SYN) {
      this.#onSyn(src, dst, key, seg, source);
      return;
    }
    // RFC 9293 §3.10.7.1: answer with RST.
    this.#stats.resetsSent++;
    const r = this.scratch;
    const seq = seg.seq, ack = seg.ack, len = seg.segmentLength;
    const sport = seg.dstPort, dport = seg.srcPort;
    r.clear();
    r.srcPort = sport;
    r.dstPort = dport;
    if (f & TCP_ACK) {
      r.seq = ack;
      r.flags = TCP_RST;
    } else {
      r.seq = 0;
      r.ack = seqAdd(seq, len);
      r.flags = TCP_RST | TCP_ACK;
    }
    this.#host.sendSegment(dst, src, emitTcp(r, dst, src));
    void (f & TCP_FIN);
  }

  #onSyn(src: IpAddress, dst: IpAddress, key: string, seg: TcpRepr, source: unknown): void {
    if (!this.#roomForConnection(source)) return;
    const o = this.options;
    for (;;) {
      const victim = this.#halfOpenBy.victim(source, o.maxHalfOpenPerSource, o.maxHalfOpen);
      if (victim === undefined) break;
      if (victim === null) {
        this.#stats.synDropped++;
        return;
      }
      this.#evictHalfOpen(victim);
    }
    // Both addresses in one buffer (one allocation per connection, not two).
    const both = new Uint8Array(dst.length * 2);
    both.set(dst);
    both.set(src, dst.length);
    const tuple: TcpTuple = {
      localAddress: both.subarray(0, dst.length),
      localPort: seg.dstPort,
      remoteAddress: both.subarray(dst.length),
      remotePort: seg.srcPort,
    };
    const req = new PendingSyn(this, tuple, key, seg, source);
    this.#halfOpen.set(key, req);
    this.#halfOpenBy.add(source, key);
    this.#host.onSyn(req);
  }

  /**
   * Makes room in the connection table for one more connection of `source`
   * (see the module doc); false when its SYN must be dropped.
   */
  #roomForConnection(source: unknown): boolean {
    const o = this.options;
    const by = this.#connsBy;
    if (source !== undefined && by.count(source) >= o.maxConnectionsPerSource) {
      const tw = this.#timeWait.get(this.#timeWaitBy.oldest(source) ?? "");
      if (!tw) {
        this.#stats.synDroppedSourceQuota++;
        return false;
      }
      this.#stats.timeWaitEvicted++;
      tw.expireTimeWait();
    }
    if (this.#conns.size < o.maxConnections) return true;
    const twKey = this.#timeWaitBy.oldest(this.#timeWaitBy.heaviest());
    const tw = twKey === undefined ? undefined : this.#timeWait.get(twKey);
    if (tw) {
      this.#stats.timeWaitEvicted++;
      tw.expireTimeWait();
      return true;
    }
    const victim = by.victim(source, o.maxConnectionsPerSource, o.maxConnections);
    const conn = victim ? this.#conns.get(victim) : undefined;
    if (!conn || conn.source === source) {
      this.#stats.synDropped++;
      return false;
    }
    this.#stats.connectionsEvicted++;
    conn.reset();
    return true;
  }

  #evictHalfOpen(key: string): void {
    const entry = this.#halfOpen.get(key)!;
    this.#halfOpenDelete(key);
    this.#stats.halfOpenEvicted++;
    if (entry instanceof PendingSyn) entry.status = "evicted";
    else entry.abandon(new TcpError("ECONNABORTED", "Half-open limit"));
  }

  /** @internal Accepts a pending SYN (via {@linkcode TcpSynRequest.accept}). */
  acceptSyn(req: PendingSyn, options?: TcpConnectOptions): Connection {
    if (req.status === "evicted") {
      // Evicted by the half-open limit: hand back a connection that is already aborted.
      const c = new Connection(this, req.tuple, req.key, 0, 0);
      c.released = true;
      c.abandon(new TcpError("ECONNABORTED", "The SYN was evicted by the half-open limit"));
      return c;
    }
    if (req.status !== "pending") {
      throw new TypeError(`This SYN request was already answered (${req.status})`);
    }
    req.status = "accepted";
    const now = this.lastNow;
    const conn = this.#newConnection(req.tuple, req.key, now, req.source);
    if (options?.congestionControl) conn.useCongestionControl(options.congestionControl);
    this.#halfOpen.set(req.key, conn); // keeps the half-open slot and its age order
    conn.openPassive(req.seq, req.syn, now);
    this.#schedule(conn);
    return conn;
  }

  /** @internal */
  resetSyn(req: PendingSyn): void {
    if (req.status === "evicted") return;
    if (req.status !== "pending") {
      throw new TypeError(`This SYN request was already answered (${req.status})`);
    }
    req.status = "reset";
    this.#halfOpenDelete(req.key);
    this.#stats.resetsSent++;
    const r = this.scratch;
    r.clear();
    r.srcPort = req.tuple.localPort;
    r.dstPort = req.tuple.remotePort;
    r.seq = 0;
    r.ack = seqAdd(req.seq, 1);
    r.flags = TCP_RST | TCP_ACK;
    const { localAddress: l, remoteAddress: rm } = req.tuple;
    this.#host.sendSegment(l, rm, emitTcp(r, l, rm));
  }

  /** @internal */
  dropSyn(req: PendingSyn): void {
    if (req.status === "evicted") return;
    if (req.status !== "pending") {
      throw new TypeError(`This SYN request was already answered (${req.status})`);
    }
    req.status = "dropped";
    this.#halfOpenDelete(req.key);
  }

  #newConnection(tuple: TcpTuple, key: string, now: number, source?: unknown): Connection {
    const l = tuple.localAddress, r = tuple.remoteAddress;
    // RFC 6528: ISN = M + F(tuple, secret), M a 4 µs clock.
    const f = this.#hash.hash(l, r, tuple.localPort | (tuple.remotePort << 16));
    const iss = (Math.floor(now * 250) + f) >>> 0;
    const tsOffset = this.#tsHash.hash(l, r, tuple.localPort | (tuple.remotePort << 16));
    const conn = new Connection(this, tuple, key, iss, tsOffset);
    this.#conns.set(key, conn);
    conn.source = source;
    this.#connsBy.add(source, key);
    if (source !== undefined) {
      let budgets = this.#budgets.get(source);
      if (!budgets) {
        budgets = {
          send: new ByteBudget(this.options.sendBytesPerSource),
          receive: new ByteBudget(this.options.receiveBytesPerSource),
        };
        this.#budgets.set(source, budgets);
      }
      conn.useBudgets(budgets.send, budgets.receive);
    }
    return conn;
  }

  /** Active open (see {@linkcode TcpLayerLike.connect}). */
  connect(tuple: TcpTuple, now: number, options?: TcpConnectOptions): TcpConnectionLike {
    const l = tuple.localAddress, r = tuple.remoteAddress;
    if (!(l instanceof Uint8Array) || !(r instanceof Uint8Array)) {
      throw new TypeError("Addresses must be Uint8Array");
    }
    if ((l.length !== 4 && l.length !== 16) || l.length !== r.length) {
      throw new TypeError("Addresses must both be IPv4 (4 bytes) or both IPv6 (16 bytes)");
    }
    for (const p of [tuple.localPort, tuple.remotePort]) {
      if (!Number.isInteger(p) || p < 1 || p > 65535) {
        throw new RangeError(`A port is an integer from 1 to 65535, not ${p}`);
      }
    }
    this.lastNow = now;
    const key = tupleKey(l, tuple.localPort, r, tuple.remotePort);
    const old = this.#conns.get(key);
    if (old && old.inTimeWait) old.abandon(new TcpError("ECONNABORTED", "Reused"));
    else if (old || this.#halfOpen.has(key)) {
      throw new TypeError("A connection with this 4-tuple already exists");
    }
    if (this.#conns.size >= this.options.maxConnections) {
      throw new RangeError(`The TCP layer holds its limit of ${this.options.maxConnections}`);
    }
    const conn = this.#newConnection(
      {
        localAddress: l.slice(),
        localPort: tuple.localPort,
        remoteAddress: r.slice(),
        remotePort: tuple.remotePort,
      },
      key,
      now,
    );
    if (options?.congestionControl) conn.useCongestionControl(options.congestionControl);
    conn.openActive(now);
    this.#schedule(conn);
    return conn;
  }

  /**
   * Dispatches an ICMP error about a segment we sent. `src` and `dst` are the
   * addresses of the quoted (original) datagram: our address, then the peer's.
   * Packet-too-big lowers the connection's MSS when the quoted sequence number
   * is in flight (RFC 5927 §4.1); "unreachable" aborts a connection still in
   * SYN_SENT and is otherwise ignored (soft error, RFC 1122 §4.2.3.9).
   */
  icmpError(
    src: IpAddress,
    dst: IpAddress,
    quoted: Uint8Array,
    error: { kind: "unreachable" | "packet-too-big"; mtu?: number },
    now: number,
  ): void {
    this.lastNow = now;
    if (quoted.length < 8) {
      this.#stats.malformed++;
      return;
    }
    // `src`/`dst` are the addresses of the quoted datagram: ours, then the peer's.
    const sport = (quoted[0] << 8) | quoted[1];
    const dport = (quoted[2] << 8) | quoted[3];
    const seq = ((quoted[4] << 24) | (quoted[5] << 16) | (quoted[6] << 8) | quoted[7]) >>> 0;
    const conn = this.#conns.get(tupleKey(src, sport, dst, dport));
    if (!conn) {
      this.#stats.ignored++;
      return;
    }
    conn.icmpError(error.kind, error.mtu, seq);
    this.#schedule(conn);
    this.#flushDirty(now);
  }

  /**
   * Ends the batch of input since the last poll (each connection that
   * received in-order data sends one ACK for all of it and feeds its
   * reader), runs due timers and flushes work queued by stream callbacks.
   */
  poll(now: number): void {
    this.lastNow = now;
    this.endBatch(now);
    this.#flushDirty(now);
    const heap = this.#heap;
    // A safety bound: every connection's timers move forward when they run.
    let budget = 4 * heap.length + 1024;
    while (heap.length > 0 && budget-- > 0) {
      const top = heap[0];
      const c = top.conn;
      if (c.released || top.at !== c.heapAt) {
        this.#heapPop();
        continue;
      }
      if (top.at > now) {
        const actual = c.deadline();
        if (actual === top.at) break;
        // The deadline moved later: re-file it.
        this.#heapPop();
        c.heapAt = Infinity;
        this.#schedule(c);
        continue;
      }
      this.#heapPop();
      c.heapAt = Infinity;
      c.poll(now);
      this.#schedule(c);
    }
    this.#flushDirty(now);
  }

  /**
   * Ends the batch of input since the last call (`poll` does this first):
   * each connection that received in-order data in it feeds its reader and
   * sends one ACK for all of it (or leaves a single segment to the
   * delayed-ACK timer). Out-of-order data, holes filled, FINs and window
   * problems are ACKed at once during `input`, not here.
   */
  endBatch(now: number): void {
    const list = this.#batch;
    if (list.length === 0) return;
    this.lastNow = now;
    this.#batch = this.#batchSpare;
    for (let i = 0; i < list.length; i++) {
      const c = list[i];
      c.batched = false;
      if (c.released) continue;
      c.endBatch(now);
      this.#schedule(c);
    }
    list.length = 0;
    this.#batchSpare = list;
  }

  /**
   * The time `poll` should next run: exact, amortized O(log n) over a heap of
   * connection deadlines. When stream callbacks queued work since the last
   * poll, returns the last `now` (poll at once).
   */
  nextDeadline(): number {
    if (this.#dirty.length > 0 || this.#batch.length > 0) return this.lastNow;
    const heap = this.#heap;
    while (heap.length > 0) {
      const top = heap[0];
      const c = top.conn;
      if (c.released || top.at !== c.heapAt) {
        this.#heapPop();
        continue;
      }
      const actual = c.deadline();
      if (actual === top.at) return top.at;
      this.#heapPop();
      c.heapAt = Infinity;
      this.#schedule(c);
    }
    return Infinity;
  }

  /** Layer-wide counters. */
  get stats(): TcpLayerStats {
    return {
      ...this.#stats,
      connections: this.#conns.size,
      halfOpen: this.#halfOpen.size,
      timeWait: this.#timeWait.size,
      sources: this.#budgets.size,
      timers: this.#heap.length,
    };
  }

  /** What one source holds now: connections, half-open entries, TIME_WAIT entries, send-buffer bytes. */
  sourceUsage(source: unknown): {
    connections: number;
    halfOpen: number;
    timeWait: number;
    sendBytes: number;
    receiveBytes: number;
  } {
    return {
      connections: this.#connsBy.count(source),
      halfOpen: this.#halfOpenBy.count(source),
      timeWait: this.#timeWaitBy.count(source),
      sendBytes: this.#budgets.get(source)?.send.used ?? 0,
      receiveBytes: this.#budgets.get(source)?.receive.used ?? 0,
    };
  }

  // ------------------------------------------------------------ internals

  #flushDirty(now: number): void {
    while (this.#dirty.length > 0) {
      const list = this.#dirty;
      this.#dirty = [];
      for (const c of list) {
        c.dirty = false;
        if (c.released) continue;
        const wasHalfOpen = c.state === TcpState.SYN_RECEIVED;
        c.flush(now);
        if (wasHalfOpen && c.state !== TcpState.SYN_RECEIVED) this.#halfOpenDelete(c.key);
        this.#schedule(c);
      }
    }
  }

  /** Files `c` in the heap when its deadline moved earlier; later moves are fixed lazily. */
  #schedule(c: Connection): void {
    if (c.released) return;
    const d = c.deadline();
    if (d === c.heapAt) return;
    if (d < c.heapAt || c.heapAt === Infinity) {
      if (d === Infinity) return;
      c.heapAt = d;
      this.#heapPush({ at: d, conn: c });
      if (this.#heap.length > 4 * this.#conns.size + 64) this.#rebuildHeap();
    }
  }

  #rebuildHeap(): void {
    this.#releasedInHeap = 0;
    const live: HeapEntry[] = [];
    for (const e of this.#heap) if (!e.conn.released && e.at === e.conn.heapAt) live.push(e);
    this.#heap.length = 0;
    for (const e of live) this.#heapPush(e);
  }

  #heapPush(e: HeapEntry): void {
    const h = this.#heap;
    let i = h.length;
    h.push(e);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p].at <= e.at) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = e;
  }

  #heapPop(): void {
    const h = this.#heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    let i = 0;
    const n = h.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const m = r < n && h[r].at < h[l].at ? r : l;
      if (h[m].at >= last.at) break;
      h[i] = h[m];
      i = m;
    }
    h[i] = last;
  }
}
