import assert from "node:assert/strict";
import type { Connection } from "./connection.ts";
import { filler, Harness, PEER_ISS } from "./test_helpers.ts";
import { LossRecovery, newAckResult } from "./recovery.ts";

const P = PEER_ISS + 1; // the peer's first data byte

function stats(c: unknown) {
  return (c as Connection).stats;
}

/** Opens a SACK connection (MSS 1000) and sends `n` full segments at t = 0. */
async function sending(n: number, syn: Record<string, unknown> = {}, extra = 0) {
  const h = new Harness();
  const { conn, iss } = h.open({ mss: 1000, sackPerm: true, ...syn });
  const w = conn.writable.getWriter();
  await w.write(filler(n * 1000 + extra));
  h.poll(0);
  const sent = h.out.splice(0);
  return { h, conn, iss, w, sent };
}

/** Sequence number of our segment `i` (0-based). */
const seg = (iss: number, i: number) => iss + 1 + 1000 * i;

/** Payload of a segment with the timestamp option (MSS 1000). */
const TMSS = 988;
const tseg = (iss: number, i: number) => iss + 1 + TMSS * i;

/**
 * A SACK connection with timestamps (MSS 1000) and `cc`, its initial
 * window (segments 0–9) sent by t = 10; `send(n, at, sack)` acknowledges
 * the first `n` segments at `at`, echoing the first segment's TSval.
 */
async function timed(cc: "cubic" | "bbr") {
  const h = new Harness({ congestionControl: cc });
  const { conn, iss } = h.open({ mss: 1000, sackPerm: true, ts: [500, 0] }, [501, 0]);
  const w = conn.writable.getWriter();
  await w.write(filler(10 * TMSS));
  for (let t = 0; t <= 10; t++) h.poll(t); // BBR paces them
  const sent = h.out.splice(0);
  assert.equal(sent.length, 10);
  const ts0 = sent[0].tsVal;
  let tsPeer = 600;
  const send = (n: number, at: number, sack?: [number, number][], echo = ts0) =>
    h.send({ flags: "A", seq: P, ack: tseg(iss, n), ts: [tsPeer++, echo], sack }, at);
  return { h, conn, iss, w, send };
}

