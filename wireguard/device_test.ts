import assert from "node:assert/strict";
import { Device, type DeviceEvent, type Endpoint } from "./device.ts";
import { generatePrivateKey, publicKey } from "./keys.ts";
import type { PeerState } from "./peer.ts";
import {
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  messageType,
} from "./messages.ts";
import { REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX } from "./timers.ts";
import { buildUdpPacket } from "../tests/netns.ts";

const A: Endpoint = { address: "192.0.2.1", port: 1000 };
const B: Endpoint = { address: "192.0.2.2", port: 2000 };

function pair(
  limits: { handshakeQueue?: number; handshakeBudget?: number },
  wallClock = () => 1_700_000_000_000,
) {
  const keyA = generatePrivateKey(), keyB = generatePrivateKey();
  const sentByA: Uint8Array[] = [], sentByB: Uint8Array[] = [];
  const a = new Device({
    privateKey: keyA,
    wallClock,
    sendDatagram: (d) => sentByA.push(d.slice()),
    deliverPacket: () => {},
  });
  const b = new Device({
    privateKey: keyB,
    wallClock,
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
  return { a, b, peerOfA, sentByA, sentByB, keyB };
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

/** An IPv4 UDP packet from `src` to `dst` with 8 payload bytes of `fill`. */
function ipv4(src: string, dst: string, fill = 0): Uint8Array {
  return buildUdpPacket({
    src,
    dst,
    srcPort: 1000,
    dstPort: 2000,
    payload: new Uint8Array(8).fill(fill),
  });
}

/** Two devices with recorders: `a` knows `b`'s endpoint; `link()` carries what is queued. */
function linked() {
  const keyA = generatePrivateKey(), keyB = generatePrivateKey();
  const wire: { from: "a" | "b"; data: Uint8Array; to: Endpoint }[] = [];
  const delivered = { a: [] as Uint8Array[], b: [] as Uint8Array[] };
  const events = { a: [] as DeviceEvent[], b: [] as DeviceEvent[] };
  const make = (name: "a" | "b", key: Uint8Array) =>
    new Device({
      privateKey: key,
      random: (bytes) => bytes.fill(name === "a" ? 1 : 2),
      wallClock: () => 1_700_000_000_000,
      sendDatagram: (data, to) => wire.push({ from: name, data: data.slice(), to }),
      deliverPacket: (packet) => delivered[name].push(packet.slice()),
      onEvent: (event) => events[name].push(event),
    });
  const a = make("a", keyA), b = make("b", keyB);
  const peerB = a.addPeer({
    publicKey: publicKey(keyB),
    allowedIps: ["10.0.0.2/32"],
    endpoint: B,
  }) as PeerState;
  const peerA = b.addPeer({ publicKey: publicKey(keyA), allowedIps: ["10.0.0.1/32"] });
  const link = (now: number) => {
    while (wire.length > 0) {
      const d = wire.shift()!;
      if (d.from === "a") b.receive(d.data, A, now);
      else a.receive(d.data, B, now);
    }
  };
  return { a, b, peerA, peerB, wire, delivered, events, link };
}

Deno.test("Device construction and peers", async (t) => {
  const base = {
    privateKey: generatePrivateKey(),
    wallClock: () => 0,
    sendDatagram: () => {},
    deliverPacket: () => {},
  };

  await t.step("missing callbacks are TypeErrors, bad keys and limits RangeErrors", () => {
    assert.throws(() => new Device({ ...base, wallClock: undefined as never }), TypeError);
    assert.throws(() => new Device({ ...base, sendDatagram: undefined as never }), TypeError);
    assert.throws(() => new Device({ ...base, privateKey: new Uint8Array(31) }), RangeError);
    for (const limits of [{ maxPeers: 0 }, { queuePerPeer: 1.5 }, { handshakeQueue: -1 }]) {
      assert.throws(() => new Device({ ...base, limits }), RangeError, JSON.stringify(limits));
    }
  });

  await t.step("peers: add, find, list, the maxPeers limit, remove", () => {
    const device = new Device({ ...base, limits: { maxPeers: 2 } });
    const keys = [0, 1, 2].map(() => publicKey(generatePrivateKey()));
    const p0 = device.addPeer({ publicKey: keys[0], allowedIps: ["10.0.0.0/24"] });
    device.addPeer({ publicKey: keys[1] });
    assert.throws(() => device.addPeer({ publicKey: keys[2] }), RangeError);
    assert.equal(device.getPeer(keys[0]), p0);
    assert.equal([...device.peers()].length, 2);
    assert.equal(device.stats().peers, 2);
    assert.equal(device.removePeer(keys[0]), true);
    assert.equal(device.removePeer(keys[0]), false);
    assert.equal(device.getPeer(keys[0]), undefined);
    assert.equal(device.send(ipv4("10.0.0.9", "10.0.0.5"), 0), false, "its routes went with it");
    assert.equal(device.stats().drops.noRoute, 1);
    assert.throws(() => device.initiate(p0, 0), RangeError);
    device.addPeer({ publicKey: keys[2] });
  });

  await t.step("no peers, nothing to do: nextDeadline is Infinity", () => {
    assert.equal(new Device(base).nextDeadline(), Infinity);
  });
});

Deno.test("Device data path", async (t) => {
  await t.step(
    "send without a session queues and initiates; the response flushes the queue",
    () => {
      const { a, b, peerB, wire, delivered, events, link } = linked();
      assert.equal(a.send(ipv4("10.0.0.1", "10.0.0.2", 7), 0), true);
      assert.equal(a.stats().queuedPackets, 1);
      assert.deepEqual(wire.map((d) => messageType(d.data)), [MESSAGE_INITIATION]);
      assert.ok(
        a.nextDeadline() >= REKEY_TIMEOUT &&
          a.nextDeadline() <= REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX,
        "the retransmission timer",
      );
      link(1);
      assert.equal(a.stats().queuedPackets, 0);
      assert.deepEqual(delivered.b, [ipv4("10.0.0.1", "10.0.0.2", 7)]);
      assert.deepEqual(events.a.map((e) => e.type), ["handshake"]);
      // The responder learns the endpoint, then completes on the first data.
      assert.deepEqual(events.b.map((e) => e.type), ["roam", "handshake"]);
      assert.equal(peerB.stats.handshakesCompleted, 1);
      assert.equal(b.stats().rxPackets, 1);
      // The device totals are the sums of its peers'.
      assert.equal(a.stats().txPackets, peerB.stats.txPackets);
    },
  );

  await t.step(
    "the inner source must be in the sender's AllowedIPs; bad packets are not sent",
    () => {
      const { a, b, peerB, delivered, link } = linked();
      a.initiate(peerB, 0);
      link(0);
      a.sendTo(peerB, ipv4("10.0.0.66", "10.0.0.2"), 1);
      link(1);
      assert.equal(delivered.b.length, 0);
      assert.equal(b.stats().drops.sourceNotAllowed, 1);
      assert.equal(a.send(new Uint8Array([0x45, 0, 0, 40]), 2), false);
      assert.equal(a.stats().drops.outboundInvalid, 1);
      a.sendTo(peerB, new Uint8Array([0x99, 1, 2, 3]), 3);
      link(3);
      assert.equal(b.stats().drops.innerInvalid, 1);
    },
  );

  await t.step("hostile datagrams are dropped and counted by reason, never thrown", () => {
    const { a, b, peerB, wire, delivered, link } = linked();
    a.initiate(peerB, 0);
    const initiation = wire[0].data.slice();
    link(0);
    b.receive(new Uint8Array(0), A, 1);
    b.receive(new Uint8Array([9, 0, 0, 0]), A, 1);
    const badMac = initiation.slice();
    badMac[initiation.length - 20] ^= 1; // inside MAC1
    b.receive(badMac, A, 1);
    const stranger = new Uint8Array(32);
    stranger[0] = MESSAGE_TRANSPORT;
    stranger[4] = 0x77;
    b.receive(stranger, A, 1);
    b.receive(initiation, A, 1); // a replayed initiation
    const drops = b.stats().drops;
    assert.deepEqual(
      [drops.malformed, drops.mac1, drops.unknownIndex, drops.replayedInitiation],
      [2, 1, 1, 1],
    );
    // Data from the established session still flows.
    a.send(ipv4("10.0.0.1", "10.0.0.2"), 2);
    link(2);
    assert.equal(delivered.b.length, 1);
  });

  await t.step("initiate() sends at most one initiation per REKEY_TIMEOUT", () => {
    const { a, peerB, wire } = linked();
    a.initiate(peerB, 0);
    a.initiate(peerB, REKEY_TIMEOUT - 1);
    assert.equal(wire.length, 1);
    a.initiate(peerB, REKEY_TIMEOUT);
    assert.equal(wire.length, 2);
    assert.equal(a.stats().handshakesSent, 2);
    assert.equal(a.stats().indexTableSize, 1, "the older handshake's index is gone");
  });

  await t.step("removePeer zeroes the session and flushes the queue", () => {
    const { a, peerB, link } = linked();
    a.initiate(peerB, 0);
    link(0);
    const session = peerB.current!;
    a.removePeer(peerB.publicKey);
    assert.deepEqual(session.sendKey, new Uint8Array(32));
    assert.equal(peerB.current, null);
    assert.equal(a.stats().indexTableSize, 0);
    assert.equal(a.nextDeadline(), Infinity);
  });
});

Deno.test("Device.setPrivateKey", async (t) => {
  await t.step("sessions end; the new key handshakes, the old one no longer does", () => {
    let wall = 1_700_000_000_000;
    const { a, b, peerOfA, sentByA, sentByB } = pair({}, () => wall);
    a.initiate(peerOfA, 0);
    b.receive(sentByA[0], A, 0);
    a.receive(sentByB[0], B, 0);
    assert.equal(a.stats().handshakesCompleted, 1);
    assert.ok((peerOfA as PeerState).current);

    // A's peer B gets a new key; A still knows the old one: B can no longer answer A.
    const newKey = generatePrivateKey();
    const oldPublic = b.publicKey.slice();
    assert.equal(b.setPrivateKey(newKey), false);
    assert.deepEqual(b.publicKey, publicKey(newKey));
    const peerOfB = b.getPeer(a.publicKey)!;
    assert.equal((peerOfB as PeerState).current, null, "sessions ended");
    sentByA.length = sentByB.length = 0;
    a.initiate(peerOfA, 6_000);
    b.receive(sentByA[0], A, 6_000);
    assert.equal(sentByB.length, 0, "an initiation to the old key is dropped");
    assert.equal(b.stats().drops.mac1, 1);

    // Once A knows the new public key, they handshake again.
    a.removePeer(oldPublic);
    const again = a.addPeer({ publicKey: b.publicKey, allowedIps: ["10.0.0.2/32"], endpoint: B });
    sentByA.length = 0;
    wall += 12_000; // a newer TAI64N than the first initiation's
    a.initiate(again, 12_000);
    b.receive(sentByA[0], A, 12_000);
    assert.equal(messageType(sentByB[0]), MESSAGE_RESPONSE);
    a.receive(sentByB[0], B, 12_000);
    assert.ok((again as PeerState).current);
  });

  await t.step("a peer with the new public key is removed; the same key changes nothing", () => {
    const { a, b } = pair({});
    const keyOfB = b.publicKey.slice();
    // A takes a key that one of its peers has.
    assert.ok(a.getPeer(keyOfB));
    const bPrivate = generatePrivateKey();
    a.addPeer({ publicKey: publicKey(bPrivate), allowedIps: ["10.0.0.9/32"] });
    assert.equal(a.setPrivateKey(bPrivate), true);
    assert.equal(a.getPeer(publicKey(bPrivate)), undefined);
    assert.ok(a.getPeer(keyOfB), "the other peer stays");
    assert.equal(a.setPrivateKey(bPrivate), false);
    assert.throws(() => a.setPrivateKey(new Uint8Array(31)), RangeError);
  });

  await t.step("cleared: sessions end, no handshake is sent or answered; a key restores", () => {
    let wall = 1_700_000_000_000;
    const { a, b, peerOfA, sentByA, sentByB, keyB } = pair({}, () => wall);
    a.initiate(peerOfA, 0);
    b.receive(sentByA[0], A, 0);
    a.receive(sentByB[0], B, 0);
    const peerOfB = b.getPeer(a.publicKey)! as PeerState;
    assert.ok(peerOfB.next, "the responder's session awaits confirmation");
    b.clearPrivateKey();
    assert.equal(b.hasPrivateKey, false);
    assert.equal(peerOfB.next ?? peerOfB.current, null, "sessions ended");
    sentByA.length = sentByB.length = 0;
    wall += 6_000;
    a.initiate(peerOfA, 6_000);
    b.receive(sentByA[0], A, 6_000);
    assert.equal(sentByB.length, 0, "an initiation is not answered");
    assert.equal(b.stats().drops.noPrivateKey, 1);
    b.initiate(peerOfB, 6_000);
    assert.equal(sentByB.length, 0, "nor is one sent");
    assert.equal(b.stats().drops.noPrivateKey, 2);
    // The same key again: handshakes work.
    assert.equal(b.setPrivateKey(keyB), false);
    assert.equal(b.hasPrivateKey, true);
    wall += 6_000;
    sentByA.length = 0;
    a.initiate(peerOfA, 12_000);
    b.receive(sentByA[0], A, 12_000);
    assert.equal(messageType(sentByB[0]), MESSAGE_RESPONSE);
  });
});
