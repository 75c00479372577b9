/**
 * TCP segments on the wire (RFC 9293 §3.1): a checked header view, option
 * parsing and emission (RFC 9293 §3.2, RFC 7323, RFC 2018), and a plain
 * representation value that is parsed from and emitted into bytes.
 *
 * @module
 */

import { upperLayerChecksum } from "./checksum.ts";
import { IP_PROTOCOL_TCP } from "./ipv4.ts";

/** Length of the fixed TCP header (RFC 9293 §3.1). */
export const TCP_HEADER_LENGTH = 20;
/** Longest TCP header: data offset 15 words (RFC 9293 §3.1). */
export const TCP_MAX_HEADER_LENGTH = 60;

/** FIN control bit (RFC 9293 §3.1). */
export const TCP_FIN = 0x01;
/** SYN control bit (RFC 9293 §3.1). */
export const TCP_SYN = 0x02;
/** RST control bit (RFC 9293 §3.1). */
export const TCP_RST = 0x04;
/** PSH control bit (RFC 9293 §3.1). */
export const TCP_PSH = 0x08;
/** ACK control bit (RFC 9293 §3.1). */
export const TCP_ACK = 0x10;
/** URG control bit (RFC 9293 §3.1). */
export const TCP_URG = 0x20;
/** ECE control bit (RFC 3168 §23.2). */
export const TCP_ECE = 0x40;
/** CWR control bit (RFC 3168 §23.2). */
export const TCP_CWR = 0x80;

/** End of option list (RFC 9293 §3.2). */
export const TCP_OPT_EOL = 0;
/** No-operation (RFC 9293 §3.2). */
export const TCP_OPT_NOP = 1;
/** Maximum segment size, length 4 (RFC 9293 §3.2). */
export const TCP_OPT_MSS = 2;
/** Window scale, length 3 (RFC 7323 §2.2). */
export const TCP_OPT_WSCALE = 3;
/** SACK permitted, length 2 (RFC 2018 §2). */
export const TCP_OPT_SACK_PERMITTED = 4;
/** SACK blocks, length 2 + 8n (RFC 2018 §3). */
export const TCP_OPT_SACK = 5;
/** Timestamps, length 10 (RFC 7323 §3.2). */
export const TCP_OPT_TIMESTAMP = 8;
/** Largest window shift allowed (RFC 7323 §2.3). */
export const TCP_MAX_WINDOW_SHIFT = 14;
/** Most SACK blocks that fit in the option space (RFC 2018 §3). */
export const TCP_MAX_SACK_BLOCKS = 4;

/**
 * TCP header view (RFC 9293 §3.1). Construct with {@linkcode TcpPacket.parse};
 * after that the accessors cannot fail.
 */
export class TcpPacket {
  private constructor(
    /** The whole segment: header then payload. */
    readonly bytes: Uint8Array,
  ) {}

  /**
   * A view over `bytes`, or `null` when the fixed header does not fit, the
   * data offset is below 5 words, or the header is longer than `bytes`.
   */
  static parse(bytes: Uint8Array): TcpPacket | null {
    if (bytes.length < TCP_HEADER_LENGTH) return null;
    const hl = (bytes[12] >> 4) * 4;
    if (hl < TCP_HEADER_LENGTH || hl > bytes.length) return null;
    return new TcpPacket(bytes);
  }

