import assert from "node:assert/strict";
import type { Connection } from "./connection.ts";
import { TcpError } from "./connection.ts";
import { filler, Harness, PEER_ISS, readBytes, settle } from "./test_helpers.ts";

const P = PEER_ISS + 1; // the peer's first data byte

function stats(c: unknown) {
  return (c as Connection).stats;
}

Deno.test("receiving", async (t) => {
  await t.step("delayed ACK: one segment is ACKed when the 40 ms timer fires", () => {
    const h = new Harness();
    const { iss } = h.open();
    h.send({ flags: "PA", seq: P, ack: iss + 1, data: filler(100) }, 10);
    h.expectNothing();
    assert.equal(h.layer.nextDeadline(), 50);
    h.poll(49);
    h.expectNothing();
    h.poll(50);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 100 });
    assert.equal(h.layer.nextDeadline(), Infinity);
  });

  await t.step("delayed ACK: every second segment is ACKed at once", () => {
    const h = new Harness();
    const { iss } = h.open();
    h.send({ flags: "A", seq: P, ack: iss + 1, data: filler(1000) }, 10);
    h.expectNothing();
    h.send({ flags: "A", seq: P + 1000, ack: iss + 1, data: filler(1000) }, 11);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 2000 });
    h.expectNothing();
  });

  await t.step("a batch of in-order segments draws one cumulative ACK at its end", () => {
    const h = new Harness();
    const { iss } = h.open();
    const wakes = h.wakes;
    h.batch(() => {
      for (let i = 0; i < 8; i++) {
        h.send({ flags: "A", seq: P + i * 1000, ack: iss + 1, data: filler(1000) }, 10);
        h.expectNothing();
      }
      // The layer asks once to be polled after the batch; it owes that poll now.
      assert.equal(h.wakes, wakes + 1);
      assert.equal(h.layer.nextDeadline(), 10);
    });
    h.expect({ flags: "A", seq: iss + 1, ack: P + 8000 });
    h.expectNothing();
    assert.equal(h.layer.nextDeadline(), Infinity);
  });

  await t.step("a batch of one segment leaves it to the delayed-ACK timer", () => {
    const h = new Harness();
    const { iss } = h.open();
    h.batch(() => h.send({ flags: "A", seq: P, ack: iss + 1, data: filler(1000) }, 10));
    h.expectNothing();
    // The next batch's segment makes two: ACKed at that batch's end.
    h.batch(() => h.send({ flags: "A", seq: P + 1000, ack: iss + 1, data: filler(1000) }, 12));
    h.expect({ flags: "A", seq: iss + 1, ack: P + 2000 });
    h.expectNothing();
    assert.equal(h.layer.nextDeadline(), Infinity, "the delayed-ACK timer is off");
  });

  await t.step("in a batch, out-of-order data is SACKed at once, then one ACK", () => {
    const h = new Harness();
    const { iss } = h.open({ sackPerm: true });
    h.batch(() => {
      h.send({ flags: "A", seq: P, ack: iss + 1, data: filler(1000) }, 1);
      h.send({ flags: "A", seq: P + 1000, ack: iss + 1, data: filler(1000) }, 1);
      h.expectNothing();
      // A gap: the duplicate ACK with its SACK block goes now (RFC 5681 §4.2),
      // cumulative over the batch's in-order segments so far.
      h.send({ flags: "A", seq: P + 3000, ack: iss + 1, data: filler(1000) }, 1);
      h.expect({ flags: "A", seq: iss + 1, ack: P + 2000, sack: [[P + 3000, P + 4000]] });
      // The hole filled: ACKed at once too.
      h.send({ flags: "A", seq: P + 2000, ack: iss + 1, data: filler(1000) }, 1);
      h.expect({ flags: "A", seq: iss + 1, ack: P + 4000, sack: [] });
      h.send({ flags: "A", seq: P + 4000, ack: iss + 1, data: filler(1000) }, 1);
      h.send({ flags: "A", seq: P + 5000, ack: iss + 1, data: filler(1000) }, 1);
      h.expectNothing();
    });
    h.expect({ flags: "A", seq: iss + 1, ack: P + 6000 });
    h.expectNothing();
  });

  await t.step("in a batch, a FIN is ACKed at once", () => {
    const h = new Harness();
    const { iss } = h.open();
    h.batch(() => {
      h.send({ flags: "A", seq: P, ack: iss + 1, data: filler(1000) }, 1);
      h.send({ flags: "A", seq: P + 1000, ack: iss + 1, data: filler(1000) }, 1);
      h.expectNothing();
      h.send({ flags: "FA", seq: P + 2000, ack: iss + 1 }, 1);
      h.expect({ flags: "A", seq: iss + 1, ack: P + 2001 });
    });
    h.expectNothing();
  });

  await t.step("a batch's data reaches a waiting reader in one chunk", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    const reader = conn.readable.getReader();
    const first = reader.read();
    await settle();
    const d = filler(6000);
    h.batch(() => {
      for (let i = 0; i < 6; i++) {
        h.send({
          flags: "A",
          seq: P + i * 1000,
          ack: iss + 1,
          data: d.subarray(i * 1000, i * 1000 + 1000),
        }, 1);
      }
    });
    const { value } = await first;
    assert.deepEqual(value, d);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 6000 });
  });

  await t.step("out of order: duplicate ACKs carry SACK blocks, newest first", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ sackPerm: true });
    const d = filler(6000);
    h.send({ flags: "A", seq: P + 1000, ack: iss + 1, data: d.subarray(1000, 2000) }, 1);
    h.expect({ flags: "A", seq: iss + 1, ack: P, sack: [[P + 1000, P + 2000]] });
    h.send({ flags: "A", seq: P + 2000, ack: iss + 1, data: d.subarray(2000, 3000) }, 2);
    h.expect({ flags: "A", seq: iss + 1, ack: P, sack: [[P + 1000, P + 3000]] });
    h.send({ flags: "A", seq: P + 4000, ack: iss + 1, data: d.subarray(4000, 5000) }, 3);
    h.expect({
      flags: "A",
      ack: P,
      seq: iss + 1,
      sack: [[P + 4000, P + 5000], [P + 1000, P + 3000]],
    });
    // A duplicate of stored data changes nothing but is ACKed.
    h.send({ flags: "A", seq: P + 1500, ack: iss + 1, data: d.subarray(1500, 2500) }, 4);
    h.expect({ flags: "A", ack: P, seq: iss + 1 });
    // The hole at the front is filled: cumulative ACK jumps, one block left.
    h.send({ flags: "A", seq: P, ack: iss + 1, data: d.subarray(0, 1000) }, 5);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 3000, sack: [[P + 4000, P + 5000]] });
    h.send({ flags: "A", seq: P + 3000, ack: iss + 1, data: d.subarray(3000, 4000) }, 6);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 5000, sack: [] });
    h.send({ flags: "A", seq: P + 5000, ack: iss + 1, data: d.subarray(5000, 6000) }, 7);
    const r = conn.readable.getReader();
    assert.deepEqual(await readBytes(r, 6000), d);
  });

  await t.step("overlapping retransmission is trimmed to RCV.NXT", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    const d = filler(300);
    h.send({ flags: "A", seq: P, ack: iss + 1, data: d.subarray(0, 200) }, 1);
    h.send({ flags: "A", seq: P + 100, ack: iss + 1, data: d.subarray(100, 300) }, 2);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 300 });
    assert.deepEqual(await readBytes(conn.readable.getReader(), 300), d);
  });

  await t.step("backpressure: window closes to 0, excess data is refused, not lost", async () => {
    const h = new Harness({ receiveBuffer: 4000, maxReceiveBuffer: 4000 });
    const { conn, iss, synAck } = h.open();
    assert.equal(synAck.window, 4000);
    const d = filler(5000, 3);
    for (let i = 0; i < 4; i++) {
      h.send({
        flags: "A",
        seq: P + 1000 * i,
        ack: iss + 1,
        data: d.subarray(1000 * i, 1000 * (i + 1)),
      }, 1);
    }
    h.expect({ flags: "A", seq: iss + 1, ack: P + 2000, win: 2000 });
    h.expect({ flags: "A", seq: iss + 1, ack: P + 4000, win: 0 });
    // The peer ignores the window: the data is refused and the window stays shut.
    h.send({ flags: "A", seq: P + 4000, ack: iss + 1, data: d.subarray(4000, 5000) }, 2);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 4000, win: 0 });
    // The consumer reads: a window update goes out on the next poll.
    const r = conn.readable.getReader();
    assert.deepEqual(await readBytes(r, 4000), d.subarray(0, 4000));
    await settle();
    assert.ok(h.wakes > 0);
    h.poll(3);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 4000, win: 4000 });
    h.send({ flags: "A", seq: P + 4000, ack: iss + 1, data: d.subarray(4000, 5000) }, 4);
    assert.deepEqual(await readBytes(r, 1000), d.subarray(4000));
  });

  await t.step("a read draws a window update only when the window at least doubles", async () => {
    const h = new Harness({ receiveBuffer: 8000, maxReceiveBuffer: 8000 });
    const { conn, iss } = h.open();
    const send = (from: number, n: number, at: number) =>
      h.batch(() => {
        for (let i = 0; i < n; i++) {
          h.send({ flags: "A", seq: P + from + i * 1000, ack: iss + 1, data: filler(1000) }, at);
        }
      });
    // 2000 bytes: 6000 of the window left. Reading them would offer 8000,
    // less than twice that: the next ACK carries it, no update of its own.
    send(0, 2, 1);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 2000, win: 6000 });
    assert.equal((await conn.read())?.length, 2000);
    await settle();
    h.poll(2);
    h.expectNothing();
    // 5000 more; their ACK carries what the read freed: 3000 left. Reading
    // them offers 8000, more than twice that: an update at once.
    send(2000, 5, 3);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 7000, win: 3000 });
    assert.equal((await conn.read())?.length, 5000);
    await settle();
    h.poll(4);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 7000, win: 8000 });
    h.expectNothing();
  });

  await t.step("receive buffer grows while the consumer keeps up", async () => {
    const h = new Harness({ receiveBuffer: 4096, maxReceiveBuffer: 65536 });
    const { conn, iss } = h.open();
    const r = conn.readable.getReader();
    const reading = readBytes(r, 40000);
    let seq = P;
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 4; i++) {
        h.send({ flags: "A", seq, ack: iss + 1, data: filler(1000) }, round);
        seq += 1000;
      }
      await settle();
      h.poll(round);
      h.out.length = 0;
    }
    await reading;
    assert.ok(stats(conn).receiveBuffer > 4096, `rcvBuf ${stats(conn).receiveBuffer}`);
  });

  await t.step("readable.cancel(): keep ACKing and discard, window stays open", async () => {
    const h = new Harness({ receiveBuffer: 2000, maxReceiveBuffer: 2000 });
    const { conn, iss } = h.open();
    await conn.readable.cancel();
    for (let i = 0; i < 5; i++) {
      h.send({ flags: "A", seq: P + 1000 * i, ack: iss + 1, data: filler(1000) }, i);
      h.poll(i + 100);
    }
    const acks = h.out.filter((s) => s.ack === P + 5000);
    assert.ok(acks.length >= 1);
    assert.equal(acks[acks.length - 1].window, 2000);
  });

  await t.step("PAWS: a segment with an old timestamp is dropped and ACKed", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ ts: [100, 0] }, [110, 0]);
    h.send({ flags: "A", seq: P, ack: iss + 1, data: "new", ts: [120, 0] }, 1);
    h.send({ flags: "A", seq: P + 3, ack: iss + 1, data: "old", ts: [90, 0] }, 2);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 3, ts: [-1, 120] });
    h.send({ flags: "A", seq: P + 3, ack: iss + 1, data: "end", ts: [130, 0] }, 3);
    assert.deepEqual(
      new TextDecoder().decode(await readBytes(conn.readable.getReader(), 6)),
      "newend",
    );
    assert.ok(stats(conn).dropped >= 1);
  });
});

