/**
 * A deterministic network simulator for sans-I/O TCP layers: a seeded PRNG,
 * lossy in-memory links (loss, duplication, reordering, fixed delay,
 * bandwidth with a tail-drop queue) and an event loop on a fake clock that
 * also lets stream promises run between steps.
 *
 * Everything that happens depends only on the seed and on what the layers
 * and the test code do, never on the wall clock, so a failing seed replays
 * exactly.
 *
 * @example
 * ```ts ignore
 * const sim = new Simulation({ seed: 7 });
 * const a = sim.addNode(addrA, (host) => new TcpLayer(host));
 * const b = sim.addNode(addrB, (host) => new TcpLayer(host));
 * sim.link(a, b, { delay: 10, loss: 0.05 });
 * b.onSyn = (req) => accepted.push(req.accept());
 * const conn = a.layer.connect(tuple, sim.now);
 * await sim.run(() => done, { maxTime: 60_000 });
 * ```
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { formatAddress, type IpAddress } from "../../netstack/addr.ts";
import { upperLayerChecksum } from "../../netstack/wire/checksum.ts";
import type { TcpLayerHost, TcpLayerLike, TcpSynRequest } from "../../netstack/tcp/api.ts";

/** IP protocol number of TCP (RFC 9293 §3.1). */
const PROTOCOL_TCP = 6;

/**
 * A small seeded PRNG (splitmix32): fast, 32-bit state, good enough for
 * simulation decisions. The same seed always gives the same sequence.
 */
export class SimRandom {
  #state: number;

  /** Starts the sequence for `seed` (any integer). */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** The next 32-bit unsigned integer. */
  nextU32(): number {
    this.#state = (this.#state + 0x9e3779b9) | 0;
    let z = this.#state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }

  /** A float in `[0, 1)`. */
  next(): number {
    return this.nextU32() / 0x1_0000_0000;
  }

  /** `true` with probability `p`. */
  chance(p: number): boolean {
    return p > 0 && this.next() < p;
  }

  /** An integer in `[0, n)`. */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Fills `bytes` with pseudo-random bytes and returns it. */
  fill(bytes: Uint8Array): Uint8Array {
    const whole = bytes.length & ~3;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < whole; i += 4) view.setUint32(i, this.nextU32(), true);
    for (let i = whole; i < bytes.length; i++) bytes[i] = this.nextU32() & 0xff;
    return bytes;
  }
}

/** How one direction of a link treats the segments it carries. */
export interface LinkOptions {
  /** One-way propagation delay in ms (default 0). The RTT is the sum of both directions. */
  delay?: number;
  /** Probability (0–1) that a segment is lost (default 0). */
  loss?: number;
  /** Probability (0–1) that a segment is delivered twice (default 0). */
  duplicate?: number;
  /** Probability (0–1) that a segment gets a random extra delay, which reorders it (default 0). */
  reorder?: number;
  /** Maximum extra delay in ms of a reordered segment (default: `2 * delay + 1`). */
  reorderDelay?: number;
  /**
   * netem's reordering instead: a reordered segment skips `delay` and so
   * arrives early, ahead of what was sent before it (default false).
   */
  reorderEarly?: boolean;
  /** Bytes per ms the link serializes (default `Infinity`: no serialization delay). 1000 B/ms = 1 MB/s. */
  bandwidth?: number;
  /**
   * Bytes that may wait for serialization; a segment that does not fit is
   * tail-dropped (default `Infinity`). Only meaningful with a finite `bandwidth`.
   */
  queueLimit?: number;
  /**
   * Extra per-segment decision, called after the random decisions for a segment
   * that would be delivered: return `false` to drop it. For scripted scenarios.
   */
  filter?: (segment: TcpSegmentInfo, now: number) => boolean;
}

/** Counters of one link direction. */
export interface LinkStats {
  /** Segments handed to the link. */
  sent: number;
  /** Bytes (TCP header + payload) handed to the link. */
  sentBytes: number;
  /** Segments lost at random. */
  lost: number;
  /** Segments dropped by the queue limit. */
  queueDrops: number;
  /** Segments dropped by `filter`. */
  filtered: number;
  /** Extra copies delivered. */
  duplicated: number;
  /** Segments that got an extra (reordering) delay. */
  reordered: number;
  /** Segments handed to the receiving layer. */
  delivered: number;
  /** Segments with payload (data, SYN or FIN) handed to the link. */
  dataSegments: number;
}

