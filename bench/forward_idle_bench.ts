/**
 * Memory per idle forwarded TCP connection: `wgstack` (forward mode) in a
 * server namespace, a `wireguard-go` client namespace holding N idle
 * connections through the tunnel to a service in a target namespace that
 * accepts and holds them. The server's RSS (VmRSS of its process) is read
 * with 0 connections (the baseline, same process) and with N; reported as
 * bytes per connection, the median of several rounds, each on a fresh
 * topology and server process (a process keeps RSS a round freed, so later
 * rounds in one process would read low). N must stay under the CLI's
 * per-peer upstream socket quota (half of ¾ × (`ulimit -n` − 128)).
 *
 * Root, wireguard-go and python3 needed.
 *
 * ```sh
 * sudo WGSTACK_NETNS_PREFIX=s9 deno run -A bench/forward_idle_bench.ts [N] [ROUNDS]
 * ```
 */

import { requireOrSkip, waitFor } from "../tests/netns.ts";
import { forwardTopology, median } from "./_topology.ts";
import { HOLD_TCP_PY } from "../tests/_services.ts";

const N = Number(Deno.args[0] ?? 2000);
const ROUNDS = Number(Deno.args[1] ?? 3);

const OPEN_PY = String.raw`
import socket, sys, time
n = int(sys.argv[2])
conns = []
for i in range(n):
    conns.append(socket.create_connection((sys.argv[1], 9000), timeout=20))
print("open", len(conns), flush=True)
sys.stdin.readline()
`;

function rssOf(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024;
}

const req = await requireOrSkip("forward idle memory bench");
if (req.ignore) Deno.exit(0);

/** One round on a fresh topology (a fresh server process: RSS that a round freed stays with its process). */
async function round(): Promise<{ base: number; loaded: number }> {
  const topo = await forwardTopology();
  await using stack = topo.stack;
  const { dir, client, target: targetNs, host, spawn } = topo;
  await Deno.writeTextFile(`${dir}/hold.py`, HOLD_TCP_PY);
  await Deno.writeTextFile(`${dir}/open.py`, OPEN_PY);
  const holder = spawn(targetNs, ["python3", `${dir}/hold.py`, host]);
  stack.defer(async () => {
    holder.kill("SIGKILL");
    await holder.output();
  });
  await new Promise((r) => setTimeout(r, 1000));
  const base = rssOf(topo.cliPid);
  const opener = spawn(client, ["python3", `${dir}/open.py`, host, String(N)], true);
  const reader = opener.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  await waitFor("the connections", async () => {
    const { value } = await reader.read();
    out += value ?? "";
    return out.includes("open") || undefined;
  }, { timeoutMs: 120_000 });
  await new Promise((r) => setTimeout(r, 1000));
  const loaded = rssOf(topo.cliPid);
  const w = opener.stdin.getWriter();
  await w.write(new TextEncoder().encode("\n"));
  await w.close();
  await opener.status;
  reader.releaseLock();
  return { base, loaded };
}

const perConn: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  const { base, loaded } = await round();
  perConn.push((loaded - base) / N);
  console.log(
    `round ${r + 1}: ${N} idle connections, RSS ${(base / 2 ** 20).toFixed(1)} → ${
      (loaded / 2 ** 20).toFixed(1)
    } MiB, ${((loaded - base) / N / 1024).toFixed(1)} KiB per connection`,
  );
}
console.log(
  `median: ${(median(perConn) / 1024).toFixed(1)} KiB per idle forwarded TCP connection ` +
    `(baseline: the same server process with 0 connections, each round a fresh server)`,
);
