/**
 * Congestion control: NewReno (RFC 5681, RFC 6582 for the recovery part that
 * lives in the connection) and CUBIC (RFC 9438). Windows are in bytes.
 * The connection owns loss detection and recovery; these objects own `cwnd`
 * and `ssthresh` growth and reduction.
 *
 * @module
 */

/**
 * One delivery-rate sample (draft-cheng-iccrg-delivery-rate-estimation §3.3),
 * produced by the connection for every ACK that acknowledges or SACKs new
 * data. Byte counts, times in monotonic ms, rates in bytes per ms.
 */
export interface RateSample {
  /** Bytes newly acknowledged or SACKed by this ACK. */
  ackedSacked: number;
  /** Bytes newly marked lost while processing this ACK. */
  newlyLost: number;
  /** Bytes in flight before this ACK was processed. */
  priorInFlight: number;
  /** Bytes in flight after this ACK was processed (and loss marked). */
  inFlight: number;
  /** C.delivered: total bytes delivered over the connection, after this ACK. */
  totalDelivered: number;
  /** C.lost: total bytes marked lost over the connection, after this ACK. */
  totalLost: number;
  /**
   * P.delivered of the most recently sent segment this ACK delivered: the
   * value of `totalDelivered` when it was sent; -1 when the ACK gave no sample.
   */
  priorDelivered: number;
  /** Bytes delivered over the sample's interval (C.delivered − P.delivered). */
  delivered: number;
  /** Bytes marked lost over the sample's interval (C.lost − P.lost). */
  lost: number;
  /** Bytes that were in flight when that segment was sent (P.tx_in_flight). */
  txInFlight: number;
  /** max(send elapsed, ack elapsed) in ms; 0 when the sample is not valid. */
  interval: number;
  /** `delivered / interval`, bytes per ms; 0 when the sample is not valid. */
  deliveryRate: number;
  /** RTT of that segment (never a retransmitted one), ms; -1 when none. */
  rtt: number;
  /** The sample was taken while the sender was application-limited. */
  isAppLimited: boolean;
}

/** The window arithmetic shared by every algorithm. */
export interface CongestionControl {
  /** "newreno", "cubic" or "bbr". */
  readonly name: string;
  /**
   * Pacing rate in bytes per ms that the connection should not exceed; 0 means
   * no pacing (send what the window allows at once).
   */
  readonly pacingRate: number;
  /**
   * True for a model-based algorithm (BBR) that sets `cwnd` itself from
   * {@linkcode CongestionControl.onRateSample}: the connection then skips PRR
   * and the ssthresh-based reductions, and only reports events.
   */
  readonly modelBased: boolean;
  /**
   * Called for every ACK that delivered data, after loss detection, with the
   * rate sample of that ACK (loss-based algorithms may ignore it).
   */
  onRateSample(rs: RateSample, now: number): void;
  /** Loss recovery ended (SND.UNA passed the recovery point). */
  onRecoveryEnd(now: number): void;
  /** Congestion window in bytes. */
  cwnd: number;
  /** Slow-start threshold in bytes. */
  ssthresh: number;
  /** Sets the sender MSS (after the handshake or a PMTU change). */
  setMss(mss: number): void;
  /**
   * New data was acknowledged outside loss recovery. `acked` bytes, `rtt` the
   * smoothed RTT in ms (0 when unknown), `now` monotonic ms.
   */
  onAck(acked: number, rtt: number, now: number): void;
  /**
   * Loss detected by duplicate ACKs or SACK (fast retransmit): reduces
   * ssthresh and sets cwnd to it. `flight` is the bytes in flight.
   */
  onCongestion(flight: number, now: number): void;
  /** The retransmission timer expired: cwnd falls to one segment (RFC 5681 §3.1). */
  onTimeout(flight: number, now: number): void;
}

/** The initial window of RFC 6928: min(10·MSS, max(2·MSS, 14600)). */
export function initialWindow(mss: number): number {
  return Math.min(10 * mss, Math.max(2 * mss, 14600));
}

/** RFC 5681 congestion avoidance with RFC 3465 byte counting (L = 2·MSS). */
export class NewReno implements CongestionControl {
  /** Always "newreno". */
  readonly name: string = "newreno";
  /** Congestion window in bytes. */
  cwnd: number;
  /** Slow-start threshold in bytes. */
  ssthresh = 0x7fffffff;
  /** Loss-based: no pacing. */
  readonly pacingRate: number = 0;
  /** Loss-based. */
  readonly modelBased: boolean = false;
  /** Sender MSS in bytes. */
  protected mss: number;
  #acc = 0;

  /** Starts with the RFC 6928 initial window for `mss`. */
  constructor(mss: number) {
    this.mss = mss;
    this.cwnd = initialWindow(mss);
  }

  /** Sets the sender MSS. */
  setMss(mss: number): void {
    this.mss = mss;
  }

  /** Rate samples are not used by NewReno. */
  onRateSample(_rs: RateSample, _now: number): void {}

  /** Nothing to do when recovery ends. */
  onRecoveryEnd(_now: number): void {}