/** The main fields of a TCP header, decoded for traces and filters. */
export interface TcpSegmentInfo {
  /** Source port. */
  srcPort: number;
  /** Destination port. */
  dstPort: number;
  /** Sequence number. */
  seq: number;
  /** Acknowledgment number. */
  ack: number;
  /** The flags byte (FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32, ECE 64, CWR 128). */
  flags: number;
  /** Window field (not scaled). */
  window: number;
  /** Payload length. */
  payloadLength: number;
  /** Header length in bytes. */
  headerLength: number;
  /** The options as text (e.g. `"mss=1380 ts=5/7 sack=10-20"`), empty when none. */
  options: string;
}

const NO_INFO: TcpSegmentInfo = {
  srcPort: 0,
  dstPort: 0,
  seq: 0,
  ack: 0,
  flags: 0,
  window: 0,
  payloadLength: 0,
  headerLength: 0,
  options: "",
};

/** Decodes the main fields of a TCP segment (which must hold at least 20 bytes). */
export function tcpSegmentInfo(segment: Uint8Array): TcpSegmentInfo {
  const v = new DataView(segment.buffer, segment.byteOffset, segment.byteLength);
  const headerLength = (segment[12] >> 4) * 4;
  return {
    srcPort: v.getUint16(0),
    dstPort: v.getUint16(2),
    seq: v.getUint32(4),
    ack: v.getUint32(8),
    flags: segment[13],
    window: v.getUint16(14),
    payloadLength: segment.length - headerLength,
    headerLength,
    options: formatOptions(segment.subarray(20, headerLength)),
  };
}

/** TCP options as text (RFC 9293 §3.2, RFC 7323, RFC 2018); unknown kinds as `kN`. */
function formatOptions(o: Uint8Array): string {
  const out: string[] = [];
  const v = new DataView(o.buffer, o.byteOffset, o.byteLength);
  for (let i = 0; i < o.length;) {
    const kind = o[i];
    if (kind === 0) break;
    if (kind === 1) {
      i++;
      continue;
    }
    const len = o[i + 1];
    if (len === undefined || len < 2 || i + len > o.length) {
      out.push("bad-option");
      break;
    }
    if (kind === 2 && len === 4) out.push(`mss=${v.getUint16(i + 2)}`);
    else if (kind === 3 && len === 3) out.push(`ws=${o[i + 2]}`);
    else if (kind === 4) out.push("sackok");
    else if (kind === 5) {
      const blocks: string[] = [];
      for (let j = i + 2; j + 8 <= i + len; j += 8) {
        blocks.push(`${v.getUint32(j)}-${v.getUint32(j + 4)}`);
      }
      out.push(`sack=${blocks.join(",")}`);
    } else if (kind === 8 && len === 10) out.push(`ts=${v.getUint32(i + 2)}/${v.getUint32(i + 6)}`);
    else out.push(`k${kind}`);
    i += len;
  }
  return out.join(" ");
}

/** Flags as text, e.g. `"SA"` for SYN+ACK (F S R P A U E C). */
export function formatFlags(flags: number): string {
  const names = "FSRPAUEC";
  let out = "";
  for (let i = 0; i < 8; i++) if (flags & (1 << i)) out += names[i];
  return out || ".";
}

/** A node of the simulation: an address and the TCP layer that owns it. */
export interface SimNode {
  /** The node's IP address. */
  readonly address: IpAddress;
  /** Text form of the address (for messages). */
  readonly name: string;
  /** The layer under test. */
  readonly layer: TcpLayerLike;
  /** Called for every SYN the layer reports (default: `reset()`). */
  onSyn: (request: TcpSynRequest) => void;
  /** Times the layer called `wake()`. */
  wakes: number;
}

