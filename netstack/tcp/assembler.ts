/**
 * Out-of-order reassembly for the receive side (RFC 9293 §3.10.7.4): keeps
 * copies of segments that arrived beyond RCV.NXT, sorted and disjoint, and
 * reports SACK blocks for them (RFC 2018 §4). Bounded by a piece count and a
 * block (island) count; what does not fit is refused and counted by the caller.
 *
 * All positions are absolute sequence numbers compared relative to the
 * caller's RCV.NXT, which is always at or before every stored piece. Appends
 * after the last piece (the common case behind one hole) take O(1); the block
 * list is kept incrementally and searched by bisection, so a duplicate test
 * or a block lookup costs O(log blocks) and SACK generation O(log blocks)
 * per reported block.
 *
 * @module
 */

import { seqAdd, seqDiff } from "./seq.ts";

/** Most stored pieces. */
export const MAX_PIECES = 4096;
/**
 * Most separate blocks (islands of contiguous data). A 6 MiB window with 5 %
 * random loss has ~200 holes in flight; 64, the old limit, refused a third
 * of such a flight, which the sender then had to send again.
 */
export const MAX_BLOCKS = 1024;

/** Out-of-order segment store. */
export class Assembler {
  /** Sequence numbers of stored pieces, ascending from index `#h`. */
  #seqs: number[] = [];
  #data: Uint8Array[] = [];
  /** Index of the first live piece. */
  #h = 0;
  /** Blocks as absolute [start0, end0, start1, end1, …], ascending. */
  #bl: number[] = [];
  /** Start sequence numbers of the most recently received segments, newest first. */
  #recent: number[] = [];
  /** Bytes stored. */
  bytes = 0;

  /** True when nothing is stored. */
  get empty(): boolean {
    return this.#h === this.#seqs.length;
  }

  /** Number of stored pieces. */
  get pieces(): number {
    return this.#seqs.length - this.#h;
  }

  /** Number of blocks (islands). */
  get blocks(): number {
    return this.#bl.length >> 1;
  }

