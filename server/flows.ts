/**
 * The live flow table: every TCP connection and UDP flow being forwarded
 * now (peer, 4-tuple, host name, bytes each way, age, state) and a bounded
 * ring of recently closed ones, queried with filters and paging so a page
 * of a few thousand flows costs one pass over the table.
 *
 * The entries are the forwarder's own relay objects (no copy per flow); a
 * snapshot is made only for the rows a query returns.
 *
 * @module
 */

import type { FlowInfo } from "./serve.ts";
import type { UdpEndpoint } from "./udp.ts";
import type { HostnameSource } from "./sniff.ts";

/** What the table reads from a live flow (the forwarder's relays implement it). */
export interface FlowEntry {
  /** Set by {@linkcode FlowTable.add}. */
  id: number;
  /** `"tcp"` or `"udp"`. */
  readonly protocol: "tcp" | "udp";
  /** Peer and 4-tuple. */
  readonly info: FlowInfo;
  /** Payload bytes client → destination so far. */
  readonly bytesUp: number;
  /** Payload bytes destination → client so far. */
  readonly bytesDown: number;
  /** The host name, once known. */
  readonly host?: string;
  /** Where {@linkcode FlowEntry.host} came from. */
  readonly hostSource?: HostnameSource;
  /** `performance.now()` when the flow opened. */
  readonly started: number;
  /** E.g. `"open"`, `"client-fin"` (the client sent FIN), `"server-fin"`. */
  readonly state: string;
}

/** One flow as a query returns it (plain data, JSON-ready). */
export interface FlowSnapshot {
  /** Unique within the table. */
  id: number;
  /** `"tcp"` or `"udp"`. */
  protocol: "tcp" | "udp";
  /** The peer's public key, base64. */
  peer: string;
  /** The peer's name, if it has one. */
  peerName?: string;
  /** The client's inner address and port. */
  source: UdpEndpoint;
  /** Where the client was going. */
  destination: UdpEndpoint;
  /** The host name (TLS SNI, HTTP Host, QUIC Initial or DNS answers), when known. */
  hostname?: string;
  /** Where the host name came from. */
  hostnameSource?: HostnameSource;
  /** Payload bytes client → destination. */
  bytesUp: number;
  /** Payload bytes destination → client. */
  bytesDown: number;
  /** Unix time (ms) the flow opened. */
  openedAt: number;
  /** How long it was (or has been) open, ms. */
  durationMs: number;
  /** `"open"`, `"client-fin"`, `"server-fin"`, `"closing"` (both FINs), or `"closed"` for a closed flow. */
  state: string;
  /** How a closed flow ended (e.g. `"closed"`, `"client reset"`, `"expired"`). */
  end?: string;
}

/** A query of {@linkcode FlowTable.query}; every filter is optional. */
export interface FlowQuery {
  /** The recently closed flows instead of the live ones. */
  closed?: boolean;
  /** Only this peer: its public key or name, exactly. */
  peer?: string;
  /** Only flows whose host name or either address contains this (case-insensitive). */
  host?: string;
  /** Only flows with this port at either end. */
  port?: number;
  /** Only this protocol. */
  protocol?: "tcp" | "udp";
  /** `"age"`: newest first (default); `"bytes"`: most bytes (both ways) first. */
  sort?: "age" | "bytes";
  /** Rows to skip. Default 0. */
  offset?: number;
  /** Rows to return, 1 to 1000. Default 100. */
  limit?: number;
}

/** What {@linkcode FlowTable.query} returns. */
export interface FlowPage {
  /** Flows in the list asked for (live or closed), before filtering. */
  total: number;
  /** Flows that matched the filters. */
  matched: number;
  /** The offset used. */
  offset: number;
  /** Up to `limit` matching flows from `offset`, in the order asked for. */
  flows: FlowSnapshot[];
}

/** Options of {@linkcode FlowTable}. */
export interface FlowTableOptions {
  /** How many recently closed flows are kept (a ring; oldest go first). Default 256; 0: none. */
  closed?: number;
}

const MAX_LIMIT = 1000;

/**
 * Checks and completes a query.
 *
 * @throws {RangeError} For a value out of range (e.g. `limit` 0 or a port above 65535).
 */
export function normalizeFlowQuery(query: FlowQuery = {}):
  & Required<
    Pick<FlowQuery, "closed" | "sort" | "offset" | "limit">
  >
  & FlowQuery {
  const offset = query.offset ?? 0;
  const limit = query.limit ?? 100;
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new RangeError(`offset must be a whole number ≥ 0, not ${offset}`);
  }
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
    throw new RangeError(`limit must be a whole number from 1 to ${MAX_LIMIT}, not ${limit}`);
  }
  if (
    query.port !== undefined &&
    (!Number.isInteger(query.port) || query.port < 0 || query.port > 65535)
  ) {
    throw new RangeError(`port must be 0 to 65535, not ${query.port}`);
  }
  if (query.protocol !== undefined && query.protocol !== "tcp" && query.protocol !== "udp") {
    throw new RangeError(`protocol must be tcp or udp, not ${query.protocol}`);
  }
  const sort = query.sort ?? "age";
  if (sort !== "age" && sort !== "bytes") {
    throw new RangeError(`sort must be age or bytes, not ${sort}`);
  }
  return { ...query, closed: query.closed ?? false, sort, offset, limit };
}

