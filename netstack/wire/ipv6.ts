/**
 * IPv6 fixed header view, extension header chain walk and emitters
 * (RFC 8200 §3, §4).
 *
 * @module
 */

/** Length of the IPv6 fixed header (RFC 8200 §3). */
export const IPV6_HEADER_LEN = 40;
/**
 * Byte offsets of the IPv6 fixed header fields (RFC 8200 §3), for the view
 * below and for headers no view can check (e.g. quoted in an ICMPv6 error).
 */
export const IPV6_FIELD = {
  /** Version (4 bits), Traffic Class (8) and Flow Label (20). */
  VERSION_TC_FLOW: 0,
  /** Payload Length, 16 bits. */
  PAYLOAD_LENGTH: 4,
  /** Next Header. */
  NEXT_HEADER: 6,
  /** Hop Limit. */
  HOP_LIMIT: 7,
  /** Source Address, 16 bytes. */
  SRC: 8,
  /** Destination Address, 16 bytes. */
  DST: 24,
} as const;
/** Length of the Fragment header (RFC 8200 §4.5). */
export const IPV6_FRAGMENT_HEADER_LEN = 8;
/** Minimum link MTU every IPv6 link supports (RFC 8200 §5). */
export const IPV6_MIN_MTU = 1280;

/** Next Header value of the Hop-by-Hop Options header (RFC 8200 §4.3). */
export const IPV6_HOP_BY_HOP = 0;
/** Next Header value of the Routing header (RFC 8200 §4.4). */
export const IPV6_ROUTING = 43;
/** Next Header value of the Fragment header (RFC 8200 §4.5). */
export const IPV6_FRAGMENT = 44;
/** Next Header value of the Authentication Header (RFC 4302 §2). */
export const IPV6_AUTH = 51;
/** Next Header value "No Next Header" (RFC 8200 §4.7). */
export const IPV6_NO_NEXT_HEADER = 59;
/** Next Header value of the Destination Options header (RFC 8200 §4.6). */
export const IPV6_DESTINATION_OPTIONS = 60;

/** At most this many extension headers are walked before the packet is dropped. */
export const IPV6_MAX_EXTENSION_HEADERS = 8;

/** Why {@linkcode Ipv6Packet.parse} refused a packet. */
export type Ipv6ParseError = "truncated" | "bad-version" | "bad-payload-length";

/**
 * A checked IPv6 packet view (RFC 8200 §3). Construct with
 * {@linkcode Ipv6Packet.parse}. `bytes` is trimmed to 40 + Payload Length.
 */
export class Ipv6Packet {
  private constructor(
    /** The packet, exactly 40 + Payload Length bytes long. */
    readonly bytes: Uint8Array,
  ) {}

  /**
   * Checks the version and that Payload Length fits, and returns a view or
   * the reason the packet is malformed. Jumbograms (Payload Length 0 with a
   * Jumbo Payload option, RFC 2675) are not supported: such a packet is seen
   * as having an empty payload and its Hop-by-Hop header fails the walk.
   */
  static parse(bytes: Uint8Array): Ipv6Packet | Ipv6ParseError {
    if (bytes.length < IPV6_HEADER_LEN) return "truncated";
    if (bytes[0] >> 4 !== 6) return "bad-version";
    const total = IPV6_HEADER_LEN + ((bytes[4] << 8) | bytes[5]);
    if (total > bytes.length) return "bad-payload-length";
    return new Ipv6Packet(total === bytes.length ? bytes : bytes.subarray(0, total));
  }

  /** Traffic class (DSCP + ECN). */
  get trafficClass(): number {
    return ((this.bytes[0] & 0x0f) << 4) | (this.bytes[1] >> 4);
  }
  /** Flow label (20 bits). */
  get flowLabel(): number {
    return ((this.bytes[1] & 0x0f) << 16) | (this.bytes[2] << 8) | this.bytes[3];
  }
  /** Payload Length: bytes after the fixed header. */
  get payloadLength(): number {
    return (this.bytes[4] << 8) | this.bytes[5];
  }
  /** Next Header of the fixed header. */
  get nextHeader(): number {
    return this.bytes[IPV6_FIELD.NEXT_HEADER];
  }
  /** Hop limit. */
  get hopLimit(): number {
    return this.bytes[IPV6_FIELD.HOP_LIMIT];
  }
  /** Source address (a 16-byte view). */
  get src(): Uint8Array {
    return this.bytes.subarray(IPV6_FIELD.SRC, IPV6_FIELD.SRC + 16);
  }
  /** Destination address (a 16-byte view). */
  get dst(): Uint8Array {
    return this.bytes.subarray(IPV6_FIELD.DST, IPV6_FIELD.DST + 16);
  }
  /** Everything after the fixed header. */
  get payload(): Uint8Array {
    return this.bytes.subarray(IPV6_HEADER_LEN);
  }
}

