import assert from "node:assert/strict";
import { ReplayWindow } from "./replay.ts";
import { xorshift32 } from "../tests/_prng.ts";

/** The obvious model: remember every counter, accept within the window. */
class NaiveWindow {
  readonly seen = new Set<number>();
  greatest = -1;
  constructor(readonly windowSize: number) {}
  check(counter: number): boolean {
    if (counter > this.greatest) return true;
    return this.greatest - counter < this.windowSize && !this.seen.has(counter);
  }
  update(counter: number): boolean {
    if (!this.check(counter)) return false;
    this.seen.add(counter);
    if (counter > this.greatest) this.greatest = counter;
    return true;
  }
}

Deno.test("ReplayWindow", async (t) => {
  await t.step("accepts in-order counters from 0", () => {
    const w = new ReplayWindow();
    assert.equal(w.greatest, -1);
    for (let c = 0; c < 100_000; c++) {
      assert.equal(w.check(c), true);
      assert.equal(w.update(c), true);
    }
    assert.equal(w.greatest, 99_999);
  });

  await t.step("counter 0 is accepted once", () => {
    const w = new ReplayWindow();
    assert.equal(w.check(0), true);
    assert.equal(w.update(0), true);
    assert.equal(w.check(0), false);
    assert.equal(w.update(0), false);
    assert.equal(w.update(1), true);
    assert.equal(w.update(0), false);
  });

  await t.step("check does not change state", () => {
    const w = new ReplayWindow();
    assert.equal(w.check(5), true);
    assert.equal(w.check(5), true);
    assert.equal(w.greatest, -1);
    assert.equal(w.update(5), true);
    assert.equal(w.check(4), true);
    assert.equal(w.check(4), true);
  });

  await t.step("reordered counters within the window are accepted once", () => {
    const w = new ReplayWindow();
    assert.equal(w.update(100), true);
    for (const c of [99, 50, 0, 31, 32, 33, 63, 64, 65]) {
      assert.equal(w.update(c), true, `first ${c}`);
      assert.equal(w.update(c), false, `again ${c}`);
    }
    assert.equal(w.update(100), false);
    assert.equal(w.update(101), true);
  });

  await t.step("duplicates are rejected", () => {
    const w = new ReplayWindow();
    for (let c = 0; c < 1000; c += 3) assert.equal(w.update(c), true);
    for (let c = 0; c < 1000; c += 3) {
      assert.equal(w.check(c), false);
      assert.equal(w.update(c), false);
    }
    for (let c = 1; c < 1000; c += 3) assert.equal(w.update(c), true);
  });

  await t.step("the window edge: greatest - windowSize is too old, one more is not", () => {
    const w = new ReplayWindow(8192);
    assert.equal(w.update(10_000), true);
    assert.equal(w.check(10_000 - 8192), false);
    assert.equal(w.update(10_000 - 8192), false);
    assert.equal(w.check(10_000 - 8191), true);
    assert.equal(w.update(10_000 - 8191), true);
    assert.equal(w.update(0), false);
    // A rejected update changes nothing.
    assert.equal(w.greatest, 10_000);
  });

  await t.step("every counter within the window stays tracked", () => {
    // Fill a full window, then check each one is remembered as seen, and each
    // one just outside is too old, at several word alignments of greatest.
    for (const top of [8191, 8192, 8193, 8223, 8224, 12_345]) {
      const w = new ReplayWindow(8192);
      for (let c = top - 8191; c <= top; c++) assert.equal(w.update(c), true);
      for (let c = top - 8191; c <= top; c++) assert.equal(w.check(c), false, `${top}: ${c}`);
      for (let c = top + 1; c < top + 100; c++) assert.equal(w.check(c), true);
      if (top >= 8192) assert.equal(w.check(top - 8192), false);
    }
  });

  await t.step("a jump of exactly the window size clears the ring", () => {
    const w = new ReplayWindow(8192);
    for (let c = 0; c < 8192; c++) w.update(c);
    assert.equal(w.update(8191 + 8192), true);
    // Everything strictly inside the new window is unseen.
    for (let c = 8192; c < 8191 + 8192; c++) assert.equal(w.check(c), true, `${c}`);
    assert.equal(w.check(8191), false); // exactly windowSize behind: too old
    assert.equal(w.update(8192), true);
    assert.equal(w.update(8192), false);
  });

  await t.step("jumps larger than the window clear everything", () => {
    for (const jump of [8193, 8224, 8225, 16_384, 1_000_000, 2 ** 52]) {
      const w = new ReplayWindow(8192);
      for (let c = 0; c < 9000; c++) w.update(c);
      const top = 8999 + jump;
      assert.equal(w.update(top), true);
      for (let c = top - 8191; c < top; c++) assert.equal(w.check(c), true, `${jump}: ${c}`);
      assert.equal(w.check(top), false);
    }
  });

  await t.step("jumps across word boundaries clear only the skipped words", () => {
    const w = new ReplayWindow(256);
    for (let c = 0; c <= 40; c++) w.update(c);
    // 40 is in word 1; 31..40 straddles words 0 and 1.
    assert.equal(w.update(95), true); // word 2, skipping none entirely
    for (let c = 0; c <= 40; c++) assert.equal(w.check(c), false, `${c}`);
    for (let c = 41; c < 95; c++) assert.equal(w.check(c), true, `${c}`);
    assert.equal(w.update(96 + 31), true); // word 3 (96..127): one word ahead
    for (let c = 41; c < 95; c++) assert.equal(w.check(c), true, `${c}`);
    assert.equal(w.check(95), false);
    // A jump that lands in the same ring slot as an old word must clear it.
    // With 256 bits there are 9 words; word 12 shares slot 3 with word 3.
    assert.equal(w.update(12 * 32 + 5), true);
    for (let c = 12 * 32 + 5 - 255; c < 12 * 32 + 5; c++) {
      assert.equal(w.check(c), true, `${c}`);
    }
  });

  await t.step("the largest counter is accepted", () => {
    const w = new ReplayWindow();
    const max = Number.MAX_SAFE_INTEGER;
    assert.equal(w.update(max - 1), true);
    assert.equal(w.update(max), true);
    assert.equal(w.update(max - 2), true);
    assert.equal(w.update(max), false);
  });

  await t.step("reset forgets everything", () => {
    const w = new ReplayWindow();
    w.update(0);
    w.update(50_000);
    w.reset();
    assert.equal(w.greatest, -1);
    assert.equal(w.update(0), true);
    assert.equal(w.update(50_000 - 8192), true);
  });

  await t.step("rejects bad window sizes and counters", () => {
    for (const size of [0, -32, 31, 100, 32.5, NaN, 2 ** 25]) {
      assert.throws(() => new ReplayWindow(size), RangeError, `size ${size}`);
    }
    assert.throws(() => new ReplayWindow(100), {
      name: "RangeError",
      message: "Replay window size must be a positive multiple of 32 up to 16777216, not 100",
    });
    assert.equal(new ReplayWindow(32).windowSize, 32);
    const w = new ReplayWindow();
    for (const counter of [-1, 1.5, NaN, Infinity, 2 ** 53]) {
      assert.throws(() => w.check(counter), RangeError, `check ${counter}`);
      assert.throws(() => w.update(counter), RangeError, `update ${counter}`);
    }
    assert.throws(() => w.update(-1), {
      name: "RangeError",
      message: "Replay counter must be an integer in 0..2^53-1, not -1",
    });
  });

  await t.step("matches a Set-based model on random traffic", () => {
    for (const [seed, size] of [[1, 8192], [2, 64], [3, 32], [4, 1024]] as const) {
      const next = xorshift32(0x9e3779b9 ^ seed);
      const w = new ReplayWindow(size);
      const model = new NaiveWindow(size);
      let sent = 0;
      let accepted = 0;
      for (let op = 0; op < 150_000; op++) {
        // Mostly a sender moving forward with reordering and duplication,
        // sometimes a jump ahead, sometimes an old replay.
        const r = next() % 100;
        let counter: number;
        if (r < 60) counter = sent++;
        else if (r < 85) counter = Math.max(0, sent - 1 - (next() % (size + size / 2)));
        else if (r < 95) counter = Math.max(0, sent - 1 - (next() % 64));
        else if (r < 99) counter = sent += next() % (size * 2);
        else counter = Math.max(0, sent - (next() % (size * 4)));
        const checkOnly = next() % 5 === 0;
        if (checkOnly) {
          assert.equal(w.check(counter), model.check(counter), `seed ${seed} op ${op}`);
        } else {
          const got = w.update(counter);
          assert.equal(got, model.update(counter), `seed ${seed} op ${op} counter ${counter}`);
          if (got) accepted++;
        }
        assert.equal(w.greatest, model.greatest);
      }
      // Both outcomes must be well represented for the comparison to matter.
      assert.ok(accepted > 50_000 && accepted < 140_000, `accepted ${accepted}`);
    }
  });
});
