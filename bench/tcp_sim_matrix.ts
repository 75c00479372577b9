/**
 * Our TCP's senders on the simulated impaired link: simulated download time of
 * `--size` MB per cell (loss / one-way delay / reordering, both directions) and
 * congestion controller, next to the link's own limit (size / bandwidth) in
 * the same run. A fast, deterministic companion of `impaired_bench.ts` (which
 * measures against Linux on a real path): use it to see what a change does
 * before the namespace benchmark.
 *
 * ```sh
 * deno run -A bench/tcp_sim_matrix.ts [--size 20] [--seeds 3] [--seed 0] [--cc cubic,newreno,bbr]
 *   [--cells 2/5/10,1/25/25,5/50/0,0/50/10,0.5/100/0,2/5/0,0/5/10] [--bandwidth 25000]
 *   [--queue 262144] [--early]
 * SIM_DEBUG=1 …   # also prints both ends' connection stats
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { SimRandom, Simulation } from "../tests/sim/link.ts";
import { TcpLayer } from "../netstack/tcp/layer.ts";
import type { TcpConnectionLike } from "../netstack/tcp/api.ts";
import type { TcpOptions } from "../netstack/tcp/connection.ts";

const args = parseArgs({
  options: {
    size: { type: "string", default: "20" },
    seeds: { type: "string", default: "3" },
    cc: { type: "string", default: "cubic,newreno" },
    cells: { type: "string", default: "2/5/10,1/25/25,5/50/0,0/50/10,0.5/100/0,2/5/0,0/5/10" },
    bandwidth: { type: "string", default: "25000" },
    queue: { type: "string", default: "262144" },
    /** netem's reordering (a reordered segment skips the delay) instead of late segments. */
    early: { type: "boolean", default: false },
    /** First seed minus one. */
    seed: { type: "string", default: "0" },
  },
});
const size = Number(args.values.size) * 1e6;
const seeds = Number(args.values.seeds);
const bandwidth = Number(args.values.bandwidth); // bytes per ms (25,000 = 200 Mbit/s)
const queueLimit = Number(args.values.queue);
const seed0 = Number(args.values.seed);

interface Result {
  time: number;
  retransmits: number;
  spurious: number;
  timeouts: number;
}

async function download(
  seed: number,
  loss: number,
  delay: number,
  reorder: number,
  cc: string,
): Promise<Result> {
  const sim = new Simulation({
    seed,
    traceSize: 0,
    poisonAfterInput: false,
    verifyChecksums: false,
  });
  const tcp = { congestionControl: cc } as TcpOptions;
  const mk = (host: ConstructorParameters<typeof TcpLayer>[0]) =>
    new TcpLayer(host, { secret: sim.random.fill(new Uint8Array(16)), ...tcp });
  const client = sim.addNode(new Uint8Array([10, 0, 0, 2]), mk);
  const server = sim.addNode(new Uint8Array([10, 0, 0, 1]), mk);
  const link = {
    delay,
    loss,
    reorder,
    reorderDelay: Math.max(1, delay),
    reorderEarly: args.values.early,
    bandwidth,
    queueLimit,
  };
  sim.link(client, server, link, link);
  let sender: TcpConnectionLike | undefined;
  let done = false;
  const data = new SimRandom(seed).fill(new Uint8Array(65536));
  server.onSyn = (req) => {
    sender = req.accept();
    sim.spawn(async () => {
      const w = sender!.writable.getWriter();
      for (let n = 0; n < size; n += data.length) await w.write(data);
      await w.close();
    });
  };
  const conn = client.layer.connect({
    localAddress: client.address,
    localPort: 40000,
    remoteAddress: server.address,
    remotePort: 80,
  }, sim.now);
  const start = sim.now;
  let end = 0;
  sim.spawn(async () => {
    let got = 0;
    for await (const chunk of conn.readable) got += chunk.length;
    if (got < size) throw new Error(`short read ${got}`);
    end = sim.now;
    done = true;
  });
  await sim.run(() => done, { maxTime: 3_600_000, maxSteps: 200_000_000 });
  const st = (sender as unknown as { stats: Record<string, number> }).stats;
  if (Deno.env.get("SIM_DEBUG")) {
    console.log(JSON.stringify(st));
    console.log(JSON.stringify((conn as unknown as { stats: unknown }).stats));
  }
  return {
    time: end - start,
    retransmits: st.retransmits,
    spurious: st.spuriousRetransmits ?? 0,
    timeouts: st.timeouts,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ccs = args.values.cc!.split(",");
const ideal = size / bandwidth;
console.log(
  `${size / 1e6} MB download, ${(bandwidth * 8 / 1000).toFixed(0)} Mbit/s link ` +
    `(ideal ${(ideal / 1000).toFixed(2)} s), ${seeds} seeds, simulated seconds (median)\n`,
);
console.log(
  `| cell (loss/delay/reorder) | ${
    ccs.map((c) => `${c} s | rexmit (spurious, RTO)`).join(" | ")
  } |`,
);
console.log(`|---|${ccs.map(() => "---|---|").join("")}`);
for (const cell of args.values.cells!.split(",")) {
  const [l, d, r] = cell.split("/").map(Number);
  const cols: string[] = [];
  for (const cc of ccs) {
    const rs: Result[] = [];
    for (let s = 1; s <= seeds; s++) rs.push(await download(seed0 + s, l / 100, d, r / 100, cc));
    const t = median(rs.map((x) => x.time)) / 1000;
    const rx = median(rs.map((x) => x.retransmits));
    const sp = median(rs.map((x) => x.spurious));
    const to = median(rs.map((x) => x.timeouts));
    cols.push(`${t.toFixed(2)} | ${rx} (${sp}, ${to})`);
  }
  console.log(`| ${l} % / ${d} ms / ${r} % | ${cols.join(" | ")} |`);
}
