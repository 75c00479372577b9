import assert from "node:assert/strict";
import { type FragmentInput, FragmentReassembler } from "./fragments.ts";

const SRC = new Uint8Array([10, 0, 0, 1]);
const DST = new Uint8Array([10, 0, 0, 2]);

function payload(n: number): Uint8Array {
  const p = new Uint8Array(n);
  for (let i = 0; i < n; i++) p[i] = (i * 7 + 3) & 0xff;
  return p;
}

function frag(
  whole: Uint8Array,
  offset: number,
  end: number,
  more: boolean,
  extra: Partial<FragmentInput> = {},
): FragmentInput {
  return {
    version: 4,
    src: SRC,
    dst: DST,
    protocol: 17,
    id: 42,
    offset,
    more,
    data: whole.subarray(offset, end),
    ...extra,
  };
}

Deno.test("FragmentReassembler", async (t) => {
  const whole = payload(3000);

  await t.step("in order", () => {
    const r = new FragmentReassembler();
    assert.equal(r.add(frag(whole, 0, 1480, true), 0), null);
    assert.equal(r.add(frag(whole, 1480, 2960, true), 1), null);
    assert.equal(r.size, 1);
    const out = r.add(frag(whole, 2960, 3000, false), 2);
    assert.deepEqual(out, whole);
    assert.equal(r.size, 0);
    assert.equal(r.bytes, 0);
    assert.equal(r.stats().reassembled, 1);
  });

  await t.step("out of order, with headroom", () => {
    const r = new FragmentReassembler({ headroom: 40 });
    assert.equal(r.add(frag(whole, 2960, 3000, false), 0), null);
    assert.equal(r.add(frag(whole, 0, 1480, true), 0), null);
    const out = r.add(frag(whole, 1480, 2960, true), 0);
    assert.ok(out);
    assert.equal(out.length, 3040);
    assert.deepEqual(out.subarray(40), whole);
  });

  await t.step("the data is copied: reusing the input buffer does not corrupt", () => {
    const r = new FragmentReassembler();
    const buf = whole.slice(0, 1480);
    r.add({ ...frag(whole, 0, 1480, true), data: buf }, 0);
    buf.fill(0);
    assert.deepEqual(r.add(frag(whole, 1480, 3000, false), 0), whole);
  });

  await t.step("exact duplicates are ignored", () => {
    const r = new FragmentReassembler();
    r.add(frag(whole, 0, 1480, true), 0);
    r.add(frag(whole, 0, 1480, true), 0);
    assert.equal(r.stats().duplicates, 1);
    assert.deepEqual(r.add(frag(whole, 1480, 3000, false), 0), whole);
  });

  await t.step("an overlap drops the whole datagram (RFC 5722)", () => {
    const r = new FragmentReassembler();
    r.add(frag(whole, 0, 1480, true), 0);
    assert.equal(r.add(frag(whole, 1472, 2960, true), 0), null);
    assert.equal(r.stats().drops.overlap, 1);
    assert.equal(r.size, 0);
    // The rest alone cannot complete it any more.
    assert.equal(r.add(frag(whole, 2960, 3000, false), 0), null);
    // Same offset, different bytes, is an overlap too.
    const r2 = new FragmentReassembler();
    r2.add(frag(whole, 0, 1480, true), 0);
    const other = whole.slice(0, 1480);
    other[5] ^= 1;
    r2.add({ ...frag(whole, 0, 1480, true), data: other }, 0);
    assert.equal(r2.stats().drops.overlap, 1);
    // Overlap with the following piece.
    const r3 = new FragmentReassembler();
    r3.add(frag(whole, 1480, 2960, true), 0);
    r3.add(frag(whole, 8, 1488, true), 0);
    assert.equal(r3.stats().drops.overlap, 1);
    assert.equal(r3.size, 0);
  });

  await t.step("length rules", () => {
    const r = new FragmentReassembler();
    assert.equal(r.add(frag(whole, 0, 1001, true), 0), null); // not a multiple of 8
    assert.equal(r.stats().drops.badLength, 1);
    assert.equal(r.add(frag(whole, 0, 0, true), 0), null); // empty non-last fragment
    assert.equal(r.stats().drops.badLength, 2);
    // A fragment beyond the known end.
    r.add(frag(whole, 1480, 2000, false), 0);
    r.add(frag(whole, 2000, 2400, true), 0);
    assert.equal(r.stats().drops.inconsistentLength, 1);
    // Two different "last" fragments.
    r.add(frag(whole, 1480, 2000, false), 0);
    r.add(frag(whole, 1480, 2008, false), 0);
    assert.equal(r.stats().drops.inconsistentLength, 2);
    // Over 65535 bytes.
    const big = new Uint8Array(1480);
    r.add({ ...frag(whole, 0, 0, true), offset: 65528, data: big }, 0);
    assert.equal(r.stats().drops.tooBig, 1);
  });

  await t.step("payload limits: 65535 - 20 for IPv4, 65535 for IPv6 (RFC 8200 §4.5)", () => {
    for (const [version, max] of [[4, 65515], [6, 65535]] as const) {
      const r = new FragmentReassembler();
      const data = payload(max - 65000);
      assert.equal(r.add(frag(payload(65000), 0, 65000, true, { version }), 0), null);
      assert.equal(
        r.add({ ...frag(data, 0, data.length, false, { version }), offset: 65000 }, 0)?.length,
        max,
      );
      assert.equal(r.add(frag(payload(65000), 0, 65000, true, { version, id: 7 }), 0), null);
      const over = payload(max + 1 - 65000);
      r.add({ ...frag(over, 0, over.length, false, { version, id: 7 }), offset: 65000 }, 0);
      assert.equal(r.stats().drops.tooBig, 1, `IPv${version}`);
      assert.equal(r.size, 0);
    }
  });

  await t.step("keys: protocol, id, version and addresses separate datagrams", () => {
    const r = new FragmentReassembler();
    r.add(frag(whole, 0, 1480, true), 0);
    r.add(frag(whole, 0, 1480, true, { id: 43 }), 0);
    r.add(frag(whole, 0, 1480, true, { protocol: 6 }), 0);
    r.add(frag(whole, 0, 1480, true, { src: DST, dst: SRC }), 0);
    r.add(frag(whole, 0, 1480, true, { version: 6 }), 0);
    assert.equal(r.size, 5);
    assert.equal(r.stats().drops.overlap, 0);
  });

  await t.step("timeout: 30 s for IPv4, 60 s for IPv6, driven by now", () => {
    const r = new FragmentReassembler();
    r.add(frag(whole, 0, 1480, true), 1000);
    r.add(frag(whole, 0, 1480, true, { version: 6 }), 1000);
    assert.equal(r.nextDeadline(), 31_000);
    r.poll(30_999);
    assert.equal(r.size, 2);
    r.poll(31_000);
    assert.equal(r.size, 1);
    assert.equal(r.nextDeadline(), 61_000);
    // A late fragment for the expired IPv4 datagram starts over.
    assert.equal(r.add(frag(whole, 1480, 3000, false), 31_001), null);
    r.poll(61_000);
    assert.equal(r.stats().drops.timeout, 2);
    assert.equal(r.size, 1);
    r.poll(100_000);
    assert.equal(r.size, 0);
    assert.equal(r.bytes, 0);
    assert.equal(r.nextDeadline(), Infinity);
  });

  await t.step("onTimeout gets the start of the first fragment's packet", () => {
    const expired: [number, number[]][] = [];
    const r = new FragmentReassembler({ onTimeout: (v, p) => expired.push([v, [...p]]) });
    const packet = new Uint8Array(300).map((_, i) => i & 0xff);
    r.add({ ...frag(whole, 0, 1480, true), packet }, 0);
    r.add({ ...frag(whole, 1480, 2960, true, { id: 7 }), packet }, 0); // not a first fragment
    r.poll(30_000);
    assert.deepEqual(expired, [[4, [...packet.subarray(0, 128)]]]);
  });

  await t.step("limits: datagrams and bytes evict the oldest", () => {
    const r = new FragmentReassembler({ maxDatagrams: 3, maxBytes: 10_000 });
    for (let id = 0; id < 5; id++) r.add(frag(whole, 0, 1480, true, { id }), id);
    assert.equal(r.size, 3);
    assert.equal(r.stats().drops.evicted, 2);
    // Byte limit: 3 × (1480 + 64) = 4632; two more 2048-byte pieces pass 10 000.
    r.add({ ...frag(whole, 0, 0, true, { id: 0 }), offset: 1480, data: new Uint8Array(2048) }, 9);
    r.add({ ...frag(whole, 0, 0, true, { id: 3 }), offset: 1480, data: new Uint8Array(2048) }, 9);
    r.add({ ...frag(whole, 0, 0, true, { id: 4 }), offset: 1480, data: new Uint8Array(2048) }, 9);
    assert.ok(r.bytes <= 10_000);
    // A single datagram larger than the whole budget is dropped.
    const small = new FragmentReassembler({ maxBytes: 2000 });
    small.add(frag(whole, 0, 1480, true), 0);
    small.add(frag(whole, 1480, 2960, true), 0);
    assert.equal(small.size, 0);
    assert.equal(small.bytes, 0);
  });

  await t.step("limit: fragments per datagram", () => {
    const r = new FragmentReassembler({ maxFragmentsPerDatagram: 4 });
    const data = new Uint8Array(8);
    for (let i = 0; i < 5; i++) {
      r.add({ ...frag(whole, 0, 0, true), offset: i * 16, data }, 0);
    }
    assert.equal(r.stats().drops.tooManyFragments, 1);
    assert.equal(r.size, 0);
  });

  await t.step("bad options are RangeErrors", () => {
    assert.throws(() => new FragmentReassembler({ maxBytes: 0 }), RangeError);
    assert.throws(() => new FragmentReassembler({ headroom: -1 }), RangeError);
  });
});

