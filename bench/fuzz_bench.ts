/**
 * Fuzzing at scale: ≥ 1,000,000 seeded inputs per target (see
 * `tests/fuzz/targets.ts`), reporting inputs/s, throws (must be 0), unhandled
 * rejections, each table's size after setup / largest seen / at the end
 * against its bound, and the heap after setup vs at the end (after a full GC
 * with `--v8-flags=--expose-gc`). Exits 1 when anything threw or went over a
 * bound.
 *
 * ```sh
 * deno run -A --v8-flags=--expose-gc bench/fuzz_bench.ts [INPUTS] [SEED] [TARGET...]
 * ```
 *
 * The same seed gives the same inputs: a crash's index reproduces it.
 *
 * @module
 */

import { runFuzz } from "../tests/fuzz/harness.ts";
import { TARGETS } from "../tests/fuzz/targets.ts";

const INPUTS = Number(Deno.args[0] ?? 1_000_000);
const SEED = Number(Deno.args[1] ?? 0xf0015);
const only = Deno.args.slice(2);

const mib = (n: number) => (n / 2 ** 20).toFixed(1);
const tables = (r: Record<string, number>) =>
  Object.entries(r).map(([k, v]) => `${k}=${v}`).join(" ") || "-";

let failed = false;
console.log(`fuzz: ${INPUTS} inputs per target, seed ${SEED}`);
for (const { target } of TARGETS) {
  if (only.length > 0 && !only.includes(target.name)) continue;
  const r = await runFuzz(target, { seed: SEED, inputs: INPUTS });
  const bad = r.throws > 0 || r.unhandled > 0 || Object.keys(r.overBound).length > 0 ||
    r.finishError !== undefined;
  failed ||= bad;
  console.log(
    `${bad ? "FAIL" : "ok  "} ${target.name.padEnd(18)} ${r.inputs} inputs in ${
      (r.ms / 1000).toFixed(1)
    } s = ${Math.round(r.inputs / r.ms * 1000)}/s, throws ${r.throws}, unhandled ${r.unhandled}, ` +
      `heap ${mib(r.heapStart)} → ${mib(r.heapEnd)} MiB`,
  );
  console.log(`     tables start: ${tables(r.tablesStart)}`);
  console.log(`     tables max:   ${tables(r.tablesMax)}`);
  console.log(`     tables end:   ${tables(r.tablesEnd)}`);
  console.log(`     reached:      ${tables(r.reached)}`);
  if (Object.keys(r.overBound).length > 0) console.log(`     OVER BOUND: ${tables(r.overBound)}`);
  if (r.finishError) console.log(`     finish: ${r.finishError}`);
  for (const c of r.crashes) {
    console.log(`     crash #${c.index}: ${c.error}\n       input ${c.input}`);
  }
}
Deno.exit(failed ? 1 : 0);
