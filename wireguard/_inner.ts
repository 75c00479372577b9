/**
 * The few fields of an inner IPv4/IPv6 packet the device reads (its length,
 * for padding, and its addresses, for cryptokey routing), at offsets named
 * once (RFC 791 §3.1, RFC 8200 §3). Internal: not exported by `mod.ts`.
 *
 * @module
 */

/** IPv4: smallest header, Total Length, Source and Destination Address. */
const IPV4_HEADER_LEN = 20;
const IPV4_TOTAL_LENGTH = 2;
const IPV4_SRC = 12;
const IPV4_DST = 16;
/** IPv6: fixed header, Payload Length, Source and Destination Address. */
const IPV6_HEADER_LEN = 40;
const IPV6_PAYLOAD_LENGTH = 4;
const IPV6_SRC = 8;
const IPV6_DST = 24;

/** Length of the IPv4/IPv6 packet at the start of `p` (padding excluded), or -1 when it is not one. */
export function ipPacketLength(p: Uint8Array): number {
  if (p.length === 0) return -1;
  const version = p[0] >> 4;
  if (version === 4) {
    if (p.length < IPV4_HEADER_LEN) return -1;
    const total = (p[IPV4_TOTAL_LENGTH] << 8) | p[IPV4_TOTAL_LENGTH + 1];
    const ihl = (p[0] & 0x0f) * 4;
    return ihl >= IPV4_HEADER_LEN && total >= ihl && total <= p.length ? total : -1;
  }
  if (version === 6) {
    if (p.length < IPV6_HEADER_LEN) return -1;
    const total = IPV6_HEADER_LEN + ((p[IPV6_PAYLOAD_LENGTH] << 8) | p[IPV6_PAYLOAD_LENGTH + 1]);
    return total <= p.length ? total : -1;
  }
  return -1;
}

/** The source address of a packet `ipPacketLength` accepted (a view). */
export function ipSource(p: Uint8Array): Uint8Array {
  return p[0] >> 4 === 4 ? p.subarray(IPV4_SRC, IPV4_SRC + 4) : p.subarray(IPV6_SRC, IPV6_SRC + 16);
}

/** The destination address of a packet `ipPacketLength` accepted (a view). */
export function ipDestination(p: Uint8Array): Uint8Array {
  return p[0] >> 4 === 4 ? p.subarray(IPV4_DST, IPV4_DST + 4) : p.subarray(IPV6_DST, IPV6_DST + 16);
}
