/**
 * Sender-side loss recovery, one record per transmitted segment:
 *
 * - **Records.** Every segment we send (new data or FIN) gets a record in a
 *   sequence-ordered ring, with its last transmit time and the
 *   delivery-rate bookkeeping of draft-cheng-iccrg-delivery-rate-estimation.
 *   Records that can still be detected lost (sent, not SACKed, not awaiting
 *   retransmission) are also on a list ordered by transmit time, so that
 *   RACK looks only at the segments sent before the most recently delivered
 *   one (as Linux's `tsorted_sent_queue`). Records are reused: steady state
 *   allocates nothing, an idle connection holds none.
 * - **SACK and DSACK** (RFC 2018, RFC 2883 §4): blocks mark whole records
 *   SACKed; a first block below the cumulative ACK or inside the second is a
 *   DSACK, which counts a spurious retransmission (RFC 3708) and widens the
 *   reordering window.
 * - **RACK-TLP** (RFC 8985): time-based loss detection with a reordering
 *   window of min_RTT/4 (§6.2), widened in steps of min_RTT/4 per DSACK round
 *   up to SRTT and kept for 16 recoveries (§6.2.4); a reordering timer; the
 *   Tail Loss Probe itself is scheduled by the connection (it owns sending).
 * - **Delivery-rate samples** for the congestion controller (one per ACK).
 * - **PRR** (RFC 6937) for the window during fast recovery.
 * - **Undo** bookkeeping: retransmissions of the episode that DSACKs prove
 *   spurious (Linux's `undo_retrans`).
 *
 * Byte counters follow Linux's packets_in_flight, in bytes:
 * in flight = outstanding − SACKed − lost + retransmitted-after-lost.
 *
 * @module
 */

import type { RateSample } from "./congestion.ts";
import { seqDiff, seqGe, seqGt, seqLe, seqLt } from "./seq.ts";

const SACKED = 1;
const LOST = 2;
/** Retransmitted and that retransmission is still in flight. */
const RETRANS = 4;
/** Ever retransmitted (RTT and RACK ambiguity). */
const EVER_RETRANS = 8;

/** One transmitted segment (or a lone FIN). */
export class SentSegment {
  /** First sequence number. */
  start = 0;
  /** Sequence number after the segment (a FIN counts one). */
  end = 0;
  /** The segment carries our FIN. */
  fin = false;
  /** SACKED | LOST | RETRANS | EVER_RETRANS. */
  flags = 0;
  /** Last transmit time, ms. */
  xmitTs = 0;
  /** Connection's delivered bytes when this was (last) sent (P.delivered). */
  delivered = 0;
  /** C.delivered_time when sent. */
  deliveredTime = 0;
  /** C.first_tx_time when sent. */
  firstTxTime = 0;
  /** C.lost when sent. */
  lostAtSend = 0;
  /** Bytes in flight just after this was sent. */
  txInFlight = 0;
  /** Sent while application-limited. */
  appLimited = false;
  /** Time-ordered list links (null when not on the list). */
  tsPrev: SentSegment | null = null;
  /** Time-ordered list links. */
  tsNext: SentSegment | null = null;
  /** On the time-ordered list. */
  onTsList = false;

  /** Length in sequence space. */
  get length(): number {
    return seqDiff(this.end, this.start);
  }
}

/** What one ACK changed, for the connection's decisions. */
export interface AckResult {
  /** Bytes cumulatively acknowledged by this ACK. */
  acked: number;
  /** Bytes newly acknowledged or SACKed (PRR's DeliveredData). */
  delivered: number;
  /** The ACK carried a DSACK block. */
  dsack: boolean;
  /** DSACK blocks that reported a retransmission of the current episode. */
  dsackRetrans: number;
  /**
   * Eifel evidence (RFC 3522) from a segment retransmitted in the current
   * episode and now cumulatively acknowledged: 0 none, 1 the ACK echoes the
   * retransmission (it was needed), 2 it echoes an earlier transmission (the
   * original arrived: the retransmission was spurious).
   */
  eifel: 0 | 1 | 2;
}

