/**
 * The stream objects `serve()` hands to handlers and its async iterator
 * (internal).
 *
 * @module
 */

import type { TcpConnection } from "@wgstack/netstack";
import type { FlowInfo, PeerInfo, TcpStream } from "./serve.ts";
import type { UdpEndpoint } from "./udp.ts";

/** A {@linkcode TcpStream}: the connection's streams are made only when used. */
export class ServerTcpStream implements TcpStream {
  readonly protocol = "tcp";
  readonly peer: PeerInfo;
  readonly ipVersion: 4 | 6;
  readonly source: UdpEndpoint;
  readonly destination: UdpEndpoint;
  readonly closed: Promise<void>;
  #conn: TcpConnection;
  constructor(info: FlowInfo, conn: TcpConnection) {
    this.peer = info.peer;
    this.ipVersion = info.ipVersion;
    this.source = info.source;
    this.destination = info.destination;
    this.closed = conn.closed;
    this.#conn = conn;
  }
  get readable(): ReadableStream<Uint8Array> {
    return this.#conn.readable;
  }
  get writable(): WritableStream<Uint8Array> {
    return this.#conn.writable;
  }
  read(): Promise<Uint8Array | null> {
    return this.#conn.read();
  }
  write(chunk: Uint8Array): Promise<void> {
    return this.#conn.write(chunk);
  }
  close(): void {
    this.#conn.close();
  }
  reset(): void {
    this.#conn.reset();
  }
}

/** A bounded queue with async take, for the server's async iterator. */
export class StreamQueue<T> {
  #items: T[] = [];
  #waiters: ((r: IteratorResult<T>) => void)[] = [];
  #closed = false;
  /** A queue holding at most `limit` items nobody waits for. */
  constructor(readonly limit: number) {}
  /** Hands `item` to a waiting taker or queues it; false when full or closed. */
  push(item: T): boolean {
    if (this.#closed) return false;
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter({ value: item, done: false });
      return true;
    }
    if (this.#items.length >= this.limit) return false;
    this.#items.push(item);
    return true;
  }
  /** The next item, waiting for one; done once closed and empty. */
  next(): Promise<IteratorResult<T>> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.#closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
  /** Closes the queue: waiters are done; returns the items nobody took. */
  close(): T[] {
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) w({ value: undefined, done: true });
    return this.#items.splice(0);
  }
}
