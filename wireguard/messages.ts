/**
 * Wire formats of the four WireGuard messages (whitepaper §5.4.2–§5.4.7).
 *
 * Every message starts with a one-byte type followed by three reserved zero
 * bytes; integers are little-endian. Each message has a view class whose
 * checked constructor ({@linkcode InitiationMessage.parse} and friends)
 * validates the length, the type and the reserved bytes once, after which
 * the field accessors cannot fail (the smoltcp `wire/` style). `emit`
 * prepares a buffer of the right size for writing.
 *
 * @module
 */

/** Message type 1: handshake initiation (whitepaper §5.4.2). */
export const MESSAGE_INITIATION = 1;
/** Message type 2: handshake response (whitepaper §5.4.3). */
export const MESSAGE_RESPONSE = 2;
/** Message type 3: cookie reply (whitepaper §5.4.7). */
export const MESSAGE_COOKIE_REPLY = 3;
/** Message type 4: transport data (whitepaper §5.4.6). */
export const MESSAGE_TRANSPORT = 4;

/** Exact length of a handshake initiation. */
export const INITIATION_LENGTH = 148;
/** Exact length of a handshake response. */
export const RESPONSE_LENGTH = 92;
/** Exact length of a cookie reply. */
export const COOKIE_REPLY_LENGTH = 64;
/** Length of the transport data header (type, reserved, receiver, counter). */
export const TRANSPORT_HEADER_LENGTH = 16;
/** Minimum length of a transport data message: header plus the 16-byte tag (a keepalive). */
export const TRANSPORT_MIN_LENGTH = 32;

/**
 * The type of a message when its first four bytes are a known type followed by
 * three zero bytes, else 0. It does not check the length.
 */
export function messageType(bytes: Uint8Array): number {
  if (bytes.length < 4 || bytes[1] !== 0 || bytes[2] !== 0 || bytes[3] !== 0) return 0;
  const type = bytes[0];
  return type >= MESSAGE_INITIATION && type <= MESSAGE_TRANSPORT ? type : 0;
}

function readU32(bytes: Uint8Array, offset: number): number {
  return (bytes[offset] | (bytes[offset + 1] << 8) | (bytes[offset + 2] << 16) |
    (bytes[offset + 3] << 24)) >>> 0;
}

function writeU32(bytes: Uint8Array, offset: number, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`An index is a 32-bit unsigned integer, not ${value}`);
  }
  bytes[offset] = value;
  bytes[offset + 1] = value >>> 8;
  bytes[offset + 2] = value >>> 16;
  bytes[offset + 3] = value >>> 24;
}

function checkedView(bytes: Uint8Array, type: number, length: number): boolean {
  return bytes.length === length && bytes[0] === type && bytes[1] === 0 && bytes[2] === 0 &&
    bytes[3] === 0;
}

function prepare(out: Uint8Array, type: number, length: number, name: string): void {
  if (out.length !== length) {
    throw new RangeError(`A ${name} needs a buffer of exactly ${length} bytes, not ${out.length}`);
  }
  out.fill(0);
  out[0] = type;
}

/**
 * Handshake initiation, 148 bytes (whitepaper §5.4.2):
 * `type(1) reserved(3) sender(4) ephemeral(32) static(32+16) timestamp(12+16) mac1(16) mac2(16)`.
 */
export class InitiationMessage {
  /** Offset of `mac1`: MAC1 covers the bytes before it. */
  static readonly MAC1_OFFSET = 116;
  /** Offset of `mac2`: MAC2 covers the bytes before it. */
  static readonly MAC2_OFFSET = 132;

  private constructor(
    /** The whole message. */
    readonly bytes: Uint8Array,
  ) {}

  /** A view over `bytes`, or `null` when the length, type or reserved bytes are wrong. */
  static parse(bytes: Uint8Array): InitiationMessage | null {
    return checkedView(bytes, MESSAGE_INITIATION, INITIATION_LENGTH)
      ? new InitiationMessage(bytes)
      : null;
  }

