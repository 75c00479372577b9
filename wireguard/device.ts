/**
 * A WireGuard device: one static key, many peers, as a sans-I/O value.
 *
 * Datagrams from the network go in through {@linkcode Device.receive}; IP
 * packets to encrypt go in through {@linkcode Device.send}. What must go out
 * comes back synchronously through the `sendDatagram` and `deliverPacket`
 * callbacks given at construction. Time is passed in (`now`, monotonic ms) on
 * every call; {@linkcode Device.nextDeadline} says when {@linkcode Device.poll}
 * must be called next for the timers (whitepaper §6).
 *
 * Bad network input is dropped and counted in {@linkcode Device.stats} (and
 * in the peer's stats when the peer is known); it never throws.
 *
 * Transport counters are JavaScript numbers: we send at most 2^53 − 1
 * messages per session (a rekey happens long before), and a received message
 * whose counter is 2^53 or more is dropped and counted as `counterTooLarge`.
 *
 * @example
 * ```ts ignore
 * import { Device } from "./device.ts";
 *
 * const device = new Device({
 *   privateKey,
 *   wallClock: Date.now, // the caller's clock: the core never reads one
 *   sendDatagram: (datagram, to) => socket.send(datagram.slice(), to),
 *   deliverPacket: (packet, peer) => netstack.input(packet),
 * });
 * const peer = device.addPeer({ publicKey, allowedIps: ["10.0.0.2/32"] });
 * // On a datagram: device.receive(bytes, { address, port }, performance.now());
 * // On an IP packet: device.send(packet, performance.now());
 * // Timers: call device.poll(now) when now >= device.nextDeadline().
 * ```
 *
 * @module
 */

import { positiveInteger } from "./_util.ts";
import { ipDestination, ipPacketLength, ipSource } from "./_inner.ts";
import type { CryptoBackend } from "./crypto/backend.ts";
import { defaultBackend } from "./crypto/mod.ts";
import { AllowedIps } from "./allowed_ips.ts";
import { CookieChecker } from "./cookie.ts";
import {
  COOKIE_REPLY_LENGTH,
  CookieReplyMessage,
  INITIATION_LENGTH,
  InitiationMessage,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  messageType,
  RESPONSE_LENGTH,
  ResponseMessage,
  TRANSPORT_HEADER_LENGTH,
  TransportMessage,
} from "./messages.ts";
import { compareTimestamps, Noise, tai64n } from "./noise.ts";
import {
  createStats,
  type DropReason,
  type Endpoint,
  Keypair,
  type Peer,
  type PeerConfig,
  PeerState,
  type PeerStats,
} from "./peer.ts";
import { DEFAULT_MAX_ENTRIES, RateLimiter } from "./ratelimiter.ts";
import { sameEndpoint } from "./endpoint.ts";
import {
  INITIATION_MIN_INTERVAL,
  MAX_SAFE_COUNTER,
  REJECT_AFTER_MESSAGES,
  REJECT_AFTER_TIME,
  REKEY_AFTER_SAFE_MESSAGES,
  REKEY_AFTER_TIME,
  REKEY_ON_RECEIVE_AGE,
  REKEY_TIMEOUT,
  TimerAction,
} from "./timers.ts";

export type { Endpoint, PeerConfig, PeerStats } from "./peer.ts";
export type { Peer } from "./peer.ts";

/** Something the device reports to its owner. */
export type DeviceEvent =
  | { readonly type: "handshake"; readonly peer: Peer }
  | {
    readonly type: "roam";
    readonly peer: Peer;
    readonly from: Endpoint | undefined;
    readonly to: Endpoint;
  }
  | { readonly type: "session-expired"; readonly peer: Peer }
  | { readonly type: "handshake-failed"; readonly peer: Peer };

/** Bounds and thresholds of a device; every field has a default. */
export interface DeviceLimits {
  /**
   * Handshake messages per second (passing MAC1) above which the device is
   * "under load" for the next second: then MAC2 (a cookie) is required and
   * each source is rate limited. Default 256; 0 means always under load.
   */
  underLoadThreshold?: number;
  /** Packets queued per peer while waiting for a session (default 1024, drop-oldest). */
  queuePerPeer?: number;
  /** Sources tracked by the handshake rate limiter (default 8192). */
  rateLimiterEntries?: number;
  /** Maximum number of peers (default 65536). */
  maxPeers?: number;
  /** When set, padding never makes a plaintext longer than this (default: no bound). */
  mtu?: number;
  /**
   * Handshake messages (initiations, responses, cookie replies) held for
   * {@linkcode Device.poll} instead of being worked on in `receive`, so a
   * flood of them cannot starve transport packets. Default 0: worked on at
   * once. When the queue is full, new ones are dropped (counted); while it
   * is over half full the device is under load (MAC2 required).
   */
  handshakeQueue?: number;
  /** Queued handshake messages worked on per {@linkcode Device.poll} (default 32). */
  handshakeBudget?: number;
}

