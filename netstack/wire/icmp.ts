/**
 * ICMPv4 (RFC 792, RFC 1191) and ICMPv6 (RFC 4443) message views and
 * emitters: echo, destination unreachable, packet too big / fragmentation
 * needed, time exceeded, parameter problem.
 *
 * @module
 */

import { foldChecksum, internetChecksum, pseudoHeaderSum, sumWords } from "./checksum.ts";

/** Length of the ICMP header: type, code, checksum, 4 bytes of "rest of header". */
export const ICMP_HEADER_LEN = 8;

/** ICMPv4 Echo Reply (RFC 792). */
export const ICMPV4_ECHO_REPLY = 0;
/** ICMPv4 Destination Unreachable (RFC 792). */
export const ICMPV4_DEST_UNREACHABLE = 3;
/** ICMPv4 Echo Request (RFC 792). */
export const ICMPV4_ECHO_REQUEST = 8;
/** ICMPv4 Time Exceeded (RFC 792). */
export const ICMPV4_TIME_EXCEEDED = 11;
/** ICMPv4 Parameter Problem (RFC 792). */
export const ICMPV4_PARAMETER_PROBLEM = 12;

/** Destination Unreachable code: protocol unreachable (RFC 792). */
export const ICMPV4_CODE_PROTOCOL_UNREACHABLE = 2;
/** Destination Unreachable code: port unreachable (RFC 792). */
export const ICMPV4_CODE_PORT_UNREACHABLE = 3;
/** Destination Unreachable code: fragmentation needed and DF set (RFC 792, MTU per RFC 1191 §4). */
export const ICMPV4_CODE_FRAG_NEEDED = 4;
/** Destination Unreachable code: communication administratively prohibited (RFC 1812 §5.2.7.1). */
export const ICMPV4_CODE_ADMIN_PROHIBITED = 13;
/** Time Exceeded code: fragment reassembly time exceeded (RFC 792). */
export const ICMPV4_CODE_REASSEMBLY_TIMEOUT = 1;

/** ICMPv6 Destination Unreachable (RFC 4443 §3.1). */
export const ICMPV6_DEST_UNREACHABLE = 1;
/** ICMPv6 Packet Too Big (RFC 4443 §3.2). */
export const ICMPV6_PACKET_TOO_BIG = 2;
/** ICMPv6 Time Exceeded (RFC 4443 §3.3). */
export const ICMPV6_TIME_EXCEEDED = 3;
/** ICMPv6 Parameter Problem (RFC 4443 §3.4). */
export const ICMPV6_PARAMETER_PROBLEM = 4;
/** ICMPv6 Echo Request (RFC 4443 §4.1). */
export const ICMPV6_ECHO_REQUEST = 128;
/** ICMPv6 Echo Reply (RFC 4443 §4.2). */
export const ICMPV6_ECHO_REPLY = 129;

/** ICMPv6 Destination Unreachable code: administratively prohibited (RFC 4443 §3.1). */
export const ICMPV6_CODE_ADMIN_PROHIBITED = 1;
/** ICMPv6 Destination Unreachable code: port unreachable (RFC 4443 §3.1). */
export const ICMPV6_CODE_PORT_UNREACHABLE = 4;
/** ICMPv6 Parameter Problem code: unrecognized Next Header (RFC 4443 §3.4). */
export const ICMPV6_CODE_UNRECOGNIZED_NEXT_HEADER = 1;
/** ICMPv6 Time Exceeded code: fragment reassembly time exceeded (RFC 4443 §3.3). */
export const ICMPV6_CODE_REASSEMBLY_TIMEOUT = 1;

/**
 * Most bytes of the invoking packet an ICMPv4 error quotes: the error must
 * not exceed 576 bytes (RFC 1812 §4.3.2.3): 576 − 20 (IP) − 8 (ICMP).
 */
export const ICMPV4_MAX_QUOTE = 548;
/**
 * Most bytes of the invoking packet an ICMPv6 error quotes: the error must
 * not exceed the minimum MTU (RFC 4443 §2.4 (c)): 1280 − 40 − 8.
 */
export const ICMPV6_MAX_QUOTE = 1232;

/** Why {@linkcode IcmpPacket.parse} refused a message. */
export type IcmpParseError = "truncated" | "bad-checksum";

/**
 * A checked ICMPv4 or ICMPv6 message view. Construct with
 * {@linkcode IcmpPacket.parse}.
 */