  /**
   * Zeroes `out`, writes the type and returns a view to fill in.
   * @throws {RangeError} When `out` is not exactly 148 bytes.
   */
  static emit(out: Uint8Array): InitiationMessage {
    prepare(out, MESSAGE_INITIATION, INITIATION_LENGTH, "handshake initiation");
    return new InitiationMessage(out);
  }

  /** The initiator's index for this handshake. */
  get sender(): number {
    return readU32(this.bytes, 4);
  }
  set sender(value: number) {
    writeU32(this.bytes, 4, value);
  }
  /** The initiator's unencrypted ephemeral public key (32 bytes). */
  get ephemeral(): Uint8Array {
    return this.bytes.subarray(8, 40);
  }
  /** The initiator's static public key, encrypted (32 + 16 bytes). */
  get encryptedStatic(): Uint8Array {
    return this.bytes.subarray(40, 88);
  }
  /** The TAI64N timestamp, encrypted (12 + 16 bytes). */
  get encryptedTimestamp(): Uint8Array {
    return this.bytes.subarray(88, 116);
  }
  /** MAC1 (16 bytes). */
  get mac1(): Uint8Array {
    return this.bytes.subarray(116, 132);
  }
  /** MAC2 (16 bytes); all zeros when the initiator has no cookie. */
  get mac2(): Uint8Array {
    return this.bytes.subarray(132, 148);
  }
}

/**
 * Handshake response, 92 bytes (whitepaper §5.4.3):
 * `type(1) reserved(3) sender(4) receiver(4) ephemeral(32) empty(0+16) mac1(16) mac2(16)`.
 */
export class ResponseMessage {
  /** Offset of `mac1`. */
  static readonly MAC1_OFFSET = 60;
  /** Offset of `mac2`. */
  static readonly MAC2_OFFSET = 76;

  private constructor(
    /** The whole message. */
    readonly bytes: Uint8Array,
  ) {}

  /** A view over `bytes`, or `null` when the length, type or reserved bytes are wrong. */
  static parse(bytes: Uint8Array): ResponseMessage | null {
    return checkedView(bytes, MESSAGE_RESPONSE, RESPONSE_LENGTH)
      ? new ResponseMessage(bytes)
      : null;
  }

  /**
   * Zeroes `out`, writes the type and returns a view to fill in.
   * @throws {RangeError} When `out` is not exactly 92 bytes.
   */
  static emit(out: Uint8Array): ResponseMessage {
    prepare(out, MESSAGE_RESPONSE, RESPONSE_LENGTH, "handshake response");
    return new ResponseMessage(out);
  }

  /** The responder's index. */
  get sender(): number {
    return readU32(this.bytes, 4);
  }
  set sender(value: number) {
    writeU32(this.bytes, 4, value);
  }
  /** The initiator's index (from the initiation). */
  get receiver(): number {
    return readU32(this.bytes, 8);
  }
  set receiver(value: number) {
    writeU32(this.bytes, 8, value);
  }
  /** The responder's ephemeral public key (32 bytes). */
  get ephemeral(): Uint8Array {
    return this.bytes.subarray(12, 44);
  }
  /** The encrypted empty payload: just a tag (16 bytes). */
  get encryptedNothing(): Uint8Array {
    return this.bytes.subarray(44, 60);
  }
  /** MAC1 (16 bytes). */
  get mac1(): Uint8Array {
    return this.bytes.subarray(60, 76);
  }
  /** MAC2 (16 bytes). */
  get mac2(): Uint8Array {
    return this.bytes.subarray(76, 92);
  }
}

/**
 * Cookie reply, 64 bytes (whitepaper §5.4.7):
 * `type(1) reserved(3) receiver(4) nonce(24) cookie(16+16)`.
 */
export class CookieReplyMessage {
  private constructor(
    /** The whole message. */
    readonly bytes: Uint8Array,
  ) {}

