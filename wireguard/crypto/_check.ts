/**
 * Argument checks shared by the crypto backends. Misuse (a wrong type or
 * length) throws; bad network input never reaches these checks as an error.
 *
 * @module
 */

import { KEY_LENGTH, NONCE_LENGTH, TAG_LENGTH, XNONCE_LENGTH } from "./backend.ts";

/**
 * Throws a `TypeError` unless `value` is a `Uint8Array`, and a `RangeError`
 * unless its length is `length` (when given).
 */
export function checkBytes(value: unknown, name: string, length?: number): void {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(`Expected ${name} to be a Uint8Array, got ${describe(value)}`);
  }
  if (length !== undefined && value.length !== length) {
    throw new RangeError(`Expected ${name} to be ${length} bytes, got ${value.length}`);
  }
}

/** Checks the arguments common to `seal` and `open`. */
export function checkAead(
  key: Uint8Array,
  nonce: Uint8Array,
  input: Uint8Array,
  aad: Uint8Array | undefined,
  out: Uint8Array,
  outLength: number,
): void {
  checkBytes(key, "key", KEY_LENGTH);
  checkBytes(nonce, "nonce", NONCE_LENGTH);
  checkBytes(input, "input");
  if (aad !== undefined) checkBytes(aad, "aad");
  checkBytes(out, "out");
  if (out.length < outLength) {
    throw new RangeError(`Expected out to hold at least ${outLength} bytes, got ${out.length}`);
  }
}

/** Checks the arguments of `xseal` and `xopen`. */
export function checkXAead(
  key: Uint8Array,
  nonce: Uint8Array,
  input: Uint8Array,
  aad: Uint8Array | undefined,
): void {
  checkBytes(key, "key", KEY_LENGTH);
  checkBytes(nonce, "nonce", XNONCE_LENGTH);
  checkBytes(input, "input");
  if (aad !== undefined) checkBytes(aad, "aad");
}

/** Checks every element of a rest parameter of byte strings. */
export function checkParts(parts: Uint8Array[]): void {
  for (let i = 0; i < parts.length; i++) checkBytes(parts[i], `data part ${i}`);
}

/** The plaintext length of a ciphertext with its tag, or -1 when it is too short. */
export function plaintextLength(ciphertext: Uint8Array): number {
  return ciphertext.length < TAG_LENGTH ? -1 : ciphertext.length - TAG_LENGTH;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "object") return (value as object).constructor?.name ?? "an object";
  return typeof value;
}