/** Limits of one {@linkcode Simulation.run}. */
export interface RunLimits {
  /** Maximum simulated time (absolute, ms) before the run fails (default 3,600,000). */
  maxTime?: number;
  /** Maximum loop steps before the run fails (default 5,000,000). */
  maxSteps?: number;
  /**
   * When nothing is scheduled and the condition is false: `"fail"` (default)
   * fails the run as a deadlock, `"return"` ends it normally.
   */
  onIdle?: "fail" | "return";
  /**
   * Maximum consecutive steps without the clock advancing before the run
   * fails as a livelock (default 100,000). A zero-delay link moves whole
   * transfers at one instant: raise it there.
   */
  maxStepsAtSameTime?: number;
}

/** Options of a {@linkcode Simulation}. */
export interface SimulationOptions {
  /** Seed of every random decision (reported in every failure). */
  seed: number;
  /** How many recent link events to keep for failure messages (default 64). */
  traceSize?: number;
  /**
   * Overwrite each delivered segment after `input` returns, so a layer that
   * keeps a view instead of copying is caught (default `true`).
   */
  poisonAfterInput?: boolean;
  /** Verify the checksum of every segment a layer sends (default `true`). */
  verifyChecksums?: boolean;
}

interface Direction {
  from: SimNode;
  to: SimNode;
  label: string;
  options: Required<Omit<LinkOptions, "filter">> & Pick<LinkOptions, "filter">;
  stats: LinkStats;
  /** When the serializer is free. */
  busyUntil: number;
  /** Finish times and sizes of segments waiting for or in serialization (FIFO). */
  queue: { finish: number; size: number }[];
  queueBytes: number;
}

const PACKET = 0;
const TIMER = 1;

interface SimEvent {
  time: number;
  order: number;
  kind: typeof PACKET | typeof TIMER;
  direction?: Direction;
  bytes?: Uint8Array;
  resolve?: () => void;
}

interface TraceEntry {
  time: number;
  label: string;
  what: string;
  info: TcpSegmentInfo;
}

/** A binary min-heap of events ordered by (time, insertion order). */
class EventHeap {
  #items: SimEvent[] = [];

  get size(): number {
    return this.#items.length;
  }

  peek(): SimEvent | undefined {
    return this.#items[0];
  }

