import assert from "node:assert/strict";
import { Assembler, MAX_BLOCKS } from "./assembler.ts";
import { Cubic, initialWindow, NewReno } from "./congestion.ts";
import { KeyedHash } from "./isn.ts";
import { RttEstimator } from "./rtt.ts";
import { pooledChunks, SendBuffer } from "./send_buffer.ts";
import { seqGt, seqLt } from "./seq.ts";

Deno.test("sequence arithmetic wraps", () => {
  assert.ok(seqLt(0xfffffff0, 5));
  assert.ok(seqGt(5, 0xfffffff0));
  assert.ok(!seqLt(5, 5));
});

Deno.test("RTT estimator (RFC 6298)", async (t) => {
  await t.step("first sample: srtt = R, rttvar = R/2, RTO = SRTT + max(200 ms, 4·RTTVAR)", () => {
    const r = new RttEstimator();
    assert.equal(r.rto, 1000);
    r.sample(20);
    assert.equal(r.srtt, 20);
    assert.equal(r.rttvar, 10);
    assert.equal(r.rto, 220);
    r.sample(100);
    assert.equal(r.rttvar, 0.75 * 10 + 0.25 * 80);
    assert.equal(r.srtt, 0.875 * 20 + 0.125 * 100);
  });
  await t.step("backoff doubles up to the maximum", () => {
    const r = new RttEstimator({ maxRto: 5000 });
    r.backOff();
    assert.equal(r.rto, 2000);
    r.backOff();
    r.backOff();
    r.backOff();
    assert.equal(r.rto, 5000);
    r.resetBackoff();
    assert.equal(r.rto, 1000);
  });
});

Deno.test("congestion control", async (t) => {
  await t.step("initial window (RFC 6928)", () => {
    assert.equal(initialWindow(1460), 14600);
    assert.equal(initialWindow(536), 5360);
    assert.equal(initialWindow(9000), 18000);
  });
  await t.step("NewReno: slow start, avoidance, halving, timeout", () => {
    const c = new NewReno(1000);
    c.onAck(1000, 10, 0);
    assert.equal(c.cwnd, 11000);
    c.onCongestion(20000, 0);
    assert.equal(c.ssthresh, 10000);
    assert.equal(c.cwnd, 10000);
    for (let i = 0; i < 10; i++) c.onAck(1000, 10, 0);
    assert.equal(c.cwnd, 11000);
    c.onTimeout(10000, 0);
    assert.equal(c.cwnd, 1000);
    assert.equal(c.ssthresh, 5000);
  });
  await t.step("CUBIC: β = 0.7 decrease, concave regrowth towards W_max, then convex", () => {
    const c = new Cubic(1000);
    c.cwnd = 100_000;
    c.onCongestion(100_000, 0);
    assert.equal(c.cwnd, 70_000);
    assert.equal(c.ssthresh, 70_000);
    // K = cbrt((100 − 70)/0.4) ≈ 4.2 s: growth is fast at first and flat near W_max.
    let now = 0;
    const at: Record<number, number> = {};
    while (now <= 8000) {
      c.onAck(1000, 100, now);
      if (now % 1000 === 0) at[now] = c.cwnd;
      now += 10;
    }
    assert.ok(at[1000] > 70_000, `grew: ${at[1000]}`);
    assert.ok(at[4000] <= 101_000 && at[4000] >= 95_000, `plateau near W_max: ${at[4000]}`);
    assert.ok(at[8000] > at[4000] + 10_000, `convex past K: ${at[8000]}`);
    assert.ok(Math.abs(c.windowAt(Math.cbrt(30 / 0.4)) - 100) < 1e-9);
  });
  await t.step("CUBIC fast convergence lowers W_max when losses come early", () => {
    const c = new Cubic(1000);
    c.cwnd = 100_000;
    c.onCongestion(0, 0);
    c.onAck(1000, 10, 0); // starts an epoch at cwnd 70k
    c.onCongestion(0, 10);
    assert.ok(Math.abs(c.cwnd - 49_000) < 10, `${c.cwnd}`);
    // W_max = 70 · (1 + 0.7) / 2 = 59.5 segments (not 70): the plateau near K ≈ 3 s.
    for (let now = 10; now <= 3010; now += 10) c.onAck(1000, 100, now);
    assert.ok(c.cwnd > 55_000 && c.cwnd < 63_000, `${c.cwnd}`);
  });
});

