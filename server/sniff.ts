/**
 * The hostname a TCP connection is for, read from the client's first bytes:
 * the `server_name` of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3) or
 * the `Host` header of an HTTP/1 request (RFC 9112 §3.2).
 *
 * The input is hostile: every length is checked against what is there,
 * nothing is read past `maxBytes`, and parsing never throws.
 * {@linkcode sniffStream} holds the first bytes only until the name is known
 * or the byte or time budget runs out; the bytes then go on unchanged.
 *
 * @module
 */

import { refTimer, unrefTimer } from "./_timers.ts";

/** Where a sniffed hostname came from. */
export type HostnameSource = "sni" | "http" | "quic" | "dns";

/** What {@linkcode sniffHostname} found in the bytes so far. */
export type SniffState =
  /** More bytes could still name a host. */
  | { done: false }
  /** Finished: `hostname` is set when one was found. */
  | { done: true; hostname?: string; source?: "sni" | "http" | "quic" };

/** Default most bytes held while sniffing (a post-quantum ClientHello is about 1.8 kB). */
export const SNIFF_MAX_BYTES = 16 * 1024;

const latin1 = new TextDecoder("latin1");
/** Finished without a name (not TLS/HTTP, malformed, or no name in it). */
const NO_NAME: SniffState = { done: true };

/**
 * Looks for a hostname in the first bytes a client sent.
 *
 * @example
 * ```ts
 * import { sniffHostname } from "./sniff.ts";
 * const req = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: Example.ORG:8080\r\n\r\n");
 * sniffHostname(req); // { done: true, hostname: "example.org", source: "http" }
 * ```
 */
export function sniffHostname(data: Uint8Array, maxBytes = SNIFF_MAX_BYTES): SniffState {
  if (data.length === 0) return { done: false };
  if (data[0] === 0x16) return tlsServerName(data, maxBytes);
  if (data[0] >= 0x41 && data[0] <= 0x5a) return httpHost(data, maxBytes);
  return NO_NAME;
}

/** A hostname as used for matching: lower case, no trailing dot, at most 255 characters. */
export function normalizeHostname(name: string): string | undefined {
  let n = name.toLowerCase();
  if (n.endsWith(".")) n = n.slice(0, -1);
  if (n.length === 0 || n.length > 255) return undefined;
  return n;
}

// --- TLS ---

/** The ClientHello's body once all of it arrived, joined from its records. */
function tlsServerName(data: Uint8Array, maxBytes: number): SniffState {
  // Handshake bytes from consecutive records of type 22 (RFC 8446 §5.1: a
  // handshake message may span records).
  const hs = new Uint8Array(Math.min(data.length, maxBytes));
  let hsLen = 0;
  let at = 0;
  let want = -1;
  while (at < data.length) {
    if (data.length - at < 5) return more(data, maxBytes);
    if (data[at] !== 0x16 || data[at + 1] !== 3) return NO_NAME;
    const len = (data[at + 3] << 8) | data[at + 4];
    if (len === 0 || len > 16384 + 256) return NO_NAME;
    const end = Math.min(at + 5 + len, data.length);
    const piece = data.subarray(at + 5, end);
    if (hsLen + piece.length > hs.length) return NO_NAME;
    hs.set(piece, hsLen);
    hsLen += piece.length;
    if (want < 0 && hsLen >= 4) {
      if (hs[0] !== 1) return NO_NAME; // not a ClientHello
      want = 4 + ((hs[1] << 16) | (hs[2] << 8) | hs[3]);
      if (want > maxBytes) return NO_NAME;
    }
    if (want >= 0 && hsLen >= want) return clientHelloName(hs.subarray(4, want));
    if (end < at + 5 + len) break; // the record goes on in bytes not yet here
    at = end;
  }
  return more(data, maxBytes);
}

/** Not finished yet, unless `maxBytes` are already here. */
function more(data: Uint8Array, maxBytes: number): SniffState {
  return data.length >= maxBytes ? NO_NAME : { done: false };
}

/**
 * The `server_name` of a ClientHello body (RFC 8446 §4.1.2: after the 4-byte
 * handshake header), as a finished {@linkcode SniffState}. A ClientHello
 * with Encrypted Client Hello names no host: its `server_name` is the
 * outer, public name, so the flow keeps the name DNS gave it.
 */