  push(e: SimEvent): void {
    const a = this.#items;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }

  pop(): SimEvent | undefined {
    const a = this.#items;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && before(a[l], a[m])) m = l;
        if (r < a.length && before(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.time < b.time || (a.time === b.time && a.order < b.order);
}

/** Lets every pending promise reaction (stream callbacks, spawned tasks) run. */
function tick(): Promise<void> {
  // A macrotask: all microtasks queued before it, and those they queue, run
  // first. `setTimeout(0)` would be clamped to 4 ms when nested.
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * The simulated world: nodes, links between them, the fake clock and the
 * event loop. Time starts at 0 (ms).
 */
export class Simulation {
  /** The seed (as given). */
  readonly seed: number;
  /** The PRNG every random decision of the links uses. */
  readonly random: SimRandom;
  #now = 0;
  #heap = new EventHeap();
  #order = 0;
  #nodes: SimNode[] = [];
  #directions = new Map<string, Direction>();
  #woken = false;
  #error: unknown = null;
  #trace: (TraceEntry | undefined)[];
  #traceNext = 0;
  #poison: boolean;
  #verify: boolean;
  #steps = 0;

  /** Creates an empty world for `options.seed`. */
  constructor(options: SimulationOptions) {
    this.seed = options.seed;
    this.random = new SimRandom(options.seed);
    this.#trace = new Array(options.traceSize ?? 64);
    this.#poison = options.poisonAfterInput ?? true;
    this.#verify = options.verifyChecksums ?? true;
  }

  /** The current simulated time in ms. */
  get now(): number {
    return this.#now;
  }

  /** Loop steps run so far (all runs). */
  get steps(): number {
    return this.#steps;
  }

  /**
   * Adds a node at `address`; `create` builds its layer with the host this
   * simulation provides.
   */
  addNode(address: IpAddress, create: (host: TcpLayerHost) => TcpLayerLike): SimNode {
    const name = formatAddress(address);
    const partial: { -readonly [K in keyof SimNode]?: SimNode[K] } = {
      address,
      name,
      wakes: 0,
      onSyn: (request) => request.reset(),
    };
    const node = partial as SimNode;
    const host: TcpLayerHost = {
      sendSegment: (src, dst, segment) => this.#send(node, src, dst, segment),
      wake: () => {
        node.wakes++;
        this.#woken = true;
      },
      onSyn: (request) => node.onSyn(request),
    };
    partial.layer = create(host);
    this.#nodes.push(node);
    return node;
  }

  /**
   * Connects `a` and `b`: `ab` shapes segments from `a` to `b`, `ba` the other
   * way (default: the same options as `ab`). Linking the same pair again
   * replaces both directions (and resets their counters); segments already
   * in flight are still delivered.
   */
  link(a: SimNode, b: SimNode, ab: LinkOptions = {}, ba: LinkOptions = ab): void {
    this.#addDirection(a, b, ab);
    this.#addDirection(b, a, ba);
  }

  /** The counters of the direction from `a` to `b`. */
  stats(a: SimNode, b: SimNode): LinkStats {
    const d = this.#directions.get(`${a.name}>${b.name}`);
    if (d === undefined) throw new RangeError(`No link from ${a.name} to ${b.name}`);
    return d.stats;
  }

  /** Resolves when the simulated clock reaches `now + ms` (during {@linkcode run}). */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#heap.push({ time: this.#now + ms, order: this.#order++, kind: TIMER, resolve });
    });
  }

  /**
   * Starts test code that runs alongside the simulation (a reader or writer
   * loop). If it throws, the current or next {@linkcode run} fails with its
   * error. Returns its result.
   */
  spawn<T>(task: () => Promise<T>): Promise<T> {
    const p = task();
    p.catch((e) => this.fail(e));
    return p;
  }

  /** Makes the current or next {@linkcode run} fail with `error` (the first one wins). */
  fail(error: unknown): void {
    if (this.#error === null) this.#error = error ?? new Error("Unknown failure");
  }

  /** The most recent link events, oldest first, one per line. */
  formatTrace(): string {
    const n = this.#trace.length;
    const lines: string[] = [];
    for (let i = 0; i < n; i++) {
      const e = this.#trace[(this.#traceNext + i) % n];
      if (e === undefined) continue;
      const s = e.info;
      const flags = formatFlags(s.flags);
      const options = s.options ? ` <${s.options}>` : "";
      lines.push(
        `  t=${e.time.toFixed(3)} ${e.label} ${e.what.padEnd(7)} ${s.srcPort}>${s.dstPort} ` +
          `[${flags}] seq=${s.seq} ack=${s.ack} win=${s.window} len=${s.payloadLength}${options}`,
      );
    }
    return lines.join("\n");
  }

  /** A one-line summary of every link direction's counters. */
  formatStats(): string {
    return [...this.#directions.values()].map((d) => `${d.label} ${JSON.stringify(d.stats)}`)
      .join("\n");
  }

  /**
   * Runs the world until `until()` is true: delivers due segments, polls
   * every layer, lets promise reactions (stream callbacks, spawned tasks) run,
   * then advances the clock to the next delivery, layer deadline or sleep.
   * A `wake()` from a layer means "poll again at the current time".
   *
   * Fails (rejects with a message naming the seed, the time and the recent
   * trace) on a spawned task's error, a malformed segment from a layer, a
   * deadlock, or when a limit is exceeded.
   */
  async run(until: () => boolean, limits: RunLimits = {}): Promise<void> {
    const maxTime = limits.maxTime ?? 3_600_000;
    const maxSteps = this.#steps + (limits.maxSteps ?? 5_000_000);
    const maxSameTime = limits.maxStepsAtSameTime ?? 100_000;
    let sameTime = 0;
    {
      for (;;) {
        this.#check();
        if (until()) return;
        if (++this.#steps > maxSteps) {
          throw this.#failure(`more than ${limits.maxSteps ?? 5_000_000} steps`);
        }
        // Deliver everything due (including segments sent during delivery with zero delay).
        for (
          let e = this.#heap.peek();
          e !== undefined && e.time <= this.#now;
          e = this.#heap.peek()
        ) {
          this.#heap.pop();
          if (e.kind === PACKET) this.#deliver(e.direction!, e.bytes!);
          else e.resolve!();
        }
        for (const node of this.#nodes) node.layer.poll(this.#now);
        this.#woken = false;
        await tick();
        this.#check();
        if (until()) return;
        let next = Infinity;
        const due = this.#heap.peek();
        if (due !== undefined) next = due.time;
        for (const node of this.#nodes) next = Math.min(next, node.layer.nextDeadline());
        if (this.#woken || next <= this.#now) {
          if (++sameTime > maxSameTime) {
            throw this.#failure(
              `time does not advance: ${sameTime} steps at the same time ` +
                `(woken=${this.#woken}, next deadline ${next})`,
            );
          }
          continue;
        }
        sameTime = 0;
        if (next === Infinity) {
          if (limits.onIdle === "return") return;
          throw this.#failure("deadlock: nothing is scheduled and the run's condition is false");
        }
        if (next > maxTime) {
          throw this.#failure(`simulated time limit ${maxTime} ms reached (next event at ${next})`);
        }
        this.#now = next;
      }
    }
  }

  #check(): void {
    if (this.#error !== null) {
      const e = this.#error;
      throw this.#failure(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}`, e);
    }
  }

  #failure(reason: string, cause?: unknown): Error {
    return new Error(
      `Simulation seed=${this.seed} failed at t=${this.#now.toFixed(3)} ms ` +
        `(step ${this.#steps}): ${reason}\nlink stats:\n${this.formatStats()}\n` +
        `recent link events:\n${this.formatTrace()}`,
      { cause },
    );
  }

  #addDirection(from: SimNode, to: SimNode, o: LinkOptions): void {
    const delay = o.delay ?? 0;
    const label = `${from.name}>${to.name}`;
    for (
      const [name, p] of [["loss", o.loss], ["duplicate", o.duplicate], ["reorder", o.reorder]]
    ) {
      if (p !== undefined && !(typeof p === "number" && p >= 0 && p <= 1)) {
        throw new RangeError(`Link option ${name} must be a probability in [0, 1], not ${p}`);
      }
    }
    this.#directions.set(label, {
      from,
      to,
      label,
      options: {
        delay,
        loss: o.loss ?? 0,
        duplicate: o.duplicate ?? 0,
        reorder: o.reorder ?? 0,
        reorderDelay: o.reorderDelay ?? 2 * delay + 1,
        reorderEarly: o.reorderEarly ?? false,
        bandwidth: o.bandwidth ?? Infinity,
        queueLimit: o.queueLimit ?? Infinity,
        filter: o.filter,
      },
      stats: {
        sent: 0,
        sentBytes: 0,
        lost: 0,
        queueDrops: 0,
        filtered: 0,
        duplicated: 0,
        reordered: 0,
        delivered: 0,
        dataSegments: 0,
      },
      busyUntil: 0,
      queue: [],
      queueBytes: 0,
    });
  }

