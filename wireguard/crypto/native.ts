/**
 * The native crypto backend: `node:crypto` (native code in both Node and
 * Deno) for ChaCha20-Poly1305 and X25519.
 *
 * `node:crypto` is reached through `process.getBuiltinModule`, never a static
 * import, so this module loads in browsers too (where the backend is simply
 * unavailable). BLAKE2s-256, HMAC-BLAKE2s and keyed BLAKE2s come from
 * `blake2s.ts`, as in the portable backend: on handshake-sized inputs it is
 * several times faster than `node:crypto`'s per-call overhead.
 * XChaCha20-Poly1305 is HChaCha20 (below) followed by the native
 * ChaCha20-Poly1305.
 *
 * @module
 */

import type * as NodeCrypto from "node:crypto";
import { type CryptoBackend, KEY_LENGTH, NONCE_LENGTH, TAG_LENGTH } from "./backend.ts";
import { checkAead, checkBytes, checkXAead, plaintextLength } from "./_check.ts";
import { nobleBackend } from "./noble.ts";

type NodeCryptoModule = typeof NodeCrypto;

const BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** Unpadded base64url (RFC 4648 §5) of 32 bytes: 43 characters, for JWK. */
function toBase64Url(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < 30; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    text += BASE64URL[n >>> 18] + BASE64URL[(n >>> 12) & 63] + BASE64URL[(n >>> 6) & 63] +
      BASE64URL[n & 63];
  }
  const n = (bytes[30] << 8) | bytes[31];
  return text + BASE64URL[n >>> 10] + BASE64URL[(n >>> 4) & 63] + BASE64URL[(n << 2) & 63];
}

/** The 32 bytes of a 43-character base64url JWK member, or `null` when it is not that. */
function fromBase64Url(text: string | undefined): Uint8Array | null {
  if (text === undefined || text.length !== 43) return null;
  const values = new Uint8Array(43);
  for (let i = 0; i < 43; i++) {
    const value = BASE64URL.indexOf(text[i]);
    if (value < 0) return null;
    values[i] = value;
  }
  const out = new Uint8Array(KEY_LENGTH);
  for (let i = 0, j = 0; i < 30; i += 3, j += 4) {
    const n = (values[j] << 18) | (values[j + 1] << 12) | (values[j + 2] << 6) | values[j + 3];
    out[i] = n >>> 16;
    out[i + 1] = n >>> 8;
    out[i + 2] = n;
  }
  const n = (values[40] << 10) | (values[41] << 4) | (values[42] >>> 2);
  out[30] = n >>> 8;
  out[31] = n;
  return out;
}

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

function loadNodeCrypto(): NodeCryptoModule | null {
  const process = (globalThis as {
    process?: { getBuiltinModule?: (id: string) => unknown };
  }).process;
  try {
    const module = process?.getBuiltinModule?.("node:crypto") as NodeCryptoModule | undefined;
    return module ?? null;
  } catch {
    return null;
  }
}

