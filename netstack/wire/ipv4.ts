/**
 * IPv4 header view and emitter (RFC 791 §3.1).
 *
 * @module
 */

import { internetChecksum } from "./checksum.ts";

/** Length of an IPv4 header without options (RFC 791 §3.1, IHL = 5). */
export const IPV4_HEADER_LEN = 20;
/**
 * Byte offsets of the IPv4 header fields (RFC 791 §3.1), for the view below
 * and for headers no view can check (e.g. quoted in an ICMP error).
 */
export const IPV4_FIELD = {
  /** Version (high nibble) and IHL (low nibble, in 32-bit words). */
  VERSION_IHL: 0,
  /** Type of service. */
  TOS: 1,
  /** Total Length, 16 bits. */
  TOTAL_LENGTH: 2,
  /** Identification, 16 bits. */
  IDENTIFICATION: 4,
  /** Flags (3 bits) and Fragment Offset (13 bits, in 8-byte units). */
  FLAGS_FRAGMENT: 6,
  /** Time to Live. */
  TTL: 8,
  /** Protocol. */
  PROTOCOL: 9,
  /** Header Checksum, 16 bits. */
  CHECKSUM: 10,
  /** Source Address, 4 bytes. */
  SRC: 12,
  /** Destination Address, 4 bytes. */
  DST: 16,
} as const;

/** Largest IPv4 datagram, header included (RFC 791 §3.1 "Total Length" is 16 bits). */
export const IPV4_MAX_DATAGRAM = 65535;

/** IP protocol number of ICMP (RFC 792). */
export const IP_PROTOCOL_ICMP = 1;
/** IP protocol number of TCP (RFC 9293). */
export const IP_PROTOCOL_TCP = 6;
/** IP protocol number of UDP (RFC 768). */
export const IP_PROTOCOL_UDP = 17;
/** IP protocol number of ICMPv6 (RFC 4443). */
export const IP_PROTOCOL_ICMPV6 = 58;

/** Why {@linkcode Ipv4Packet.parse} refused a packet. */
export type Ipv4ParseError =
  | "truncated"
  | "bad-version"
  | "bad-header-length"
  | "bad-total-length"
  | "bad-checksum";

/**
 * A checked IPv4 packet view (RFC 791 §3.1). Construct with
 * {@linkcode Ipv4Packet.parse}; afterwards, every accessor is safe.
 * `bytes` is trimmed to the header's Total Length (link padding removed).
 */
export class Ipv4Packet {
  private constructor(
    /** The datagram, exactly Total Length bytes long. */
    readonly bytes: Uint8Array,
  ) {}

  /**
   * Checks version, IHL, Total Length and the header checksum and returns a
   * view, or the reason the packet is malformed. Options are skipped (their
   * bytes stay inside the header).
   */
  static parse(bytes: Uint8Array): Ipv4Packet | Ipv4ParseError {
    if (bytes.length < IPV4_HEADER_LEN) return "truncated";
    if (bytes[0] >> 4 !== 4) return "bad-version";
    const headerLength = (bytes[0] & 0x0f) * 4;
    if (headerLength < IPV4_HEADER_LEN || headerLength > bytes.length) {
      return "bad-header-length";
    }
    const totalLength = (bytes[2] << 8) | bytes[3];
    if (totalLength < headerLength || totalLength > bytes.length) return "bad-total-length";
    if (internetChecksum(bytes.subarray(0, headerLength)) !== 0) return "bad-checksum";
    return new Ipv4Packet(totalLength === bytes.length ? bytes : bytes.subarray(0, totalLength));
  }

