/**
 * Small helpers the package's modules share (internal: not exported by
 * `mod.ts`).
 *
 * @module
 */

/** Equality of two byte strings, in constant time when their lengths match (MACs, keys). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc |= a[i] ^ b[i];
  return acc === 0;
}

/** Whether every byte is zero (in constant time: keys and DH results). */
export function isZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < bytes.length; i++) acc |= bytes[i];
  return acc === 0;
}

/** Whether 16 address bytes are an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2). */
export function isIpv4Mapped(address: Uint8Array): boolean {
  if (address.length !== 16) return false;
  for (let i = 0; i < 10; i++) if (address[i] !== 0) return false;
  return address[10] === 0xff && address[11] === 0xff;
}

/**
 * `value` when it is a positive integer.
 * @throws {RangeError} Otherwise, naming `name`.
 */
export function positiveInteger(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, not ${value}`);
  }
  return value;
}