/** Why {@linkcode walkIpv6Headers} refused a packet. */
export type Ipv6ChainError =
  | "truncated"
  | "hop-by-hop-not-first"
  | "too-many-headers"
  | "bad-option"
  | "routing-segments-left";

/**
 * The result of {@linkcode walkIpv6Headers}. A mutable value meant to be
 * reused from packet to packet.
 */
export class Ipv6HeaderChain {
  /** The upper-layer protocol (or 59 "no next header"), or for a fragment the Fragment header's Next Header. */
  protocol: number = IPV6_NO_NEXT_HEADER;
  /** Offset of the upper-layer data (or of the fragment data) from the start of the packet. */
  offset: number = IPV6_HEADER_LEN;
  /** Offset of the byte that holds {@linkcode Ipv6HeaderChain.protocol} (for ICMPv6 Parameter Problem pointers). */
  protocolFieldOffset = 6;
  /** Number of extension headers walked. */
  headers = 0;
  /** True when a Fragment header that is not atomic (RFC 6946) was found; the walk stopped there. */
  isFragment = false;
  /** Fragment offset in bytes (valid when `isFragment`). */
  fragmentOffset = 0;
  /** The M flag (valid when `isFragment`). */
  moreFragments = false;
  /** The 32-bit Identification (valid when `isFragment`). */
  fragmentId = 0;
  /** Offset of the Fragment header (valid when `isFragment`); headers before it are the unfragmentable part. */
  fragmentHeaderOffset = 0;
}

/**
 * Walks the extension header chain of an IPv6 packet (RFC 8200 §4.1) that
 * starts at `packet[0]` (the fixed header) and ends at `packet.length` (the
 * walk may run on a truncated packet quoted in an ICMPv6 error). Stops at the
 * first upper-layer header, at No Next Header (59), or at a Fragment header
 * of a real fragment; an atomic fragment (offset 0, M = 0, RFC 6946) is
 * walked through. Fills `out` and returns `null`, or returns the reason the
 * packet must be dropped: Hop-by-Hop not first, more than
 * {@linkcode IPV6_MAX_EXTENSION_HEADERS} headers, an option whose type says
 * "discard" (RFC 8200 §4.2), or a Routing header with Segments Left > 0 (we
 * are always the final destination; RFC 8200 §4.4 forbids skipping it).
 */
export function walkIpv6Headers(packet: Uint8Array, out: Ipv6HeaderChain): Ipv6ChainError | null {
  const end = packet.length;
  let next = packet[IPV6_FIELD.NEXT_HEADER];
  let fieldOffset = 6;
  let at = IPV6_HEADER_LEN;
  let count = 0;
  out.isFragment = false;
  for (;;) {
    if (
      next !== IPV6_HOP_BY_HOP && next !== IPV6_ROUTING && next !== IPV6_FRAGMENT &&
      next !== IPV6_DESTINATION_OPTIONS && next !== IPV6_AUTH
    ) break;
    if (next === IPV6_HOP_BY_HOP && at !== IPV6_HEADER_LEN) return "hop-by-hop-not-first";
    if (++count > IPV6_MAX_EXTENSION_HEADERS) return "too-many-headers";
    if (at + 8 > end) return "truncated";
    let len: number;
    if (next === IPV6_FRAGMENT) {
      len = IPV6_FRAGMENT_HEADER_LEN;
      const offsetFlags = (packet[at + 2] << 8) | packet[at + 3];
      const fragOffset = offsetFlags & 0xfff8;
      const more = (offsetFlags & 1) !== 0;
      if (fragOffset !== 0 || more) {
        out.isFragment = true;
        out.fragmentOffset = fragOffset;
        out.moreFragments = more;
        out.fragmentId = ((packet[at + 4] << 24) | (packet[at + 5] << 16) |
          (packet[at + 6] << 8) | packet[at + 7]) >>> 0;
        out.fragmentHeaderOffset = at;
        out.protocol = packet[at];
        out.protocolFieldOffset = at;
        out.offset = at + len;
        out.headers = count;
        return null;
      }
    } else if (next === IPV6_AUTH) {
      len = (packet[at + 1] + 2) * 4; // RFC 4302 §2.2: in 4-octet units, minus 2
    } else {
      len = (packet[at + 1] + 1) * 8;
    }
    if (at + len > end) return "truncated";
    if (next === IPV6_HOP_BY_HOP || next === IPV6_DESTINATION_OPTIONS) {
      if (!optionsAcceptable(packet, at + 2, at + len)) return "bad-option";
    } else if (next === IPV6_ROUTING && packet[at + 3] !== 0) {
      return "routing-segments-left";
    }
    fieldOffset = at;
    next = packet[at];
    at += len;
  }
  out.protocol = next;
  out.protocolFieldOffset = fieldOffset;
  out.offset = at;
  out.headers = count;
  return null;
}

