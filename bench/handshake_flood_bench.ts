/**
 * A peer's download while the server is flooded with handshake initiations
 * (bad MAC1, valid MAC1 from unknown keys, valid initiations of another
 * registered peer; bench/_handshake_flood.ts, from the client's namespace):
 * its throughput as a ratio of its unloaded throughput, measured in the same
 * run (rounds alternate quiet and flooded; medians). The goal: ≥ 0.5.
 *
 * Root, wireguard-go, python3 and curl needed.
 *
 * ```sh
 * sudo WGSTACK_NETNS_PREFIX=s9 deno run -A bench/handshake_flood_bench.ts [MB] [ROUNDS]
 * ```
 */

import { requireOrSkip } from "../tests/netns.ts";
import { forwardTopology, median } from "./_topology.ts";

const MB = Number(Deno.args[0] ?? 50);
const ROUNDS = Number(Deno.args[1] ?? 3);
if (!(MB > 0) || !(Number.isInteger(ROUNDS) && ROUNDS > 0)) {
  // (`--help` ran a 0-byte benchmark before.)
  console.error("usage: deno run -A bench/handshake_flood_bench.ts [MB] [ROUNDS]");
  Deno.exit(Deno.args[0] === "--help" ? 0 : 2);
}
const FLOOD = new URL("./_handshake_flood.ts", import.meta.url).pathname;

const req = await requireOrSkip("handshake flood bench");
if (req.ignore) Deno.exit(0);
const topo = await forwardTopology();
await using stack = topo.stack;
const { dir, client, target, host, spawn } = topo;

const file = new Uint8Array(MB * 1024 * 1024);
for (let i = 0; i < file.length; i += 65536) crypto.getRandomValues(file.subarray(i, i + 65536));
await Deno.writeFile(`${dir}/big`, file);
const web = spawn(target, ["python3", "-m", "http.server", "8080", "--bind", host, "-d", dir]);
stack.defer(async () => {
  web.kill("SIGKILL");
  await web.output();
});
await new Promise((r) => setTimeout(r, 1000));

async function download(): Promise<number> {
  const started = performance.now();
  await client.run([
    "curl",
    "-sS",
    "--fail",
    "-m",
    "120",
    "-o",
    "/dev/null",
    `http://${host}:8080/big`,
  ]);
  return (file.length * 8) / ((performance.now() - started) / 1000) / 1e6; // Mbit/s
}

await download(); // warm-up (handshake, JIT)
const quiet: number[] = [];
const flooded: number[] = [];
let floodSent = "";
for (let round = 0; round < ROUNDS; round++) {
  quiet.push(await download());
  const flood = spawn(client, [
    Deno.execPath(),
    "run",
    "-A",
    FLOOD,
    topo.serverPublicKey,
    topo.outer.a.v4,
    "51820",
    topo.spareKey,
  ], true);
  const lines = flood.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("flooding")) out += (await lines.read()).value ?? "";
  await new Promise((r) => setTimeout(r, 1000)); // the flood is under way
  flooded.push(await download());
  await flood.stdin.close();
  for (;;) {
    const { value, done } = await lines.read();
    if (done) break;
    out += value;
  }
  await flood.status;
  floodSent = /sent (\d+)/.exec(out)?.[1] ?? "?";
  console.log(
    `round ${round + 1}: quiet ${quiet.at(-1)!.toFixed(0)} Mbit/s, flooded ${
      flooded.at(-1)!.toFixed(0)
    } Mbit/s (${floodSent} initiations sent)`,
  );
}
console.log(
  `download during a handshake flood: ${(median(flooded) / median(quiet)).toFixed(2)} of the ` +
    `unloaded throughput (medians: ${median(flooded).toFixed(0)} / ${
      median(quiet).toFixed(0)
    } Mbit/s)`,
);