/** Options of a {@linkcode Device}. */
export interface DeviceOptions {
  /** Our static private key (32 bytes). */
  privateKey: Uint8Array;
  /** The crypto backend (default `defaultBackend()`: native where available, else noble). */
  backend?: CryptoBackend;
  /** Fills `bytes` with random bytes (default `crypto.getRandomValues`). */
  random?: (bytes: Uint8Array) => void;
  /** Milliseconds since the Unix epoch; used only for TAI64N timestamps and `lastHandshake`. */
  wallClock: () => number;
  /** Encrypted datagram to send to the network. `datagram` is valid only during the call. */
  sendDatagram(datagram: Uint8Array, to: Endpoint): void;
  /** A decrypted, source-checked inner IP packet from `peer`. Valid only during the call. */
  deliverPacket(packet: Uint8Array, peer: Peer): void;
  /** Optional event sink. */
  onEvent?(event: DeviceEvent): void;
  /** Bounds and thresholds. */
  limits?: DeviceLimits;
}

/** Device statistics: the sum over peers plus what no peer can be blamed for, and table sizes. */
export interface DeviceStats extends PeerStats {
  /** Number of peers. */
  peers: number;
  /** Entries of the receiver-index table (handshakes in flight and sessions). */
  indexTableSize: number;
  /** Sources tracked by the rate limiter. */
  rateLimiterSize: number;
  /** Packets queued across peers. */
  queuedPackets: number;
  /** Whether the device is under load now. */
  underLoad: boolean;
  /** Handshake messages waiting in the queue (see {@linkcode DeviceLimits.handshakeQueue}). */
  handshakesPending: number;
  /** Handshake messages dropped because the queue was full. */
  handshakeQueueDrops: number;
}

interface IndexEntry {
  readonly peer: PeerState;
  /** `null` for our initiation in flight. */
  readonly keypair: Keypair | null;
}

const EMPTY = new Uint8Array(0);
const LATIN1 = new TextDecoder("latin1");

function sameKey(a: Uint8Array, b: Uint8Array): boolean {
  return keyString(a) === keyString(b);
}

function keyString(key: Uint8Array): string {
  return LATIN1.decode(key);
}

/** The length of a handshake message of `type`; -1 for other types. */
function handshakeLength(type: number): number {
  return type === MESSAGE_INITIATION
    ? INITIATION_LENGTH
    : type === MESSAGE_RESPONSE
    ? RESPONSE_LENGTH
    : type === MESSAGE_COOKIE_REPLY
    ? COOKIE_REPLY_LENGTH
    : -1;
}

/**
 * A WireGuard device (see the module doc): one static key, many peers.
 *
 * @example Two devices, a handshake and one packet, on a fake clock
 * ```ts
 * import { Device, generatePrivateKey, publicKey } from "@wgstack/wireguard";
 * const keyA = generatePrivateKey(), keyB = generatePrivateKey();
 * const wire: Uint8Array[] = [];
 * const a = new Device({
 *   privateKey: keyA,
 *   wallClock: Date.now,
 *   sendDatagram: (d) => void wire.push(d.slice()),
 *   deliverPacket: () => {},
 * });
 * const b = new Device({
 *   privateKey: keyB,
 *   wallClock: Date.now,
 *   sendDatagram: (d) => void a.receive(d, { address: "192.0.2.2", port: 51820 }, 0),
 *   deliverPacket: (packet, peer) => console.log(packet.length, "bytes from", peer.endpoint),
 * });
 * const peerB = a.addPeer({
 *   publicKey: publicKey(keyB),
 *   allowedIps: ["10.0.0.2/32"],
 *   endpoint: { address: "192.0.2.2", port: 51820 },
 * });
 * b.addPeer({ publicKey: publicKey(keyA), allowedIps: ["10.0.0.1/32"] });
 * a.initiate(peerB, 0);
 * while (wire.length > 0) b.receive(wire.shift()!, { address: "192.0.2.1", port: 40000 }, 0);
 * ```
 */
export class Device {
  readonly #backend: CryptoBackend;
  readonly #random: (bytes: Uint8Array) => void;
  readonly #wallClock: () => number;
  readonly #sendDatagram: (datagram: Uint8Array, to: Endpoint) => void;
  readonly #deliverPacket: (packet: Uint8Array, peer: PeerState) => void;
  readonly #onEvent: ((event: DeviceEvent) => void) | undefined;
  #noise: Noise;
  /** The private key was cleared (UAPI `private_key` of zeros): no handshakes. */
  #keyless = false;
  #checker: CookieChecker;
  readonly #limiter: RateLimiter;
  readonly #routes = new AllowedIps<PeerState>();
  readonly #peers = new Map<string, PeerState>();
  readonly #indices = new Map<number, IndexEntry>();
  readonly #stats = createStats();

  readonly #underLoadThreshold: number;
  readonly #queuePerPeer: number;
  readonly #maxPeers: number;
  readonly #mtu: number;
  #loadWindowStart = -Infinity;
  #loadCount = 0;
  #underLoadUntil = -Infinity;
  #lastNow = -Infinity;
  readonly #hsMax: number;
  readonly #hsBudget: number;
  #hsQueue: { bytes: Uint8Array; from: Endpoint }[] = [];
  #hsHead = 0;
  #hsDrops = 0;

