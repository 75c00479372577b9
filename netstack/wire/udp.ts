/**
 * UDP header view and emitter (RFC 768; IPv6 rules from RFC 8200 §8.1).
 *
 * @module
 */

import { foldChecksum, pseudoHeaderSum, sumWords } from "./checksum.ts";

/** Length of the UDP header (RFC 768). */
export const UDP_HEADER_LEN = 8;

/** Why {@linkcode UdpPacket.parse} refused a datagram. */
export type UdpParseError = "truncated" | "bad-length" | "zero-checksum-v6" | "bad-checksum";

/**
 * A checked UDP datagram view. Construct with {@linkcode UdpPacket.parse}.
 * `bytes` is trimmed to the UDP Length field.
 */
export class UdpPacket {
  private constructor(
    /** The datagram, exactly Length bytes long. */
    readonly bytes: Uint8Array,
  ) {}

  /**
   * Checks the Length field and the checksum (with the pseudo-header of `src`
   * and `dst`, which are both 4 or both 16 bytes). Over IPv4 a zero checksum
   * means "not computed" (RFC 768); over IPv6 it is invalid (RFC 8200 §8.1).
   * With `verifyChecksum` false a checksum is not checked (a link that
   * authenticates its packets; the IPv6 zero-checksum rule still holds).
   */
  static parse(
    bytes: Uint8Array,
    src: Uint8Array,
    dst: Uint8Array,
    verifyChecksum = true,
  ): UdpPacket | UdpParseError {
    if (bytes.length < UDP_HEADER_LEN) return "truncated";
    const length = (bytes[4] << 8) | bytes[5];
    if (length < UDP_HEADER_LEN || length > bytes.length) return "bad-length";
    const datagram = length === bytes.length ? bytes : bytes.subarray(0, length);
    if (bytes[6] === 0 && bytes[7] === 0) {
      if (src.length === 16) return "zero-checksum-v6";
    } else if (
      verifyChecksum &&
      foldChecksum(sumWords(datagram, pseudoHeaderSum(src, dst, 17, length))) !== 0
    ) {
      return "bad-checksum";
    }
    return new UdpPacket(datagram);
  }

  /** Source port. */
  get srcPort(): number {
    return (this.bytes[0] << 8) | this.bytes[1];
  }
  /** Destination port. */
  get dstPort(): number {
    return (this.bytes[2] << 8) | this.bytes[3];
  }
  /** Length field: header plus payload. */
  get length(): number {
    return (this.bytes[4] << 8) | this.bytes[5];
  }
  /** Checksum as sent (0: none, IPv4 only). */
  get checksum(): number {
    return (this.bytes[6] << 8) | this.bytes[7];
  }
  /** The payload after the 8-byte header. */
  get payload(): Uint8Array {
    return this.bytes.subarray(UDP_HEADER_LEN);
  }
}

/** The fields {@linkcode emitUdp} writes. */
export interface UdpRepr {
  /** Source address, 4 or 16 bytes (for the pseudo-header). */
  src: Uint8Array;
  /** Destination address, same length as `src`. */
  dst: Uint8Array;
  /** Source port. */
  srcPort: number;
  /** Destination port. */
  dstPort: number;
  /** Payload; copied unless it already sits at `buf[8]`. */
  payload: Uint8Array;
}

/**
 * Writes a UDP header, the payload and the checksum (always computed; a
 * computed zero is sent as 0xffff, RFC 768) at the start of `buf` and returns
 * the datagram length. Throws a `RangeError` when `buf` is too short, the
 * datagram exceeds 65535 bytes or a port is out of range.
 */
export function emitUdp(buf: Uint8Array, repr: UdpRepr): number {
  const length = UDP_HEADER_LEN + repr.payload.length;
  if (length > 0xffff) throw new RangeError(`A UDP datagram cannot be ${length} bytes long`);
  if (buf.length < length) throw new RangeError("The buffer is too short for the UDP datagram");
  if (!isPort(repr.srcPort) || !isPort(repr.dstPort)) {
    throw new RangeError("UDP ports are integers from 0 to 65535");
  }
  buf[0] = repr.srcPort >> 8;
  buf[1] = repr.srcPort & 0xff;
  buf[2] = repr.dstPort >> 8;
  buf[3] = repr.dstPort & 0xff;
  buf[4] = length >> 8;
  buf[5] = length & 0xff;
  buf[6] = 0;
  buf[7] = 0;
  const p = repr.payload;
  if (!(p.buffer === buf.buffer && p.byteOffset === buf.byteOffset + UDP_HEADER_LEN)) {
    buf.set(p, UDP_HEADER_LEN);
  }
  let sum = foldChecksum(
    sumWords(buf.subarray(0, length), pseudoHeaderSum(repr.src, repr.dst, 17, length)),
  );
  if (sum === 0) sum = 0xffff;
  buf[6] = sum >> 8;
  buf[7] = sum & 0xff;
  return length;
}

function isPort(port: number): boolean {
  return Number.isInteger(port) && port >= 0 && port <= 0xffff;
}
