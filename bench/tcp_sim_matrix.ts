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
import { downloads } from "../tests/sim/transfer.ts";
import type { TcpCongestionControl } from "../netstack/tcp/connection.ts";

const args = parseArgs({
  options: {
    size: { type: "string", default: "20" },
    seeds: { type: "string", default: "3" },
    cc: { type: "string", default: "bbr,cubic" },
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
  const link = {
    delay,
    loss,
    reorder,
    reorderDelay: Math.max(1, delay),
    reorderEarly: args.values.early,
    bandwidth,
    queueLimit,
  };
  const { results } = await downloads({
    seed,
    link,
    flows: [{ bytes: size, cc: cc as TcpCongestionControl }],
  });
  const st = results[0].sender;
  if (Deno.env.get("SIM_DEBUG")) {
    console.log(`sender ${JSON.stringify(st)}`);
    console.log(`receiver ${JSON.stringify(results[0].receiver)}`);
  }
  return {
    time: results[0].time,
    retransmits: st.retransmits,
    spurious: st.spuriousRetransmits,
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
