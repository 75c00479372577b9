/**
 * IP address text forms for the WireGuard package: parse an IPv4 dotted quad
 * or IPv6 text (RFC 4291 §2.2) into 4 or 16 bytes, and format bytes back
 * (IPv6 per RFC 5952 §4).
 *
 * This package does not depend on `netstack/`, so it carries its own small
 * parser; it is strict in the way `inet_pton(3)` is strict.
 *
 * @module
 */

import { isIpv4Mapped } from "./_util.ts";

/**
 * Parses an IPv4 dotted quad (`192.0.2.1`) or IPv6 text (`2001:db8::1`,
 * `::ffff:192.0.2.1`) into 4 or 16 bytes in network order.
 *
 * Returns `null` when `text` is not an address. Like `inet_pton(3)`, it does
 * not accept surrounding whitespace, IPv4 octets with leading zeros (they
 * would be ambiguous with octal), shortened IPv4 forms, or IPv6 zone ids.
 *
 * @example
 * ```ts
 * import { parseIp } from "./ip.ts";
 * parseIp("10.0.0.1"); // Uint8Array [10, 0, 0, 1]
 * parseIp("fd00::1")?.length; // 16
 * parseIp("example.com"); // null
 * ```
 */
export function parseIp(text: string): Uint8Array | null {
  if (text.includes(":")) return parseIpv6(text);
  const out = new Uint8Array(4);
  return parseIpv4Into(text, out, 0) ? out : null;
}

/**
 * Formats a 4-byte address as a dotted quad and a 16-byte address as RFC 5952
 * canonical text: lowercase hex, no leading zeros, the longest run of two or
 * more zero groups (the first one on a tie) compressed to `::`.
 *
 * IPv4-mapped addresses (`::ffff:0:0/96`) are written with a dotted-quad tail
 * as RFC 5952 §5 recommends.
 *
 * @throws {RangeError} When `address` does not have 4 or 16 bytes.
 *
 * @example
 * ```ts
 * import { formatIp } from "./ip.ts";
 * formatIp(new Uint8Array([192, 0, 2, 1])); // "192.0.2.1"
 * const v6 = new Uint8Array(16);
 * v6[0] = 0x20, v6[1] = 0x01, v6[2] = 0x0d, v6[3] = 0xb8, v6[15] = 1;
 * formatIp(v6); // "2001:db8::1"
 * ```
 */
export function formatIp(address: Uint8Array): string {
  if (address.length === 4) return formatIpv4(address, 0);
  if (address.length !== 16) {
    throw new RangeError(`An IP address has 4 or 16 bytes, not ${address.length}`);
  }
  if (isIpv4Mapped(address)) return `::ffff:${formatIpv4(address, 12)}`;
  const groups = new Array<number>(8);
  for (let i = 0; i < 8; i++) groups[i] = (address[2 * i] << 8) | address[2 * i + 1];
  // RFC 5952 §4.2.2/§4.2.3: compress the longest run of at least two zero
  // groups; on a tie, the first one.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number) =>
    groups.slice(from, to).map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, 8)}`;
}

function formatIpv4(bytes: Uint8Array, at: number): string {
  return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
}

/** Parses a strict dotted quad into `out[at..at+4]`; false when malformed. */
function parseIpv4Into(text: string, out: Uint8Array, at: number): boolean {
  const parts = text.split(".");
  if (parts.length !== 4) return false;
  for (let i = 0; i < 4; i++) {
    const part = parts[i];
    if (part.length === 0 || part.length > 3) return false;
    if (part.length > 1 && part[0] === "0") return false;
    let value = 0;
    for (let k = 0; k < part.length; k++) {
      const digit = part.charCodeAt(k) - 48;
      if (digit < 0 || digit > 9) return false;
      value = value * 10 + digit;
    }
    if (value > 255) return false;
    out[at + i] = value;
  }
  return true;
}

/** Parses 1 to 4 hex digits; -1 when malformed. */
function parseHexGroup(text: string): number {
  if (text.length === 0 || text.length > 4) return -1;
  let value = 0;
  for (let k = 0; k < text.length; k++) {
    const c = text.charCodeAt(k);
    let digit: number;
    if (c >= 48 && c <= 57) digit = c - 48;
    else if (c >= 97 && c <= 102) digit = c - 87;
    else if (c >= 65 && c <= 70) digit = c - 55;
    else return -1;
    value = value * 16 + digit;
  }
  return value;
}

/**
 * RFC 4291 §2.2: eight groups of 1–4 hex digits; one `::` standing for one
 * or more zero groups; optionally the last 32 bits as a dotted quad.
 */
function parseIpv6(text: string): Uint8Array | null {
  const out = new Uint8Array(16);
  const gap = text.indexOf("::");
  if (gap >= 0 && text.indexOf("::", gap + 1) >= 0) return null;
  let head: string[];
  let tail: string[];
  if (gap >= 0) {
    head = gap === 0 ? [] : text.slice(0, gap).split(":");
    tail = gap + 2 === text.length ? [] : text.slice(gap + 2).split(":");
  } else {
    head = text.split(":");
    tail = [];
  }
  // The embedded IPv4 tail may only be the very last piece (never before `::`).
  const last = gap >= 0 ? tail : head;
  let v4Groups = 0;
  if (last.length > 0 && last[last.length - 1].includes(".")) {
    if (!parseIpv4Into(last[last.length - 1], out, 12)) return null;
    last.pop();
    v4Groups = 2;
  }
  const total = head.length + tail.length + v4Groups;
  if (gap >= 0 ? total > 7 : total !== 8) return null;
  for (let i = 0; i < head.length; i++) {
    const g = parseHexGroup(head[i]);
    if (g < 0) return null;
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  }
  const tailStart = 8 - v4Groups - tail.length;
  for (let i = 0; i < tail.length; i++) {
    const g = parseHexGroup(tail[i]);
    if (g < 0) return null;
    out[2 * (tailStart + i)] = g >> 8;
    out[2 * (tailStart + i) + 1] = g & 0xff;
  }
  return out;
}

/** An address with a prefix length, host bits kept as written (e.g. an interface address). */
export interface IpPrefix {
  /** 4 (IPv4) or 16 (IPv6) bytes, as written (host bits are not cleared). */
  readonly address: Uint8Array;
  /** Prefix length: 0–32 for IPv4, 0–128 for IPv6. */
  readonly prefix: number;
}

/**
 * Parses `address/prefix` text, keeping the host bits (`10.0.0.1/24` stays
 * `10.0.0.1`). A bare address gets the full prefix (/32 or /128). Returns
 * `null` when malformed: the prefix must be plain decimal digits within the
 * address family's range.
 *
 * @example
 * ```ts
 * import { parseIpPrefix } from "./ip.ts";
 * parseIpPrefix("10.0.0.1/24"); // { address: Uint8Array [10, 0, 0, 1], prefix: 24 }
 * parseIpPrefix("fd00::1")?.prefix; // 128
 * ```
 */
export function parseIpPrefix(text: string): IpPrefix | null {
  const slash = text.indexOf("/");
  const address = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (address === null) return null;
  const bits = address.length * 8;
  if (slash < 0) return { address, prefix: bits };
  const digits = text.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(digits)) return null;
  const prefix = Number(digits);
  if (prefix > bits) return null;
  return { address, prefix };
}
