/**
 * The receive side of a connection: RCV.NXT and the advertised right edge,
 * the queue the consumer reads from, out-of-order reassembly, SACK and DSACK
 * blocks to send (RFC 2018, RFC 2883), the window to advertise (RFC 9293
 * §3.8.6.2.2 SWS avoidance, rounded down to the scale, not shrunk), and the
 * receive-buffer growth.
 *
 * Invariants: the right edge we enforce is never left of one we advertised
 * (what a peer was offered is accepted), and lies less than one window-scale
 * unit beyond what the buffer can hold (`advEdge − nxt < free + 2^shift`),
 * so a consumer that never reads holds less than `buf + 2^shift` bytes,
 * whatever the peer sends.
 *
 * @module
 */

import type { ByteBudget } from "../quota.ts";
import { Assembler } from "./assembler.ts";
import { seqAdd, seqDiff } from "./seq.ts";

/** What {@linkcode Receiver.accept} did with a segment's data. */
export const Accepted = {
  /** In order; the ACK may be delayed. */
  IN_ORDER: 0,
  /** In order and it filled a hole, or out-of-order data remains: ACK at once. */
  FILLED: 1,
  /** Out of order (stored, duplicate or refused): ACK at once with SACK blocks. */
  OUT_OF_ORDER: 2,
} as const;
/** A value of {@linkcode Accepted}. */
export type AcceptedValue = typeof Accepted[keyof typeof Accepted];

/** Largest chunk handed to the consumer in one read (small segments are coalesced). */
const MAX_READ = 65536;
/** Queued chunks at least this long are handed over alone, not coalesced (a copy). */
const COALESCE_BELOW = 16384;

/** Receive sequence space, queue and window of one connection. */
export class Receiver {
  /** RCV.NXT. */
  nxt = 0;
  /** The right edge of the window we advertised and enforce. */
  advEdge = 0;
  /** Our window shift (RFC 7323). */
  shift = 0;
  /** Receive buffer size in bytes (grows up to the maximum). */
  buf: number;
  /** Largest segment seen from the peer (for SWS avoidance). */
  mss = 536;
  /** Bytes queued for the consumer. */
  queued = 0;
  /** The consumer went away: data is acknowledged and dropped, the window stays open. */
  discard = false;
  /** Receiver-side RTT estimate (ms) for buffer growth; 0 when unknown. */
  rtt = 0;
  /** Set when the buffer grew: a window update is worth sending. */
  grew = false;
  /** Segments refused by the reassembly limits. */
  refused = 0;
  /**
   * The receive budget of this connection's source, shared by its
   * connections: each counts its queue plus the window it offered and that
   * is not filled yet (what the peer may still send without asking), so
   * windows offered at once cannot add up beyond the budget.
   */
  budget: ByteBudget | null = null;
  /** Called once bytes of a full `budget` are freed (the window may open again). */
  onBudget: (() => void) | null = null;
  readonly #max: number;
  /** Filled chunks, oldest first; the open block's bytes come after them. */
  #queue: Uint8Array[] | null = null;
  /**
   * The open block: in-order bytes are copied into it as they arrive (their
   * one copy), and it is handed to the consumer as it is when the queue
   * before it is empty (no second copy). Its first `#blockUsed` bytes hold data.
   */
  #block: Uint8Array | null = null;
  #blockUsed = 0;
  /** Size of the next block: grows while the consumer reads less often than segments come. */
  #blockSize = 0;
  #asm: Assembler | null = null;
  #dsackL = -1;
  #dsackR = 0;
  #epochStart = 0;
  #epochBytes = 0;
  /** What this receiver counts in `budget` now. */
  #claim = 0;
  /** No more data will come (FIN received or the connection ended). */
  #ended = false;

  /** A receiver with a `buf`-byte buffer that may grow to `max`. */
  constructor(buf: number, max: number) {
    this.buf = buf;
    this.#max = max;
  }