  /** Source port. */
  get srcPort(): number {
    return (this.bytes[0] << 8) | this.bytes[1];
  }
  /** Destination port. */
  get dstPort(): number {
    return (this.bytes[2] << 8) | this.bytes[3];
  }
  /** Sequence number. */
  get seqNumber(): number {
    return readU32(this.bytes, 4);
  }
  /** Acknowledgment number. */
  get ackNumber(): number {
    return readU32(this.bytes, 8);
  }
  /** Header length in bytes (data offset × 4). */
  get headerLength(): number {
    return (this.bytes[12] >> 4) * 4;
  }
  /** The eight control bits (CWR … FIN). */
  get flags(): number {
    return this.bytes[13];
  }
  /** Window field (unscaled). */
  get window(): number {
    return (this.bytes[14] << 8) | this.bytes[15];
  }
  /** Checksum field. */
  get checksum(): number {
    return (this.bytes[16] << 8) | this.bytes[17];
  }
  /** Urgent pointer. */
  get urgentPointer(): number {
    return (this.bytes[18] << 8) | this.bytes[19];
  }
  /** The option bytes (may be empty). */
  get options(): Uint8Array {
    return this.bytes.subarray(TCP_HEADER_LENGTH, this.headerLength);
  }
  /** The payload after the header. */
  get payload(): Uint8Array {
    return this.bytes.subarray(this.headerLength);
  }
  /** True when the checksum over the pseudo-header and segment is correct. */
  verifyChecksum(src: Uint8Array, dst: Uint8Array): boolean {
    return upperLayerChecksum(src, dst, IP_PROTOCOL_TCP, this.bytes) === 0;
  }
}

/**
 * A TCP segment as plain values. Parse with {@linkcode parseTcpInto} (which
 * reuses one value per call site) or {@linkcode parseTcp}; emit with
 * {@linkcode emitTcp}. Absent options are `-1` (numbers) or `false`.
 */
export class TcpRepr {
  /** Source port. */
  srcPort = 0;
  /** Destination port. */
  dstPort = 0;
  /** Sequence number (unsigned 32-bit). */
  seq = 0;
  /** Acknowledgment number (unsigned 32-bit; meaningful with ACK). */
  ack = 0;
  /** Control bits. */
  flags = 0;
  /** Window field as on the wire (unscaled). */
  window = 0;
  /** Urgent pointer. */
  urgent = 0;
  /** MSS option value, or -1. */
  mss: number = -1;
  /** Window scale shift, or -1. Values above 14 are kept; users clamp them. */
  windowScale: number = -1;
  /** SACK-permitted option present. */
  sackPermitted = false;
  /** Timestamp option present. */
  hasTimestamp = false;
  /** TSval (when {@linkcode TcpRepr.hasTimestamp}). */
  tsVal = 0;
  /** TSecr (when {@linkcode TcpRepr.hasTimestamp}). */
  tsEcr = 0;
  /** Number of SACK blocks in {@linkcode TcpRepr.sackBlocks}. */
  sackCount = 0;
  /** SACK blocks as [left0, right0, left1, right1, …]. */
  readonly sackBlocks: Uint32Array = new Uint32Array(2 * TCP_MAX_SACK_BLOCKS);
  /** Payload bytes (a view; copy what you keep). */
  payload: Uint8Array = EMPTY;

  /** Resets every field to its empty value. */
  clear(): void {
    this.srcPort =
      this.dstPort =
      this.seq =
      this.ack =
      this.flags =
        0;
    this.window = this.urgent = 0;
    this.mss = this.windowScale = -1;
    this.sackPermitted = this.hasTimestamp = false;
    this.tsVal = this.tsEcr = this.sackCount = 0;
    this.payload = EMPTY;
  }

  /** Length in sequence space: payload plus one for each of SYN and FIN. */
  get segmentLength(): number {
    return this.payload.length + (this.flags & TCP_SYN ? 1 : 0) + (this.flags & TCP_FIN ? 1 : 0);
  }
}

const EMPTY = new Uint8Array(0);

/**
 * Parses TCP options (RFC 9293 §3.2) into `repr`. Returns `false` for
 * malformed options: a length byte below 2 or running past the end, or a
 * known option with the wrong length. Unknown options are skipped.
 */
