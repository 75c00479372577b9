/**
 * The protocol's timers and limits (whitepaper §6) as a sans-I/O state
 * machine per peer: the device reports events (`dataSent`, `handshakeInitiated`,
 * …) with the current time, asks {@linkcode PeerTimers.due} which actions are
 * due, and performs them. Deadlines are absolute monotonic milliseconds;
 * `Infinity` means not scheduled. The event names and rules follow
 * wireguard-go's `timers.go`, which implements §6 of the whitepaper.
 *
 * Counters are JavaScript numbers: exact up to 2^53. {@linkcode REKEY_AFTER_MESSAGES}
 * (2^60) and {@linkcode REJECT_AFTER_MESSAGES} (2^64 − 2^13 − 1) are kept as
 * the (rounded) numbers of the whitepaper, but a sender stops at
 * {@linkcode MAX_SAFE_COUNTER} (2^53 − 1) and the receiver drops and counts
 * any packet whose counter is 2^53 or more. At 10^7 packets per second that
 * bound is reached after 28 years, long after the 120 s rekey.
 *
 * @module
 */

/** Initiator rekeys a session this old when sending (§6.1): 120 s. */
export const REKEY_AFTER_TIME = 120_000;
/** A session this old is never used again (§6.1): 180 s. */
export const REJECT_AFTER_TIME = 180_000;
/** Give up retransmitting a handshake after this long (§6.4): 90 s. */
export const REKEY_ATTEMPT_TIME = 90_000;
/** Retransmit an unanswered initiation after this long, plus jitter (§6.4): 5 s. */
export const REKEY_TIMEOUT = 5_000;
/** The jitter added to {@linkcode REKEY_TIMEOUT} is drawn uniformly from 0 to this many ms inclusive. */
export const REKEY_TIMEOUT_JITTER_MAX = 333;
/** Send a keepalive this long after receiving data without sending any (§6.5): 10 s. */
export const KEEPALIVE_TIMEOUT = 10_000;
/** Initiator rekeys after this many messages (§6.1): 2^60. */
export const REKEY_AFTER_MESSAGES = 2 ** 60;
/**
 * The rekey-after-messages threshold we apply (either role): 2^53 − 2^49. A
 * sender stops at {@linkcode MAX_SAFE_COUNTER}, long before the whitepaper's
 * {@linkcode REKEY_AFTER_MESSAGES}, so we rekey with the same 1/16 headroom
 * below our own limit that 2^60 leaves below 2^64.
 */
export const REKEY_AFTER_SAFE_MESSAGES = 2 ** 53 - 2 ** 49;
/** A session is never used for more messages than this (§6.1): 2^64 − 2^13 − 1 (rounded as a number). */
export const REJECT_AFTER_MESSAGES = 2 ** 64 - 2 ** 13 - 1;
/** The largest counter we send or accept: 2^53 − 1 (see the module doc). */
export const MAX_SAFE_COUNTER: number = Number.MAX_SAFE_INTEGER;
/** Keys are zeroed after this long without a new handshake (§6.3): 3 × REJECT_AFTER_TIME. */
export const ZERO_KEYS_AFTER = 3 * REJECT_AFTER_TIME;
/** Retransmissions of one handshake attempt: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT. */
export const MAX_TIMER_HANDSHAKES = REKEY_ATTEMPT_TIME / REKEY_TIMEOUT;
/** At most one initiation per peer is accepted per this many ms (wireguard-go's 1/50 s). */
export const INITIATION_MIN_INTERVAL = 1000 / 50;
/**
 * The initiator starts a new handshake upon receiving data on a session this
 * old (§6.2): REJECT_AFTER_TIME − KEEPALIVE_TIMEOUT − REKEY_TIMEOUT.
 */
export const REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT;

/** Bit flags of the actions {@linkcode PeerTimers.due} reports. */
export const TimerAction: {
  readonly RetransmitHandshake: 1;
  readonly SendKeepalive: 2;
  readonly NewHandshake: 4;
  readonly ZeroKeys: 8;
  readonly PersistentKeepalive: 16;
  readonly GiveUpHandshake: 32;
} = {
  /** No response to our initiation: send a new one (a retry). */
  RetransmitHandshake: 1,
  /** Data was received but nothing sent for KEEPALIVE_TIMEOUT: send a keepalive. */
  SendKeepalive: 2,
  /** Data was sent but nothing received for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: start a new handshake. */
  NewHandshake: 4,
  /** No new handshake for 3 × REJECT_AFTER_TIME: zero all keys and handshake state. */
  ZeroKeys: 8,
  /** The persistent keepalive interval passed without traffic: send a keepalive. */
  PersistentKeepalive: 16,
  /** The handshake was retried MAX_TIMER_HANDSHAKES times: give up, drop queued packets. */
  GiveUpHandshake: 32,
} as const;

/** The timers of one peer. */
export class PeerTimers {
  /** When to retransmit the initiation. */
  retransmitAt: number = Infinity;
  /** When to send a keepalive for received data. */
  keepaliveAt: number = Infinity;
  /** When to start a new handshake because nothing came back. */
  newHandshakeAt: number = Infinity;
  /** When to zero the keys. */
  zeroKeysAt: number = Infinity;
  /** When to send a persistent keepalive. */
  persistentKeepaliveAt: number = Infinity;
  /** Retransmissions of the current handshake attempt so far. */
  handshakeAttempts: number = 0;
  #needAnotherKeepalive = false;
  #persistentInterval = 0;
  readonly #random: (bytes: Uint8Array) => void;
  readonly #jitterBytes = new Uint8Array(2);

