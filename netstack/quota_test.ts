import assert from "node:assert/strict";
import { ByteBudget, SourceTable } from "./quota.ts";

Deno.test("SourceTable", async (t) => {
  await t.step("counts per source, oldest first", () => {
    const s = new SourceTable();
    s.add("a", "1");
    s.add("a", "2");
    s.add("b", "3");
    s.add("a", "1"); // already there
    assert.equal(s.size, 3);
    assert.equal(s.count("a"), 2);
    assert.equal(s.oldest("a"), "1");
    assert.deepEqual([...s.keys("a")], ["1", "2"]);
    assert.equal(s.heaviest(), "a");
    assert.equal(s.delete("a", "1"), true);
    assert.equal(s.delete("a", "1"), false);
    assert.equal(s.size, 2);
    s.delete("a", "2");
    assert.equal(s.count("a"), 0);
    assert.equal(s.heaviest(), "b");
  });

  await t.step(
    "victim: own oldest at quota, heaviest's oldest when full, never a lighter one's",
    () => {
      const s = new SourceTable();
      for (let i = 0; i < 3; i++) s.add("a", `a${i}`);
      s.add("b", "b0");
      // Room in the table and under quota: nothing to evict.
      assert.equal(s.victim("b", 3, 10), undefined);
      // At its quota: its own oldest.
      assert.equal(s.victim("a", 3, 10), "a0");
      // The table is full: the heaviest's oldest.
      assert.equal(s.victim("b", 10, 4), "a0");
      assert.equal(s.victim("c", 10, 4), "a0");
      // A tie with the heaviest: its own oldest.
      s.add("b", "b1");
      s.add("b", "b2");
      assert.equal(s.victim("b", 10, 6), "b0");
      // The source `undefined` has no quota, only the table's limit.
      s.add(undefined, "u0");
      assert.equal(s.victim(undefined, 1, 10), undefined);
      // A filter can leave no candidate: refuse.
      assert.equal(s.victim("b", 10, 7, (k) => k.startsWith("z")), null);
    },
  );
});

Deno.test("ByteBudget wakes its waiters once bytes are freed", () => {
  const b = new ByteBudget(100);
  b.used = 100;
  assert.equal(b.free, 0);
  let woken = 0;
  b.wait(() => woken++);
  b.wait(() => woken++);
  b.release(0);
  assert.equal(woken, 0, "nothing freed below the limit yet");
  b.release(30);
  assert.equal(woken, 2);
  assert.equal(b.free, 30);
  b.release(10);
  assert.equal(woken, 2, "each wait wakes once");
});
