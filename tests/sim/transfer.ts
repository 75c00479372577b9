/**
 * Bulk transfers over the simulated link, for the congestion-control tests
 * and `bench/tcp_sim_matrix.ts`: one or more downloads (server → client)
 * sharing one link, each with its own congestion controller.
 *
 * @module
 */

import { type LinkOptions, type LinkStats, SimRandom, Simulation } from "./link.ts";
import { TcpLayer } from "../../netstack/tcp/layer.ts";
import type { TcpConnectionLike } from "../../netstack/tcp/api.ts";
import type { TcpCongestionControl, TcpConnectionStats } from "../../netstack/tcp/connection.ts";

/** One download's outcome. */
export interface DownloadResult {
  /** Simulated ms from the SYN to the last byte read. */
  time: number;
  /** Bytes read by each ms mark of `sampleEvery` (for shares over time). */
  progress: number[];
  /** The sender's connection stats at the end. */
  sender: TcpConnectionStats;
  /** The receiver's connection stats at the end. */
  receiver: TcpConnectionStats;
}

/** What {@linkcode downloads} runs. */
export interface DownloadsOptions {
  /** Seed of every random decision. */
  seed: number;
  /** The link, both directions. */
  link: LinkOptions;
  /** One entry per concurrent download: bytes and the sender's controller. */
  flows: { bytes: number; cc: TcpCongestionControl; startAt?: number }[];
  /** Progress sampling period, simulated ms (default 100). */
  sampleEvery?: number;
}

/** Runs concurrent downloads over one link until all finish; returns each one's result. */
export async function downloads(
  o: DownloadsOptions,
): Promise<{ results: DownloadResult[]; link: LinkStats }> {
  const sim = new Simulation({
    seed: o.seed,
    traceSize: 0,
    poisonAfterInput: false,
    verifyChecksums: false,
  });
  const mk = (host: ConstructorParameters<typeof TcpLayer>[0]) =>
    new TcpLayer(host, { secret: sim.random.fill(new Uint8Array(16)) });
  const client = sim.addNode(new Uint8Array([10, 0, 0, 2]), mk);
  const server = sim.addNode(new Uint8Array([10, 0, 0, 1]), mk);
  sim.link(client, server, o.link, o.link);
  const every = o.sampleEvery ?? 100;
  const data = new SimRandom(o.seed).fill(new Uint8Array(65536));
  const senders = new Map<number, TcpConnectionLike>();
  server.onSyn = (req) => {
    const i = req.tuple.remotePort - 40000;
    const flow = o.flows[i];
    const conn = req.accept({ congestionControl: flow.cc });
    senders.set(i, conn);
    sim.spawn(async () => {
      const w = conn.writable.getWriter();
      for (let n = 0; n < flow.bytes; n += data.length) {
        await w.write(data.subarray(0, Math.min(data.length, flow.bytes - n)));
      }
      await w.close();
    });
  };
  const results: DownloadResult[] = [];
  let done = 0;
  o.flows.forEach((flow, i) => {
    sim.spawn(async () => {
      if (flow.startAt) await sim.sleep(flow.startAt);
      const start = sim.now;
      const conn = client.layer.connect({
        localAddress: client.address,
        localPort: 40000 + i,
        remoteAddress: server.address,
        remotePort: 80,
      }, sim.now);
      const progress: number[] = [];
      let got = 0;
      for await (const chunk of conn.readable) {
        got += chunk.length;
        const k = Math.floor((sim.now - start) / every);
        while (progress.length <= k) progress.push(got);
        progress[k] = got;
      }
      if (got !== flow.bytes) throw new Error(`flow ${i}: read ${got} of ${flow.bytes} bytes`);
      results[i] = {
        time: sim.now - start,
        progress,
        sender: (senders.get(i) as unknown as { stats: TcpConnectionStats }).stats,
        receiver: (conn as unknown as { stats: TcpConnectionStats }).stats,
      };
      done++;
    });
  });
  await sim.run(() => done === o.flows.length, { maxTime: 3_600_000, maxSteps: 500_000_000 });
  return { results, link: sim.stats(server, client) };
}
