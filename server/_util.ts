/**
 * Small helpers the package's modules share (internal: not exported by
 * `mod.ts`).
 *
 * @module
 */

/** Whether the 16 bytes at `offset` are an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2). */
export function isIpv4Mapped(bytes: Uint8Array, offset = 0): boolean {
  if (bytes.length < offset + 16) return false;
  for (let i = 0; i < 10; i++) if (bytes[offset + i] !== 0) return false;
  return bytes[offset + 10] === 0xff && bytes[offset + 11] === 0xff;
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