Deno.test("RACK-TLP (RFC 8985)", async (t) => {
  await t.step("reordering within reo_wnd causes no retransmission", async () => {
    const { h, conn, iss } = await sending(6);
    // RTT 10 ms: segment 0 is acknowledged at t = 10 (min_RTT = 10, reo_wnd = 2.5 ms).
    h.send({ flags: "A", seq: P, ack: seg(iss, 1) }, 10);
    // Segment 2 arrives before segment 1 (reordering).
    h.send({ flags: "A", seq: P, ack: seg(iss, 1), sack: [[seg(iss, 2), seg(iss, 3)]] }, 11);
    h.expectNothing();
    // RACK's reordering timer is armed for xmit_ts + RACK.rtt + reo_wnd.
    assert.equal(h.layer.nextDeadline(), 0 + 11 + 2.5);
    // Segment 1 arrives 1 ms later: no retransmission, no recovery.
    h.send({ flags: "A", seq: P, ack: seg(iss, 3) }, 12);
    h.poll(14);
    h.expectNothing();
    assert.equal(stats(conn).retransmits, 0);
    assert.equal(stats(conn).fastRecoveries, 0);
  });

  await t.step("a segment is marked lost only once reo_wnd has passed", async () => {
    const { h, conn, iss } = await sending(6);
    h.send({ flags: "A", seq: P, ack: seg(iss, 1) }, 10);
    h.send({ flags: "A", seq: P, ack: seg(iss, 1), sack: [[seg(iss, 2), seg(iss, 3)]] }, 11);
    h.expectNothing();
    h.poll(13);
    h.expectNothing();
    h.poll(13.5);
    h.expect({ flags: "A", seq: seg(iss, 1), data: filler(6000).subarray(1000, 2000) });
    assert.equal(stats(conn).fastRecoveries, 1);
    assert.equal(stats(conn).timeouts, 0);
  });

  await t.step("three SACKed segments beyond a hole mark it lost at once", async () => {
    const { h, iss } = await sending(8);
    h.send({ flags: "A", seq: P, ack: seg(iss, 1) }, 10);
    h.send({ flags: "A", seq: P, ack: seg(iss, 1), sack: [[seg(iss, 2), seg(iss, 5)]] }, 11);
    // No reordering seen yet and 3 segments SACKed: reo_wnd = 0 (RFC 8985 §6.2 step 4).
    h.expect({ flags: "A", seq: seg(iss, 1) });
  });

  await t.step("a tail loss is recovered by the probe, without an RTO", async () => {
    const { h, conn, iss } = await sending(4);
    h.send({ flags: "A", seq: P, ack: seg(iss, 2) }, 10);
    // Segments 2 and 3 (the tail) are lost. PTO = 2·SRTT, far below the RTO.
    h.expectNothing();
    const pto = h.layer.nextDeadline();
    assert.equal(pto, 10 + 2 * 10);
    h.poll(pto);
    // Nothing new to send: the last segment goes again as the probe.
    h.expect({ flags: "PA", seq: seg(iss, 3), data: filler(4000).subarray(3000) });
    // Its SACK lets RACK find segment 2 lost.
    h.send({ flags: "A", seq: P, ack: seg(iss, 2), sack: [[seg(iss, 3), seg(iss, 4)]] }, pto + 10);
    h.expect({ flags: "A", seq: seg(iss, 2), data: filler(4000).subarray(2000, 3000) });
    h.send({ flags: "A", seq: P, ack: seg(iss, 4) }, pto + 20);
    assert.equal(stats(conn).timeouts, 0);
    assert.equal(stats(conn).tailLossProbes, 1);
    assert.equal(h.layer.nextDeadline(), Infinity);
  });

  await t.step(
    "in recovery, a lost retransmission nothing later can reveal goes again after a PTO, not the RTO",
    async () => {
      const { h, conn, iss } = await sending(6);
      h.send({ flags: "A", seq: P, ack: seg(iss, 1) }, 10);
      // Segments 2–5 arrive, segment 1 does not: it is sent again at once.
      h.send({ flags: "A", seq: P, ack: seg(iss, 1), sack: [[seg(iss, 2), seg(iss, 6)]] }, 11);
      h.expect({ flags: "A", seq: seg(iss, 1), data: filler(6000).subarray(1000, 2000) });
      // That retransmission is lost too, and everything after it was SACKed
      // already: RACK has nothing newer to compare with. The recovery probe
      // sends it again a PTO (2·SRTT) after it went, long before the RTO.
      h.expectNothing();
      const due = 11 + 2 * 10;
      assert.ok(h.layer.nextDeadline() <= due);
      h.poll(due - 0.5);
      h.expectNothing();
      assert.equal(h.layer.nextDeadline(), due);
      h.poll(due);
      h.expect({ flags: "A", seq: seg(iss, 1), data: filler(6000).subarray(1000, 2000) });
      h.send({ flags: "A", seq: P, ack: seg(iss, 6) }, due + 10);
      assert.equal(stats(conn).timeouts, 0);
      assert.equal(stats(conn).tailLossProbes, 1);
      assert.equal(stats(conn).retransmits, 2);
      assert.equal(h.layer.nextDeadline(), Infinity);
    },
  );

  await t.step("with one segment out, the probe waits for a delayed ACK too", async () => {
    const { h, iss } = await sending(2);
    h.send({ flags: "A", seq: P, ack: seg(iss, 1) }, 10);
    // PTO = 2·SRTT + 200 ms (worst-case delayed ACK), capped at the RTO.
    assert.equal(h.layer.nextDeadline(), Math.min(10 + 2 * 10 + 200, 10 + (10 + 200)));
  });

  await t.step("the probe sends new data when there is some", async () => {
    // 14 segments of data; the initial window lets 10 go.
    const { h, iss, sent } = await sending(14);
    assert.equal(sent.length, 10);
    // The first ACK grows the window by one segment: segments 10 and 11 go.
    h.send({ flags: "A", seq: P, ack: seg(iss, 1) }, 10);
    assert.deepEqual(h.out.splice(0).map((r) => r.seq), [seg(iss, 10), seg(iss, 11)]);
    // Then silence: the probe is the next new segment, not a retransmission.
    const pto = h.layer.nextDeadline();
    assert.equal(pto, 10 + 2 * 10);
    h.poll(pto);
    const probe = h.expect({ flags: "A", seq: seg(iss, 12) });
    assert.equal(probe.payload.length, 1000);
    h.expectNothing();
  });
});