Deno.test("sending", async (t) => {
  await t.step("write() stays pending until the send buffer has room", async () => {
    const h = new Harness({ sendBuffer: 2000, maxSendBuffer: 2000 });
    const { conn, iss } = h.open({ mss: 1000 });
    const w = conn.writable.getWriter();
    const d = filler(5000);
    let done = false;
    const p = w.write(d).then(() => (done = true));
    await settle();
    assert.equal(done, false);
    h.poll(1);
    h.expect({ flags: "A", seq: iss + 1, data: d.subarray(0, 1000) });
    h.expect({ flags: "PA", seq: iss + 1001, data: d.subarray(1000, 2000) });
    h.expectNothing();
    h.send({ flags: "A", seq: P, ack: iss + 2001 }, 2);
    h.expect({ flags: "A", seq: iss + 2001, data: d.subarray(2000, 3000) });
    h.expect({ flags: "PA", seq: iss + 3001, data: d.subarray(3000, 4000) });
    await settle();
    assert.equal(done, false);
    h.send({ flags: "A", seq: P, ack: iss + 4001 }, 3);
    await p;
    h.expect({ flags: "PA", seq: iss + 4001, data: d.subarray(4000) });
  });

  await t.step("RTO: retransmit after 1 s, then back off exponentially", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000 });
    const w = conn.writable.getWriter();
    await w.write(filler(100));
    h.poll(0);
    h.expect({ flags: "PA", seq: iss + 1, data: filler(100) });
    assert.equal(h.layer.nextDeadline(), 1000);
    h.poll(999);
    h.expectNothing();
    h.poll(1000);
    h.expect({ flags: "PA", seq: iss + 1, data: filler(100) });
    assert.equal(h.layer.nextDeadline(), 3000);
    h.poll(3000);
    h.expect({ flags: "PA", seq: iss + 1 });
    assert.equal(h.layer.nextDeadline(), 7000);
    h.send({ flags: "A", seq: P, ack: iss + 101 }, 7001);
    assert.equal(h.layer.nextDeadline(), Infinity);
    assert.equal(stats(conn).retransmits, 2);
    assert.equal(stats(conn).timeouts, 2);
  });

  await t.step("RTO from measured RTT (RFC 6298): srtt + 4·rttvar, min 200 ms", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000 });
    const w = conn.writable.getWriter();
    await w.write(filler(100));
    h.poll(0);
    h.expect({ flags: "PA", seq: iss + 1 });
    h.send({ flags: "A", seq: P, ack: iss + 101 }, 100);
    assert.equal(stats(conn).srtt, 100);
    assert.equal(stats(conn).rto, 300);
    await w.write(filler(100));
    h.poll(100);
    h.expect({ flags: "PA", seq: iss + 101 });
    assert.equal(h.layer.nextDeadline(), 400);
  });

  await t.step("fast retransmit on the third duplicate ACK (NewReno, no SACK)", async () => {
    const h = new Harness({ congestionControl: "newreno" });
    const { conn, iss } = h.open({ mss: 1000 });
    const w = conn.writable.getWriter();
    const d = filler(5000);
    await w.write(d);
    h.poll(0);
    for (let i = 0; i < 5; i++) h.expect({ flags: i === 4 ? "PA" : "A", seq: iss + 1 + 1000 * i });
    h.send({ flags: "A", seq: P, ack: iss + 1001 }, 10);
    h.send({ flags: "A", seq: P, ack: iss + 1001 }, 11);
    h.send({ flags: "A", seq: P, ack: iss + 1001 }, 12);
    h.expectNothing();
    h.send({ flags: "A", seq: P, ack: iss + 1001 }, 13);
    h.expect({ flags: "A", seq: iss + 1001, data: d.subarray(1000, 2000) });
    assert.equal(stats(conn).fastRecoveries, 1);
    // Partial ACK: the next hole is retransmitted at once (RFC 6582).
    h.send({ flags: "A", seq: P, ack: iss + 2001 }, 20);
    h.expect({ flags: "A", seq: iss + 2001, data: d.subarray(2000, 3000) });
    // Full ACK ends recovery.
    h.send({ flags: "A", seq: P, ack: iss + 5001 }, 30);
    assert.equal(stats(conn).retransmits, 2);
    assert.equal(stats(conn).cwnd, stats(conn).ssthresh);
  });

  await t.step("SACK recovery retransmits only the holes (RFC 6675)", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000, sackPerm: true });
    const w = conn.writable.getWriter();
    const d = filler(8000);
    await w.write(d);
    h.poll(0);
    for (let i = 0; i < 8; i++) h.expect({ flags: i === 7 ? "PA" : "A", seq: iss + 1 + 1000 * i });
    const s = (a: number, b: number): [number, number] => [iss + 1 + a, iss + 1 + b];
    // Segments 0 and 3 are lost.
    h.send({ flags: "A", seq: P, ack: iss + 1, sack: [s(1000, 2000)] }, 10);
    h.send({ flags: "A", seq: P, ack: iss + 1, sack: [s(1000, 3000)] }, 11);
    h.expectNothing();
    h.send({ flags: "A", seq: P, ack: iss + 1, sack: [s(4000, 5000), s(1000, 3000)] }, 12);
    h.expect({ flags: "A", seq: iss + 1, data: d.subarray(0, 1000) });
    h.send({ flags: "A", seq: P, ack: iss + 1, sack: [s(4000, 6000), s(1000, 3000)] }, 13);
    h.expect({ flags: "A", seq: iss + 3001, data: d.subarray(3000, 4000) });
    h.expectNothing();
    h.send({ flags: "A", seq: P, ack: iss + 8001 }, 20);
    assert.equal(stats(conn).retransmits, 2);
    assert.equal(stats(conn).fastRecoveries, 1);
  });

  await t.step("zero window: persist probes with backoff, then data when it opens", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000 });
    h.send({ flags: "A", seq: P, ack: iss + 1, win: 0 }, 1);
    const w = conn.writable.getWriter();
    await w.write(filler(100));
    h.poll(2);
    h.expectNothing();
    assert.equal(h.layer.nextDeadline(), 1002);
    h.poll(1002);
    h.expect({ flags: "A", seq: iss + 1, data: filler(100).subarray(0, 1) });
    h.send({ flags: "A", seq: P, ack: iss + 1, win: 0 }, 1010);
    h.expectNothing();
    assert.equal(h.layer.nextDeadline(), 3002);
    h.poll(3002);
    h.expect({ flags: "A", seq: iss + 1, data: filler(100).subarray(0, 1) });
    h.send({ flags: "A", seq: P, ack: iss + 1, win: 1000 }, 3010);
    h.expect({ flags: "PA", seq: iss + 1, data: filler(100) });
    h.send({ flags: "A", seq: P, ack: iss + 101, win: 1000 }, 3020);
    assert.equal(h.layer.nextDeadline(), Infinity);
  });

  await t.step("a window that shuts on data in flight and opens again keeps a timer", async () => {
    // 2,000 bytes in flight; the peer takes none of it and shuts its window,
    // so the persist timer replaces the RTO. When the window opens without
    // SND.UNA moving and nothing new fits, the flight must still be timed:
    // a lost segment would otherwise wait for a packet that never comes.
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000, win: 2000 });
    const w = conn.writable.getWriter();
    await w.write(filler(3000));
    h.poll(0);
    assert.equal(h.out.splice(0).length, 2);
    h.send({ flags: "A", seq: P, ack: iss + 1, win: 0 }, 10);
    h.poll(h.layer.nextDeadline()); // a zero-window probe: the first byte again
    h.expect({ flags: "A", seq: iss + 1, data: filler(1) });
    h.send({ flags: "A", seq: P, ack: iss + 1, win: 2000 }, h.now + 10);
    h.expectNothing();
    const at = h.layer.nextDeadline();
    assert.ok(at < Infinity, "no timer while 2,000 bytes are in flight");
    h.poll(at);
    h.expect({ flags: "A", seq: iss + 1, data: filler(1000) });
  });

  await t.step("ICMP packet-too-big lowers the MSS and resends in smaller segments", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1380 });
    const w = conn.writable.getWriter();
    await w.write(filler(1380));
    h.poll(0);
    const seg = h.expect({ flags: "PA", seq: iss + 1 });
    assert.equal(seg.payload.length, 1380);
    const quoted = new Uint8Array(8);
    new DataView(quoted.buffer).setUint16(0, 80);
    new DataView(quoted.buffer).setUint16(2, 40000);
    new DataView(quoted.buffer).setUint32(4, iss + 1);
    h.layer.icmpError(
      conn.localAddress,
      conn.remoteAddress,
      quoted,
      { kind: "packet-too-big", mtu: 1000 },
      5,
    );
    h.poll(5);
    h.expect({ flags: "A", seq: iss + 1, data: filler(960) });
    h.expect({ flags: "PA", seq: iss + 961, data: filler(1380).subarray(960) });
    assert.equal(stats(conn).mss, 960);
  });

  await t.step("Nagle (option): small writes wait for the ACK of outstanding data", async () => {
    const h = new Harness({ nagle: true });
    const { conn, iss } = h.open({ mss: 1000 });
    const w = conn.writable.getWriter();
    await w.write(filler(10));
    h.poll(0);
    h.expect({ flags: "PA", seq: iss + 1 });
    await w.write(filler(10));
    h.poll(1);
    h.expectNothing();
    h.send({ flags: "A", seq: P, ack: iss + 11 }, 5);
    h.expect({ flags: "PA", seq: iss + 11 });
  });
});

