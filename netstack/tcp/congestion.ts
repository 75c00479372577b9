/**
 * Congestion control: NewReno (RFC 5681, RFC 6582 for the recovery part that
 * lives in the connection) and CUBIC (RFC 9438). Windows are in bytes.
 * The connection owns loss detection and recovery; these objects own `cwnd`
 * and `ssthresh` growth and reduction.
 *
 * @module
 */

/** The window arithmetic shared by every algorithm. */
export interface CongestionControl {
  /** "newreno" or "cubic". */
  readonly name: string;
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
