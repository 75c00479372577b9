/**
 * The portable crypto backend: pure JavaScript from `@noble/ciphers` and
 * `@noble/curves`, with BLAKE2s from `blake2s.ts`. It runs everywhere (browsers, Deno,
 * Node, Bun) and is the fallback when {@linkcode nativeBackend} is missing.
 *
 * @module
 */

import { chacha20poly1305, xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { type CryptoBackend, KEY_LENGTH, TAG_LENGTH } from "./backend.ts";
import { checkAead, checkBytes, checkParts, checkXAead, plaintextLength } from "./_check.ts";
import { hashParts, hmacParts, mac16Parts } from "./blake2s.ts";

function seal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array | undefined,
  out: Uint8Array,
): Uint8Array {
  const length = plaintext.length + TAG_LENGTH;
  checkAead(key, nonce, plaintext, aad, out, length);
  // noble wants an output of exactly the sealed length; it copies the
  // plaintext into it first, so sealing in place (same offset) works.
  const dst = out.length === length ? out : out.subarray(0, length);
  return chacha20poly1305(key, nonce, aad).encrypt(plaintext, dst);
}

function open(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array | undefined,
  out: Uint8Array,
): Uint8Array | null {
  const length = plaintextLength(ciphertext);
  checkAead(key, nonce, ciphertext, aad, out, length < 0 ? 0 : length);
  if (length < 0) return null;
  const dst = out.length === length ? out : out.subarray(0, length);
  try {
    // noble checks the tag before it writes anything into `dst`.
    return chacha20poly1305(key, nonce, aad).decrypt(ciphertext, dst);
  } catch {
    // Arguments were checked above, so the only failure left is the tag.
    return null;
  }
}

function xseal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array | undefined,
): Uint8Array {
  checkXAead(key, nonce, plaintext, aad);
  return xchacha20poly1305(key, nonce, aad).encrypt(plaintext);
}

function xopen(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array | undefined,
): Uint8Array | null {
  checkXAead(key, nonce, ciphertext, aad);
  if (ciphertext.length < TAG_LENGTH) return null;
  try {
    return xchacha20poly1305(key, nonce, aad).decrypt(ciphertext);
  } catch {
    return null;
  }
}

function dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  checkBytes(privateKey, "privateKey", KEY_LENGTH);
  checkBytes(publicKey, "publicKey", KEY_LENGTH);
  try {
    return x25519.getSharedSecret(privateKey, publicKey);
  } catch {
    // noble refuses low-order points (after the length checks above this is
    // the only error). Every such point sends a clamped scalar to the
    // identity, whose RFC 7748 encoding is all zeros: return that, as the
    // interface promises, and let the caller reject it.
    return new Uint8Array(KEY_LENGTH);
  }
}

function dhPublic(privateKey: Uint8Array): Uint8Array {
  checkBytes(privateKey, "privateKey", KEY_LENGTH);
  return x25519.getPublicKey(privateKey);
}

// BLAKE2s, HMAC-BLAKE2s and the keyed MAC come from `blake2s.ts` (plain
// TypeScript like @noble/hashes, but allocation-free: ~5× faster per call on
// handshake-sized inputs, see bench/crypto_bench.ts). The native backend
// shares these three functions.

function hash(...parts: Uint8Array[]): Uint8Array {
  checkParts(parts);
  return hashParts(parts);
}

function mac(key: Uint8Array, ...data: Uint8Array[]): Uint8Array {
  checkBytes(key, "key");
  if (key.length === 0 || key.length > KEY_LENGTH) {
    throw new RangeError(`Expected key to be 1 to 32 bytes, got ${key.length}`);
  }
  checkParts(data);
  return mac16Parts(key, data);
}

function hmacBlake2s(key: Uint8Array, ...data: Uint8Array[]): Uint8Array {
  checkBytes(key, "key");
  checkParts(data);
  return hmacParts(key, data);
}

/**
 * The portable backend, built on `@noble/ciphers` (ChaCha20-Poly1305,
 * XChaCha20-Poly1305), `@noble/curves` (X25519) and `blake2s.ts` (BLAKE2s,
 * HMAC-BLAKE2s, keyed MAC). `seal` and `open` write into the caller's `out`.
 *
 * @example
 * ```ts
 * import { nobleBackend } from "@wgstack/wireguard";
 *
 * const key = new Uint8Array(32);
 * const nonce = new Uint8Array(12);
 * const out = new Uint8Array(3 + 16);
 * nobleBackend.seal(key, nonce, new Uint8Array([1, 2, 3]), undefined, out);
 * ```
 */
export const nobleBackend: CryptoBackend = Object.freeze({
  name: "noble",
  seal,
  open,
  xseal,
  xopen,
  x25519: dh,
  x25519Public: dhPublic,
  hash,
  hmac: hmacBlake2s,
  mac,
});