Deno.test("closing", async (t) => {
  await t.step("FIN in ESTABLISHED → CLOSE_WAIT; our close → LAST_ACK → CLOSED", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    h.send({ flags: "FA", seq: P, ack: iss + 1, data: "bye" }, 1);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 4 });
    assert.equal(stats(conn).state, "CLOSE_WAIT");
    const r = conn.readable.getReader();
    assert.equal(new TextDecoder().decode(await readBytes(r, 10)), "bye");
    assert.equal((await r.read()).done, true);
    // Half-close: we can still send.
    const w = conn.writable.getWriter();
    await w.write(new TextEncoder().encode("ok"));
    await w.close();
    h.poll(2);
    h.expect({ flags: "FPA", seq: iss + 1, ack: P + 4, data: "ok" });
    assert.equal(stats(conn).state, "LAST_ACK");
    // A retransmitted FIN from the peer in CLOSE_WAIT/LAST_ACK is ACKed.
    h.send({ flags: "FA", seq: P + 3, ack: iss + 1 }, 3);
    h.expect({ flags: "A", seq: iss + 4, ack: P + 4 });
    h.send({ flags: "A", seq: P + 4, ack: iss + 4 }, 4);
    await conn.closed;
    assert.equal(stats(conn).state, "CLOSED");
    assert.equal(h.layer.stats.connections, 0);
  });

  await t.step("LAST_ACK: our FIN is retransmitted on RTO", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    h.send({ flags: "FA", seq: P, ack: iss + 1 }, 1);
    h.expect({ flags: "A", ack: P + 1, seq: iss + 1 });
    await conn.writable.close();
    h.poll(2);
    h.expect({ flags: "FA", seq: iss + 1 });
    h.poll(1002);
    h.expect({ flags: "FA", seq: iss + 1 });
  });

  await t.step("our close → FIN_WAIT_1 → FIN_WAIT_2 → TIME_WAIT → expiry", async () => {
    const h = new Harness({ timeWait: 5000 });
    const { conn, iss } = h.open();
    await conn.writable.close();
    h.poll(1);
    h.expect({ flags: "FA", seq: iss + 1, ack: P });
    assert.equal(stats(conn).state, "FIN_WAIT_1");
    h.send({ flags: "A", seq: P, ack: iss + 2 }, 2);
    assert.equal(stats(conn).state, "FIN_WAIT_2");
    // Still receiving in FIN_WAIT_2 (half-close).
    h.send({ flags: "FPA", seq: P, ack: iss + 2, data: "late" }, 3);
    h.expect({ flags: "A", seq: iss + 2, ack: P + 5 });
    assert.equal(stats(conn).state, "TIME_WAIT");
    await conn.closed;
    assert.equal(h.layer.stats.timeWait, 1);
    // A retransmitted FIN in TIME_WAIT is ACKed again and restarts the timer.
    h.send({ flags: "FA", seq: P + 4, ack: iss + 2 }, 1000);
    h.expect({ flags: "A", seq: iss + 2, ack: P + 5 });
    assert.equal(h.layer.nextDeadline(), 6000);
    h.poll(6000);
    assert.equal(h.layer.stats.connections, 0);
    assert.equal(h.layer.stats.timeWait, 0);
    const r = conn.readable.getReader();
    assert.equal(new TextDecoder().decode(await readBytes(r, 10)), "late");
  });

  await t.step(
    "in TIME_WAIT the congestion and recovery figures stay as they were (the controller settled)",
    async () => {
      for (const congestionControl of ["bbr", "cubic"] as const) {
        const h = new Harness({ timeWait: 5000, congestionControl });
        const { conn, iss } = h.open();
        const w = conn.writable.getWriter();
        await w.write(new TextEncoder().encode("hello"));
        h.poll(1);
        h.expect({ flags: "PA", seq: iss + 1, ack: P, data: "hello" });
        h.send({ flags: "A", seq: P, ack: iss + 6 }, 11);
        const figures = (c: unknown) => {
          const { state: _state, ...rest } = stats(c);
          return rest;
        };
        await w.close();
        h.poll(12);
        h.expect({ flags: "FA", seq: iss + 6, ack: P });
        h.send({ flags: "A", seq: P, ack: iss + 7 }, 22);
        assert.equal(stats(conn).state, "FIN_WAIT_2");
        const before = figures(conn);
        assert.equal(before.minRtt, 10, congestionControl);
        h.send({ flags: "FA", seq: P, ack: iss + 7 }, 23);
        h.expect({ flags: "A", seq: iss + 7, ack: P + 1 });
        assert.equal(stats(conn).state, "TIME_WAIT");
        const after = figures(conn);
        // The peer's FIN and our ACK of it count as segments.
        assert.equal(after.segmentsIn, before.segmentsIn + 1);
        assert.equal(after.segmentsOut, before.segmentsOut + 1);
        assert.deepEqual(
          { ...after, segmentsIn: 0, segmentsOut: 0 },
          { ...before, segmentsIn: 0, segmentsOut: 0 },
          congestionControl,
        );
        // Still answers as TIME_WAIT does.
        h.send({ flags: "FA", seq: P, ack: iss + 7 }, 1000);
        h.expect({ flags: "A", seq: iss + 7, ack: P + 1 });
      }
    },
  );

  await t.step("a RST in TIME_WAIT is ignored: unread data stays readable (RFC 1337)", async () => {
    const h = new Harness({ timeWait: 5000 });
    const { conn, iss } = h.open();
    await conn.writable.close();
    h.poll(1);
    h.expect({ flags: "FA", seq: iss + 1, ack: P });
    h.send({ flags: "FPA", seq: P, ack: iss + 2, data: "unread" }, 2);
    h.expect({ flags: "A", seq: iss + 2, ack: P + 7 });
    assert.equal(stats(conn).state, "TIME_WAIT");
    // E.g. our duplicate ACK reached a peer that had already closed.
    h.send({ flags: "R", seq: P + 7 }, 3);
    h.expectNothing();
    assert.equal(h.layer.stats.timeWait, 1, "still in TIME_WAIT");
    const r = conn.readable.getReader();
    assert.equal(new TextDecoder().decode(await readBytes(r, 10)), "unread");
    assert.equal((await r.read()).done, true, "a clean end, not ECONNRESET");
    h.poll(5002);
    assert.equal(h.layer.stats.connections, 0);
  });

  await t.step("FIN_WAIT_1 + FIN-ACK at once → TIME_WAIT", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    await conn.writable.close();
    h.poll(1);
    h.expect({ flags: "FA", seq: iss + 1 });
    h.send({ flags: "FA", seq: P, ack: iss + 2 }, 2);
    h.expect({ flags: "A", seq: iss + 2, ack: P + 1 });
    assert.equal(stats(conn).state, "TIME_WAIT");
  });

  await t.step("simultaneous close: FIN_WAIT_1 → CLOSING → TIME_WAIT", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    await conn.writable.close();
    h.poll(1);
    h.expect({ flags: "FA", seq: iss + 1 });
    h.send({ flags: "FA", seq: P, ack: iss + 1 }, 2); // crosses our FIN
    h.expect({ flags: "A", seq: iss + 2, ack: P + 1 });
    assert.equal(stats(conn).state, "CLOSING");
    h.send({ flags: "A", seq: P + 1, ack: iss + 2 }, 3);
    assert.equal(stats(conn).state, "TIME_WAIT");
  });

  await t.step("out-of-order FIN is held until the data before it arrives", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    h.send({ flags: "FA", seq: P + 5, ack: iss + 1, data: "world" }, 1);
    h.expect({ flags: "A", seq: iss + 1, ack: P });
    h.send({ flags: "A", seq: P, ack: iss + 1, data: "hello" }, 2);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 11 });
    assert.equal(stats(conn).state, "CLOSE_WAIT");
    const r = conn.readable.getReader();
    assert.equal(new TextDecoder().decode(await readBytes(r, 20)), "helloworld");
  });

  await t.step("writable.abort() sends RST on the next poll", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    await conn.writable.abort(new Error("bye"));
    assert.ok(h.wakes > 0);
    h.poll(1);
    h.expect({ flags: "R", seq: iss + 1 });
    await conn.closed;
  });

  await t.step("writable.abort() with a write stuck on a shut window does not hang", async () => {
    const h = new Harness({ sendBuffer: 2000, maxSendBuffer: 2000 });
    const { conn, iss } = h.open({ mss: 1000, win: 0 });
    const w = conn.writable.getWriter();
    const stuck = w.write(filler(10_000));
    stuck.catch(() => {});
    await settle();
    await w.abort(new Error("give up"));
    h.poll(1);
    h.expect({ flags: "R", seq: iss + 1 });
    await assert.rejects(stuck);
    await conn.closed;
  });

  await t.step("close() while a pipe holds the writable: data, then FIN", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    const w = conn.writable.getWriter(); // the writable is locked, as by pipeTo
    await w.write(new TextEncoder().encode("tail"));
    conn.close();
    h.poll(1);
    h.expect({ flags: "FPA", seq: iss + 1, ack: P, data: "tail" });
    assert.equal(stats(conn).state, "FIN_WAIT_1");
    await assert.rejects(w.write(new Uint8Array(1)), TypeError);
    conn.close(); // idempotent
    h.send({ flags: "A", seq: P, ack: iss + 6 }, 2);
    assert.equal(stats(conn).state, "FIN_WAIT_2");
  });

  await t.step("close() rejects a write stuck on a shut window, sends the buffer", async () => {
    const h = new Harness({ sendBuffer: 2000, maxSendBuffer: 2000 });
    const { conn, iss } = h.open({ mss: 1000, win: 0 });
    const w = conn.writable.getWriter();
    const stuck = w.write(filler(10_000));
    stuck.catch(() => {});
    await settle();
    conn.close();
    await assert.rejects(stuck, TypeError);
    // The window opens: the 2000 buffered bytes go out, FIN on the last one.
    h.send({ flags: "A", seq: P, ack: iss + 1, win: 4000 }, 1);
    h.poll(1);
    const sent = filler(10_000);
    h.expect({ flags: "A", seq: iss + 1, ack: P, data: sent.subarray(0, 1000) });
    h.expect({ flags: "FPA", seq: iss + 1001, ack: P, data: sent.subarray(1000, 2000) });
  });

  await t.step("reset() sends RST+ACK at once", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    conn.reset();
    h.expect({ flags: "RA", seq: iss + 1, ack: P });
    await conn.closed;
    assert.equal(h.layer.stats.connections, 0);
  });
});

