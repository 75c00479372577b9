/**
 * UDP flows: datagrams grouped by 4-tuple, each flow a pair of web streams.
 *
 * - A flow is keyed by (local address, local port, remote address, remote
 *   port); "local" is the address the client sent to (we accept any), and
 *   "remote" the client.
 * - `readable` yields one `Uint8Array` per datagram. Its queue is bounded
 *   (datagrams and bytes); when full, the OLDEST queued datagram is dropped
 *   and counted. A flow whose readable was cancelled drops new datagrams.
 * - `writable` takes one datagram per chunk and sends it back to the flow's
 *   remote end. Writes are queued (bounded; `write()` waits while the queue is
 *   full) and sent on the owner's next `poll`. A chunk larger than the
 *   flow's largest payload makes the write throw a `RangeError` (the stack
 *   fragments instead, so with a NetStack the limit is 65507/65527 bytes).
 * - A flow closes after `idleTimeout` ms without a datagram either way
 *   (default 60 s): its readable closes once drained and its writable errors.
 * - At most `maxFlows` flows, and at most `maxFlowsPerSource` of one source
 *   (the `source` of the datagram that opened the flow, e.g. a WireGuard
 *   peer): a source at its quota gives up one of its own flows; a full table
 *   gives up one of the source holding the most (see `quota.ts`), so one
 *   source's flood never evicts another source's flows while it holds more
 *   than that source. The flow given up is the least recently used of that
 *   source's 8 oldest.
 *
 * @module
 */

import { formatAddress, type IpAddress } from "./addr.ts";
import { positiveInteger } from "./_util.ts";
import { SourceTable } from "./quota.ts";

export type { IpAddress } from "./addr.ts";

/** One UDP flow: a datagram stream pair towards one remote endpoint. */
export interface UdpFlow {
  /** The address the client sent to (ours, as seen by the client). */
  readonly localAddress: string;
  /** The port the client sent to. */
  readonly localPort: number;
  /** The client's address. */
  readonly remoteAddress: string;
  /** The client's port. */
  readonly remotePort: number;
  /** {@linkcode UdpFlow.localAddress} as bytes. */
  readonly localAddressBytes: IpAddress;
  /** {@linkcode UdpFlow.remoteAddress} as bytes. */
  readonly remoteAddressBytes: IpAddress;
  /** 4 or 6. */
  readonly ipVersion: 4 | 6;
  /**
   * Who opened the flow: the `source` of the datagram that opened it (for a
   * NetStack, of the `input` call that carried it), `undefined` without one.
   */
  readonly source: unknown;
  /** Datagrams from the client (one chunk per datagram). */
  readonly readable: ReadableStream<Uint8Array>;
  /** Datagrams to the client (one chunk per datagram). */
  readonly writable: WritableStream<Uint8Array>;
  /** Resolves when the flow is gone (closed, expired or evicted). */
  readonly closed: Promise<void>;
  /** Removes the flow now: the readable closes after its queue, the writable errors. */
  close(): void;
}

/** The datagram fields {@linkcode UdpFlowTable.deliver} reads; reusable. */
export interface UdpDatagramIn {
  /** Our address (the destination the client used). */
  localAddress: IpAddress;
  /** Our port. */
  localPort: number;
  /** The client's address. */
  remoteAddress: IpAddress;
  /** The client's port. */
  remotePort: number;
  /** The payload; copied when queued. */
  payload: Uint8Array;
  /** Who sent it (e.g. the WireGuard peer); a flow it opens keeps it as its `source`. */
  source?: unknown;
}

/** Settings of a {@linkcode UdpFlowTable}. */
export interface UdpFlowTableOptions {
  /** Sends one datagram of `flow` (called from {@linkcode UdpFlowTable.flush}). */
  send(flow: UdpFlow, payload: Uint8Array, now: number): void;
  /** Called when a flow queued a datagram to send outside `poll`. */
  wake?(): void;
  /** Most flows at once (default 1024); see the module doc for which flow a new one evicts. */
  maxFlows?: number;
  /** Most flows of one source (default `maxFlows`); the source `undefined` has no quota. */
  maxFlowsPerSource?: number;
  /** Idle timeout in ms (default 60 000). */
  idleTimeout?: number;
  /** Most datagrams queued for a reader (default 64). */
  queueLength?: number;
  /** Most payload bytes queued for a reader (default 256 KiB). */
  queueBytes?: number;
  /** Most datagrams queued to send per flow before `write()` waits (default 64). */
  sendQueueLength?: number;
  /** Largest payload a write may carry over IPv4 (default 65507). */
  maxPayloadV4?: number;
  /** Largest payload a write may carry over IPv6 (default 65527). */
  maxPayloadV6?: number;
}

