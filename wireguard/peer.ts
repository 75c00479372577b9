/**
 * A WireGuard peer as the device keeps it: its static key and preshared key,
 * endpoint, the three keypair slots (`current`, `previous`, `next`), the
 * initiator handshake in flight, the TAI64N of the last accepted initiation,
 * its timers, cookie state, a bounded queue of packets waiting for a session,
 * and its statistics.
 *
 * Peers are created by `Device.addPeer`; the device drives all state changes.
 * Everything marked "device use" is the device's bookkeeping and may change.
 *
 * @module
 */

import { bytesEqual } from "./_util.ts";
import type { CryptoBackend } from "./crypto/backend.ts";
import type { AllowedIps, Cidr } from "./allowed_ips.ts";
import { parseCidr } from "./allowed_ips.ts";
import { CookieGenerator } from "./cookie.ts";
import { type InitiatorState, type Noise, NoiseRemote } from "./noise.ts";
import { ReplayWindow } from "./replay.ts";
import { PeerTimers } from "./timers.ts";
import { checkEndpoint, type Endpoint } from "./endpoint.ts";

export type { Endpoint } from "./endpoint.ts";

/** The configuration of a peer (as in a wg-quick `[Peer]` section). */
export interface PeerConfig {
  /** The peer's static public key (32 bytes). */
  publicKey: Uint8Array;
  /** Optional preshared key (32 bytes). */
  presharedKey?: Uint8Array;
  /** Prefixes the peer may use as inner source and that route to it. */
  allowedIps?: (Cidr | string)[];
  /** Where to send to until the peer roams. */
  endpoint?: Endpoint;
  /** Persistent keepalive interval in seconds, 0 (default) for off. */
  persistentKeepalive?: number;
}

/** The counters of dropped input and output, by reason. */
export interface DropCounters {
  /** Wrong length, unknown type or non-zero reserved bytes. */
  malformed: number;
  /** Handshake message with a bad MAC1. */
  mac1: number;
  /** Under load and MAC2 missing or stale: answered with a cookie reply instead. */
  cookieRequired: number;
  /** Handshake message over the per-source rate under load. */
  rateLimited: number;
  /** Initiation or response that did not authenticate (wrong key, PSK, low-order point). */
  handshakeInvalid: number;
  /** Initiation from a static key that is not a peer. */
  unknownPeer: number;
  /** Handshake not sent or answered: the device's private key was cleared. */
  noPrivateKey: number;
  /** Initiation whose TAI64N is not newer than the last accepted one of the peer. */
  replayedInitiation: number;
  /** Initiation less than 1/50 s after the previous accepted one of the peer. */
  initiationFlood: number;
  /** Response, cookie reply or data for a receiver index we do not have (in that role). */
  unknownIndex: number;
  /** Cookie reply that did not decrypt. */
  cookieInvalid: number;
  /** Data on a session older than REJECT_AFTER_TIME or past its message limit. */
  expiredKeypair: number;
  /** Data with a counter of 2^53 or more (not exact in a JavaScript number). */
  counterTooLarge: number;
  /** Data with a counter already seen or too old for the replay window. */
  replay: number;
  /** Data that did not authenticate. */
  dataInvalid: number;
  /** Decrypted data that is not a well-formed IPv4 or IPv6 packet. */
  innerInvalid: number;
  /** Decrypted packet whose source is not in the sending peer's AllowedIPs. */
  sourceNotAllowed: number;
  /** Outbound packet with no peer for its destination. */
  noRoute: number;
  /** Outbound packet that is not a well-formed IPv4 or IPv6 packet. */
  outboundInvalid: number;
  /** Queued packet dropped because the queue was full (oldest first). */
  queueOverflow: number;
  /** Queued packet dropped because the handshake gave up or the peer was removed. */
  queueFlushed: number;
  /** Packet that could not be sent because the peer has no endpoint. */
  noEndpoint: number;
}

/** Statistics of a peer (and, summed over all, of a device). Bytes are whole datagrams. */
export interface PeerStats {
  /** Initiations sent. */
  handshakesSent: number;
  /** Authenticated initiations received and answered. */
  handshakesReceived: number;
  /** Handshakes completed (response consumed, or responder's session confirmed). */
  handshakesCompleted: number;
  /** Cookie replies sent. */
  cookieRepliesSent: number;
  /** Cookie replies accepted. */
  cookieRepliesReceived: number;
  /** Transport datagrams received and authenticated (incl. keepalives). */
  rxPackets: number;
  /** Bytes of those datagrams. */
  rxBytes: number;
  /** Transport datagrams sent (incl. keepalives). */
  txPackets: number;
  /** Bytes of those datagrams. */
  txBytes: number;
  /** Keepalives sent. */
  keepalivesSent: number;
  /** Keepalives received. */
  keepalivesReceived: number;
  /** Drops by reason. */
  drops: DropCounters;
}

