/**
 * A seeded, repeatable fuzz harness. A target is a parser or a core with its
 * own state: it generates structure-aware inputs from a seeded generator
 * (valid MAC1, valid checksums, mutations of real flows), feeds them, and
 * reports the sizes of its tables. {@linkcode runFuzz} counts what threw
 * (must be 0), checks every table against its bound as it goes, and measures
 * inputs per second and the heap at the start and the end.
 *
 * Adding a parser is a few lines:
 *
 * ```ts ignore
 * export const myParser: FuzzTarget<string> = {
 *   name: "my-parser",
 *   setup: () => ({
 *     generate: (rng) => mutateText(rng, rng.pick(SAMPLES)),
 *     feed: (text) => expectOnly((e) => e instanceof MyParseError, () => parseMine(text)),
 *     show: (text) => JSON.stringify(text),
 *   }),
 * };
 * ```
 *
 * and one line in `TARGETS` of `./targets.ts`. The CI share runs in
 * `tests/fuzz_test.ts`, the million in `bench/fuzz_bench.ts`.
 *
 * @module
 */

/** An environment variable, or undefined without `--allow-env`. */
export function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** mulberry32: small, seedable, good enough to pick mutations. */
export class Rng {
  #s: number;
  /** A generator whose whole sequence follows from `seed`. */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** One of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  /** Fills `b` with random bytes (the shape of the cores' `random` option). */
  fill = (b: Uint8Array): void => {
    for (let i = 0; i < b.length; i++) b[i] = this.int(256);
  };
}

/** A target's state for one run. */
export interface FuzzRun<T> {
  /** One input, from `rng` only (so a seed and an index reproduce it). */
  generate(rng: Rng): T;
  /**
   * Feeds one input at simulated time `now` (ms). Expected rejections (a
   * parser's documented error) are caught here; anything that escapes counts
   * as a crash.
   */
  feed(input: T, now: number): void;
  /** The input as text for a crash report (hex, or the string quoted). */
  show(input: T): string;
  /** Sizes of the target's tables now (connections, indices, flows, ...). */
  tables?(): Record<string, number>;
  /** Upper bounds of those tables; checked every `tickEvery` inputs. */
  bounds?: Record<string, number>;
  /** Counters that show how deep the inputs went (drops by reason, packets delivered, ...). */
  reached?(): Record<string, number>;
  /** Periodic work at `now` (timers, pumping a peer); may await. */
  tick?(now: number): void | Promise<void>;
  /** Checks after the run (e.g. the legitimate peer still works); throws when broken. */
  finish?(now: number): void | Promise<void>;
}

/** A parser or core to fuzz. */
export interface FuzzTarget<T = unknown> {
  /** Short name, e.g. `"wireguard-device"`. */
  readonly name: string;
  /** What the target reaches, one line for the report. */
  readonly covers: string;
  /** Simulated milliseconds between inputs (default 0.125; rate limits depend on it). */
  readonly msPerInput?: number;
  /** Builds the state and the corpus (captured real messages, flows, files). */
  setup(rng: Rng): FuzzRun<T> | Promise<FuzzRun<T>>;
}

/** One input that threw (or broke a bound). */
export interface FuzzCrash {
  /** Index of the input in the run (reproduce: same seed, run to this index). */
  index: number;
  /** The error message, first stack frame included. */
  error: string;
  /** The input, from {@linkcode FuzzRun.show}. */
  input: string;
}

/** What {@linkcode runFuzz} measured. */
export interface FuzzReport {
  /** The target's name. */
  target: string;
  /** The seed. */
  seed: number;
  /** Inputs fed. */
  inputs: number;
  /** Wall time of the feeding loop (ms), ticks included. */
  ms: number;
  /** Inputs that threw. */
  throws: number;
  /** Unhandled promise rejections during the run. */
  unhandled: number;
  /** The first few crashes. */
  crashes: FuzzCrash[];
  /** Table sizes after setup. */
  tablesStart: Record<string, number>;
  /** Table sizes at the end. */
  tablesEnd: Record<string, number>;
  /** The largest size each table reached at a check. */
  tablesMax: Record<string, number>;
  /** Tables that went over their bound, with the size seen. */
  overBound: Record<string, number>;
  /** `heapUsed` after setup and at the end (after a GC when `--expose-gc`). */
  heapStart: number;
  /** See `heapStart`. */
  heapEnd: number;
  /** The target's depth counters at the end (see {@linkcode FuzzRun.reached}). */
  reached: Record<string, number>;
  /** Error of `finish()`, if it failed. */
  finishError?: string;
}

