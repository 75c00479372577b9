/**
 * The Internet checksum (RFC 1071) and the TCP/UDP pseudo-header sums for
 * IPv4 (RFC 9293 §3.1, RFC 768) and IPv6 (RFC 8200 §8.1).
 *
 * @module
 */

/**
 * Adds the 16-bit big-endian words of `bytes` to `sum` (RFC 1071 §4.1) and
 * returns the unfolded 32-bit-safe sum. An odd trailing byte is padded with
 * zero. Call {@linkcode foldChecksum} on the final sum.
 */
export function sumWords(bytes: Uint8Array, sum = 0): number {
  const n = bytes.length;
  const even = n & ~1;
  for (let i = 0; i < even; i += 2) {
    sum += (bytes[i] << 8) | bytes[i + 1];
  }
  if (n & 1) sum += bytes[n - 1] << 8;
  // Keep the accumulator small enough to stay a small integer in V8.
  return (sum & 0xffff) + (sum >>> 16);
}

/** Folds a sum to 16 bits and returns its one's complement (the checksum). */
export function foldChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** The Internet checksum of `bytes` (RFC 1071). */
export function internetChecksum(bytes: Uint8Array): number {
  return foldChecksum(sumWords(bytes));
}

/**
 * The partial sum of the pseudo-header for an upper-layer protocol:
 * IPv4 (src, dst, zero, protocol, length) or IPv6 (src, dst, 32-bit length,
 * zeros, next header). `src` and `dst` are both 4 or both 16 bytes.
 */
export function pseudoHeaderSum(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  length: number,
): number {
  let sum = sumWords(src);
  sum = sumWords(dst, sum);
  sum += protocol + (length >>> 16) + (length & 0xffff);
  return sum;
}

/**
 * The checksum of an upper-layer packet (TCP, UDP, ICMPv6) including its
 * pseudo-header. When the checksum field inside `payload` is filled in, a
 * correct packet yields `0`.
 */
export function upperLayerChecksum(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  payload: Uint8Array,
): number {
  return foldChecksum(sumWords(payload, pseudoHeaderSum(src, dst, protocol, payload.length)));
}