/** Fresh zeroed statistics. */
export function createStats(): PeerStats {
  return {
    handshakesSent: 0,
    handshakesReceived: 0,
    handshakesCompleted: 0,
    cookieRepliesSent: 0,
    cookieRepliesReceived: 0,
    rxPackets: 0,
    rxBytes: 0,
    txPackets: 0,
    txBytes: 0,
    keepalivesSent: 0,
    keepalivesReceived: 0,
    drops: {
      malformed: 0,
      mac1: 0,
      cookieRequired: 0,
      rateLimited: 0,
      handshakeInvalid: 0,
      noPrivateKey: 0,
      unknownPeer: 0,
      replayedInitiation: 0,
      initiationFlood: 0,
      unknownIndex: 0,
      cookieInvalid: 0,
      expiredKeypair: 0,
      counterTooLarge: 0,
      replay: 0,
      dataInvalid: 0,
      innerInvalid: 0,
      sourceNotAllowed: 0,
      noRoute: 0,
      outboundInvalid: 0,
      queueOverflow: 0,
      queueFlushed: 0,
      noEndpoint: 0,
    },
  };
}

/** The name of a drop counter. */
export type DropReason = keyof DropCounters;

/** Transport keys and counters of one session (whitepaper §5.4.6). */
export class Keypair {
  /** Key for sending. */
  readonly sendKey: Uint8Array;
  /** Key for receiving. */
  readonly receiveKey: Uint8Array;
  /** Our index: the peer puts it in `receiver`. */
  readonly localIndex: number;
  /** The peer's index: we put it in `receiver`. */
  readonly remoteIndex: number;
  /** Whether we were the initiator of the handshake. */
  readonly initiator: boolean;
  /** Monotonic time of derivation. */
  readonly created: number;
  /** The next counter to send. */
  sendCounter: number = 0;
  /** The receive replay window. */
  readonly replay: ReplayWindow = new ReplayWindow();

  /** A session from a finished handshake. */
  constructor(
    keys: { send: Uint8Array; receive: Uint8Array },
    init: { localIndex: number; remoteIndex: number; initiator: boolean; created: number },
  ) {
    this.sendKey = keys.send;
    this.receiveKey = keys.receive;
    this.localIndex = init.localIndex;
    this.remoteIndex = init.remoteIndex;
    this.initiator = init.initiator;
    this.created = init.created;
  }

  /** Overwrites the keys with zeros. */
  zero(): void {
    this.sendKey.fill(0);
    this.receiveKey.fill(0);
  }
}

/** Default bound of a peer's queue of packets waiting for a session. */
export const DEFAULT_QUEUE_LIMIT = 1024;

/**
 * A peer as a device's user sees it: its key, endpoint, counters and
 * configuration. Created by `Device.addPeer`; the device keeps the protocol
 * state behind it.
 */
export interface Peer {
  /** The peer's static public key. */
  readonly publicKey: Uint8Array;
  /** Statistics of this peer. */
  readonly stats: PeerStats;
  /** Where we send to: the configured endpoint, then the source of the latest authenticated packet. */
  readonly endpoint: Endpoint | undefined;
  /** Wall-clock ms of the last completed handshake, 0 when none. */
  readonly lastHandshake: number;
  /** The prefixes routed to this peer. */
  readonly allowedIps: Cidr[];
  /** Persistent keepalive interval in seconds, 0 when off. */
  readonly persistentKeepalive: number;
  /** The preshared key (a copy), `undefined` when none. */
  readonly presharedKey: Uint8Array | undefined;
  /**
   * Changes the configuration: the preshared key, endpoint and persistent
   * keepalive when given; `allowedIps` when given replaces all prefixes. The
   * public key cannot change (remove and add the peer instead).
   * @throws {RangeError} When `publicKey` is given and differs, or a value is invalid.
   */
  update(config: Partial<PeerConfig>): void;
}

/** A peer with the device's protocol state (internal: `mod.ts` exports only {@linkcode Peer}). */
export class PeerState implements Peer {
  /** The peer's static public key. */
  readonly publicKey: Uint8Array;
  /** Statistics of this peer. */
  readonly stats: PeerStats = createStats();
  /** Where we send to: the configured endpoint, then the source of the latest authenticated packet. */
  endpoint: Endpoint | undefined;
  /** Wall-clock ms of the last completed handshake, 0 when none. */
  lastHandshake: number = 0;

