/**
 * Per-source accounting for the stack's tables (half-open SYNs, connections,
 * TIME_WAIT, fragments in reassembly). A "source" is whatever the owner
 * passes with each packet to {@linkcode NetStack.input}: for `serve()` the
 * WireGuard peer the packet came through. The stack never looks inside it;
 * packets without one share the source `undefined`, which has no quota of
 * its own.
 *
 * Each table has a global limit and a per-source quota. A new entry of a
 * source at its quota takes the place of that source's oldest entry; a new
 * entry when the whole table is full takes the place of the oldest entry of
 * the source holding the most. So one source never evicts another's entry
 * while it holds more than that source.
 *
 * @module
 */

/** Entry keys of one table, grouped by source, each group oldest first. */
export class SourceTable {
  #bySource = new Map<unknown, Set<string>>();
  #size = 0;

  /** Entries in the table. */
  get size(): number {
    return this.#size;
  }

  /** Entries of `source`. */
  count(source: unknown): number {
    return this.#bySource.get(source)?.size ?? 0;
  }

  /** Records entry `key` of `source` (as the newest). */
  add(source: unknown, key: string): void {
    let keys = this.#bySource.get(source);
    if (!keys) this.#bySource.set(source, keys = new Set());
    if (keys.has(key)) return;
    keys.add(key);
    this.#size++;
  }

  /** Forgets entry `key` of `source`; false when it was not recorded. */
  delete(source: unknown, key: string): boolean {
    const keys = this.#bySource.get(source);
    if (!keys?.delete(key)) return false;
    this.#size--;
    if (keys.size === 0) this.#bySource.delete(source);
    return true;
  }

  /** The entries of `source`, oldest first. */
  keys(source: unknown): Iterable<string> {
    return this.#bySource.get(source) ?? [];
  }

  /** The oldest entry of `source`. */
  oldest(source: unknown): string | undefined {
    return this.#bySource.get(source)?.values().next().value;
  }

  /** The source holding the most entries (the first found among equals). */
  heaviest(): unknown {
    let best: unknown = undefined;
    let most = 0;
    for (const [source, keys] of this.#bySource) {
      if (keys.size > most) {
        most = keys.size;
        best = source;
      }
    }
    return best;
  }

  /**
   * The entry that must go so that one more entry of `source` fits under
   * `quota` (per source; not applied to the source `undefined`) and `limit`
   * (the table), or `undefined` when it fits as is. `filter` may restrict
   * the candidates (e.g. to entries that may be evicted); when no candidate
   * passes, `null`: the new entry must be refused.
   */
  victim(
    source: unknown,
    quota: number,
    limit: number,
    filter?: (key: string) => boolean,
  ): string | null | undefined {
    let from = source;
    if (source === undefined || this.count(source) < quota) {
      if (this.#size < limit) return undefined;
      // From the source holding the most, unless that is a tie with `source`:
      // then from `source` itself (never from one that holds no more than it).
      const heaviest = this.heaviest();
      if (this.count(heaviest) > this.count(source)) from = heaviest;
    }
    const keys = this.#bySource.get(from);
    if (keys) { for (const key of keys) if (!filter || filter(key)) return key; }
    return null;
  }
}

/**
 * Bytes held for one source across its connections (TCP send buffers): a
 * connection takes bytes only while the source is under its quota, and
 * connections that wait are woken when bytes are freed.
 */
export class ByteBudget {
  /** Bytes held now. */
  used = 0;
  /** Most bytes. */
  readonly limit: number;
  #waiting = new Set<() => void>();

  /** A budget of `limit` bytes. */
  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes that may still be taken. */
  get free(): number {
    return Math.max(0, this.limit - this.used);
  }

  /** Calls `wake` once when bytes are next freed. */
  wait(wake: () => void): void {
    this.#waiting.add(wake);
  }

  /** Frees `n` bytes and wakes the waiters. */
  release(n: number): void {
    this.used -= n;
    if (this.#waiting.size === 0 || this.used >= this.limit) return;
    const waiting = [...this.#waiting];
    this.#waiting.clear();
    for (const wake of waiting) wake();
  }
}