/**
 * Live flows and a ring of recently closed ones.
 *
 * @example
 * ```ts
 * import { FlowTable } from "@wgstack/server";
 * const table = new FlowTable({ closed: 100 });
 * const page = table.query({ host: "example.com", limit: 20 });
 * console.log(page.matched, page.flows.map((f) => f.hostname));
 * ```
 */
export class FlowTable {
  #live = new Set<FlowEntry>();
  #closed: FlowSnapshot[] = [];
  /** Next write position in `#closed` once it is full. */
  #next = 0;
  #capacity: number;
  #ids = 0;

  /** An empty table. */
  constructor(options: FlowTableOptions = {}) {
    const closed = options.closed ?? 256;
    if (!Number.isSafeInteger(closed) || closed < 0) {
      throw new RangeError(`closed must be a whole number ≥ 0, not ${closed}`);
    }
    this.#capacity = closed;
  }

  /** Live flows now. */
  get size(): number {
    return this.#live.size;
  }

  /** Starts tracking a live flow; sets its `id`. */
  add(entry: FlowEntry): void {
    entry.id = ++this.#ids;
    this.#live.add(entry);
  }

  /** The flow ended: it moves to the closed ring (the oldest closed one leaves when full). */
  end(entry: FlowEntry, end: string): void {
    if (!this.#live.delete(entry)) return;
    if (this.#capacity === 0) return;
    const record = snapshot(entry, performance.now(), Date.now());
    record.state = "closed";
    record.end = end;
    if (this.#closed.length < this.#capacity) this.#closed.push(record);
    else {
      this.#closed[this.#next] = record;
      this.#next = (this.#next + 1) % this.#capacity;
    }
  }

  /**
   * The flows matching `query`, one page of them.
   *
   * @throws {RangeError} For an invalid query (see {@linkcode normalizeFlowQuery}).
   */
  query(query: FlowQuery = {}): FlowPage {
    const q = normalizeFlowQuery(query);
    const host = q.host?.toLowerCase();
    const now = performance.now();
    const wall = Date.now();
    if (q.closed) {
      // Oldest first in the ring order; newest first wanted.
      const n = this.#closed.length;
      const ordered: FlowSnapshot[] = [];
      for (let i = 1; i <= n; i++) ordered.push(this.#closed[(this.#next - i + n) % n]);
      const matched = ordered.filter((f) =>
        matches(q, host, f.protocol, f.peer, f.peerName, f.source, f.destination, f.hostname)
      );
      if (q.sort === "bytes") {
        matched.sort((a, b) => b.bytesUp + b.bytesDown - a.bytesUp - a.bytesDown);
      }
      return {
        total: n,
        matched: matched.length,
        offset: q.offset,
        flows: matched.slice(q.offset, q.offset + q.limit),
      };
    }
    const matched: FlowEntry[] = [];
    for (const e of this.#live) {
      const i = e.info;
      if (
        matches(q, host, e.protocol, i.peer.publicKey, i.peer.name, i.source, i.destination, e.host)
      ) {
        matched.push(e);
      }
    }
    if (q.sort === "bytes") {
      matched.sort((a, b) => b.bytesUp + b.bytesDown - a.bytesUp - a.bytesDown);
    } // The set holds insertion order, oldest first: newest first is the reverse.
    else matched.reverse();
    return {
      total: this.#live.size,
      matched: matched.length,
      offset: q.offset,
      flows: matched.slice(q.offset, q.offset + q.limit).map((e) => snapshot(e, now, wall)),
    };
  }
}

function matches(
  q: FlowQuery,
  host: string | undefined,
  protocol: string,
  peer: string,
  peerName: string | undefined,
  source: UdpEndpoint,
  destination: UdpEndpoint,
  hostname: string | undefined,
): boolean {
  if (q.protocol !== undefined && protocol !== q.protocol) return false;
  if (q.peer !== undefined && peer !== q.peer && peerName !== q.peer) return false;
  if (q.port !== undefined && source.port !== q.port && destination.port !== q.port) return false;
  if (host !== undefined && host !== "") {
    if (
      !(hostname?.toLowerCase().includes(host) ||
        destination.address.toLowerCase().includes(host) ||
        source.address.toLowerCase().includes(host))
    ) return false;
  }
  return true;
}

function snapshot(e: FlowEntry, now: number, wall: number): FlowSnapshot {
  const age = now - e.started;
  const s: FlowSnapshot = {
    id: e.id,
    protocol: e.protocol,
    peer: e.info.peer.publicKey,
    source: { address: e.info.source.address, port: e.info.source.port },
    destination: { address: e.info.destination.address, port: e.info.destination.port },
    bytesUp: e.bytesUp,
    bytesDown: e.bytesDown,
    openedAt: Math.round(wall - age),
    durationMs: Math.round(age),
    state: e.state,
  };
  if (e.info.peer.name !== undefined) s.peerName = e.info.peer.name;
  if (e.host !== undefined) s.hostname = e.host;
  if (e.hostSource !== undefined) s.hostnameSource = e.hostSource;
  return s;
}
