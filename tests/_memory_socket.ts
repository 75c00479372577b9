/**
 * An in-memory datagram link for tests and benchmarks of `serve()` (its
 * `socket` option): no network, no port.
 *
 * @module
 */

import type { UdpEndpoint, UdpSocket, UdpSocketStats } from "../server/udp.ts";

/**
 * One end of in-memory datagram links: what it sends arrives at the linked
 * socket of the destination address in a later task (`schedule`, default
 * `setTimeout(…, 0)`; a benchmark may pass `queueMicrotask`).
 */
export class MemorySocket implements UdpSocket {
  readonly #links = new Map<string, MemorySocket>();
  readonly #stats: UdpSocketStats = { received: 0, sent: 0, sendDropped: 0, sendErrors: 0 };
  readonly #schedule: (deliver: () => void) => void;
  #onDatagram: ((data: Uint8Array, from: UdpEndpoint) => void) | undefined;
  #closed = false;
  #resolveListen!: () => void;
  readonly #listening = new Promise<void>((resolve) => this.#resolveListen = resolve);

  /** A socket bound to `addr`, linked to nothing yet. */
  constructor(
    readonly addr: UdpEndpoint,
    schedule: (deliver: () => void) => void = (deliver) => setTimeout(deliver, 0),
  ) {
    this.#schedule = schedule;
  }

  /** Links this socket and `other` both ways. */
  link(other: MemorySocket): void {
    this.#links.set(`${other.addr.address}:${other.addr.port}`, other);
    other.#links.set(`${this.addr.address}:${this.addr.port}`, this);
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  listen(onDatagram: (data: Uint8Array, from: UdpEndpoint) => void): Promise<void> {
    this.#onDatagram = onDatagram;
    return this.#listening;
  }

  send(data: Uint8Array, to: UdpEndpoint): void {
    const other = this.#links.get(`${to.address}:${to.port}`);
    if (this.#closed || !other) {
      this.#stats.sendErrors++;
      return;
    }
    this.#stats.sent++;
    const copy = data.slice();
    this.#schedule(() => other.#deliver(copy, this.addr));
  }

  #deliver(data: Uint8Array, from: UdpEndpoint): void {
    if (this.#closed || !this.#onDatagram) return;
    this.#stats.received++;
    this.#onDatagram(data, from);
  }

  stats(): UdpSocketStats {
    return { ...this.#stats };
  }

  close(): void {
    this.#closed = true;
    this.#resolveListen();
  }
}