Deno.test("RST and SYN checks (RFC 5961)", async (t) => {
  await t.step("RST at RCV.NXT resets; readable errors ECONNRESET", async () => {
    const h = new Harness();
    const { conn } = h.open();
    h.send({ flags: "R", seq: P }, 1);
    h.expectNothing();
    await assert.rejects(
      conn.readable.getReader().read(),
      (e: unknown) => e instanceof TcpError && e.code === "ECONNRESET",
    );
    await conn.closed;
  });

  await t.step("RST in window but not at RCV.NXT → challenge ACK, connection lives", () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    h.send({ flags: "R", seq: P + 100 }, 1);
    h.expect({ flags: "A", seq: iss + 1, ack: P });
    assert.equal(stats(conn).state, "ESTABLISHED");
    assert.equal(stats(conn).challengeAcks, 1);
  });

  await t.step("RST out of window → dropped silently", () => {
    const h = new Harness();
    const { conn } = h.open();
    h.send({ flags: "R", seq: P + 1_000_000 }, 1);
    h.expectNothing();
    assert.equal(stats(conn).state, "ESTABLISHED");
  });

  await t.step("SYN in ESTABLISHED → challenge ACK", () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    h.send({ flags: "S", seq: P + 50 }, 1);
    h.expect({ flags: "A", seq: iss + 1, ack: P });
    assert.equal(stats(conn).state, "ESTABLISHED");
    assert.equal(stats(conn).challengeAcks, 1);
  });

  await t.step("ACK of data never sent → ACK and drop", () => {
    const h = new Harness();
    const { iss } = h.open();
    h.send({ flags: "A", seq: P, ack: iss + 500, data: "x" }, 1);
    h.expect({ flags: "A", seq: iss + 1, ack: P });
  });

  await t.step("out-of-window data → ACK", () => {
    const h = new Harness();
    const { iss } = h.open();
    h.send({ flags: "A", seq: P + 200_000, ack: iss + 1, data: "x" }, 1);
    h.expect({ flags: "A", seq: iss + 1, ack: P });
  });
});