  #record(d: Direction, what: string, info: TcpSegmentInfo): void {
    const n = this.#trace.length;
    if (n === 0) return;
    this.#trace[this.#traceNext] = { time: this.#now, label: d.label, what, info };
    this.#traceNext = (this.#traceNext + 1) % n;
  }

  #send(node: SimNode, src: IpAddress, dst: IpAddress, segment: Uint8Array): void {
    const label = `${formatAddress(src)}>${formatAddress(dst)}`;
    const d = this.#directions.get(label);
    if (d === undefined || d.from !== node) {
      this.fail(new Error(`${node.name} sent a segment ${label} that no link carries`));
      return;
    }
    if (segment.length < 20 || (segment[12] >> 4) < 5 || (segment[12] >> 4) * 4 > segment.length) {
      this.fail(new Error(`${node.name} sent a malformed TCP segment of ${segment.length} bytes`));
      return;
    }
    if (this.#verify && upperLayerChecksum(src, dst, PROTOCOL_TCP, segment) !== 0) {
      this.fail(new Error(`${node.name} sent a TCP segment with a bad checksum (${label})`));
      return;
    }
    // Decoded only when a trace or a filter needs it (the hot path of benchmarks).
    const info = this.#trace.length > 0 || d.options.filter !== undefined
      ? tcpSegmentInfo(segment)
      : NO_INFO;
    const o = d.options, s = d.stats, rng = this.random;
    s.sent++;
    s.sentBytes += segment.length;
    if (segment.length > (segment[12] >> 4) * 4 || (segment[13] & 3) !== 0) s.dataSegments++;
    // Copy now: the layer may reuse its buffer after sendSegment returns.
    const bytes = segment.slice();
    let time = this.#now;
    if (o.bandwidth !== Infinity) {
      while (d.queue.length > 0 && d.queue[0].finish <= this.#now) {
        d.queueBytes -= d.queue.shift()!.size;
      }
      if (d.queueBytes + bytes.length > o.queueLimit) {
        s.queueDrops++;
        this.#record(d, "qdrop", info);
        return;
      }
      const start = Math.max(this.#now, d.busyUntil);
      d.busyUntil = start + bytes.length / o.bandwidth;
      d.queue.push({ finish: d.busyUntil, size: bytes.length });
      d.queueBytes += bytes.length;
      time = d.busyUntil;
    }
    if (rng.chance(o.loss)) {
      s.lost++;
      this.#record(d, "lost", info);
      return;
    }
    if (o.filter !== undefined && !o.filter(info, this.#now)) {
      s.filtered++;
      this.#record(d, "filtered", info);
      return;
    }
    let what = "sent";
    if (o.reorderEarly) {
      if (rng.chance(o.reorder)) {
        s.reordered++;
        what = "early";
      } else time += o.delay;
    } else {
      time += o.delay;
      if (rng.chance(o.reorder)) {
        s.reordered++;
        time += rng.next() * o.reorderDelay;
        what = "delayed";
      }
    }
    this.#record(d, what, info);
    this.#heap.push({ time, order: this.#order++, kind: PACKET, direction: d, bytes });
    if (rng.chance(o.duplicate)) {
      s.duplicated++;
      const extra = rng.next() * o.reorderDelay;
      this.#record(d, "dup", info);
      this.#heap.push({
        time: time + extra,
        order: this.#order++,
        kind: PACKET,
        direction: d,
        bytes: bytes.slice(),
      });
    }
  }

  #deliver(d: Direction, bytes: Uint8Array): void {
    d.stats.delivered++;
    // Hand the layer a view inside a larger buffer (as an IP layer would) and
    // poison it afterwards: the layer must copy what it keeps.
    const offset = 20;
    const packet = new Uint8Array(offset + bytes.length);
    packet.set(bytes, offset);
    const view = packet.subarray(offset);
    d.to.layer.input(d.from.address, d.to.address, view, this.#now);
    if (this.#poison) packet.fill(0xa5);
  }
}