/** Counters of a {@linkcode UdpFlowTable}. */
export interface UdpFlowStats {
  /** Flows now open. */
  flows: number;
  /** Flows opened in total. */
  opened: number;
  /** Flows closed by the idle timeout. */
  expired: number;
  /** Flows evicted to make room for a new one (by the table limit or a source's quota). */
  evicted: number;
  /** Datagrams queued for readers. */
  datagramsIn: number;
  /** Datagrams sent from writables. */
  datagramsOut: number;
  /** Queued datagrams dropped because the reader's queue was full (drop-oldest). */
  queueDrops: number;
  /** Datagrams dropped because the flow's readable was cancelled. */
  noReaderDrops: number;
}

class Flow implements UdpFlow {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddressBytes: IpAddress;
  readonly remoteAddressBytes: IpAddress;
  readonly ipVersion: 4 | 6;
  readonly source: unknown;
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  readonly closed: Promise<void>;
  readonly key: string;
  lastActive: number;
  gone = false;
  // Reader queue: a ring of datagrams.
  queue: (Uint8Array | undefined)[];
  head = 0;
  count = 0;
  bytes = 0;
  readerWaiting = false;
  readerCancelled = false;
  readController!: ReadableStreamDefaultController<Uint8Array>;
  writeController!: WritableStreamDefaultController;
  // Send queue.
  out: Uint8Array[] = [];
  resumeWrite: (() => void) | null = null;
  writerClosed = false;
  #table: UdpFlowTable;
  #resolveClosed!: () => void;

  constructor(table: UdpFlowTable, d: UdpDatagramIn, key: string, now: number) {
    this.#table = table;
    this.key = key;
    this.localAddressBytes = d.localAddress.slice();
    this.remoteAddressBytes = d.remoteAddress.slice();
    this.localAddress = formatAddress(this.localAddressBytes);
    this.remoteAddress = formatAddress(this.remoteAddressBytes);
    this.localPort = d.localPort;
    this.remotePort = d.remotePort;
    this.ipVersion = d.localAddress.length === 4 ? 4 : 6;
    this.source = d.source;
    this.lastActive = now;
    this.queue = new Array(table.queueLength);
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
    this.readable = new ReadableStream<Uint8Array>({
      start: (c) => {
        this.readController = c;
      },
      pull: () => {
        if (this.count > 0) {
          this.readController.enqueue(this.shift());
          if (this.gone && this.count === 0) this.readController.close();
        } else if (this.gone) {
          this.readController.close();
        } else {
          this.readerWaiting = true;
        }
      },
      cancel: () => {
        this.readerCancelled = true;
        this.readerWaiting = false;
        this.clearQueue();
        if (this.writerClosed) this.#table.remove(this);
      },
    }, { highWaterMark: 0 });
    this.writable = new WritableStream<Uint8Array>({
      start: (c) => {
        this.writeController = c;
      },
      write: (chunk) => {
        if (!(chunk instanceof Uint8Array)) {
          throw new TypeError("A UDP flow's writable takes Uint8Array chunks");
        }
        const max = this.ipVersion === 4 ? table.maxPayloadV4 : table.maxPayloadV6;
        if (chunk.length > max) {
          throw new RangeError(`A UDP datagram carries at most ${max} bytes, not ${chunk.length}`);
        }
        if (this.gone) throw new Error("The UDP flow is closed");
        this.out.push(chunk.slice());
        this.#table.queueSend(this);
        if (this.out.length >= table.sendQueueLength) {
          return new Promise<void>((resolve) => this.resumeWrite = resolve);
        }
      },
      close: () => this.#writerDone(),
      abort: () => this.#writerDone(),
    });
  }

