import assert from "node:assert/strict";
import {
  Harness,
  LOCAL,
  LPORT,
  PEER_ISS,
  readBytes,
  REMOTE,
  RPORT,
  settle,
} from "./test_helpers.ts";
import { TcpError } from "./connection.ts";

Deno.test("handshake options", async (t) => {
  await t.step("no options: SYN-ACK carries only our MSS; peer MSS defaults to 536", async () => {
    const h = new Harness();
    h.send({ flags: "S", seq: PEER_ISS, win: 8192 });
    const sa = h.expect({ flags: "SA", seq: h.out[0]?.seq ?? 0, ack: PEER_ISS + 1, mss: 1380 });
    assert.equal(sa.windowScale, -1);
    assert.equal(sa.sackPermitted, false);
    assert.equal(sa.hasTimestamp, false);
    const iss = sa.seq;
    h.send({ flags: "A", seq: PEER_ISS + 1, ack: iss + 1, win: 8192 });
    const conn = h.accepted[0];
    const w = conn.writable.getWriter();
    await w.write(new Uint8Array(1000));
    h.poll(0);
    h.expect({ flags: "A", seq: iss + 1, ack: PEER_ISS + 1, data: new Uint8Array(536) });
    h.expect({ flags: "PA", seq: iss + 537, ack: PEER_ISS + 1, data: new Uint8Array(464) });
    h.expectNothing();
  });

  await t.step("all options: wscale, SACK-permitted and timestamps echoed", () => {
    const h = new Harness();
    h.send({ flags: "S", seq: PEER_ISS, mss: 1460, ws: 5, sackPerm: true, ts: [500, 0] });
    const sa = h.expect({
      flags: "SA",
      seq: h.out[0]?.seq ?? 0,
      ack: PEER_ISS + 1,
      mss: 1380,
      ws: 7,
      sackPerm: true,
      ts: [-1, 500],
    });
    assert.equal(sa.window, 65535);
  });

  for (
    const [name, opt, check] of [
      ["MSS only", { mss: 1000 }, { ws: -1, sackPerm: false }],
      ["wscale only", { ws: 2 }, { ws: 7, sackPerm: false }],
      ["SACK-permitted only", { sackPerm: true }, { ws: -1, sackPerm: true }],
      ["timestamps only", { ts: [9, 0] as [number, number] }, {
        ws: -1,
        ts: [-1, 9] as [number, number],
      }],
    ] as const
  ) {
    await t.step(`${name}: answered with exactly what was offered`, () => {
      const h = new Harness();
      h.send({ flags: "S", seq: PEER_ISS, ...opt });
      const sa = h.expect({ flags: "SA", seq: h.out[0]?.seq ?? 0, ack: PEER_ISS + 1, ...check });
      if (!("ts" in opt)) assert.equal(sa.hasTimestamp, false);
    });
  }

  await t.step("MSS clamping: we never send more than the peer's MSS", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 700 });
    const w = conn.writable.getWriter();
    await w.write(new Uint8Array(1500));
    h.poll(1);
    h.expect({ flags: "A", seq: iss + 1, data: new Uint8Array(700) });
    h.expect({ flags: "A", seq: iss + 701, data: new Uint8Array(700) });
    h.expect({ flags: "PA", seq: iss + 1401, data: new Uint8Array(100) });
  });

  await t.step("our MSS from the MTU: 1420 − 40 for IPv4", () => {
    const h = new Harness({ mtu: 1500 });
    h.send({ flags: "S", seq: PEER_ISS });
    h.expect({ flags: "SA", seq: h.out[0]?.seq ?? 0, mss: 1460 });
  });

  await t.step(
    "timestamps: data segments carry TSval/TSecr; MSS minus 12 bytes of payload",
    async () => {
      const h = new Harness();
      const { conn, iss } = h.open({ mss: 1000, ts: [100, 0] }, [101, 0]);
      const w = conn.writable.getWriter();
      await w.write(new Uint8Array(1000));
      h.poll(5);
      h.expect({ flags: "A", seq: iss + 1, ts: [-1, 101], data: new Uint8Array(988) });
      h.expect({ flags: "PA", seq: iss + 989, data: new Uint8Array(12) });
    },
  );

  await t.step("retransmitted SYN while SYN_RECEIVED → SYN-ACK again", () => {
    const h = new Harness();
    h.send({ flags: "S", seq: PEER_ISS });
    const sa = h.expect({ flags: "SA", seq: h.out[0]?.seq ?? 0, ack: PEER_ISS + 1 });
    h.send({ flags: "S", seq: PEER_ISS }, 500);
    h.expect({ flags: "SA", seq: sa.seq, ack: PEER_ISS + 1 });
    assert.equal(h.syns.length, 1);
  });

  await t.step("SYN-ACK retransmitted on RTO (1 s, then 2 s)", () => {
    const h = new Harness();
    h.send({ flags: "S", seq: PEER_ISS });
    const sa = h.expect({ flags: "SA", seq: h.out[0]?.seq ?? 0 });
    assert.equal(h.layer.nextDeadline(), 1000);
    h.poll(999);
    h.expectNothing();
    h.poll(1000);
    h.expect({ flags: "SA", seq: sa.seq, ack: PEER_ISS + 1 });
    assert.equal(h.layer.nextDeadline(), 3000);
  });

  await t.step("bad ACK in SYN_RECEIVED → RST", () => {
    const h = new Harness();
    h.send({ flags: "S", seq: PEER_ISS });
    const sa = h.expect({ flags: "SA", seq: h.out[0]?.seq ?? 0 });
    h.send({ flags: "A", seq: PEER_ISS + 1, ack: sa.seq }); // does not cover our SYN
    h.expect({ flags: "R", seq: sa.seq });
  });
});

