/**
 * Session life soak in simulated time: 24 hours (default) of traffic between
 * a server `Device` and 4 clients with rekeys every 2 minutes, persistent
 * keepalives, 1 % loss, roaming every 7 minutes and a transient peer added
 * and removed every 5 minutes (see `tests/soak/session_life.ts`). Prints the
 * server's tables and the heap each simulated hour, then whether any table
 * grew in the second half of the run, and the heap slope over that half.
 *
 * ```sh
 * deno run -A --v8-flags=--expose-gc bench/session_life_soak.ts [HOURS] [SEED]
 * ```
 *
 * @module
 */

import { sessionBounds, sessionLife } from "../tests/soak/session_life.ts";
import { growth } from "../tests/soak/verdict.ts";

const HOURS = Number(Deno.args[0] ?? 24);
const SEED = Number(Deno.args[1] ?? 15);
const CLIENTS = 4;

const start = performance.now();
console.log("hour peers indices keypairs handshakes timers queued clientIdx handshakes-done heap");
const r = sessionLife({
  hours: HOURS,
  seed: SEED,
  clients: CLIENTS,
  onSample: (s) =>
    console.log(
      [
        s.hour,
        s.peers,
        s.indices,
        s.keypairs,
        s.handshakes,
        s.timers,
        s.queued,
        s.clientIndices,
        s.handshakesCompleted,
        `${(s.heapUsed / 1024).toFixed(0)} KiB`,
      ].join(" "),
    ),
});
const peers = CLIENTS + 1;
const { fields, bounds } = sessionBounds(CLIENTS);
const problems = growth(r.samples, fields, bounds);
const half = r.samples[Math.floor(r.samples.length / 2)], last = r.samples.at(-1)!;
console.log(
  `${HOURS} simulated hours in ${((performance.now() - start) / 1000).toFixed(1)} s: ` +
    `${last.handshakesCompleted} handshakes (${
      (last.handshakesCompleted / HOURS / peers).toFixed(1)
    } per peer-hour), ${r.transientPeers} peers added and removed, ${r.roams} roams, ` +
    `${last.delivered} of ${r.sent} packets delivered`,
);
console.log(
  `heap over the second half: ${((last.heapUsed - half.heapUsed) / 1024).toFixed(0)} KiB ` +
    `(${((last.heapUsed - half.heapUsed) / (last.hour - half.hour) / 1024).toFixed(1)} KiB/h)`,
);
console.log(problems.length === 0 ? "tables flat" : `GREW: ${problems.join("; ")}`);
Deno.exit(problems.length === 0 ? 0 : 1);