  /** Header length in bytes (IHL × 4), options included. */
  get headerLength(): number {
    return (this.bytes[0] & 0x0f) * 4;
  }
  /** Type of service / DSCP+ECN byte. */
  get tos(): number {
    return this.bytes[1];
  }
  /** Total Length: header plus payload. */
  get totalLength(): number {
    return (this.bytes[2] << 8) | this.bytes[3];
  }
  /** Identification, used to group fragments. */
  get identification(): number {
    return (this.bytes[4] << 8) | this.bytes[5];
  }
  /** The Don't Fragment flag. */
  get dontFragment(): boolean {
    return (this.bytes[6] & 0x40) !== 0;
  }
  /** The More Fragments flag. */
  get moreFragments(): boolean {
    return (this.bytes[6] & 0x20) !== 0;
  }
  /** Fragment offset in bytes (the header field × 8). */
  get fragmentOffset(): number {
    return (((this.bytes[6] & 0x1f) << 8) | this.bytes[7]) * 8;
  }
  /** True when this packet is one fragment of a larger datagram. */
  get isFragment(): boolean {
    return (this.bytes[6] & 0x3f) !== 0 || this.bytes[7] !== 0;
  }
  /** Time to live. */
  get ttl(): number {
    return this.bytes[IPV4_FIELD.TTL];
  }
  /** Upper-layer protocol number. */
  get protocol(): number {
    return this.bytes[IPV4_FIELD.PROTOCOL];
  }
  /** Header checksum as sent. */
  get checksum(): number {
    return (this.bytes[10] << 8) | this.bytes[11];
  }
  /** Source address (a 4-byte view). */
  get src(): Uint8Array {
    return this.bytes.subarray(IPV4_FIELD.SRC, IPV4_FIELD.SRC + 4);
  }
  /** Destination address (a 4-byte view). */
  get dst(): Uint8Array {
    return this.bytes.subarray(IPV4_FIELD.DST, IPV4_FIELD.DST + 4);
  }
  /** Options bytes (empty when IHL = 5). */
  get options(): Uint8Array {
    return this.bytes.subarray(IPV4_HEADER_LEN, this.headerLength);
  }
  /** The payload after the header, up to Total Length. */
  get payload(): Uint8Array {
    return this.bytes.subarray(this.headerLength);
  }
}

/** The fields {@linkcode emitIpv4Header} writes. */
export interface Ipv4Repr {
  /** Source address, 4 bytes. */
  src: Uint8Array;
  /** Destination address, 4 bytes. */
  dst: Uint8Array;
  /** Upper-layer protocol number. */
  protocol: number;
  /** Bytes after the 20-byte header. */
  payloadLength: number;
  /** Time to live (default 64). */
  ttl?: number;
  /** Identification (default 0). */
  identification?: number;
  /** Don't Fragment flag (default false). */
  dontFragment?: boolean;
  /** More Fragments flag (default false). */
  moreFragments?: boolean;
  /** Fragment offset in bytes, a multiple of 8 (default 0). */
  fragmentOffset?: number;
  /** Type of service byte (default 0). */
  tos?: number;
}

/**
 * Writes a 20-byte IPv4 header (no options) with its checksum at the start of
 * `buf` and returns 20. Throws a `RangeError` when `buf` is too short, the
 * datagram exceeds 65535 bytes, or the fragment offset is not a multiple of 8.
 */
export function emitIpv4Header(buf: Uint8Array, repr: Ipv4Repr): number {
  if (buf.length < IPV4_HEADER_LEN) throw new RangeError("The buffer is shorter than 20 bytes");
  const total = IPV4_HEADER_LEN + repr.payloadLength;
  if (repr.payloadLength < 0 || total > IPV4_MAX_DATAGRAM) {
    throw new RangeError(`An IPv4 datagram cannot be ${total} bytes long`);
  }
  const offset = repr.fragmentOffset ?? 0;
  if (offset % 8 !== 0 || offset < 0 || offset > 0x1fff * 8) {
    throw new RangeError(`Bad IPv4 fragment offset ${offset}`);
  }
  if (repr.src.length !== 4 || repr.dst.length !== 4) {
    throw new RangeError("IPv4 addresses have 4 bytes");
  }
  const id = repr.identification ?? 0;
  const flagsOffset = (repr.dontFragment ? 0x4000 : 0) | (repr.moreFragments ? 0x2000 : 0) |
    (offset >> 3);
  buf[0] = 0x45;
  buf[1] = repr.tos ?? 0;
  buf[2] = total >> 8;
  buf[3] = total & 0xff;
  buf[4] = (id >> 8) & 0xff;
  buf[5] = id & 0xff;
  buf[6] = flagsOffset >> 8;
  buf[7] = flagsOffset & 0xff;
  buf[IPV4_FIELD.TTL] = repr.ttl ?? 64;
  buf[IPV4_FIELD.PROTOCOL] = repr.protocol;
  buf[10] = 0;
  buf[11] = 0;
  buf.set(repr.src, IPV4_FIELD.SRC);
  buf.set(repr.dst, IPV4_FIELD.DST);
  const sum = internetChecksum(buf.subarray(0, IPV4_HEADER_LEN));
  buf[10] = sum >> 8;
  buf[11] = sum & 0xff;
  return IPV4_HEADER_LEN;
}

/** True for addresses in 0.0.0.0/8 ("this network", RFC 1122 §3.2.1.3): never a valid source to answer. */
export function isIpv4Unspecified(addr: Uint8Array): boolean {
  return addr[0] === 0;
}

/** True for multicast (224.0.0.0/4) and reserved/broadcast (240.0.0.0/4) addresses. */
export function isIpv4MulticastOrBroadcast(addr: Uint8Array): boolean {
  return addr[0] >= 224;
}
