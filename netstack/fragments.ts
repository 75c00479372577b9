/**
 * IPv4 (RFC 791 §3.2) and IPv6 (RFC 8200 §4.5) fragment reassembly with
 * hard limits. Sans-I/O: time comes in as `now` (monotonic ms).
 *
 * Rules:
 * - A datagram is keyed by (IP version, source, destination, protocol, id).
 * - Any overlap between fragments drops the whole datagram (RFC 5722 for
 *   IPv6; the same simple, safe rule for IPv4). An exact duplicate of a
 *   fragment already held is ignored (RFC 8200 §4.5 allows this).
 * - A fragment that is not the last must carry a multiple of 8 bytes.
 * - A datagram whose payload would pass {@linkcode FRAGMENT_MAX_PAYLOAD_V4}
 *   (IPv4) or {@linkcode FRAGMENT_MAX_PAYLOAD_V6} (IPv6) is dropped.
 * - Limits: total bytes held (oldest datagrams are evicted to make room),
 *   number of datagrams in reassembly (oldest evicted), fragments per
 *   datagram (the datagram is dropped).
 * - Per-source quotas (`quota.ts`): bytes and datagrams of one source (the
 *   `source` of {@linkcode FragmentInput}, e.g. a WireGuard peer). Over its
 *   quota a source evicts its own oldest datagram; when the whole
 *   reassembler is full, the source holding the most goes first, so one
 *   source's fragments never push out another's that holds less.
 * - A datagram not complete within its timeout (30 s IPv4, 60 s IPv6 by
 *   default) is dropped by {@linkcode FragmentReassembler.poll}.
 *
 * @module
 */

import { bytesEqual, positiveInteger } from "./_util.ts";
import { SourceTable } from "./quota.ts";

/**
 * Largest reassembled IPv4 payload: 65535 (the 16-bit total length, RFC 791)
 * minus the smallest header.
 */
export const FRAGMENT_MAX_PAYLOAD_V4 = 65535 - 20;
/**
 * Largest reassembled IPv6 payload: 65535 (the 16-bit payload length, which
 * does not count the fixed header; RFC 8200 §4.5).
 */
export const FRAGMENT_MAX_PAYLOAD_V6 = 65535;

/** Bytes charged per held fragment on top of its data (bookkeeping overhead). */
const FRAGMENT_OVERHEAD = 64;

/** Limits and timeouts of a {@linkcode FragmentReassembler}. */
export interface FragmentReassemblerOptions {
  /** Most bytes held over all datagrams, overhead included (default 4 MiB). */
  maxBytes?: number;
  /** Most datagrams in reassembly at once (default 256). */
  maxDatagrams?: number;
  /** Most bytes held for one source (default half of `maxBytes`). */
  maxBytesPerSource?: number;
  /** Most datagrams in reassembly for one source (default half of `maxDatagrams`). */
  maxDatagramsPerSource?: number;
  /** Most fragments held for one datagram (default 256). */
  maxFragmentsPerDatagram?: number;
  /** IPv4 reassembly timeout in ms (default 30 000). */
  timeoutV4?: number;
  /** IPv6 reassembly timeout in ms (default 60 000, RFC 8200 §4.5). */
  timeoutV6?: number;
  /**
   * Free bytes left before the payload in the buffer a completed datagram is
   * returned in, so the caller can write an IP header there (default 0).
   */
  headroom?: number;
  /**
   * Called when a datagram times out after its first fragment (offset 0)
   * arrived, with the start of that fragment's IP packet (the header and at
   * least 8 bytes of data, at most {@linkcode FRAGMENT_QUOTE_MAX} bytes), so
   * the owner can send ICMP Time Exceeded, "fragment reassembly time
   * exceeded" (RFC 792; RFC 8200 §4.5).
   */
  onTimeout?: (version: 4 | 6, firstFragment: Uint8Array) => void;
}

/** Most bytes of a first fragment's packet kept for {@linkcode FragmentReassemblerOptions.onTimeout}. */
export const FRAGMENT_QUOTE_MAX = 128;

/**
 * One fragment, as handed to {@linkcode FragmentReassembler.add}. A mutable
 * value the caller may reuse; `data` is copied when kept.
 */