export function parseTcpOptions(opts: Uint8Array, repr: TcpRepr): boolean {
  let i = 0;
  const n = opts.length;
  while (i < n) {
    const kind = opts[i];
    if (kind === TCP_OPT_EOL) break;
    if (kind === TCP_OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= n) return false;
    const len = opts[i + 1];
    if (len < 2 || i + len > n) return false;
    switch (kind) {
      case TCP_OPT_MSS:
        if (len !== 4) return false;
        repr.mss = (opts[i + 2] << 8) | opts[i + 3];
        break;
      case TCP_OPT_WSCALE:
        if (len !== 3) return false;
        repr.windowScale = opts[i + 2];
        break;
      case TCP_OPT_SACK_PERMITTED:
        if (len !== 2) return false;
        repr.sackPermitted = true;
        break;
      case TCP_OPT_SACK: {
        if ((len - 2) % 8 !== 0 || len === 2) return false;
        const count = (len - 2) / 8;
        if (count > TCP_MAX_SACK_BLOCKS) return false;
        for (let b = 0; b < count; b++) {
          repr.sackBlocks[2 * b] = readU32(opts, i + 2 + 8 * b);
          repr.sackBlocks[2 * b + 1] = readU32(opts, i + 6 + 8 * b);
        }
        repr.sackCount = count;
        break;
      }
      case TCP_OPT_TIMESTAMP:
        if (len !== 10) return false;
        repr.hasTimestamp = true;
        repr.tsVal = readU32(opts, i + 2);
        repr.tsEcr = readU32(opts, i + 6);
        break;
      default:
        break;
    }
    i += len;
  }
  return true;
}

/**
 * Parses `bytes` into `repr` (cleared first). Returns `false` when the header
 * is truncated or its options are malformed. Does not verify the checksum
 * (the IP layer does). `repr.payload` is a view into `bytes`.
 */
export function parseTcpInto(bytes: Uint8Array, repr: TcpRepr): boolean {
  repr.clear();
  if (bytes.length < TCP_HEADER_LENGTH) return false;
  const hl = (bytes[12] >> 4) * 4;
  if (hl < TCP_HEADER_LENGTH || hl > bytes.length) return false;
  repr.srcPort = (bytes[0] << 8) | bytes[1];
  repr.dstPort = (bytes[2] << 8) | bytes[3];
  repr.seq = readU32(bytes, 4);
  repr.ack = readU32(bytes, 8);
  repr.flags = bytes[13];
  repr.window = (bytes[14] << 8) | bytes[15];
  repr.urgent = (bytes[18] << 8) | bytes[19];
  if (hl > TCP_HEADER_LENGTH && !parseTcpOptions(bytes.subarray(TCP_HEADER_LENGTH, hl), repr)) {
    return false;
  }
  repr.payload = bytes.subarray(hl);
  return true;
}

/** Parses `bytes` into a new {@linkcode TcpRepr}, or `null` when malformed. */
export function parseTcp(bytes: Uint8Array): TcpRepr | null {
  const repr = new TcpRepr();
  return parseTcpInto(bytes, repr) ? repr : null;
}

/**
 * The header length {@linkcode emitTcp} produces for `repr`: 20 bytes plus
 * options padded with NOPs to a multiple of four.
 */
export function tcpHeaderLength(repr: TcpRepr): number {
  return TCP_HEADER_LENGTH + optionsLength(repr);
}

function optionsLength(repr: TcpRepr): number {
  let n = 0;
  if (repr.mss >= 0) n += 4;
  if (repr.windowScale >= 0) n += 4; // NOP + 3
  if (repr.sackPermitted) n += repr.hasTimestamp ? 0 : 4; // shares the TS word when both
  if (repr.hasTimestamp) n += 12; // (NOP NOP | SACK-perm) + 10
  if (repr.sackCount > 0) n += 4 + 8 * repr.sackCount; // NOP NOP + 2 + 8n
  return n;
}

/**
 * Writes `repr` as a TCP segment from `src` to `dst` (4- or 16-byte
 * addresses) into a new buffer with the checksum filled in, and returns it.
 * Throws `RangeError` when the options do not fit in 40 bytes or a field is
 * out of range.
 */