  readonly #nonce = new Uint8Array(12);
  readonly #indexBytes = new Uint8Array(4);
  readonly #handshakeBuffer = new Uint8Array(INITIATION_LENGTH);
  readonly #responseBuffer = new Uint8Array(RESPONSE_LENGTH);
  readonly #cookieBuffer = new Uint8Array(COOKIE_REPLY_LENGTH);
  #txBuffer = new Uint8Array(2048);
  #rxBuffer = new Uint8Array(2048);

  /**
   * A device with our static key and no peers yet.
   * @throws {TypeError} When a required option is missing.
   * @throws {RangeError} When the private key is not 32 bytes or a limit is invalid.
   */
  constructor(options: DeviceOptions) {
    if (typeof options.wallClock !== "function") {
      throw new TypeError("A device needs a wallClock function (ms since the Unix epoch)");
    }
    if (typeof options.sendDatagram !== "function" || typeof options.deliverPacket !== "function") {
      throw new TypeError("A device needs sendDatagram and deliverPacket callbacks");
    }
    this.#backend = options.backend ?? defaultBackend();
    this.#random = options.random ?? ((bytes) => crypto.getRandomValues(bytes));
    this.#wallClock = options.wallClock;
    this.#sendDatagram = options.sendDatagram;
    this.#deliverPacket = options.deliverPacket;
    this.#onEvent = options.onEvent;
    this.#noise = new Noise(this.#backend, options.privateKey);
    this.#checker = new CookieChecker(this.#backend, this.publicKey, this.#random);
    const limits = options.limits ?? {};
    this.#underLoadThreshold = nonNegative(limits.underLoadThreshold ?? 256, "underLoadThreshold");
    this.#queuePerPeer = positiveInteger(limits.queuePerPeer ?? 1024, "limits.queuePerPeer");
    this.#maxPeers = positiveInteger(limits.maxPeers ?? 65536, "limits.maxPeers");
    this.#mtu = limits.mtu === undefined ? Infinity : positiveInteger(limits.mtu, "limits.mtu");
    this.#hsMax = nonNegative(limits.handshakeQueue ?? 0, "handshakeQueue");
    this.#hsBudget = positiveInteger(limits.handshakeBudget ?? 32, "limits.handshakeBudget");
    this.#limiter = new RateLimiter({
      maxEntries: positiveInteger(
        limits.rateLimiterEntries ?? DEFAULT_MAX_ENTRIES,
        "limits.rateLimiterEntries",
      ),
    });
  }

  /** Our static public key. */
  get publicKey(): Uint8Array {
    return this.#noise.publicKey;
  }

  /**
   * Replaces our static private key (as wireguard-go does when UAPI sets
   * `private_key`): the peer with the new public key, if any, is removed;
   * every other peer's sessions and handshake in flight end (its packets
   * wait for a new handshake) and its precomputed DH is redone.
   *
   * @returns Whether a peer with the new public key was removed.
   * @throws {RangeError} When the key is not 32 bytes.
   */
  setPrivateKey(privateKey: Uint8Array): boolean {
    const noise = new Noise(this.#backend, privateKey);
    if (!this.#keyless && sameKey(noise.publicKey, this.publicKey)) return false;
    this.#keyless = false;
    const removed = this.removePeer(noise.publicKey);
    this.#noise.privateKey.fill(0);
    this.#noise = noise;
    this.#checker = new CookieChecker(this.#backend, noise.publicKey, this.#random);
    for (const peer of this.#peers.values()) {
      this.#zeroKeys(peer);
      peer.noise.rekey(noise);
    }
    return removed;
  }

  /**
   * Clears our static private key (as wireguard-go does when UAPI sets an
   * all-zero `private_key`): every session and handshake in flight ends,
   * and until {@linkcode Device.setPrivateKey} no handshake is sent or
   * answered (counted as `noPrivateKey`); data waits in the peers' queues.
   */
  clearPrivateKey(): void {
    if (this.#keyless) return;
    this.#keyless = true;
    for (const peer of this.#peers.values()) this.#zeroKeys(peer);
  }

  /** False after {@linkcode Device.clearPrivateKey}, until a key is set. */
  get hasPrivateKey(): boolean {
    return !this.#keyless;
  }

  // ---- peers ----

  /**
   * Adds a peer.
   * @throws {RangeError} On a duplicate key, our own key, a key of the wrong
   * length, an invalid AllowedIPs entry or too many peers.
   */
  addPeer(config: PeerConfig): Peer {
    if (!(config.publicKey instanceof Uint8Array) || config.publicKey.length !== 32) {
      throw new RangeError("A peer's public key must be 32 bytes");
    }
    const key = keyString(config.publicKey);
    if (this.#peers.has(key)) throw new RangeError("A peer with this public key exists already");
    if (key === keyString(this.publicKey)) {
      throw new RangeError("A peer cannot have the device's own public key");
    }
    if (this.#peers.size >= this.#maxPeers) {
      throw new RangeError(`The device has its maximum of ${this.#maxPeers} peers`);
    }
    const peer = new PeerState(config, {
      noise: this.#noise,
      backend: this.#backend,
      random: this.#random,
      routes: this.#routes,
      queueLimit: this.#queuePerPeer,
    });
    this.#peers.set(key, peer);
    if (peer.endpoint !== undefined) peer.timers.startPersistentKeepalive(0);
    return peer;
  }

  /** Removes a peer, its routes, sessions and queue. Returns whether it was there. */
  removePeer(publicKey: Uint8Array): boolean {
    const key = keyString(publicKey);
    const peer = this.#peers.get(key);
    if (peer === undefined) return false;
    this.#peers.delete(key);
    this.#zeroKeys(peer);
    this.#flushQueue(peer);
    peer.timers.stop();
    this.#routes.removeValue(peer);
    peer.attached = false;
    return true;
  }

  /** The peer with `publicKey`, if any. */
  getPeer(publicKey: Uint8Array): Peer | undefined {
    return this.#peers.get(keyString(publicKey));
  }

  /** All peers. */
  peers(): IterableIterator<Peer> {
    return this.#peers.values();
  }

  /** A snapshot of the statistics. */
  stats(): DeviceStats {
    let queued = 0;
    for (const peer of this.#peers.values()) queued += peer.queue.length;
    return {
      ...this.#stats,
      drops: { ...this.#stats.drops },
      peers: this.#peers.size,
      indexTableSize: this.#indices.size,
      rateLimiterSize: this.#limiter.size,
      queuedPackets: queued,
      underLoad: this.#underLoadThreshold === 0 || this.#lastNow < this.#underLoadUntil,
      handshakesPending: this.#hsQueue.length - this.#hsHead,
      handshakeQueueDrops: this.#hsDrops,
    };
  }

  // ---- network input ----

  /** Handles a datagram from the network. Never throws for bad input: drops and counts it. */
  receive(datagram: Uint8Array, from: Endpoint, now: number): void {
    this.#lastNow = now;
    const type = messageType(datagram);
    if (this.#hsMax > 0 && handshakeLength(type) === datagram.length) {
      // Off the data path: poll() works through these with a budget.
      if (this.#hsQueue.length - this.#hsHead >= this.#hsMax) {
        this.#hsDrops++;
        return;
      }
      this.#hsQueue.push({
        bytes: datagram.slice(),
        from: { address: from.address, port: from.port },
      });
      return;
    }
    this.#dispatch(type, datagram, from, now);
  }

  #dispatch(type: number, datagram: Uint8Array, from: Endpoint, now: number): void {
    switch (type) {
      case MESSAGE_INITIATION:
        return this.#receiveInitiation(datagram, from, now);
      case MESSAGE_RESPONSE:
        return this.#receiveResponse(datagram, from, now);
      case MESSAGE_COOKIE_REPLY:
        return this.#receiveCookieReply(datagram, now);
      case MESSAGE_TRANSPORT:
        return this.#receiveTransport(datagram, from, now);
      default:
        this.#drop("malformed");
    }
  }

  /** MAC1, and under load MAC2 and the rate limit. False when the message must go no further. */
  #admitHandshake(
    bytes: Uint8Array,
    mac1Offset: number,
    sender: number,
    from: Endpoint,
    now: number,
  ): boolean {
    if (!this.#checker.checkMac1(bytes, mac1Offset)) {
      this.#drop("mac1");
      return false;
    }
    // Under load, or with the handshake queue over half full: cookies first.
    const backlog = this.#hsQueue.length - this.#hsHead > this.#hsMax >> 1 && this.#hsMax > 0;
    if (!this.#underLoad(now) && !backlog) return true;
    if (!this.#checker.checkMac2(bytes, mac1Offset + 16, from, now)) {
      this.#checker.createReply(bytes, mac1Offset, sender, from, now, this.#cookieBuffer);
      this.#drop("cookieRequired");
      this.#stats.cookieRepliesSent++;
      this.#sendDatagram(this.#cookieBuffer, from);
      return false;
    }
    if (!this.#limiter.allow(from.address, now)) {
      this.#drop("rateLimited");
      return false;
    }
    return true;
  }

  /** Counts a handshake message and tells whether the device is under load. */
  #underLoad(now: number): boolean {
    if (this.#underLoadThreshold === 0) return true;
    if (now - this.#loadWindowStart >= 1000) {
      this.#loadWindowStart = now;
      this.#loadCount = 0;
    }
    if (++this.#loadCount > this.#underLoadThreshold) this.#underLoadUntil = now + 1000;
    return now < this.#underLoadUntil;
  }

  #receiveInitiation(bytes: Uint8Array, from: Endpoint, now: number): void {
    const msg = InitiationMessage.parse(bytes);
    if (msg === null) return this.#drop("malformed");
    if (!this.#admitHandshake(bytes, InitiationMessage.MAC1_OFFSET, msg.sender, from, now)) return;
    if (this.#keyless) return this.#drop("noPrivateKey");
    const opening = this.#noise.openInitiation(msg);
    if (opening === null) return this.#drop("handshakeInvalid");
    const peer = this.#peers.get(keyString(opening.remoteStatic));
    if (peer === undefined) return this.#drop("unknownPeer");
    const consumed = this.#noise.finishInitiation(opening, peer.noise);
    if (consumed === null) return this.#drop("handshakeInvalid", peer);
    if (compareTimestamps(consumed.timestamp, peer.lastTimestamp) <= 0) {
      return this.#drop("replayedInitiation", peer);
    }
    if (now - peer.lastInitiationConsumed < INITIATION_MIN_INTERVAL) {
      return this.#drop("initiationFlood", peer);
    }
    const localIndex = this.#newIndex();
    const response = ResponseMessage.emit(this.#responseBuffer);
    const ephemeral = new Uint8Array(32);
    this.#random(ephemeral);
    const keys = this.#noise.createResponse(consumed, response, {
      localIndex,
      ephemeralPrivate: ephemeral,
    });
    ephemeral.fill(0);
    if (keys === null) return this.#drop("handshakeInvalid", peer);
    peer.lastTimestamp.set(consumed.timestamp);
    peer.lastInitiationConsumed = now;
    const keypair = new Keypair(keys, {
      localIndex,
      remoteIndex: consumed.remoteIndex,
      initiator: false,
      created: now,
    });
    // Responder: the new session waits in `next` until the initiator's first
    // data confirms it; an older unconfirmed one and `previous` go away.
    this.#discard(peer.next);
    this.#discard(peer.previous);
    peer.previous = null;
    peer.next = keypair;
    this.#indices.set(localIndex, { peer, keypair });
    this.#count(peer, "handshakesReceived");
    this.#roam(peer, from);
    peer.timers.anyAuthenticatedPacketReceived(now);
    peer.timers.anyAuthenticatedPacketTraversal(now);
    peer.timers.sessionDerived(now);
    peer.cookies.addMacs(this.#responseBuffer, ResponseMessage.MAC1_OFFSET, now);
    // Like wireguard-go, a response counts as a handshake sent: we do not
    // initiate ourselves for REKEY_TIMEOUT, giving the initiator time to confirm.
    peer.lastInitiationSent = now;
    this.#sendDatagram(this.#responseBuffer, from);
    peer.timers.anyAuthenticatedPacketSent(now);
  }

  #receiveResponse(bytes: Uint8Array, from: Endpoint, now: number): void {
    const msg = ResponseMessage.parse(bytes);
    if (msg === null) return this.#drop("malformed");
    if (!this.#admitHandshake(bytes, ResponseMessage.MAC1_OFFSET, msg.sender, from, now)) return;
    const entry = this.#indices.get(msg.receiver);
    if (entry === undefined || entry.keypair !== null) return this.#drop("unknownIndex");
    const peer = entry.peer;
    const state = peer.handshake;
    if (state === null || state.localIndex !== msg.receiver) {
      return this.#drop("unknownIndex", peer);
    }
    const keys = this.#noise.consumeResponse(state, msg);
    if (keys === null) return this.#drop("handshakeInvalid", peer);
    state.ephemeralPrivate.fill(0);
    peer.handshake = null;
    const keypair = new Keypair(keys, {
      localIndex: state.localIndex,
      remoteIndex: msg.sender,
      initiator: true,
      created: now,
    });
    this.#indices.set(keypair.localIndex, { peer, keypair });
    // Initiator: the new session is confirmed and becomes `current`.
    if (peer.next !== null) {
      this.#discard(peer.previous);
      this.#discard(peer.current);
      peer.previous = peer.next;
      peer.next = null;
    } else {
      this.#discard(peer.previous);
      peer.previous = peer.current;
    }
    peer.current = keypair;
    this.#roam(peer, from);
    peer.timers.sessionDerived(now);
    this.#handshakeComplete(peer, now);
    peer.timers.anyAuthenticatedPacketReceived(now);
    peer.timers.anyAuthenticatedPacketTraversal(now);
    // Send what waited for the session, or a keepalive so the responder
    // gets its key confirmation.
    if (!this.#flushQueueThrough(peer, now)) this.#sendKeepalive(peer, now);
  }

  #receiveCookieReply(bytes: Uint8Array, now: number): void {
    const msg = CookieReplyMessage.parse(bytes);
    if (msg === null) return this.#drop("malformed");
    const entry = this.#indices.get(msg.receiver);
    if (entry === undefined) return this.#drop("unknownIndex");
    const peer = entry.peer;
    if (!peer.cookies.consumeReply(msg, now)) return this.#drop("cookieInvalid", peer);
    this.#count(peer, "cookieRepliesReceived");
  }

  #receiveTransport(bytes: Uint8Array, from: Endpoint, now: number): void {
    const msg = TransportMessage.parse(bytes);
    if (msg === null) return this.#drop("malformed");
    const entry = this.#indices.get(msg.receiver);
    if (entry === undefined || entry.keypair === null) return this.#drop("unknownIndex");
    const { peer, keypair } = entry;
    if (now - keypair.created >= REJECT_AFTER_TIME) return this.#drop("expiredKeypair", peer);
    const counter = msg.counter;
    if (counter === Infinity) return this.#drop("counterTooLarge", peer);
    if (counter >= REJECT_AFTER_MESSAGES) return this.#drop("expiredKeypair", peer);
    if (!keypair.replay.check(counter)) return this.#drop("replay", peer);
    const ciphertext = msg.packet;
    const length = ciphertext.length - 16;
    if (this.#rxBuffer.length < length) this.#rxBuffer = new Uint8Array(grow(length));
    const plaintext = this.#backend.open(
      keypair.receiveKey,
      this.#nonceFor(counter),
      ciphertext,
      undefined,
      this.#rxBuffer.subarray(0, length),
    );
    if (plaintext === null) return this.#drop("dataInvalid", peer);
    if (!keypair.replay.update(counter)) return this.#drop("replay", peer);

    let confirmed = false;
    if (keypair === peer.next) {
      // Key confirmation (whitepaper §5.4.6): the responder's session is
      // used for sending only once the initiator has used it.
      this.#discard(peer.previous);
      peer.previous = peer.current;
      peer.current = keypair;
      peer.next = null;
      this.#handshakeComplete(peer, now);
      confirmed = true;
    }
    this.#roam(peer, from);
    peer.stats.rxPackets++;
    peer.stats.rxBytes += bytes.length;
    this.#stats.rxPackets++;
    this.#stats.rxBytes += bytes.length;
    peer.timers.anyAuthenticatedPacketReceived(now);
    peer.timers.anyAuthenticatedPacketTraversal(now);
    this.#keepFreshReceiving(peer, now);
    if (plaintext.length === 0) {
      this.#count(peer, "keepalivesReceived");
    } else {
      peer.timers.dataReceived(now);
      this.#deliverChecked(plaintext, peer);
    }
    if (confirmed) this.#flushQueueThrough(peer, now);
  }

  #deliverChecked(plaintext: Uint8Array, peer: PeerState): void {
    const length = ipPacketLength(plaintext);
    if (length < 0) return this.#drop("innerInvalid", peer);
    if (this.#routes.lookup(ipSource(plaintext)) !== peer) {
      return this.#drop("sourceNotAllowed", peer);
    }
    this.#deliverPacket(plaintext.subarray(0, length), peer);
  }

  // ---- outbound ----

  /**
   * Encrypts `packet` (an IPv4 or IPv6 packet) to the peer whose AllowedIPs
   * hold its destination. Returns `false` (counted) when the packet is not IP
   * or no peer routes it. Without a session the packet is queued and a
   * handshake started.
   */
  send(packet: Uint8Array, now: number): boolean {
    if (ipPacketLength(packet) < 0) {
      this.#drop("outboundInvalid");
      return false;
    }
    const peer = this.#routes.lookup(ipDestination(packet));
    if (peer === undefined) {
      this.#drop("noRoute");
      return false;
    }
    this.#sendOrQueue(peer, packet, now);
    return true;
  }

  /**
   * Encrypts `packet` to `peer` whatever its destination (an empty packet is a
   * keepalive). Without a session the packet is queued and a handshake started.
   * @throws {RangeError} When `peer` is not on this device.
   */
  sendTo(peer: Peer, packet: Uint8Array, now: number): void {
    this.#sendOrQueue(this.#stateOf(peer), packet, now);
  }

  /**
   * Starts a handshake with `peer` as initiator. Does nothing when an
   * initiation was sent to it less than REKEY_TIMEOUT (5 s) ago.
   * @throws {RangeError} When `peer` is not on this device.
   */
  initiate(peer: Peer, now: number): void {
    this.#initiate(this.#stateOf(peer), now, false);
  }

  /** The state of `peer`, one of ours. */
  #stateOf(peer: Peer): PeerState {
    const state = this.#peers.get(keyString(peer.publicKey));
    if (state === undefined || state !== peer) {
      throw new RangeError("The peer is not on this device");
    }
    return state;
  }

  #usableKeypair(peer: PeerState, now: number): Keypair | null {
    const keypair = peer.current;
    if (
      keypair === null || now - keypair.created >= REJECT_AFTER_TIME ||
      keypair.sendCounter > MAX_SAFE_COUNTER || keypair.sendCounter >= REJECT_AFTER_MESSAGES
    ) return null;
    return keypair;
  }

  #sendOrQueue(peer: PeerState, packet: Uint8Array, now: number): void {
    const keypair = this.#usableKeypair(peer, now);
    if (keypair === null || peer.queue.length > 0) {
      if (peer.enqueue(packet)) this.#drop("queueOverflow", peer);
      if (keypair === null) this.#initiate(peer, now, false);
      else this.#flushQueueThrough(peer, now);
      return;
    }
    this.#encrypt(peer, keypair, packet, now);
    this.#keepFreshSending(peer, keypair, now);
  }

  /** Sends the queue if a session is usable. Returns whether anything was sent. */
  #flushQueueThrough(peer: PeerState, now: number): boolean {
    const keypair = this.#usableKeypair(peer, now);
    if (keypair === null || peer.queue.length === 0) return false;
    const queue = peer.queue.splice(0);
    for (const packet of queue) this.#encrypt(peer, keypair, packet, now);
    this.#keepFreshSending(peer, keypair, now);
    return true;
  }

  #sendKeepalive(peer: PeerState, now: number): void {
    const keypair = this.#usableKeypair(peer, now);
    if (keypair === null) {
      if (peer.queue.length === 0) this.#initiate(peer, now, false);
      return;
    }
    this.#encrypt(peer, keypair, EMPTY, now);
    this.#count(peer, "keepalivesSent");
  }

  /** Encrypts one packet into the transmit buffer and sends it (whitepaper §5.4.6). */
  #encrypt(peer: PeerState, keypair: Keypair, packet: Uint8Array, now: number): void {
    const to = peer.endpoint;
    if (to === undefined) return this.#drop("noEndpoint", peer);
    const length = packet.length;
    const padded = Math.max(length, Math.min((length + 15) & ~15, this.#mtu));
    const total = TRANSPORT_HEADER_LENGTH + padded + 16;
    if (this.#txBuffer.length < total) this.#txBuffer = new Uint8Array(grow(total));
    const buffer = this.#txBuffer;
    const counter = keypair.sendCounter++;
    TransportMessage.emit(buffer, keypair.remoteIndex, counter);
    buffer.set(packet, TRANSPORT_HEADER_LENGTH);
    buffer.fill(0, TRANSPORT_HEADER_LENGTH + length, TRANSPORT_HEADER_LENGTH + padded);
    this.#backend.seal(
      keypair.sendKey,
      this.#nonceFor(counter),
      buffer.subarray(TRANSPORT_HEADER_LENGTH, TRANSPORT_HEADER_LENGTH + padded),
      undefined,
      buffer.subarray(TRANSPORT_HEADER_LENGTH, total),
    );
    peer.stats.txPackets++;
    peer.stats.txBytes += total;
    this.#stats.txPackets++;
    this.#stats.txBytes += total;
    this.#sendDatagram(buffer.subarray(0, total), to);
    peer.timers.anyAuthenticatedPacketSent(now);
    peer.timers.anyAuthenticatedPacketTraversal(now);
    if (length > 0) peer.timers.dataSent(now);
  }

  /**
   * Whitepaper §6.2: a heavily used session is rekeyed whoever initiated it;
   * an old one only by its initiator (the responder would race it).
   */
  #keepFreshSending(peer: PeerState, keypair: Keypair, now: number): void {
    if (
      keypair.sendCounter >= REKEY_AFTER_SAFE_MESSAGES ||
      (keypair.initiator && now - keypair.created >= REKEY_AFTER_TIME)
    ) this.#initiate(peer, now, false);
  }

  /** Whitepaper §6.2: the initiator rekeys on receiving with a session near its end. */
  #keepFreshReceiving(peer: PeerState, now: number): void {
    const keypair = peer.current;
    if (
      keypair !== null && keypair.initiator && !peer.sentLastMinuteHandshake &&
      now - keypair.created >= REKEY_ON_RECEIVE_AGE
    ) {
      peer.sentLastMinuteHandshake = true;
      this.#initiate(peer, now, false);
    }
  }

  /** Sends an initiation (whitepaper §5.4.2), at most one per REKEY_TIMEOUT. */
  #initiate(peer: PeerState, now: number, retry: boolean): void {
    if (!retry) peer.timers.handshakeAttempts = 0;
    if (this.#keyless) return this.#drop("noPrivateKey", peer);
    if (now - peer.lastInitiationSent < REKEY_TIMEOUT) return;
    const to = peer.endpoint;
    if (to === undefined) return this.#drop("noEndpoint", peer);
    this.#abandonHandshake(peer);
    const localIndex = this.#newIndex();
    const ephemeral = new Uint8Array(32);
    this.#random(ephemeral);
    const msg = InitiationMessage.emit(this.#handshakeBuffer);
    const state = this.#noise.createInitiation(peer.noise, msg, {
      localIndex,
      ephemeralPrivate: ephemeral,
      timestamp: tai64n(this.#wallClock()),
    });
    ephemeral.fill(0);
    if (state === null) return this.#drop("handshakeInvalid", peer);
    peer.handshake = state;
    this.#indices.set(localIndex, { peer, keypair: null });
    peer.cookies.addMacs(this.#handshakeBuffer, InitiationMessage.MAC1_OFFSET, now);
    peer.lastInitiationSent = now;
    this.#count(peer, "handshakesSent");
    this.#sendDatagram(this.#handshakeBuffer, to);
    peer.timers.handshakeInitiated(now);
    peer.timers.anyAuthenticatedPacketTraversal(now);
    peer.timers.anyAuthenticatedPacketSent(now);
  }

  // ---- timers ----

  /** Runs the timers that are due at `now`. */
  poll(now: number): void {
    this.#lastNow = now;
    this.#workHandshakes(now);
    for (const peer of this.#peers.values()) {
      if (peer.timers.nextDeadline() > now) continue;
      const actions = peer.timers.due(now);
      if (actions & TimerAction.ZeroKeys) {
        this.#zeroKeys(peer);
        this.#emit({ type: "session-expired", peer });
      }
      if (actions & TimerAction.GiveUpHandshake) {
        this.#abandonHandshake(peer);
        this.#flushQueue(peer);
        this.#emit({ type: "handshake-failed", peer });
      }
      if (actions & TimerAction.RetransmitHandshake) this.#initiate(peer, now, true);
      if (actions & TimerAction.NewHandshake) this.#initiate(peer, now, false);
      if (actions & (TimerAction.SendKeepalive | TimerAction.PersistentKeepalive)) {
        this.#sendKeepalive(peer, now);
      }
    }
    this.#limiter.sweep(now);
  }

  /** When {@linkcode Device.poll} must next be called (monotonic ms); `Infinity` when never. */
  nextDeadline(): number {
    if (this.#hsHead < this.#hsQueue.length) return -Infinity;
    let next = Infinity;
    for (const peer of this.#peers.values()) {
      const deadline = peer.timers.nextDeadline();
      if (deadline < next) next = deadline;
    }
    return next;
  }

  /** Works on at most the budget of queued handshake messages, oldest first. */
  #workHandshakes(now: number): void {
    const end = Math.min(this.#hsQueue.length, this.#hsHead + this.#hsBudget);
    while (this.#hsHead < end) {
      const { bytes, from } = this.#hsQueue[this.#hsHead++];
      this.#dispatch(messageType(bytes), bytes, from, now);
    }
    if (this.#hsHead === this.#hsQueue.length) {
      this.#hsQueue = [];
      this.#hsHead = 0;
    } else if (this.#hsHead > 1024) {
      this.#hsQueue = this.#hsQueue.slice(this.#hsHead);
      this.#hsHead = 0;
    }
  }

  // ---- bookkeeping ----

  #handshakeComplete(peer: PeerState, now: number): void {
    peer.timers.handshakeComplete(now);
    peer.sentLastMinuteHandshake = false;
    peer.lastHandshake = this.#wallClock();
    this.#count(peer, "handshakesCompleted");
    this.#emit({ type: "handshake", peer });
  }

  #roam(peer: PeerState, from: Endpoint): void {
    if (sameEndpoint(peer.endpoint, from)) return;
    const previous = peer.endpoint;
    peer.endpoint = { address: from.address, port: from.port };
    this.#emit({ type: "roam", peer, from: previous, to: peer.endpoint });
  }

  #abandonHandshake(peer: PeerState): void {
    const state = peer.handshake;
    if (state === null) return;
    state.ephemeralPrivate.fill(0);
    this.#indices.delete(state.localIndex);
    peer.handshake = null;
  }

  #discard(keypair: Keypair | null): void {
    if (keypair === null) return;
    this.#indices.delete(keypair.localIndex);
    keypair.zero();
  }

  #zeroKeys(peer: PeerState): void {
    this.#discard(peer.current);
    this.#discard(peer.previous);
    this.#discard(peer.next);
    peer.current = peer.previous = peer.next = null;
    this.#abandonHandshake(peer);
  }

  #flushQueue(peer: PeerState): void {
    const dropped = peer.queue.length;
    if (dropped === 0) return;
    peer.queue.length = 0;
    peer.stats.drops.queueFlushed += dropped;
    this.#stats.drops.queueFlushed += dropped;
  }

  #newIndex(): number {
    const bytes = this.#indexBytes;
    for (;;) {
      this.#random(bytes);
      const index = (bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (bytes[3] << 24)) >>> 0;
      if (!this.#indices.has(index)) return index;
    }
  }

  #nonceFor(counter: number): Uint8Array {
    const nonce = this.#nonce;
    const low = counter % 0x100000000;
    const high = (counter - low) / 0x100000000;
    nonce[4] = low;
    nonce[5] = low >>> 8;
    nonce[6] = low >>> 16;
    nonce[7] = low >>> 24;
    nonce[8] = high;
    nonce[9] = high >>> 8;
    nonce[10] = high >>> 16;
    nonce[11] = high >>> 24;
    return nonce;
  }

  #drop(reason: DropReason, peer?: PeerState): void {
    this.#stats.drops[reason]++;
    if (peer !== undefined) peer.stats.drops[reason]++;
  }

  #count(
    peer: PeerState,
    field:
      | "handshakesSent"
      | "handshakesReceived"
      | "handshakesCompleted"
      | "cookieRepliesReceived"
      | "keepalivesSent"
      | "keepalivesReceived",
  ): void {
    this.#stats[field]++;
    peer.stats[field]++;
  }

  #emit(event: DeviceEvent): void {
    this.#onEvent?.(event);
  }
}

function grow(length: number): number {
  let size = 2048;
  while (size < length) size *= 2;
  return size;
}

function nonNegative(value: number, name: string): number {
  if (!(value >= 0) || !Number.isInteger(value)) {
    throw new RangeError(`limits.${name} must be a non-negative integer, not ${value}`);
  }
  return value;
}
