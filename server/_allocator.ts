/**
 * Giving memory back to the system after connection churn (internal to
 * `serve()`): Deno allocates array buffers and its own Rust objects with
 * glibc's `malloc`, and glibc keeps what was freed for reuse. After
 * thousands of connections and UDP flows have closed, that was most of the
 * server's RSS (a churn soak: 85 MiB of free heap kept, RSS 2.6× its idle
 * size). Two things, on Linux with glibc when `--allow-ffi` is granted:
 *
 * - {@linkcode tuneAllocator}: `M_MMAP_THRESHOLD` fixed at 128 KiB (glibc's
 *   starting value). glibc otherwise raises it to the size of each mapped
 *   block freed (up to 32 MiB), after which such blocks are carved from the
 *   heap, where a few small blocks left between them keep it from
 *   shrinking. Fixed, every block of 128 KiB and more is mapped on its own,
 *   unmapped when freed, and resident only in the pages written: upstream
 *   UDP receive buffers are made that size ({@linkcode udpReceiveSize}), so
 *   an open flow costs the pages its datagrams touched (about 5 KiB for
 *   small ones), not 64 KiB, and nothing of it stays after it closes. Smaller blocks keep
 *   coming from the heap (mapping each 64 KiB relay read cost about 10× the
 *   time of taking it from the heap).
 * - {@linkcode IdleTrim} and {@linkcode Allocator.trim}: once the server is
 *   quiet after many connections and flows closed, `malloc_trim(0)` returns
 *   the free pages inside the heap ({@linkcode MemoryRelease}: then again
 *   after the next GCs). It runs off the JavaScript thread (a `nonblocking`
 *   FFI call), but the thread still waits whenever it allocates from an
 *   arena the trim holds locked, and Deno's timers and I/O do (measured: on
 *   a fragmented 1.5 GiB heap, a 120–300 ms trim stalled the thread as long
 *   either way; after a churn soak's trims took 4–34 ms). Hence only when
 *   quiet.
 *
 * Elsewhere (no FFI permission, musl, Windows, macOS, Node) {@linkcode loadAllocator}
 * returns why not, and nothing changes.
 *
 * @module
 */

import type { ServeLogRecord } from "./serve.ts";
import { unrefTimer } from "./_timers.ts";

/** glibc's `mallopt` parameter (malloc.h). */
const M_MMAP_THRESHOLD = -3;

/** Blocks of this size and larger are mapped on their own once tuned (bytes). */
export const MMAP_THRESHOLD = 128 * 1024;

const SYMBOLS = {
  gnu_get_libc_version: { parameters: [], result: "pointer" },
  mallopt: { parameters: ["i32", "i32"], result: "i32" },
  malloc_trim: { parameters: ["usize"], result: "i32", nonblocking: true },
} as const;

/** glibc's allocator controls. */
export interface Allocator {
  /** glibc's version, e.g. `"2.36"`. */
  readonly version: string;
  /**
   * `malloc_trim(0)` off the JavaScript thread: resolves with whether any
   * memory went back to the system.
   */
  trim(): Promise<boolean>;
  /** `mallopt(param, value)`: whether glibc took it. */
  mallopt(param: number, value: number): boolean;
}

let loaded: Allocator | string | undefined;
let tuned = false;

/**
 * glibc's allocator through FFI, or the reason it is not available here
 * (once per process).
 */
export function loadAllocator(): Allocator | string {
  return loaded ??= load();
}

function load(): Allocator | string {
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (deno?.build?.os !== "linux") return "not Linux under Deno";
  if (typeof deno.dlopen !== "function") return "no FFI";
  try {
    // Ask first: a bare dlopen would prompt on a terminal without --allow-ffi.
    if (deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
      return "no --allow-ffi";
    }
    // libc.so.6 with gnu_get_libc_version is glibc (musl has neither).
    const lib = deno.dlopen("libc.so.6", SYMBOLS);
    const c = lib.symbols;
    const version = deno.UnsafePointerView.getCString(c.gnu_get_libc_version()!);
    return {
      version,
      trim: async () => (await c.malloc_trim(0n)) === 1,
      mallopt: (param, value) => c.mallopt(param, value) === 1,
    };
  } catch (error) {
    return `no glibc (${error instanceof Error ? error.message : error})`;
  }
}

/**
 * Fixes glibc's mmap threshold at {@linkcode MMAP_THRESHOLD} (once per
 * process; it applies to the whole process): returns the allocator, or why
 * it was left as it was.
 */
export function tuneAllocator(): Allocator | string {
  const a = loadAllocator();
  if (typeof a === "string" || tuned) return a;
  if (!a.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) return "mallopt refused M_MMAP_THRESHOLD";
  tuned = true;
  return a;
}

/**
 * The size for a UDP receive buffer (a datagram is at most 64 KiB): the
 * mmap threshold once {@linkcode tuneAllocator} fixed it (a mapped block,
 * resident only where written), else 64 KiB.
 */
export function udpReceiveSize(): number {
  return tuned ? MMAP_THRESHOLD : 65536;
}

/** Options of {@linkcode IdleTrim}. */
export interface IdleTrimOptions {
  /** Connections and flows that must have closed since the last trim (default 256). */
  minClosed?: number;
  /**
   * How long nothing may have opened or closed before the trim (ms; default
   * 60 000: V8's idle-time memory reducer frees dead buffers about 30 s
   * after allocation slowed down, and the trim should come after that).
   */
  quietMs?: number;
}

/**
 * When to trim: once at least `minClosed` connections and flows have
 * closed since the last trim, and nothing opened or closed for `quietMs`.
 * A server with steady traffic is never trimmed (the trim would only find
 * memory about to be reused, and could make the JavaScript thread wait on
 * an arena lock).
 */
