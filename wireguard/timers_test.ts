import assert from "node:assert/strict";
import {
  INITIATION_MIN_INTERVAL,
  KEEPALIVE_TIMEOUT,
  MAX_TIMER_HANDSHAKES,
  PeerTimers,
  REJECT_AFTER_MESSAGES,
  REJECT_AFTER_TIME,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_TIME,
  REKEY_ATTEMPT_TIME,
  REKEY_ON_RECEIVE_AGE,
  REKEY_TIMEOUT,
  TimerAction,
  ZERO_KEYS_AFTER,
} from "./timers.ts";

/** Random bytes that are always `value` (jitter becomes predictable). */
const constant = (value: number) => (bytes: Uint8Array) => bytes.fill(value);

Deno.test("timers", async (t) => {
  await t.step("constants are the whitepaper's (§6)", () => {
    assert.equal(REKEY_AFTER_TIME, 120_000);
    assert.equal(REJECT_AFTER_TIME, 180_000);
    assert.equal(REKEY_ATTEMPT_TIME, 90_000);
    assert.equal(REKEY_TIMEOUT, 5_000);
    assert.equal(KEEPALIVE_TIMEOUT, 10_000);
    assert.equal(REKEY_AFTER_MESSAGES, 2 ** 60);
    assert.equal(REJECT_AFTER_MESSAGES, 2 ** 64 - 2 ** 13 - 1);
    assert.equal(ZERO_KEYS_AFTER, 540_000);
    assert.equal(MAX_TIMER_HANDSHAKES, 18);
    assert.equal(INITIATION_MIN_INTERVAL, 20);
    assert.equal(REKEY_ON_RECEIVE_AGE, 165_000);
  });

  await t.step("jitter stays within 0–333 ms", () => {
    for (const value of [0, 1, 0x7f, 0xff]) {
      const j = new PeerTimers(constant(value)).jitter();
      assert.ok(j >= 0 && j <= 333, `${j}`);
    }
    const seen = new Set<number>();
    let x = 1;
    const timers = new PeerTimers((b) => {
      for (let i = 0; i < b.length; i++) b[i] = (x = (x * 75 + 74) % 65537) & 0xff;
    });
    for (let i = 0; i < 2000; i++) seen.add(timers.jitter());
    assert.ok(Math.max(...seen) <= 333 && Math.min(...seen) >= 0);
    assert.ok(seen.size > 200, "spread over the range");
  });

  await t.step("retransmit after REKEY_TIMEOUT + jitter, give up after 18 retries", () => {
    const timers = new PeerTimers(constant(0)); // jitter 0
    timers.handshakeInitiated(0);
    assert.equal(timers.nextDeadline(), REKEY_TIMEOUT);
    assert.equal(timers.due(REKEY_TIMEOUT - 1), 0);
    let now = 0;
    for (let i = 1; i <= MAX_TIMER_HANDSHAKES; i++) {
      now = timers.nextDeadline();
      assert.equal(timers.due(now), TimerAction.RetransmitHandshake, `retry ${i}`);
      timers.handshakeInitiated(now); // the device sends the retry
    }
    assert.equal(now, REKEY_ATTEMPT_TIME);
    now = timers.nextDeadline();
    assert.equal(timers.due(now), TimerAction.GiveUpHandshake);
    // No session came of it: nothing to zero later (no spurious session-expired).
    assert.equal(timers.zeroKeysAt, Infinity);
    assert.equal(timers.nextDeadline(), Infinity);
  });

  await t.step("handshake completion stops retransmission", () => {
    const timers = new PeerTimers(constant(0));
    timers.handshakeInitiated(0);
    timers.handshakeComplete(100);
    assert.equal(timers.nextDeadline(), Infinity);
  });

  await t.step("keepalive KEEPALIVE_TIMEOUT after receiving data without sending", () => {
    const timers = new PeerTimers(constant(0));
    timers.dataReceived(1000);
    assert.equal(timers.keepaliveAt, 1000 + KEEPALIVE_TIMEOUT);
    timers.dataReceived(2000); // pending: does not move it
    assert.equal(timers.keepaliveAt, 1000 + KEEPALIVE_TIMEOUT);
    assert.equal(timers.due(1000 + KEEPALIVE_TIMEOUT), TimerAction.SendKeepalive);
    timers.dataReceived(20_000);
    timers.anyAuthenticatedPacketSent(25_000); // we sent something: no keepalive needed
    assert.equal(timers.keepaliveAt, Infinity);
  });

  await t.step("new handshake when data sent gets no answer for 15 s", () => {
    const timers = new PeerTimers(constant(0));
    timers.dataSent(0);
    assert.equal(timers.newHandshakeAt, KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
    timers.dataSent(3000); // pending: unchanged
    assert.equal(timers.newHandshakeAt, KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
    assert.equal(timers.due(15_000), TimerAction.NewHandshake);
    timers.dataSent(20_000);
    timers.anyAuthenticatedPacketReceived(21_000);
    assert.equal(timers.newHandshakeAt, Infinity);
  });

  await t.step("keys are zeroed 3 × REJECT_AFTER_TIME after the last session", () => {
    const timers = new PeerTimers(constant(0));
    timers.sessionDerived(5000);
    assert.equal(timers.due(5000 + ZERO_KEYS_AFTER - 1), 0);
    assert.equal(timers.due(5000 + ZERO_KEYS_AFTER), TimerAction.ZeroKeys);
  });

  await t.step("persistent keepalive follows traffic in either direction", () => {
    const timers = new PeerTimers(constant(0), 25);
    assert.equal(timers.persistentKeepalive, 25);
    timers.anyAuthenticatedPacketTraversal(1000);
    assert.equal(timers.nextDeadline(), 26_000);
    timers.anyAuthenticatedPacketTraversal(10_000);
    assert.equal(timers.due(26_000), 0);
    assert.equal(timers.due(35_000), TimerAction.PersistentKeepalive);
    timers.persistentKeepalive = 0;
    timers.anyAuthenticatedPacketTraversal(40_000);
    assert.equal(timers.nextDeadline(), Infinity);
    assert.throws(() => {
      timers.persistentKeepalive = -1;
    }, RangeError);
    assert.throws(() => new PeerTimers(constant(0), 70_000), RangeError);
  });

  await t.step("stop clears everything", () => {
    const timers = new PeerTimers(constant(0), 10);
    timers.handshakeInitiated(0);
    timers.dataReceived(0);
    timers.dataSent(0);
    timers.sessionDerived(0);
    timers.anyAuthenticatedPacketTraversal(0);
    timers.stop();
    assert.equal(timers.nextDeadline(), Infinity);
  });
});