  /** Device use: precomputed Noise values of the peer. */
  readonly noise: NoiseRemote;
  /** Device use: MAC1/MAC2 for our messages to this peer. */
  readonly cookies: CookieGenerator;
  /** Device use: the peer's timers. */
  readonly timers: PeerTimers;
  /** Device use: the confirmed session we send with. */
  current: Keypair | null = null;
  /** Device use: the session before `current`, still accepted for receiving. */
  previous: Keypair | null = null;
  /** Device use: the responder's unconfirmed session, promoted on its first data. */
  next: Keypair | null = null;
  /** Device use: our initiation in flight. */
  handshake: InitiatorState | null = null;
  /** Device use: when we last sent an initiation or a response (monotonic ms). */
  lastInitiationSent: number = -Infinity;
  /** Device use: when we last accepted an initiation (monotonic ms). */
  lastInitiationConsumed: number = -Infinity;
  /** Device use: the greatest TAI64N accepted from this peer. */
  readonly lastTimestamp: Uint8Array = new Uint8Array(12);
  /** Device use: a handshake was started for a session near REJECT_AFTER_TIME. */
  sentLastMinuteHandshake: boolean = false;
  /** Device use: packets waiting for a session, oldest first. */
  readonly queue: Uint8Array[] = [];
  /** Device use: false once removed from its device. */
  attached: boolean = true;

  readonly #routes: AllowedIps<PeerState>;
  readonly #queueLimit: number;

  /**
   * Device use (call `Device.addPeer` instead).
   * @throws {RangeError} On keys of the wrong length or an invalid keepalive interval.
   * @throws {RangeError} On an unparsable AllowedIPs entry.
   */
  constructor(
    config: PeerConfig,
    deps: {
      noise: Noise;
      backend: CryptoBackend;
      random: (bytes: Uint8Array) => void;
      routes: AllowedIps<PeerState>;
      queueLimit?: number;
    },
  ) {
    this.noise = new NoiseRemote(deps.noise, config.publicKey, config.presharedKey);
    this.publicKey = this.noise.publicKey;
    this.cookies = new CookieGenerator(deps.backend, this.publicKey);
    this.timers = new PeerTimers(deps.random, config.persistentKeepalive ?? 0);
    this.endpoint = config.endpoint === undefined ? undefined : checkEndpoint(config.endpoint);
    this.#routes = deps.routes;
    this.#queueLimit = deps.queueLimit ?? DEFAULT_QUEUE_LIMIT;
    for (const entry of config.allowedIps ?? []) this.#routes.insert(toCidr(entry), this);
  }

  /** The prefixes routed to this peer. */
  get allowedIps(): Cidr[] {
    return this.#routes.entriesOf(this);
  }

  /** The preshared key (a copy), `undefined` when none. */
  get presharedKey(): Uint8Array | undefined {
    const key = this.noise.presharedKey;
    return key.some((b) => b !== 0) ? key.slice() : undefined;
  }

  /** Sets (or clears with `undefined`) the preshared key; applies from the next handshake. */
  set presharedKey(key: Uint8Array | undefined) {
    if (key !== undefined && key.length !== 32) {
      throw new RangeError(`A preshared key has 32 bytes, not ${key.length}`);
    }
    this.noise.presharedKey = key ? key.slice() : new Uint8Array(32);
  }

  /** Persistent keepalive interval in seconds, 0 when off. */
  get persistentKeepalive(): number {
    return this.timers.persistentKeepalive;
  }

  /**
   * Changes the configuration: the preshared key, endpoint and persistent
   * keepalive when given; `allowedIps` when given replaces all prefixes. The
   * public key cannot change (remove and add the peer instead).
   * @throws {RangeError} When `publicKey` is given and differs, or a value is invalid.
   */
  update(config: Partial<PeerConfig>): void {
    if (config.publicKey !== undefined && !bytesEqual(config.publicKey, this.publicKey)) {
      throw new RangeError("A peer's public key cannot change; remove and add the peer instead");
    }
    const cidrs = config.allowedIps?.map(toCidr);
    const endpoint = config.endpoint === undefined ? undefined : checkEndpoint(config.endpoint);
    if ("presharedKey" in config) this.presharedKey = config.presharedKey;
    if (endpoint !== undefined) this.endpoint = endpoint;
    if (config.persistentKeepalive !== undefined) {
      this.timers.persistentKeepalive = config.persistentKeepalive;
      // Like wireguard-go, a newly set interval sends a keepalive right away.
      if (this.endpoint !== undefined && this.attached) this.timers.startPersistentKeepalive(0);
    }
    if (cidrs !== undefined && this.attached) {
      this.#routes.removeValue(this);
      for (const cidr of cidrs) this.#routes.insert(cidr, this);
    }
  }

  /**
   * Device use: queues a copy of `packet` for when a session exists. When the
   * queue is full the oldest packet is dropped; returns whether one was.
   */
  enqueue(packet: Uint8Array): boolean {
    this.queue.push(packet.slice());
    if (this.queue.length > this.#queueLimit) {
      this.queue.shift();
      return true;
    }
    return false;
  }
}

function toCidr(entry: Cidr | string): Cidr {
  return typeof entry === "string" ? parseCidr(entry) : entry;
}
