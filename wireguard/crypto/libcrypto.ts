/**
 * The libcrypto crypto backend: OpenSSL 3's `libcrypto.so.3` reached through
 * `Deno.dlopen` for ChaCha20-Poly1305 and X25519.
 *
 * ChaCha20-Poly1305 runs on two `EVP_CIPHER_CTX`s made once (one for seal,
 * one for open) and rekeyed per call with `EVP_CipherInit_ex`. Key, nonce,
 * tag and length out-parameters go through one preallocated scratch block
 * passed as pointers (V8 fast calls; `"buffer"` arguments cost more), the
 * data straight from the caller's `plaintext` into its `out`: a seal or open
 * allocates nothing but the returned view of `out` (none when `out` has
 * exactly the right length). Every length is checked in TypeScript before a
 * pointer reaches C: OpenSSL only ever reads `input.length` bytes and writes
 * at most `out.length` bytes. A failed open wipes the unauthenticated
 * plaintext OpenSSL already wrote into `out`. The contexts keep the last
 * key schedule until the next call, as any reused OpenSSL context does.
 *
 * X25519 builds `EVP_PKEY`s from the raw keys for each call and frees them
 * before it returns (nothing is retained); the private key is imported as a
 * key pair with a placeholder public half, which spares OpenSSL computing a
 * public key the exchange never reads (a shared secret then costs about 0.6×
 * `node:crypto`'s). Public keys come from `node:crypto` where it exists:
 * OpenSSL 3.0's derivation measured about 1.25× slower here (see
 * bench/crypto_bench.ts). BLAKE2s stays in TypeScript
 * (`blake2s.ts`), as in the other backends: per call it beats libcrypto's
 * `EVP_Digest*` on WireGuard's 32–148 byte inputs once the FFI calls are
 * counted (see bench/crypto_bench.ts). XChaCha20-Poly1305 is our HChaCha20
 * followed by the libcrypto AEAD.
 *
 * Available only in Deno on a system with `libcrypto.so.3` and with FFI
 * permission (`--allow-ffi`); {@linkcode libcryptoBackend} returns `null`
 * elsewhere (Node, browsers, no permission) without prompting.
 *
 * @module
 */

import { type CryptoBackend, KEY_LENGTH, NONCE_LENGTH, TAG_LENGTH } from "./backend.ts";
import { checkBytes } from "./_check.ts";
import { aeadOver, type OpenInto, passesSelfTest, type SealInto } from "./_aead.ts";
import { nativeBackend } from "./native.ts";
import { nobleBackend } from "./noble.ts";

// openssl/evp.h, obj_mac.h.
const EVP_CTRL_AEAD_GET_TAG = 0x10;
const EVP_CTRL_AEAD_SET_TAG = 0x11;
const EVP_PKEY_X25519 = 1034;

// The scratch block's layout (byte offsets).
const SCRATCH_KEY = 0;
const SCRATCH_NONCE = 32;
const SCRATCH_OUTL = 48;
const SCRATCH_TAG = 64;
const SCRATCH_FINAL = 128; // EVP_CipherFinal_ex writes nothing for ChaCha20-Poly1305
const SCRATCH_SIZE = 256;

// The key-import block: an OSSL_PARAM array (40 bytes per entry: key name,
// data type, data, data size, return size; then an all-zero terminator),
// the names it points to, the key bytes and the EVP_PKEY* out slot.
const OSSL_PARAM_SIZE = 40;
const OSSL_PARAM_OCTET_STRING = 5;
const OSSL_PARAM_UNMODIFIED = 0xffffffffffffffffn;
const IMPORT_NAMES = 3 * OSSL_PARAM_SIZE; // "priv\0pub\0"
const IMPORT_PRIVATE = 136;
const IMPORT_PUBLIC = 168;
const IMPORT_PKEY = 200;
const IMPORT_SIZE = 256;
/** EVP_PKEY_KEYPAIR: all parameters, the private and the public key. */
const EVP_PKEY_KEYPAIR = 0x87;