Deno.test("FragmentReassembler: per-source quotas", async (t) => {
  const whole = payload(3000);
  const A = "peer A", B = "peer B";
  const from = (source: unknown, id: number): FragmentInput =>
    frag(whole, 0, 1480, true, { source, id });

  await t.step("A's flood of first fragments never evicts B's datagram", () => {
    const r = new FragmentReassembler({ maxDatagrams: 8 });
    assert.equal(r.add(from(B, 1), 0), null);
    for (let id = 100; id < 1100; id++) r.add(from(A, id), 1);
    assert.deepEqual(r.sourceUsage(A).datagrams, 4, "A holds half of 8");
    assert.equal(r.sourceUsage(B).datagrams, 1);
    assert.equal(r.stats().drops.sourceQuota, 996);
    // B's datagram completes.
    const out = r.add(frag(whole, 1480, 3000, false, { source: B, id: 1 }), 2);
    assert.deepEqual(out, whole);
  });

  await t.step("bytes: A over its byte quota gives up its own oldest", () => {
    const r = new FragmentReassembler({ maxBytes: 8000, maxBytesPerSource: 4000 });
    r.add(from(B, 1), 0);
    for (let id = 100; id < 200; id++) r.add(from(A, id), 1);
    assert.ok(r.sourceUsage(A).bytes <= 4000);
    assert.equal(r.sourceUsage(A).datagrams, 2);
    assert.equal(r.sourceUsage(B).datagrams, 1);
    assert.deepEqual(r.add(frag(whole, 1480, 3000, false, { source: B, id: 1 }), 2), whole);
  });

  await t.step("full: the newcomer takes from the source holding the most", () => {
    const r = new FragmentReassembler({
      maxDatagrams: 4,
      maxDatagramsPerSource: 4,
    });
    for (let id = 0; id < 4; id++) r.add(from(A, id), 0);
    r.add(from(B, 11), 1);
    r.add(from(B, 12), 1);
    assert.deepEqual([r.sourceUsage(A).datagrams, r.sourceUsage(B).datagrams], [2, 2]);
    // A tie: B's next one takes B's own oldest, not A's.
    r.add(from(B, 13), 1);
    assert.deepEqual([r.sourceUsage(A).datagrams, r.sourceUsage(B).datagrams], [2, 2]);
    assert.equal(r.size, 4);
    assert.equal(r.bytes, r.sourceUsage(A).bytes + r.sourceUsage(B).bytes);
  });
});