  /** Slow start below ssthresh, else one MSS per window of acked bytes. */
  onAck(acked: number, _rtt: number, _now: number): void {
    if (this.cwnd < this.ssthresh) {
      this.cwnd += Math.min(acked, 2 * this.mss);
      return;
    }
    this.#acc += acked;
    if (this.#acc >= this.cwnd) {
      this.#acc -= this.cwnd;
      this.cwnd += this.mss;
    }
  }

  /** ssthresh = max(flight/2, 2·MSS) (RFC 5681 eq. 4); cwnd = ssthresh. */
  onCongestion(flight: number, _now: number): void {
    this.ssthresh = Math.max(Math.floor(flight / 2), 2 * this.mss);
    this.cwnd = this.ssthresh;
    this.#acc = 0;
  }

  /** ssthresh as for a loss; cwnd = 1 MSS. */
  onTimeout(flight: number, _now: number): void {
    this.ssthresh = Math.max(Math.floor(flight / 2), 2 * this.mss);
    this.cwnd = this.mss;
    this.#acc = 0;
  }
}

/** CUBIC constants (RFC 9438 §4.1, §4.5). */
const C = 0.4;
const BETA = 0.7;
const ALPHA = (3 * (1 - BETA)) / (1 + BETA);

/**
 * CUBIC (RFC 9438): cubic window growth in time since the last reduction,
 * with the Reno-friendly region (§4.3), fast convergence (§4.7) and
 * multiplicative decrease β = 0.7 (§4.6). Slow start as Reno.
 */
export class Cubic implements CongestionControl {
  /** Always "cubic". */
  readonly name: string = "cubic";
  /** Congestion window in bytes. */
  cwnd: number;
  /** Slow-start threshold in bytes. */
  ssthresh = 0x7fffffff;
  /** Loss-based: no pacing. */
  readonly pacingRate: number = 0;
  /** Loss-based. */
  readonly modelBased: boolean = false;
  #mss: number;
  /** W_max in segments. */
  #wMax = 0;
  /** Previous W_max for fast convergence. */
  #wLastMax = 0;
  /** K in seconds. */
  #k = 0;
  /** Start of the current congestion-avoidance epoch (ms), -1 when none. */
  #epoch = -1;
  /** Reno-friendly estimate W_est in segments. */
  #wEst = 0;

  /** Starts with the RFC 6928 initial window for `mss`. */
  constructor(mss: number) {
    this.#mss = mss;
    this.cwnd = initialWindow(mss);
  }

  /** Sets the sender MSS. */
  setMss(mss: number): void {
    this.#mss = mss;
  }

  /** Rate samples are not used by CUBIC. */
  onRateSample(_rs: RateSample, _now: number): void {}

  /** Nothing to do when recovery ends. */
  onRecoveryEnd(_now: number): void {}

  /** W_cubic(t) in segments for `t` seconds into the epoch (RFC 9438 eq. 1). */
  windowAt(t: number): number {
    const d = t - this.#k;
    return C * d * d * d + this.#wMax;
  }

  /** Grows cwnd: slow start, then the cubic/Reno-friendly target. */
  onAck(acked: number, rtt: number, now: number): void {
    const mss = this.#mss;
    if (this.cwnd < this.ssthresh) {
      this.cwnd += Math.min(acked, 2 * mss);
      return;
    }
    const cwndSeg = this.cwnd / mss;
    if (this.#epoch < 0) {
      this.#epoch = now;
      if (this.#wMax < cwndSeg) {
        this.#wMax = cwndSeg;
        this.#k = 0;
      } else {
        this.#k = Math.cbrt((this.#wMax - cwndSeg) / C);
      }
      this.#wEst = cwndSeg;
    }
    const t = (now - this.#epoch) / 1000;
    // Reno-friendly estimate (RFC 9438 §4.3).
    this.#wEst += (ALPHA * (acked / mss)) / cwndSeg;
    const wCubic = this.windowAt(t);
    if (wCubic < this.#wEst) {
      this.cwnd = Math.max(this.cwnd, Math.floor(this.#wEst * mss));
      return;
    }
    // Target one RTT ahead, clamped to [cwnd, 1.5 cwnd] (§4.2).
    let target = this.windowAt(t + rtt / 1000);
    if (target < cwndSeg) target = cwndSeg;
    if (target > 1.5 * cwndSeg) target = 1.5 * cwndSeg;
    const inc = ((target - cwndSeg) / cwndSeg) * acked;
    this.cwnd = Math.max(this.cwnd, Math.floor(this.cwnd + inc));
  }

  #reduce(): void {
    const cwndSeg = this.cwnd / this.#mss;
    // Fast convergence (§4.7).
    this.#wMax = cwndSeg < this.#wLastMax ? (cwndSeg * (1 + BETA)) / 2 : cwndSeg;
    this.#wLastMax = cwndSeg;
    this.ssthresh = Math.max(Math.floor(this.cwnd * BETA), 2 * this.#mss);
    this.#epoch = -1;
  }

  /** Multiplicative decrease by β = 0.7 (§4.6). */
  onCongestion(_flight: number, _now: number): void {
    this.#reduce();
    this.cwnd = this.ssthresh;
  }

  /** As a loss, then cwnd = 1 MSS (§4.8). */
  onTimeout(_flight: number, _now: number): void {
    this.#reduce();
    this.cwnd = this.#mss;
  }
}