/** A zeroed {@linkcode AckResult} to pass to {@linkcode LossRecovery.onAck}. */
export function newAckResult(): AckResult {
  return { acked: 0, delivered: 0, dsack: false, dsackRetrans: 0, eifel: 0 };
}

/** Options of {@linkcode LossRecovery}. */
export interface LossRecoveryOptions {
  /** Whether the peer agreed to SACK (RACK is used only then). */
  sack: boolean;
}

/** Most DSACK-driven reordering-window multiplier (RFC 8985 §6.2.4 caps at SRTT anyway). */
const MAX_REO_MULT = 16;
/** Recoveries a widened reordering window is kept for (RFC 8985 §6.2.4). */
const REO_PERSIST = 16;
/** Window over which the minimum RTT is kept (RFC 8985 uses a windowed min; Linux 5 min). */
const MIN_RTT_WINDOW = 300_000;

/** Per-connection sender loss recovery state. */
export class LossRecovery {
  // Sequence-ordered ring of records.
  #ring: (SentSegment | undefined)[] = [];
  #head = 0;
  #count = 0;
  /** Ring offset (from head) from which lost, unretransmitted records are searched. */
  #lostCursor = 0;
  // Time-ordered list.
  #tsHead: SentSegment | null = null;
  #tsTail: SentSegment | null = null;
  #sack: boolean;

  /** Bytes in records (sent, not cumulatively acknowledged). */
  outBytes = 0;
  /** Bytes SACKed. */
  sackedBytes = 0;
  /** Bytes marked lost (retransmitted or not). */
  lostBytes = 0;
  /** Bytes retransmitted after being marked lost, still in flight. */
  retransBytes = 0;
  /** Records marked lost and not yet retransmitted. */
  lostPending = 0;
  /** Duplicate ACKs counted as delivered segments for a peer without SACK. */
  renoSacked = 0;

  // Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation).
  /** C.delivered: bytes delivered so far. */
  delivered = 0;
  /** C.delivered when the last rate sample was completed. */
  #deliveredSampled = 0;
  /** C.delivered_time. */
  deliveredTime = 0;
  /** C.first_tx_time. */
  firstTxTime = 0;
  /** C.lost: bytes marked lost so far. */
  totalLost = 0;
  /** C.app_limited: 0 when not application-limited, else the delivered mark. */
  appLimited = 0;
  readonly #rs: RateSample = {
    ackedSacked: 0,
    newlyLost: 0,
    priorInFlight: 0,
    inFlight: 0,
    totalDelivered: 0,
    totalLost: 0,
    priorDelivered: -1,
    delivered: 0,
    lost: 0,
    txInFlight: 0,
    interval: 0,
    deliveryRate: 0,
    rtt: -1,
    isAppLimited: false,
  };
  #rsSendElapsed = 0;
  #rsAckElapsed = 0;
  #rsLostAtSend = 0;
  #rsEndSeq = 0;

  // RACK (RFC 8985 §6).
  /** RACK.xmit_ts of the most recently sent segment delivered; -1 none. */
  rackXmitTs = -1;
  /** RACK.end_seq. */
  rackEndSeq = 0;
  /** RACK.rtt. */
  rackRtt = 0;
  /**
   * When the timestamp echoed by the ACK being processed was sent (ms, our
   * clock floored as TSval is), or -1 without timestamps. Set before `onAck`.
   */
  echoedAt = -1;
  /** RACK.fack: highest end sequence delivered. */
  fack = 0;
  /** RACK.reordering_seen. */
  reorderingSeen = false;
  /** Minimum RTT seen, ms (0 = none). */
  minRtt = 0;
  #minRttAt = 0;
  #reoMult = 1;
  #reoPersist = 0;
  /** SND.NXT when the last DSACK round began; -1 none. */
  #dsackRound = -1;

  // Undo (RFC 3708 / Linux undo_retrans).
  /** SND.UNA when the current loss episode began, -1 when none. */
  undoMarker = -1;
  /** When the current loss episode began (ms). */
  episodeStart = Infinity;
  /** Retransmissions of the episode not yet shown spurious. */
  undoRetrans = 0;

  // PRR (RFC 6937).
  #prrDelivered = 0;
  #prrOut = 0;
  #recoverFs = 0;

  /** DSACK blocks received: duplicates the peer saw, mostly spurious retransmissions. */
  dsacks = 0;

  /** Creates empty state. */
  constructor(options: LossRecoveryOptions) {
    this.#sack = options.sack;
  }

  /** Number of records. */
  get size(): number {
    return this.#count;
  }

  /** Bytes in flight (Linux's packets_in_flight, in bytes). */
  get inFlight(): number {
    const f = this.outBytes - this.sackedBytes - this.lostBytes + this.retransBytes -
      this.renoSacked;
    return f > 0 ? f : 0;
  }

  #at(i: number): SentSegment {
    const ring = this.#ring;
    return ring[(this.#head + i) % ring.length]!;
  }

  /** The record with the highest sequence numbers, or null. */
  last(): SentSegment | null {
    return this.#count === 0 ? null : this.#at(this.#count - 1);
  }

  /**
   * The first record the receiver has not SACKed, if it is in flight (not
   * marked lost and waiting to be sent again): the segment a stalled
   * recovery waits for. `null` otherwise.
   */
  headInFlight(): SentSegment | null {
    for (let i = 0; i < this.#count; i++) {
      const rec = this.#at(i);
      if (rec.flags & SACKED) continue;
      return (rec.flags & (LOST | RETRANS)) === LOST ? null : rec;
    }
    return null;
  }

  // ------------------------------------------------------------ sending

  /** Records a new segment [start, end) sent at `now`; returns it. */
  sent(start: number, end: number, fin: boolean, now: number): SentSegment {
    let ring = this.#ring;
    if (this.#count === ring.length) {
      const n = Math.max(16, ring.length * 2);
      const next: (SentSegment | undefined)[] = new Array(n);
      for (let i = 0; i < this.#count; i++) next[i] = ring[(this.#head + i) % ring.length];
      this.#ring = ring = next;
      this.#head = 0;
    }
    const idx = (this.#head + this.#count) % ring.length;
    const rec = ring[idx] ??= new SentSegment();
    ring[idx] = rec;
    this.#count++;
    rec.start = start;
    rec.end = end;
    rec.fin = fin;
    rec.flags = 0;
    const before = this.inFlight;
    this.outBytes += rec.length;
    this.#stamp(rec, now, before);
    this.#tsAppend(rec);
    return rec;
  }

  /** Records that `rec` was sent again at `now` (retransmission or TLP). */
  retransmitted(rec: SentSegment, now: number): void {
    const before = this.inFlight;
    if ((rec.flags & (LOST | RETRANS)) === LOST) {
      // A lost segment sent again is back in flight.
      rec.flags |= RETRANS;
      this.retransBytes += rec.length;
      this.lostPending--;
    }
    rec.flags |= EVER_RETRANS;
    if (this.undoMarker >= 0) this.undoRetrans++;
    this.#stamp(rec, now, before);
    if (rec.onTsList) this.#tsRemove(rec);
    this.#tsAppend(rec);
  }

  /** Per-send rate bookkeeping (delivery-rate draft §3.2); `before` = bytes in flight before. */
  #stamp(rec: SentSegment, now: number, before: number): void {
    if (before === 0) {
      this.firstTxTime = now;
      this.deliveredTime = now;
    }
    rec.xmitTs = now;
    rec.firstTxTime = this.firstTxTime;
    rec.deliveredTime = this.deliveredTime;
    rec.delivered = this.delivered;
    rec.lostAtSend = this.totalLost;
    rec.appLimited = this.appLimited !== 0;
    rec.txInFlight = this.inFlight;
  }

  /** The sender has nothing more to send while the window has room (§3.4). */
  markAppLimited(): void {
    const mark = this.delivered + this.inFlight;
    this.appLimited = mark > 0 ? mark : 1;
  }

  /** The first record marked lost and not yet retransmitted, or null. */
  nextLost(): SentSegment | null {
    if (this.lostPending === 0) return null;
    for (let i = this.#lostCursor; i < this.#count; i++) {
      const r = this.#at(i);
      if ((r.flags & (LOST | RETRANS | SACKED)) === LOST) {
        this.#lostCursor = i;
        return r;
      }
    }
    this.#lostCursor = this.#count;
    return null;
  }

  // ------------------------------------------------------------ ACK processing

  /**
   * Processes the cumulative ACK and SACK blocks of one segment. `blocks`
   * holds `count` pairs; `una` is SND.UNA before this ACK, `sndMax` SND.MAX.
   * Fills the rate sample (read it with {@linkcode LossRecovery.rateSample}).
   */
  onAck(
    ack: number,
    blocks: Uint32Array,
    count: number,
    una: number,
    sndMax: number,
    now: number,
    out: AckResult,
  ): void {
    out.acked = 0;
    out.delivered = 0;
    out.dsack = false;
    out.dsackRetrans = 0;
    out.eifel = 0;
    const rs = this.#rs;
    rs.priorInFlight = this.inFlight;
    rs.priorDelivered = -1;
    rs.ackedSacked = 0;
    rs.newlyLost = 0;
    rs.rtt = -1;
    // Deliveries since the last completed sample (an overtaken ACK's SACK
    // blocks are tagged without a sample of their own and count here).
    const deliveredBefore = this.#deliveredSampled;

    // DSACK (RFC 2883 §4): the first block is below the cumulative ACK or
    // lies inside the second block.
    let first = 0;
    if (count > 0) {
      const l = blocks[0], r = blocks[1];
      const below = seqLe(r, ack);
      const inside = count > 1 && seqGe(l, blocks[2]) && seqLe(r, blocks[3]);
      if (seqLt(l, r) && (below || inside)) {
        first = 1;
        out.dsack = true;
        this.dsacks++;
        // Linux's tcp_check_dsack: a DSACK for data between the episode's
        // start and the old SND.UNA shows one retransmission was spurious.
        if (
          this.undoMarker >= 0 && this.undoRetrans > 0 && seqLe(r, una) &&
          seqGt(r, this.undoMarker)
        ) {
          this.undoRetrans--;
          out.dsackRetrans++;
        } else if (inside && this.undoMarker >= 0 && this.undoRetrans > 0) {
          // A duplicate above SND.UNA: spurious if we had retransmitted it.
          const i = this.#find(l);
          if (i < this.#count) {
            const rec = this.#at(i);
            if ((rec.flags & EVER_RETRANS) && seqGt(rec.end, this.undoMarker)) {
              this.undoRetrans--;
              out.dsackRetrans++;
            }
          }
        }
        this.#onDsack(sndMax);
      }
    }

    // SACK blocks within (ack, sndMax].
    if (this.#sack) {
      for (let b = first; b < count; b++) {
        const l = blocks[2 * b], r = blocks[2 * b + 1];
        if (!seqLt(l, r) || !seqGt(r, ack) || seqGt(r, sndMax)) continue;
        this.#sackRange(seqGt(l, ack) ? l : ack, r, now);
      }
    }

    // Cumulative ACK: drop records at or below `ack`.
    if (seqGt(ack, una)) {
      out.acked = seqDiff(ack, una);
      while (this.#count > 0) {
        const rec = this.#at(0);
        if (seqGt(rec.end, ack)) {
          if (seqGt(ack, rec.start)) {
            // Partly acknowledged (a receiver that took part of a segment).
            const part = seqDiff(ack, rec.start);
            if (!(rec.flags & SACKED)) this.delivered += part;
            this.#adjustCounters(rec, -part);
            rec.start = ack;
          }
          break;
        }
        if ((rec.flags & EVER_RETRANS) && out.eifel === 0 && rec.xmitTs >= this.episodeStart) {
          if (this.echoedAt >= 0) out.eifel = this.echoedAt < Math.floor(rec.xmitTs) ? 2 : 1;
        }
        if (!(rec.flags & SACKED)) this.#delivered(rec, now, true);
        this.#removeHead();
      }
    }

    out.delivered = this.delivered - deliveredBefore;
    rs.ackedSacked = out.delivered;
    if (this.appLimited !== 0 && this.delivered > this.appLimited) this.appLimited = 0;
  }

  #adjustCounters(rec: SentSegment, delta: number): void {
    this.outBytes += delta;
    if (rec.flags & SACKED) this.sackedBytes += delta;
    if (rec.flags & LOST) this.lostBytes += delta;
    if (rec.flags & RETRANS) this.retransBytes += delta;
  }

  #removeHead(): void {
    const rec = this.#at(0);
    this.#adjustCounters(rec, -rec.length);
    if ((rec.flags & (LOST | RETRANS | SACKED)) === LOST) this.lostPending--;
    if (rec.onTsList) this.#tsRemove(rec);
    rec.flags = 0;
    this.#head = (this.#head + 1) % this.#ring.length;
    this.#count--;
    if (this.#lostCursor > 0) this.#lostCursor--;
    if (this.#count === 0) {
      this.#head = 0;
      this.#lostCursor = 0;
      if (this.#ring.length > 64) this.#ring = []; // an idle connection keeps none
    }
  }

  /** Index of the first record whose end is after `seq` (binary search). */
  #find(seq: number): number {
    let lo = 0, hi = this.#count;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (seqLe(this.#at(mid).end, seq)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  #sackRange(l: number, r: number, now: number): void {
    for (let i = this.#find(l); i < this.#count; i++) {
      const rec = this.#at(i);
      if (seqGe(rec.start, r)) break;
      // Only records wholly inside the block count (segments are SACKed whole).
      if (seqLt(rec.start, l) || seqGt(rec.end, r) || (rec.flags & SACKED)) continue;
      if ((rec.flags & (LOST | RETRANS)) === LOST) this.lostPending--;
      if (rec.flags & LOST) this.lostBytes -= rec.length;
      if (rec.flags & RETRANS) this.retransBytes -= rec.length;
      rec.flags = (rec.flags & EVER_RETRANS) | SACKED;
      this.sackedBytes += rec.length;
      if (rec.onTsList) this.#tsRemove(rec);
      this.#delivered(rec, now, false);
    }
  }

  /**
   * A record newly delivered (SACKed, or acknowledged `inOrder`): rate
   * sample and RACK. The sample's RTT comes only from segments delivered in
   * order: a segment SACKed above a hole may have overtaken others on a
   * faster route (netem-style reordering), and its RTT is not the path's —
   * taken as the minimum it would shrink BBR's BDP to nothing.
   */
  #delivered(rec: SentSegment, now: number, inOrder: boolean): void {
    const len = rec.length;
    this.delivered += len;
    this.deliveredTime = now;
    const rs = this.#rs;
    const retrans = (rec.flags & EVER_RETRANS) !== 0;
    // Rate sample from the most recently sent delivered segment (§3.3).
    if (
      rs.priorDelivered < 0 || rec.delivered > rs.priorDelivered ||
      (rec.delivered === rs.priorDelivered && seqGt(rec.end, this.#rsEndSeq))
    ) {
      rs.priorDelivered = rec.delivered;
      rs.isAppLimited = rec.appLimited;
      rs.txInFlight = rec.txInFlight;
      this.#rsLostAtSend = rec.lostAtSend;
      this.#rsSendElapsed = rec.xmitTs - rec.firstTxTime;
      this.#rsAckElapsed = now - rec.deliveredTime;
      this.#rsEndSeq = rec.end;
      this.firstTxTime = rec.xmitTs;
    }
    if (!retrans && inOrder) {
      const rtt = now - rec.xmitTs;
      if (rs.rtt < 0 || rtt < rs.rtt) rs.rtt = rtt;
    }
    // Reordering: a never-retransmitted segment delivered below RACK.fack.
    if (seqLt(rec.end, this.fack) && !retrans) this.reorderingSeen = true;
    else if (seqGt(rec.end, this.fack)) this.fack = rec.end;
    // RACK.xmit_ts / end_seq (RFC 8985 §6.2 step 2). A retransmitted segment
    // whose delivery may be that of the original does not advance RACK: the
    // ACK echoes a timestamp from before the retransmission, or (without
    // timestamps) it came less than min_RTT after it, or no RTT is known yet.
    if (retrans) {
      if (
        this.echoedAt >= 0 ? this.echoedAt < Math.floor(rec.xmitTs) : (
          this.minRtt === 0 || now - rec.xmitTs < this.minRtt
        )
      ) return;
    }
    const rtt = now - rec.xmitTs;
    if (
      this.rackXmitTs < 0 || rec.xmitTs > this.rackXmitTs ||
      (rec.xmitTs === this.rackXmitTs && seqGt(rec.end, this.rackEndSeq))
    ) {
      this.rackXmitTs = rec.xmitTs;
      this.rackEndSeq = rec.end;
      this.rackRtt = rtt;
    }
    if (
      !retrans && (this.minRtt === 0 || rtt < this.minRtt || now - this.#minRttAt > MIN_RTT_WINDOW)
    ) {
      this.minRtt = Math.max(rtt, 0.01);
      this.#minRttAt = now;
    }
  }

  /** RTT of the newest never-retransmitted segment this ACK delivered, ms; -1 none. */
  get ackRtt(): number {
    return this.#rs.rtt;
  }

  /** Completes the rate sample after loss detection; read it afterwards. */
  rateSample(newlyLost: number): RateSample {
    const minRtt = this.minRtt;
    const rs = this.#rs;
    this.#deliveredSampled = this.delivered;
    rs.newlyLost = newlyLost;
    rs.inFlight = this.inFlight;
    rs.totalDelivered = this.delivered;
    rs.totalLost = this.totalLost;
    if (rs.priorDelivered < 0) {
      rs.delivered = 0;
      rs.lost = 0;
      rs.interval = 0;
      rs.deliveryRate = 0;
      return rs;
    }
    rs.delivered = this.delivered - rs.priorDelivered;
    rs.lost = this.totalLost - this.#rsLostAtSend;
    const interval = Math.max(this.#rsSendElapsed, this.#rsAckElapsed);
    // An interval shorter than the minimum RTT is an artefact of ACK
    // compression; no rate is taken from it (§3.3).
    if (interval <= 0 || (minRtt > 0 && interval < minRtt)) {
      rs.interval = 0;
      rs.deliveryRate = 0;
    } else {
      rs.interval = interval;
      rs.deliveryRate = rs.delivered / interval;
    }
    return rs;
  }

  // ------------------------------------------------------------ RACK

  #onDsack(sndMax: number): void {
    // RFC 8985 §6.2.4: one widening per round trip of DSACKs.
    if (this.#dsackRound >= 0) return;
    this.#dsackRound = sndMax;
    if (this.#reoMult < MAX_REO_MULT) this.#reoMult++;
    this.#reoPersist = REO_PERSIST;
    this.reorderingSeen = true;
  }

  /** Called when SND.UNA advanced: ends the DSACK round once passed. */
  unaAdvanced(una: number): void {
    if (this.#dsackRound >= 0 && seqGe(una, this.#dsackRound)) this.#dsackRound = -1;
  }

  /** A loss recovery episode ended (RFC 8985 §6.2.4 persistence). */
  recoveryEnded(): void {
    if (this.#reoPersist > 0 && --this.#reoPersist === 0) this.#reoMult = 1;
  }

  /**
   * RACK.reo_wnd for now (RFC 8985 §6.2 step 4): min_RTT/4, widened in steps
   * per DSACK round. Two deviations, both for paths where some packets skip
   * a queue (netem-style reordering, a second faster route), which make the
   * minimum RTT and SRTT collapse below the reordering itself: the DSACK
   * steps are at least SRTT/4, and the cap is SRTT + 4·RTTVAR instead of
   * SRTT. Without DSACKs the window is the RFC's.
   */
  reoWnd(inRecovery: boolean, mss: number, srtt: number, rttvar: number): number {
    if (!this.reorderingSeen) {
      if (inRecovery || this.sackedBytes >= 3 * mss) return 0;
    }
    const base = this.minRtt / 4;
    if (this.#reoMult === 1) return srtt > 0 ? Math.min(base, srtt) : base;
    const w = base + (this.#reoMult - 1) * Math.max(base, srtt / 4);
    return srtt > 0 ? Math.min(w, srtt + 4 * rttvar) : w;
  }

  /** Current reordering-window multiplier (tests and stats). */
  get reoWndMult(): number {
    return this.#reoMult;
  }

  /**
   * RACK loss detection (RFC 8985 §6.2 step 5): marks lost every segment sent
   * at least RACK.rtt + reo_wnd before now and before the most recently
   * delivered one. Returns the bytes newly marked lost and writes into
   * `timer[0]` the reordering timeout in ms (0 when none is needed).
   */
  detectLoss(now: number, reoWnd: number, timer: number[]): number {
    timer[0] = 0;
    if (this.rackXmitTs < 0) return 0;
    let lost = 0;
    let wait = 0;
    for (let rec = this.#tsHead; rec;) {
      const next = rec.tsNext;
      // Sent after the most recently delivered segment: not yet (list is time-ordered).
      if (
        rec.xmitTs > this.rackXmitTs ||
        (rec.xmitTs === this.rackXmitTs && !seqLt(rec.end, this.rackEndSeq))
      ) break;
      const remaining = rec.xmitTs + this.rackRtt + reoWnd - now;
      if (remaining <= 0) {
        lost += this.markLost(rec);
      } else if (remaining > wait) {
        wait = remaining;
      }
      rec = next;
    }
    timer[0] = wait;
    return lost;
  }

  /** Marks `rec` lost (taking it off the time list); returns its bytes newly lost. */
  markLost(rec: SentSegment): number {
    if (rec.flags & SACKED) return 0;
    if (rec.onTsList) this.#tsRemove(rec);
    const len = rec.length;
    let newly = 0;
    if (!(rec.flags & LOST)) {
      rec.flags |= LOST;
      this.lostBytes += len;
      newly = len;
    }
    if (rec.flags & RETRANS) {
      // The retransmission is lost too: send it again.
      rec.flags &= ~RETRANS;
      this.retransBytes -= len;
      newly = len;
    }
    if (newly > 0) {
      this.lostPending++;
      this.totalLost += len;
      const idx = this.#indexOf(rec);
      if (idx < this.#lostCursor) this.#lostCursor = idx;
    }
    return newly;
  }

  #indexOf(rec: SentSegment): number {
    const i = this.#find(rec.start);
    return i < this.#count && this.#at(i) === rec ? i : 0;
  }

  /** Marks the first unSACKed record lost (duplicate-ACK recovery without SACK). */
  markHeadLost(): number {
    const head = this.headInFlight();
    return head ? this.markLost(head) : 0;
  }

  /**
   * A first retransmission timeout (RFC 8985 §6.3): the first unSACKed
   * record is lost (it was sent an RTO ago), every other one only if it was
   * sent at least RACK.rtt + `reoWnd` ago. The rest may still be on their
   * way (a flight larger than the send buffer can refill, a deep queue):
   * RACK judges them as ACKs come back, as Linux's tcp_timeout_mark_lost
   * does. Marking them all resent the whole flight, mostly spuriously.
   * Returns the bytes newly marked lost.
   */
  markTimedOut(now: number, reoWnd: number): number {
    let n = 0;
    let head = true;
    for (let i = 0; i < this.#count; i++) {
      const rec = this.#at(i);
      if (rec.flags & SACKED) continue;
      if (head || now - rec.xmitTs >= this.rackRtt + reoWnd) n += this.markLost(rec);
      head = false;
    }
    this.#lostCursor = 0;
    return n;
  }

  /**
   * Every unSACKed record is lost (RFC 6675 §5.1): a second timeout, an
   * F-RTO fall-back, a smaller path MTU. With `forgetSack` SACK marks are
   * dropped too, in case the receiver reneged (RFC 2018 §8).
   */
  markAllLost(forgetSack: boolean): number {
    let n = 0;
    for (let i = 0; i < this.#count; i++) {
      const rec = this.#at(i);
      if (rec.flags & SACKED) {
        if (!forgetSack) continue;
        rec.flags &= ~SACKED;
        this.sackedBytes -= rec.length;
      }
      n += this.markLost(rec);
    }
    this.#lostCursor = 0;
    return n;
  }

  /** Clears every lost mark on records not yet retransmitted (undo). */
  unmarkLost(): void {
    for (let i = 0; i < this.#count; i++) {
      const rec = this.#at(i);
      if ((rec.flags & (LOST | RETRANS | SACKED)) === LOST) {
        rec.flags &= ~LOST;
        this.lostBytes -= rec.length;
        this.lostPending--;
        this.#tsInsertSorted(rec);
      }
    }
  }

  // ------------------------------------------------------------ episodes and PRR

  /** A loss episode (recovery or timeout) begins at SND.UNA `una`. */
  startEpisode(una: number, now: number): void {
    this.episodeStart = now;
    this.undoMarker = una;
    this.undoRetrans = 0;
  }

  /** The episode ended or was undone. */
  endEpisode(): void {
    this.undoMarker = -1;
    this.undoRetrans = 0;
  }

  /** PRR initialisation on entering fast recovery (RFC 6937 §3). */
  prrStart(): void {
    this.#prrDelivered = 0;
    this.#prrOut = 0;
    this.#recoverFs = Math.max(1, this.inFlight);
  }

  /** Bytes sent during recovery (prr_out). */
  prrSent(n: number): void {
    this.#prrOut += n;
  }

  /**
   * The congestion window PRR allows after an ACK that delivered
   * `delivered` bytes (RFC 6937 §3, PRR-SSRB), rounded up to whole segments.
   */
  prrWindow(delivered: number, ssthresh: number, mss: number): number {
    this.#prrDelivered += delivered;
    const pipe = this.inFlight;
    let sndcnt: number;
    if (pipe > ssthresh) {
      sndcnt = Math.ceil((this.#prrDelivered * ssthresh) / this.#recoverFs) - this.#prrOut;
    } else {
      const limit = Math.max(this.#prrDelivered - this.#prrOut, delivered) + mss;
      sndcnt = Math.min(ssthresh - pipe, limit);
    }
    // The fast retransmit itself always goes (RFC 6937 §3 note).
    if (sndcnt <= 0 && this.#prrOut === 0) sndcnt = mss;
    sndcnt = sndcnt > 0 ? Math.ceil(sndcnt / mss) * mss : 0;
    return pipe + sndcnt;
  }

  // ------------------------------------------------------------ time-ordered list

  #tsAppend(rec: SentSegment): void {
    rec.tsPrev = this.#tsTail;
    rec.tsNext = null;
    if (this.#tsTail) this.#tsTail.tsNext = rec;
    else this.#tsHead = rec;
    this.#tsTail = rec;
    rec.onTsList = true;
  }

  /** Puts `rec` back at its place by transmit time (undo only; rare). */
  #tsInsertSorted(rec: SentSegment): void {
    let after = this.#tsTail;
    while (after && after.xmitTs > rec.xmitTs) after = after.tsPrev;
    rec.tsPrev = after;
    rec.tsNext = after ? after.tsNext : this.#tsHead;
    if (rec.tsNext) rec.tsNext.tsPrev = rec;
    else this.#tsTail = rec;
    if (after) after.tsNext = rec;
    else this.#tsHead = rec;
    rec.onTsList = true;
  }

  #tsRemove(rec: SentSegment): void {
    if (rec.tsPrev) rec.tsPrev.tsNext = rec.tsNext;
    else this.#tsHead = rec.tsNext;
    if (rec.tsNext) rec.tsNext.tsPrev = rec.tsPrev;
    else this.#tsTail = rec.tsPrev;
    rec.tsPrev = rec.tsNext = null;
    rec.onTsList = false;
  }

  /** Forgets everything (connection closed). */
  clear(): void {
    while (this.#count > 0) this.#removeHead();
    this.#ring = [];
  }
}