Deno.test("DSACK and undo", async (t) => {
  await t.step("DSACK for the retransmission undoes the reduction and widens reo_wnd", async () => {
    const { h, conn, iss } = await sending(8);
    h.send({ flags: "A", seq: P, ack: seg(iss, 1) }, 10);
    const cwndBefore = stats(conn).cwnd;
    h.send({ flags: "A", seq: P, ack: seg(iss, 1), sack: [[seg(iss, 2), seg(iss, 5)]] }, 11);
    h.expect({ flags: "A", seq: seg(iss, 1) });
    assert.ok(stats(conn).cwnd < cwndBefore, "recovery reduced the window");
    assert.equal(stats(conn).reorderingWindowMultiplier, 1);
    // The original segment 1 was only late: the peer gets it twice and says so.
    h.send({ flags: "A", seq: P, ack: seg(iss, 5) }, 12);
    h.send({
      flags: "A",
      seq: P,
      ack: seg(iss, 5),
      sack: [[seg(iss, 1), seg(iss, 2)]],
    }, 21);
    const st = stats(conn);
    assert.equal(st.spuriousRetransmits, 1);
    assert.equal(st.spuriousRecoveries, 1);
    assert.ok(st.cwnd >= cwndBefore, `cwnd ${st.cwnd} restored to ≥ ${cwndBefore}`);
    assert.equal(st.reorderingWindowMultiplier, 2);
  });

  await t.step("a timeout resends the head at once; what went within RACK.rtt waits", async () => {
    // With timestamps (without them F-RTO judges a first timeout).
    const { h, conn, iss, w, send } = await timed("cubic");
    // Segment 0 is acknowledged at t = 100 (RTT 100); nothing more comes back.
    send(1, 100);
    h.expectNothing();
    // The tail loss probe resends segment 9 at 2·SRTT.
    h.poll(h.layer.nextDeadline());
    h.expect({ flags: "PA", seq: tseg(iss, 9) });
    // Just before the RTO the application writes two more: they go.
    const rto = h.layer.nextDeadline();
    await w.write(filler(2 * TMSS));
    h.poll(rto - 20);
    assert.deepEqual(h.out.splice(0).map((s) => s.seq), [tseg(iss, 10), tseg(iss, 11)]);
    // The RTO: segments 1–9 are lost, 10 and 11 (20 ms old, RACK.rtt 100)
    // may be on their way. Segment 1 goes at once although 10 and 11 fill
    // the window of one segment.
    h.poll(rto);
    assert.equal(stats(conn).timeouts, 1);
    const resent = h.expect({ flags: "A", seq: tseg(iss, 1) });
    h.expectNothing();
    // A SACK of 10 and 11 (they were on their way), then the ACK of 1
    // (echoing its retransmission: the timeout was real): slow start
    // resends 2 and 3, never 10 or 11.
    send(1, rto + 5, [[tseg(iss, 10), tseg(iss, 12)]]);
    h.expectNothing();
    send(2, rto + 100, [[tseg(iss, 10), tseg(iss, 12)]], resent.tsVal);
    assert.deepEqual(h.out.splice(0).map((s) => (s.seq - tseg(iss, 0)) / TMSS), [2, 3]);
    assert.equal(stats(conn).retransmits, 4); // the probe, 1, 2, 3
  });

  await t.step(
    "without SACK a timeout still marks the whole flight (no RACK to judge it)",
    async () => {
      const h = new Harness();
      const { conn, iss } = h.open({ mss: 1000, ts: [500, 0] }, [501, 0]);
      const w = conn.writable.getWriter();
      await w.write(filler(10 * TMSS));
      h.poll(0);
      assert.equal(h.out.splice(0).length, 10);
      const ack = (n: number, at: number, echo: number) =>
        h.send({ flags: "A", seq: P, ack: tseg(iss, n), ts: [600 + n, echo] }, at);
      ack(1, 100, 500);
      h.expectNothing();
      // Just before the RTO two more segments go.
      const rto = h.layer.nextDeadline();
      await w.write(filler(2 * TMSS));
      h.poll(rto - 20);
      assert.deepEqual(h.out.splice(0).map((s) => s.seq), [tseg(iss, 10), tseg(iss, 11)]);
      h.poll(rto);
      const resent = h.expect({ flags: "A", seq: tseg(iss, 1) });
      // Cumulative ACKs of the resent segments (echoing them: the timeout was
      // real) walk through the flight in slow start, 10 and 11 included.
      const order: number[] = [];
      let next = 2;
      let at = rto;
      let echo = resent.tsVal;
      while (next <= 11 && at < rto + 5000) {
        at += 100;
        ack(next, at, echo);
        for (const s of h.out.splice(0)) {
          order.push((s.seq - tseg(iss, 0)) / TMSS);
          echo = s.tsVal;
        }
        next = Math.max(next, ...order) + 1;
      }
      assert.deepEqual(order, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    },
  );

  await t.step("BBR after a timeout: cwnd = what is still in flight + 1 segment", async () => {
    const { h, conn, iss, w, send } = await timed("bbr");
    send(1, 100);
    h.poll(h.layer.nextDeadline()); // the tail loss probe
    h.out.splice(0);
    const rto = h.layer.nextDeadline();
    await w.write(filler(2 * TMSS));
    for (let t = rto - 25; t < rto - 15; t++) h.poll(t);
    assert.deepEqual(h.out.splice(0).map((s) => s.seq), [tseg(iss, 10), tseg(iss, 11)]);
    h.poll(rto);
    assert.equal(stats(conn).timeouts, 1);
    h.expect({ flags: "A", seq: tseg(iss, 1) });
    // OnEnterRTO: C.inflight (10 and 11, not marked lost) + 1 SMSS.
    assert.equal(stats(conn).cwnd, 3 * TMSS);
  });

  await t.step("a spurious timeout is undone by timestamps (Eifel, RFC 4015)", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000, sackPerm: true, ts: [500, 0] }, [501, 0]);
    const w = conn.writable.getWriter();
    await w.write(filler(4 * 988)); // MSS 1000 less the timestamp option
    h.poll(0);
    const first = h.out.splice(0);
    assert.equal(first.length, 4);
    const tsOriginal = first[0].tsVal;
    const cwndBefore = stats(conn).cwnd;
    // No ACK for a long time (a delay spike), then the RTO fires.
    const rto = h.layer.nextDeadline();
    h.poll(rto);
    const rexmit = h.expect({ flags: "A", seq: seg(iss, 0) });
    assert.ok(rexmit.tsVal > tsOriginal);
    assert.equal(stats(conn).timeouts, 1);
    // The ACK of the delayed originals echoes the original TSval: spurious.
    h.send({ flags: "A", seq: P, ack: iss + 1 + 4 * 988, ts: [600, tsOriginal] }, rto + 5);
    const st = stats(conn);
    assert.equal(st.spuriousRecoveries, 1);
    assert.ok(st.cwnd >= cwndBefore, `cwnd ${st.cwnd} restored to ≥ ${cwndBefore}`);
  });

  await t.step("as receiver: a duplicate segment is reported in the first SACK block", () => {
    const h = new Harness();
    const { iss } = h.open({ mss: 1000, sackPerm: true });
    h.send({ flags: "A", seq: P, ack: iss + 1, data: filler(1000) }, 1);
    h.send({ flags: "A", seq: P + 1000, ack: iss + 1, data: filler(1000) }, 1);
    h.expect({ flags: "A", ack: P + 2000, seq: iss + 1 });
    // The same first segment again (a spurious retransmission by the peer).
    h.send({ flags: "A", seq: P, ack: iss + 1, data: filler(1000) }, 2);
    h.expect({ flags: "A", seq: iss + 1, ack: P + 2000, sack: [[P, P + 1000]] });
    // Out of order, then a duplicate of it: DSACK first, then the SACK block.
    h.send({ flags: "A", seq: P + 3000, ack: iss + 1, data: filler(500) }, 3);
    h.expect({ flags: "A", seq: iss + 1, sack: [[P + 3000, P + 3500]] });
    h.send({ flags: "A", seq: P + 3000, ack: iss + 1, data: filler(500) }, 4);
    h.expect({
      flags: "A",
      seq: iss + 1,
      sack: [[P + 3000, P + 3500], [P + 3000, P + 3500]],
    });
  });

  await t.step("without SACK, a spurious recovery raises the duplicate-ACK threshold", async () => {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000, ts: [500, 0] }, [501, 0]);
    const w = conn.writable.getWriter();
    await w.write(filler(8000));
    h.poll(0);
    const sent = h.out.splice(0);
    const ts0 = sent[0].tsVal;
    assert.equal(stats(conn).dupAckThreshold, 3);
    h.send({ flags: "A", seq: P, ack: seg(iss, 1), ts: [600, ts0] }, 10);
    for (let i = 0; i < 4; i++) {
      h.send({ flags: "A", seq: P, ack: seg(iss, 1), ts: [600, ts0] }, 11 + i);
    }
    h.expect({ flags: "A", seq: seg(iss, 1) });
    // Segment 1 was only late: the ACK that covers it echoes the original's TSval.
    h.send({ flags: "A", seq: P, ack: seg(iss, 8), ts: [601, ts0] }, 16);
    assert.equal(stats(conn).spuriousRecoveries, 1);
    assert.ok(stats(conn).dupAckThreshold > 3);
  });
});