export function clientHelloName(b: Uint8Array): SniffState {
  let at = 2 + 32; // legacy_version, random
  if (at >= b.length) return NO_NAME;
  at += 1 + b[at]; // legacy_session_id
  if (at + 2 > b.length) return NO_NAME;
  at += 2 + ((b[at] << 8) | b[at + 1]); // cipher_suites
  if (at >= b.length) return NO_NAME;
  at += 1 + b[at]; // legacy_compression_methods
  if (at + 2 > b.length) return NO_NAME;
  const extEnd = Math.min(b.length, at + 2 + ((b[at] << 8) | b[at + 1]));
  at += 2;
  let named = NO_NAME;
  while (at + 4 <= extEnd) {
    const type = (b[at] << 8) | b[at + 1];
    const len = (b[at + 2] << 8) | b[at + 3];
    at += 4;
    if (at + len > extEnd) return NO_NAME;
    if (type === 0) named = serverNameList(b.subarray(at, at + len));
    // Encrypted Client Hello: server_name is only the outer, public name.
    if (type === EXT_ECH) return NO_NAME;
    at += len;
  }
  return named;
}

/** The `encrypted_client_hello` extension (draft-ietf-tls-esni §5). */
const EXT_ECH = 0xfe0d;

/** RFC 6066 §3 ServerNameList: the first host_name (type 0). */
function serverNameList(e: Uint8Array): SniffState {
  if (e.length < 2) return NO_NAME;
  const end = Math.min(e.length, 2 + ((e[0] << 8) | e[1]));
  let at = 2;
  while (at + 3 <= end) {
    const type = e[at];
    const len = (e[at + 1] << 8) | e[at + 2];
    at += 3;
    if (at + len > end) return NO_NAME;
    if (type === 0) {
      const hostname = normalizeHostname(latin1.decode(e.subarray(at, at + len)));
      return hostname ? { done: true, hostname, source: "sni" } : NO_NAME;
    }
    at += len;
  }
  return NO_NAME;
}

// --- HTTP/1 ---

const CR = 13;
const LF = 10;

function httpHost(data: Uint8Array, maxBytes: number): SniffState {
  // request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
  let i = 0;
  while (i < data.length && i < 16 && data[i] >= 0x41 && data[i] <= 0x5a) i++;
  if (i === data.length) return i < 16 ? { done: false } : NO_NAME;
  if (data[i] !== 0x20 || i < 3) return NO_NAME;
  const limit = Math.min(data.length, maxBytes);
  let lineStart = -1; // start of the current header line (after the request line)
  for (let j = i; j < limit; j++) {
    if (data[j] !== LF) continue;
    if (lineStart < 0) {
      // Not HTTP/1 unless the request line ends in its version: a command
      // of another protocol ("EHLO x", Redis' "GET k") finishes here, not
      // at the time budget, which its connection would otherwise wait out.
      if (!endsWithHttpVersion(data, j)) return NO_NAME;
      lineStart = j + 1;
      continue;
    }
    let lineEnd = j;
    if (lineEnd > lineStart && data[lineEnd - 1] === CR) lineEnd--;
    if (lineEnd === lineStart) return NO_NAME; // end of the header: no Host
    const line = data.subarray(lineStart, lineEnd);
    if (line.length > 5 && isHostField(line)) {
      const value = latin1.decode(line.subarray(5)).trim();
      const hostname = normalizeHostname(stripPort(value));
      return hostname ? { done: true, hostname, source: "http" } : NO_NAME;
    }
    lineStart = j + 1;
  }
  return more(data, maxBytes);
}

/** `… HTTP/d.d` (CR optional) just before the LF at `lf` (RFC 9112 §2.3). */
function endsWithHttpVersion(data: Uint8Array, lf: number): boolean {
  const end = lf > 0 && data[lf - 1] === CR ? lf - 1 : lf;
  const at = end - 9; // " HTTP/1.1"
  return at >= 0 && data[at] === 0x20 && data[at + 1] === 0x48 && data[at + 2] === 0x54 &&
    data[at + 3] === 0x54 && data[at + 4] === 0x50 && data[at + 5] === 0x2f &&
    isDigit(data[at + 6]) && data[at + 7] === 0x2e && isDigit(data[at + 8]);
}

function isDigit(b: number): boolean {
  return b >= 0x30 && b <= 0x39;
}