  #writerDone(): void {
    this.writerClosed = true;
    if (this.readerCancelled) this.#table.remove(this);
  }

  push(payload: Uint8Array): void {
    if (this.readerWaiting) {
      this.readerWaiting = false;
      this.readController.enqueue(payload.slice());
      return;
    }
    const table = this.#table;
    while (
      this.count > 0 &&
      (this.count >= table.queueLength || this.bytes + payload.length > table.queueBytes)
    ) {
      this.shift();
      table.countQueueDrop();
    }
    if (payload.length > table.queueBytes) {
      table.countQueueDrop();
      return;
    }
    const at = (this.head + this.count) % this.queue.length;
    this.queue[at] = payload.slice();
    this.count++;
    this.bytes += payload.length;
  }

  shift(): Uint8Array {
    const item = this.queue[this.head]!;
    this.queue[this.head] = undefined;
    this.head = (this.head + 1) % this.queue.length;
    this.count--;
    this.bytes -= item.length;
    return item;
  }

  clearQueue(): void {
    this.queue.fill(undefined);
    this.head = 0;
    this.count = 0;
    this.bytes = 0;
  }

  /** Ends the flow (called by the table once removed). */
  shutdown(reason: string): void {
    if (this.gone) return;
    this.gone = true;
    if (!this.readerCancelled && this.count === 0) {
      try {
        this.readController.close();
      } catch { /* already closed */ }
      this.readerWaiting = false;
    }
    if (!this.writerClosed) {
      this.writeController.error(new Error(`The UDP flow ${reason}`));
    }
    this.out.length = 0;
    const resume = this.resumeWrite;
    this.resumeWrite = null;
    resume?.();
    this.#resolveClosed();
  }

  close(): void {
    this.#table.remove(this);
  }
}