export interface FragmentInput {
  /** 4 or 6. */
  version: 4 | 6;
  /** Source address (4 or 16 bytes). */
  src: Uint8Array;
  /** Destination address. */
  dst: Uint8Array;
  /** Upper-layer protocol (IPv6: Next Header of the Fragment header). */
  protocol: number;
  /** Identification (16 bits IPv4, 32 bits IPv6). */
  id: number;
  /** Offset of `data` in the datagram payload, in bytes. */
  offset: number;
  /** More Fragments flag. */
  more: boolean;
  /** The fragment's data. */
  data: Uint8Array;
  /**
   * The whole IP packet that carried the fragment (optional): when given for
   * the first fragment, its start is kept for `onTimeout`.
   */
  packet?: Uint8Array;
  /** Who sent it (quotas are per source; `undefined` has none of its own). */
  source?: unknown;
}

/** Counters of a {@linkcode FragmentReassembler}. */
export interface FragmentStats {
  /** Fragments handed to `add`. */
  fragments: number;
  /** Datagrams completed. */
  reassembled: number;
  /** Exact duplicate fragments ignored. */
  duplicates: number;
  /** Datagrams (or single fragments) dropped, by reason. */
  drops: {
    overlap: number;
    badLength: number;
    tooBig: number;
    inconsistentLength: number;
    tooManyFragments: number;
    timeout: number;
    evicted: number;
    /** Datagrams dropped or evicted because their source was at its quota. */
    sourceQuota: number;
  };
}

interface Piece {
  offset: number;
  data: Uint8Array;
}

interface Datagram {
  key: string;
  source: unknown;
  version: 4 | 6;
  protocol: number;
  expires: number;
  /** Known once the last fragment (M = 0) arrived; -1 before. */
  total: number;
  received: number;
  charged: number;
  /** Sorted by offset, never overlapping. */
  pieces: Piece[];
  /** Start of the first fragment's packet, for the timeout ICMP. */
  first: Uint8Array | null;
}

