/**
 * Small helpers the package's modules share (internal: not exported by
 * `mod.ts`).
 *
 * @module
 */

/** Whether two byte strings are equal. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
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
