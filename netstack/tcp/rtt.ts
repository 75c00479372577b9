/**
 * Retransmission timeout estimation (RFC 6298). Our choices: the minimum RTO
 * is 200 ms above the smoothed RTT (as Linux, which floors the variance term
 * K·RTTVAR at 200 ms; RFC 6298 §2.4 says 1 s in all, which is far too slow for
 * a tunnel where RTTs are often a few milliseconds), the maximum 60 s, clock
 * granularity G = 1 ms, initial RTO 1 s (RFC 6298 §2.1).
 *
 * @module
 */

/** Tunable bounds of the estimator. */
export interface RttOptions {
  /** Lower bound of the RTO in ms (default 200). */
  minRto?: number;
  /** Upper bound of the RTO in ms (default 60 000). */
  maxRto?: number;
  /** RTO before any sample, ms (default 1000). */
  initialRto?: number;
}

/** Smoothed RTT, RTT variance and the RTO with exponential backoff. */
export class RttEstimator {
  /** Smoothed RTT in ms (0 until the first sample). */
  srtt = 0;
  /** RTT variation in ms. */
  rttvar = 0;
  /** Most recent RTT sample in ms. */
  latest = 0;
  /** Number of doublings applied since the last sample or reset. */
  backoff = 0;
  #base: number;
  readonly #min: number;
  readonly #max: number;

  /** Creates an estimator with no samples yet. */
  constructor(options: RttOptions = {}) {
    this.#min = options.minRto ?? 200;
    this.#max = options.maxRto ?? 60_000;
    this.#base = options.initialRto ?? 1000;
  }

  /** Feeds one RTT sample in ms (RFC 6298 §2.2–2.3, alpha 1/8, beta 1/4). */
  sample(rtt: number): void {
    if (!(rtt >= 0)) return;
    this.latest = rtt;
    if (this.srtt === 0 && this.rttvar === 0) {
      this.srtt = rtt;
      this.rttvar = rtt / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - rtt);
      this.srtt = 0.875 * this.srtt + 0.125 * rtt;
    }
    // As Linux: the floor applies to the variance term, so the RTO stays at
    // least `minRto` above the smoothed RTT (a long path with a steady RTT
    // would otherwise time out on any small delay spike).
    this.#base = this.srtt + Math.max(this.#min, 4 * this.rttvar);
    this.backoff = 0;
  }

  /** The current RTO in ms, backoff applied, clamped to [min, max]. */
  get rto(): number {
    const r = Math.max(this.#min, this.#base) * 2 ** this.backoff;
    return Math.min(this.#max, r);
  }

  /** Doubles the RTO after a timeout (RFC 6298 §5.5). */
  backOff(): void {
    if (Math.max(this.#min, this.#base) * 2 ** this.backoff < this.#max) this.backoff++;
  }

  /** Clears the backoff (new data acknowledged, RFC 6298 §5.7 spirit). */
  resetBackoff(): void {
    this.backoff = 0;
  }
}
