/**
 * WireGuard keys: generation, public key derivation and the base64 text form
 * used by `wg` and wg-quick configuration files.
 *
 * @module
 */

import { type CryptoBackend, KEY_LENGTH } from "./crypto/backend.ts";
import { defaultBackend } from "./crypto/mod.ts";
import { BASE64, decodeKey, encodeKey } from "./crypto/_base64.ts";

/** Length of a key in base64 text: 32 bytes → 43 characters and one `=`. */
const BASE64_KEY_LENGTH = 44;
const EXPECTED = "Expected a 32-byte key in base64 (44 characters), got ";
/** Maps a character code to its 6-bit value, or -1. */
const BASE64_VALUES: Int8Array = (() => {
  const table = new Int8Array(128).fill(-1);
  for (let i = 0; i < BASE64.length; i++) table[BASE64.charCodeAt(i)] = i;
  return table;
})();

function checkKey(key: unknown, name: string): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array)) {
    throw new TypeError(`Expected ${name} to be a Uint8Array, got ${typeName(key)}`);
  }
  if (key.length !== KEY_LENGTH) {
    throw new RangeError(`Expected ${name} to be ${KEY_LENGTH} bytes, got ${key.length}`);
  }
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "object") return (value as object).constructor?.name ?? "an object";
  return typeof value;
}

/**
 * A new random X25519 private key, clamped as RFC 7748 §5 describes (the low
 * three bits cleared, bit 255 cleared, bit 254 set), like `wg genkey`.
 *
 * @example
 * ```ts
 * import { generatePrivateKey, keyToBase64 } from "@wgstack/wireguard";
 *
 * console.log(keyToBase64(generatePrivateKey())); // like `wg genkey`
 * ```
 */
export function generatePrivateKey(): Uint8Array {
  const key = crypto.getRandomValues(new Uint8Array(KEY_LENGTH));
  key[0] &= 248;
  key[31] &= 127;
  key[31] |= 64;
  return key;
}

/**
 * A new random 32-byte preshared key, like `wg genpsk`.
 *
 * @example
 * ```ts
 * import { generatePresharedKey, keyToBase64 } from "@wgstack/wireguard";
 *
 * console.log(keyToBase64(generatePresharedKey()));
 * ```
 */
export function generatePresharedKey(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(KEY_LENGTH));
}

/**
 * The public key of `privateKey`, like `wg pubkey`. The private key need not
 * be clamped: X25519 clamps it anyway.
 *
 * @param privateKey A 32-byte private key.
 * @param backend The crypto backend; {@linkcode defaultBackend} when omitted.
 * @returns The 32-byte public key.
 * @throws {TypeError} When `privateKey` is not a `Uint8Array`.
 * @throws {RangeError} When `privateKey` is not 32 bytes long.
 *
 * @example
 * ```ts
 * import { generatePrivateKey, publicKey } from "@wgstack/wireguard";
 *
 * const privateKey = generatePrivateKey();
 * const pub = publicKey(privateKey);
 * ```
 */
export function publicKey(privateKey: Uint8Array, backend?: CryptoBackend): Uint8Array {
  checkKey(privateKey, "privateKey");
  return (backend ?? defaultBackend()).x25519Public(privateKey);
}

/**
 * The base64 text of a 32-byte key (44 characters, ending in `=`), the form
 * `wg` prints and wg-quick configuration files use.
 *
 * @param key A 32-byte key.
 * @returns 44 characters of standard base64 with padding.
 * @throws {TypeError} When `key` is not a `Uint8Array`.
 * @throws {RangeError} When `key` is not 32 bytes long.
 *
 * @example
 * ```ts
 * import { keyToBase64 } from "@wgstack/wireguard";
 *
 * keyToBase64(new Uint8Array(32)); // "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
 * ```
 */
export function keyToBase64(key: Uint8Array): string {
  checkKey(key, "key");
  return encodeKey(key, BASE64) + "=";
}

/**
 * Parses the base64 text of a 32-byte key, as printed by `wg genkey`,
 * `wg pubkey` and `wg genpsk`. Surrounding whitespace (a trailing newline
 * from a key file) is ignored; anything else must be exactly 43 base64
 * characters and `=`, in canonical form. Error messages never repeat the
 * text, since it may be a private key.
 *
 * @param text The base64 text.
 * @returns The 32-byte key.
 * @throws {TypeError} When `text` is not a string.
 * @throws {RangeError} When `text` is not the base64 form of 32 bytes.
 *
 * @example
 * ```ts
 * import { keyFromBase64 } from "@wgstack/wireguard";
 *
 * const key = keyFromBase64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
 * ```
 */
export function keyFromBase64(text: string): Uint8Array {
  if (typeof text !== "string") throw new TypeError(EXPECTED + typeName(text));
  const s = text.trim();
  if (s.length !== BASE64_KEY_LENGTH) {
    throw new RangeError(EXPECTED + `${s.length} character${s.length === 1 ? "" : "s"}`);
  }
  if (s.charCodeAt(43) !== 0x3d /* = */) {
    throw new RangeError(EXPECTED + "a string that does not end with a single '='");
  }
  const values = new Uint8Array(43);
  for (let i = 0; i < 43; i++) {
    const code = s.charCodeAt(i);
    const value = code < 128 ? BASE64_VALUES[code] : -1;
    if (value < 0) {
      throw new RangeError(
        EXPECTED + `a character outside the base64 alphabet at position ${i + 1}`,
      );
    }
    values[i] = value;
  }
  if ((values[42] & 3) !== 0) {
    throw new RangeError(
      EXPECTED + "a non-canonical encoding (the character before '=' has stray low bits)",
    );
  }
  return decodeKey(values);
}
