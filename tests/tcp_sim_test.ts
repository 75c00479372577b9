/**
 * Simulation tests of the TCP layer: two `TcpLayer`s talk over a seeded lossy
 * in-memory link (tests/sim/link.ts) on a fake clock, through the stream API
 * only. Every transfer must be byte-exact for every seed, finish within a
 * simulated-time bound derived from the link, and leave no timers behind.
 *
 * Set `SIM_VERBOSE=1` to print one line per transfer (simulated duration vs
 * bound, segments lost), `SIM_ONLY=text` to run only the matching steps,
 * `SIM_TRACE=n` to show the last `n` link events in a failure (default 64).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { IpAddress } from "../netstack/addr.ts";
import type {
  TcpConnectionLike,
  TcpLayerHost,
  TcpLayerLike,
  TcpTuple,
} from "../netstack/tcp/api.ts";
import type { TcpOptions } from "../netstack/tcp/connection.ts";
import { TcpLayer } from "../netstack/tcp/layer.ts";
import { isCI } from "./_skip.ts";
import {
  buildTcpSegment,
  type LinkOptions,
  type SimNode,
  SimRandom,
  Simulation,
  type TcpSegmentInfo,
} from "./sim/link.ts";

const VERBOSE = Deno.env.get("SIM_VERBOSE") !== undefined;
/** `SIM_ONLY=text` runs only the TCP steps whose name contains `text` (others are ignored). */
const ONLY = Deno.env.get("SIM_ONLY");
/** `SIM_TRACE=n`: how many recent link events a failure message shows (default 64). */
const TRACE = Number(Deno.env.get("SIM_TRACE") ?? 64);

/** A step that `SIM_ONLY` can select. */
function step(t: Deno.TestContext, name: string, fn: () => Promise<unknown>): Promise<boolean> {
  return t.step({
    name,
    fn: async () => {
      await fn();
    },
    // A local selection only: under CI=true every step runs.
    ignore: !isCI && ONLY !== undefined && !name.includes(ONLY),
  });
}

const CLIENT_V4 = new Uint8Array([10, 0, 0, 1]);
const SERVER_V4 = new Uint8Array([10, 0, 0, 2]);
const CLIENT_V6 = new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
const SERVER_V6 = new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
const CLIENT_PORT = 40000;
const SERVER_PORT = 80;

/** The link of the transfer tests: 20 ms RTT, 5 MB/s, a 50 KB tail-drop queue. */
const BASE_LINK: ShapedLink = { delay: 10, bandwidth: 5000, queueLimit: 50_000 };

/** The shape of a link (both directions) that {@linkcode completionBound} understands. */
interface ShapedLink {
  /** One-way delay, ms. */
  delay: number;
  /** Bytes per ms. */
  bandwidth: number;
  /** Tail-drop queue, bytes. */
  queueLimit: number;
}

/**
 * A factory of layers for `sim`: the ISN/timestamp secret comes from the seed
 * so that a seed replays exactly (sequence numbers included).
 */
function layers(
  sim: Simulation,
  options: TcpOptions = {},
): (host: TcpLayerHost) => TcpLayerLike {
  return (host) => new TcpLayer(host, { secret: sim.random.fill(new Uint8Array(16)), ...options });
}

/**
 * Upper bound of the simulated time (ms) to move `bytes` each way over
 * `link` (default `BASE_LINK`) at loss `p` (each direction) with a fraction
 * `reorder` of the segments reordered (duplication on top).
 *
 * Steady-state TCP throughput with timeouts (Padhye, Firoiu, Towsley, Kurose
 * 1998), in segments per ms, with b = 2 segments per ACK:
 *
 *     X(q) = 1 / (R·√(2bq/3) + T0·min(1, 3·√(3bq/8))·q·(1 + 32q²))
 *
 * with R = RTT + full queue delay (for `BASE_LINK`: 20 + 50,000/5,000 = 30 ms), T0 = 1,000 ms
 * (the RFC 6298 minimum RTO, so an upper estimate of a timeout) and an MSS of
 * 536 bytes (the smallest default, so `bytes / 536` over-counts segments).
 * The loss q the model sees: a segment counts only once both it and an ACK
 * covering it got through (at the small windows of heavy loss there is about
 * one ACK per segment), so 1 − (1 − p)², and reordering past three segments
 * looks like a loss to the sender (a spurious fast retransmit), about one in
 * ten reordered segments: q = 1 − (1 − p)² + reorder / 10. The rate is
 * capped by the link: B/MSS segments per ms (B: the link's bytes per ms).
 *
 *     bound = 10,000 + 4 · (bytes / 536) / min(B / 536, X(q))
 *
 * i.e. 10 s of slack for the handshake (SYN retries) and the tail, and four
 * times the model's time for the bytes. With no loss or reordering this is
 * 10 s + 4·bytes/B.
 */
function completionBound(
  bytes: number,
  p: number,
  reorder = 0,
  link: ShapedLink = BASE_LINK,
): number {
  const mss = 536, t0 = 1000, b = 2;
  const rtt = 2 * link.delay + link.queueLimit / link.bandwidth;
  const q = 1 - (1 - p) ** 2 + reorder / 10;
  const bandwidth = link.bandwidth / mss;
  const x = q === 0 ? Infinity : 1 /
    (rtt * Math.sqrt(2 * b * q / 3) +
      t0 * Math.min(1, 3 * Math.sqrt(3 * b * q / 8)) * q * (1 + 32 * q * q));
  return 10_000 + 4 * (bytes / mss) / Math.min(bandwidth, x);
}

