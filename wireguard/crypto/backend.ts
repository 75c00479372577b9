/**
 * The crypto backend interface: the only primitives the WireGuard core uses.
 *
 * Every method is synchronous so that the sans-I/O core stays synchronous.
 * Three implementations exist: libcrypto (OpenSSL 3 through Deno FFI), native
 * (`node:crypto`, available in Deno and Node) and portable (`@noble/*`). All
 * pass the same known-answer tests.
 *
 * @module
 */

/** Length in bytes of a Poly1305 authentication tag. */
export const TAG_LENGTH = 16;
/** Length in bytes of a ChaCha20-Poly1305 nonce (RFC 8439 §2.8). */
export const NONCE_LENGTH = 12;
/** Length in bytes of an XChaCha20-Poly1305 nonce. */
export const XNONCE_LENGTH = 24;
/** Length in bytes of a Curve25519 key and of a BLAKE2s-256 hash. */
export const KEY_LENGTH = 32;

/**
 * The primitives WireGuard needs (whitepaper §5.4): ChaCha20-Poly1305 with a
 * 96-bit nonce, XChaCha20-Poly1305 for cookies, X25519, BLAKE2s-256 hashing,
 * HMAC-BLAKE2s and keyed BLAKE2s (the 16-byte MAC).
 *
 * Keys and nonces are never retained by the backend past the call, with one
 * exception: the libcrypto backend's reused OpenSSL contexts hold the key
 * schedule of their last seal/open until the next one replaces it.
 */
export interface CryptoBackend {
  /** A short name for logs and benchmarks, e.g. `"native"` or `"noble"`. */
  readonly name: string;

  /**
   * ChaCha20-Poly1305 encryption (RFC 8439 §2.8). Writes the ciphertext
   * followed by the 16-byte tag into `out` (which must hold at least
   * `plaintext.length + 16` bytes) and returns the written view of `out`.
   * `out` must not overlap `plaintext` unless it is the same offset.
   */
  seal(
    key: Uint8Array,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array | undefined,
    out: Uint8Array,
  ): Uint8Array;

  /**
   * ChaCha20-Poly1305 decryption. `ciphertext` includes the trailing tag.
   * Writes the plaintext into `out` (at least `ciphertext.length - 16` bytes)
   * and returns the written view, or `null` when authentication fails (then
   * the contents of `out` are unspecified).
   */
  open(
    key: Uint8Array,
    nonce: Uint8Array,
    ciphertext: Uint8Array,
    aad: Uint8Array | undefined,
    out: Uint8Array,
  ): Uint8Array | null;

  /** XChaCha20-Poly1305 encryption; returns ciphertext followed by the tag. */
  xseal(
    key: Uint8Array,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array | undefined,
  ): Uint8Array;

  /** XChaCha20-Poly1305 decryption; returns the plaintext or `null`. */
  xopen(
    key: Uint8Array,
    nonce: Uint8Array,
    ciphertext: Uint8Array,
    aad: Uint8Array | undefined,
  ): Uint8Array | null;

  /**
   * X25519 (RFC 7748 §5): the shared secret of `privateKey` and `publicKey`.
   * Returns 32 bytes; an all-zero result (low-order point) is returned as is,
   * the caller rejects it.
   */
  x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array;

  /** The X25519 public key of `privateKey` (scalar multiplication by 9). */
  x25519Public(privateKey: Uint8Array): Uint8Array;

  /** BLAKE2s-256 of the concatenation of `parts` (RFC 7693). */
  hash(...parts: Uint8Array[]): Uint8Array;

  /** HMAC-BLAKE2s-256 (RFC 2104 over BLAKE2s, 64-byte block) of `data`. */
  hmac(key: Uint8Array, ...data: Uint8Array[]): Uint8Array;

  /** Keyed BLAKE2s with a 16-byte output (WireGuard's `MAC`). */
  mac(key: Uint8Array, ...data: Uint8Array[]): Uint8Array;
}