Deno.test("F-RTO (RFC 5682) without timestamps", async (t) => {
  /** 12 segments written, 10 sent (the initial window); then a timeout. */
  async function timedOut() {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000, sackPerm: true });
    const w = conn.writable.getWriter();
    await w.write(filler(12_000));
    h.poll(0);
    assert.equal(h.out.splice(0).length, 10);
    const rto = h.layer.nextDeadline();
    h.poll(rto);
    // Only the first segment is resent, not the whole window.
    h.expect({ flags: "A", seq: seg(iss, 0) });
    h.expectNothing();
    return { h, conn, iss, rto };
  }

  await t.step("a delay spike: two advancing ACKs undo the timeout", async () => {
    const { h, conn, iss, rto } = await timedOut();
    // The originals were only late: ACKs for them arrive.
    h.send({ flags: "A", seq: P, ack: seg(iss, 2) }, rto + 5);
    // Step 2b: two new segments instead of retransmissions.
    h.expect({ flags: "A", seq: seg(iss, 10) });
    h.expect({ flags: "PA", seq: seg(iss, 11) });
    h.send({ flags: "A", seq: P, ack: seg(iss, 4) }, rto + 6);
    const st = stats(conn);
    assert.equal(st.spuriousRecoveries, 1);
    assert.equal(st.retransmits, 1);
    assert.equal(st.congestionState, "open");
  });

  await t.step("a real loss: a duplicate ACK goes back to resending everything", async () => {
    const { h, conn, iss, rto } = await timedOut();
    h.send({ flags: "A", seq: P, ack: seg(iss, 1) }, rto + 5); // the retransmission arrived
    h.expect({ flags: "A", seq: seg(iss, 10) }); // step 2b probes
    h.expect({ flags: "PA", seq: seg(iss, 11) });
    h.send({ flags: "A", seq: P, ack: seg(iss, 1), sack: [[seg(iss, 10), seg(iss, 11)]] }, rto + 6);
    // Step 3a: conventional recovery resends what is outstanding.
    h.expect({ flags: "A", seq: seg(iss, 1) });
    assert.equal(stats(conn).spuriousRecoveries, 0);
    assert.equal(stats(conn).congestionState, "loss");
  });
});

