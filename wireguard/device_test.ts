import assert from "node:assert/strict";
import { Device, type Endpoint } from "./device.ts";
import { generatePrivateKey, publicKey } from "./keys.ts";
import {
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  messageType,
} from "./messages.ts";

const A: Endpoint = { address: "192.0.2.1", port: 1000 };
const B: Endpoint = { address: "192.0.2.2", port: 2000 };

function pair(limits: { handshakeQueue?: number; handshakeBudget?: number }) {
  const keyA = generatePrivateKey(), keyB = generatePrivateKey();
  const sentByA: Uint8Array[] = [], sentByB: Uint8Array[] = [];
  const a = new Device({
    privateKey: keyA,
    wallClock: () => 1_700_000_000_000,
    sendDatagram: (d) => sentByA.push(d.slice()),
    deliverPacket: () => {},
  });
  const b = new Device({
    privateKey: keyB,
    wallClock: () => 1_700_000_000_000,
    sendDatagram: (d) => sentByB.push(d.slice()),
    deliverPacket: () => {},
    limits,
  });
  const peerOfA = a.addPeer({
    publicKey: publicKey(keyB),
    allowedIps: ["10.0.0.2/32"],
    endpoint: B,
  });
  b.addPeer({ publicKey: publicKey(keyA), allowedIps: ["10.0.0.1/32"] });
  return { a, b, peerOfA, sentByA, sentByB };
}

Deno.test("Device handshake queue", async (t) => {
  await t.step("off by default: an initiation is answered inside receive()", () => {
    const { a, b, peerOfA, sentByA, sentByB } = pair({});
    a.initiate(peerOfA, 0);
    b.receive(sentByA[0], A, 0);
    assert.equal(sentByB.length, 1);
    assert.equal(messageType(sentByB[0]), MESSAGE_RESPONSE);
  });

  await t.step("on: receive() only queues; poll() answers; nextDeadline says now", () => {
    const { a, b, peerOfA, sentByA, sentByB } = pair({ handshakeQueue: 8 });
    a.initiate(peerOfA, 0);
    assert.equal(messageType(sentByA[0]), MESSAGE_INITIATION);
    b.receive(sentByA[0], A, 0);
    assert.equal(sentByB.length, 0);
    assert.equal(b.stats().handshakesPending, 1);
    assert.equal(b.nextDeadline(), -Infinity);
    b.poll(1);
    assert.equal(sentByB.length, 1);
    assert.equal(messageType(sentByB[0]), MESSAGE_RESPONSE);
    assert.equal(b.stats().handshakesPending, 0);
    assert.notEqual(b.nextDeadline(), -Infinity);
  });

  await t.step("bounded: a full queue drops and counts; each poll works its budget", () => {
    const { a, b, peerOfA, sentByA, sentByB } = pair({ handshakeQueue: 4, handshakeBudget: 3 });
    a.initiate(peerOfA, 0);
    for (let i = 0; i < 10; i++) b.receive(sentByA[0], A, 0);
    assert.equal(b.stats().handshakesPending, 4);
    assert.equal(b.stats().handshakeQueueDrops, 6);
    b.poll(1);
    assert.equal(b.stats().handshakesPending, 1);
    b.poll(2);
    assert.equal(b.stats().handshakesPending, 0);
    // With the queue over half full, cookies come first: MAC2 is required.
    const types = sentByB.map(messageType);
    assert.ok(types.includes(MESSAGE_COOKIE_REPLY), `sent ${types}`);
    assert.ok(types.every((x) => x === MESSAGE_COOKIE_REPLY || x === MESSAGE_RESPONSE));
  });

  await t.step("messages of a wrong length and transport data are not queued", () => {
    const { b } = pair({ handshakeQueue: 4 });
    b.receive(new Uint8Array([1, 0, 0, 0, 9, 9]), A, 0);
    b.receive(new Uint8Array(32).fill(0).map((_, i) => (i === 0 ? 4 : 0)), A, 0);
    assert.equal(b.stats().handshakesPending, 0);
    assert.equal(b.stats().drops.malformed >= 1, true);
  });
});
