import assert from "node:assert/strict";
import { TwoCycleMaxFilter, WindowedMaxFilter } from "./windowed_filter.ts";
import { xorshift32 } from "../../tests/_prng.ts";

Deno.test("WindowedMaxFilter", async (t) => {
  await t.step("a larger sample replaces the maximum at once", () => {
    const f = new WindowedMaxFilter(10);
    assert.equal(f.best, 0);
    assert.equal(f.update(5, 0), 5);
    assert.equal(f.update(3, 1), 5);
    assert.equal(f.update(8, 2), 8);
    assert.equal(f.best, 8);
  });

  await t.step("the maximum expires after the window and the next best takes over", () => {
    const f = new WindowedMaxFilter(10);
    f.update(100, 0);
    f.update(60, 3);
    f.update(40, 6);
    assert.equal(f.update(10, 10), 100); // 10 units old: still inside
    assert.equal(f.update(10, 11), 60); // 100 expired, 60 (t=3) remains
    assert.equal(f.update(10, 14), 40); // 60 expired
    assert.equal(f.update(10, 17), 10); // everything older expired
  });

  await t.step("agrees with a brute-force windowed maximum within its guarantees", () => {
    // The three-slot filter may report a value younger than the true maximum
    // but never a value outside the window or above the true maximum.
    const next = xorshift32(42);
    for (const window of [1, 3, 10]) {
      const f = new WindowedMaxFilter(window);
      const samples: [number, number][] = [];
      let time = 0;
      for (let i = 0; i < 2000; i++) {
        time += next() % 3 === 0 ? 1 : 0;
        const v = next() % 1000;
        samples.push([v, time]);
        const got = f.update(v, time);
        const inWindow = samples.filter(([, t]) => time - t <= window).map(([x]) => x);
        assert.ok(got <= Math.max(...inWindow), `window ${window} step ${i}`);
        assert.ok(inWindow.includes(got), `window ${window} step ${i}: ${got} not in window`);
      }
    }
  });

  await t.step("the window can change between samples; bad windows are refused", () => {
    const f = new WindowedMaxFilter(1);
    f.update(50, 0);
    f.window = 10;
    assert.equal(f.update(1, 5), 50);
    assert.throws(() => new WindowedMaxFilter(0), RangeError);
    f.reset(7, 9);
    assert.equal(f.best, 7);
  });
});

Deno.test("TwoCycleMaxFilter", async (t) => {
  await t.step("keeps the current and the previous cycle", () => {
    const f = new TwoCycleMaxFilter();
    assert.equal(f.update(100), 100);
    f.advance();
    assert.equal(f.update(40), 100, "the previous cycle still counts");
    f.advance();
    assert.equal(f.best, 40, "two advances forget the first cycle");
    f.advance();
    assert.equal(f.best, 0);
  });
});