Deno.test("timers and limits", async (t) => {
  await t.step("keepalive (option): probes after idle, drops after unanswered probes", async () => {
    const h = new Harness({ keepAlive: { idle: 10_000, interval: 1000, count: 2 } });
    const { conn, iss } = h.open();
    assert.equal(h.layer.nextDeadline(), 10_000);
    h.poll(10_000);
    h.expect({ flags: "A", seq: iss, ack: P });
    // The peer answers: the idle timer restarts.
    h.send({ flags: "A", seq: P, ack: iss + 1 }, 10_001);
    assert.equal(h.layer.nextDeadline(), 20_001);
    h.poll(20_001);
    h.expect({ flags: "A", seq: iss });
    h.poll(21_001);
    h.expect({ flags: "A", seq: iss });
    h.poll(22_001);
    h.expect({ flags: "R", seq: iss + 1 });
    await assert.rejects(
      conn.readable.getReader().read(),
      (e: unknown) => e instanceof TcpError && e.code === "ETIMEDOUT",
    );
  });

  await t.step("challenge ACKs are rate limited (10 per second)", () => {
    const h = new Harness();
    const { conn } = h.open();
    for (let i = 0; i < 50; i++) h.send({ flags: "R", seq: P + 10 + i }, 100);
    assert.equal(h.out.length, 10);
    assert.equal(stats(conn).challengeAcks, 10);
    h.out.length = 0;
    h.send({ flags: "R", seq: P + 5 }, 1100);
    assert.equal(h.out.length, 1);
  });

  await t.step("window scale: the window field is the free space >> 7", () => {
    const h = new Harness({ receiveBuffer: 1 << 20 });
    const { iss, synAck } = h.open({ ws: 7 });
    assert.equal(synAck.window, 65535); // never scaled in SYN segments
    h.send({ flags: "A", seq: P, ack: iss + 1, data: filler(1000) }, 1);
    h.send({ flags: "A", seq: P + 1000, ack: iss + 1, data: filler(1000) }, 1);
    // Rounded down: the window never offers more than the buffer holds.
    h.expect({
      flags: "A",
      seq: iss + 1,
      ack: P + 2000,
      win: Math.floor(((1 << 20) - 2000) / 128),
    });
  });

  await t.step(
    "a never-reading consumer: the queue stays within a scale unit of the buffer",
    () => {
      const buffer = 65536;
      const h = new Harness({ receiveBuffer: buffer, maxReceiveBuffer: buffer, delayedAck: 0 });
      const { conn, iss } = h.open({ ws: 7 });
      // A peer that fills exactly the window we advertise, in odd-sized segments
      // (so that the scaled window is rounded on every ACK).
      let seq = P, edge = P + 65535, at = 1, accepted = 0;
      for (let i = 0; i < 2000 && seq < edge; i++) {
        const len = Math.min(333, edge - seq);
        h.send({ flags: "A", seq, ack: iss + 1, data: filler(len) }, at++);
        seq += len;
        for (const r of h.out.splice(0)) {
          const ack = r.ack >= P ? r.ack : r.ack + 2 ** 32;
          accepted = ack - P;
          edge = Math.max(edge, ack + r.window * 128);
        }
        assert.equal(accepted, seq - P, "nothing within the advertised window is trimmed");
      }
      assert.ok(accepted > buffer - 1000, `the window was used (${accepted} bytes accepted)`);
      assert.ok(accepted < buffer + 128, `${accepted} bytes queued in a ${buffer}-byte buffer`);
      assert.equal(stats(conn).bytesIn, accepted);
      // The peer is told the window is closed.
      h.send({ flags: "A", seq, ack: iss + 1, data: filler(100) }, at++);
      const last = h.out.pop()!;
      assert.equal(last.window, 0);
    },
  );

  await t.step("a new SYN above RCV.NXT reopens a TIME_WAIT tuple", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    await conn.writable.close();
    h.poll(1);
    h.expect({ flags: "FA", seq: iss + 1 });
    h.send({ flags: "FA", seq: P, ack: iss + 2 }, 2);
    h.expect({ flags: "A", seq: iss + 2 });
    assert.equal(stats(conn).state, "TIME_WAIT");
    h.send({ flags: "S", seq: P + 100_000 }, 3);
    h.expect({ flags: "SA", seq: h.out[0]?.seq ?? 0, ack: P + 100_001 });
    assert.equal(h.accepted.length, 2);
  });

  await t.step("stats count segments, bytes, RTT and cwnd", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000, ts: [1, 0] }, [2, 0]);
    const w = conn.writable.getWriter();
    await w.write(filler(3000));
    h.poll(0);
    const tsv = h.out[0].tsVal;
    h.out.length = 0;
    h.send({ flags: "A", seq: P, ack: iss + 3001, ts: [3, tsv] }, 30);
    const s = stats(conn);
    assert.equal(s.bytesOut, 3000);
    assert.equal(s.segmentsOut, 5); // SYN-ACK + 4 data segments (988-byte payloads)
    assert.equal(s.srtt, 30);
    assert.ok(s.cwnd > 0 && s.rttvar > 0);
  });
});

