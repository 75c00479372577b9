/**
 * Idle soak: 1,000 peers (default) with live sessions made by our own
 * clients, then no traffic for 10 minutes (default). The server runs in a
 * child process; printed each minute: its CPU over the minute, timer
 * wake-ups (`polls`), RSS and tables; at the end CPU % over the whole idle
 * period (goal < 1 %) and the wake-ups (a timer storm would show thousands).
 * Around minute 9 the sessions' keys are zeroed (3 × REJECT_AFTER_TIME after
 * the handshake): that is the one burst of timer work expected.
 *
 * ```sh
 * deno run -A bench/idle_soak.ts [PEERS] [MINUTES]
 * ```
 *
 * @module
 */

import { idleSoak } from "../tests/soak/idle.ts";

const PEERS = Number(Deno.args[0] ?? 1000);
const MINUTES = Number(Deno.args[1] ?? 10);

let previous: { cpuMs: number; polls: number } | undefined;
const r = await idleSoak({
  peers: PEERS,
  idleMs: MINUTES * 60_000,
  sampleMs: 60_000,
  onSample(s) {
    const t = s.tables;
    console.log(
      `cpu ${previous ? `${((s.cpuMs - previous.cpuMs) / 600).toFixed(2)} %` : "-"} ` +
        `wake-ups ${previous ? s.polls - previous.polls : "-"} rss ${
          (s.rss / 2 ** 20).toFixed(1)
        } MiB ` +
        `heap ${(s.heapUsed / 2 ** 20).toFixed(1)} MiB peers ${t.peers} indices ${t.indices} ` +
        `fds ${t.fds}`,
    );
    previous = s;
  },
});
console.log(
  `${r.peers} peers idle for ${MINUTES} min: server CPU ${r.cpuPercent.toFixed(3)} % of a core, ` +
    `${r.polls} timer wake-ups (${(r.polls / MINUTES).toFixed(1)}/min)`,
);
