/**
 * TCP layer benchmark (a script, not `deno bench`):
 *
 *     deno run -A --v8-flags=--expose-gc bench/tcp_bench.ts [--mb=100] [--connections=10000]
 *
 * (a) Throughput: one connection between two `TcpLayer`s in one process over
 *     the simulated link with no loss and zero delay (the fake clock only
 *     jumps to the layers' deadlines when idle), `--mb` MB one way through the
 *     stream API, wall-clock time. Baselines in the same run: the same bytes
 *     through two identity `TransformStream`s, (1) in the writer's 64 KB
 *     chunks, (2) re-chunked (copied) to the size of the chunks the TCP
 *     reader actually got and (3) re-chunked to the data segment size. TCP is
 *     reported as a ratio of each. The simulated link copies each segment
 *     once (as a real IP layer would), which is charged to TCP.
 * (b) Memory: `--connections` established idle connections accepted by one
 *     layer from a scripted client (hand-built SYN and ACK), heap and RSS
 *     difference vs before, per connection; then again with a pending
 *     `read()` on each connection's readable (what a forwarding app holds).
 *
 * @module
 */

import { TcpLayer } from "../netstack/tcp/layer.ts";
import type { TcpConnectionLike, TcpLayerHost, TcpSynRequest } from "../netstack/tcp/api.ts";
import { buildTcpSegment, Simulation, tcpSegmentInfo } from "../tests/sim/link.ts";

const args = new Map(
  Deno.args.map((a) => a.replace(/^--/, "").split("=") as [string, string]),
);
const MB = Number(args.get("mb") ?? 100);
const CONNECTIONS = Number(args.get("connections") ?? 10_000);
const WRITE_CHUNK = 65536;

const gc = (globalThis as { gc?: () => void }).gc;

function collect(): void {
  if (gc) { for (let i = 0; i < 3; i++) gc(); }
}

function fmt(n: number, digits = 1): string {
  return n.toLocaleString("en-US", {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

function row(name: string, value: string): void {
  console.log(`${name.padEnd(68)} ${value}`);
}

// --- (a) throughput --------------------------------------------------------

async function tcpThroughput(totalBytes: number) {
  const sim = new Simulation({
    seed: 1,
    traceSize: 0,
    poisonAfterInput: false,
    verifyChecksums: false,
  });
  const a = sim.addNode(new Uint8Array([10, 0, 0, 1]), (h) => new TcpLayer(h));
  const b = sim.addNode(new Uint8Array([10, 0, 0, 2]), (h) => new TcpLayer(h));
  sim.link(a, b, {});
  const source = new Uint8Array(WRITE_CHUNK);
  crypto.getRandomValues(source);
  let received = 0, reads = 0, done = false;
  b.onSyn = (req: TcpSynRequest) => {
    const conn = req.accept();
    sim.spawn(async () => {
      const reader = conn.readable.getReader();
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        received += value.length;
        reads++;
      }
      await conn.writable.close();
      done = true;
    });
  };
  const client = a.layer.connect({
    localAddress: a.address,
    localPort: 40000,
    remoteAddress: b.address,
    remotePort: 5201,
  }, 0);
  const started = performance.now();
  sim.spawn(async () => {
    const writer = client.writable.getWriter();
    for (let sent = 0; sent < totalBytes; sent += WRITE_CHUNK) await writer.write(source);
    await writer.close();
  });
  await sim.run(() => done, { maxStepsAtSameTime: Infinity, maxSteps: Infinity });
  const seconds = (performance.now() - started) / 1000;
  if (received !== totalBytes) throw new Error(`received ${received} of ${totalBytes} bytes`);
  const up = sim.stats(a, b), down = sim.stats(b, a);
  return {
    seconds,
    segments: up.sent + down.sent,
    dataSegments: up.dataSegments,
    averageRead: received / reads,
    simulatedMs: sim.now,
    steps: sim.steps,
  };
}

async function streamBaseline(totalBytes: number, rechunk: number | null): Promise<number> {
  const source = new Uint8Array(WRITE_CHUNK);
  crypto.getRandomValues(source);
  const first = rechunk === null
    ? new TransformStream<Uint8Array, Uint8Array>()
    : new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        for (let i = 0; i < chunk.length; i += rechunk) {
          controller.enqueue(chunk.slice(i, Math.min(chunk.length, i + rechunk)));
        }
      },
    });
  const second = new TransformStream<Uint8Array, Uint8Array>();
  const started = performance.now();
  const piped = first.readable.pipeTo(second.writable);
  const reading = (async () => {
    let received = 0;
    for await (const chunk of second.readable) received += chunk.length;
    return received;
  })();
  const writer = first.writable.getWriter();
  for (let sent = 0; sent < totalBytes; sent += WRITE_CHUNK) await writer.write(source);
  await writer.close();
  await piped;
  const received = await reading;
  if (received !== totalBytes) throw new Error(`baseline received ${received} bytes`);
  return (performance.now() - started) / 1000;
}

// --- (b) memory ------------------------------------------------------------

interface Sample {
  heap: number;
  rss: number;
}

function sample(): Sample {
  collect();
  const m = Deno.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss };
}