Deno.test("ACK-war regressions", async (t) => {
  await t.step("after a timeout, pure ACKs carry SND.MAX (acceptable to the peer)", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000 });
    const w = conn.writable.getWriter();
    await w.write(filler(3000));
    h.poll(0);
    h.out.length = 0;
    h.poll(1000); // RTO: go back to SND.UNA, resend one segment
    h.expect({ flags: "A", seq: iss + 1, data: filler(1000) });
    h.send({ flags: "A", seq: P, ack: iss + 1, data: "x" }, 1001);
    h.send({ flags: "A", seq: P + 1, ack: iss + 1, data: "y" }, 1002);
    h.expect({ flags: "A", seq: iss + 3001, ack: P + 2 });
  });

  await t.step("unacceptable pure ACKs are answered at most every 500 ms", () => {
    const h = new Harness();
    const { iss } = h.open();
    for (let i = 0; i < 20; i++) h.send({ flags: "A", seq: P - 5000, ack: iss + 1 }, 100 + i);
    assert.equal(h.out.length, 1);
    h.send({ flags: "A", seq: P - 5000, ack: iss + 1 }, 700);
    assert.equal(h.out.length, 2);
    // Old data is always answered.
    h.send({ flags: "A", seq: P - 5000, ack: iss + 1, data: "old" }, 701);
    assert.equal(h.out.length, 3);
  });
});