interface Progress {
  /** Bytes whose `write()` has resolved. */
  written: number;
  /** Bytes read so far. */
  read: number;
  /** `writer.close()` resolved. */
  writeClosed: boolean;
  /** The reader saw the end of the stream. */
  readDone: boolean;
  /** Longest time (simulated ms) one `write()` stayed pending. */
  longestWrite: number;
  /** Largest `written - (peer's read)` seen when a write resolved (set by the caller). */
  maxAhead: number;
  /** Chunks read. */
  reads: number;
}

function newProgress(): Progress {
  return {
    written: 0,
    read: 0,
    writeClosed: false,
    readDone: false,
    longestWrite: 0,
    maxAhead: 0,
    reads: 0,
  };
}

interface WriteOptions {
  /** Largest chunk size (sizes are random in [1, maxChunk]). */
  maxChunk: number;
  /** Source of chunk sizes. */
  random: SimRandom;
  /** Copy each chunk into one scratch buffer that is overwritten after each write resolves. */
  reuseBuffer?: boolean;
  /** Called after each write resolves. */
  afterWrite?: () => void;
  /** Do not close the writable at the end. */
  keepOpen?: boolean;
}

/** Writes all of `data` in random-sized chunks, then closes the writable. */
async function writeAll(
  sim: Simulation,
  writable: WritableStream<Uint8Array>,
  data: Uint8Array,
  progress: Progress,
  options: WriteOptions,
): Promise<void> {
  const writer = writable.getWriter();
  const scratch = options.reuseBuffer ? new Uint8Array(options.maxChunk) : null;
  let offset = 0;
  while (offset < data.length) {
    const n = Math.min(data.length - offset, 1 + options.random.int(options.maxChunk));
    let chunk = data.subarray(offset, offset + n);
    if (scratch !== null) {
      scratch.set(chunk);
      chunk = scratch.subarray(0, n);
    }
    const started = sim.now;
    await writer.write(chunk);
    progress.longestWrite = Math.max(progress.longestWrite, sim.now - started);
    // The layer must have copied what it still needs.
    scratch?.fill(0x5a);
    offset += n;
    progress.written = offset;
    options.afterWrite?.();
  }
  if (options.keepOpen) {
    writer.releaseLock();
    return;
  }
  await writer.close();
  progress.writeClosed = true;
}

interface ReadOptions {
  /** Simulated ms to wait before each read. */
  pause?: number;
  /** Simulated ms to wait after a chunk of `length` bytes (a rate-limited consumer). */
  pace?: (length: number) => number;
  /** Resolves before the first read (e.g. a consumer that starts late). */
  start?: Promise<void>;
}

/** Reads to the end of the stream, checking every byte against `expected`. */
async function readAll(
  sim: Simulation,
  readable: ReadableStream<Uint8Array>,
  expected: Uint8Array,
  progress: Progress,
  options: ReadOptions = {},
): Promise<void> {
  await options.start;
  const reader = readable.getReader();
  for (;;) {
    if (options.pause) await sim.sleep(options.pause);
    const { value, done } = await reader.read();
    if (done) break;
    assert.ok(value instanceof Uint8Array, "the readable yields Uint8Array chunks");
    const at = progress.read;
    if (at + value.length > expected.length) {
      throw new Error(
        `received ${at + value.length} bytes, more than the ${expected.length} sent`,
      );
    }
    for (let i = 0; i < value.length; i++) {
      if (value[i] !== expected[at + i]) {
        throw new Error(
          `byte ${at + i} differs: got ${value[i]}, sent ${expected[at + i]} ` +
            `(chunk of ${value.length} bytes at ${at})`,
        );
      }
    }
    progress.read += value.length;
    progress.reads++;
    if (options.pace) await sim.sleep(options.pace(value.length));
  }
  if (progress.read !== expected.length) {
    throw new Error(`stream ended after ${progress.read} of ${expected.length} bytes`);
  }
  progress.readDone = true;
}

interface Pair {
  sim: Simulation;
  clientNode: SimNode;
  serverNode: SimNode;
  client: TcpConnectionLike;
  /** The accepted connection (once the SYN arrived). */
  server: () => TcpConnectionLike | undefined;
  clientClosed: () => boolean;
  serverClosed: () => boolean;
}

interface PairOptions {
  seed: number;
  link: LinkOptions;
  ipv6?: boolean;
  /** Called with the accepted connection (start the server's tasks here). */
  onAccept?: (conn: TcpConnectionLike) => void;
  /** Options of both layers. */
  tcp?: TcpOptions;
}

