import assert from "node:assert/strict";
import { Accepted, Receiver } from "./receiver.ts";
import { xorshift32 } from "../../tests/_prng.ts";

const bytes = (n: number, fill = 1) => new Uint8Array(n).fill(fill);

Deno.test("Receiver", async (t) => {
  await t.step("in order, out of order, hole filled", () => {
    const r = new Receiver(65536, 65536);
    r.start(1000, 0);
    assert.equal(r.accept(1000, bytes(100), 1, 0), Accepted.IN_ORDER);
    assert.equal(r.nxt, 1100);
    assert.equal(r.accept(1200, bytes(100), 1, 0), Accepted.OUT_OF_ORDER);
    assert.ok(r.outOfOrder);
    assert.equal(r.nxt, 1100);
    assert.equal(r.accept(1100, bytes(100), 1, 0), Accepted.FILLED);
    assert.equal(r.nxt, 1300);
    assert.ok(!r.outOfOrder);
    assert.equal(r.queued, 300);
  });

  await t.step("take() coalesces small segments up to 64 KiB", () => {
    const r = new Receiver(1 << 20, 1 << 20);
    r.start(0, 0);
    for (let i = 0; i < 100; i++) r.accept(i * 1000, bytes(1000, i), 1, 0);
    const a = r.take()!;
    assert.equal(a.length, 65000);
    assert.equal(a[0], 0);
    assert.equal(a[64999], 64);
    assert.equal(r.take()!.length, 35000);
    assert.equal(r.take(), null);
    assert.equal(r.queued, 0);
  });

  await t.step("in-order bytes are copied once: blocks are handed over as they are", () => {
    const r = new Receiver(1 << 20, 1 << 20);
    r.start(0, 0);
    r.advertise();
    const seg = new Uint8Array(1000);
    let seq = 0;
    const arrive = (n: number) => {
      for (let i = 0; i < n; i++) {
        seg.fill(seq / 1000);
        r.accept(seq, seg, 1, 0);
        seq += 1000;
      }
      seg.fill(0xee); // the caller reuses its buffer: the receiver copied what it kept
    };
    const check = (chunk: Uint8Array, from: number) => {
      for (let i = 0; i < chunk.length; i += 1000) assert.equal(chunk[i], (from + i) / 1000);
    };
    // A reader that keeps up: each read's bytes come in one block of their own.
    let at = 0;
    const taken: Uint8Array[] = [];
    for (let round = 0; round < 6; round++) {
      arrive(20);
      const chunks: Uint8Array[] = [];
      for (let c = r.take(); c; c = r.take()) chunks.push(c);
      for (const c of chunks) {
        check(c, at);
        at += c.length;
      }
      taken.push(...chunks);
    }
    assert.equal(at, seq);
    assert.equal(r.queued, 0);
    // Once the block size has caught up, a read is one block, not a copy of several.
    assert.equal(taken[taken.length - 1].length, 20_000);
    // Taken chunks share no bytes with what came later.
    taken[0].fill(0xff);
    check(taken[taken.length - 1], seq - 20_000);
  });

  await t.step("a block never holds more room than the window offers", () => {
    const r = new Receiver(4000, 4000);
    r.start(0, 0);
    r.advertise(); // 4000
    for (let i = 0; i < 4; i++) r.accept(i * 1000, bytes(1000, i), 1, 0);
    const all = r.take()!;
    assert.equal(all.length, 4000);
    assert.ok(all.buffer.byteLength <= 4000, `a ${all.buffer.byteLength}-byte buffer`);
  });

  await t.step("SACK blocks: a DSACK first, once, then the islands", () => {
    const r = new Receiver(65536, 65536);
    r.start(0, 0);
    r.accept(0, bytes(100), 1, 0);
    r.accept(300, bytes(100), 1, 0);
    r.accept(300, bytes(100), 1, 0); // duplicate of stored out-of-order data
    const out = new Uint32Array(8);
    assert.equal(r.blockCount(3), 2);
    assert.equal(r.writeBlocks(out, 3), 2);
    assert.deepEqual([...out.subarray(0, 4)], [300, 400, 300, 400]);
    assert.equal(r.writeBlocks(out, 3), 1); // the DSACK went once
    r.noteDuplicate(0, 100);
    assert.equal(r.writeBlocks(out, 1), 1);
    assert.deepEqual([...out.subarray(0, 2)], [0, 100]);
  });

  await t.step("the window is rounded down to the scale and never shrinks", () => {
    const r = new Receiver(65536, 65536);
    r.shift = 7;
    r.start(0, 0);
    const field = r.advertise();
    assert.equal(field, 512); // 65536 / 128
    r.accept(0, bytes(1000), 1, 0);
    // Free 64536 is not a multiple of 128: rounded down that would move the
    // old edge (64536 ahead) left, so it is rounded up, and what it offers
    // is accepted: the peer may send to the edge it was told.
    const f2 = r.advertise();
    assert.equal(f2, Math.ceil(64536 / 128));
    assert.equal(r.window, f2 * 128);
    assert.ok(r.window - r.free() < 128);
  });

  await t.step(
    "invariant: the enforced window stays within one scale unit of the free space (random)",
    () => {
      const rnd = xorshift32(5);
      for (let round = 0; round < 20; round++) {
        const r = new Receiver(65536, 65536);
        r.shift = rnd() % 15;
        r.start(0, 0);
        r.advertise();
        for (let i = 0; i < 2000; i++) {
          const op = rnd() % 4;
          if (op < 2 && r.window > 0) {
            const len = 1 + (rnd() % Math.min(1460, r.window));
            r.accept(r.nxt, bytes(len), i, 0);
          } else if (op === 2) r.take();
          else r.advertise();
          const unit = 2 ** r.shift;
          assert.ok(r.window < r.free() + unit, `window ${r.window} ≥ free ${r.free()} + ${unit}`);
          assert.ok(r.queued < r.buf + unit);
        }
      }
    },
  );

  await t.step(
    "the buffer grows when the window limits the transfer, not for a slow reader",
    () => {
      const fast = new Receiver(65536, 1 << 20);
      fast.start(0, 0);
      fast.rtt = 10;
      let seq = 0;
      for (let now = 0; now < 100; now++) {
        fast.accept(seq, bytes(4000), now, 0);
        seq += 4000;
        fast.take();
      }
      assert.ok(fast.buf > 65536, `buffer ${fast.buf}`);
      assert.ok(fast.grew);

      const slow = new Receiver(65536, 1 << 20);
      slow.start(0, 0);
      slow.rtt = 10;
      seq = 0;
      for (let now = 0; now < 100 && slow.free() >= 4000; now++) {
        slow.accept(seq, bytes(4000), now, 0);
        seq += 4000;
      }
      assert.equal(slow.buf, 65536);
    },
  );

  await t.step("bytes arriving above a hole count toward growth", () => {
    // With loss every round trip has a hole; what the peer sent still shows
    // that the window limits it.
    const r = new Receiver(65536, 1 << 20);
    r.start(0, 0);
    r.rtt = 10;
    let seq = 1000; // bytes 0..999 never arrive
    for (let now = 0; now <= 20 && r.free() >= 4000; now++) {
      r.accept(seq, bytes(4000), now, 0);
      seq += 4000;
    }
    assert.ok(r.buf > 65536, `buffer ${r.buf}`);
    assert.equal(r.queued, 0, "nothing was deliverable");
  });

  await t.step("the receiver RTT is smoothed, not the minimum of its samples", () => {
    // A segment that overtook others (and echoes an ACK that did too) gives
    // a tiny sample on a reordering path; growth epochs must not shrink to it.
    const r = new Receiver(65536, 1 << 20);
    r.rttSample(100);
    r.rttSample(1);
    assert.ok(r.rtt > 80, `rtt ${r.rtt}`);
    r.rttSample(100);
    assert.ok(r.rtt > 80 && r.rtt <= 100);
  });

  await t.step("cancel: data is dropped and the window opens fully", () => {
    const r = new Receiver(4096, 4096);
    r.start(0, 0);
    r.accept(0, bytes(4000), 1, 0);
    assert.equal(r.free(), 96);
    r.cancel();
    assert.equal(r.queued, 0);
    assert.equal(r.free(), 4096);
    r.accept(4000, bytes(4000), 2, 0);
    assert.equal(r.queued, 0);
    assert.equal(r.nxt, 8000);
  });
});
