/**
 * Log lines of the CLI: one record per event, written as readable text or as
 * one JSON object per line (`--log-format json`), filtered by level.
 *
 * @module
 */

import type { LogLevel } from "./args.ts";

/** One log record: a level, an event name and any fields. */
export interface LogRecord {
  /** Severity. */
  level: LogLevel;
  /** What happened, e.g. `"tcp-close"`. */
  event: string;
  /** Details. Endpoints (`{address, port}`) are written as `address:port`. */
  [field: string]: unknown;
}

/** Writes records at or above its level. */
export interface Logger {
  /** Writes `record` when its level is at or above {@linkcode Logger.level}. */
  log(record: LogRecord): void;
  /** True when records of `level` are written. */
  enabled(level: LogLevel): boolean;
  /** The lowest level written. */
  readonly level: LogLevel;
}

/** Options of {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Lowest level written. Default `"info"`. */
  level?: LogLevel;
  /** `"text"` (default) or `"json"`. */
  format?: "text" | "json";
  /** Receives each finished line, without the newline. Default: standard output. */
  write?: (line: string) => void;
  /** The clock for timestamps. Default `() => new Date()`. */
  now?: () => Date;
}

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Fields formatted specially in text lines (in this order, before the rest). */
const LEAD_FIELDS = ["peer", "source", "destination"];

const encoder = new TextEncoder();

/**
 * Creates a logger.
 *
 * @example
 * ```ts
 * import { createLogger } from "./log.ts";
 * const lines: string[] = [];
 * const log = createLogger({ format: "json", write: (l) => lines.push(l) });
 * log.log({ level: "info", event: "listening", port: 51820 });
 * ```
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? "info";
  const min = RANK[level];
  const now = options.now ?? (() => new Date());
  const write = options.write ?? ((line: string) => {
    try {
      Deno.stdout.writeSync(encoder.encode(line + "\n"));
    } catch {
      // standard output closed: nothing sensible to do
    }
  });
  const format = options.format === "json" ? formatJson : formatText;
  return {
    level,
    enabled: (l) => RANK[l] >= min,
    log(record) {
      if (RANK[record.level] === undefined || RANK[record.level] < min) return;
      write(format(record, now()));
    },
  };
}

/** Formats a record as one JSON object: `time`, `level`, `event`, then the fields. */
export function formatJson(record: LogRecord, time: Date): string {
  const { level, event, ...fields } = record;
  const out: Record<string, unknown> = { time: time.toISOString(), level, event };
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined) out[key] = plain(value);
  }
  return JSON.stringify(out);
}

/**
 * Formats a record as a text line: time, level, event, the peer and
 * `source → destination`, then `key=value` pairs. Byte counts (`bytes*`
 * fields) and durations (`*Ms` fields) are made readable.
 */
export function formatText(record: LogRecord, time: Date): string {
  const { level, event, ...fields } = record;
  const parts = [time.toISOString(), level.toUpperCase().padEnd(5), event];
  if (fields.peer !== undefined) parts.push(String(fields.peer));
  if (fields.source !== undefined || fields.destination !== undefined) {
    parts.push(`${text(plain(fields.source))} → ${text(plain(fields.destination))}`);
  }
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined || LEAD_FIELDS.includes(key)) continue;
    parts.push(`${key}=${textField(key, value)}`);
  }
  return parts.join(" ");
}

function textField(key: string, value: unknown): string {
  if (typeof value === "number") {
    if (/^bytes/.test(key)) return formatBytes(value);
    if (/Ms$/.test(key)) return formatDuration(value);
  }
  const v = text(plain(value));
  // Quoted (and so escaped) when it has spaces, quotes, "=" or control characters: a
  // hostile name read from the network cannot forge or garble a line.
  // deno-lint-ignore no-control-regex
  return /[\s"=\x00-\x1f\x7f]/.test(v) || v === "" ? JSON.stringify(v) : v;
}

function text(value: unknown): string {
  if (typeof value === "string") return value;
  if (value === undefined) return "?";
  return JSON.stringify(value);
}

/** Turns endpoints into `address:port`, bytes into base64, errors into messages. */
function plain(value: unknown): unknown {
  if (value === null || typeof value !== "object") {
    return typeof value === "bigint" ? value.toString() : value;
  }
  if (value instanceof Error) return value.message;
  if (value instanceof Uint8Array) return btoa(String.fromCharCode(...value));
  const v = value as Record<string, unknown>;
  if (typeof v.address === "string" && typeof v.port === "number" && Object.keys(v).length <= 3) {
    return v.address.includes(":") ? `[${v.address}]:${v.port}` : `${v.address}:${v.port}`;
  }
  if (Array.isArray(value)) return value.map(plain);
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[k] = plain(x);
  return out;
}

/** `1234567` → `"1.2 MB"` (decimal units, as a person reads transfer sizes). */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n;
  let i = -1;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** `1234` → `"1.23s"`, `45` → `"45ms"`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)}s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

/** Options of {@linkcode LineSink}. */
export interface LineSinkOptions {
  /** Writes some of `bytes` (like `Deno.stdout.write`), resolving to how many. */
  write(bytes: Uint8Array): Promise<number>;
  /** Bytes waiting before new lines are dropped (counted). Default 1 MiB. */
  maxPending?: number;
}

/**
 * Log output that never blocks the caller: lines are queued and written in
 * the background. When the output is slower than the lines come (a flood
 * to a slow terminal or pipe), lines beyond `maxPending` bytes are dropped,
 * and a line saying how many follows once the output catches up.
 *
 * @example
 * ```ts ignore
 * const sink = new LineSink({ write: (b) => Deno.stdout.write(b) });
 * sink.line("hello");
 * await sink.flush();
 * ```
 */
export class LineSink {
  #write: (bytes: Uint8Array) => Promise<number>;
  #max: number;
  #pending: string[] = [];
  #bytes = 0;
  #dropped = 0;
  #writing: Promise<void> | undefined;

  /** Creates a sink in front of `options.write`. */
  constructor(options: LineSinkOptions) {
    this.#write = options.write;
    this.#max = options.maxPending ?? 1024 * 1024;
  }

  /** Lines dropped so far because the output was too slow. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Queues one line (a newline is added). */
  line(text: string): void {
    if (this.#bytes + text.length + 1 > this.#max) {
      this.#dropped++;
      return;
    }
    this.#pending.push(text + "\n");
    this.#bytes += text.length + 1;
    this.#writing ??= this.#drain();
  }

  /** Resolves once every queued line is written (or the output failed). */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  async #drain(): Promise<void> {
    let reported = this.#dropped;
    try {
      while (this.#pending.length > 0) {
        const text = this.#pending.join("");
        this.#pending = [];
        this.#bytes = 0;
        let bytes = encoder.encode(text);
        while (bytes.length > 0) bytes = bytes.subarray(await this.#write(bytes));
        if (this.#dropped > reported && this.#pending.length === 0) {
          this.#pending.push(
            `(${this.#dropped - reported} log lines dropped: the output was too slow)\n`,
          );
          reported = this.#dropped;
        }
      }
    } catch {
      // the output is gone (closed pipe): nothing more to do
      this.#pending = [];
      this.#bytes = 0;
    } finally {
      this.#writing = undefined;
    }
  }
}