  /** Bytes the peer may still send: the advertised right edge minus RCV.NXT. */
  get window(): number {
    const w = seqDiff(this.advEdge, this.nxt);
    return w > 0 ? w : 0;
  }

  /** True while out-of-order data waits in reassembly. */
  get outOfOrder(): boolean {
    return this.#asm !== null;
  }

  /**
   * Free space of the buffer (all of it once the consumer is gone), as far
   * as the source's budget allows: the window already offered plus what the
   * budget has free; and one segment to a connection holding no unread
   * byte (so that a connection of a source whose budget is held by idle
   * connections' windows still moves, while a source that stopped reading
   * holds at most its budget plus a segment per connection).
   */
  free(): number {
    if (this.discard) return this.buf;
    const own = Math.max(0, this.buf - this.queued);
    const budget = this.budget;
    if (!budget) return own;
    const room = this.window + budget.free;
    if (room >= own) return own;
    // The source's budget limits the window: ask to hear when it frees up.
    if (this.onBudget) budget.wait(this.onBudget);
    return this.queued === 0 ? Math.max(room, Math.min(own, this.mss)) : room;
  }

  /**
   * Re-counts this receiver in its source's budget: the queue, plus the
   * window offered and not yet filled until no more data can come.
   */
  syncBudget(): void {
    const budget = this.budget;
    if (!budget) return;
    const claim = this.discard ? 0 : this.queued + (this.#ended ? 0 : this.window);
    const delta = claim - this.#claim;
    this.#claim = claim;
    if (delta > 0) budget.used += delta;
    else if (delta < 0) budget.release(-delta);
  }

  /** No more data will come (FIN received, connection over): the window claims nothing more. */
  end(): void {
    this.#ended = true;
    this.syncBudget();
  }

  /** Starts receiving at `nxt` (the byte after the peer's SYN); `now` starts growth epochs. */
  start(nxt: number, now: number): void {
    this.nxt = this.advEdge = nxt;
    this.#epochStart = now;
  }

  /**
   * Takes `payload` at `seq` (already trimmed to the window, starting at or
   * after RCV.NXT). Returns what happened, for the ACK decision.
   */
  accept(seq: number, payload: Uint8Array, now: number, fallbackRtt: number): AcceptedValue {
    const len = payload.length;
    if (len > this.mss && len <= 65535) this.mss = len;
    if (seq !== this.nxt) {
      const asm = this.#asm ??= new Assembler();
      // A duplicate of out-of-order data: DSACK it (RFC 2883 §4.1.2).
      if (asm.holds(seq, len)) this.noteDuplicate(seq, seqAdd(seq, len));
      else {
        const stored = asm.bytes;
        if (!asm.insert(seq, payload, this.nxt)) this.refused++;
        // New bytes count toward growth when they arrive, also above a hole:
        // with loss, every round trip has one, and counting only in-order
        // bytes measured half the sender's rate (and grew the window late).
        this.#maybeGrow(asm.bytes - stored, now, fallbackRtt);
      }
      if (asm.empty) this.#asm = null;
      return Accepted.OUT_OF_ORDER;
    }
    this.#push(payload);
    this.nxt = seqAdd(this.nxt, len);
    let filled = false;
    const asm = this.#asm;
    if (asm && !asm.empty) {
      for (let c = asm.take(this.nxt); c; c = asm.take(this.nxt)) {
        this.#push(c);
        this.nxt = seqAdd(this.nxt, c.length);
        filled = true;
      }
      if (asm.empty) this.#asm = null;
    }
    this.#maybeGrow(len, now, fallbackRtt);
    this.syncBudget();
    return filled || this.#asm ? Accepted.FILLED : Accepted.IN_ORDER;
  }

  /**
   * Copies in-order bytes (at RCV.NXT) into the open block, or into a new
   * one when they do not fit: as big as the consumer lagged behind lately
   * (doubled each time a block fills before a read, up to 64 KiB), but not
   * beyond the window the peer may still fill, so the spare room of a block
   * is memory the window already claims.
   */
  #push(data: Uint8Array): void {
    if (this.discard) return;
    const len = data.length;
    let block = this.#block;
    if (block && this.#blockUsed + len > block.length) {
      this.#blockSize = Math.min(MAX_READ, Math.max(2 * block.length, len));
      (this.#queue ??= []).push(block.subarray(0, this.#blockUsed));
      block = null;
    }
    if (!block) {
      const room = this.window;
      block = this.#block = new Uint8Array(Math.max(len, Math.min(this.#blockSize, room)));
      this.#blockUsed = 0;
    }
    block.set(data, this.#blockUsed);
    this.#blockUsed += len;
    this.queued += len;
  }

  /**
   * The next chunk for the consumer (up to 64 KiB, small segments
   * coalesced), or null when the queue is empty.
   */
  take(): Uint8Array | null {
    const q = this.#queue;
    if (!q || q.length === 0) return this.#takeBlock();
    let chunk: Uint8Array;
    if (q[0].length >= COALESCE_BELOW) chunk = q.shift()!;
    else {
      // Small chunks (a block that the window kept small, the first blocks of
      // a burst) are coalesced, with the open block when it fits behind them.
      let n = 0, k = 0;
      while (k < q.length && n + q[k].length <= MAX_READ) n += q[k++].length;
      const open = k === q.length && this.#blockUsed > 0 && n + this.#blockUsed <= MAX_READ
        ? this.#blockUsed
        : 0;
      if (k <= 1 && open === 0) chunk = q.shift()!;
      else {
        chunk = new Uint8Array(n + open);
        let at = 0;
        for (let i = 0; i < k; i++) {
          chunk.set(q[i], at);
          at += q[i].length;
        }
        q.splice(0, k);
        if (open > 0) {
          chunk.set(this.#block!.subarray(0, open), at);
          this.#block = null;
          this.#blockUsed = 0;
        }
      }
    }
    this.queued -= chunk.length;
    this.syncBudget();
    if (q.length === 0) this.#queue = null;
    return chunk;
  }

  /** Hands over the open block's data (the next one is sized by what this one held). */
  #takeBlock(): Uint8Array | null {
    const block = this.#block;
    const used = this.#blockUsed;
    if (!block || used === 0) return null;
    this.#block = null;
    this.#blockUsed = 0;
    this.#blockSize = Math.min(MAX_READ, Math.max(2 * used, this.#blockSize >> 1));
    this.queued -= used;
    this.syncBudget();
    return used === block.length ? block : block.subarray(0, used);
  }

  /** The consumer cancelled: drop what is queued and discard from now on. */
  cancel(): void {
    this.discard = true;
    this.#forgetQueue();
  }

  #forgetQueue(): void {
    this.#queue = null;
    this.#block = null;
    this.#blockUsed = 0;
    this.queued = 0;
    this.syncBudget();
  }

  /** Forgets reassembly and queue (connection failed). */
  clear(): void {
    this.#asm = null;
    this.#forgetQueue();
  }

  /** Forgets out-of-order data only (no more data will come; the queue stays readable). */
  dropReassembly(): void {
    this.#asm = null;
  }

  /**
   * Receive-buffer growth ("dynamic right-sizing" in the spirit of Linux):
   * per receiver RTT, when the peer sent at least half the buffer (new bytes,
   * in order or not) and the consumer kept the queue under half of it, the
   * window is what limits the transfer, so the buffer grows to four times
   * what arrived (at least double, up to the maximum). A consumer that does
   * not read never grows it.
   */
  #maybeGrow(len: number, now: number, fallbackRtt: number): void {
    if (this.buf >= this.#max) return;
    this.#epochBytes += len;
    const rtt = Math.max(1, this.rtt || fallbackRtt || 100);
    if (now - this.#epochStart < rtt) return;
    if (this.#epochBytes * 2 >= this.buf && this.queued * 2 < this.buf) {
      // Room for a sender that doubles per round trip, and its burst (Linux's
      // tcp_rcv_space_adjust likewise gives about four times what arrived).
      this.buf = Math.min(this.#max, Math.max(this.buf * 2, this.#epochBytes * 4));
      this.grew = true;
    }
    this.#epochStart = now;
    this.#epochBytes = 0;
  }

  /**
   * A receiver RTT sample (ms) from a timestamp echo or the handshake:
   * smoothed both ways (as Linux's tcp_rcv_rtt_update with timestamps). Not
   * the minimum: on a reordering path a segment that overtook others echoes
   * an ACK that overtook others too, and a minimum of such samples (1 ms on a
   * 100 ms path) made every growth epoch too short to ever fill the window.
   */
  rttSample(sample: number): void {
    this.rtt = this.rtt === 0 ? sample : 0.875 * this.rtt + 0.125 * sample;
  }

  /**
   * The window field to advertise (RFC 9293 §3.8.6.2.2 SWS avoidance: the
   * edge moves only by a meaningful amount), and moves the enforced edge.
   */
  advertise(): number {
    const shift = this.shift;
    const cur = this.window;
    const free = this.free();
    let w = cur;
    if (free > cur && (free - cur >= Math.min(this.buf >> 1, this.mss) || cur === 0)) {
      w = free;
      if (cur === 0 && free < Math.min(this.buf >> 1, this.mss)) w = 0;
    }
    // Round down: never offer more than the buffer holds.
    const unit = 2 ** shift;
    let field = Math.floor(w / unit);
    if (field > 65535) field = 65535;
    if (field * unit < cur) {
      // Rounding down would move the right edge left (RFC 9293 §3.8.6.2.2:
      // do not shrink the window). Advertise the edge rounded up and accept
      // up to it, as Linux does: a peer may send everything we advertise,
      // and trimming those last bytes left a hole it had to send again.
      // That is at most one unit (2^shift − 1 bytes) beyond the buffer; when
      // the buffer is already that far over (a consumer that stopped
      // reading), the window shrinks by less than a unit instead, and the
      // old edge stays enforced, so nothing the peer was offered is lost.
      const up = Math.min(65535, Math.ceil(cur / unit));
      if (up * unit - this.free() < unit) {
        field = up;
      } else {
        return field;
      }
    }
    this.advEdge = seqAdd(this.nxt, field * unit);
    this.syncBudget();
    return field;
  }

  /**
   * Whether the window could open by enough to be worth an update of its
   * own: by a meaningful amount (SWS avoidance) and to at least twice what
   * the peer has left (as Linux's tcp_cleanup_rbuf). A read that frees less
   * waits for the next ACK to carry it: while the window is wide open, as in
   * a bulk transfer to a reader that keeps up, that is every batch's ACK.
   */
  updateWorthSending(): boolean {
    const free = this.free();
    const cur = this.window;
    return free - cur >= Math.min(this.buf >> 1, 2 * this.mss) && free >= 2 * cur;
  }

  /** Remembers a duplicate range for the next ACK's first SACK block (RFC 2883). */
  noteDuplicate(left: number, right: number): void {
    this.#dsackL = left;
    this.#dsackR = right;
  }

  /** SACK blocks the next ACK would carry (at most `max`). */
  blockCount(max: number): number {
    const n = (this.#dsackL >= 0 ? 1 : 0) + (this.#asm ? this.#asm.blocks : 0);
    return n < max ? n : max;
  }

  /**
   * Writes the SACK blocks of an ACK into `out` (pairs): a pending DSACK
   * block first (then forgotten), then the reassembly's blocks. Returns the count.
   */
  writeBlocks(out: Uint32Array, max: number): number {
    let n = 0;
    if (this.#dsackL >= 0) {
      out[0] = this.#dsackL;
      out[1] = this.#dsackR;
      this.#dsackL = -1;
      n = 1;
    }
    if (this.#asm) n += this.#asm.sackBlocks(out, max - n, n);
    return n;
  }
}