/** Checks the TLV options in `packet[from, to)` (RFC 8200 §4.2). */
function optionsAcceptable(packet: Uint8Array, from: number, to: number): boolean {
  let at = from;
  while (at < to) {
    const type = packet[at];
    if (type === 0) { // Pad1
      at++;
      continue;
    }
    if (at + 2 > to) return false;
    const next = at + 2 + packet[at + 1];
    if (next > to) return false;
    // Pad1/PadN are understood; any other option is unknown to us and its two
    // high-order bits tell what to do: 00 skip, otherwise discard.
    if (type !== 1 && (type & 0xc0) !== 0) return false;
    at = next;
  }
  return true;
}

/** The fields {@linkcode emitIpv6Header} writes. */
export interface Ipv6Repr {
  /** Source address, 16 bytes. */
  src: Uint8Array;
  /** Destination address, 16 bytes. */
  dst: Uint8Array;
  /** Next Header value. */
  nextHeader: number;
  /** Bytes after the 40-byte fixed header. */
  payloadLength: number;
  /** Hop limit (default 64). */
  hopLimit?: number;
  /** Traffic class (default 0). */
  trafficClass?: number;
  /** Flow label (default 0). */
  flowLabel?: number;
}

/**
 * Writes the 40-byte IPv6 fixed header at the start of `buf` and returns 40.
 * Throws a `RangeError` on a short buffer, addresses that are not 16 bytes, or
 * a payload longer than 65535 bytes.
 */
export function emitIpv6Header(buf: Uint8Array, repr: Ipv6Repr): number {
  if (buf.length < IPV6_HEADER_LEN) throw new RangeError("The buffer is shorter than 40 bytes");
  if (repr.payloadLength < 0 || repr.payloadLength > 0xffff) {
    throw new RangeError(`An IPv6 payload cannot be ${repr.payloadLength} bytes long`);
  }
  if (repr.src.length !== 16 || repr.dst.length !== 16) {
    throw new RangeError("IPv6 addresses have 16 bytes");
  }
  const tc = repr.trafficClass ?? 0;
  const fl = repr.flowLabel ?? 0;
  buf[0] = 0x60 | (tc >> 4);
  buf[1] = ((tc & 0x0f) << 4) | ((fl >> 16) & 0x0f);
  buf[2] = (fl >> 8) & 0xff;
  buf[3] = fl & 0xff;
  buf[4] = repr.payloadLength >> 8;
  buf[5] = repr.payloadLength & 0xff;
  buf[IPV6_FIELD.NEXT_HEADER] = repr.nextHeader;
  buf[IPV6_FIELD.HOP_LIMIT] = repr.hopLimit ?? 64;
  buf.set(repr.src, IPV6_FIELD.SRC);
  buf.set(repr.dst, IPV6_FIELD.DST);
  return IPV6_HEADER_LEN;
}

/** The fields {@linkcode emitIpv6FragmentHeader} writes. */
export interface Ipv6FragmentRepr {
  /** Next Header of the fragmentable part. */
  nextHeader: number;
  /** Offset of this fragment's data in bytes, a multiple of 8. */
  offset: number;
  /** The M flag: more fragments follow. */
  more: boolean;
  /** 32-bit Identification. */
  id: number;
}

/** Writes an 8-byte Fragment header (RFC 8200 §4.5) at the start of `buf` and returns 8. */
export function emitIpv6FragmentHeader(buf: Uint8Array, repr: Ipv6FragmentRepr): number {
  if (buf.length < IPV6_FRAGMENT_HEADER_LEN) {
    throw new RangeError("The buffer is shorter than 8 bytes");
  }
  if (repr.offset % 8 !== 0 || repr.offset < 0 || repr.offset > 0xfff8) {
    throw new RangeError(`Bad IPv6 fragment offset ${repr.offset}`);
  }
  buf[0] = repr.nextHeader;
  buf[1] = 0;
  buf[2] = repr.offset >> 8;
  buf[3] = (repr.offset & 0xf8) | (repr.more ? 1 : 0);
  buf[4] = (repr.id >>> 24) & 0xff;
  buf[5] = (repr.id >>> 16) & 0xff;
  buf[6] = (repr.id >>> 8) & 0xff;
  buf[7] = repr.id & 0xff;
  return IPV6_FRAGMENT_HEADER_LEN;
}

/** True for multicast addresses (ff00::/8, RFC 4291 §2.7). */
export function isIpv6Multicast(addr: Uint8Array): boolean {
  return addr[0] === 0xff;
}

/** True for the unspecified address `::`. */
export function isIpv6Unspecified(addr: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (addr[i] !== 0) return false;
  return true;
}