  /** `random` supplies the jitter. */
  constructor(random: (bytes: Uint8Array) => void, persistentKeepalive = 0) {
    this.#random = random;
    this.persistentKeepalive = persistentKeepalive;
  }

  /** Persistent keepalive interval in seconds, 0 when off. */
  get persistentKeepalive(): number {
    return this.#persistentInterval / 1000;
  }
  /** @throws {RangeError} When not an integer from 0 to 65535. */
  set persistentKeepalive(seconds: number) {
    if (!Number.isInteger(seconds) || seconds < 0 || seconds > 65535) {
      throw new RangeError(
        `A persistent keepalive is 0 to 65535 seconds, not ${seconds}`,
      );
    }
    this.#persistentInterval = seconds * 1000;
    if (seconds === 0) this.persistentKeepaliveAt = Infinity;
  }

  /** A jitter from 0 to 333 ms. */
  jitter(): number {
    this.#random(this.#jitterBytes);
    return ((this.#jitterBytes[0] << 8) | this.#jitterBytes[1]) %
      (REKEY_TIMEOUT_JITTER_MAX + 1);
  }

  /** The earliest deadline, `Infinity` when none. */
  nextDeadline(): number {
    return Math.min(
      this.retransmitAt,
      this.keepaliveAt,
      this.newHandshakeAt,
      this.zeroKeysAt,
      this.persistentKeepaliveAt,
    );
  }

  /** A data packet (not a keepalive) was sent. */
  dataSent(now: number): void {
    if (this.newHandshakeAt === Infinity) {
      this.newHandshakeAt = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + this.jitter();
    }
  }

  /** A data packet (not a keepalive) was received. */
  dataReceived(now: number): void {
    if (this.keepaliveAt === Infinity) this.keepaliveAt = now + KEEPALIVE_TIMEOUT;
    else this.#needAnotherKeepalive = true;
  }

  /** Any authenticated packet (data, keepalive, handshake) was sent. */
  anyAuthenticatedPacketSent(_now: number): void {
    this.keepaliveAt = Infinity;
  }

  /** Any authenticated packet was received. */
  anyAuthenticatedPacketReceived(_now: number): void {
    this.newHandshakeAt = Infinity;
  }

  /** Any authenticated packet was sent or received: push the persistent keepalive back. */
  anyAuthenticatedPacketTraversal(now: number): void {
    if (this.#persistentInterval > 0) {
      this.persistentKeepaliveAt = now + this.#persistentInterval;
    }
  }

  /** An initiation was sent. */
  handshakeInitiated(now: number): void {
    this.retransmitAt = now + REKEY_TIMEOUT + this.jitter();
  }

  /** A handshake completed (response consumed, or first data on the responder's new session). */
  handshakeComplete(_now: number): void {
    this.retransmitAt = Infinity;
    this.handshakeAttempts = 0;
  }

  /** New transport keys were derived. */
  sessionDerived(now: number): void {
    this.zeroKeysAt = now + ZERO_KEYS_AFTER;
  }

  /** Schedules a persistent keepalive right away (when the peer comes up with an interval). */
  startPersistentKeepalive(now: number): void {
    if (this.#persistentInterval > 0) this.persistentKeepaliveAt = now;
  }

  /** Stops every timer (peer removed or keys zeroed). */
  stop(): void {
    this.retransmitAt = Infinity;
    this.keepaliveAt = Infinity;
    this.newHandshakeAt = Infinity;
    this.zeroKeysAt = Infinity;
    this.persistentKeepaliveAt = Infinity;
    this.handshakeAttempts = 0;
    this.#needAnotherKeepalive = false;
  }

  /**
   * The actions due at `now` as {@linkcode TimerAction} flags. Fired timers are
   * cleared or rescheduled; the device then performs the actions (and reports
   * the events they cause).
   */
  due(now: number): number {
    let actions = 0;
    if (this.retransmitAt <= now) {
      this.retransmitAt = Infinity;
      if (this.handshakeAttempts >= MAX_TIMER_HANDSHAKES) {
        actions |= TimerAction.GiveUpHandshake;
        this.handshakeAttempts = 0;
        this.keepaliveAt = Infinity;
        // Unlike wireguard-go, no key zeroing is armed here: the device
        // discards the abandoned handshake at once, and a session's keys
        // are zeroed by the timer armed when they were derived.
      } else {
        this.handshakeAttempts++;
        actions |= TimerAction.RetransmitHandshake;
      }
    }
    if (this.keepaliveAt <= now) {
      this.keepaliveAt = Infinity;
      actions |= TimerAction.SendKeepalive;
      if (this.#needAnotherKeepalive) {
        this.#needAnotherKeepalive = false;
        this.keepaliveAt = now + KEEPALIVE_TIMEOUT;
      }
    }
    if (this.newHandshakeAt <= now) {
      this.newHandshakeAt = Infinity;
      actions |= TimerAction.NewHandshake;
    }
    if (this.zeroKeysAt <= now) {
      this.zeroKeysAt = Infinity;
      actions |= TimerAction.ZeroKeys;
    }
    if (this.persistentKeepaliveAt <= now) {
      this.persistentKeepaliveAt = Infinity;
      if (this.#persistentInterval > 0) actions |= TimerAction.PersistentKeepalive;
    }
    return actions;
  }
}
