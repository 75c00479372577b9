/**
 * Heap held per TCP connection in TIME_WAIT: two TCP layers joined in
 * memory, N connections each carrying a small request and response, the
 * server side closing first (as our forwarder does when the destination
 * closes first, so it is our side that waits in TIME_WAIT). The
 * application's handles are dropped; the heap after a full GC is compared
 * with the same run under `maxTimeWait: 0` (TIME_WAIT ends at once), so the
 * difference is what the TIME_WAIT table keeps alive. No root, no network.
 *
 * ```sh
 * deno run --v8-flags=--expose-gc bench/time_wait_memory_bench.ts [--connections 2000] [--congestion bbr|cubic|newreno]
 * ```
 *
 * @module
 */

import type { TcpConnectionLike, TcpLayerHost } from "../netstack/tcp/api.ts";
import type { TcpCongestionControl } from "../netstack/tcp/connection.ts";
import { TcpLayer } from "../netstack/tcp/layer.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error("run with --v8-flags=--expose-gc");
  Deno.exit(2);
}

function arg(name: string, fallback: string): string {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : fallback;
}

const N = Number(arg("--connections", "2000"));
const CC = arg("--congestion", "bbr") as TcpCongestionControl;
const A = new Uint8Array([10, 0, 0, 1]);
const B = new Uint8Array([10, 0, 0, 2]);

async function settle(): Promise<void> {
  for (let i = 0; i < 30; i++) await Promise.resolve();
}

/** Runs N connections to their end; returns the server layer (the caller keeps it) and its TIME_WAIT count. */
async function churn(maxTimeWait: number): Promise<{ keep: TcpLayer[]; timeWait: number }> {
  let now = 0;
  const queue: { to: "a" | "b"; src: Uint8Array; dst: Uint8Array; seg: Uint8Array }[] = [];
  let accepted: TcpConnectionLike | null = null;
  const hostA: TcpLayerHost = {
    sendSegment: (s, d, seg) => void queue.push({ to: "b", src: s, dst: d, seg: seg.slice() }),
    wake: () => {},
    onSyn: (r) => r.reset(),
  };
  const hostB: TcpLayerHost = {
    sendSegment: (s, d, seg) => void queue.push({ to: "a", src: s, dst: d, seg: seg.slice() }),
    wake: () => {},
    onSyn: (r) => (accepted = r.accept()),
  };
  const options = {
    congestionControl: CC,
    maxTimeWait,
    maxTimeWaitPerSource: maxTimeWait,
  };
  const a = new TcpLayer(hostA, options);
  const b = new TcpLayer(hostB, options);
  const pump = async () => {
    for (let rounds = 0; rounds < 100; rounds++) {
      await settle();
      a.poll(now);
      b.poll(now);
      if (queue.length === 0) return;
      while (queue.length > 0) {
        const p = queue.shift()!;
        (p.to === "a" ? a : b).input(p.src, p.dst, p.seg, now);
      }
      now += 1;
    }
  };
  const request = new Uint8Array(64).fill(0x71);
  const response = new Uint8Array(256).fill(0x72);
  for (let i = 0; i < N; i++) {
    const client = a.connect(
      { localAddress: A, localPort: 10000 + i, remoteAddress: B, remotePort: 80 },
      now,
    );
    await pump();
    const server = accepted!;
    accepted = null;
    await client.write(request);
    await pump();
    await server.read();
    await server.write(response);
    server.close();
    await pump();
    await client.read();
    await client.read(); // null: the server's FIN
    client.close();
    await pump();
    await server.read(); // null: the client's FIN
  }
  await pump();
  return { keep: [a, b], timeWait: b.stats.timeWait };
}

async function heapAfter(maxTimeWait: number): Promise<{ bytes: number; timeWait: number }> {
  const { keep, timeWait } = await churn(maxTimeWait);
  for (let i = 0; i < 3; i++) gc!();
  await settle();
  gc!();
  const bytes = Deno.memoryUsage().heapUsed;
  // Keep the layers alive until measured.
  if (keep.length !== 2) throw new Error("unreachable");
  return { bytes, timeWait };
}

const rounds: number[] = [];
let held = 0;
for (let r = 0; r < 3; r++) {
  const none = await heapAfter(0);
  const all = await heapAfter(N);
  held = all.timeWait;
  if (none.timeWait !== 0 || all.timeWait !== N) {
    throw new Error(`TIME_WAIT counts ${none.timeWait} / ${all.timeWait}, expected 0 / ${N}`);
  }
  rounds.push((all.bytes - none.bytes) / N);
}
rounds.sort((x, y) => x - y);
console.log(
  JSON.stringify({
    congestionControl: CC,
    timeWaitConnections: held,
    bytesPerTimeWait: Math.round(rounds[1]),
    rounds: rounds.map(Math.round),
  }),
);
