import assert from "node:assert/strict";
import {
  type Allocator,
  IdleTrim,
  loadAllocator,
  MemoryRelease,
  type MemoryReleaseOptions,
  TRIMS_AFTER_GC,
  tuneAllocator,
} from "./_allocator.ts";
import type { ServeLogRecord } from "./serve.ts";

Deno.test("IdleTrim", async (t) => {
  await t.step("trims once enough closed and nothing moved for quietMs", () => {
    const p = new IdleTrim({ minClosed: 100, quietMs: 1000 });
    assert.equal(p.check(0, 50, 0), false);
    assert.equal(p.check(120, 0, 500), false, "the closes just happened");
    assert.equal(p.check(120, 0, 1400), false, "quiet for 900 ms only");
    assert.equal(p.check(120, 0, 1500), true, "quiet for 1000 ms");
    assert.equal(p.check(120, 0, 9000), false, "once only");
  });

  await t.step("too few closed: no trim however quiet", () => {
    const p = new IdleTrim({ minClosed: 100, quietMs: 1000 });
    assert.equal(p.check(99, 0, 0), false);
    assert.equal(p.check(99, 0, 60_000), false);
    assert.equal(p.check(100, 0, 60_001), false, "a close restarts the quiet time");
    assert.equal(p.check(100, 0, 61_001), true);
  });

  await t.step("steady traffic (counts moving) never trims", () => {
    const p = new IdleTrim({ minClosed: 10, quietMs: 1000 });
    for (let i = 0; i < 100; i++) assert.equal(p.check(i * 50, 20, i * 900), false);
  });

  await t.step("opens alone also count as activity", () => {
    const p = new IdleTrim({ minClosed: 10, quietMs: 1000 });
    assert.equal(p.check(10, 0, 0), false);
    assert.equal(p.check(10, 5, 999), false, "an open at 999");
    assert.equal(p.check(10, 5, 1500), false, "quiet since 999 only");
    assert.equal(p.check(10, 5, 1999), true);
  });

  await t.step("counts from the last trim: the next needs minClosed more", () => {
    const p = new IdleTrim({ minClosed: 10, quietMs: 100 });
    p.check(10, 0, 0);
    assert.equal(p.check(10, 0, 100), true);
    p.check(19, 0, 200);
    assert.equal(p.check(19, 0, 1000), false, "9 more closed");
    p.check(20, 0, 1100);
    assert.equal(p.check(20, 0, 1200), true, "10 more closed");
  });

  await t.step("defaults: 256 closed, 60 s quiet", () => {
    const p = new IdleTrim();
    p.check(255, 0, 0);
    assert.equal(p.check(255, 0, 600_000), false);
    p.check(256, 0, 600_000);
    assert.equal(p.check(256, 0, 659_999), false);
    assert.equal(p.check(256, 0, 660_000), true);
  });
});

/** A fake allocator that counts trims; `gate` holds a trim until resolved. */
function fakeAllocator(): Allocator & { trims: number; gate?: PromiseWithResolvers<void> } {
  const a = {
    version: "2.99",
    trims: 0,
    gate: undefined as PromiseWithResolvers<void> | undefined,
    async trim() {
      a.trims++;
      await a.gate?.promise;
      return true;
    },
    mallopt: () => true,
  };
  return a;
}

