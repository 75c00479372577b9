/**
 * The Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s handshake of WireGuard
 * (whitepaper §5.4.2–§5.4.5), both roles, as pure computations over message
 * views: no clocks, no randomness (ephemeral keys and timestamps come in as
 * arguments), no I/O. MAC1/MAC2 are added and checked by `cookie.ts`.
 *
 * Initiator: {@linkcode Noise.createInitiation} then
 * {@linkcode Noise.consumeResponse}. Responder: {@linkcode Noise.openInitiation}
 * (decrypts the initiator's static key so the caller can find the peer), then
 * {@linkcode Noise.finishInitiation} (decrypts the timestamp) and
 * {@linkcode Noise.createResponse}.
 *
 * @module
 */

import type { CryptoBackend } from "./crypto/backend.ts";
import type { InitiationMessage, ResponseMessage } from "./messages.ts";
import { isZero } from "./_util.ts";

/** The Noise protocol name, hashed into the initial chaining key (whitepaper §5.4). */
export const CONSTRUCTION = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/** WireGuard's identifier, mixed into the initial hash (whitepaper §5.4). */
export const IDENTIFIER = "WireGuard v1 zx2c4 Jason@zx2c4.com";
/** Length of a TAI64N timestamp. */
export const TIMESTAMP_LENGTH = 12;

const encoder = new TextEncoder();
const ZERO_NONCE = new Uint8Array(12);
const EMPTY = new Uint8Array(0);
const ONE = new Uint8Array([1]);
const TWO = new Uint8Array([2]);
const THREE = new Uint8Array([3]);
/** The label of TAI64: 2^62 + 10 (the TAI−UTC offset of 1972), high and low 32 bits. */
const TAI64_BASE_HIGH = 0x40000000;
const TAI64_BASE_LOW = 10;
/** Nanoseconds are rounded down to 2^24 ns (~16.8 ms) so the timestamp leaks no fine timing. */
const NANO_WHITENER = 0xffffff;

/**
 * The TAI64N timestamp (12 bytes, big-endian seconds since 1970 plus 2^62+10,
 * then nanoseconds) of `wallMs` milliseconds since the Unix epoch. Like
 * wireguard-go, the nanoseconds are rounded down to a multiple of 2^24.
 */
export function tai64n(wallMs: number, out: Uint8Array = new Uint8Array(12)): Uint8Array {
  if (!Number.isFinite(wallMs) || wallMs < 0) {
    throw new RangeError(`Wall-clock time must be a non-negative number of ms, not ${wallMs}`);
  }
  const seconds = Math.floor(wallMs / 1000);
  const nanos = (Math.floor((wallMs - seconds * 1000) * 1e6) & ~NANO_WHITENER) >>> 0;
  const lowSum = TAI64_BASE_LOW + (seconds % 0x100000000);
  const low = lowSum % 0x100000000;
  const high = TAI64_BASE_HIGH + Math.floor(seconds / 0x100000000) +
    Math.floor(lowSum / 0x100000000);
  const view = new DataView(out.buffer, out.byteOffset, 12);
  view.setUint32(0, high);
  view.setUint32(4, low);
  view.setUint32(8, nanos);
  return out;
}

/** Compares two 12-byte TAI64N timestamps: negative, zero or positive like `a - b`. */
export function compareTimestamps(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < TIMESTAMP_LENGTH; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return 0;
}

/** Keys of a finished handshake, from the local point of view. */
export interface TransportKeys {
  /** Key for messages we send. */
  readonly send: Uint8Array;
  /** Key for messages we receive. */
  readonly receive: Uint8Array;
}

/** What we know about a remote static key, precomputed once per peer. */
export class NoiseRemote {
  /** The remote static public key. */
  readonly publicKey: Uint8Array;
  /** The preshared key (32 zero bytes when none). */
  presharedKey: Uint8Array;
  /** DH(local static, remote static), or `null` when it is all zeros (such a peer can never handshake). */
  staticStatic: Uint8Array | null;
  /** HASH(HASH(HASH(CONSTRUCTION) || IDENTIFIER) || remote public): the initiator's starting hash. */
  readonly initiatorHash: Uint8Array;

