/**
 * Windowed maximum filters for BBR (draft-ietf-ccwg-bbr-06 §5.5.3 "BBR.max_bw Max
 * Filter" and §5.5.9 "BBR.extra_acked").
 *
 * {@linkcode WindowedMaxFilter} is Kathleen Nichols' estimator: it keeps the
 * best, second-best and third-best samples of a window in three slots, so the
 * maximum over a sliding window of any length costs O(1) time and space per
 * sample. Time is whatever the caller counts in (packet-timed rounds for
 * `extra_acked`). {@linkcode TwoCycleMaxFilter} is the special case BBR uses
 * for `max_bw`: the maximum over the current and the previous ProbeBW cycle.
 *
 * @module
 */

/** Maximum of the samples whose time lies within the last `window` time units. */
export class WindowedMaxFilter {
  /** Window length in the caller's time units (may change between samples). */
  window: number;
  /**
   * Three kept samples as [value, time] pairs: the best of the window, then
   * the best since it, then the best since that; times never decrease.
   */
  #slots: [number, number][] = [[0, 0], [0, 0], [0, 0]];

  /** A filter over `window` time units, holding 0 until the first sample. */
  constructor(window: number) {
    if (!(window > 0)) throw new RangeError("The filter window must be positive");
    this.window = window;
  }

  /** The current windowed maximum. */
  get best(): number {
    return this.#slots[0][0];
  }

  /** Forgets every sample and starts over with `value` at `time`. */
  reset(value: number, time: number): void {
    for (const slot of this.#slots) {
      slot[0] = value;
      slot[1] = time;
    }
  }

  /**
   * Adds the sample `value` taken at `time` (never decreasing between calls)
   * and returns the new maximum. A sample is forgotten once `time` has moved
   * more than `window` past it.
   */
  update(value: number, time: number): number {
    const [first, second, third] = this.#slots;
    if (value >= first[0] || time - third[1] > this.window) {
      // A new overall maximum, or even the youngest slot is out of the window.
      this.reset(value, time);
      return value;
    }
    if (value >= second[0]) {
      this.#set(1, value, time);
      this.#set(2, value, time);
    } else if (value >= third[0]) {
      this.#set(2, value, time);
    }
    const age = time - first[1];
    if (age > this.window) {
      // The best has expired: the younger candidates move up, the new sample
      // takes the last place (twice if the second best has expired too).
      this.#dropFirst(value, time);
      if (time - this.#slots[0][1] > this.window) this.#dropFirst(value, time);
    } else if (second[1] === first[1] && age > this.window / 4) {
      // Spread the candidates over the window so that a fresh one is ready
      // when the best expires: after a quarter window, then after half.
      this.#set(1, value, time);
      this.#set(2, value, time);
    } else if (third[1] === second[1] && age > this.window / 2) {
      this.#set(2, value, time);
    }
    return this.#slots[0][0];
  }

  #set(i: number, value: number, time: number): void {
    this.#slots[i][0] = value;
    this.#slots[i][1] = time;
  }

  #dropFirst(value: number, time: number): void {
    const gone = this.#slots.shift()!;
    gone[0] = value;
    gone[1] = time;
    this.#slots.push(gone);
  }
}

/**
 * BBR's `max_bw` filter (draft-ietf-ccwg-bbr-06 §5.5.6): the maximum sample of the
 * current ProbeBW cycle and of the previous one. {@linkcode advance} starts a
 * new cycle and forgets the one before the previous.
 */
export class TwoCycleMaxFilter {
  #previous = 0;
  #current = 0;

  /** The maximum over the current and the previous cycle. */
  get best(): number {
    return Math.max(this.#previous, this.#current);
  }

  /** Adds a sample to the current cycle and returns the new maximum. */
  update(value: number): number {
    if (value > this.#current) this.#current = value;
    return this.best;
  }

  /** Starts a new cycle (BBR's AdvanceMaxBwFilter: `cycle_count++`). */
  advance(): void {
    this.#previous = this.#current;
    this.#current = 0;
  }
}
