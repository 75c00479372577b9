/**
 * The receive-side replay window for transport data counters (WireGuard
 * whitepaper §5.4.6), kept as a ring of 32-bit words as in RFC 6479 §2 so
 * that moving the window never shifts the bitmap.
 *
 * @module
 */

/** Bits per bitmap word. */
const WORD_BITS = 32;
/** The largest counter the window takes; the caller drops bigger ones. */
const MAX_COUNTER = Number.MAX_SAFE_INTEGER;
/** Upper bound on the window size, to keep a misconfiguration from allocating gigabytes. */
const MAX_WINDOW_SIZE = 1 << 24;

/**
 * A sliding window over received transport counters.
 *
 * A counter is accepted when it is above every counter seen so far, or when
 * it lies less than `windowSize` below the greatest one and has not been seen.
 * Everything older is rejected as too old.
 *
 * The bitmap is a ring of `windowSize / 32 + 1` words (RFC 6479 §2): the one
 * spare word lets the ring always hold a full `windowSize` counters behind the
 * greatest one while the word being filled is partly in the future. Advancing
 * the window clears only the words it moves over, at most the whole ring, so
 * every call is O(1) except a jump, which is O(words jumped).
 *
 * Use {@linkcode ReplayWindow.check} before decrypting (cheap rejection) and
 * {@linkcode ReplayWindow.update} after authentication succeeded.
 *
 * @example
 * ```ts
 * import { ReplayWindow } from "./replay.ts";
 * const window = new ReplayWindow();
 * window.update(0); // true
 * window.update(2); // true
 * window.update(1); // true: reordered within the window
 * window.update(2); // false: a replay
 * window.update(10_000); // true
 * window.check(1_000); // false: more than 8192 below the greatest
 * ```
 */
export class ReplayWindow {
  /** How many counters below the greatest seen one are still tracked. */
  readonly windowSize: number;
  #bitmap: Uint32Array;
  /** The greatest counter seen, or -1 before the first one. */
  #greatest = -1;

  /**
   * Creates an empty window: every counter is acceptable.
   *
   * @param windowSize How many counters behind the greatest one are tracked;
   * a positive multiple of 32 (default 8192, like Linux).
   * @throws {RangeError} When `windowSize` is not a positive multiple of 32 up
   * to 2^24.
   */
  constructor(windowSize: number = 8192) {
    if (
      !Number.isInteger(windowSize) || windowSize <= 0 || windowSize % WORD_BITS !== 0 ||
      windowSize > MAX_WINDOW_SIZE
    ) {
      throw new RangeError(
        `Replay window size must be a positive multiple of ${WORD_BITS} up to ${MAX_WINDOW_SIZE}, not ${windowSize}`,
      );
    }
    this.windowSize = windowSize;
    this.#bitmap = new Uint32Array(windowSize / WORD_BITS + 1);
  }

  /** The greatest counter accepted so far, or -1 when none has been. */
  get greatest(): number {
    return this.#greatest;
  }

  /**
   * True when `counter` would be accepted: not seen before and not too old.
   * Does not change state.
   *
   * @throws {RangeError} When `counter` is not an integer in 0..2^53-1.
   */
  check(counter: number): boolean {
    checkCounter(counter);
    if (counter > this.#greatest) return true;
    if (this.#greatest - counter >= this.windowSize) return false;
    const bitmap = this.#bitmap;
    const word = Math.floor(counter / WORD_BITS) % bitmap.length;
    return (bitmap[word] & (1 << (counter % WORD_BITS))) === 0;
  }

  /**
   * Marks `counter` as seen and slides the window forward when it is the new
   * greatest. Returns false, changing nothing, when it was a replay or too
   * old. Call only after the packet authenticated.
   *
   * @throws {RangeError} When `counter` is not an integer in 0..2^53-1.
   */
  update(counter: number): boolean {
    checkCounter(counter);
    const bitmap = this.#bitmap;
    const words = bitmap.length;
    const index = Math.floor(counter / WORD_BITS);
    if (counter > this.#greatest) {
      // Clear the words between the current one and the new one (RFC 6479
      // §2.2): they now stand for counters never seen. Jumping a whole ring
      // or more clears everything once.
      const current = Math.floor(this.#greatest / WORD_BITS);
      const jump = Math.min(index - current, words);
      for (let i = 1; i <= jump; i++) bitmap[(current + i) % words] = 0;
      this.#greatest = counter;
    } else if (this.#greatest - counter >= this.windowSize) {
      return false;
    }
    const word = index % words;
    const bit = 1 << (counter % WORD_BITS);
    if ((bitmap[word] & bit) !== 0) return false;
    bitmap[word] |= bit;
    return true;
  }

  /** Forgets every counter, as for a fresh session. */
  reset(): void {
    this.#bitmap.fill(0);
    this.#greatest = -1;
  }
}

function checkCounter(counter: number): void {
  if (!Number.isInteger(counter) || counter < 0 || counter > MAX_COUNTER) {
    throw new RangeError(`Replay counter must be an integer in 0..2^53-1, not ${counter}`);
  }
}