/** Reassembles IP fragments within fixed limits. */
export class FragmentReassembler {
  #maxBytes: number;
  #maxDatagrams: number;
  #maxPieces: number;
  #maxBytesPerSource: number;
  #maxDatagramsPerSource: number;
  /** Datagram keys by source, oldest first, and bytes charged per source. */
  #bySource = new SourceTable();
  #sourceBytes = new Map<unknown, number>();
  #timeoutV4: number;
  #timeoutV6: number;
  #headroom: number;
  #onTimeout?: (version: 4 | 6, firstFragment: Uint8Array) => void;
  /** Insertion order is age order: the first entry is the oldest. */
  #datagrams = new Map<string, Datagram>();
  #bytes = 0;
  /** A lower bound of the earliest expiry (exact after each scan). */
  #nextExpiry = Infinity;
  #stats: FragmentStats = {
    fragments: 0,
    reassembled: 0,
    duplicates: 0,
    drops: {
      overlap: 0,
      badLength: 0,
      tooBig: 0,
      inconsistentLength: 0,
      tooManyFragments: 0,
      timeout: 0,
      evicted: 0,
      sourceQuota: 0,
    },
  };

  /** Creates an empty reassembler. Throws a `RangeError` on a non-positive limit. */
  constructor(options: FragmentReassemblerOptions = {}) {
    this.#maxBytes = positiveInteger(options.maxBytes ?? 4 * 1024 * 1024, "maxBytes");
    this.#maxDatagrams = positiveInteger(options.maxDatagrams ?? 256, "maxDatagrams");
    this.#maxPieces = positiveInteger(
      options.maxFragmentsPerDatagram ?? 256,
      "maxFragmentsPerDatagram",
    );
    this.#maxBytesPerSource = positiveInteger(
      options.maxBytesPerSource ?? Math.max(1, Math.floor(this.#maxBytes / 2)),
      "maxBytesPerSource",
    );
    this.#maxDatagramsPerSource = positiveInteger(
      options.maxDatagramsPerSource ?? Math.max(1, Math.floor(this.#maxDatagrams / 2)),
      "maxDatagramsPerSource",
    );
    this.#timeoutV4 = positiveInteger(options.timeoutV4 ?? 30_000, "timeoutV4");
    this.#timeoutV6 = positiveInteger(options.timeoutV6 ?? 60_000, "timeoutV6");
    this.#headroom = options.headroom ?? 0;
    this.#onTimeout = options.onTimeout;
    if (!Number.isInteger(this.#headroom) || this.#headroom < 0) {
      throw new RangeError("headroom must be a non-negative integer");
    }
  }

  /** Datagrams currently in reassembly. */
  get size(): number {
    return this.#datagrams.size;
  }

  /** Bytes currently charged (fragment data plus per-fragment overhead). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Datagrams and bytes held for `source` now. */
  sourceUsage(source: unknown): { datagrams: number; bytes: number } {
    return { datagrams: this.#bySource.count(source), bytes: this.#sourceBytes.get(source) ?? 0 };
  }

  /** A snapshot of the counters. */
  stats(): FragmentStats {
    return { ...this.#stats, drops: { ...this.#stats.drops } };
  }

  /**
   * Adds one fragment. Returns the completed datagram payload (preceded by
   * `headroom` free bytes) when this fragment completes it, else `null`.
   */
  add(fragment: FragmentInput, now: number): Uint8Array | null {
    const stats = this.#stats;
    stats.fragments++;
    const { offset, more, data } = fragment;
    const end = offset + data.length;
    if (more && (data.length === 0 || data.length % 8 !== 0)) {
      stats.drops.badLength++;
      return null;
    }
    if (end > (fragment.version === 4 ? FRAGMENT_MAX_PAYLOAD_V4 : FRAGMENT_MAX_PAYLOAD_V6)) {
      stats.drops.tooBig++;
      this.#remove(this.#datagrams.get(keyOf(fragment)));
      return null;
    }
    this.#expire(now);
    const key = keyOf(fragment);
    const source = fragment.source;
    let dg = this.#datagrams.get(key);
    if (!dg) {
      for (;;) {
        const victim = this.#bySource.victim(
          source,
          this.#maxDatagramsPerSource,
          this.#maxDatagrams,
        );
        if (victim === undefined) break;
        if (victim === null) {
          stats.drops.evicted++;
          return null;
        }
        if (source !== undefined && this.#bySource.count(source) >= this.#maxDatagramsPerSource) {
          stats.drops.sourceQuota++;
        } else {
          stats.drops.evicted++;
        }
        this.#remove(this.#datagrams.get(victim));
      }
      dg = {
        key,
        source,
        version: fragment.version,
        protocol: fragment.protocol,
        expires: now + (fragment.version === 4 ? this.#timeoutV4 : this.#timeoutV6),
        total: -1,
        received: 0,
        charged: 0,
        pieces: [],
        first: null,
      };
      this.#datagrams.set(key, dg);
      this.#bySource.add(source, key);
      if (dg.expires < this.#nextExpiry) this.#nextExpiry = dg.expires;
    }
    if (!more) {
      if ((dg.total >= 0 && dg.total !== end) || end < highestEnd(dg)) {
        stats.drops.inconsistentLength++;
        this.#remove(dg);
        return null;
      }
      dg.total = end;
    } else if (dg.total >= 0 && end > dg.total) {
      stats.drops.inconsistentLength++;
      this.#remove(dg);
      return null;
    }
    // Find the insertion point and check both neighbours for overlap.
    const pieces = dg.pieces;
    let i = pieces.length;
    while (i > 0 && pieces[i - 1].offset > offset) i--;
    const before = i > 0 ? pieces[i - 1] : undefined;
    if (before && before.offset === offset && before.data.length === data.length) {
      if (bytesEqual(before.data, data)) {
        stats.duplicates++;
        return null;
      }
    }
    if (
      (before && before.offset + before.data.length > offset) ||
      (i < pieces.length && pieces[i].offset < end)
    ) {
      stats.drops.overlap++;
      this.#remove(dg);
      return null;
    }
    if (pieces.length >= this.#maxPieces) {
      stats.drops.tooManyFragments++;
      this.#remove(dg);
      return null;
    }
    const keepFirst = offset === 0 && fragment.packet !== undefined &&
      this.#onTimeout !== undefined;
    const cost = data.length + FRAGMENT_OVERHEAD + (keepFirst ? FRAGMENT_QUOTE_MAX : 0);
    if (!this.#makeRoom(dg, cost)) return null;
    pieces.splice(i, 0, { offset, data: data.slice() });
    if (keepFirst) {
      const p = fragment.packet!;
      dg.first = p.slice(0, Math.min(p.length, FRAGMENT_QUOTE_MAX));
    }
    dg.received += data.length;
    dg.charged += cost;
    this.#bytes += cost;
    this.#sourceBytes.set(dg.source, (this.#sourceBytes.get(dg.source) ?? 0) + cost);
    if (dg.total < 0 || dg.received !== dg.total) return null;
    // No overlaps and received === total means full coverage of [0, total).
    const out = new Uint8Array(this.#headroom + dg.total);
    for (const p of pieces) out.set(p.data, this.#headroom + p.offset);
    this.#remove(dg);
    stats.reassembled++;
    return out;
  }

  /** Drops datagrams whose reassembly timed out. */
  poll(now: number): void {
    this.#expire(now);
  }

  /** When the next datagram times out (`Infinity` when none is held). */
  nextDeadline(): number {
    return this.#datagrams.size === 0 ? Infinity : this.#nextExpiry;
  }

  /** Drops timed-out datagrams; scans only once the earliest expiry is due. */
  #expire(now: number): void {
    if (now < this.#nextExpiry) return;
    let next = Infinity;
    for (const dg of this.#datagrams.values()) {
      if (dg.expires <= now) {
        this.#stats.drops.timeout++;
        this.#remove(dg);
        if (dg.first && this.#onTimeout) this.#onTimeout(dg.version, dg.first);
      } else if (dg.expires < next) {
        next = dg.expires;
      }
    }
    this.#nextExpiry = next;
  }

  /**
   * Evicts datagrams until `cost` more bytes of `dg` fit its source's quota
   * and the total; false (and `dg` dropped) when they cannot.
   */
  #makeRoom(dg: Datagram, cost: number): boolean {
    const drops = this.#stats.drops;
    const source = dg.source;
    for (;;) {
      const mine = this.#sourceBytes.get(source) ?? 0;
      const overQuota = source !== undefined && mine + cost > this.#maxBytesPerSource;
      if (!overQuota && this.#bytes + cost <= this.#maxBytes) return true;
      let from = source;
      if (!overQuota) {
        // The whole reassembler is full: take from the source holding the most.
        for (const [s, bytes] of this.#sourceBytes) {
          if (bytes > (this.#sourceBytes.get(from) ?? 0)) from = s;
        }
      }
      let victim: Datagram | undefined;
      for (const key of this.#bySource.keys(from)) {
        if (key !== dg.key) {
          victim = this.#datagrams.get(key);
          break;
        }
      }
      if (overQuota) drops.sourceQuota++;
      else drops.evicted++;
      if (!victim) {
        this.#remove(dg);
        return false;
      }
      this.#remove(victim);
    }
  }

  #remove(dg: Datagram | undefined): void {
    if (!dg || this.#datagrams.get(dg.key) !== dg) return;
    this.#datagrams.delete(dg.key);
    this.#bySource.delete(dg.source, dg.key);
    this.#bytes -= dg.charged;
    const left = (this.#sourceBytes.get(dg.source) ?? 0) - dg.charged;
    if (left > 0) this.#sourceBytes.set(dg.source, left);
    else this.#sourceBytes.delete(dg.source);
  }
}

function keyOf(f: FragmentInput): string {
  let key = `${f.version}:${f.protocol}:${f.id}:`;
  for (let i = 0; i < f.src.length; i++) key += String.fromCharCode(f.src[i]);
  for (let i = 0; i < f.dst.length; i++) key += String.fromCharCode(f.dst[i]);
  return key;
}

function highestEnd(dg: Datagram): number {
  const last = dg.pieces[dg.pieces.length - 1];
  return last ? last.offset + last.data.length : 0;
}