Deno.test("reordered ACKs (PAWS)", async (t) => {
  /** A SACK + timestamps connection that sent 8 segments of 988 bytes at t = 0. */
  async function open() {
    const h = new Harness();
    const { conn, iss } = h.open({ mss: 1000, sackPerm: true, ts: [500, 0] }, [501, 0]);
    const w = conn.writable.getWriter();
    await w.write(filler(8 * 988));
    h.poll(0);
    const ts0 = h.out.splice(0)[0].tsVal;
    const at = (i: number) => iss + 1 + 988 * i;
    return { h, conn, at, ts0 };
  }

  await t.step("an overtaken duplicate ACK is not dropped by PAWS", async () => {
    const { h, conn, at, ts0 } = await open();
    h.send({ flags: "A", seq: P, ack: at(1), ts: [610, ts0] }, 10);
    // An older duplicate ACK (TSval 605 < 610) arrives late, SACKing 3 segments past a hole.
    h.send({ flags: "A", seq: P, ack: at(1), ts: [605, ts0], sack: [[at(2), at(5)]] }, 11);
    h.expect({ flags: "A", seq: at(1) });
    assert.equal(stats(conn).dropped, 0);
  });

  await t.step("the SACK blocks of an older ACK overtaken by a newer one still count", async () => {
    const { h, conn, at, ts0 } = await open();
    h.send({ flags: "A", seq: P, ack: at(2), ts: [610, ts0] }, 10);
    // Sent before the ACK above (ACK field lower), it arrives after it: PAWS
    // drops the segment, but its SACK blocks are news.
    h.send({ flags: "A", seq: P, ack: at(1), ts: [605, ts0], sack: [[at(3), at(6)]] }, 11);
    assert.equal(stats(conn).dropped, 1);
    h.expect({ flags: "A", seq: at(8), data: "" }); // the duplicate ACK PAWS answers with
    // Three segments SACKed past segment 2: RACK marks it lost on the next ACK.
    h.send({ flags: "A", seq: P, ack: at(2), ts: [611, ts0] }, 12);
    h.expect({ flags: "A", seq: at(2) });
  });

  await t.step("an old timestamp from long ago is still dropped", async () => {
    const { h, conn, at, ts0 } = await open();
    h.send({ flags: "A", seq: P, ack: at(1), ts: [100_000, ts0] }, 10);
    h.send({ flags: "A", seq: P, ack: at(1), ts: [1_000, ts0], sack: [[at(2), at(5)]] }, 11);
    assert.equal(stats(conn).dropped, 1);
    h.expect({ flags: "A", seq: at(8), data: "" }); // the duplicate ACK PAWS answers with
    h.expectNothing(); // no retransmission: the SACK blocks were not used
  });
});