const SYMBOLS = {
  OpenSSL_version_num: { parameters: [], result: "u64" },
  EVP_chacha20_poly1305: { parameters: [], result: "pointer" },
  EVP_CIPHER_CTX_new: { parameters: [], result: "pointer" },
  EVP_CIPHER_CTX_free: { parameters: ["pointer"], result: "void" },
  // (ctx, cipher, engine, key, iv, enc). Fixed-size arguments live in one
  // preallocated scratch block and go in as "pointer"s (a fast call); the
  // caller's variable buffers go in as "buffer".
  EVP_CipherInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "pointer", "pointer", "i32"],
    result: "i32",
  },
  // (ctx, out, int *outl, in, inl)
  EVP_CipherUpdate: {
    parameters: ["pointer", "buffer", "pointer", "buffer", "i32"],
    result: "i32",
  },
  // (ctx, out, int *outl)
  EVP_CipherFinal_ex: { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
  // (ctx, type, arg, ptr)
  EVP_CIPHER_CTX_ctrl: { parameters: ["pointer", "i32", "i32", "pointer"], result: "i32" },
  // (type, engine, key, keylen)
  EVP_PKEY_new_raw_private_key: {
    parameters: ["i32", "pointer", "buffer", "usize"],
    result: "pointer",
  },
  EVP_PKEY_new_raw_public_key: {
    parameters: ["i32", "pointer", "buffer", "usize"],
    result: "pointer",
  },
  // (pkey, out, size_t *len)
  EVP_PKEY_get_raw_public_key: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  // (libctx, name, propq)
  EVP_PKEY_CTX_new_from_name: { parameters: ["pointer", "buffer", "pointer"], result: "pointer" },
  EVP_PKEY_fromdata_init: { parameters: ["pointer"], result: "i32" },
  // (ctx, EVP_PKEY **ppkey, selection, OSSL_PARAM params[])
  EVP_PKEY_fromdata: { parameters: ["pointer", "pointer", "i32", "pointer"], result: "i32" },
  EVP_PKEY_free: { parameters: ["pointer"], result: "void" },
  EVP_PKEY_CTX_new: { parameters: ["pointer", "pointer"], result: "pointer" },
  EVP_PKEY_CTX_free: { parameters: ["pointer"], result: "void" },
  EVP_PKEY_derive_init: { parameters: ["pointer"], result: "i32" },
  EVP_PKEY_derive_set_peer: { parameters: ["pointer", "pointer"], result: "i32" },
  // (ctx, out, size_t *len)
  EVP_PKEY_derive: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  ERR_clear_error: { parameters: [], result: "void" },
} as const;

type Libcrypto = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Library names tried in order (the versioned name first: no dev package needed). */
const LIBRARY_NAMES = ["libcrypto.so.3", "libcrypto.3.dylib", "libcrypto.so"];

/**
 * `publicKeyOf`: a faster X25519 public-key derivation to use instead of
 * OpenSSL's (see {@linkcode libcryptoBackend}).
 */