/** The fields of a TCP segment built by {@linkcode buildTcpSegment}. */
export interface TcpSegmentFields {
  /** Source port. */
  srcPort: number;
  /** Destination port. */
  dstPort: number;
  /** Sequence number. */
  seq: number;
  /** Acknowledgment number (default 0). */
  ack?: number;
  /** Flags byte (FIN 1, SYN 2, RST 4, PSH 8, ACK 16). */
  flags: number;
  /** Window field (default 65535). */
  window?: number;
  /** Options, a multiple of 4 bytes (default none). */
  options?: Uint8Array;
  /** Payload (default none). */
  payload?: Uint8Array;
}

/**
 * Builds a TCP segment from `src` to `dst` with a correct checksum, for
 * scripted peers (RFC 9293 §3.1).
 */
export function buildTcpSegment(
  src: IpAddress,
  dst: IpAddress,
  fields: TcpSegmentFields,
): Uint8Array {
  const options = fields.options ?? new Uint8Array(0);
  if (options.length % 4 !== 0 || options.length > 40) {
    throw new RangeError(
      `TCP options must be a multiple of 4 bytes up to 40, not ${options.length}`,
    );
  }
  const payload = fields.payload ?? new Uint8Array(0);
  const headerLength = 20 + options.length;
  const out = new Uint8Array(headerLength + payload.length);
  const v = new DataView(out.buffer);
  v.setUint16(0, fields.srcPort);
  v.setUint16(2, fields.dstPort);
  v.setUint32(4, fields.seq >>> 0);
  v.setUint32(8, (fields.ack ?? 0) >>> 0);
  out[12] = (headerLength / 4) << 4;
  out[13] = fields.flags;
  v.setUint16(14, fields.window ?? 65535);
  out.set(options, 20);
  out.set(payload, headerLength);
  v.setUint16(16, upperLayerChecksum(src, dst, PROTOCOL_TCP, out));
  return out;
}
