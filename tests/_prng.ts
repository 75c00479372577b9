/**
 * A small seeded generator shared by tests, so that randomized tests
 * reproduce from their seed.
 *
 * @module
 */

/** xorshift32: returns a generator of unsigned 32-bit integers (never 0). */
export function xorshift32(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}
