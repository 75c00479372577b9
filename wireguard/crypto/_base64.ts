/**
 * Base64 of exactly 32 bytes (a key), with either alphabet: 43 sextets, the
 * last holding 4 bits of data and 2 zero bits (RFC 4648 §4, §5). Internal.
 *
 * @module
 */

/** The base64 alphabet (RFC 4648 §4). */
export const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/** The base64url alphabet (RFC 4648 §5). */
export const BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** The 43 unpadded characters of 32 bytes in `alphabet`. */
export function encodeKey(bytes: Uint8Array, alphabet: string): string {
  let text = "";
  for (let i = 0; i < 30; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    text += alphabet[n >>> 18] + alphabet[(n >>> 12) & 63] + alphabet[(n >>> 6) & 63] +
      alphabet[n & 63];
  }
  const n = (bytes[30] << 8) | bytes[31];
  return text + alphabet[n >>> 10] + alphabet[(n >>> 4) & 63] + alphabet[(n << 2) & 63];
}

/** The 32 bytes that 43 sextet values (0–63 each, already checked) encode. */
export function decodeKey(values: Uint8Array): Uint8Array {
  const out = new Uint8Array(32);
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
