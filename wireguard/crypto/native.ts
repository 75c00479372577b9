/**
 * The native crypto backend: `node:crypto` (native code in both Node and
 * Deno) for ChaCha20-Poly1305 and X25519.
 *
 * `node:crypto` is reached through `process.getBuiltinModule`, never a static
 * import, so this module loads in browsers too (where the backend is simply
 * unavailable). BLAKE2s-256, HMAC-BLAKE2s and keyed BLAKE2s come from
 * `blake2s.ts`, as in the portable backend: on handshake-sized inputs it is
 * several times faster than `node:crypto`'s per-call overhead.
 * XChaCha20-Poly1305 is HChaCha20 (`_aead.ts`) followed by the native
 * ChaCha20-Poly1305.
 *
 * @module
 */

import type * as NodeCrypto from "node:crypto";
import { type CryptoBackend, KEY_LENGTH, TAG_LENGTH } from "./backend.ts";
import { checkBytes } from "./_check.ts";
import { BASE64URL, decodeKey, encodeKey } from "./_base64.ts";
import { aeadOver, type OpenInto, passesSelfTest, type SealInto } from "./_aead.ts";
import { nobleBackend } from "./noble.ts";

type NodeCryptoModule = typeof NodeCrypto;

/** Unpadded base64url (RFC 4648 §5) of 32 bytes: 43 characters, for JWK. */
function toBase64Url(bytes: Uint8Array): string {
  return encodeKey(bytes, BASE64URL);
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
  return decodeKey(values);
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

  const sealInto: SealInto = (key, nonce, plaintext, aad, out) => {
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
  };

  const openInto: OpenInto = (key, nonce, ciphertext, aad, out, length) => {
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
  };

  return {
    name: "native",

    ...aeadOver(sealInto, openInto),

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
    if (passesSelfTest(backend)) cached = backend;
  } catch {
    cached = null;
  }
  return cached;
}
