/**
 * Connection churn soak through forward mode (see `tests/soak/churn.ts`):
 * our own client opens and closes 10,000 TCP connections and 2,500 UDP flows
 * per round through `serve({ forward })` (a child process) to an echo
 * service in a namespace, for 10 minutes (default), with production
 * timeouts (TIME_WAIT and UDP idle 60 s). Every 6 rounds (`--quiesce-every=N`)
 * it pauses until the timeouts have passed and the server has been quiet
 * long enough to give memory back (`releaseMemory`, 60 s), and samples it
 * after V8's memory-reducing GC. Reported: heap slope in bytes per
 * connection (quiet samples after the first), RSS and anonymous RSS at idle,
 * at each quiet sample and at the end, from the cold start and from the
 * first quiet sample (steady state), and whether every table is back to
 * its idle size. (File-backed RSS is the binary's code pages: the kernel
 * drops and reads them again as it likes, so compare the anonymous RSS
 * too.)
 *
 * `--no-release`: the server leaves the allocator alone (`releaseMemory:
 * false`), the figures before it existed. `WGSTACK_SOAK_TRIM=1` calls
 * glibc's `malloc_trim(0)` in the server before each sample: the RSS it
 * gives back is memory the allocator kept after it was freed, not memory in
 * use.
 *
 * Root and namespaces needed.
 *
 * ```sh
 * sudo WGSTACK_NETNS_PREFIX=fz deno run -A bench/churn_soak.ts [MINUTES] [CONNS] [UDP] [--wireguard-go] [--no-release] [--quiesce-every=N]
 * ```
 *
 * `--wireguard-go`: a real `wireguard-go` client in a namespace (a Python
 * script opening the connections and flows) instead of our own client.
 *
 * @module
 */

import { missingOnPath, requireOrSkip } from "../tests/netns.ts";
import { churnSoak } from "../tests/soak/churn.ts";
import type { ServerSample } from "../tests/soak/server_proc.ts";

const positional = Deno.args.filter((a) => !a.startsWith("--"));
const MINUTES = Number(positional[0] ?? 10);
const CONNECTIONS = Number(positional[1] ?? 10_000);
const UDP = Number(positional[2] ?? 2_500);
const QUIESCE = Number(Deno.args.find((a) => a.startsWith("--quiesce-every="))?.slice(16) ?? 6);
const RELEASE = !Deno.args.includes("--no-release");
const CLIENT = Deno.args.includes("--wireguard-go") ? "wireguard-go" : "ours";

const req = await requireOrSkip("churn soak", missingOnPath("python3"));
if (req.ignore) Deno.exit(0);

const mib = (n: number) => (n / 2 ** 20).toFixed(1);
const show = (s: ServerSample) =>
  `rss ${mib(s.rss)} MiB heap ${mib(s.heapUsed)} of ${mib(s.heapTotal)} MiB external ${
    mib(s.external)
  } MiB ` + `${
    Object.entries(s.memory).map(([k, v]) => `${k}=${mib(v)}`).join(" ")
  } trims=${s.trims} (longest ${s.trimMs.toFixed(1)} ms) ` +
  Object.entries(s.tables).map(([k, v]) =>
    `${k}=${v}`
  ).join(" ");

const r = await churnSoak({
  connections: CONNECTIONS,
  udpFlows: UDP,
  minutes: MINUTES,
  quiesceEvery: QUIESCE,
  client: CLIENT,
  releaseMemory: RELEASE,
  onRound(x) {
    console.log(
      `round ${x.round} ${
        x.seconds.toFixed(0)
      } s: ${x.connections} connections, ${x.udpFlows} flows, ` +
        `${x.failures} failed; ${show(x.sample)}`,
    );
    if (x.quiet) console.log(`  quiet: ${show(x.quiet)}`);
  },
});
console.log(`idle:  ${show(r.idle)}`);
const pct = (a: number, b: number) => `${((b / a - 1) * 100).toFixed(1)} %`;
const quiet = r.rounds.filter((x) => x.quiet).map((x) => x.quiet!);
const steady = quiet[0];
console.log(
  `memory (RSS / anonymous RSS, MiB): idle ${mib(r.idle.rss)} / ${
    mib(r.idle.memory.anon)
  }; quiet samples ${quiet.map((q) => `${mib(q.rss)} / ${mib(q.memory.anon)}`).join(", ")}; ` +
    `cold start → end ${pct(r.idle.rss, r.final.rss)} / ${
      pct(r.idle.memory.anon, r.final.memory.anon)
    }; steady (first quiet sample → end) ${pct(steady.rss, r.final.rss)} / ${
      pct(steady.memory.anon, r.final.memory.anon)
    }; trims ${r.final.trims}`,
);
console.log(`final: ${show(r.final)}`);
const total = r.rounds.at(-1)!.connections;
// Stale timer heap entries are dropped lazily (up to 64 may stay); a rekey
// leaves the previous session beside the current one (up to 3 indices).
const slack: Record<string, number> = { tcpTimers: 64, indices: 3 };
const changed = Object.keys(r.idle.tables).filter((k) =>
  k in slack ? r.final.tables[k] > slack[k] : r.final.tables[k] !== r.idle.tables[k]
);
console.log(
  `${total} connections and ${r.rounds.at(-1)!.udpFlows} UDP flows in ${
    r.rounds.at(-1)!.seconds.toFixed(0)
  } s; heap slope ${r.heapSlope.toFixed(1)} B/connection; heap ${mib(r.idle.heapUsed)} → ${
    mib(r.final.heapUsed)
  } MiB; RSS ${mib(r.idle.rss)} → ${mib(r.final.rss)} MiB (${
    ((r.final.rss / r.idle.rss - 1) * 100).toFixed(0)
  } %, peak ${mib(Math.max(...r.rounds.map((x) => x.sample.rss)))} MiB); ${
    changed.length === 0 ? "every table back to idle" : `NOT back to idle: ${changed.join(", ")}`
  }`,
);