/** Two layers over a link; the client connects at once, the server accepts. */
function connectedPair(options: PairOptions): Pair {
  const sim = new Simulation({ seed: options.seed, traceSize: TRACE });
  const clientAddress: IpAddress = options.ipv6 ? CLIENT_V6 : CLIENT_V4;
  const serverAddress: IpAddress = options.ipv6 ? SERVER_V6 : SERVER_V4;
  const clientNode = sim.addNode(clientAddress, layers(sim, options.tcp));
  const serverNode = sim.addNode(serverAddress, layers(sim, options.tcp));
  sim.link(clientNode, serverNode, options.link);
  let server: TcpConnectionLike | undefined;
  let serverClosed = false, clientClosed = false;
  serverNode.onSyn = (request) => {
    assert.equal(server, undefined, "one SYN request for one connection attempt");
    assert.equal(request.tuple.remotePort, CLIENT_PORT);
    assert.equal(request.tuple.localPort, SERVER_PORT);
    assert.equal(request.ipVersion, options.ipv6 ? 6 : 4);
    server = request.accept();
    sim.spawn(() => server!.closed).then(() => serverClosed = true);
    options.onAccept?.(server);
  };
  const tuple: TcpTuple = {
    localAddress: clientAddress,
    localPort: CLIENT_PORT,
    remoteAddress: serverAddress,
    remotePort: SERVER_PORT,
  };
  const client = clientNode.layer.connect(tuple, sim.now);
  assert.equal(client.remotePort, SERVER_PORT);
  assert.equal(client.localPort, CLIENT_PORT);
  sim.spawn(() => client.closed).then(() => clientClosed = true);
  return {
    sim,
    clientNode,
    serverNode,
    client,
    server: () => server,
    clientClosed: () => clientClosed,
    serverClosed: () => serverClosed,
  };
}

/** Runs until both connections are closed, then until no timer is left (10 min at most). */
async function runToRest(pair: Pair): Promise<void> {
  const { sim } = pair;
  await sim.run(() => pair.clientClosed() && pair.serverClosed(), {
    maxTime: sim.now + 600_000,
  });
  await sim.run(() => false, { onIdle: "return", maxTime: sim.now + 600_000 });
  assert.equal(pair.clientNode.layer.nextDeadline(), Infinity, "client layer has no timer left");
  assert.equal(pair.serverNode.layer.nextDeadline(), Infinity, "server layer has no timer left");
}

function randomBytes(seed: number, n: number): Uint8Array {
  return new SimRandom(seed).fill(new Uint8Array(n));
}

interface TransferCase {
  seed: number;
  loss: number;
  bytes: number;
  duplicate: number;
  reorder: number;
  ipv6?: boolean;
  /** A tighter bound (simulated ms) than {@linkcode completionBound}. */
  bound?: number;
  /** The link (default `BASE_LINK`). */
  link?: ShapedLink;
  /** netem-style reordering: a reordered segment skips the delay. */
  early?: boolean;
}

/**
 * Both sides write `bytes` at once and read the other side's bytes; the
 * client closes when done writing, the server too. Checks every byte, the
 * completion bound, and that both layers come to rest.
 */
async function bidirectional(c: TransferCase): Promise<string> {
  const up = randomBytes(c.seed * 2 + 1, c.bytes);
  const down = randomBytes(c.seed * 2 + 2, c.bytes);
  const chunks = new SimRandom(c.seed ^ 0x5eed);
  const clientSide = newProgress(), serverSide = newProgress();
  const pair = connectedPair({
    seed: c.seed,
    ipv6: c.ipv6,
    link: {
      ...(c.link ?? BASE_LINK),
      loss: c.loss,
      duplicate: c.duplicate,
      reorder: c.reorder,
      reorderEarly: c.early,
    },
    onAccept: (conn) => {
      sim.spawn(() => readAll(sim, conn.readable, up, serverSide));
      sim.spawn(() =>
        writeAll(sim, conn.writable, down, serverSide, { maxChunk: 65536, random: chunks })
      );
    },
  });
  const { sim, client } = pair;
  sim.spawn(() => readAll(sim, client.readable, down, clientSide));
  sim.spawn(() =>
    writeAll(sim, client.writable, up, clientSide, { maxChunk: 65536, random: chunks })
  );
  const bound = c.bound ?? completionBound(c.bytes, c.loss, c.reorder, c.link);
  await sim.run(() => clientSide.readDone && serverSide.readDone, { maxTime: bound });
  const took = sim.now;
  await sim.run(() => clientSide.writeClosed && serverSide.writeClosed, { maxTime: took + 60_000 });
  await runToRest(pair);
  const summary = `${took} ${sim.now} ${sim.formatStats()}`;
  if (VERBOSE) {
    const cs = sim.stats(pair.clientNode, pair.serverNode);
    const ss = sim.stats(pair.serverNode, pair.clientNode);
    console.log(
      `seed ${c.seed} loss ${c.loss}: ${c.bytes} B each way in ${(took / 1000).toFixed(1)} s ` +
        `(bound ${(bound / 1000).toFixed(1)} s), segments c>s ${cs.sent} (lost ${cs.lost}, ` +
        `qdrop ${cs.queueDrops}) s>c ${ss.sent} (lost ${ss.lost}, qdrop ${ss.queueDrops}), ` +
        `steps ${sim.steps}\n  client ${connectionStats(client)}\n  server ${
          connectionStats(pair.server()!)
        }`,
    );
  }
  return summary;
}

/** The layer's per-connection counters, when it exposes them (for verbose output). */
function connectionStats(conn: TcpConnectionLike): string {
  const stats = conn.stats as unknown as Record<string, unknown> | undefined;
  if (stats === undefined) return "(no stats)";
  const keys = [
    "retransmits",
    "timeouts",
    "fastRecoveries",
    "dropped",
    "challengeAcks",
    "cwnd",
    "srtt",
    "rttvar",
    "rto",
  ];
  return keys.filter((k) => k in stats).map((k) => `${k}=${stats[k]}`).join(" ");
}

// ---------------------------------------------------------------------------