Deno.test("loss recovery details", async (t) => {
  await t.step("Eifel: an ACK echoing the original's TSval undoes the recovery", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000, sackPerm: true, ts: [1, 0] }, [2, 0]);
    const w = conn.writable.getWriter();
    await w.write(filler(988 * 5));
    h.poll(0);
    const firstTs = h.out[0].tsVal;
    h.out.length = 0;
    const cwndBefore = stats(conn).cwnd;
    const s = (a: number, b: number): [number, number] => [iss + 1 + 988 * a, iss + 1 + 988 * b];
    h.send({ flags: "A", seq: P, ack: iss + 1, ts: [3, firstTs], sack: [s(1, 2)] }, 10);
    h.send({ flags: "A", seq: P, ack: iss + 1, ts: [3, firstTs], sack: [s(1, 3)] }, 11);
    h.send({ flags: "A", seq: P, ack: iss + 1, ts: [3, firstTs], sack: [s(1, 4)] }, 12);
    h.expect({ flags: "A", seq: iss + 1, data: filler(988) }); // fast retransmit
    assert.ok(stats(conn).cwnd < cwndBefore);
    // The original was only late: the cumulative ACK echoes its TSval.
    h.send({ flags: "A", seq: P, ack: iss + 1 + 988 * 5, ts: [4, firstTs] }, 15);
    assert.equal(stats(conn).spuriousRecoveries, 1);
    assert.ok(stats(conn).cwnd >= cwndBefore);
  });

  await t.step(
    "Karn's rule for timestamps: no RTT sample from an echo older than the retransmission",
    async () => {
      const h = new Harness();
      const { conn, iss } = h.open({ mss: 1000, ts: [1, 0] }, [2, 0]);
      const w = conn.writable.getWriter();
      await w.write(filler(100));
      h.poll(0);
      const firstTs = h.expect({ flags: "PA", seq: iss + 1 }).tsVal;
      h.poll(1000);
      h.expect({ flags: "PA", seq: iss + 1 });
      // The receiver echoes the first transmission's TSval (it ignores duplicates' TSval).
      h.send({ flags: "A", seq: P, ack: iss + 101, ts: [5, firstTs] }, 1010);
      assert.equal(stats(conn).srtt, 0);
      assert.equal(stats(conn).rto, 1000);
    },
  );

  await t.step("a lost retransmission is detected from later SACKs (no RTO)", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000, sackPerm: true });
    const w = conn.writable.getWriter();
    await w.write(filler(40_000));
    h.poll(0);
    let highest = iss + 1; // end of what we sent
    const take = () => {
      let first = 0;
      for (const seg of h.out) {
        if (seg.seq === iss + 1 && seg.payload.length > 0) first++;
        highest = Math.max(highest, seg.seq + seg.payload.length);
      }
      h.out.length = 0;
      return first;
    };
    take();
    // Segment 0 is lost, and so is its first retransmission; everything else arrives.
    let rexmits = 0, now = 10;
    for (let i = 0; i < 60 && rexmits < 2; i++, now++) {
      h.send({ flags: "A", seq: P, ack: iss + 1, sack: [[iss + 1001, highest]] }, now);
      rexmits += take();
    }
    assert.equal(rexmits, 2, "segment 0 sent again without waiting for the RTO");
    assert.ok(now < 200);
    assert.equal(stats(conn).timeouts, 0);
  });

  await t.step("after a timeout, SACKed segments are not sent again", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000, sackPerm: true });
    const w = conn.writable.getWriter();
    const d = filler(5000);
    await w.write(d);
    h.poll(0);
    h.out.length = 0;
    const s = (a: number, b: number): [number, number] => [iss + 1 + 1000 * a, iss + 1 + 1000 * b];
    h.send({ flags: "A", seq: P, ack: iss + 1, sack: [s(3, 4)] }, 10);
    h.send({ flags: "A", seq: P, ack: iss + 1, sack: [s(3, 5)] }, 11);
    h.expectNothing(); // 2 duplicate ACKs, 2 SACKed segments: no fast retransmit yet
    h.poll(1000); // RTO
    h.expect({ flags: "A", seq: iss + 1, data: d.subarray(0, 1000) });
    h.expectNothing();
    h.send({ flags: "A", seq: P, ack: iss + 1001, sack: [s(3, 5)] }, 1010);
    h.expect({ flags: "A", seq: iss + 1001, data: d.subarray(1000, 2000) });
    h.expect({ flags: "A", seq: iss + 2001, data: d.subarray(2000, 3000) });
    h.expectNothing();
    h.send({ flags: "A", seq: P, ack: iss + 5001 }, 1020);
    assert.equal(stats(conn).retransmits, 3);
    assert.equal(stats(conn).fastRecoveries, 0);
  });
});

