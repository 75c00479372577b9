/**
 * What the backends built on a native ChaCha20-Poly1305 primitive share: the
 * argument checks around it, HChaCha20 and XChaCha20-Poly1305 on top of it
 * (draft-irtf-cfrg-xchacha-03), and the known-answer self-test a backend
 * must pass before it is offered.
 *
 * @module
 */

import { type CryptoBackend, KEY_LENGTH, NONCE_LENGTH, TAG_LENGTH } from "./backend.ts";
import { checkAead, checkBytes, checkXAead, plaintextLength } from "./_check.ts";
import { nobleBackend } from "./noble.ts";

/** ChaCha20 constants "expand 32-byte k" as little-endian words (RFC 8439 §2.3). */
const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574];

function readWord(bytes: Uint8Array, offset: number): number {
  return bytes[offset] | (bytes[offset + 1] << 8) | (bytes[offset + 2] << 16) |
    (bytes[offset + 3] << 24);
}

function quarterRound(x: Int32Array, a: number, b: number, c: number, d: number): void {
  let t: number;
  x[a] += x[b];
  t = x[d] ^ x[a];
  x[d] = (t << 16) | (t >>> 16);
  x[c] += x[d];
  t = x[b] ^ x[c];
  x[b] = (t << 12) | (t >>> 20);
  x[a] += x[b];
  t = x[d] ^ x[a];
  x[d] = (t << 8) | (t >>> 24);
  x[c] += x[d];
  t = x[b] ^ x[c];
  x[b] = (t << 7) | (t >>> 25);
}

/**
 * HChaCha20 (draft-irtf-cfrg-xchacha-03 §2.2): derives a 32-byte subkey from
 * a 32-byte key and the first 16 bytes of an XChaCha20 nonce. It is the
 * ChaCha20 block function without the final addition, keeping words 0–3 and
 * 12–15.
 *
 * @param key The 32-byte key.
 * @param nonce16 The 16-byte input (the first 16 bytes of the 24-byte nonce).
 * @returns The 32-byte subkey.
 */
export function hchacha20(key: Uint8Array, nonce16: Uint8Array): Uint8Array {
  checkBytes(key, "key", KEY_LENGTH);
  checkBytes(nonce16, "nonce16", 16);
  const x = new Int32Array(16);
  for (let i = 0; i < 4; i++) x[i] = SIGMA[i];
  for (let i = 0; i < 8; i++) x[4 + i] = readWord(key, 4 * i);
  for (let i = 0; i < 4; i++) x[12 + i] = readWord(nonce16, 4 * i);
  for (let round = 0; round < 10; round++) {
    quarterRound(x, 0, 4, 8, 12);
    quarterRound(x, 1, 5, 9, 13);
    quarterRound(x, 2, 6, 10, 14);
    quarterRound(x, 3, 7, 11, 15);
    quarterRound(x, 0, 5, 10, 15);
    quarterRound(x, 1, 6, 11, 12);
    quarterRound(x, 2, 7, 8, 13);
    quarterRound(x, 3, 4, 9, 14);
  }
  const out = new Uint8Array(32);
  for (let i = 0; i < 8; i++) {
    const word = x[i < 4 ? i : i + 8];
    out[4 * i] = word;
    out[4 * i + 1] = word >>> 8;
    out[4 * i + 2] = word >>> 16;
    out[4 * i + 3] = word >>> 24;
  }
  x.fill(0);
  return out;
}

/** ChaCha20-Poly1305 into `out` (arguments checked; `out` large enough). */
export type SealInto = (
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array | undefined,
  out: Uint8Array,
) => Uint8Array;

/** ChaCha20-Poly1305 decryption of `length` bytes into `out`, or `null` on a bad tag. */
export type OpenInto = (
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array | undefined,
  out: Uint8Array,
  length: number,
) => Uint8Array | null;

/** The 12-byte ChaCha20 nonce of XChaCha20 (§2.3): four zero bytes, then nonce[16..24]. */
function xnonce(nonce: Uint8Array): Uint8Array {
  const n = new Uint8Array(NONCE_LENGTH);
  n.set(nonce.subarray(16, 24), 4);
  return n;
}

/**
 * The four AEAD methods of a backend over its ChaCha20-Poly1305 primitive:
 * `seal` and `open` check their arguments (every length, before any native
 * code sees a buffer) and call it; `xseal` and `xopen` derive the HChaCha20
 * subkey first.
 */
export function aeadOver(
  sealInto: SealInto,
  openInto: OpenInto,
): Pick<CryptoBackend, "seal" | "open" | "xseal" | "xopen"> {
  return {
    seal(key, nonce, plaintext, aad, out) {
      checkAead(key, nonce, plaintext, aad, out, plaintext.length + TAG_LENGTH);
      return sealInto(key, nonce, plaintext, aad, out);
    },

    open(key, nonce, ciphertext, aad, out) {
      const length = plaintextLength(ciphertext);
      checkAead(key, nonce, ciphertext, aad, out, length < 0 ? 0 : length);
      if (length < 0) return null;
      return openInto(key, nonce, ciphertext, aad, out, length);
    },

    xseal(key, nonce, plaintext, aad) {
      checkXAead(key, nonce, plaintext, aad);
      const subkey = hchacha20(key, nonce.subarray(0, 16));
      try {
        const out = new Uint8Array(plaintext.length + TAG_LENGTH);
        return sealInto(subkey, xnonce(nonce), plaintext, aad, out);
      } finally {
        subkey.fill(0);
      }
    },

    xopen(key, nonce, ciphertext, aad) {
      checkXAead(key, nonce, ciphertext, aad);
      const length = plaintextLength(ciphertext);
      if (length < 0) return null;
      const subkey = hchacha20(key, nonce.subarray(0, 16));
      try {
        return openInto(subkey, xnonce(nonce), ciphertext, aad, new Uint8Array(length), length);
      } finally {
        subkey.fill(0);
      }
    },
  };
}

/**
 * Known answers a backend must reproduce before it is offered: BLAKE2s-256
 * of "abc", an X25519 public key and a ChaCha20-Poly1305 seal, open and
 * tag rejection, cross-checked against the portable backend.
 */
export function passesSelfTest(backend: CryptoBackend): boolean {
  const same = (a: Uint8Array | null, b: Uint8Array) =>
    a !== null && a.length === b.length && a.every((x, i) => x === b[i]);
  // BLAKE2s-256("abc"), RFC 7693 Appendix B.
  const abc = backend.hash(new Uint8Array([0x61, 0x62, 0x63]));
  const expectedAbc = "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982";
  if (Array.from(abc, (b) => b.toString(16).padStart(2, "0")).join("") !== expectedAbc) {
    return false;
  }
  const secret = new Uint8Array(KEY_LENGTH).fill(1);
  if (!same(backend.x25519Public(secret), nobleBackend.x25519Public(secret))) return false;
  const key = new Uint8Array(KEY_LENGTH).fill(2);
  const nonce = new Uint8Array(NONCE_LENGTH).fill(3);
  const plaintext = new Uint8Array(33).fill(4);
  const aad = new Uint8Array(5).fill(5);
  const sealed = backend.seal(key, nonce, plaintext, aad, new Uint8Array(33 + TAG_LENGTH));
  const expected = nobleBackend.seal(key, nonce, plaintext, aad, new Uint8Array(33 + TAG_LENGTH));
  if (!same(sealed, expected)) return false;
  if (!same(backend.open(key, nonce, sealed, aad, new Uint8Array(33)), plaintext)) return false;
  sealed[0] ^= 1;
  return backend.open(key, nonce, sealed, aad, new Uint8Array(33)) === null;
}
