import assert from "node:assert/strict";
import { type FlowEntry, FlowTable } from "./flows.ts";
import type { FlowInfo } from "./serve.ts";

function entry(n: number, over: Partial<FlowEntry> = {}): FlowEntry & { bytesUp: number } {
  const info: FlowInfo = {
    peer: {
      publicKey: n % 2 ? "keyA" : "keyB",
      name: n % 2 ? "alice" : undefined,
      endpoint: undefined,
    },
    ipVersion: 4,
    source: { address: "10.0.0.2", port: 40000 + n },
    destination: { address: `192.0.2.${n % 250}`, port: n % 3 ? 443 : 53 },
  };
  return {
    id: 0,
    protocol: n % 3 ? "tcp" : "udp",
    info,
    bytesUp: n,
    bytesDown: 10 * n,
    host: n % 5 === 0 ? `host${n}.example` : undefined,
    started: performance.now() - n,
    state: "open",
    ...over,
  };
}

Deno.test("FlowTable", async (t) => {
  await t.step("live flows: newest first, filters, paging, snapshots are copies", () => {
    const table = new FlowTable();
    const entries = Array.from({ length: 30 }, (_, i) => entry(i + 1));
    for (const e of entries) table.add(e);
    assert.equal(table.size, 30);
    const all = table.query({ limit: 1000 });
    assert.equal(all.total, 30);
    assert.equal(all.matched, 30);
    assert.deepEqual(all.flows.map((f) => f.id), entries.map((e) => e.id).reverse());
    const page = table.query({ offset: 5, limit: 5 });
    assert.deepEqual(page.flows.map((f) => f.id), [25, 24, 23, 22, 21]);
    assert.equal(table.query({ peer: "alice" }).matched, 15);
    assert.equal(table.query({ peer: "keyB" }).matched, 15);
    assert.equal(table.query({ protocol: "udp" }).matched, 10);
    assert.equal(table.query({ port: 53 }).matched, 10);
    assert.equal(table.query({ port: 40007 }).flows[0].id, 7);
    assert.deepEqual(table.query({ host: "HOST1" }).flows.map((f) => f.hostname), [
      "host15.example",
      "host10.example",
    ]);
    assert.equal(table.query({ host: "192.0.2.3" }).matched, 2); // 192.0.2.3 and 192.0.2.30
    const bytes = table.query({ sort: "bytes", limit: 3 });
    assert.deepEqual(bytes.flows.map((f) => f.bytesUp), [30, 29, 28]);
    const f = bytes.flows[0];
    assert.equal(f.bytesDown, 300);
    assert.equal(f.peerName, undefined);
    assert.equal(f.state, "open");
    entries[29].bytesUp = 99;
    assert.equal(f.bytesUp, 30, "a snapshot does not change");
    assert.equal(table.query({ sort: "bytes", limit: 1 }).flows[0].bytesUp, 99, "live values");
  });

  await t.step("closed flows go to a bounded ring, newest first", () => {
    const table = new FlowTable({ closed: 4 });
    const entries = Array.from({ length: 6 }, (_, i) => entry(i + 1));
    for (const e of entries) table.add(e);
    for (const e of entries) table.end(e, `end${e.id}`);
    table.end(entries[0], "again"); // already ended: ignored
    assert.equal(table.size, 0);
    const closed = table.query({ closed: true });
    assert.equal(closed.total, 4);
    assert.deepEqual(closed.flows.map((f) => f.end), ["end6", "end5", "end4", "end3"]);
    assert.ok(closed.flows.every((f) => f.state === "closed"));
    assert.deepEqual(table.query({ closed: true, peer: "alice" }).flows.map((f) => f.id), [5, 3]);
    const none = new FlowTable({ closed: 0 });
    const e = entry(1);
    none.add(e);
    none.end(e, "x");
    assert.equal(none.query({ closed: true }).total, 0);
  });

  await t.step("bad queries are RangeErrors", () => {
    const table = new FlowTable();
    for (
      const q of [
        { limit: 0 },
        { limit: 1001 },
        { offset: -1 },
        { port: 70000 },
        {
          protocol: "icmp",
        },
        { sort: "name" },
        { limit: 1.5 },
      ]
    ) {
      assert.throws(() => table.query(q as never), RangeError, JSON.stringify(q));
    }
    assert.throws(() => new FlowTable({ closed: -1 }), RangeError);
  });
});
