/**
 * Aggregated logging of repetitive per-flow events: under a flood, a log
 * line per refused SYN would cost more than the SYN. The first few records
 * of an event in each window are written as they are; the rest are counted
 * and summed up once per window ("tcp-refused ×3,214 in 5 s").
 *
 * @module
 */

import type { ServeLogRecord } from "./serve.ts";
import { unrefTimer } from "./_timers.ts";

/** Options of {@linkcode LogLimiter}. */
export interface LogLimiterOptions {
  /** Where records go. */
  log: (record: ServeLogRecord) => void;
  /** The window in ms (default 5000). */
  windowMs?: number;
  /** Records of one event written in full per window (default 5). */
  burst?: number;
  /** The clock (default `performance.now`). */
  now?: () => number;
}

interface EventWindow {
  start: number;
  written: number;
  suppressed: number;
  level: ServeLogRecord["level"];
}

/**
 * Passes records through until an event repeats more than `burst` times in
 * a window, then counts them and writes one summary record per window with
 * `repeated` (how many were left out) and `windowMs`.
 *
 * @example
 * ```ts
 * import { LogLimiter } from "./_log_limit.ts";
 * const lines: unknown[] = [];
 * const limiter = new LogLimiter({ log: (r) => lines.push(r), burst: 1 });
 * for (let i = 0; i < 100; i++) limiter.log({ level: "info", event: "tcp-refused" });
 * limiter.flush(); // lines: the first record, then { event: "tcp-refused", repeated: 99, … }
 * ```
 */
export class LogLimiter {
  #log: (record: ServeLogRecord) => void;
  #windowMs: number;
  #burst: number;
  #now: () => number;
  #events = new Map<string, EventWindow>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** Creates a limiter in front of `options.log`. */
  constructor(options: LogLimiterOptions) {
    this.#log = options.log;
    this.#windowMs = options.windowMs ?? 5000;
    this.#burst = options.burst ?? 5;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Writes or counts `record` (keyed by its `event`). */
  log(record: ServeLogRecord): void {
    const now = this.#now();
    let w = this.#events.get(record.event);
    if (w && now - w.start >= this.#windowMs) {
      this.#summarise(record.event, w, now);
      w = undefined;
    }
    if (!w) {
      w = { start: now, written: 0, suppressed: 0, level: record.level };
      this.#events.set(record.event, w);
    }
    if (w.written < this.#burst) {
      w.written++;
      this.#log(record);
      return;
    }
    w.suppressed++;
    this.#arm();
  }

  /** Writes the summaries of every window with left-out records now. */
  flush(): void {
    const now = this.#now();
    for (const [event, w] of this.#events) this.#summarise(event, w, now);
    this.#events.clear();
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #summarise(event: string, w: EventWindow, now: number): void {
    this.#events.delete(event);
    if (w.suppressed === 0) return;
    this.#log({
      level: w.level,
      event,
      repeated: w.suppressed,
      windowMs: Math.round(Math.max(now - w.start, 0)),
      message: `${event} ×${w.suppressed.toLocaleString("en-US")} more in ${
        Math.round((now - w.start) / 1000)
      } s`,
    });
  }

  #arm(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      const now = this.#now();
      let pending = false;
      for (const [event, w] of this.#events) {
        if (now - w.start >= this.#windowMs) this.#summarise(event, w, now);
        else if (w.suppressed > 0) pending = true;
      }
      if (pending) this.#arm();
    }, this.#windowMs);
    unrefTimer(this.#timer);
  }
}