export class IcmpPacket {
  private constructor(
    /** The whole ICMP message. */
    readonly bytes: Uint8Array,
  ) {}

  /**
   * Checks the length and checksum of an ICMP message. For ICMPv4 pass no
   * addresses (the checksum covers the message only, RFC 792); for ICMPv6
   * pass the IPv6 source and destination (the checksum includes the
   * pseudo-header, RFC 4443 §2.3).
   */
  static parse(
    bytes: Uint8Array,
    pseudo?: { src: Uint8Array; dst: Uint8Array },
  ): IcmpPacket | IcmpParseError {
    if (bytes.length < ICMP_HEADER_LEN) return "truncated";
    const sum = pseudo
      ? foldChecksum(sumWords(bytes, pseudoHeaderSum(pseudo.src, pseudo.dst, 58, bytes.length)))
      : internetChecksum(bytes);
    if (sum !== 0) return "bad-checksum";
    return new IcmpPacket(bytes);
  }

  /** Message type. */
  get type(): number {
    return this.bytes[0];
  }
  /** Message code. */
  get code(): number {
    return this.bytes[1];
  }
  /** Checksum as sent. */
  get checksum(): number {
    return (this.bytes[2] << 8) | this.bytes[3];
  }
  /** The 32-bit "rest of header" field. */
  get restOfHeader(): number {
    return ((this.bytes[4] << 24) | (this.bytes[5] << 16) | (this.bytes[6] << 8) |
      this.bytes[7]) >>> 0;
  }
  /** Echo identifier (echo request/reply). */
  get echoId(): number {
    return (this.bytes[4] << 8) | this.bytes[5];
  }
  /** Echo sequence number (echo request/reply). */
  get echoSequence(): number {
    return (this.bytes[6] << 8) | this.bytes[7];
  }
  /** Next-hop MTU of an ICMPv4 "fragmentation needed" (RFC 1191 §4: low 16 bits). */
  get v4NextHopMtu(): number {
    return (this.bytes[6] << 8) | this.bytes[7];
  }
  /** MTU of an ICMPv6 Packet Too Big (RFC 4443 §3.2: 32 bits). */
  get v6Mtu(): number {
    return this.restOfHeader;
  }
  /** Data after the 8-byte header (echo data, or the quoted invoking packet). */
  get data(): Uint8Array {
    return this.bytes.subarray(ICMP_HEADER_LEN);
  }
}

/** The fields {@linkcode emitIcmp} writes. */
export interface IcmpRepr {
  /** Message type. */
  type: number;
  /** Message code. */
  code: number;
  /** The 32-bit "rest of header" (echo id << 16 | seq, MTU, pointer, or 0). */
  restOfHeader: number;
  /** Data after the header; copied unless it already sits at `buf[8]`. */
  data: Uint8Array;
  /**
   * For ICMPv6: the IPv6 source and destination of the packet that will
   * carry the message (the checksum covers a pseudo-header). Omit for ICMPv4.
   */
  pseudo?: { src: Uint8Array; dst: Uint8Array };
}

/**
 * Writes an ICMP message (header, data, checksum) at the start of `buf` and
 * returns its length. Throws a `RangeError` when `buf` is too short.
 */
export function emitIcmp(buf: Uint8Array, repr: IcmpRepr): number {
  const length = ICMP_HEADER_LEN + repr.data.length;
  if (buf.length < length) throw new RangeError("The buffer is too short for the ICMP message");
  const rest = repr.restOfHeader >>> 0;
  buf[0] = repr.type;
  buf[1] = repr.code;
  buf[2] = 0;
  buf[3] = 0;
  buf[4] = rest >>> 24;
  buf[5] = (rest >>> 16) & 0xff;
  buf[6] = (rest >>> 8) & 0xff;
  buf[7] = rest & 0xff;
  const d = repr.data;
  if (!(d.buffer === buf.buffer && d.byteOffset === buf.byteOffset + ICMP_HEADER_LEN)) {
    buf.set(d, ICMP_HEADER_LEN);
  }
  const msg = buf.subarray(0, length);
  const sum = repr.pseudo
    ? foldChecksum(sumWords(msg, pseudoHeaderSum(repr.pseudo.src, repr.pseudo.dst, 58, length)))
    : internetChecksum(msg);
  buf[2] = sum >> 8;
  buf[3] = sum & 0xff;
  return length;
}
