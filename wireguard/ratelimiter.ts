/**
 * A per-source token bucket for handshake messages, in the manner of
 * wireguard-go's `ratelimiter`: each source may send {@linkcode RATE_PER_SECOND}
 * handshake messages per second with a burst of {@linkcode RATE_BURST}. IPv4
 * sources (also IPv4-mapped IPv6 ones, as a dual-stack socket reports them)
 * are keyed by address, IPv6 sources by their /64 prefix (one attacker
 * usually holds a whole /64).
 *
 * The table is bounded: when it is full, entries idle for more than a second
 * (whose buckets are full again, so forgetting them changes nothing) are
 * swept; if it is still full, new sources are refused until room appears.
 *
 * @module
 */

import { isIpv4Mapped, positiveInteger } from "./_util.ts";
import { formatIp, parseIp } from "./ip.ts";

/** Handshake messages a source may send per second. */
export const RATE_PER_SECOND = 20;
/** Handshake messages a source may send in a burst. */
export const RATE_BURST = 5;
/** Default bound of the table. */
export const DEFAULT_MAX_ENTRIES = 8192;

const COST = 1000 / RATE_PER_SECOND; // ms of tokens per message
const MAX_TOKENS = COST * RATE_BURST;
const IDLE = 1000;

interface Bucket {
  tokens: number;
  last: number;
}

/** The key of a source address: IPv4 text as is, IPv6 by its /64 prefix. */
export function sourceKey(address: string): string {
  if (!address.includes(":")) return address;
  const bytes = parseIp(address);
  if (bytes === null || bytes.length !== 16) return address;
  if (isIpv4Mapped(bytes)) return formatIp(bytes.subarray(12));
  let key = "6:";
  for (let i = 0; i < 8; i++) key += bytes[i].toString(16).padStart(2, "0");
  return key;
}

/** Options of a {@linkcode RateLimiter}. */
export interface RateLimiterOptions {
  /** Bound of the table of sources (default 8192). */
  maxEntries?: number;
}

/** The per-source token buckets. */
export class RateLimiter {
  readonly #table = new Map<string, Bucket>();
  readonly #maxEntries: number;
  #lastSweep = -Infinity;

  /**
   * An empty table.
   * @throws {RangeError} When `maxEntries` is not a positive integer.
   */
  constructor(options: RateLimiterOptions = {}) {
    this.#maxEntries = positiveInteger(options.maxEntries ?? DEFAULT_MAX_ENTRIES, "maxEntries");
  }

  /** Number of sources tracked now (never above the bound). */
  get size(): number {
    return this.#table.size;
  }

  /** The table bound. */
  get maxEntries(): number {
    return this.#maxEntries;
  }

  /**
   * Takes a token for a handshake message from `address` at `now` (ms).
   * Returns whether the message may be processed.
   */
  allow(address: string, now: number): boolean {
    const key = sourceKey(address);
    const bucket = this.#table.get(key);
    if (bucket !== undefined) {
      bucket.tokens = Math.min(MAX_TOKENS, bucket.tokens + Math.max(0, now - bucket.last));
      bucket.last = now;
      if (bucket.tokens >= COST) {
        bucket.tokens -= COST;
        return true;
      }
      return false;
    }
    if (this.#table.size >= this.#maxEntries) {
      this.sweep(now);
      if (this.#table.size >= this.#maxEntries) return false;
    }
    this.#table.set(key, { tokens: MAX_TOKENS - COST, last: now });
    return true;
  }

  /**
   * Forgets sources idle for more than a second. Runs at most every 100 ms of
   * `now` so a full table under attack does not cost a sweep per packet.
   */
  sweep(now: number): void {
    if (now - this.#lastSweep < 100) return;
    this.#lastSweep = now;
    for (const [key, bucket] of this.#table) {
      if (now - bucket.last > IDLE) this.#table.delete(key);
    }
  }

  /** Forgets every source. */
  clear(): void {
    this.#table.clear();
  }
}
