/**
 * IP addresses as raw bytes (4 for IPv4, 16 for IPv6) and their text forms.
 *
 * @module
 */

import { bytesEqual } from "./_util.ts";

/** An IPv4 (4 bytes) or IPv6 (16 bytes) address in network byte order. */
export type IpAddress = Uint8Array;

/** The IP version of a 4- or 16-byte address. */
export function addressVersion(addr: IpAddress): 4 | 6 {
  return addr.length === 4 ? 4 : 6;
}

/**
 * Formats an address: dotted quad for IPv4, RFC 5952 canonical text for IPv6
 * (lowercase, longest run of two or more zero groups compressed to `::`).
 *
 * @example
 * ```ts
 * import { formatAddress } from "./addr.ts";
 * formatAddress(new Uint8Array([192, 0, 2, 1])); // "192.0.2.1"
 * ```
 */
export function formatAddress(addr: IpAddress): string {
  if (addr.length === 4) return `${addr[0]}.${addr[1]}.${addr[2]}.${addr[3]}`;
  if (addr.length !== 16) {
    throw new RangeError(`An IP address has 4 or 16 bytes, not ${addr.length}`);
  }
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((addr[i] << 8) | addr[i + 1]);
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  const head = hex.slice(0, bestStart).join(":");
  const tail = hex.slice(bestStart + bestLen).join(":");
  return `${head}::${tail}`;
}

/**
 * Parses an IPv4 dotted quad or an IPv6 address (RFC 4291 §2.2 text forms,
 * including `::` and an embedded IPv4 tail). Returns `null` when `text` is
 * not an address.
 */
export function parseAddress(text: string): IpAddress | null {
  if (text.includes(":")) return parseIpv6(text);
  return parseIpv4(text);
}

function parseIpv4(text: string): IpAddress | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (!/^\d{1,3}$/.test(p) || (p.length > 1 && p[0] === "0")) return null;
    const v = Number(p);
    if (v > 255) return null;
    out[i] = v;
  }
  return out;
}

function parseIpv6(text: string): IpAddress | null {
  const pct = text.indexOf("%");
  if (pct >= 0) text = text.slice(0, pct);
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    const items = s.split(":");
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (i === items.length - 1 && item.includes(".")) {
        const v4 = parseIpv4(item);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(item)) return null;
        out.push(parseInt(item, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  const total = head.length + tail.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return null;
  const all = [...head, ...new Array(8 - total).fill(0), ...tail];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = all[i] >> 8;
    out[2 * i + 1] = all[i] & 0xff;
  }
  return out;
}

/** True when `a` and `b` hold the same address. */
export function addressEquals(a: IpAddress, b: IpAddress): boolean {
  return bytesEqual(a, b);
}
