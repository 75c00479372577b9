/**
 * The names behind addresses, learnt from the answers the built-in DNS
 * forwarder relays: for each peer, address → the name it asked for (the
 * question, not the CNAME target, so `www.example.com` rather than a CDN's
 * name). Entries expire with the answer's TTL plus a grace period (clients
 * connect a moment after resolving, and TTLs of 0 are common); the table is
 * bounded per peer and in total, and a full table evicts from the peer with
 * the most entries.
 *
 * DNS messages are read and written with the `dns-packet` npm package.
 *
 * @module
 */

import { decodeDns, type DnsMessage, type DnsRecord, encodeDns } from "./_dns_message.ts";
import { canonical } from "./upstream.ts";

/** Options of {@linkcode DnsNames}. */
export interface DnsNamesOptions {
  /** Entries per peer. Default 4096. */
  maxPerPeer?: number;
  /** Entries in total. Default 65 536. */
  maxTotal?: number;
  /** Kept this long (ms) past the TTL. Default 60 000. */
  graceMs?: number;
}

/** Counters of a {@linkcode DnsNames}. */
export interface DnsNamesStats {
  /** Entries now. */
  entries: number;
  /** Addresses learnt (or refreshed) from answers. */
  learned: number;
  /** DNS datagrams that did not parse. */
  malformed: number;
  /** Entries evicted because a table was full. */
  evicted: number;
}

interface Entry {
  name: string;
  expires: number;
}

/**
 * Address → name per peer, from DNS answers.
 *
 * @example
 * ```ts ignore
 * const names = new DnsNames();
 * names.learn(peerKey, answerDatagram, performance.now());
 * names.lookup(peerKey, "192.0.2.7", performance.now()); // "www.example.com"
 * ```
 */
export class DnsNames {
  #peers = new Map<string, Map<string, Entry>>();
  #total = 0;
  #maxPerPeer: number;
  #maxTotal: number;
  #graceMs: number;
  #stats = { learned: 0, malformed: 0, evicted: 0 };

  /** Creates an empty table. */
  constructor(options: DnsNamesOptions = {}) {
    this.#maxPerPeer = options.maxPerPeer ?? 4096;
    this.#maxTotal = options.maxTotal ?? 65_536;
    this.#graceMs = options.graceMs ?? 60_000;
    if (!(this.#maxPerPeer >= 1 && this.#maxTotal >= 1)) {
      throw new RangeError("DnsNames limits must be at least 1");
    }
  }

  /** Counters so far. */
  stats(): DnsNamesStats {
    return { entries: this.#total, ...this.#stats };
  }

  /** Learns the A/AAAA records of a DNS response `peer` received; returns how many. */
  learn(peer: string, response: Uint8Array, now: number): number {
    const message = decode(response);
    if (!message) {
      this.#stats.malformed++;
      return 0;
    }
    if (message.type !== "response" || ((message.flags ?? 0) & 0xf) !== 0) return 0;
    const asked = message.questions?.[0]?.name;
    if (typeof asked !== "string" || asked.length === 0) return 0;
    let n = 0;
    for (const a of message.answers ?? []) {
      if ((a.type !== "A" && a.type !== "AAAA") || typeof a.data !== "string") continue;
      const ttl = Math.min(Math.max(0, a.ttl ?? 0), 86_400);
      this.#set(peer, canonical(a.data), {
        name: asked,
        expires: now + ttl * 1000 + this.#graceMs,
      });
      n++;
    }
    this.#stats.learned += n;
    return n;
  }

  /** The name `peer` resolved `address` from, while it has not expired. */
  lookup(peer: string, address: string, now: number): string | undefined {
    const table = this.#peers.get(peer);
    if (!table) return undefined;
    const key = canonical(address);
    const e = table.get(key);
    if (!e) return undefined;
    if (e.expires > now) return e.name;
    table.delete(key);
    this.#total--;
    if (table.size === 0) this.#peers.delete(peer);
    return undefined;
  }

  /** Forgets a peer's entries (e.g. when it is removed). */
  forget(peer: string): void {
    const table = this.#peers.get(peer);
    if (!table) return;
    this.#total -= table.size;
    this.#peers.delete(peer);
  }

  #set(peer: string, address: string, entry: Entry): void {
    let table = this.#peers.get(peer);
    if (!table) this.#peers.set(peer, table = new Map());
    if (table.delete(address)) this.#total--;
    while (table.size >= this.#maxPerPeer) this.#evictOldest(peer, table);
    while (this.#total >= this.#maxTotal) {
      let victim = peer;
      let most = table.size;
      for (const [p, t] of this.#peers) if (t.size > most) [victim, most] = [p, t.size];
      this.#evictOldest(victim, this.#peers.get(victim)!);
    }
    table.set(address, entry);
    this.#total++;
  }

  /** Drops the entry least recently learnt (Map order is insertion order). */
  #evictOldest(peer: string, table: Map<string, Entry>): void {
    const first = table.keys().next();
    if (first.done) return;
    table.delete(first.value);
    this.#total--;
    this.#stats.evicted++;
    if (table.size === 0 && this.#peers.get(peer) === table) this.#peers.delete(peer);
  }
}

function decode(bytes: Uint8Array): DnsMessage | undefined {
  return decodeDns(bytes);
}

/** The first question's name of a DNS query, or `undefined` when it is not one. */
export function queryName(query: Uint8Array): string | undefined {
  const message = decode(query);
  if (!message || message.type !== "query") return undefined;
  const name = message.questions?.[0]?.name;
  return typeof name === "string" && name.length > 0 ? name : undefined;
}

/**
 * The answer to a query for a blocked name: `"nxdomain"` (the name does not
 * exist) or `"zero"` (0.0.0.0 / `::` for A / AAAA, NOERROR and no data for
 * other types), with the query's id and question. `undefined` when `query`
 * does not parse.
 */
export function blockedAnswer(
  query: Uint8Array,
  mode: "nxdomain" | "zero",
): Uint8Array | undefined {
  const message = decode(query);
  const q = message?.questions?.[0];
  if (!message || message.type !== "query" || !q) return undefined;
  const RD = 0x0100, RA = 0x0080, NXDOMAIN = 3;
  const answers: DnsRecord[] = [];
  if (mode === "zero" && (q.type === "A" || q.type === "AAAA")) {
    answers.push({ type: q.type, name: q.name, ttl: 60, data: q.type === "A" ? "0.0.0.0" : "::" });
  }
  return encodeDns({
    type: "response",
    id: message.id,
    flags: (message.flags ?? 0) & RD | RA | (mode === "nxdomain" ? NXDOMAIN : 0),
    questions: [q],
    answers,
  });
}