export function emitTcp(repr: TcpRepr, src: Uint8Array, dst: Uint8Array): Uint8Array {
  const hl = tcpHeaderLength(repr);
  if (hl > TCP_MAX_HEADER_LENGTH) {
    throw new RangeError(`TCP options need ${hl - 20} bytes, more than 40`);
  }
  if (repr.sackCount > TCP_MAX_SACK_BLOCKS) {
    throw new RangeError(`At most ${TCP_MAX_SACK_BLOCKS} SACK blocks fit, not ${repr.sackCount}`);
  }
  const out = new Uint8Array(hl + repr.payload.length);
  writeTcpHeader(repr, out, hl);
  out.set(repr.payload, hl);
  fillTcpChecksum(out, src, dst);
  return out;
}

/**
 * Writes the header of `repr` (length `hl` from {@linkcode tcpHeaderLength})
 * into the start of `out`, checksum field zero. The payload is the caller's.
 */
export function writeTcpHeader(repr: TcpRepr, out: Uint8Array, hl: number): void {
  out[0] = repr.srcPort >> 8;
  out[1] = repr.srcPort;
  out[2] = repr.dstPort >> 8;
  out[3] = repr.dstPort;
  writeU32(out, 4, repr.seq);
  writeU32(out, 8, repr.flags & TCP_ACK ? repr.ack : 0);
  out[12] = (hl / 4) << 4;
  out[13] = repr.flags;
  out[14] = repr.window >> 8;
  out[15] = repr.window;
  out[16] = out[17] = 0;
  out[18] = repr.urgent >> 8;
  out[19] = repr.urgent;
  let i = TCP_HEADER_LENGTH;
  if (repr.mss >= 0) {
    out[i] = TCP_OPT_MSS;
    out[i + 1] = 4;
    out[i + 2] = repr.mss >> 8;
    out[i + 3] = repr.mss;
    i += 4;
  }
  if (repr.windowScale >= 0) {
    out[i] = TCP_OPT_NOP;
    out[i + 1] = TCP_OPT_WSCALE;
    out[i + 2] = 3;
    out[i + 3] = repr.windowScale;
    i += 4;
  }
  if (repr.sackPermitted && !repr.hasTimestamp) {
    out[i] = out[i + 1] = TCP_OPT_NOP;
    out[i + 2] = TCP_OPT_SACK_PERMITTED;
    out[i + 3] = 2;
    i += 4;
  }
  if (repr.hasTimestamp) {
    if (repr.sackPermitted) {
      out[i] = TCP_OPT_SACK_PERMITTED;
      out[i + 1] = 2;
    } else {
      out[i] = out[i + 1] = TCP_OPT_NOP;
    }
    out[i + 2] = TCP_OPT_TIMESTAMP;
    out[i + 3] = 10;
    writeU32(out, i + 4, repr.tsVal);
    writeU32(out, i + 8, repr.tsEcr);
    i += 12;
  }
  if (repr.sackCount > 0) {
    out[i] = out[i + 1] = TCP_OPT_NOP;
    out[i + 2] = TCP_OPT_SACK;
    out[i + 3] = 2 + 8 * repr.sackCount;
    i += 4;
    for (let b = 0; b < repr.sackCount; b++) {
      writeU32(out, i, repr.sackBlocks[2 * b]);
      writeU32(out, i + 4, repr.sackBlocks[2 * b + 1]);
      i += 8;
    }
  }
}

/** Computes and stores the checksum of the whole segment `seg` (RFC 9293 §3.1). */
export function fillTcpChecksum(seg: Uint8Array, src: Uint8Array, dst: Uint8Array): void {
  seg[16] = seg[17] = 0;
  const sum = upperLayerChecksum(src, dst, IP_PROTOCOL_TCP, seg);
  seg[16] = sum >> 8;
  seg[17] = sum;
}

function readU32(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
}

function writeU32(b: Uint8Array, i: number, v: number): void {
  b[i] = v >>> 24;
  b[i + 1] = v >>> 16;
  b[i + 2] = v >>> 8;
  b[i + 3] = v;
}