Deno.test("active open", async (t) => {
  const tuple = { localAddress: LOCAL, localPort: LPORT, remoteAddress: REMOTE, remotePort: RPORT };

  await t.step("connect → SYN with all options; SYN-ACK → ACK and data flows", async () => {
    const h = new Harness();
    const conn = h.layer.connect(tuple, 0);
    const w = conn.writable.getWriter();
    const wrote = w.write(new TextEncoder().encode("hello"));
    await wrote;
    h.poll(0);
    const syn = h.expect({ flags: "S", seq: h.out[0]?.seq ?? 0, mss: 1380, ws: 7, sackPerm: true });
    assert.ok(syn.hasTimestamp);
    h.expectNothing();
    const iss = syn.seq;
    h.send({
      flags: "SA",
      seq: 5000,
      ack: iss + 1,
      win: 1000,
      mss: 1400,
      ws: 0,
      sackPerm: true,
      ts: [77, syn.tsVal],
    }, 10);
    // The queued data carries the ACK of the SYN-ACK.
    h.expect({ flags: "PA", seq: iss + 1, ack: 5001, ts: [-1, 77], data: "hello" });
    h.expectNothing();
    const stats = (conn as unknown as { stats: { srtt: number; state: string } }).stats;
    assert.equal(stats.state, "ESTABLISHED");
    assert.equal(stats.srtt, 10);
  });

  await t.step("connect to a refusing peer: RST → readable errors with ECONNREFUSED", async () => {
    const h = new Harness();
    const conn = h.layer.connect(tuple, 0);
    const syn = h.expect({ flags: "S", seq: h.out[0]?.seq ?? 0 });
    h.send({ flags: "RA", seq: 0, ack: syn.seq + 1 }, 1);
    const reader = conn.readable.getReader();
    await assert.rejects(
      reader.read(),
      (e: unknown) => e instanceof TcpError && e.code === "ECONNREFUSED",
    );
    await conn.closed;
    assert.equal(h.layer.stats.connections, 0);
  });

  await t.step("RST with a bad ACK in SYN_SENT is ignored", () => {
    const h = new Harness();
    h.layer.connect(tuple, 0);
    const syn = h.expect({ flags: "S", seq: h.out[0]?.seq ?? 0 });
    h.send({ flags: "RA", seq: 0, ack: syn.seq + 5 }, 1);
    h.expectNothing();
    assert.equal(h.layer.stats.connections, 1);
  });

  await t.step("SYN retransmitted with backoff, then ETIMEDOUT", async () => {
    const h = new Harness({ synRetries: 2 });
    const conn = h.layer.connect(tuple, 0);
    const syn = h.expect({ flags: "S", seq: h.out[0]?.seq ?? 0 });
    h.poll(1000);
    h.expect({ flags: "S", seq: syn.seq });
    h.poll(3000);
    h.expect({ flags: "S", seq: syn.seq });
    h.poll(7000);
    h.expectNothing();
    const reader = conn.readable.getReader();
    await assert.rejects(
      reader.read(),
      (e: unknown) => e instanceof TcpError && e.code === "ETIMEDOUT",
    );
  });

  await t.step("simultaneous open: SYN crosses SYN → SYN-ACK → ESTABLISHED", async () => {
    const h = new Harness();
    const conn = h.layer.connect(tuple, 0);
    const syn = h.expect({ flags: "S", seq: h.out[0]?.seq ?? 0 });
    const iss = syn.seq;
    h.send({ flags: "S", seq: 7000, mss: 1000 }, 1);
    h.expect({ flags: "SA", seq: iss, ack: 7001 });
    // The peer's SYN-ACK (its answer to our SYN).
    h.send({ flags: "SA", seq: 7000, ack: iss + 1 }, 2);
    const stats = (conn as unknown as { stats: { state: string } }).stats;
    assert.equal(stats.state, "ESTABLISHED");
    h.send({ flags: "PA", seq: 7001, ack: iss + 1, data: "hi" }, 3);
    const r = conn.readable.getReader();
    assert.deepEqual(await readBytes(r, 2), new TextEncoder().encode("hi"));
    await settle();
  });
});