function createLibcryptoBackend(
  c: Libcrypto,
  publicKeyOf: ((privateKey: Uint8Array) => Uint8Array) | undefined,
): CryptoBackend {
  const cipher = c.EVP_chacha20_poly1305();
  const sealCtx = c.EVP_CIPHER_CTX_new();
  const openCtx = c.EVP_CIPHER_CTX_new();
  if (cipher === null || sealCtx === null || openCtx === null) {
    throw new Error("libcrypto could not create a ChaCha20-Poly1305 context");
  }
  // Bind the cipher once; later inits pass only the key and nonce.
  if (
    c.EVP_CipherInit_ex(sealCtx, cipher, null, null, null, 1) !== 1 ||
    c.EVP_CipherInit_ex(openCtx, cipher, null, null, null, 0) !== 1
  ) {
    throw new Error("libcrypto refused to set up ChaCha20-Poly1305");
  }

  // Scratch memory, allocated once (over 64 bytes, so V8 keeps it off the
  // heap and its address is stable): key | nonce | outl | tag | final out.
  const scratch = new Uint8Array(SCRATCH_SIZE);
  const base = Deno.UnsafePointer.of(scratch);
  if (base === null) throw new Error("Cannot take the address of the scratch buffer");
  const at = (offset: number) => Deno.UnsafePointer.offset(base, offset);
  const keyAt = at(SCRATCH_KEY);
  const nonceAt = at(SCRATCH_NONCE);
  const outLengthAt = at(SCRATCH_OUTL);
  const outLength = new Int32Array(scratch.buffer, SCRATCH_OUTL, 1);
  const tagAt = at(SCRATCH_TAG);
  const finalAt = at(SCRATCH_FINAL);
  const sizeT = new BigUint64Array(1);
  const sizeTBytes = new Uint8Array(sizeT.buffer);

  /** Copies the key and nonce into the scratch block (44 bytes: a loop beats a call). */
  function loadKey(key: Uint8Array, nonce: Uint8Array): void {
    for (let i = 0; i < KEY_LENGTH; i++) scratch[SCRATCH_KEY + i] = key[i];
    for (let i = 0; i < NONCE_LENGTH; i++) scratch[SCRATCH_NONCE + i] = nonce[i];
  }

  function aeadFailed(what: string): never {
    c.ERR_clear_error();
    throw new Error(`libcrypto ChaCha20-Poly1305 ${what} failed`);
  }

  /** Arguments were checked; `out` holds at least `plaintext.length + 16` bytes. */
  const sealInto: SealInto = (key, nonce, plaintext, aad, out) => {
    const length = plaintext.length;
    loadKey(key, nonce);
    const init = c.EVP_CipherInit_ex(sealCtx, null, null, keyAt, nonceAt, 1);
    scratch.fill(0, SCRATCH_KEY, SCRATCH_KEY + KEY_LENGTH);
    if (init !== 1) aeadFailed("init");
    if (aad !== undefined && aad.length > 0) {
      if (c.EVP_CipherUpdate(sealCtx, null, outLengthAt, aad, aad.length) !== 1) {
        aeadFailed("aad");
      }
    }
    if (length > 0) {
      if (c.EVP_CipherUpdate(sealCtx, out, outLengthAt, plaintext, length) !== 1) {
        aeadFailed("update");
      }
      if (outLength[0] !== length) aeadFailed("update length");
    }
    if (c.EVP_CipherFinal_ex(sealCtx, finalAt, outLengthAt) !== 1) aeadFailed("final");
    if (c.EVP_CIPHER_CTX_ctrl(sealCtx, EVP_CTRL_AEAD_GET_TAG, TAG_LENGTH, tagAt) !== 1) {
      aeadFailed("tag");
    }
    for (let i = 0; i < TAG_LENGTH; i++) out[length + i] = scratch[SCRATCH_TAG + i];
    const sealed = length + TAG_LENGTH;
    return out.length === sealed ? out : out.subarray(0, sealed);
  };

  /** Arguments were checked; `length` is the plaintext length (≥ 0). */
  const openInto: OpenInto = (key, nonce, ciphertext, aad, out, length) => {
    loadKey(key, nonce);
    const init = c.EVP_CipherInit_ex(openCtx, null, null, keyAt, nonceAt, 0);
    scratch.fill(0, SCRATCH_KEY, SCRATCH_KEY + KEY_LENGTH);
    if (init !== 1) aeadFailed("init");
    for (let i = 0; i < TAG_LENGTH; i++) scratch[SCRATCH_TAG + i] = ciphertext[length + i];
    if (c.EVP_CIPHER_CTX_ctrl(openCtx, EVP_CTRL_AEAD_SET_TAG, TAG_LENGTH, tagAt) !== 1) {
      aeadFailed("tag");
    }
    if (aad !== undefined && aad.length > 0) {
      if (c.EVP_CipherUpdate(openCtx, null, outLengthAt, aad, aad.length) !== 1) {
        aeadFailed("aad");
      }
    }
    if (length > 0) {
      if (c.EVP_CipherUpdate(openCtx, out, outLengthAt, ciphertext, length) !== 1) {
        aeadFailed("update");
      }
      if (outLength[0] !== length) aeadFailed("update length");
    }
    if (c.EVP_CipherFinal_ex(openCtx, finalAt, outLengthAt) !== 1) {
      // A wrong tag: OpenSSL has already decrypted into `out`. Wipe that
      // unauthenticated plaintext so no caller can use it by mistake.
      c.ERR_clear_error();
      out.fill(0, 0, length);
      return null;
    }
    return out.length === length ? out : out.subarray(0, length);
  };

  /** An X25519 `EVP_PKEY` from 32 raw bytes; the caller frees it. */
  function rawKey(bytes: Uint8Array, isPrivate: boolean): Deno.PointerObject {
    const pkey = isPrivate
      ? c.EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, null, bytes, BigInt(KEY_LENGTH))
      : c.EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, null, bytes, BigInt(KEY_LENGTH));
    if (pkey === null) {
      c.ERR_clear_error();
      throw new Error("libcrypto could not load an X25519 key");
    }
    return pkey;
  }

  // A private key for a key exchange. EVP_PKEY_new_raw_private_key computes
  // the public key as it loads the private one (a fixed-base scalar
  // multiplication, half the cost of the whole exchange) although the
  // exchange never reads it. Importing a key pair with EVP_PKEY_fromdata and
  // a placeholder public key skips that work; the key never leaves this file.
  const importBlock = new Uint8Array(IMPORT_SIZE);
  const importView = new DataView(importBlock.buffer);
  const importAt = Deno.UnsafePointer.of(importBlock);
  if (importAt === null) throw new Error("Cannot take the address of the key-import block");
  const importBase = BigInt(Deno.UnsafePointer.value(importAt));
  const pkeyAt = Deno.UnsafePointer.offset(importAt, IMPORT_PKEY);
  importBlock.set([0x70, 0x72, 0x69, 0x76, 0, 0x70, 0x75, 0x62, 0], IMPORT_NAMES); // priv, pub
  const params: [number, number][] = [[IMPORT_NAMES, IMPORT_PRIVATE], [
    IMPORT_NAMES + 5,
    IMPORT_PUBLIC,
  ]];
  params.forEach(([name, data], i) => {
    const at = i * OSSL_PARAM_SIZE;
    importView.setBigUint64(at, importBase + BigInt(name), true);
    importView.setUint32(at + 8, OSSL_PARAM_OCTET_STRING, true);
    importView.setBigUint64(at + 16, importBase + BigInt(data), true);
    importView.setBigUint64(at + 24, BigInt(KEY_LENGTH), true);
    importView.setBigUint64(at + 32, OSSL_PARAM_UNMODIFIED, true);
  });
  importBlock[IMPORT_PUBLIC] = 9; // the placeholder: the base point
  const importCtx = c.EVP_PKEY_CTX_new_from_name(null, new TextEncoder().encode("X25519\0"), null);
  if (importCtx === null || c.EVP_PKEY_fromdata_init(importCtx) !== 1) {
    throw new Error("libcrypto cannot import X25519 keys");
  }

  /** An X25519 `EVP_PKEY` for `derive` only (its public half is a placeholder). */
  function exchangeKey(privateKey: Uint8Array): Deno.PointerObject {
    for (let i = 0; i < KEY_LENGTH; i++) importBlock[IMPORT_PRIVATE + i] = privateKey[i];
    // *ppkey must be NULL: fromdata fills an existing EVP_PKEY otherwise.
    importView.setBigUint64(IMPORT_PKEY, 0n, true);
    const ok = c.EVP_PKEY_fromdata(importCtx, pkeyAt, EVP_PKEY_KEYPAIR, importAt) === 1;
    importBlock.fill(0, IMPORT_PRIVATE, IMPORT_PRIVATE + KEY_LENGTH);
    const pkey = ok ? Deno.UnsafePointer.create(importView.getBigUint64(IMPORT_PKEY, true)) : null;
    if (pkey === null) {
      c.ERR_clear_error();
      throw new Error("libcrypto could not load an X25519 key");
    }
    return pkey;
  }

  /** The shared secret into `out`, or `false` when libcrypto refused (low-order point). */
  function derive(privateKey: Uint8Array, publicKey: Uint8Array, out: Uint8Array): boolean {
    const own = exchangeKey(privateKey);
    let peer: Deno.PointerObject | null = null;
    let ctx: Deno.PointerValue = null;
    try {
      peer = rawKey(publicKey, false);
      ctx = c.EVP_PKEY_CTX_new(own, null);
      if (ctx === null) throw new Error("libcrypto could not create an X25519 context");
      sizeT[0] = BigInt(KEY_LENGTH);
      const ok = c.EVP_PKEY_derive_init(ctx) === 1 &&
        c.EVP_PKEY_derive_set_peer(ctx, peer) === 1 &&
        c.EVP_PKEY_derive(ctx, out, sizeTBytes) === 1 && sizeT[0] === BigInt(KEY_LENGTH);
      if (!ok) c.ERR_clear_error();
      return ok;
    } finally {
      if (ctx !== null) c.EVP_PKEY_CTX_free(ctx);
      if (peer !== null) c.EVP_PKEY_free(peer);
      c.EVP_PKEY_free(own);
    }
  }

  return {
    name: "libcrypto",

    ...aeadOver(sealInto, openInto),

    x25519(privateKey, publicKey) {
      checkBytes(privateKey, "privateKey", KEY_LENGTH);
      checkBytes(publicKey, "publicKey", KEY_LENGTH);
      const out = new Uint8Array(KEY_LENGTH);
      if (derive(privateKey, publicKey, out)) return out;
      // OpenSSL refuses an all-zero shared secret (a low-order point). Such
      // inputs are rare and hostile: compute them portably, which yields the
      // all-zero value the interface promises.
      return nobleBackend.x25519(privateKey, publicKey);
    },

    x25519Public(privateKey) {
      checkBytes(privateKey, "privateKey", KEY_LENGTH);
      if (publicKeyOf !== undefined) return publicKeyOf(privateKey);
      const own = rawKey(privateKey, true);
      try {
        const out = new Uint8Array(KEY_LENGTH);
        sizeT[0] = BigInt(KEY_LENGTH);
        if (
          c.EVP_PKEY_get_raw_public_key(own, out, sizeTBytes) !== 1 ||
          sizeT[0] !== BigInt(KEY_LENGTH)
        ) {
          c.ERR_clear_error();
          throw new Error("libcrypto could not derive an X25519 public key");
        }
        return out;
      } finally {
        c.EVP_PKEY_free(own);
      }
    },

    // BLAKE2s stays in TypeScript (shared with the other backends): see the
    // module documentation.
    hash: nobleBackend.hash,
    hmac: nobleBackend.hmac,
    mac: nobleBackend.mac,
  };
}