Deno.test("MemoryRelease", async (t) => {
  const setup = (overrides: Partial<MemoryReleaseOptions> = {}) => {
    const logs: ServeLogRecord[] = [];
    const state = { closed: 0, open: 0, now: 0, released: 0 };
    const m = new MemoryRelease({
      counts: () => state,
      log: (r) => logs.push(r),
      release: () => state.released++,
      policy: { minClosed: 2, quietMs: 100 },
      now: () => state.now,
      ...overrides,
    });
    return { m, logs, state };
  };

  await t.step("without an allocator: says why, never trims, no timer", async () => {
    const { m, logs, state } = setup({ allocator: "no --allow-ffi" });
    assert.deepEqual(logs, [{
      level: "debug",
      event: "memory",
      release: false,
      reason: "no --allow-ffi",
    }]);
    m.start();
    state.closed = 10;
    await m.check();
    state.now = 1000;
    await m.check();
    assert.equal(state.released, 0);
    await m.stop();
  });

  await t.step("trims when the policy says so, dropping pooled buffers first", async () => {
    const a = fakeAllocator();
    const { m, logs, state } = setup({ allocator: a });
    assert.equal(logs[0].event, "memory");
    assert.equal(logs[0].glibc, "2.99");
    state.closed = 5;
    await m.check();
    assert.equal(a.trims, 0);
    state.now = 100;
    await m.check();
    assert.equal(a.trims, 1);
    assert.equal(state.released, 1);
    assert.equal(logs.at(-1)?.event, "memory-trim");
    assert.equal(logs.at(-1)?.released, true);
    state.now = 10_000;
    await m.check();
    assert.equal(a.trims, 1, "once per quiet spell");
  });

  await t.step("one trim at a time; stop() waits for it", async () => {
    const a = fakeAllocator();
    a.gate = Promise.withResolvers();
    const { m, state } = setup({ allocator: a });
    state.closed = 5;
    await m.check();
    state.now = 100;
    const first = m.check();
    state.closed = 10;
    state.now = 200;
    const during = m.check();
    state.now = 400;
    const again = m.check();
    assert.equal(a.trims, 1, "no second trim while one runs");
    let stopped = false;
    const stopping = m.stop().then(() => stopped = true);
    await Promise.resolve();
    assert.equal(stopped, false);
    a.gate.resolve();
    await Promise.all([first, during, again, stopping]);
    assert.equal(stopped, true);
  });

  await t.step("the GCs after a quiet trim trim again, while nothing moves", async () => {
    const a = fakeAllocator();
    const { m, logs, state } = setup({ allocator: a });
    await m.afterGc();
    assert.equal(a.trims, 0, "no quiet spell yet");
    state.closed = 5;
    await m.check();
    state.now = 100;
    await m.check();
    assert.equal(a.trims, 1);
    for (let i = 0; i < TRIMS_AFTER_GC + 2; i++) await m.afterGc();
    assert.equal(a.trims, 1 + TRIMS_AFTER_GC, "a bounded number of them");
    assert.deepEqual(logs.filter((r) => r.event === "memory-trim").map((r) => r.after), [
      "quiet",
      ...Array(TRIMS_AFTER_GC).fill("gc"),
    ]);
  });

  await t.step("a GC after the server got busy again does not trim", async () => {
    const a = fakeAllocator();
    const { m, state } = setup({ allocator: a });
    state.closed = 5;
    await m.check();
    state.now = 100;
    await m.check();
    state.open = 1;
    await m.afterGc();
    state.open = 0;
    await m.afterGc();
    assert.equal(a.trims, 1, "the spell ended at the first change");
  });

  await t.step("a failing trim is logged, not thrown", async () => {
    const a = fakeAllocator();
    a.trim = () => Promise.reject(new Error("boom"));
    const { m, logs, state } = setup({ allocator: a });
    state.closed = 5;
    await m.check();
    state.now = 100;
    await m.check();
    assert.equal(logs.at(-1)?.event, "memory-trim-error");
  });
});

Deno.test("glibc through FFI: tuned and trimmed here, or a reason", async () => {
  const a = tuneAllocator();
  const linuxFfi = Deno.build.os === "linux" &&
    Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  if (typeof a === "string") {
    // musl or no FFI: nothing changed, and the reason says so.
    assert.ok(a.length > 0);
    assert.equal(loadAllocator(), a);
    return;
  }
  assert.ok(linuxFfi);
  assert.match(a.version, /^\d+\.\d+/);
  assert.equal(tuneAllocator(), a, "once per process");
  assert.equal(typeof await a.trim(), "boolean");
});
