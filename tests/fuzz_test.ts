/**
 * CI's share of every fuzz target (`tests/fuzz/targets.ts`): seeded inputs,
 * no throw, no unhandled rejection, every table within its bound, and each
 * target's own after-run check (the legitimate peer still gets through,
 * tables drain). `bench/fuzz_bench.ts` runs a million of each.
 *
 * `FUZZ_SEED=n` picks the seed, `FUZZ_SCALE=x` multiplies the inputs.
 *
 * @module
 */

import assert from "node:assert/strict";
import { env, runFuzz } from "./fuzz/harness.ts";
import { TARGETS } from "./fuzz/targets.ts";

const SEED = Number(env("FUZZ_SEED") ?? 0xf0015);
const SCALE = Number(env("FUZZ_SCALE") ?? 1);

Deno.test(`fuzz: CI share of every target (seed ${SEED})`, async (t) => {
  for (const { target, ci } of TARGETS) {
    await t.step(`${target.name}: ${Math.round(ci * SCALE)} inputs`, async () => {
      const r = await runFuzz(target, { seed: SEED, inputs: Math.round(ci * SCALE) });
      assert.deepEqual(r.crashes, [], `${target.name} threw`);
      assert.equal(r.throws, 0);
      assert.equal(r.unhandled, 0, "unhandled rejections");
      assert.deepEqual(r.overBound, {}, "tables over their bounds");
      assert.equal(r.finishError, undefined);
    });
  }
});