function isHostField(line: Uint8Array): boolean {
  return (line[0] | 0x20) === 0x68 && (line[1] | 0x20) === 0x6f && (line[2] | 0x20) === 0x73 &&
    (line[3] | 0x20) === 0x74 && line[4] === 0x3a; // "host:"
}

function stripPort(value: string): string {
  if (value.startsWith("[")) {
    const end = value.indexOf("]");
    return end > 0 ? value.slice(1, end) : value;
  }
  const colon = value.lastIndexOf(":");
  return colon > 0 && value.indexOf(":") === colon ? value.slice(0, colon) : value;
}

// --- streams ---

/** Options of {@linkcode sniffFirstBytes} and {@linkcode sniffStream}. */
export interface SniffStreamOptions {
  /** Most bytes held while looking. Default {@linkcode SNIFF_MAX_BYTES}. */
  maxBytes?: number;
  /** Give up this long (ms) after sniffing started. Default 300 (as sing-box). */
  timeoutMs?: number;
  /**
   * Called once with the name (or `undefined`) before the held bytes go on;
   * `false` refuses them: {@linkcode sniffFirstBytes} rejects (the reader is
   * cancelled) and {@linkcode sniffStream}'s stream errors, so no held byte
   * is passed on.
   */
  decide?: (hostname: string | undefined, source: HostnameSource | undefined) => boolean;
}

/** What {@linkcode sniffFirstBytes} read. */
export interface FirstBytes {
  /** The bytes read while sniffing, in order (to be passed on before anything else). */
  held: Uint8Array;
  /** A read the time budget overtook: its result is the next chunk (`null`: the end). */
  pending?: Promise<Uint8Array | null>;
  /** True when the stream ended while sniffing. */
  ended: boolean;
  /** The name found, if any. */
  hostname?: string;
  /** Where it was found. */
  source?: HostnameSource;
}

/** Thrown by {@linkcode sniffFirstBytes} when `decide` refused the name. */
export class HostnameRefused extends Error {
  /** The refused name. */
  readonly hostname: string | undefined;
  /** Creates the error. */
  constructor(hostname: string | undefined) {
    super(`hostname ${JSON.stringify(hostname)} refused`);
    this.name = "HostnameRefused";
    this.hostname = hostname;
  }
}

/** A wait of {@linkcode Deadlines}: `fire` is null once it ended or was cancelled. */
interface Deadline {
  at: number;
  fire: (() => void) | null;
}

/**
 * One timer for all waits of {@linkcode sniffFirstBytes}: a timer per wait
 * (`setTimeout` + `clearTimeout`) cost ~6 µs of each forwarded connection
 * (measured with `bench/server_bench.ts --profile`). A cancelled wait only
 * loses its callback: the timer, armed for the earliest wait, fires at most
 * once per timeout when waits are cancelled in time (the usual case), and
 * each firing drops what is due, so the list holds the waits begun within
 * about two timeouts. The timer keeps the process alive only while a wait
 * is pending.
 */
class Deadlines {
  /** Waits by time (they mostly come in order: inserted from the end). */
  #list: Deadline[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #pending = 0;

  add(at: number, fire: () => void): Deadline {
    const wait = { at, fire };
    const list = this.#list;
    let i = list.length;
    while (i > 0 && list[i - 1].at > at) i--;
    list.splice(i, 0, wait);
    if (at < this.#timerAt) this.#arm(at);
    else if (this.#pending === 0) this.#ref(true);
    this.#pending++;
    return wait;
  }

  cancel(wait: Deadline): void {
    if (wait.fire === null) return;
    wait.fire = null;
    if (--this.#pending === 0) this.#ref(false);
  }

  /** (Re)arms the one timer for `at`, earlier than the one armed. */
  #arm(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#run(), Math.max(0, at - performance.now()));
  }

  #ref(on: boolean): void {
    const timer = this.#timer;
    if (timer === undefined) return;
    if (on) refTimer(timer);
    else unrefTimer(timer);
  }

  #run(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const list = this.#list;
    const now = performance.now();
    let due = 0;
    while (due < list.length && list[due].at <= now) due++;
    for (const wait of list.splice(0, due)) {
      const fire = wait.fire;
      if (fire === null) continue;
      wait.fire = null;
      this.#pending--;
      fire();
    }
    const next = list.find((wait) => wait.fire !== null);
    if (!next) {
      list.length = 0;
      return;
    }
    this.#arm(next.at);
  }
}