function createNativeBackend(nc: NodeCryptoModule): CryptoBackend {
  const AEAD = "chacha20-poly1305";
  const aeadOptions = { authTagLength: TAG_LENGTH } as const;
  // Reused for every setAAD call (the length only matters to CCM mode).
  const aadOptions = { plaintextLength: 0 };
  // X25519 keys go in and out as JWK (RFC 8037): in Node 20 importing a
  // JWK is several times faster than importing DER (OpenSSL 3 decoders), in
  // Deno they cost the same. JWK import reads only `d` from a private key, but
  // insists that `x` is a string. The objects are reused; `d` is cleared after.
  const privateJwk = { kty: "OKP", crv: "X25519", d: "", x: "" };
  const publicJwk = { kty: "OKP", crv: "X25519", x: "" };

  function privateKeyObject(privateKey: Uint8Array): NodeCrypto.KeyObject {
    privateJwk.d = toBase64Url(privateKey);
    try {
      return nc.createPrivateKey({ key: privateJwk, format: "jwk" });
    } finally {
      privateJwk.d = "";
    }
  }

  function publicKeyObject(publicKey: Uint8Array): NodeCrypto.KeyObject {
    publicJwk.x = toBase64Url(publicKey);
    return nc.createPublicKey({ key: publicJwk, format: "jwk" });
  }

  function sealInto(
    key: Uint8Array,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array | undefined,
    out: Uint8Array,
  ): Uint8Array {
    const cipher = nc.createCipheriv(AEAD, key, nonce, aeadOptions);
    if (aad !== undefined && aad.length > 0) {
      aadOptions.plaintextLength = plaintext.length;
      cipher.setAAD(aad, aadOptions);
    }
    const body = cipher.update(plaintext);
    out.set(body);
    const rest = cipher.final();
    if (rest.length > 0) out.set(rest, body.length);
    out.set(cipher.getAuthTag(), plaintext.length);
    return out.subarray(0, plaintext.length + TAG_LENGTH);
  }

  function openInto(
    key: Uint8Array,
    nonce: Uint8Array,
    ciphertext: Uint8Array,
    aad: Uint8Array | undefined,
    out: Uint8Array,
    length: number,
  ): Uint8Array | null {
    const decipher = nc.createDecipheriv(AEAD, key, nonce, aeadOptions);
    decipher.setAuthTag(ciphertext.subarray(length));
    if (aad !== undefined && aad.length > 0) {
      aadOptions.plaintextLength = length;
      decipher.setAAD(aad, aadOptions);
    }
    const body = decipher.update(ciphertext.subarray(0, length));
    let rest;
    try {
      rest = decipher.final();
    } catch {
      return null;
    }
    // Written only after the tag checked out: on failure `out` is untouched.
    out.set(body);
    if (rest.length > 0) out.set(rest, body.length);
    return out.subarray(0, length);
  }

  function xnonce(nonce: Uint8Array): Uint8Array {
    // draft-irtf-cfrg-xchacha-03 §2.3: four zero bytes, then nonce[16..24].
    const n = new Uint8Array(NONCE_LENGTH);
    n.set(nonce.subarray(16, 24), 4);
    return n;
  }

  return {
    name: "native",

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

    x25519(privateKey, publicKey) {
      checkBytes(privateKey, "privateKey", KEY_LENGTH);
      checkBytes(publicKey, "publicKey", KEY_LENGTH);
      let secret: Uint8Array;
      try {
        secret = nc.diffieHellman({
          privateKey: privateKeyObject(privateKey),
          publicKey: publicKeyObject(publicKey),
        });
      } catch {
        // OpenSSL refuses to return an all-zero shared secret (a low-order
        // point). Such inputs are rare and hostile: compute them portably,
        // which yields the all-zero value the interface promises.
        return nobleBackend.x25519(privateKey, publicKey);
      }
      return new Uint8Array(secret);
    },

    x25519Public(privateKey) {
      checkBytes(privateKey, "privateKey", KEY_LENGTH);
      const jwk = nc.createPublicKey(privateKeyObject(privateKey)).export({ format: "jwk" });
      const key = fromBase64Url(jwk.x);
      if (key === null) {
        throw new Error("node:crypto exported an X25519 public key that is not 32 bytes");
      }
      return key;
    },

    // BLAKE2s in TypeScript (blake2s.ts, shared with the portable backend)
    // beats `node:crypto` here: createHash/createHmac cost 3–8 µs a call in
    // JS wrapper overhead, about 4× the whole TypeScript hash (see
    // bench/crypto_bench.ts).
    hash: nobleBackend.hash,
    hmac: nobleBackend.hmac,
    mac: nobleBackend.mac,
  };
}

/** Known answers that a working `node:crypto` must reproduce before we trust it. */
function selfTest(backend: CryptoBackend): boolean {
  const hex = (bytes: Uint8Array) =>
    Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  // BLAKE2s-256("abc"), RFC 7693 Appendix B.
  const abc = backend.hash(new Uint8Array([0x61, 0x62, 0x63]));
  if (hex(abc) !== "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982") {
    return false;
  }
  // X25519 public key of 0x01 repeated, cross-checked against the portable backend.
  const secret = new Uint8Array(KEY_LENGTH).fill(1);
  if (hex(backend.x25519Public(secret)) !== hex(nobleBackend.x25519Public(secret))) return false;
  // ChaCha20-Poly1305 round trip, cross-checked against the portable backend.
  const key = new Uint8Array(KEY_LENGTH).fill(2);
  const nonce = new Uint8Array(NONCE_LENGTH).fill(3);
  const plaintext = new Uint8Array(33).fill(4);
  const aad = new Uint8Array(5).fill(5);
  const sealed = backend.seal(key, nonce, plaintext, aad, new Uint8Array(33 + TAG_LENGTH));
  const expected = nobleBackend.seal(key, nonce, plaintext, aad, new Uint8Array(33 + TAG_LENGTH));
  if (hex(sealed) !== hex(expected)) return false;
  const opened = backend.open(key, nonce, sealed, aad, new Uint8Array(33));
  return opened !== null && hex(opened) === hex(plaintext);
}

let cached: CryptoBackend | null | undefined;

/**
 * The native backend, or `null` when this runtime has no usable
 * `node:crypto` (browsers, old Node without `process.getBuiltinModule`, or a
 * `node:crypto` lacking ChaCha20-Poly1305 or X25519). The first call
 * probes the runtime with a few known answers; later calls return the same
 * object.
 *
 * @example
 * ```ts
 * import { nativeBackend, nobleBackend } from "@wgstack/wireguard";
 *
 * const backend = nativeBackend() ?? nobleBackend;
 * const digest = backend.hash(new TextEncoder().encode("abc"));
 * ```
 */
export function nativeBackend(): CryptoBackend | null {
  if (cached !== undefined) return cached;
  cached = null;
  const nc = loadNodeCrypto();
  if (nc === null) return cached;
  try {
    if (
      typeof nc.createCipheriv !== "function" || typeof nc.diffieHellman !== "function" ||
      !nc.getCiphers().includes("chacha20-poly1305")
    ) {
      return cached;
    }
    const backend = Object.freeze(createNativeBackend(nc));
    if (selfTest(backend)) cached = backend;
  } catch {
    cached = null;
  }
  return cached;
}