  /**
   * Stores the parts of `data` (at `seq`, strictly after `rcvNxt`) that are
   * not yet stored. Returns `false` when the limits refuse it.
   */
  insert(seq: number, data: Uint8Array, rcvNxt: number): boolean {
    const s = seqDiff(seq, rcvNxt);
    const e = s + data.length;
    if (data.length === 0 || s <= 0) return true;
    this.#noteRecent(seq);
    const seqs = this.#seqs, pieces = this.#data, bl = this.#bl;
    const n = seqs.length;
    // Fast path: at or after the end of the last piece.
    if (n === this.#h || s >= seqDiff(seqs[n - 1], rcvNxt) + pieces[n - 1].length) {
      const lastEnd = bl.length > 0 ? seqDiff(bl[bl.length - 1], rcvNxt) : -1;
      const extends_ = lastEnd === s;
      if (this.pieces + 1 > MAX_PIECES) return false;
      if (!extends_ && this.blocks + 1 > MAX_BLOCKS) return false;
      seqs.push(seq);
      pieces.push(data.slice());
      this.bytes += data.length;
      if (extends_) bl[bl.length - 1] = seqAdd(seq, data.length);
      else bl.push(seq, seqAdd(seq, data.length));
      return true;
    }
    // Slow path: collect the uncovered parts [cur, a) before each overlapping piece.
    let cur = s;
    let insertAt = this.#h;
    const add: [number, number][] = [];
    for (let i = this.#h; i < n; i++) {
      const a = seqDiff(seqs[i], rcvNxt), b = a + pieces[i].length;
      if (b <= s) {
        insertAt = i + 1;
        continue;
      }
      if (a >= e) break;
      if (a > cur) add.push([cur, a]);
      if (b > cur) cur = b;
    }
    if (cur < e) add.push([cur, e]);
    if (add.length === 0) return true;
    if (this.pieces + add.length > MAX_PIECES) return false;
    if (this.#blocksAfter(s, e, rcvNxt) > MAX_BLOCKS) return false;
    let at = insertAt;
    for (const [x, y] of add) {
      while (at < seqs.length && seqDiff(seqs[at], rcvNxt) < x) at++;
      seqs.splice(at, 0, seqAdd(rcvNxt, x));
      pieces.splice(at, 0, data.slice(x - s, y - s));
      this.bytes += y - x;
      at++;
    }
    this.#mergeBlock(s, e, rcvNxt);
    return true;
  }

  /**
   * Index (even) of the first block whose end is at or after `rel` (relative
   * to `ref`, which is at or before every block), or the list's length.
   */
  #firstEndingAtOrAfter(rel: number, ref: number): number {
    const bl = this.#bl;
    let lo = 0, hi = bl.length >> 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (seqDiff(bl[2 * mid + 1], ref) < rel) lo = mid + 1;
      else hi = mid;
    }
    return 2 * lo;
  }

  /** Blocks after adding [s, e) (relative to `rcvNxt`): merges touching ones. */
  #blocksAfter(s: number, e: number, rcvNxt: number): number {
    const bl = this.#bl;
    let touching = 0;
    for (let i = this.#firstEndingAtOrAfter(s, rcvNxt); i < bl.length; i += 2) {
      if (seqDiff(bl[i], rcvNxt) > e) break;
      touching++;
    }
    return this.blocks + 1 - touching;
  }

  /** Adds [s, e) (relative to `rcvNxt`) to the block list, merging what touches it. */
  #mergeBlock(s: number, e: number, rcvNxt: number): void {
    const bl = this.#bl;
    const i = this.#firstEndingAtOrAfter(s, rcvNxt);
    let j = i, ns = s, ne = e;
    while (j < bl.length && seqDiff(bl[j], rcvNxt) <= e) {
      ns = Math.min(ns, seqDiff(bl[j], rcvNxt));
      ne = Math.max(ne, seqDiff(bl[j + 1], rcvNxt));
      j += 2;
    }
    bl.splice(i, j - i, seqAdd(rcvNxt, ns), seqAdd(rcvNxt, ne));
  }

  #noteRecent(seq: number): void {
    const r = this.#recent;
    const i = r.indexOf(seq);
    if (i >= 0) r.splice(i, 1);
    r.unshift(seq);
    if (r.length > 4) r.length = 4;
  }

  /**
   * Takes the stored bytes that start at or before `rcvNxt`, trimmed to
   * start exactly at it, or `null` when the next byte is still missing.
   */
  take(rcvNxt: number): Uint8Array | null {
    const seqs = this.#seqs, pieces = this.#data;
    while (this.#h < seqs.length) {
      const d = seqDiff(seqs[this.#h], rcvNxt);
      if (d > 0) return null;
      const piece = pieces[this.#h];
      pieces[this.#h] = EMPTY;
      this.#h++;
      this.bytes -= piece.length;
      const end = seqAdd(seqs[this.#h - 1], piece.length);
      this.#compact();
      this.#pruneBlocks(end);
      if (-d < piece.length) return piece.subarray(-d);
    }
    return null;
  }

  #compact(): void {
    const h = this.#h;
    if (h === this.#seqs.length) {
      this.#seqs.length = 0;
      this.#data.length = 0;
      this.#h = 0;
    } else if (h > 64 && h * 2 > this.#seqs.length) {
      this.#seqs.splice(0, h);
      this.#data.splice(0, h);
      this.#h = 0;
    }
  }

  /** Drops block coverage below `to` (the caller's RCV.NXT moves there). */
  #pruneBlocks(to: number): void {
    const bl = this.#bl;
    let k = 0;
    while (k < bl.length && seqDiff(bl[k + 1], to) <= 0) k += 2;
    if (k > 0) bl.splice(0, k);
    if (bl.length > 0 && seqDiff(bl[0], to) < 0) bl[0] = to;
  }

  /** Removes everything (connection closed). */
  clear(): void {
    this.#seqs.length = 0;
    this.#data.length = 0;
    this.#h = 0;
    this.#bl.length = 0;
    this.#recent.length = 0;
    this.bytes = 0;
  }

  /**
   * Writes up to `max` SACK blocks [left, right) into `out` (pairs, from pair
   * index `first`, so a DSACK block can go before them) and returns their
   * count: first the block holding the most recent segment, then other
   * recent ones, then the rest in ascending order (RFC 2018 §4).
   */
  sackBlocks(out: Uint32Array, max: number, first = 0): number {
    const bl = this.#bl;
    const limit = first + max;
    let count = first;
    for (const r of this.#recent) {
      if (count >= limit) break;
      const bi = this.#blockHolding(r);
      if (bi >= 0) count = this.#emitBlock(out, bi, first, count);
    }
    for (let bi = 0; bi < bl.length && count < limit; bi += 2) {
      count = this.#emitBlock(out, bi, first, count);
    }
    return count - first;
  }

  /** Appends block `bi` unless already written; returns the new count. */
  #emitBlock(out: Uint32Array, bi: number, first: number, count: number): number {
    const bl = this.#bl;
    for (let k = first; k < count; k++) if (out[2 * k] === bl[bi]) return count;
    out[2 * count] = bl[bi];
    out[2 * count + 1] = bl[bi + 1];
    return count + 1;
  }

  /** Whether [seq, seq + len) is already stored entirely (a duplicate, RFC 2883). */
  holds(seq: number, len: number): boolean {
    const bi = this.#blockHolding(seq);
    return bi >= 0 && seqDiff(seqAdd(seq, len), this.#bl[bi + 1]) <= 0;
  }

  /** Index (even) of the block holding byte `seq`, or −1. */
  #blockHolding(seq: number): number {
    const bl = this.#bl;
    if (bl.length === 0) return -1;
    // Blocks all lie within one window after the first one's start.
    const ref = bl[0];
    const rel = seqDiff(seq, ref);
    if (rel < 0) return -1;
    const bi = this.#firstEndingAtOrAfter(rel + 1, ref);
    return bi < bl.length && seqDiff(bl[bi], ref) <= rel ? bi : -1;
  }
}

const EMPTY = new Uint8Array(0);