Deno.test("send buffer", () => {
  const b = new SendBuffer(10_000);
  assert.equal(b.push(new Uint8Array(3000).fill(1)), 3000);
  assert.equal(b.push(new Uint8Array(8000).fill(2)), 7000);
  assert.equal(b.free, 0);
  const out = new Uint8Array(10);
  b.copyOut(2995, out, 0, 10);
  assert.deepEqual([...out], [1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
  b.drop(2999);
  b.copyOut(0, out, 0, 2);
  assert.deepEqual([...out.subarray(0, 2)], [1, 2]);
  b.drop(7001);
  assert.equal(b.length, 0);
  assert.throws(() => b.copyOut(0, out, 0, 1), RangeError);
});

Deno.test("send buffer: chunks freed by ACKs are reused, never showing their old bytes", () => {
  const a = new SendBuffer(1 << 20);
  assert.equal(a.push(new Uint8Array(200_000).fill(0xaa)), 200_000);
  const before = pooledChunks();
  a.drop(150_000); // two whole 64 KiB chunks acknowledged
  assert.equal(pooledChunks(), Math.min(16, before + 2));
  a.drop(50_000); // empty: the rest goes back too
  assert.equal(a.length, 0);
  const pooled = pooledChunks();
  assert.ok(pooled >= 2);
  // Another buffer takes a pooled chunk for a big write, not for a small one.
  const b = new SendBuffer(1 << 20);
  b.push(new Uint8Array(100).fill(1));
  assert.equal(pooledChunks(), pooled);
  b.drop(100);
  b.push(new Uint8Array(20_000).fill(0x55));
  assert.equal(pooledChunks(), pooled - 1);
  const out = new Uint8Array(20_000);
  b.copyOut(0, out, 0, 20_000);
  assert.ok(out.every((x) => x === 0x55));
  assert.throws(() => b.copyOut(0, out, 0, 20_001), RangeError);
});

Deno.test("assembler", async (t) => {
  await t.step("stores disjoint pieces and hands them back in order", () => {
    const a = new Assembler();
    const d = new Uint8Array(100).map((_, i) => i);
    assert.ok(a.insert(150, d.subarray(50, 70), 100));
    assert.ok(a.insert(140, d.subarray(40, 60), 100)); // overlaps: only 40..50 added
    assert.equal(a.bytes, 30);
    assert.equal(a.take(100), null);
    const blocks = new Uint32Array(8);
    assert.equal(a.sackBlocks(blocks, 4), 1);
    assert.deepEqual([...blocks.subarray(0, 2)], [140, 170]);
    assert.deepEqual(a.take(140), d.subarray(40, 50));
    assert.deepEqual(a.take(150), d.subarray(50, 70));
    assert.ok(a.empty);
  });
  await t.step("trims pieces that RCV.NXT overtook", () => {
    const a = new Assembler();
    a.insert(110, new Uint8Array([1, 2, 3, 4]), 100);
    assert.deepEqual(a.take(112), new Uint8Array([3, 4]));
  });
  await t.step("limits the number of blocks", () => {
    const a = new Assembler();
    let refused = 0;
    const n = MAX_BLOCKS + 100;
    for (let i = 0; i < n; i++) if (!a.insert(1000 + 10 * i, new Uint8Array(5), 0)) refused++;
    assert.equal(refused, n - MAX_BLOCKS);
    assert.equal(a.blocks, MAX_BLOCKS);
    // Filling a gap between two islands merges them, even at the limit.
    assert.ok(a.insert(1005, new Uint8Array(5), 0));
    assert.equal(a.blocks, MAX_BLOCKS - 1);
    assert.ok(a.holds(1000, 15) && !a.holds(1000, 16) && !a.holds(995, 5));
  });
  await t.step("works across sequence wrap", () => {
    const a = new Assembler();
    a.insert(0xfffffffe, new Uint8Array([9, 9, 9, 9]), 0xfffffff0);
    assert.deepEqual(a.take(0), new Uint8Array([9, 9]));
  });
});

Deno.test("keyed hash depends on key and input", () => {
  const a = new KeyedHash(new Uint8Array(8).fill(1));
  const b = new KeyedHash(new Uint8Array(8).fill(2));
  const x = new Uint8Array([1, 2, 3, 4, 5]);
  assert.equal(a.hash(x, 7), a.hash(x, 7));
  assert.notEqual(a.hash(x, 7), b.hash(x, 7));
  assert.notEqual(a.hash(x, 7), a.hash(x, 8));
});

Deno.test("assembler against a byte-map model (random)", () => {
  let r = 99;
  const rnd = (n: number) => {
    r = (r * 1103515245 + 12345) >>> 0;
    return (r >>> 8) % n;
  };
  for (let round = 0; round < 50; round++) {
    const a = new Assembler();
    const base = (0xffff0000 + rnd(0x20000)) >>> 0; // crosses the wrap sometimes
    const total = 20000;
    const src = new Uint8Array(total).map((_, i) => (i * 13 + round) & 0xff);
    const have = new Uint8Array(total); // model: 1 = stored out of order
    let nxt = 0; // delivered so far (relative)
    const out: number[] = [];
    for (let step = 0; step < 400 && nxt < total; step++) {
      const start = nxt + rnd(3000);
      const len = 1 + rnd(900);
      const end = Math.min(total, start + len);
      if (start >= end) continue;
      const rcvNxt = (base + nxt) >>> 0;
      if (start === nxt) {
        for (let i = start; i < end; i++) out.push(src[i]);
        nxt = end;
        for (let c = a.take((base + nxt) >>> 0); c; c = a.take((base + nxt) >>> 0)) {
          for (const b of c) out.push(b);
          nxt += c.length;
        }
      } else if (a.insert((base + start) >>> 0, src.subarray(start, end), rcvNxt)) {
        for (let i = start; i < end; i++) have[i] = 1;
      }
      // SACK blocks are exactly the stored islands above nxt.
      const blocks = new Uint32Array(8);
      const n = a.sackBlocks(blocks, 4);
      for (let k = 0; k < n; k++) {
        const l = (blocks[2 * k] - base) >>> 0, e = (blocks[2 * k + 1] - base) >>> 0;
        assert.ok(l > nxt && e > l, `block ${l}-${e} above ${nxt}`);
        for (let i = l; i < e; i++) assert.equal(have[i], 1, `byte ${i} in a SACK block is stored`);
        assert.ok(l === 0 || have[l - 1] === 0 || l - 1 < nxt, "blocks are maximal on the left");
        assert.ok(e >= total || have[e] === 0, "blocks are maximal on the right");
      }
      assert.ok(n === Math.min(4, a.blocks));
      // holds() agrees with the model for a random range above nxt.
      const ps = nxt + 1 + rnd(3000), pl = 1 + rnd(200);
      if (ps + pl <= total) {
        let all = true;
        for (let i = ps; i < ps + pl; i++) if (!have[i]) all = false;
        assert.equal(a.holds((base + ps) >>> 0, pl), all, `holds ${ps}+${pl}`);
      }
    }
    assert.deepEqual(new Uint8Array(out), src.subarray(0, out.length));
  }
});