  /**
   * Precomputes the static-static DH and the initial hash for `publicKey`.
   * @throws {RangeError} When a key or the preshared key is not 32 bytes.
   */
  constructor(noise: Noise, publicKey: Uint8Array, presharedKey?: Uint8Array) {
    if (publicKey.length !== 32) {
      throw new RangeError(`A public key has 32 bytes, not ${publicKey.length}`);
    }
    if (presharedKey !== undefined && presharedKey.length !== 32) {
      throw new RangeError(`A preshared key has 32 bytes, not ${presharedKey.length}`);
    }
    this.publicKey = publicKey.slice();
    this.presharedKey = presharedKey ? presharedKey.slice() : new Uint8Array(32);
    this.staticStatic = null;
    this.rekey(noise);
    this.initiatorHash = noise.backend.hash(noise.initialHash, this.publicKey);
  }

  /** Recomputes {@linkcode NoiseRemote.staticStatic} for a new local static key. */
  rekey(noise: Noise): void {
    this.staticStatic?.fill(0);
    const ss = noise.backend.x25519(noise.privateKey, this.publicKey);
    this.staticStatic = isZero(ss) ? null : ss;
  }
}

/** The initiator's state between sending the initiation and receiving the response. */
export interface InitiatorState {
  /** The peer the initiation was sent to. */
  readonly remote: NoiseRemote;
  /** Our index, as sent in `sender`. */
  readonly localIndex: number;
  /** Our ephemeral private key. */
  readonly ephemeralPrivate: Uint8Array;
  /** Chaining key after the initiation. */
  readonly chainKey: Uint8Array;
  /** Handshake hash after the initiation. */
  readonly hash: Uint8Array;
}

/** The responder's state after decrypting the initiator's static key. */
export interface InitiationOpening {
  /** The initiator's static public key (look the peer up by it). */
  readonly remoteStatic: Uint8Array;
  /** The initiator's index. */
  readonly remoteIndex: number;
  /** The initiator's ephemeral public key. */
  readonly remoteEphemeral: Uint8Array;
  /** Chaining key so far. */
  readonly chainKey: Uint8Array;
  /** Handshake hash so far. */
  readonly hash: Uint8Array;
  /** The encrypted timestamp, still to be opened. */
  readonly encryptedTimestamp: Uint8Array;
}

/** The responder's state after a fully authenticated initiation. */
export interface ConsumedInitiation {
  /** The initiating peer. */
  readonly remote: NoiseRemote;
  /** The initiator's index. */
  readonly remoteIndex: number;
  /** The initiator's ephemeral public key. */
  readonly remoteEphemeral: Uint8Array;
  /** The decrypted TAI64N timestamp (check it is newer than the last one before answering). */
  readonly timestamp: Uint8Array;
  /** Chaining key after the initiation. */
  readonly chainKey: Uint8Array;
  /** Handshake hash after the initiation. */
  readonly hash: Uint8Array;
}

/**
 * The handshake computations for one local static key. Holds the private key
 * and the precomputed initial chaining key and hashes.
 */
export class Noise {
  /** The crypto backend. */
  readonly backend: CryptoBackend;
  /** Our static private key. */
  readonly privateKey: Uint8Array;
  /** Our static public key. */
  readonly publicKey: Uint8Array;
  /** HASH(CONSTRUCTION). */
  readonly initialChainKey: Uint8Array;
  /** HASH(HASH(CONSTRUCTION) || IDENTIFIER). */
  readonly initialHash: Uint8Array;
  /** HASH(initialHash || our public key): the responder's starting hash. */
  readonly responderHash: Uint8Array;

  /**
   * Derives our public key and the initial hashes from `privateKey`.
   * @throws {RangeError} When `privateKey` is not 32 bytes.
   */
  constructor(backend: CryptoBackend, privateKey: Uint8Array) {
    if (privateKey.length !== 32) {
      throw new RangeError(`A private key has 32 bytes, not ${privateKey.length}`);
    }
    this.backend = backend;
    this.privateKey = privateKey.slice();
    this.publicKey = backend.x25519Public(this.privateKey);
    this.initialChainKey = backend.hash(encoder.encode(CONSTRUCTION));
    this.initialHash = backend.hash(this.initialChainKey, encoder.encode(IDENTIFIER));
    this.responderHash = backend.hash(this.initialHash, this.publicKey);
  }

