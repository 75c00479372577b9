/**
 * Connection churn through forward mode, short CI version of
 * `bench/churn_soak.ts`: 3 rounds of 300 TCP connections (half closed by
 * each side, some reset) and 100 UDP flows from our own client through
 * `serve({ forward })` (a child process) to an echo service in a namespace;
 * then 2 rounds of 200 connections and 50 flows from a real `wireguard-go`
 * client in a namespace of its own.
 * With TIME_WAIT and the UDP idle timeout at 1 s, after each round every
 * table of the server (connections, TIME_WAIT, flows, dials, upstream
 * sockets, file descriptors) is back to its idle size.
 *
 * Root and namespaces needed: skips with a printed reason locally, fails
 * under `CI=true`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { missingOnPath, requireOrSkip } from "./netns.ts";
import { type ChurnResult, churnSoak } from "./soak/churn.ts";
import { loadAllocator } from "../server/_allocator.ts";

const netns = await requireOrSkip("connection churn soak", missingOnPath("python3"));

/** Every connection echoed, TIME_WAIT and flows used, and every table back to idle after each round. */
function assertBackToIdle(r: ChurnResult): void {
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  console.log(
    `churn: heap ${mib(r.idle.heapUsed)} → ${mib(r.final.heapUsed)} MiB, RSS ${mib(r.idle.rss)} → ${
      mib(r.final.rss)
    } MiB, slope ${r.heapSlope.toFixed(0)} B/connection`,
  );
  assert.equal(r.rounds.reduce((n, x) => n + x.failures, 0), 0, "every connection echoed");
  // With glibc through FFI (as here when it loads), the quiet server gave
  // memory back after the churn.
  if (typeof loadAllocator() !== "string") {
    assert.equal(r.idle.trims, 0, "not before the churn");
    assert.ok(r.final.trims >= 1, "trimmed after the churn");
  }
  assert.ok(r.rounds.some((x) => x.sample.tables.timeWait > 0), "TIME_WAIT was used");
  assert.ok(r.rounds.some((x) => x.sample.tables.udpFlows > 0), "UDP flows were open");
  // The timer heap may keep up to 64 stale entries (dropped lazily), and a
  // rekey leaves the previous session beside the current one.
  // The upstream dialler keeps up to 6 sockets per address family made
  // ahead (from the first dial on).
  const { tcpTimers, indices, spareSockets, ...idle } = r.idle.tables;
  assert.ok(tcpTimers <= 64 && indices <= 3 && spareSockets <= 12);
  for (const round of r.rounds) {
    const { tcpTimers, indices, spareSockets, ...quiet } = round.quiet!.tables;
    assert.deepEqual(quiet, idle);
    assert.ok(tcpTimers <= 64, `${tcpTimers} timer heap entries`);
    assert.ok(indices <= 3, `${indices} sessions`);
    assert.ok(spareSockets <= 12, `${spareSockets} spare sockets`);
  }
}

Deno.test({
  name: "churn soak: 900 forwarded connections and 300 UDP flows; every table back to idle",
  ignore: netns.ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    netns.assert();
    const r = await churnSoak({
      connections: 300,
      udpFlows: 100,
      rounds: 3,
      timeWait: 1000,
      udpIdleTimeout: 1000,
      releaseQuietMs: 1000,
    });
    assertBackToIdle(r);
  },
});

Deno.test({
  name: "churn soak: 400 connections and 100 UDP flows from a real wireguard-go client",
  ignore: netns.ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    netns.assert();
    assertBackToIdle(
      await churnSoak({
        client: "wireguard-go",
        connections: 200,
        udpFlows: 50,
        rounds: 2,
        concurrency: 16,
        timeWait: 1000,
        udpIdleTimeout: 1000,
        releaseQuietMs: 1000,
      }),
    );
  },
});
