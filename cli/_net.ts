/**
 * Small address helpers of the CLI: picking the address clients reach the
 * server at, and comparing IP address texts.
 *
 * @module
 */

import { AllowedIps, formatIp, parseCidr, parseIp } from "@wgstack/wireguard";

/** A network interface address, as `Deno.networkInterfaces()` reports it. */
export interface InterfaceAddress {
  /** Interface name. */
  name: string;
  /** `"IPv4"` or `"IPv6"`. */
  family: "IPv4" | "IPv6";
  /** Address text. */
  address: string;
}

/**
 * Picks the address clients most likely reach this machine at: a global
 * IPv4 address first (public before private, container bridges last), then
 * a global IPv6 address. Loopback and link-local addresses never qualify.
 * Returns `undefined` when there is none.
 *
 * @example
 * ```ts
 * import { pickEndpointAddress } from "./_net.ts";
 * pickEndpointAddress([
 *   { name: "lo", family: "IPv4", address: "127.0.0.1" },
 *   { name: "eth0", family: "IPv4", address: "192.0.2.10" },
 * ]); // "192.0.2.10"
 * ```
 */
export function pickEndpointAddress(interfaces: InterfaceAddress[]): string | undefined {
  let best: { address: string; score: number } | undefined;
  for (const iface of interfaces) {
    const score = endpointScore(iface);
    if (score > 0 && (best === undefined || score > best.score)) {
      best = { address: iface.address, score };
    }
  }
  return best?.address;
}

function endpointScore(iface: InterfaceAddress): number {
  const bytes = parseIp(iface.address.split("%")[0]);
  if (!bytes) return 0;
  const virtual = /^(docker|br-|veth|virbr|cni|flannel|kube|tun|tap|wg|zt|tailscale)/.test(
    iface.name,
  );
  if (bytes.length === 4) {
    const [a, b] = bytes;
    if (a === 127 || a === 0 || (a === 169 && b === 254) || a >= 224) return 0;
    const isPrivate = a === 10 || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168) ||
      (a === 100 && b >= 64 && b < 128);
    return (virtual ? 10 : 40) + (isPrivate ? 0 : 5);
  }
  if (bytes.every((x, i) => i === 15 ? x <= 1 : x === 0)) return 0; // :: and ::1
  if (bytes[0] === 0xfe && (bytes[1] & 0xc0) === 0x80) return 0; // fe80::/10
  if (bytes[0] === 0xff) return 0; // multicast
  const ula = (bytes[0] & 0xfe) === 0xfc;
  return (virtual ? 5 : 20) + (ula ? 0 : 5);
}

/** This machine's preferred endpoint address (see {@linkcode pickEndpointAddress}). */
export function detectEndpointAddress(): string | undefined {
  let interfaces: InterfaceAddress[];
  try {
    interfaces = Deno.networkInterfaces() as InterfaceAddress[];
  } catch {
    return undefined;
  }
  return pickEndpointAddress(interfaces);
}

/** Canonical text of an IP address (so `2001:DB8:0::1` equals `2001:db8::1`), or the input. */
export function canonicalIp(text: string): string {
  const bytes = parseIp(text);
  if (!bytes) return text;
  if (
    bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff &&
    bytes[11] === 0xff
  ) {
    return formatIp(bytes.subarray(12));
  }
  return formatIp(bytes);
}

/** 4 or 6 for an IP address text, `undefined` for anything else. */
export function ipVersionOf(text: string): 4 | 6 | undefined {
  const bytes = parseIp(text.split("%")[0]);
  return bytes ? (bytes.length === 4 ? 4 : 6) : undefined;
}

/**
 * A matcher for addresses inside any of `cidrs` (e.g. `10.44.0.1/24`: host
 * bits are ignored). IPv4-mapped IPv6 addresses match as IPv4.
 *
 * @throws {RangeError} When a CIDR is malformed.
 */
export function subnetMatcher(cidrs: string[]): (address: string) => boolean {
  const table = new AllowedIps<true>();
  for (const text of cidrs) table.insert(parseCidr(text), true);
  return (address) => {
    const bytes = parseIp(canonicalIp(address));
    return bytes !== null && table.lookup(bytes) === true;
  };
}