  /** A view over `bytes`, or `null` when the length, type or reserved bytes are wrong. */
  static parse(bytes: Uint8Array): CookieReplyMessage | null {
    return checkedView(bytes, MESSAGE_COOKIE_REPLY, COOKIE_REPLY_LENGTH)
      ? new CookieReplyMessage(bytes)
      : null;
  }

  /**
   * Zeroes `out`, writes the type and returns a view to fill in.
   * @throws {RangeError} When `out` is not exactly 64 bytes.
   */
  static emit(out: Uint8Array): CookieReplyMessage {
    prepare(out, MESSAGE_COOKIE_REPLY, COOKIE_REPLY_LENGTH, "cookie reply");
    return new CookieReplyMessage(out);
  }

  /** The sender index of the handshake message this replies to. */
  get receiver(): number {
    return readU32(this.bytes, 4);
  }
  set receiver(value: number) {
    writeU32(this.bytes, 4, value);
  }
  /** The XChaCha20 nonce (24 bytes). */
  get nonce(): Uint8Array {
    return this.bytes.subarray(8, 32);
  }
  /** The encrypted cookie (16 + 16 bytes). */
  get encryptedCookie(): Uint8Array {
    return this.bytes.subarray(32, 64);
  }
}

/** 2^53: transport counters at or above it are not exact JavaScript numbers. */
const COUNTER_LIMIT = 2 ** 53;

/**
 * Transport data, at least 32 bytes (whitepaper §5.4.6):
 * `type(1) reserved(3) receiver(4) counter(8) packet(n+16)`.
 */
export class TransportMessage {
  private constructor(
    /** The whole message. */
    readonly bytes: Uint8Array,
  ) {}

  /**
   * A view over `bytes`, or `null` when it is shorter than 32 bytes or the
   * type or reserved bytes are wrong.
   */
  static parse(bytes: Uint8Array): TransportMessage | null {
    return bytes.length >= TRANSPORT_MIN_LENGTH && bytes[0] === MESSAGE_TRANSPORT &&
        bytes[1] === 0 && bytes[2] === 0 && bytes[3] === 0
      ? new TransportMessage(bytes)
      : null;
  }

  /**
   * Writes the header of a transport message of `out.length` bytes and returns
   * a view; the encrypted packet goes to {@linkcode TransportMessage.packet}.
   * Only the header is written.
   * @throws {RangeError} When `out` is shorter than 32 bytes or `counter` is not a safe integer.
   */
  static emit(out: Uint8Array, receiver: number, counter: number): TransportMessage {
    if (out.length < TRANSPORT_MIN_LENGTH) {
      throw new RangeError(`A transport message needs at least 32 bytes, not ${out.length}`);
    }
    if (!Number.isSafeInteger(counter) || counter < 0) {
      throw new RangeError(`A counter is a safe non-negative integer, not ${counter}`);
    }
    out[0] = MESSAGE_TRANSPORT;
    out[1] = 0;
    out[2] = 0;
    out[3] = 0;
    writeU32(out, 4, receiver);
    const low = counter % 0x100000000;
    writeU32(out, 8, low);
    writeU32(out, 12, (counter - low) / 0x100000000);
    return new TransportMessage(out);
  }

  /** The recipient's index. */
  get receiver(): number {
    return readU32(this.bytes, 4);
  }
  /**
   * The 64-bit counter. Counters of 2^53 and above cannot be held exactly in a
   * JavaScript number: they are returned as `Infinity` (the device drops such
   * packets and counts them; a sender would need 2^53 packets to get there).
   */
  get counter(): number {
    const value = readU32(this.bytes, 12) * 0x100000000 + readU32(this.bytes, 8);
    return value >= COUNTER_LIMIT ? Infinity : value;
  }
  /** The encrypted packet including its 16-byte tag. */
  get packet(): Uint8Array {
    return this.bytes.subarray(TRANSPORT_HEADER_LENGTH);
  }
}