Deno.test("segments built in the host's buffer equal those built in their own", async () => {
  // One script (handshake with timestamps and SACK, data both ways, a hole
  // the peer SACKs, out-of-order data we SACK, FIN) on two layers: one whose
  // host offers a segment buffer full of stale bytes, one whose does not.
  const run = async (inPlace: boolean) => {
    const h = new Harness({}, { inPlace });
    const { conn, iss } = h.open({ sackPerm: true, ts: [100, 0], mss: 1000 }, [101, 1]);
    const w = conn.writable.getWriter();
    const d = filler(4000, 5);
    void w.write(d);
    await settle();
    h.poll(1);
    h.send(
      { flags: "A", seq: P, ack: iss + 1001, ts: [102, 1], sack: [[iss + 2001, iss + 3001]] },
      2,
    );
    h.send({ flags: "A", seq: P + 500, ack: iss + 1001, ts: [103, 2], data: filler(300, 1) }, 3);
    h.send({ flags: "A", seq: P, ack: iss + 4001, ts: [104, 2], data: filler(500, 2) }, 4);
    await w.close();
    await settle();
    h.poll(50);
    h.send({ flags: "FA", seq: P + 800, ack: iss + 4002, ts: [105, 50] }, 60);
    return { trace: h.trace, payloads: h.out.map((r) => [...r.payload]), inPlace: h.inPlace };
  };
  const own = await run(false);
  const built = await run(true);
  assert.equal(own.inPlace, 0);
  assert.ok(built.inPlace >= 6, `segments built in place: ${built.inPlace}`);
  assert.deepEqual(built.trace, own.trace);
  assert.deepEqual(built.payloads, own.payloads);
});

Deno.test("streams first used after the connection moved on", async (t) => {
  // The streams are made on first use: what happened before must show.
  await t.step("data and FIN before: the data, then the end", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    h.send({ flags: "PA", seq: P, ack: iss + 1, data: filler(300, 4) }, 1);
    h.send({ flags: "FA", seq: P + 300, ack: iss + 1 }, 2);
    const reader = conn.readable.getReader();
    assert.deepEqual(await readBytes(reader, 300), filler(300, 4));
    assert.equal((await reader.read()).done, true);
    assert.equal(conn.readable, conn.readable, "one stream per connection");
  });

  await t.step("FIN without data before: the readable is already done", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    h.send({ flags: "FA", seq: P, ack: iss + 1 }, 1);
    assert.equal((await conn.readable.getReader().read()).done, true);
    // Our side can still send.
    const w = conn.writable.getWriter();
    await w.write(filler(10));
    h.poll(2);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 1 });
    h.expect({ flags: "PA", seq: iss + 1, data: filler(10) });
  });

  await t.step("RST before: both streams error with ECONNRESET", async () => {
    const h = new Harness();
    const { conn } = h.open();
    h.send({ flags: "R", seq: P }, 1);
    const reset = (e: unknown) => e instanceof TcpError && e.code === "ECONNRESET";
    await assert.rejects(conn.readable.getReader().read(), reset);
    await assert.rejects(conn.writable.getWriter().write(filler(1)), reset);
  });

  await t.step("close() before: the writable is errored, FIN goes out", async () => {
    const h = new Harness();
    const { conn, iss } = h.open();
    conn.close();
    h.poll(1);
    h.expect({ flags: "FA", seq: iss + 1, ack: P });
    await assert.rejects(conn.writable.getWriter().write(filler(1)), TypeError);
  });
});

Deno.test("BBR and the peer's window", async (t) => {
  /**
   * Sends over a path of 1,000 B/ms (8 Mbit/s) and 50 ms, no loss, whose
   * receiver advertises `win` bytes, and returns the congestion state after
   * `ms` and the bytes ACKed by then.
   */
  async function run(win: number, ms: number): Promise<{ state: string; acked: number }> {
    const h = new Harness({
      congestionControl: "bbr",
      sendBuffer: 1 << 22,
      maxSendBuffer: 1 << 22,
    });
    // Window scaling (×128): the ACKs carry win / 128.
    const { conn, iss } = h.open({ mss: 1000, ws: 7 });
    const field = Math.min(65535, Math.ceil(win / 128));
    const w = conn.writable.getWriter();
    w.write(filler(4 << 20)).catch(() => {});
    await settle();
    const inFlight: { end: number; ackAt: number }[] = [];
    let acked = iss + 1;
    let departure = 0; // when the bottleneck is free again
    for (let now = 1; now <= ms; now++) {
      h.poll(now);
      for (const seg of h.out.splice(0)) {
        const len = seg.payload.length;
        if (len === 0) continue;
        departure = Math.max(departure, now) + len / 1000;
        inFlight.push({ end: seg.seq + len, ackAt: departure + 50 });
      }
      let ack = acked;
      while (inFlight.length > 0 && inFlight[0].ackAt <= now) ack = inFlight.shift()!.end;
      if (ack !== acked) {
        acked = ack;
        h.send({ flags: "A", seq: P, ack, win: field }, now);
      }
      if (now % 10 === 0) await settle();
    }
    return { state: stats(conn).congestionState, acked: acked - iss - 1 };
  }

  await t.step("a window below the path's rate is not taken for a full pipe", async () => {
    // 32 KB per 50 ms (640 B/ms): the rate stays flat round after round
    // because of the receiver. Those samples are application-limited, so
    // Startup goes on, ready to grow when the window opens.
    const limited = await run(32_000, 1500);
    assert.equal(limited.state, "startup");
    assert.ok(limited.acked > 500_000, `${limited.acked} bytes`);
  });

  await t.step("the path's own rate still ends Startup", async () => {
    // A window that does not limit: the bottleneck's 1,000 B/ms does.
    const open = await run(5_000_000, 1500);
    assert.notEqual(open.state, "startup");
  });
});