/** A stand-in layer for testing the link itself: records what it receives. */
class RecordingLayer implements TcpLayerLike {
  received: { time: number; seq: number; payload: Uint8Array; view: Uint8Array }[] = [];
  constructor(readonly host: TcpLayerHost) {}
  input(_src: IpAddress, _dst: IpAddress, segment: Uint8Array, now: number): void {
    this.received.push({
      time: now,
      seq: new DataView(segment.buffer, segment.byteOffset).getUint32(4),
      payload: segment.slice(20),
      view: segment,
    });
  }
  icmpError(): void {}
  poll(): void {}
  nextDeadline(): number {
    return Infinity;
  }
  connect(): TcpConnectionLike {
    throw new TypeError("RecordingLayer cannot connect");
  }
}

function recordingPair(seed: number, link: LinkOptions) {
  const sim = new Simulation({ seed });
  const a = sim.addNode(CLIENT_V4, (h) => new RecordingLayer(h));
  const b = sim.addNode(SERVER_V4, (h) => new RecordingLayer(h));
  sim.link(a, b, link);
  const send = (seq: number, payload = new Uint8Array(0)) =>
    (a.layer as RecordingLayer).host.sendSegment(
      CLIENT_V4,
      SERVER_V4,
      buildTcpSegment(CLIENT_V4, SERVER_V4, {
        srcPort: 1,
        dstPort: 2,
        seq,
        flags: 0x10,
        payload,
      }),
    );
  return { sim, a, b, send, received: (b.layer as RecordingLayer).received };
}

