/**
 * The sender's SACK scoreboard (RFC 6675 §3): which bytes above SND.UNA the
 * peer has reported as received, as sorted disjoint [start, end) ranges of
 * sequence numbers. Bounded to {@linkcode MAX_RANGES} ranges.
 *
 * @module
 */

import { seqDiff, seqGt, seqLt } from "./seq.ts";

/** Most ranges kept; further blocks that would add a range are ignored. */
export const MAX_RANGES = 32;

/** SACKed ranges above SND.UNA. */
export class Scoreboard {
  /** [start0, end0, start1, end1, …] ascending. */
  #r: number[] = [];
  /** Bytes covered by the ranges. */
  sacked = 0;

  /** True when no range is held. */
  get empty(): boolean {
    return this.#r.length === 0;
  }

  /** The highest SACKed sequence number (end of the last range), or `una` when empty. */
  highest(una: number): number {
    const n = this.#r.length;
    return n === 0 ? una : this.#r[n - 1];
  }

  /** Adds [left, right) (already validated to lie in (una, snd.max]). */
  add(left: number, right: number, una: number): void {
    const r = this.#r;
    const l = seqDiff(left, una), e = seqDiff(right, una);
    // Find ranges overlapping or adjacent to [l, e] and merge them.
    let i = 0;
    while (i < r.length && seqDiff(r[i + 1], una) < l) i += 2;
    let j = i;
    let nl = l, ne = e;
    while (j < r.length && seqDiff(r[j], una) <= e) {
      nl = Math.min(nl, seqDiff(r[j], una));
      ne = Math.max(ne, seqDiff(r[j + 1], una));
      j += 2;
    }
    if (j === i && r.length >= 2 * MAX_RANGES) return;
    for (let k = i; k < j; k += 2) this.sacked -= seqDiff(r[k + 1], r[k]);
    r.splice(i, j - i, (una + nl) >>> 0, (una + ne) >>> 0);
    this.sacked += ne - nl;
  }

  /** Forgets everything at or below `una` (cumulatively acknowledged). */
  prune(una: number): void {
    const r = this.#r;
    let drop = 0;
    while (drop < r.length && !seqGt(r[drop + 1], una)) {
      this.sacked -= seqDiff(r[drop + 1], r[drop]);
      drop += 2;
    }
    if (drop > 0) r.splice(0, drop);
    if (r.length > 0 && seqLt(r[0], una)) {
      this.sacked -= seqDiff(una, r[0]);
      r[0] = una;
    }
  }

  /** Removes every range (after a retransmission timeout). */
  clear(): void {
    this.#r.length = 0;
    this.sacked = 0;
  }

  /**
   * The first un-SACKed byte range at or after `from` and below the highest
   * SACKed byte, as [start, end), or `null` when there is none. Writes into `out`.
   */
  nextHole(from: number, out: [number, number]): [number, number] | null {
    const r = this.#r;
    let cur = from;
    for (let i = 0; i < r.length; i += 2) {
      if (!seqGt(r[i + 1], cur)) continue; // range entirely before cur
      if (seqGt(r[i], cur)) {
        out[0] = cur;
        out[1] = r[i];
        return out;
      }
      cur = r[i + 1];
    }
    return null;
  }

  /** `seq`, or the end of the SACKed range that holds it. */
  skipSacked(seq: number): number {
    const r = this.#r;
    for (let i = 0; i < r.length; i += 2) {
      if (seqGt(r[i], seq)) break;
      if (seqLt(seq, r[i + 1])) return r[i + 1];
    }
    return seq;
  }

  /** Bytes from `seq` to the start of the next SACKed range (Infinity when none). */
  sackedAfter(seq: number): number {
    const r = this.#r;
    for (let i = 0; i < r.length; i += 2) if (seqGt(r[i], seq)) return seqDiff(r[i], seq);
    return Infinity;
  }

  /** Un-SACKed bytes between `from` and the highest SACKed byte. */
  holeBytes(from: number): number {
    const r = this.#r;
    let cur = from, n = 0;
    for (let i = 0; i < r.length; i += 2) {
      if (!seqGt(r[i + 1], cur)) continue;
      if (seqGt(r[i], cur)) n += seqDiff(r[i], cur);
      cur = r[i + 1];
    }
    return n;
  }
}