/** Options of {@linkcode runFuzz}. */
export interface RunFuzzOptions {
  /** Seed of the run. */
  seed: number;
  /** Inputs to feed. */
  inputs: number;
  /** Inputs between ticks and bound checks (default 256). */
  tickEvery?: number;
  /** Crashes kept in the report (default 5). */
  keepCrashes?: number;
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const frame = e.stack?.split("\n").find((l) => l.trim().startsWith("at ")) ?? "";
    return `${e.name}: ${e.message} ${frame.trim()}`;
  }
  return String(e);
}

function heapNow(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) gc();
  return Deno.memoryUsage().heapUsed;
}

/** Runs one target: `inputs` inputs from `seed`; never throws for a crash, reports it. */
export async function runFuzz<T>(
  target: FuzzTarget<T>,
  options: RunFuzzOptions,
): Promise<FuzzReport> {
  const { seed, inputs } = options;
  const tickEvery = options.tickEvery ?? 256;
  const msPerInput = target.msPerInput ?? 0.125;
  const keep = options.keepCrashes ?? 5;
  let unhandled = 0;
  const onUnhandled = (e: PromiseRejectionEvent) => {
    unhandled++;
    e.preventDefault();
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  try {
    const rng = new Rng(seed);
    const run = await target.setup(new Rng((seed ^ 0x5e7a9) >>> 0));
    const tables = () => run.tables?.() ?? {};
    const tablesStart = tables();
    const tablesMax: Record<string, number> = { ...tablesStart };
    const overBound: Record<string, number> = {};
    const check = () => {
      for (const [k, v] of Object.entries(tables())) {
        if (!(v <= (tablesMax[k] ?? -Infinity))) tablesMax[k] = v;
        const bound = run.bounds?.[k];
        if (bound !== undefined && v > bound && !(v <= (overBound[k] ?? -Infinity))) {
          overBound[k] = v;
        }
      }
    };
    const crashes: FuzzCrash[] = [];
    let throws = 0;
    const heapStart = heapNow();
    const start = performance.now();
    let now = 1000;
    for (let i = 0; i < inputs; i++) {
      const input = run.generate(rng);
      try {
        run.feed(input, now);
      } catch (e) {
        throws++;
        if (crashes.length < keep) {
          crashes.push({ index: i, error: describe(e), input: run.show(input) });
        }
      }
      now += msPerInput;
      if ((i + 1) % tickEvery === 0) {
        try {
          await run.tick?.(now);
        } catch (e) {
          throws++;
          if (crashes.length < keep) {
            crashes.push({ index: i, error: `tick: ${describe(e)}`, input: "" });
          }
        }
        check();
      }
    }
    check();
    const ms = performance.now() - start;
    let finishError: string | undefined;
    try {
      await run.finish?.(now);
    } catch (e) {
      finishError = describe(e);
    }
    const reached = run.reached?.() ?? {};
    await new Promise((r) => setTimeout(r, 0)); // let rejections surface
    return {
      target: target.name,
      seed,
      inputs,
      ms,
      throws,
      unhandled,
      crashes,
      tablesStart,
      tablesEnd: tables(),
      tablesMax,
      overBound,
      heapStart,
      heapEnd: heapNow(),
      reached,
      ...(finishError === undefined ? {} : { finishError }),
    };
  } finally {
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
  }
}

/** Runs `parse`; an error `expected` accepts is a clean rejection, any other escapes. */
export function expectOnly(expected: (e: unknown) => boolean, parse: () => unknown): void {
  try {
    parse();
  } catch (e) {
    if (!expected(e)) throw e;
  }
}

/** Reads every getter of `view` (a parsed view's accessors must work on any bytes). */
export function touchGetters(view: unknown): void {
  if (typeof view !== "object" || view === null) return;
  for (
    let proto = Object.getPrototypeOf(view);
    proto !== Object.prototype;
    proto = Object.getPrototypeOf(proto)
  ) {
    for (const [key, d] of Object.entries(Object.getOwnPropertyDescriptors(proto))) {
      if (d.get !== undefined) void (view as Record<string, unknown>)[key];
    }
  }
  for (const key of Object.keys(view)) void (view as Record<string, unknown>)[key];
}

/** Hex of `bytes` (at most 4 KiB of it). */
export function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes.subarray(0, 4096)) s += b.toString(16).padStart(2, "0");
  return bytes.length > 4096 ? `${s}… (${bytes.length} bytes)` : s;
}

