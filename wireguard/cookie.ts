/**
 * MAC1, MAC2 and cookies: WireGuard's DoS mitigation (whitepaper §5.3, §5.4.4,
 * §5.4.7).
 *
 * Every handshake message carries `mac1 = MAC(HASH(LABEL_MAC1 || S_pub_receiver), msg_alpha)`,
 * which proves the sender knows the receiver's public key. A responder under
 * load also requires `mac2 = MAC(cookie, msg_beta)`, where the cookie is
 * `MAC(R, source IP || source port)` under a secret `R` rotated every two
 * minutes; a message without a valid MAC2 is answered with a cookie reply (the
 * cookie encrypted with XChaCha20-Poly1305 under `HASH(LABEL_COOKIE || S_pub)`,
 * authenticated against the message's MAC1) instead of a handshake response.
 *
 * {@linkcode CookieChecker} is the receiving side (one per device, for our
 * own public key); {@linkcode CookieGenerator} is the sending side (one per
 * peer, for the peer's public key).
 *
 * @module
 */

import { bytesEqual } from "./_util.ts";
import type { Endpoint } from "./endpoint.ts";
import type { CryptoBackend } from "./crypto/backend.ts";
import { CookieReplyMessage } from "./messages.ts";
import { parseIp } from "./ip.ts";

/** Label of the MAC1 key (whitepaper §5.4). */
export const LABEL_MAC1 = "mac1----";
/** Label of the cookie encryption key (whitepaper §5.4). */
export const LABEL_COOKIE = "cookie--";
/** Lifetime of the cookie secret and of a received cookie: 120 s (whitepaper §5.4.7). */
export const COOKIE_SECRET_LIFETIME = 120_000;
/** Length of MAC1, MAC2 and a cookie. */
export const MAC_LENGTH = 16;

const encoder = new TextEncoder();

/** The bytes a cookie binds to: the IP address (4 or 16 bytes, or its text when unparsable) and the big-endian port. */
function sourceBytes(source: Endpoint): Uint8Array {
  const ip = parseIp(source.address) ?? encoder.encode(source.address);
  const out = new Uint8Array(ip.length + 2);
  out.set(ip);
  out[ip.length] = source.port >>> 8;
  out[ip.length + 1] = source.port;
  return out;
}

/**
 * The receiving side: checks MAC1 and MAC2 of handshake messages sent to us
 * and creates cookie replies.
 */
export class CookieChecker {
  readonly #backend: CryptoBackend;
  readonly #random: (bytes: Uint8Array) => void;
  readonly #mac1Key: Uint8Array;
  readonly #cookieKey: Uint8Array;
  readonly #secret = new Uint8Array(32);
  #secretBirth = -Infinity;

  /** A checker for messages sent to `publicKey` (ours). */
  constructor(
    backend: CryptoBackend,
    publicKey: Uint8Array,
    random: (bytes: Uint8Array) => void,
  ) {
    this.#backend = backend;
    this.#random = random;
    this.#mac1Key = backend.hash(encoder.encode(LABEL_MAC1), publicKey);
    this.#cookieKey = backend.hash(encoder.encode(LABEL_COOKIE), publicKey);
  }

  /** Whether `msg` carries a valid MAC1 at `mac1Offset` (MAC1 covers the bytes before it). */
  checkMac1(msg: Uint8Array, mac1Offset: number): boolean {
    const mac = this.#backend.mac(this.#mac1Key, msg.subarray(0, mac1Offset));
    return bytesEqual(mac, msg.subarray(mac1Offset, mac1Offset + MAC_LENGTH));
  }

  /**
   * Whether `msg` carries a valid MAC2 at `mac2Offset` for a cookie we would
   * give to `source` now.
   */
  checkMac2(msg: Uint8Array, mac2Offset: number, source: Endpoint, now: number): boolean {
    const cookie = this.#cookie(source, now);
    const mac = this.#backend.mac(cookie, msg.subarray(0, mac2Offset));
    return bytesEqual(mac, msg.subarray(mac2Offset, mac2Offset + MAC_LENGTH));
  }