async function idleConnections(count: number) {
  const server = new Uint8Array([10, 0, 0, 2]);
  const client = new Uint8Array([10, 0, 0, 1]);
  let outbox: Uint8Array[] = [];
  const accepted: TcpConnectionLike[] = [];
  const host: TcpLayerHost = {
    sendSegment: (_src, _dst, segment) => outbox.push(segment.slice()),
    wake: () => {},
    onSyn: (request) => accepted.push(request.accept()),
  };
  const layer = new TcpLayer(host, { maxHalfOpen: 20_000 });
  const mssOption = new Uint8Array([2, 4, 0x05, 0xb4]); // MSS 1460
  const clientIsn = (port: number) => (port * 2654435761) >>> 0;
  const portOf = (i: number) => 10000 + i;
  let now = 0;
  const before = sample();
  // In batches below the layer's half-open limit (1024 by default): SYNs, then
  // the ACKs of their SYN-ACKs.
  const batch = 500;
  let established = 0;
  for (let first = 0; first < count; first += batch) {
    for (let i = first; i < Math.min(count, first + batch); i++) {
      const port = portOf(i);
      layer.input(
        client,
        server,
        buildTcpSegment(client, server, {
          srcPort: port,
          dstPort: 80,
          seq: clientIsn(port),
          flags: 0x02,
          options: mssOption,
        }),
        now,
      );
    }
    layer.poll(now);
    const synAcks = outbox;
    outbox = [];
    for (const segment of synAcks) {
      const info = tcpSegmentInfo(segment);
      if ((info.flags & 0x12) !== 0x12) continue;
      established++;
      layer.input(
        client,
        server,
        buildTcpSegment(client, server, {
          srcPort: info.dstPort,
          dstPort: 80,
          seq: (clientIsn(info.dstPort) + 1) >>> 0,
          ack: (info.seq + 1) >>> 0,
          flags: 0x10,
        }),
        now,
      );
    }
  }
  now += 1;
  layer.poll(now);
  outbox = [];
  await new Promise((r) => setTimeout(r, 0));
  const afterEstablished = sample();
  if (accepted.length !== count || established !== count) {
    throw new Error(`accepted ${accepted.length}, SYN-ACKs ${established} of ${count}`);
  }
  const pending = accepted.map((c) => c.readable.getReader().read());
  for (const p of pending) p.catch(() => {});
  await new Promise((r) => setTimeout(r, 0));
  const afterReads = sample();
  const result = {
    heap: (afterEstablished.heap - before.heap) / count,
    rss: (afterEstablished.rss - before.rss) / count,
    heapWithRead: (afterReads.heap - before.heap) / count,
    rssWithRead: (afterReads.rss - before.rss) / count,
    deadline: layer.nextDeadline(),
    states: countStates(accepted),
  };
  // Release everything; the pending reads settle (with an error) or are collected.
  for (const c of accepted) c.reset();
  layer.poll(now + 1);
  return result;
}

/** "ESTABLISHED×10000"-style summary of the connections' states (when the layer exposes them). */
function countStates(conns: TcpConnectionLike[]): string {
  const counts = new Map<string, number>();
  for (const c of conns) {
    const state = String((c as { stats?: { state?: string } }).stats?.state ?? "unknown");
    counts.set(state, (counts.get(state) ?? 0) + 1);
  }
  return [...counts].map(([s, n]) => `${s}×${n}`).join(" ");
}

// --- main ------------------------------------------------------------------

if (import.meta.main) {
  const total = MB * 1024 * 1024;
  console.log(`TCP layer benchmark: ${MB} MB one way, ${CONNECTIONS} idle connections`);
  if (!gc) console.log("(run with --v8-flags=--expose-gc for steadier memory figures)");
  // Warm-up runs (JIT) before the measured ones.
  await tcpThroughput(Math.min(total, 8 << 20));
  await streamBaseline(Math.min(total, 8 << 20), null);
  const tcp = await tcpThroughput(total);
  const plain = await streamBaseline(total, null);
  const rechunked = await streamBaseline(total, Math.max(1, Math.round(tcp.averageRead)));
  const segmentSize = Math.round(total / tcp.dataSegments);
  const segmented = await streamBaseline(total, segmentSize);
  const mbps = (s: number) => total / s / 1e6;
  row("TCP, one connection, no loss, zero delay", `${fmt(mbps(tcp.seconds))} MB/s`);
  row(
    "  segments (both ways) / s",
    `${fmt(tcp.segments / tcp.seconds, 0)} (${tcp.dataSegments} data segments, ` +
      `${fmt(tcp.averageRead, 0)} B per read)`,
  );
  row(
    "  simulated time, loop steps",
    `${fmt(tcp.simulatedMs, 0)} ms, ${tcp.steps} steps`,
  );
  row("baseline: 2 TransformStreams, 64 KB chunks", `${fmt(mbps(plain))} MB/s`);
  row(
    `baseline: 2 TransformStreams, re-chunked to ${fmt(tcp.averageRead, 0)} B`,
    `${fmt(mbps(rechunked))} MB/s`,
  );
  row(
    `baseline: 2 TransformStreams, re-chunked to ${segmentSize} B (segment size)`,
    `${fmt(mbps(segmented))} MB/s`,
  );
  row("TCP / baseline 64 KB", `${fmt(plain / tcp.seconds, 3)}`);
  row("TCP / baseline re-chunked to read size", `${fmt(rechunked / tcp.seconds, 3)}`);
  row("TCP / baseline re-chunked to segment size", `${fmt(segmented / tcp.seconds, 3)}`);
  const mem = await idleConnections(CONNECTIONS);
  row(`idle established connections (${CONNECTIONS}): heap / conn`, `${fmt(mem.heap, 0)} B`);
  row("  RSS / conn", `${fmt(mem.rss, 0)} B`);
  row("  with a pending read() each: heap / conn", `${fmt(mem.heapWithRead, 0)} B`);
  row("  with a pending read() each: RSS / conn", `${fmt(mem.rssWithRead, 0)} B`);
  row("  connection states", mem.states);
  row("  layer's next deadline while idle", `${mem.deadline}`);
}