export class IdleTrim {
  readonly #minClosed: number;
  readonly #quietMs: number;
  #trimmedAt = 0;
  #closed = 0;
  #open = 0;
  #since = 0;

  constructor(options: IdleTrimOptions = {}) {
    this.#minClosed = options.minClosed ?? 256;
    this.#quietMs = options.quietMs ?? 60_000;
  }

  /**
   * Called now and then with the connections and flows closed so far (a
   * running total) and open now, at `now` (monotonic ms): `true` when it
   * is time to trim (then counted as done).
   */
  check(closed: number, open: number, now: number): boolean {
    if (closed !== this.#closed || open !== this.#open) {
      this.#closed = closed;
      this.#open = open;
      this.#since = now;
      return false;
    }
    if (closed - this.#trimmedAt < this.#minClosed || now - this.#since < this.#quietMs) {
      return false;
    }
    this.#trimmedAt = closed;
    return true;
  }
}

/** What {@linkcode MemoryRelease} needs. */
export interface MemoryReleaseOptions {
  /** TCP connections and UDP flows closed so far (a running total) and open now. */
  counts(): { closed: number; open: number };
  /** Log sink (`memory` at start, `memory-trim` after each trim, both debug). */
  log: (record: ServeLogRecord) => void;
  /** Drops buffers kept for reuse, before each trim. */
  release?: () => void;
  /** The allocator (default {@linkcode tuneAllocator}'s), or why there is none. */
  allocator?: Allocator | string;
  /** When to trim. */
  policy?: IdleTrimOptions;
  /** How often to look (ms; default the policy's `quietMs`, at most 10 000). */
  everyMs?: number;
  /** Monotonic clock (ms; default `performance.now`). */
  now?: () => number;
}

/** Trims after the GCs that follow a quiet spell's trim (at most). */
export const TRIMS_AFTER_GC = 3;

/**
 * The server's part: tunes the allocator at start, then looks every
 * `everyMs` whether {@linkcode IdleTrim} says to trim, and trims (one at a
 * time). Memory that V8 had not collected yet is freed only by a later GC,
 * into glibc's free lists: so after such a trim, the next
 * {@linkcode TRIMS_AFTER_GC} GCs (seen through a `FinalizationRegistry`
 * sentinel) each trim again, as long as nothing opened or closed. Without
 * glibc through FFI it logs why once and does nothing more.
 */
export class MemoryRelease {
  readonly #o: MemoryReleaseOptions;
  readonly #allocator: Allocator | undefined;
  readonly #policy: IdleTrim;
  readonly #now: () => number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #trimming: Promise<void> | undefined;
  /** Counts at the quiet spell's trim, while GCs may still trim. */
  #quiet: { closed: number; open: number } | undefined;
  #afterGcLeft = 0;
  readonly #gcs = new FinalizationRegistry<undefined>(() => void this.afterGc());

  constructor(options: MemoryReleaseOptions) {
    this.#o = options;
    this.#policy = new IdleTrim(options.policy);
    this.#now = options.now ?? (() => performance.now());
    const a = options.allocator ?? tuneAllocator();
    if (typeof a === "string") {
      options.log({ level: "debug", event: "memory", release: false, reason: a });
      return;
    }
    this.#allocator = a;
    options.log({
      level: "debug",
      event: "memory",
      release: true,
      glibc: a.version,
      mmapThreshold: MMAP_THRESHOLD,
    });
  }

  /** Starts looking (unless there is no allocator to trim). */
  start(): this {
    if (this.#allocator && this.#timer === undefined) {
      const every = this.#o.everyMs ?? Math.min(10_000, this.#o.policy?.quietMs ?? 10_000);
      this.#timer = setInterval(() => void this.check(), every);
      unrefTimer(this.#timer);
    }
    return this;
  }

  /** Stops looking; resolves once a trim under way has finished. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#afterGcLeft = 0;
    await this.#trimming;
  }

  /** One look: trims when the policy says so; resolves after the trim (if any). */
  check(): Promise<void> {
    if (!this.#allocator || this.#trimming) return this.#trimming ?? Promise.resolve();
    const { closed, open } = this.#o.counts();
    if (!this.#policy.check(closed, open, this.#now())) return Promise.resolve();
    this.#o.release?.();
    this.#quiet = { closed, open };
    this.#afterGcLeft = TRIMS_AFTER_GC;
    return this.#trim("quiet");
  }

  /**
   * After a GC (the sentinel's finalizer; tests call it directly): trims
   * again while a quiet spell's after-GC trims are left and nothing opened
   * or closed since.
   */
  afterGc(): Promise<void> {
    if (this.#afterGcLeft === 0 || !this.#quiet || this.#trimming) {
      return this.#trimming ?? Promise.resolve();
    }
    const { closed, open } = this.#o.counts();
    if (closed !== this.#quiet.closed || open !== this.#quiet.open) {
      this.#afterGcLeft = 0;
      return Promise.resolve();
    }
    this.#afterGcLeft--;
    return this.#trim("gc");
  }

  #trim(after: "quiet" | "gc"): Promise<void> {
    const started = this.#now();
    return this.#trimming = this.#allocator!.trim().then(
      (released) =>
        this.#o.log({
          level: "debug",
          event: "memory-trim",
          after,
          released,
          ms: this.#now() - started,
        }),
      (error) => this.#o.log({ level: "warn", event: "memory-trim-error", error: String(error) }),
    ).finally(() => {
      this.#trimming = undefined;
      // A fresh object, garbage at once: the next GC collects it and calls afterGc.
      if (this.#afterGcLeft > 0 && this.#timer !== undefined) this.#gcs.register({}, undefined);
    });
  }
}
