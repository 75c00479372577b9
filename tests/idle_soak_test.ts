/**
 * Idle soak, short CI version of `bench/idle_soak.ts` (1,000 peers for 10
 * minutes): a server in a child process with 100 peers that all hold a live
 * session, then no traffic. The server must not wake up (no timer storm:
 * nothing is due for minutes), and its tables hold one session per peer.
 * CPU time is printed, not asserted (wall clock).
 *
 * @module
 */

import assert from "node:assert/strict";
import { idleSoak } from "./soak/idle.ts";

Deno.test({
  name: "idle soak: 100 live sessions and no traffic: no wake-ups, one session per peer",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const r = await idleSoak({ peers: 100, idleMs: 3000 });
    const last = r.samples.at(-1)!.sample;
    console.log(`idle: ${r.polls} wake-ups, ${r.cpuPercent.toFixed(2)} % CPU over 3 s`);
    assert.ok(r.polls <= 2, `${r.polls} wake-ups while idle`);
    assert.equal(last.tables.peers, 100);
    assert.equal(last.tables.indices, 100, "one live session per peer");
    assert.equal(last.tables.queued, 0);
  },
});
