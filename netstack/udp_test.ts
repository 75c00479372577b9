import assert from "node:assert/strict";
import { type UdpDatagramIn, type UdpFlow, UdpFlowTable } from "./udp.ts";
import { parseAddress } from "./addr.ts";

const LOCAL = parseAddress("93.184.216.34")!;
const CLIENT = parseAddress("10.0.0.2")!;

function dgram(payload: number[], remotePort = 40000, localPort = 53): UdpDatagramIn {
  return {
    localAddress: LOCAL,
    localPort,
    remoteAddress: CLIENT,
    remotePort,
    payload: Uint8Array.from(payload),
  };
}

function setup(options: Partial<ConstructorParameters<typeof UdpFlowTable>[0]> = {}) {
  const sent: { flow: UdpFlow; payload: number[] }[] = [];
  let wakes = 0;
  const table = new UdpFlowTable({
    send: (flow, payload) => sent.push({ flow, payload: [...payload] }),
    wake: () => wakes++,
    ...options,
  });
  return { table, sent, wakes: () => wakes };
}

Deno.test("UdpFlowTable", async (t) => {
  await t.step("a new flow gets its first datagram; later ones follow in order", async () => {
    const { table } = setup();
    assert.equal(table.deliver(dgram([1]), 0), false);
    const flow = table.open(dgram([1]), 0);
    assert.equal(flow.localAddress, "93.184.216.34");
    assert.equal(flow.localPort, 53);
    assert.equal(flow.remoteAddress, "10.0.0.2");
    assert.equal(flow.remotePort, 40000);
    assert.equal(flow.ipVersion, 4);
    assert.equal(table.deliver(dgram([2, 2]), 1), true);
    const reader = flow.readable.getReader();
    assert.deepEqual([...(await reader.read()).value!], [1]);
    assert.deepEqual([...(await reader.read()).value!], [2, 2]);
    // A pending read is fulfilled directly by the next datagram.
    const pending = reader.read();
    table.deliver(dgram([3]), 2);
    assert.deepEqual([...(await pending).value!], [3]);
    assert.equal(table.stats().datagramsIn, 3);
    flow.close();
    assert.equal((await reader.read()).done, true);
    await flow.closed;
    assert.equal(table.size, 0);
  });

  await t.step("different tuples are different flows", () => {
    const { table } = setup();
    table.open(dgram([1], 40000), 0);
    table.open(dgram([1], 40001), 0);
    table.open(dgram([1], 40000, 54), 0);
    assert.equal(table.size, 3);
  });

  await t.step("the reader queue drops the OLDEST datagram when full", async () => {
    const { table } = setup({ queueLength: 3 });
    const flow = table.open(dgram([0]), 0);
    for (let i = 1; i < 6; i++) table.deliver(dgram([i]), 0);
    assert.equal(table.stats().queueDrops, 3);
    const reader = flow.readable.getReader();
    const got = [];
    for (let i = 0; i < 3; i++) got.push((await reader.read()).value![0]);
    assert.deepEqual(got, [3, 4, 5]);
    flow.close();
  });

  await t.step("the reader queue is also bounded in bytes", () => {
    const { table } = setup({ queueBytes: 10 });
    table.open(dgram([1, 2, 3, 4, 5, 6]), 0);
    table.deliver(dgram([1, 2, 3, 4, 5, 6]), 0);
    assert.equal(table.stats().queueDrops, 1);
    table.deliver(dgram(new Array(11).fill(0)), 0); // larger than the whole queue
    assert.equal(table.stats().queueDrops, 3);
  });

  await t.step("writes are queued, wake the owner once, and go out on flush", async () => {
    const { table, sent, wakes } = setup();
    const flow = table.open(dgram([1]), 0);
    const writer = flow.writable.getWriter();
    await writer.write(Uint8Array.from([9, 9]));
    await writer.write(Uint8Array.from([8]));
    assert.equal(wakes(), 1);
    assert.equal(sent.length, 0);
    assert.equal(table.nextDeadline(), -Infinity);
    table.poll(5);
    assert.deepEqual(sent.map((s) => s.payload), [[9, 9], [8]]);
    assert.equal(sent[0].flow, flow);
    assert.equal(table.stats().datagramsOut, 2);
    flow.close();
  });

  await t.step("write() waits while the send queue is full", async () => {
    const { table, sent } = setup({ sendQueueLength: 2 });
    const flow = table.open(dgram([1]), 0);
    const writer = flow.writable.getWriter();
    await writer.write(Uint8Array.from([1]));
    let done = false;
    const second = writer.write(Uint8Array.from([2])).then(() => done = true);
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(done, false);
    table.flush(1);
    await second;
    assert.equal(sent.length, 2);
    flow.close();
  });

  await t.step("write misuse: wrong type is a TypeError, too big a RangeError", async () => {
    const { table } = setup({ maxPayloadV4: 100 });
    const flow = table.open(dgram([1]), 0);
    const w = flow.writable.getWriter();
    await assert.rejects(w.write("x" as unknown as Uint8Array), TypeError);
    const flow2 = table.open(dgram([1], 1), 0);
    await assert.rejects(flow2.writable.getWriter().write(new Uint8Array(101)), RangeError);
  });

  await t.step("idle expiry closes the flow after 60 s without traffic", async () => {
    const { table } = setup();
    const flow = table.open(dgram([1]), 1000);
    assert.equal(table.nextDeadline(), 61_000);
    table.deliver(dgram([2]), 30_000); // traffic extends the flow
    table.poll(61_000);
    assert.equal(table.size, 1);
    assert.equal(table.nextDeadline(), 90_000);
    table.poll(89_999);
    assert.equal(table.size, 1);
    table.poll(90_000);
    assert.equal(table.size, 0);
    assert.equal(table.stats().expired, 1);
    // Queued datagrams are still readable, then the readable closes.
    const reader = flow.readable.getReader();
    assert.deepEqual([...(await reader.read()).value!], [1]);
    assert.deepEqual([...(await reader.read()).value!], [2]);
    assert.equal((await reader.read()).done, true);
    await flow.closed;
    await assert.rejects(flow.writable.getWriter().write(new Uint8Array(1)));
    // The next datagram of that tuple opens a new flow.
    assert.equal(table.deliver(dgram([3]), 90_001), false);
  });

  await t.step("the flow limit evicts the least recently used flow", async () => {
    const { table } = setup({ maxFlows: 2 });
    const a = table.open(dgram([1], 1), 0);
    const b = table.open(dgram([1], 2), 1);
    table.deliver(dgram([1], 1), 2); // a is now more recent than b
    table.open(dgram([1], 3), 3);
    assert.equal(table.size, 2);
    assert.equal(table.stats().evicted, 1);
    await b.closed;
    assert.equal(table.deliver(dgram([1], 1), 4), true);
    a.close();
  });

  await t.step("a source at its quota gives up its own least recently used flow", () => {
    const { table } = setup({ maxFlows: 8, maxFlowsPerSource: 2 });
    const a = { name: "a" }, b = { name: "b" };
    const from = (port: number, source: unknown) => ({ ...dgram([1], port), source });
    const b1 = table.open(from(100, b), 0);
    const a1 = table.open(from(1, a), 1);
    const a2 = table.open(from(2, a), 2);
    table.deliver(from(1, a), 3); // a1 is now more recent than a2
    const a3 = table.open(from(3, a), 4);
    assert.deepEqual([a1, a2, a3, b1].map((f) => table.deliver(from(f.remotePort, f.source), 5)), [
      true,
      false,
      true,
      true,
    ]);
    assert.equal(table.stats().evicted, 1);
    assert.deepEqual([table.sourceCount(a), table.sourceCount(b)], [2, 1]);
  });

  await t.step("a full table: one source's flood never evicts a lighter source's flow", () => {
    const { table } = setup({ maxFlows: 16 });
    const victim = { name: "victim" }, flooder = { name: "flooder" };
    table.open({ ...dgram([1], 9999), source: victim }, 0);
    for (let i = 0; i < 200; i++) {
      table.open({ ...dgram([1], 10000 + i), source: flooder }, 1 + i);
    }
    assert.equal(table.size, 16);
    assert.equal(table.stats().evicted, 200 - 15);
    // The victim's flow is the oldest and least recently used of all, and stays.
    assert.equal(table.deliver({ ...dgram([2], 9999), source: victim }, 300), true);
    assert.deepEqual([table.sourceCount(victim), table.sourceCount(flooder)], [1, 15]);
    // Once the victim holds the most, its own flows give way to its new ones.
    const { table: small } = setup({ maxFlows: 2 });
    small.open({ ...dgram([1], 1), source: victim }, 0);
    small.open({ ...dgram([1], 2), source: victim }, 1);
    small.open({ ...dgram([1], 3), source: flooder }, 2);
    assert.deepEqual([small.sourceCount(victim), small.sourceCount(flooder)], [1, 1]);
  });

  await t.step(
    "a cancelled readable drops datagrams; closing both sides removes the flow",
    async () => {
      const { table } = setup();
      const flow = table.open(dgram([1]), 0);
      await flow.readable.cancel();
      table.deliver(dgram([2]), 1);
      assert.equal(table.stats().noReaderDrops, 1);
      assert.equal(table.size, 1);
      await flow.writable.close();
      assert.equal(table.size, 0);
      await flow.closed;
    },
  );

  await t.step("IPv6 flows", () => {
    const { table } = setup();
    const flow = table.open({
      localAddress: parseAddress("2001:db8::53")!,
      localPort: 53,
      remoteAddress: parseAddress("fd00::2")!,
      remotePort: 1234,
      payload: new Uint8Array(1),
    }, 0);
    assert.equal(flow.ipVersion, 6);
    assert.equal(flow.localAddress, "2001:db8::53");
    table.closeAll();
    assert.equal(table.size, 0);
  });
});