Deno.test("PRR (RFC 6937) sends about ssthresh/RecoverFS of what is delivered", async () => {
  const { h, conn, iss } = await sending(20, {}, 0);
  // Slow start to a 20-segment window first.
  h.send({ flags: "A", seq: P, ack: seg(iss, 10) }, 10);
  h.out.length = 0;
  const flight = 10; // segments 10..19 outstanding
  h.send({ flags: "A", seq: P, ack: seg(iss, 10) }, 11);
  // Segment 10 is lost; 11..19 are SACKed one per ACK.
  let sent = 0;
  for (let i = 11; i < 10 + flight; i++) {
    h.send({ flags: "A", seq: P, ack: seg(iss, 10), sack: [[seg(iss, 11), seg(iss, i + 1)]] }, 12);
    sent += h.out.splice(0).length;
  }
  const st = stats(conn);
  assert.equal(st.fastRecoveries, 1);
  // CUBIC: ssthresh = 0.7·cwnd; PRR spreads that over the 9 deliveries (plus
  // the fast retransmit). With nothing new to send, only retransmissions go.
  assert.ok(sent >= 1 && sent <= Math.ceil(0.7 * flight) + 1, `${sent} segments sent`);
});

Deno.test("LossRecovery bookkeeping", async (t) => {
  await t.step("in flight = outstanding − SACKed − lost + retransmitted", () => {
    const lr = new LossRecovery({ sack: true });
    for (let i = 0; i < 5; i++) lr.sent(1000 * i, 1000 * (i + 1), false, 0);
    assert.equal(lr.inFlight, 5000);
    const res = newAckResult();
    lr.onAck(0, new Uint32Array([2000, 4000]), 1, 0, 5000, 10, res);
    assert.equal(res.delivered, 2000);
    assert.equal(lr.inFlight, 3000);
    const timer = [0];
    const lost = lr.detectLoss(10, 0, timer);
    assert.equal(lost, 2000); // segments 0 and 1 sent before the SACKed ones
    assert.equal(lr.inFlight, 1000);
    const rec = lr.nextLost()!;
    assert.equal(rec.start, 0);
    lr.retransmitted(rec, 11);
    assert.equal(lr.inFlight, 2000);
    lr.onAck(2000, new Uint32Array(0), 0, 0, 5000, 20, res);
    assert.equal(res.acked, 2000);
    assert.equal(lr.outBytes, 3000);
    assert.equal(lr.inFlight, 1000);
    lr.onAck(5000, new Uint32Array(0), 0, 2000, 5000, 21, res);
    assert.equal(lr.size, 0);
    assert.equal(lr.inFlight, 0);
    assert.equal(lr.lostPending, 0);
  });

  await t.step("a timeout marks the head, and others only once RACK.rtt + reo_wnd old", () => {
    const lr = new LossRecovery({ sack: true });
    const res = newAckResult();
    // Segment 0 at t = 0 is acknowledged at t = 50 (RACK.rtt 50); segments
    // 1–4 went at t = 0, 5–7 at t = 300, 8–9 at t = 380; 6 is SACKed.
    for (let i = 0; i < 5; i++) lr.sent(1000 * i, 1000 * (i + 1), false, 0);
    lr.onAck(1000, new Uint32Array(0), 0, 0, 5000, 50, res);
    for (let i = 5; i < 8; i++) lr.sent(1000 * i, 1000 * (i + 1), false, 300);
    for (let i = 8; i < 10; i++) lr.sent(1000 * i, 1000 * (i + 1), false, 380);
    lr.onAck(1000, new Uint32Array([6000, 7000]), 1, 1000, 10_000, 360, res);
    // (Reset by the SACK: segment 6 was delivered; RACK.rtt = 60.)
    assert.equal(lr.rackRtt, 60);
    // The timeout at t = 400 with reo_wnd 10: 1–5 and 7 (sent ≥ 70 ms ago)
    // are lost; 8 and 9 (20 ms old) may still be on their way.
    const lost = lr.markTimedOut(400, 10);
    assert.equal(lost, 6000);
    const order: number[] = [];
    for (let rec = lr.nextLost(); rec; rec = lr.nextLost()) {
      order.push(rec.start / 1000);
      lr.retransmitted(rec, 401);
    }
    assert.deepEqual(order, [1, 2, 3, 4, 5, 7]);
    assert.equal(lr.inFlight, 8000); // the six resent and 8, 9
    // A second step: the head alone is lost when everything is recent.
    const fresh = new LossRecovery({ sack: true });
    fresh.sent(0, 1000, false, 0);
    fresh.onAck(1000, new Uint32Array(0), 0, 0, 1000, 100, res);
    for (let i = 1; i < 3; i++) fresh.sent(1000 * i, 1000 * (i + 1), false, 120);
    assert.equal(fresh.markTimedOut(150, 0), 1000);
    assert.equal(fresh.nextLost()!.start, 1000);
  });

  await t.step("rate sample: bytes delivered over the sample interval", () => {
    const lr = new LossRecovery({ sack: true });
    const res = newAckResult();
    // 10 segments at t = 0, acknowledged one per ms from t = 20 (1000 B/ms).
    for (let i = 0; i < 10; i++) lr.sent(1000 * i, 1000 * (i + 1), false, 0);
    let rs = lr.rateSample(0);
    for (let i = 1; i <= 10; i++) {
      lr.onAck(1000 * i, new Uint32Array(0), 0, 1000 * (i - 1), 10_000, 19 + i, res);
      rs = lr.rateSample(0);
    }
    assert.equal(rs.totalDelivered, 10_000);
    assert.equal(rs.delivered, 10_000);
    assert.equal(rs.interval, 29);
    assert.ok(Math.abs(rs.deliveryRate - 10_000 / 29) < 1e-9);
    assert.equal(rs.rtt, 29);
  });
});
