/**
 * Initial sequence numbers (RFC 6528): ISN = M + F(4-tuple, secret), with M a
 * 4 µs clock derived from the caller's `now` and F a keyed hash in the style
 * of HalfSipHash-2-4 (32-bit arithmetic, 64-bit key).
 *
 * @module
 */

function rotl(x: number, b: number): number {
  return (x << b) | (x >>> (32 - b));
}

/** A keyed 32-bit hash over bytes (HalfSipHash-2-4 structure). */
export class KeyedHash {
  readonly #k0: number;
  readonly #k1: number;

  /** `key` is 8 random bytes. */
  constructor(key: Uint8Array) {
    if (key.length < 8) throw new RangeError("The hash key needs 8 bytes");
    this.#k0 = (key[0] | (key[1] << 8) | (key[2] << 16) | (key[3] << 24)) >>> 0;
    this.#k1 = (key[4] | (key[5] << 8) | (key[6] << 16) | (key[7] << 24)) >>> 0;
  }

  /** The hash of `parts` concatenated, as an unsigned 32-bit number. */
  hash(...parts: (Uint8Array | number)[]): number {
    let v0 = this.#k0, v1 = this.#k1;
    let v2 = 0x6c796765 ^ this.#k0, v3 = 0x74656462 ^ this.#k1;
    const round = () => {
      v0 = (v0 + v1) | 0;
      v1 = rotl(v1, 5) ^ v0;
      v0 = rotl(v0, 16);
      v2 = (v2 + v3) | 0;
      v3 = rotl(v3, 8) ^ v2;
      v0 = (v0 + v3) | 0;
      v3 = rotl(v3, 7) ^ v0;
      v2 = (v2 + v1) | 0;
      v1 = rotl(v1, 13) ^ v2;
      v2 = rotl(v2, 16);
    };
    let word = 0, n = 0;
    const absorb = (byte: number) => {
      word |= (byte & 0xff) << (8 * (n & 3));
      n++;
      if ((n & 3) === 0) {
        v3 ^= word;
        round();
        round();
        v0 ^= word;
        word = 0;
      }
    };
    for (const p of parts) {
      if (typeof p === "number") {
        absorb(p);
        absorb(p >>> 8);
        absorb(p >>> 16);
        absorb(p >>> 24);
      } else {
        for (let i = 0; i < p.length; i++) absorb(p[i]);
      }
    }
    const b = (word | ((n & 0xff) << 24)) | 0;
    v3 ^= b;
    round();
    round();
    v0 ^= b;
    v2 ^= 0xff;
    round();
    round();
    round();
    round();
    return (v1 ^ v3) >>> 0;
  }
}