  /**
   * Writes a cookie reply (64 bytes) into `out` for the handshake message
   * `msg` (whose MAC1 is at `mac1Offset` and whose sender index is
   * `receiverIndex`) from `source`.
   */
  createReply(
    msg: Uint8Array,
    mac1Offset: number,
    receiverIndex: number,
    source: Endpoint,
    now: number,
    out: Uint8Array,
  ): CookieReplyMessage {
    const reply = CookieReplyMessage.emit(out);
    reply.receiver = receiverIndex;
    this.#random(reply.nonce);
    const cookie = this.#cookie(source, now);
    const sealed = this.#backend.xseal(
      this.#cookieKey,
      reply.nonce,
      cookie,
      msg.subarray(mac1Offset, mac1Offset + MAC_LENGTH),
    );
    reply.encryptedCookie.set(sealed);
    return reply;
  }

  #cookie(source: Endpoint, now: number): Uint8Array {
    if (now - this.#secretBirth >= COOKIE_SECRET_LIFETIME) {
      this.#random(this.#secret);
      this.#secretBirth = now;
    }
    return this.#backend.mac(this.#secret, sourceBytes(source));
  }
}

/**
 * The sending side, one per peer: adds MAC1 (and MAC2 when we hold a fresh
 * cookie from the peer) to our handshake messages, and consumes the peer's
 * cookie replies.
 */
export class CookieGenerator {
  readonly #backend: CryptoBackend;
  readonly #mac1Key: Uint8Array;
  readonly #cookieKey: Uint8Array;
  readonly #lastMac1 = new Uint8Array(MAC_LENGTH);
  #hasLastMac1 = false;
  readonly #cookie = new Uint8Array(MAC_LENGTH);
  #cookieBirth = -Infinity;

  /** A generator for messages sent to `remotePublicKey`. */
  constructor(backend: CryptoBackend, remotePublicKey: Uint8Array) {
    this.#backend = backend;
    this.#mac1Key = backend.hash(encoder.encode(LABEL_MAC1), remotePublicKey);
    this.#cookieKey = backend.hash(encoder.encode(LABEL_COOKIE), remotePublicKey);
  }

  /** Whether we hold a cookie younger than 120 s at `now`. */
  hasCookie(now: number): boolean {
    return now - this.#cookieBirth < COOKIE_SECRET_LIFETIME;
  }

  /**
   * Writes MAC1 at `mac1Offset` and MAC2 right after it (zeros without a fresh
   * cookie) into the handshake message `msg`.
   */
  addMacs(msg: Uint8Array, mac1Offset: number, now: number): void {
    const mac1 = this.#backend.mac(this.#mac1Key, msg.subarray(0, mac1Offset));
    msg.set(mac1, mac1Offset);
    this.#lastMac1.set(mac1);
    this.#hasLastMac1 = true;
    const mac2Offset = mac1Offset + MAC_LENGTH;
    if (this.hasCookie(now)) {
      msg.set(this.#backend.mac(this.#cookie, msg.subarray(0, mac2Offset)), mac2Offset);
    } else {
      msg.fill(0, mac2Offset, mac2Offset + MAC_LENGTH);
    }
  }

  /**
   * Decrypts a cookie reply to our last handshake message and keeps the
   * cookie. Returns `false` (and keeps nothing) when it does not decrypt.
   */
  consumeReply(reply: CookieReplyMessage, now: number): boolean {
    if (!this.#hasLastMac1) return false;
    const cookie = this.#backend.xopen(
      this.#cookieKey,
      reply.nonce,
      reply.encryptedCookie,
      this.#lastMac1,
    );
    if (cookie === null || cookie.length !== MAC_LENGTH) return false;
    this.#cookie.set(cookie);
    this.#cookieBirth = now;
    return true;
  }
}