const deadlines = new Deadlines();

/**
 * Reads a client's first chunks with `read` (`null` at the end) until
 * {@linkcode sniffHostname} finishes, `maxBytes` arrived or `timeoutMs`
 * passed, then asks `decide`. The caller passes `held` on first, then
 * `pending`'s chunk (if any), then reads as usual: nothing is lost or
 * reordered, and after this there is no cost per chunk. Rejects with
 * {@linkcode HostnameRefused} when `decide` says no (the caller ends the
 * connection), or with the read's error.
 */
export async function sniffFirstBytes(
  read: () => Promise<Uint8Array | null>,
  options: SniffStreamOptions = {},
): Promise<FirstBytes> {
  const maxBytes = options.maxBytes ?? SNIFF_MAX_BYTES;
  const deadline = performance.now() + (options.timeoutMs ?? 300);
  let held = new Uint8Array(0);
  let out: FirstBytes = { held, ended: false };
  for (;;) {
    const next = read();
    let wait: Deadline | undefined;
    const timeout = new Promise<"timeout">((r) => {
      wait = deadlines.add(deadline, () => r("timeout"));
    });
    const r = await Promise.race([next, timeout]);
    deadlines.cancel(wait!);
    if (r === "timeout") {
      out = { held, pending: next, ended: false };
      break;
    }
    if (r === null) {
      out = { held, ended: true };
      break;
    }
    const joined = new Uint8Array(held.length + r.length);
    joined.set(held);
    joined.set(r, held.length);
    held = joined;
    const state = sniffHostname(held, maxBytes);
    if (state.done) {
      out = { held, ended: false, hostname: state.hostname, source: state.source };
      break;
    }
    if (held.length >= maxBytes) {
      out = { held, ended: false };
      break;
    }
  }
  let allowed = false;
  try {
    allowed = options.decide?.(out.hostname, out.source) ?? true;
  } finally {
    if (!allowed) out.pending?.catch(() => {});
  }
  if (!allowed) throw new HostnameRefused(out.hostname);
  return out;
}

/** The result of {@linkcode sniffStream}. */
export interface SniffedStream {
  /** The same bytes as the input, in order, unchanged. */
  readable: ReadableStream<Uint8Array>;
  /** Settles when sniffing ended (with or without a name). */
  result: Promise<{ hostname?: string; source?: HostnameSource; allowed: boolean }>;
}

/**
 * {@linkcode sniffFirstBytes} as a stream: wraps a client's byte stream; the
 * first chunks are held until sniffing ends, then released in one go; later
 * chunks pass through, pulled only when the consumer asks (backpressure is
 * kept). A relay that owns the reader should call `sniffFirstBytes` itself
 * and save the per-chunk cost of the wrapper.
 */
export function sniffStream(
  input: ReadableStream<Uint8Array>,
  options: SniffStreamOptions = {},
): SniffedStream {
  const reader = input.getReader();
  let settle!: (r: { hostname?: string; source?: HostnameSource; allowed: boolean }) => void;
  const result = new Promise<{ hostname?: string; source?: HostnameSource; allowed: boolean }>(
    (r) => settle = r,
  );
  let started = false;
  let pending: Promise<Uint8Array | null> | undefined;
  const read = () => reader.read().then((r) => r.done ? null : r.value);
  const readable = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (!started) {
        started = true;
        let first: FirstBytes;
        try {
          first = await sniffFirstBytes(read, options);
        } catch (error) {
          const refused = error instanceof HostnameRefused;
          if (refused) reader.cancel().catch(() => {});
          settle({ hostname: refused ? error.hostname : undefined, allowed: !refused });
          controller.error(error);
          return;
        }
        settle({ hostname: first.hostname, source: first.source, allowed: true });
        if (first.held.length > 0) controller.enqueue(first.held);
        if (first.ended) controller.close();
        pending = first.pending;
        if (first.held.length > 0 || first.ended) return;
      }
      const r = await (pending ?? read());
      pending = undefined;
      if (r === null) controller.close();
      else controller.enqueue(r);
    },
    cancel(reason) {
      settle({ allowed: true });
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return { readable, result };
}