Deno.test("simulated link", async (t) => {
  await t.step("delivers after the delay and serialization time, FIFO", async () => {
    const { sim, send, received } = recordingPair(1, { delay: 5, bandwidth: 100 });
    for (let i = 0; i < 10; i++) send(i, new Uint8Array(980)); // 1000 B each: 10 ms on the wire
    await sim.run(() => received.length === 10);
    assert.deepEqual(received.map((r) => r.seq), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(received.map((r) => r.time), [15, 25, 35, 45, 55, 65, 75, 85, 95, 105]);
  });

  await t.step("tail-drops what does not fit in the queue", async () => {
    const { sim, a, b, send, received } = recordingPair(1, {
      bandwidth: 100,
      queueLimit: 3000,
    });
    for (let i = 0; i < 10; i++) send(i, new Uint8Array(980));
    await sim.run(() => false, { onIdle: "return" });
    assert.deepEqual(received.map((r) => r.seq), [0, 1, 2]);
    assert.equal(sim.stats(a, b).queueDrops, 7);
  });

  await t.step("the same seed replays the same losses, duplicates and order", async () => {
    const runOnce = async (seed: number) => {
      const { sim, send, received } = recordingPair(seed, {
        delay: 10,
        loss: 0.2,
        duplicate: 0.1,
        reorder: 0.3,
      });
      for (let i = 0; i < 2000; i++) send(i);
      await sim.run(() => false, { onIdle: "return" });
      return received.map((r) => `${r.time}:${r.seq}`).join(",");
    };
    const first = await runOnce(42);
    assert.equal(await runOnce(42), first);
    assert.notEqual(await runOnce(43), first);
  });

  await t.step("loss, duplication and reordering happen at about their rates", async () => {
    const { sim, a, b, send, received } = recordingPair(7, {
      delay: 10,
      loss: 0.2,
      duplicate: 0.1,
      reorder: 0.3,
    });
    const n = 10_000;
    for (let i = 0; i < n; i++) send(i);
    await sim.run(() => false, { onIdle: "return" });
    const s = sim.stats(a, b);
    // Binomial standard deviations: 40, 27 and 46; allow 5 of them.
    assert.ok(Math.abs(s.lost - 2000) < 200, `lost ${s.lost}`);
    assert.ok(Math.abs(s.duplicated - 800) < 135, `duplicated ${s.duplicated}`);
    assert.ok(Math.abs(s.reordered - 2400) < 230, `reordered ${s.reordered}`);
    assert.equal(received.length, n - s.lost + s.duplicated);
    let inversions = 0;
    for (let i = 1; i < received.length; i++) {
      if (received[i].seq < received[i - 1].seq) inversions++;
    }
    assert.ok(inversions > 100, `reordering reorders (${inversions} inversions)`);
  });

  await t.step("hands the layer a view it poisons after input", async () => {
    const { sim, send, received } = recordingPair(1, {});
    send(9, new Uint8Array([1, 2, 3]));
    await sim.run(() => received.length === 1);
    assert.deepEqual([...received[0].payload], [1, 2, 3]);
    assert.notEqual(received[0].view.byteOffset, 0);
    assert.deepEqual([...received[0].view.subarray(20)], [0xa5, 0xa5, 0xa5]);
  });

  await t.step("fails with the seed on a deadlock, a time limit or a bad checksum", async () => {
    const idle = recordingPair(99, {});
    await assert.rejects(idle.sim.run(() => false), /seed=99 .*deadlock/s);
    const slow = recordingPair(98, { delay: 1000 });
    slow.send(1);
    await assert.rejects(slow.sim.run(() => false, { maxTime: 500 }), /seed=98 .*time limit/s);
    const bad = recordingPair(97, {});
    const segment = buildTcpSegment(CLIENT_V4, SERVER_V4, {
      srcPort: 1,
      dstPort: 2,
      seq: 0,
      flags: 2,
    });
    segment[16] ^= 1;
    (bad.a.layer as RecordingLayer).host.sendSegment(CLIENT_V4, SERVER_V4, segment);
    await assert.rejects(bad.sim.run(() => false), /seed=97 .*bad checksum/s);
  });

  await t.step("sleep() and spawned tasks run on the simulated clock", async () => {
    const { sim } = recordingPair(1, {});
    const times: number[] = [];
    let finished = false;
    sim.spawn(async () => {
      for (let i = 0; i < 3; i++) {
        await sim.sleep(100);
        times.push(sim.now);
      }
      finished = true;
    });
    await sim.run(() => finished);
    assert.deepEqual(times, [100, 200, 300]);
    sim.spawn(() => Promise.reject(new Error("task broke")));
    await assert.rejects(sim.run(() => false), /seed=1 .*task broke/s);
  });
});

// ---------------------------------------------------------------------------

/** Seeds per loss rate; the sizes shrink with loss to keep the file's run short. */
const SEEDS_PER_RATE = 16;
const LOSS_CASES: { loss: number; bytes: number; seeds: number[] }[] = [
  { loss: 0, bytes: 4 << 20 },
  { loss: 0.01, bytes: 4 << 20 },
  { loss: 0.05, bytes: 4 << 20 },
  { loss: 0.1, bytes: 2 << 20 },
  { loss: 0.2, bytes: 1 << 20 },
  { loss: 0.3, bytes: 512 << 10 },
].map(({ loss, bytes }) => ({
  loss,
  bytes,
  seeds: Array.from({ length: SEEDS_PER_RATE }, (_, i) => Math.round(loss * 1000) + 100 + i),
}));

/**
 * The cells of `bench/impaired_bench.ts` ([loss, one-way delay ms, reorder,
 * Linux BBR's download rate measured there in MB/s, median or single run,
 * 20 MB]), with netem's reordering (a reordered segment skips the delay).
 */
const IMPAIRED_CELLS: [number, number, number, number][] = [
  [0.02, 5, 0.1, 9.3],
  [0.01, 25, 0.25, 0.83],
  [0.05, 50, 0, 4.1],
  [0, 50, 0.1, 0.58],
  [0.005, 100, 0, 2.4],
  [0.02, 5, 0, 33],
  [0, 5, 0.1, 30],
];

Deno.test("tcp: the impaired-path cells, both directions at once, are byte-exact", async (t) => {
  // 200 Mbit/s, 1 MB queue; 2 MB each way. Bound: what Linux BBR needed for
  // the same bytes on the real path (both directions share the link here, so
  // twice the bytes), times 1.5, plus 3 s for the handshakes and startup.
  const link = { delay: 0, bandwidth: 25_000, queueLimit: 1 << 20 };
  const bytes = 2 << 20;
  for (const [loss, delay, reorder, linuxMBps] of IMPAIRED_CELLS) {
    for (const seed of [1, 2]) {
      await step(
        t,
        `loss ${loss * 100} %, ${delay} ms, reordering ${reorder * 100} %, seed ${seed}`,
        () =>
          bidirectional({
            seed,
            loss,
            bytes,
            duplicate: 0,
            reorder,
            early: true,
            link: { ...link, delay },
            bound: 3000 + 1.5 * (2 * bytes / 1e6 / linuxMBps) * 1000,
          }),
      );
    }
  }
});

Deno.test("tcp: bidirectional transfers over a lossy link are byte-exact", async (t) => {
  await step(
    t,
    "clean link (no loss, duplication or reordering), seed 1, 4 MB",
    () =>
      bidirectional({
        seed: 1,
        loss: 0,
        bytes: 4 << 20,
        duplicate: 0,
        reorder: 0,
        // Nothing is lost here: 1 s for the handshake and slow start, then at least
        // half the link rate.
        bound: 1000 + 2 * (4 << 20) / BASE_LINK.bandwidth,
      }),
  );
  for (const { loss, bytes, seeds } of LOSS_CASES) {
    for (const seed of seeds) {
      await step(
        t,
        `loss ${loss * 100} %, duplication 1 %, reordering 5 %, seed ${seed}, ${bytes >> 10} KB`,
        () => bidirectional({ seed, loss, bytes, duplicate: 0.01, reorder: 0.05 }),
      );
    }
  }
  await step(t, "the same seed replays exactly (loss 5 %, seed 71, 512 KB, twice)", async () => {
    const c = { seed: 71, loss: 0.05, bytes: 512 << 10, duplicate: 0.01, reorder: 0.05 };
    assert.equal(await bidirectional(c), await bidirectional(c));
  });
  await step(
    t,
    "long fat link (100 ms RTT, 20 MB/s, 1 MB queue), loss 0.5 %, seeds 81–84, 8 MB",
    async () => {
      for (const seed of [81, 82, 83, 84]) {
        await bidirectional({
          seed,
          loss: 0.005,
          bytes: 8 << 20,
          duplicate: 0.01,
          reorder: 0.05,
          link: { delay: 50, bandwidth: 20_000, queueLimit: 1 << 20 },
        });
      }
    },
  );
  await step(t, "1 Gbit/s, 10 ms RTT, no loss: 16 MB each way is not window-limited", () => {
    // 125,000 B/ms and 10 ms RTT: the bandwidth-delay product is 1.25 MB. At
    // the initial 64 KiB receive window the transfer would take 16 MB /
    // (64 KiB / 10 ms) ≈ 2.6 s; the bound is line rate (134 ms) plus 300 ms
    // for slow start and receive-buffer growth (both double per RTT).
    const link = { delay: 5, bandwidth: 125_000, queueLimit: 4 << 20 };
    return bidirectional({
      seed: 71,
      loss: 0,
      duplicate: 0,
      reorder: 0,
      bytes: 16 << 20,
      link,
      bound: 134 + 300,
    });
  });
  await step(t, "IPv6, loss 5 %, seed 61, 512 KB", () =>
    bidirectional({
      seed: 61,
      loss: 0.05,
      bytes: 512 << 10,
      duplicate: 0.01,
      reorder: 0.05,
      ipv6: true,
    }));
});

Deno.test("tcp: half-close", async (t) => {
  for (const [seed, loss] of [[1, 0], [2, 0.05], [3, 0.1]]) {
    await step(
      t,
      `client closes first, server answers after EOF (seed ${seed}, loss ${loss})`,
      async () => {
        const up = randomBytes(seed * 7, 300_000);
        const down = randomBytes(seed * 7 + 1, 500_000);
        const chunks = new SimRandom(seed);
        const clientSide = newProgress(), serverSide = newProgress();
        const pair = connectedPair({
          seed,
          link: { ...BASE_LINK, loss, duplicate: 0.01, reorder: 0.05 },
          onAccept: (conn) =>
            sim.spawn(async () => {
              // The server reads to the client's EOF, then sends its answer and closes.
              await readAll(sim, conn.readable, up, serverSide);
              assert.equal(clientSide.writeClosed, true, "client's close() resolved before EOF");
              await writeAll(sim, conn.writable, down, serverSide, {
                maxChunk: 20_000,
                random: chunks,
                reuseBuffer: true,
              });
            }),
        });
        const { sim, client } = pair;
        sim.spawn(() =>
          writeAll(sim, client.writable, up, clientSide, {
            maxChunk: 20_000,
            random: chunks,
            reuseBuffer: true,
          })
        );
        sim.spawn(() => readAll(sim, client.readable, down, clientSide));
        await sim.run(() => clientSide.readDone && serverSide.writeClosed, {
          maxTime: completionBound(800_000, loss, 0.05),
        });
        assert.equal(serverSide.readDone, true);
        await runToRest(pair);
      },
    );
  }
});

/** The server closes its (unused) direction; the client reads its EOF; both come to rest. */
async function closeReverse(pair: Pair): Promise<void> {
  const { sim } = pair;
  const clientSide = newProgress();
  sim.spawn(() => readAll(sim, pair.client.readable, new Uint8Array(0), clientSide));
  sim.spawn(() => pair.server()!.writable.close());
  await sim.run(() => clientSide.readDone);
  await runToRest(pair);
}

/**
 * Buffer limits of the flow-control tests (the defaults grow to 4 MiB each,
 * as large as the transfers), and what the two layers may hold for one
 * direction beyond what the reader consumed: a full send buffer, a full
 * receive buffer, and the one write that may be in progress.
 */
const SMALL_BUFFERS: TcpOptions = {
  sendBuffer: 65536,
  maxSendBuffer: 262144,
  receiveBuffer: 65536,
  maxReceiveBuffer: 262144,
};
const WRITE_CHUNK = 16384;
const BUFFER_BOUND = SMALL_BUFFERS.maxSendBuffer! + SMALL_BUFFERS.maxReceiveBuffer! + WRITE_CHUNK;

Deno.test("tcp: flow control", async (t) => {
  const slowConsumers: { name: string; bytes: number; read: ReadOptions; throttled: number }[] = [
    // The layer may hand over everything queued in one chunk, so this one is only
    // as slow as the receive buffer allows: check bounds and bytes, not throttling.
    { name: "reads one chunk every 100 ms", bytes: 2 << 20, read: { pause: 100 }, throttled: 0 },
    // 100 ms per started 4 KiB: at most ~40 KB/s against a 5 MB/s link.
    {
      name: "consumes 4 KiB per 100 ms",
      bytes: 1 << 20,
      read: { pace: (n) => 100 * Math.ceil(n / 4096) },
      throttled: 1000,
    },
  ];
  for (const c of slowConsumers) {
    await step(t, `a slow consumer that ${c.name}: bounded sender, no byte lost`, async () => {
      const data = randomBytes(5, c.bytes);
      const clientSide = newProgress(), serverSide = newProgress();
      const pair = connectedPair({
        seed: 5,
        link: { ...BASE_LINK, loss: 0.01 },
        tcp: SMALL_BUFFERS,
        onAccept: (conn) => sim.spawn(() => readAll(sim, conn.readable, data, serverSide, c.read)),
      });
      const { sim, client } = pair;
      sim.spawn(() =>
        writeAll(sim, client.writable, data, clientSide, {
          maxChunk: WRITE_CHUNK,
          random: new SimRandom(5),
          afterWrite: () => {
            clientSide.maxAhead = Math.max(
              clientSide.maxAhead,
              clientSide.written - serverSide.read,
            );
          },
        })
      );
      await sim.run(() => serverSide.readDone, { maxTime: 3_600_000 });
      assert.ok(
        clientSide.maxAhead <= BUFFER_BOUND,
        `writes resolved up to ${clientSide.maxAhead} bytes ahead of the reader`,
      );
      assert.ok(
        clientSide.longestWrite >= c.throttled,
        `a write stayed pending for ${c.throttled} ms (longest ${clientSide.longestWrite} ms)`,
      );
      if (VERBOSE) {
        console.log(
          `${c.name}: ${serverSide.reads} reads in ${(sim.now / 1000).toFixed(1)} s, ` +
            `longest write ${clientSide.longestWrite.toFixed(0)} ms, ` +
            `max ahead ${clientSide.maxAhead} B`,
        );
      }
      await sim.run(() => clientSide.writeClosed);
      await closeReverse(pair);
    });
  }

  await step(
    t,
    "a consumer that does not read for 2 minutes bounds the sender, then gets everything",
    async () => {
      const bytes = 4 << 20;
      const data = randomBytes(6, bytes);
      const clientSide = newProgress(), serverSide = newProgress();
      const pair = connectedPair({
        seed: 6,
        link: { ...BASE_LINK, loss: 0.1, duplicate: 0.01, reorder: 0.05 },
        tcp: SMALL_BUFFERS,
        onAccept: (conn) =>
          sim.spawn(() =>
            readAll(sim, conn.readable, data, serverSide, { start: sim.sleep(120_000) })
          ),
      });
      const { sim, client } = pair;
      sim.spawn(() =>
        writeAll(sim, client.writable, data, clientSide, {
          maxChunk: WRITE_CHUNK,
          random: new SimRandom(6),
        })
      );
      await sim.run(() => sim.now >= 30_000);
      const at30 = clientSide.written;
      assert.ok(at30 > 0, "some writes resolved");
      assert.ok(at30 <= BUFFER_BOUND, `writes resolved for ${at30} bytes nobody read`);
      await sim.run(() => sim.now >= 119_000);
      assert.equal(clientSide.written, at30, "no write resolved while nobody read");
      assert.equal(serverSide.read, 0);
      await sim.run(() => serverSide.readDone, {
        maxTime: 120_000 + completionBound(bytes, 0.1, 0.05),
      });
      await sim.run(() => clientSide.writeClosed);
      await closeReverse(pair);
    },
  );
});

/** Reads until the stream ends or errors; returns the error (or `null` on a clean end). */
async function readUntilError(readable: ReadableStream<Uint8Array>): Promise<unknown> {
  const reader = readable.getReader();
  try {
    for (;;) if ((await reader.read()).done) return null;
  } catch (e) {
    return e ?? new Error("errored with no reason");
  }
}

Deno.test("tcp: failures reach the streams", async (t) => {
  await step(t, "a refused connection errors the client's readable", async () => {
    const sim = new Simulation({ seed: 8, traceSize: TRACE });
    const a = sim.addNode(CLIENT_V4, layers(sim));
    const b = sim.addNode(SERVER_V4, layers(sim));
    sim.link(a, b, { delay: 10 });
    let requests = 0;
    b.onSyn = (request) => {
      requests++;
      request.reset();
    };
    const conn = a.layer.connect({
      localAddress: CLIENT_V4,
      localPort: CLIENT_PORT,
      remoteAddress: SERVER_V4,
      remotePort: SERVER_PORT,
    }, sim.now);
    let error: unknown = undefined, closed = false;
    sim.spawn(async () => error = await readUntilError(conn.readable));
    sim.spawn(() => conn.closed).then(() => closed = true);
    await sim.run(() => error !== undefined && closed, { maxTime: 5_000 });
    assert.notEqual(error, null, "the readable errors (it does not end cleanly)");
    assert.equal(requests, 1);
    await sim.run(() => false, { onIdle: "return", maxTime: sim.now + 600_000 });
    assert.equal(a.layer.nextDeadline(), Infinity);
    assert.equal(b.layer.nextDeadline(), Infinity);
  });

  await step(t, "an unanswered SYN times out and errors the client's readable", async () => {
    const sim = new Simulation({ seed: 9, traceSize: TRACE });
    const a = sim.addNode(CLIENT_V4, layers(sim));
    const b = sim.addNode(SERVER_V4, layers(sim));
    let requests = 0;
    b.onSyn = (request) => {
      requests++;
      request.drop();
    };
    sim.link(a, b, { delay: 10 });
    const conn = a.layer.connect({
      localAddress: CLIENT_V4,
      localPort: CLIENT_PORT,
      remoteAddress: SERVER_V4,
      remotePort: SERVER_PORT,
    }, sim.now);
    let error: unknown = undefined;
    sim.spawn(async () => error = await readUntilError(conn.readable));
    // Linux gives up after 6 SYN retransmissions (~127 s); allow 10 minutes.
    await sim.run(() => error !== undefined, { maxTime: 600_000 });
    assert.notEqual(error, null);
    assert.ok(requests >= 1);
    await sim.run(() => false, { onIdle: "return", maxTime: sim.now + 600_000 });
    assert.equal(a.layer.nextDeadline(), Infinity);
  });

  await step(t, "abort() mid-transfer resets: the peer's readable errors", async () => {
    const data = randomBytes(10, 1 << 20);
    let serverError: unknown = undefined;
    const pair = connectedPair({
      seed: 10,
      link: { ...BASE_LINK, loss: 0.01 },
      onAccept: (conn) => sim.spawn(async () => serverError = await readUntilError(conn.readable)),
    });
    const { sim, client } = pair;
    const writer = client.writable.getWriter();
    sim.spawn(async () => {
      await writer.write(data.subarray(0, 200_000));
      await sim.sleep(500);
      await writer.abort(new Error("test abort"));
    });
    await sim.run(() => serverError !== undefined, { maxTime: 60_000 });
    assert.notEqual(serverError, null, "the server's readable errors after a reset");
    await sim.run(() => pair.clientClosed() && pair.serverClosed(), { maxTime: sim.now + 60_000 });
    await sim.run(() => false, { onIdle: "return", maxTime: sim.now + 600_000 });
    assert.equal(pair.clientNode.layer.nextDeadline(), Infinity);
    assert.equal(pair.serverNode.layer.nextDeadline(), Infinity);
  });
});

Deno.test("tcp: scripted loss patterns", async (t) => {
  await step(
    t,
    "both sides time out at once and their retransmissions cross (seed 103 at 10 % loss, minimized)",
    async () => {
      // 50 ms each way. Each side sends 3 segments (and keeps its direction
      // open); the first data segment of each direction is lost, and the pure
      // ACKs (dup ACKs) of both sides are lost until t = 410 ms, so there is no
      // fast retransmit: both sides' RTOs fire (client ~420 ms, server ~450 ms)
      // before either retransmission arrives. Both then retransmit from SND.UNA
      // and must keep their pure ACKs acceptable to a peer whose RCV.NXT is
      // already past them (else each drops the other's ACKs and answers them:
      // an ACK storm, and SND.UNA never advances).
      const bytes = 3 * 1368;
      const up = randomBytes(1031, bytes), down = randomBytes(1032, bytes);
      const dropFirstData = () => {
        let seen = false;
        return (s: TcpSegmentInfo, now: number) => {
          const pureAck = s.payloadLength === 0 && (s.flags & 0x07) === 0;
          if (pureAck && now > 110 && now < 410) return false;
          if (s.payloadLength === 0 || seen) return true;
          seen = true;
          return false;
        };
      };
      const clientSide = newProgress(), serverSide = newProgress();
      const pair = connectedPair({
        seed: 1031,
        link: { delay: 50 },
        onAccept: (conn) => {
          sim.spawn(() => readAll(sim, conn.readable, up, serverSide));
          sim.spawn(() =>
            writeAll(sim, conn.writable, down, serverSide, {
              maxChunk: bytes,
              random: new SimRandom(1),
              keepOpen: true,
            })
          );
        },
      });
      const { sim, client } = pair;
      // Re-link with the filters (connectedPair made a plain link first).
      sim.link(pair.clientNode, pair.serverNode, { delay: 50, filter: dropFirstData() }, {
        delay: 50,
        filter: dropFirstData(),
      });
      sim.spawn(async () => {
        await sim.sleep(120);
        await writeAll(sim, client.writable, up, clientSide, {
          maxChunk: bytes,
          random: new SimRandom(1),
          keepOpen: true,
        });
      });
      sim.spawn(() => readAll(sim, client.readable, down, clientSide));
      await sim.run(() => serverSide.read === bytes && clientSide.read === bytes, {
        maxTime: 5_000,
      });
      // Everything is delivered; give both sides 3 s to get their data acknowledged.
      await sim.run(() => sim.now >= 3_000, { onIdle: "return" });
      const up1 = sim.stats(pair.clientNode, pair.serverNode).sent;
      const down1 = sim.stats(pair.serverNode, pair.clientNode).sent;
      assert.ok(
        up1 < 30 && down1 < 30,
        `the connection settles (${up1} and ${down1} segments sent by t = 3 s)\n` +
          sim.formatTrace(),
      );
      sim.spawn(() => client.writable.close());
      sim.spawn(() => pair.server()!.writable.close());
      await sim.run(() => clientSide.readDone && serverSide.readDone, { maxTime: 10_000 });
      await runToRest(pair);
    },
  );
});

Deno.test("tcp: timer recovery after long outages", async (t) => {
  await step(
    t,
    "a 50 s ACK outage does not leave the RTO pinned near its maximum (seeds 301, 303, 306, 307 at 20 % loss, minimized)",
    async () => {
      // 10 ms each way, nothing lost except: every server→client segment in
      // [100 ms, 50 s) (the ACKs of the first write, so the client backs off and
      // retransmits), and the one data segment of the second write, at 60 s
      // (a tail loss: only the RTO recovers it). The path RTT never changes
      // (20 ms), so the RTO must be back near 200 ms–1 s by then.
      const first = randomBytes(1061, 8000), second = randomBytes(1062, 1000);
      const data = new Uint8Array([...first, ...second]);
      let droppedSecond = false;
      const serverSide = newProgress();
      const pair = connectedPair({
        seed: 1061,
        link: { delay: 10 },
        onAccept: (conn) => sim.spawn(() => readAll(sim, conn.readable, data, serverSide)),
      });
      const { sim, client } = pair;
      sim.link(pair.clientNode, pair.serverNode, {
        delay: 10,
        filter: (s, now) => {
          if (now < 59_000 || droppedSecond || s.payloadLength === 0) return true;
          droppedSecond = true;
          return false;
        },
      }, { delay: 10, filter: (_s, now) => now < 100 || now >= 50_000 });
      const writer = client.writable.getWriter();
      sim.spawn(async () => {
        await sim.sleep(100);
        await writer.write(first);
        await sim.sleep(60_000 - sim.now);
        await writer.write(second);
      });
      await sim.run(() => serverSide.read === first.length, { maxTime: 60_000 });
      await sim.run(() => serverSide.read === data.length, { maxTime: 60_000 + 5_000 });
      sim.spawn(() => writer.close());
      await sim.run(() => serverSide.readDone, { maxTime: 70_000 });
      await closeReverse(pair);
    },
  );
});
