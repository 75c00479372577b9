/**
 * Session life in simulated time (short CI version of
 * `bench/session_life_soak.ts`, which runs 24 hours): 4 hours of traffic with
 * rekeys every 2 minutes, persistent keepalives, roaming and a transient peer
 * added and removed every 5 minutes. The server's index table, keypairs,
 * handshakes in flight, armed timers and queues must not grow.
 *
 * @module
 */

import assert from "node:assert/strict";
import { sessionBounds, sessionLife } from "./soak/session_life.ts";
import { growth } from "./soak/verdict.ts";

Deno.test("session life: 4 simulated hours of rekeys, roaming and peer churn stay flat", () => {
  const hours = 4, clients = 4;
  const r = sessionLife({ hours, clients, seed: 15 });
  const { fields, bounds } = sessionBounds(clients);
  assert.deepEqual(
    growth(r.samples, fields, bounds),
    [],
  );
  const last = r.samples.at(-1)!;
  // Rekeys every 2 minutes for each long-lived client, plus the transient peers.
  assert.ok(last.handshakesCompleted >= 0.9 * hours * 30 * clients, `${last.handshakesCompleted}`);
  assert.equal(r.transientPeers, hours * 12);
  assert.ok(r.roams >= hours * 8);
  assert.ok(last.delivered >= 0.95 * r.sent, `${last.delivered} of ${r.sent} delivered`);
});