function openLibrary(deno: typeof Deno): Deno.DynamicLibrary<typeof SYMBOLS> | null {
  for (const name of LIBRARY_NAMES) {
    try {
      const lib = deno.dlopen(name, SYMBOLS);
      // OpenSSL 3.x only (0xMNN00000L): 1.1 lacks nothing we call, but it is
      // out of support and its ChaCha20-Poly1305 init semantics differ.
      if (lib.symbols.OpenSSL_version_num() >> 28n >= 3n) return lib;
      lib.close();
    } catch {
      // Not there, or a symbol is missing: try the next name.
    }
  }
  return null;
}

let cached: CryptoBackend | null | undefined;

/**
 * The libcrypto backend, or `null` when it cannot be used here: not Deno,
 * no FFI permission (`--allow-ffi`; never prompts), no OpenSSL 3
 * `libcrypto`, or a library that fails the known-answer self-test. The
 * first call loads the library; later calls return the same object. The
 * library stays loaded for the life of the process.
 *
 * @example
 * ```ts
 * import { libcryptoBackend, nobleBackend } from "@wgstack/wireguard";
 *
 * const backend = libcryptoBackend() ?? nobleBackend;
 * const out = new Uint8Array(3 + 16);
 * backend.seal(new Uint8Array(32), new Uint8Array(12), new Uint8Array([1, 2, 3]), undefined, out);
 * ```
 */
export function libcryptoBackend(): CryptoBackend | null {
  if (cached !== undefined) return cached;
  cached = null;
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (typeof deno?.dlopen !== "function") return cached;
  try {
    // Ask first: a bare dlopen would prompt on a terminal without --allow-ffi.
    if (deno.permissions.querySync({ name: "ffi" }).state !== "granted") return cached;
  } catch {
    return cached;
  }
  const lib = openLibrary(deno);
  if (lib === null) return cached;
  try {
    const publicKeyOf = nativeBackend()?.x25519Public;
    const backend = Object.freeze(createLibcryptoBackend(lib.symbols, publicKeyOf));
    if (passesSelfTest(backend)) cached = backend;
  } catch {
    cached = null;
  }
  if (cached === null) lib.close();
  return cached;
}