/** The UDP flows of a stack. */
export class UdpFlowTable {
  /** Most datagrams queued for a reader. */
  readonly queueLength: number;
  /** Most payload bytes queued for a reader. */
  readonly queueBytes: number;
  /** Most datagrams queued to send per flow before `write()` waits. */
  readonly sendQueueLength: number;
  /** Largest payload of a write over IPv4. */
  readonly maxPayloadV4: number;
  /** Largest payload of a write over IPv6. */
  readonly maxPayloadV6: number;
  #send: UdpFlowTableOptions["send"];
  #wake: () => void;
  #maxFlows: number;
  #maxPerSource: number;
  #idle: number;
  #flows = new Map<string, Flow>();
  /** Flow keys by source, for the quotas. */
  #bySource = new SourceTable();
  #sending = new Set<Flow>();
  #nextCheck = Infinity;
  #stats = {
    opened: 0,
    expired: 0,
    evicted: 0,
    datagramsIn: 0,
    datagramsOut: 0,
    queueDrops: 0,
    noReaderDrops: 0,
  };

  /** Creates an empty table. Throws a `RangeError` on a non-positive limit. */
  constructor(options: UdpFlowTableOptions) {
    this.#send = options.send;
    this.#wake = options.wake ?? (() => {});
    this.#maxFlows = positiveInteger(options.maxFlows ?? 1024, "maxFlows");
    this.#maxPerSource = positiveInteger(
      options.maxFlowsPerSource ?? this.#maxFlows,
      "maxFlowsPerSource",
    );
    this.#idle = positiveInteger(options.idleTimeout ?? 60_000, "idleTimeout");
    this.queueLength = positiveInteger(options.queueLength ?? 64, "queueLength");
    this.queueBytes = positiveInteger(options.queueBytes ?? 256 * 1024, "queueBytes");
    this.sendQueueLength = positiveInteger(options.sendQueueLength ?? 64, "sendQueueLength");
    this.maxPayloadV4 = positiveInteger(options.maxPayloadV4 ?? 65507, "maxPayloadV4");
    this.maxPayloadV6 = positiveInteger(options.maxPayloadV6 ?? 65527, "maxPayloadV6");
  }

  /** Flows now open. */
  get size(): number {
    return this.#flows.size;
  }

  /** Flows of `source` open now. */
  sourceCount(source: unknown): number {
    return this.#bySource.count(source);
  }

  /** True when some flow has datagrams waiting for {@linkcode UdpFlowTable.flush}. */
  get hasPendingSends(): boolean {
    return this.#sending.size > 0;
  }

  /** A snapshot of the counters. */
  stats(): UdpFlowStats {
    return { flows: this.#flows.size, ...this.#stats };
  }

  /**
   * Queues a datagram on its existing flow and returns `true`, or returns
   * `false` when no flow matches (see {@linkcode UdpFlowTable.open}).
   */
  deliver(d: UdpDatagramIn, now: number): boolean {
    const flow = this.#flows.get(flowKey(d));
    if (!flow) return false;
    this.#enqueue(flow, d.payload, now);
    return true;
  }

  /**
   * Opens a flow for a datagram that matched none, queues the datagram on it
   * and returns the flow. When its source is at its quota or the table is
   * full, a flow is evicted first (see the module doc).
   */
  open(d: UdpDatagramIn, now: number): UdpFlow {
    const key = flowKey(d);
    const existing = this.#flows.get(key);
    if (existing) {
      this.#enqueue(existing, d.payload, now);
      return existing;
    }
    this.#makeRoom(d.source);
    const flow = new Flow(this, d, key, now);
    this.#flows.set(key, flow);
    this.#bySource.add(flow.source, key);
    this.#stats.opened++;
    if (now + this.#idle < this.#nextCheck) this.#nextCheck = now + this.#idle;
    this.#enqueue(flow, d.payload, now);
    return flow;
  }

  /** Sends every queued outgoing datagram through `options.send`. */
  flush(now: number): void {
    if (this.#sending.size === 0) return;
    for (const flow of this.#sending) {
      this.#sending.delete(flow);
      if (flow.gone) continue;
      const out = flow.out;
      flow.out = [];
      flow.lastActive = now;
      for (let i = 0; i < out.length; i++) {
        this.#stats.datagramsOut++;
        this.#send(flow, out[i], now);
      }
      const resume = flow.resumeWrite;
      flow.resumeWrite = null;
      resume?.();
    }
  }

  /** Sends queued datagrams and closes idle flows. */
  poll(now: number): void {
    this.flush(now);
    if (now < this.#nextCheck) return;
    let next = Infinity;
    for (const flow of this.#flows.values()) {
      const expires = flow.lastActive + this.#idle;
      if (expires <= now) {
        this.#stats.expired++;
        this.#removeFlow(flow, "expired");
      } else if (expires < next) {
        next = expires;
      }
    }
    this.#nextCheck = next;
  }

  /** When `poll` is next needed: `-Infinity` when sends are queued, else the next idle check. */
  nextDeadline(): number {
    return this.#sending.size > 0 ? -Infinity : this.#nextCheck;
  }

  /** Closes every flow. */
  closeAll(): void {
    for (const flow of this.#flows.values()) this.#removeFlow(flow, "was closed");
  }

  /** @internal Removes a flow on its own request. */
  remove(flow: UdpFlow): void {
    if (flow instanceof Flow && this.#flows.get(flow.key) === flow) {
      this.#removeFlow(flow, "was closed");
    }
  }

  /** @internal A flow has a datagram to send. */
  queueSend(flow: UdpFlow): void {
    if (!(flow instanceof Flow)) return;
    const first = this.#sending.size === 0;
    this.#sending.add(flow);
    if (first) this.#wake();
  }

  /** @internal Counts a drop-oldest. */
  countQueueDrop(): void {
    this.#stats.queueDrops++;
  }

  #enqueue(flow: Flow, payload: Uint8Array, now: number): void {
    flow.lastActive = now;
    if (flow.readerCancelled) {
      this.#stats.noReaderDrops++;
      return;
    }
    this.#stats.datagramsIn++;
    flow.push(payload);
  }

  /**
   * Evicts one flow when one more of `source` would exceed its quota or the
   * table: of the source the quota rules pick, the least recently used of
   * its {@linkcode EVICTION_SAMPLE} oldest flows (a bounded look, so that a
   * flood of new flows costs the same per datagram however many are open).
   */
  #makeRoom(source: unknown): void {
    const by = this.#bySource;
    const victim = by.victim(source, this.#maxPerSource, this.#maxFlows);
    if (victim == null) return;
    let lru: Flow | undefined;
    let looked = 0;
    for (const key of by.keys(this.#flows.get(victim)!.source)) {
      const f = this.#flows.get(key)!;
      if (!lru || f.lastActive < lru.lastActive) lru = f;
      if (++looked === EVICTION_SAMPLE) break;
    }
    this.#stats.evicted++;
    this.#removeFlow(lru!, "was evicted");
  }

  #removeFlow(flow: Flow, reason: string): void {
    this.#flows.delete(flow.key);
    this.#bySource.delete(flow.source, flow.key);
    this.#sending.delete(flow);
    flow.shutdown(reason);
  }
}

/** How many of a source's oldest flows eviction looks at for the least recently used. */
const EVICTION_SAMPLE = 8;

function flowKey(d: UdpDatagramIn): string {
  let key = String.fromCharCode(d.localPort, d.remotePort);
  const a = d.localAddress, b = d.remoteAddress;
  for (let i = 0; i < a.length; i++) key += String.fromCharCode(a[i]);
  for (let i = 0; i < b.length; i++) key += String.fromCharCode(b[i]);
  return key;
}