/** Bytes of a hex string (for regression tests made from crash reports). */
export function fromHex(text: string): Uint8Array {
  const out = new Uint8Array(text.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0x40, 0x3f, 0x10, 0x20, 0xfe];

/**
 * A generic byte mutation of `input` (a copy): bit flips, interesting bytes,
 * truncation, extension, insertion, deletion, duplication of a range, or a
 * splice with `other`. One to three rounds.
 */
export function mutateBytes(rng: Rng, input: Uint8Array, other?: Uint8Array): Uint8Array {
  let p: Uint8Array = input.slice();
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    switch (rng.int(8)) {
      case 0: {
        const n = 1 + rng.int(8);
        for (let i = 0; i < n && p.length > 0; i++) p[rng.int(p.length)] ^= 1 << rng.int(8);
        break;
      }
      case 1:
        if (p.length > 0) p[rng.int(p.length)] = rng.pick(INTERESTING);
        break;
      case 2:
        p = p.subarray(0, rng.int(p.length + 1));
        break;
      case 3:
        p = concat(p, rng.bytes(1 + rng.int(64)));
        break;
      case 4: {
        const at = rng.int(p.length + 1);
        p = concat(p.subarray(0, at), rng.bytes(1 + rng.int(16)), p.subarray(at));
        break;
      }
      case 5: {
        const at = rng.int(p.length + 1);
        p = concat(p.subarray(0, at), p.subarray(Math.min(p.length, at + 1 + rng.int(16))));
        break;
      }
      case 6: {
        const at = rng.int(p.length + 1);
        const len = rng.int(Math.min(64, p.length - at) + 1);
        p = concat(p.subarray(0, at + len), p.subarray(at, at + len), p.subarray(at + len));
        break;
      }
      default:
        if (other !== undefined && other.length > 0) {
          const from = rng.int(other.length);
          const at = rng.int(p.length + 1);
          p = concat(p.subarray(0, at), other.subarray(from, from + 1 + rng.int(64)));
        }
    }
  }
  return p;
}

/** The concatenation of `parts`. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const part of parts) n += part.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const TOKENS = [
  "=",
  " = ",
  "[",
  "]",
  "[Peer]",
  "[Interface]",
  "#",
  ",",
  ":",
  "/",
  "\n",
  "\r\n",
  "\t",
  " ",
  "\0",
  "\u00ff",
  "\u{1f600}",
  "\ud800",
  "0",
  "-1",
  "65535",
  "65536",
  "4294967296",
  "1e9",
  "0x10",
  "NaN",
  "::",
  "[::1]",
  "%eth0",
  "255.255.255.255",
  "/128",
  "/33",
  "off",
  "on",
  "true",
  "=".repeat(44),
  "A".repeat(44),
  "A".repeat(43) + "=",
  "a".repeat(300),
];

/**
 * A line-aware mutation of a text input: change, drop, duplicate or swap
 * lines; insert a token; flip a character; cut the text anywhere.
 */
export function mutateText(rng: Rng, text: string, tokens: readonly string[] = TOKENS): string {
  const lines = text.split("\n");
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    const i = rng.int(lines.length);
    switch (rng.int(8)) {
      case 0:
        lines.splice(i, 1);
        break;
      case 1:
        lines.splice(i, 0, lines[rng.int(lines.length)] ?? "");
        break;
      case 2: {
        const j = rng.int(lines.length);
        [lines[i], lines[j]] = [lines[j], lines[i]];
        break;
      }
      case 3: {
        const line = lines[i] ?? "";
        const at = rng.int(line.length + 1);
        lines[i] = line.slice(0, at) + rng.pick(tokens) + line.slice(at);
        break;
      }
      case 4: {
        const line = lines[i] ?? "";
        const eq = line.indexOf("=");
        lines[i] = eq < 0 ? line : line.slice(0, eq + 1) + " " + rng.pick(tokens);
        break;
      }
      case 5: {
        const line = lines[i] ?? "";
        if (line.length > 0) {
          const at = rng.int(line.length);
          const c = String.fromCharCode(line.charCodeAt(at) ^ (1 << rng.int(7)));
          lines[i] = line.slice(0, at) + c + line.slice(at + 1);
        }
        break;
      }
      case 6: {
        const line = lines[i] ?? "";
        lines[i] = line.slice(0, rng.int(line.length + 1));
        break;
      }
      default:
        lines[i] = (lines[i] ?? "").toUpperCase();
    }
  }
  return lines.join(rng.chance(0.05) ? "\r\n" : "\n");
}