  /** KDF1 (whitepaper §5.4): the first HKDF output of `input` under `key`. */
  kdf1(key: Uint8Array, input: Uint8Array): Uint8Array {
    const t0 = this.backend.hmac(key, input);
    const t1 = this.backend.hmac(t0, ONE);
    t0.fill(0);
    return t1;
  }

  /** KDF2: the first two HKDF outputs. */
  kdf2(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
    const t0 = this.backend.hmac(key, input);
    const t1 = this.backend.hmac(t0, ONE);
    const t2 = this.backend.hmac(t0, t1, TWO);
    t0.fill(0);
    return [t1, t2];
  }

  /** KDF3: the first three HKDF outputs. */
  kdf3(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
    const t0 = this.backend.hmac(key, input);
    const t1 = this.backend.hmac(t0, ONE);
    const t2 = this.backend.hmac(t0, t1, TWO);
    const t3 = this.backend.hmac(t0, t2, THREE);
    t0.fill(0);
    return [t1, t2, t3];
  }

  /** DH, or `null` for the all-zero result of a low-order point (whitepaper §5.4, "DH"). */
  #dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array | null {
    const shared = this.backend.x25519(privateKey, publicKey);
    return isZero(shared) ? null : shared;
  }

  /**
   * Fills in the initiation `msg` (all but the MACs) for `remote` with index
   * `localIndex`, ephemeral private key `ephemeralPrivate` and TAI64N
   * `timestamp`. Returns the state to keep for the response, or `null` when a
   * DH result is zero (a bad remote key).
   */
  createInitiation(
    remote: NoiseRemote,
    msg: InitiationMessage,
    options: { localIndex: number; ephemeralPrivate: Uint8Array; timestamp: Uint8Array },
  ): InitiatorState | null {
    const b = this.backend;
    if (remote.staticStatic === null) return null;
    const ephemeralPublic = b.x25519Public(options.ephemeralPrivate);
    msg.sender = options.localIndex;
    msg.ephemeral.set(ephemeralPublic);
    let chainKey = this.kdf1(this.initialChainKey, ephemeralPublic);
    let hash = b.hash(remote.initiatorHash, ephemeralPublic);
    const es = this.#dh(options.ephemeralPrivate, remote.publicKey);
    if (es === null) return null;
    let key: Uint8Array;
    [chainKey, key] = this.kdf2(chainKey, es);
    es.fill(0);
    b.seal(key, ZERO_NONCE, this.publicKey, hash, msg.encryptedStatic);
    hash = b.hash(hash, msg.encryptedStatic);
    [chainKey, key] = this.kdf2(chainKey, remote.staticStatic);
    b.seal(key, ZERO_NONCE, options.timestamp, hash, msg.encryptedTimestamp);
    key.fill(0);
    hash = b.hash(hash, msg.encryptedTimestamp);
    return {
      remote,
      localIndex: options.localIndex,
      ephemeralPrivate: options.ephemeralPrivate.slice(),
      chainKey,
      hash,
    };
  }

  /**
   * Responder, first half: decrypts the initiator's static key from `msg`.
   * Returns `null` when the message does not decrypt (not for us, corrupt) or
   * its ephemeral key is a low-order point.
   */
  openInitiation(msg: InitiationMessage): InitiationOpening | null {
    const b = this.backend;
    const remoteEphemeral = msg.ephemeral.slice();
    let chainKey = this.kdf1(this.initialChainKey, remoteEphemeral);
    let hash = b.hash(this.responderHash, remoteEphemeral);
    const es = this.#dh(this.privateKey, remoteEphemeral);
    if (es === null) return null;
    let key: Uint8Array;
    [chainKey, key] = this.kdf2(chainKey, es);
    es.fill(0);
    const remoteStatic = b.open(key, ZERO_NONCE, msg.encryptedStatic, hash, new Uint8Array(32));
    key.fill(0);
    if (remoteStatic === null) return null;
    hash = b.hash(hash, msg.encryptedStatic);
    return {
      remoteStatic,
      remoteIndex: msg.sender,
      remoteEphemeral,
      chainKey,
      hash,
      encryptedTimestamp: msg.encryptedTimestamp.slice(),
    };
  }

  /**
   * Responder, second half: with the peer's precomputed `remote` (found by
   * `opening.remoteStatic`), decrypts the timestamp. Returns `null` when
   * `remote` is not the key in the opening or the timestamp does not decrypt.
   * The caller must still check the timestamp against the last one accepted.
   */
  finishInitiation(opening: InitiationOpening, remote: NoiseRemote): ConsumedInitiation | null {
    const b = this.backend;
    if (remote.staticStatic === null || compareBytes(remote.publicKey, opening.remoteStatic)) {
      return null;
    }
    const [chainKey, key] = this.kdf2(opening.chainKey, remote.staticStatic);
    const timestamp = b.open(
      key,
      ZERO_NONCE,
      opening.encryptedTimestamp,
      opening.hash,
      new Uint8Array(TIMESTAMP_LENGTH),
    );
    key.fill(0);
    if (timestamp === null) return null;
    return {
      remote,
      remoteIndex: opening.remoteIndex,
      remoteEphemeral: opening.remoteEphemeral,
      timestamp,
      chainKey,
      hash: b.hash(opening.hash, opening.encryptedTimestamp),
    };
  }

  /**
   * Responder: fills in the response `msg` (all but the MACs) to a consumed
   * initiation and returns the transport keys, or `null` when a DH result is
   * zero.
   */
  createResponse(
    consumed: ConsumedInitiation,
    msg: ResponseMessage,
    options: { localIndex: number; ephemeralPrivate: Uint8Array },
  ): TransportKeys | null {
    const b = this.backend;
    const ephemeralPublic = b.x25519Public(options.ephemeralPrivate);
    msg.sender = options.localIndex;
    msg.receiver = consumed.remoteIndex;
    msg.ephemeral.set(ephemeralPublic);
    let chainKey = this.kdf1(consumed.chainKey, ephemeralPublic);
    let hash = b.hash(consumed.hash, ephemeralPublic);
    const ee = this.#dh(options.ephemeralPrivate, consumed.remoteEphemeral);
    if (ee === null) return null;
    chainKey = this.kdf1(chainKey, ee);
    ee.fill(0);
    const se = this.#dh(options.ephemeralPrivate, consumed.remote.publicKey);
    if (se === null) return null;
    chainKey = this.kdf1(chainKey, se);
    se.fill(0);
    const [chainKey2, tau, key] = this.kdf3(chainKey, consumed.remote.presharedKey);
    hash = b.hash(hash, tau);
    b.seal(key, ZERO_NONCE, EMPTY, hash, msg.encryptedNothing);
    key.fill(0);
    const [initiatorSend, responderSend] = this.kdf2(chainKey2, EMPTY);
    chainKey2.fill(0);
    return { send: responderSend, receive: initiatorSend };
  }

  /**
   * Initiator: consumes the response `msg` to the initiation in `state` and
   * returns the transport keys, or `null` when it does not authenticate
   * (wrong peer, wrong preshared key, corrupt, low-order ephemeral key).
   * The caller checks `msg.receiver === state.localIndex`.
   */
  consumeResponse(state: InitiatorState, msg: ResponseMessage): TransportKeys | null {
    const b = this.backend;
    const remoteEphemeral = msg.ephemeral;
    let chainKey = this.kdf1(state.chainKey, remoteEphemeral);
    let hash = b.hash(state.hash, remoteEphemeral);
    const ee = this.#dh(state.ephemeralPrivate, remoteEphemeral);
    if (ee === null) return null;
    chainKey = this.kdf1(chainKey, ee);
    ee.fill(0);
    const se = this.#dh(this.privateKey, remoteEphemeral);
    if (se === null) return null;
    chainKey = this.kdf1(chainKey, se);
    se.fill(0);
    const [chainKey2, tau, key] = this.kdf3(chainKey, state.remote.presharedKey);
    hash = b.hash(hash, tau);
    const ok = b.open(key, ZERO_NONCE, msg.encryptedNothing, hash, new Uint8Array(0));
    key.fill(0);
    if (ok === null) return null;
    const [initiatorSend, responderSend] = this.kdf2(chainKey2, EMPTY);
    chainKey2.fill(0);
    return { send: initiatorSend, receive: responderSend };
  }
}

/** Non-zero when `a` and `b` differ (constant time for equal lengths). */
function compareBytes(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return 1;
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc |= a[i] ^ b[i];
  return acc;
}
