/**
 * Fuzz: ≥100,000 random and mutated datagrams (seeded) against a responder
 * device with one legitimate peer. Nothing may throw, the device's tables
 * must stay within their bounds, and the legitimate peer must still complete
 * a handshake and exchange data afterwards.
 */
import assert from "node:assert/strict";
import { Device, type Endpoint } from "../wireguard/device.ts";
import type { PeerState } from "../wireguard/peer.ts";
import { defaultBackend } from "../wireguard/crypto/mod.ts";
import { CookieGenerator } from "../wireguard/cookie.ts";
import { Rng } from "./fuzz/harness.ts";
import { bareIpv4 as ipv4, outerSources } from "./fuzz/wireguard.ts";
import {
  CookieReplyMessage,
  InitiationMessage,
  messageType,
  ResponseMessage,
} from "../wireguard/messages.ts";

const backend = defaultBackend();
const WALL_BASE = 1_700_000_000_000;
const MESSAGES = 120_000;

Deno.test("wireguard fuzz: random and mutated messages", async (t) => {
  const rng = new Rng(0xc0ffee);
  const rand = () => rng.next();
  let now = 1000;
  const fromA: Endpoint = { address: "192.0.2.1", port: 1111 };
  const toB: Endpoint = { address: "198.51.100.2", port: 51820 };
  const toA: Uint8Array[] = [];
  const toBQueue: Uint8Array[] = [];
  const captured: Uint8Array[] = [];
  let deliveredB = 0, deliveredA = 0, sentByB = 0;
  let lastSentByB: { data: Uint8Array; to: Endpoint } | undefined;
  const responder = new Device({
    privateKey: new Uint8Array(32).fill(2),
    backend,
    random: new Rng(2).fill,
    wallClock: () => WALL_BASE + now,
    sendDatagram: (d, to) => {
      sentByB++;
      lastSentByB = { data: d.slice(), to };
      toA.push(lastSentByB.data);
    },
    deliverPacket: () => deliveredB++,
    limits: { rateLimiterEntries: 512 },
  });
  const initiator = new Device({
    privateKey: new Uint8Array(32).fill(1),
    backend,
    random: new Rng(1).fill,
    wallClock: () => WALL_BASE + now,
    sendDatagram: (d) => {
      captured.push(d.slice());
      toBQueue.push(d.slice());
    },
    deliverPacket: () => deliveredA++,
  });
  const stranger = new Device({
    privateKey: new Uint8Array(32).fill(3),
    backend,
    random: new Rng(3).fill,
    wallClock: () => WALL_BASE + now,
    sendDatagram: (d) => captured.push(d.slice()),
    deliverPacket: () => {},
  });
  const peerB = initiator.addPeer({
    publicKey: responder.publicKey,
    allowedIps: ["10.0.0.2/32"],
    endpoint: toB,
  }) as PeerState;
  const peerA = responder.addPeer({ publicKey: initiator.publicKey, allowedIps: ["10.0.0.1/32"] });
  stranger.addPeer({ publicKey: responder.publicKey, allowedIps: ["0.0.0.0/0"], endpoint: toB });

  const pump = () => {
    for (let guard = 0; toBQueue.length > 0 || toA.length > 0; guard++) {
      assert.ok(guard < 10_000);
      while (toBQueue.length > 0) responder.receive(toBQueue.shift()!, fromA, now);
      while (toA.length > 0) {
        const d = toA.shift()!;
        captured.push(d);
        initiator.receive(d, toB, now);
      }
    }
  };

  await t.step("capture valid messages of every type", () => {
    initiator.send(ipv4("10.0.0.1", "10.0.0.2", 100), now);
    pump();
    for (let i = 0; i < 20; i++) initiator.send(ipv4("10.0.0.1", "10.0.0.2", i * 30), now);
    responder.send(ipv4("10.0.0.2", "10.0.0.1", 40), now);
    pump();
    stranger.initiate([...stranger.peers()][0], now);
    assert.equal(deliveredB, 21);
    assert.equal(deliveredA, 1);
    const types = new Set(captured.map(messageType));
    assert.deepEqual([...types].sort(), [1, 2, 4]);
    // A cookie reply, from a responder that is always under load.
    const loaded = new Device({
      privateKey: new Uint8Array(32).fill(2),
      backend,
      random: new Rng(4).fill,
      wallClock: () => WALL_BASE + now,
      sendDatagram: (d) => captured.push(d.slice()),
      deliverPacket: () => {},
      limits: { underLoadThreshold: 0 },
    });
    loaded.receive(captured.find((d) => messageType(d) === 1)!, fromA, now);
    assert.ok(captured.some((d) => messageType(d) === 3));
  });

  await t.step(`${MESSAGES} random and mutated datagrams`, () => {
    const mac = new CookieGenerator(backend, responder.publicKey);
    const before = responder.stats();
    const sources = outerSources();
    const pick = <T>(xs: T[]): T => xs[(rand() * xs.length) | 0];
    for (let n = 0; n < MESSAGES; n++) {
      if (n % 16 === 0) now += 1;
      let d: Uint8Array;
      const kind = rand();
      if (kind < 0.15) {
        // Pure garbage, sometimes with a plausible header.
        d = new Uint8Array((rand() * 200) | 0);
        rng.fill(d);
        if (d.length >= 4 && rand() < 0.5) d.set([1 + ((rand() * 4) | 0), 0, 0, 0]);
      } else {
        d = pick(captured).slice();
        const op = rand();
        if (op < 0.35) {
          const flips = 1 + ((rand() * 4) | 0);
          for (let f = 0; f < flips && d.length > 0; f++) {
            d[(rand() * d.length) | 0] ^= 1 << ((rand() * 8) | 0);
          }
        } else if (op < 0.45) {
          d = d.subarray(0, (rand() * d.length) | 0);
        } else if (op < 0.55) {
          const longer = new Uint8Array(d.length + 1 + ((rand() * 64) | 0));
          longer.set(d);
          d = longer;
        } else if (op < 0.65) {
          d[0] = (rand() * 6) | 0;
        } else if (op < 0.75 && d.length >= 8) {
          // Index change: a receiver/sender index elsewhere in the table or random.
          for (let i = 4; i < 8; i++) d[i] = (rand() * 256) | 0;
        } else if (op < 0.85 && d.length >= 16 && d[0] === 4) {
          // Counter change, including counters beyond 2^53.
          for (let i = 8; i < 16; i++) if (rand() < 0.5) d[i] = (rand() * 256) | 0;
        } else if (op < 0.95 && (d.length === 148 || d.length === 92) && d[0] <= 2) {
          // A body change with a recomputed, valid MAC1 (anyone knowing our
          // public key can do that): reaches the Noise code.
          d[8 + ((rand() * (d.length - 40)) | 0)] ^= 1 << ((rand() * 8) | 0);
          const offset = d.length === 148
            ? InitiationMessage.MAC1_OFFSET
            : ResponseMessage.MAC1_OFFSET;
          mac.addMacs(d, offset, now);
        }
        // else: replay as is
      }
      responder.receive(d, pick(sources), now);
      if (n % 1000 === 0) responder.poll(now);
    }
    const after = responder.stats();
    assert.equal(after.peers, 1);
    assert.ok(after.indexTableSize <= 4, `index table ${after.indexTableSize}`);
    assert.ok(after.rateLimiterSize <= 512, `rate limiter ${after.rateLimiterSize}`);
    assert.ok(after.queuedPackets <= 1024);
    assert.equal(deliveredB, 21, "no forged packet was delivered");
    assert.deepEqual(peerA.endpoint, fromA, "no forged packet moved the endpoint");
    const dropped = Object.values(after.drops).reduce((x, y) => x + y) -
      Object.values(before.drops).reduce((x, y) => x + y);
    assert.ok(dropped >= MESSAGES * 0.9, `${dropped} drops`);
    assert.ok(after.drops.malformed > 0);
    assert.ok(after.drops.mac1 > 0);
    assert.ok(after.drops.unknownIndex > 0);
    assert.ok(after.drops.replay > 0);
    assert.ok(after.drops.dataInvalid > 0);
    assert.ok(after.drops.handshakeInvalid > 0);
    assert.ok(after.drops.counterTooLarge > 0);
    assert.ok(after.drops.cookieRequired > 0, "the flood put the device under load");
    toA.length = 0;
  });

  await t.step("a flood from 2,000 sources that hold valid cookies stays bounded", () => {
    // A stronger attacker: each source obtains a cookie, then sends
    // initiations with valid MAC1 and MAC2. They reach the rate limiter,
    // whose table must stay within its bound of 512.
    const original = captured.find((d) => messageType(d) === 1)!;
    const before = responder.stats();
    for (let n = 0; n < 300; n++) {
      const d = original.slice();
      d[50] ^= 1;
      new CookieGenerator(backend, responder.publicKey).addMacs(d, 116, now);
      responder.receive(d, fromA, now); // enough MAC1-valid messages to be under load
    }
    let cookies = 0;
    for (let i = 0; i < 2000; i++) {
      now += 0.25;
      const source = { address: `203.0.${i >> 8}.${i & 255}`, port: 40000 + i };
      const generator = new CookieGenerator(backend, responder.publicKey);
      const first = original.slice();
      first[60] ^= 1 << (i % 8);
      generator.addMacs(first, 116, now);
      lastSentByB = undefined;
      responder.receive(first, source, now);
      const reply = lastSentByB as { data: Uint8Array; to: Endpoint } | undefined;
      if (reply === undefined || messageType(reply.data) !== 3) continue;
      assert.deepEqual(reply.to, source);
      assert.ok(generator.consumeReply(CookieReplyMessage.parse(reply.data)!, now));
      cookies++;
      const second = original.slice();
      second[70] ^= 1 << (i % 8);
      generator.addMacs(second, 116, now);
      responder.receive(second, source, now);
    }
    toA.length = 0;
    const after = responder.stats();
    assert.ok(cookies > 1900, `${cookies} cookies`);
    assert.ok(after.rateLimiterSize <= 512, `rate limiter ${after.rateLimiterSize}`);
    assert.ok(after.rateLimiterSize >= 256, "the table was used");
    assert.ok(after.drops.rateLimited > before.drops.rateLimited, "refused when full");
    assert.ok(after.drops.handshakeInvalid > before.drops.handshakeInvalid, "others reached Noise");
    assert.ok(after.indexTableSize <= 4);
  });

  await t.step("the legitimate peer still completes a handshake and exchanges data", () => {
    const completed = responder.stats().handshakesCompleted;
    now += 200_000; // past the load period and REKEY_TIMEOUT; the old session is dead
    responder.poll(now);
    initiator.poll(now); // a's pending keepalive finds no session: it initiates
    pump();
    initiator.send(ipv4("10.0.0.1", "10.0.0.2", 64), now);
    pump();
    responder.send(ipv4("10.0.0.2", "10.0.0.1", 64), now);
    pump();
    assert.equal(responder.stats().handshakesCompleted, completed + 1);
    assert.equal(deliveredB, 22);
    assert.equal(deliveredA, 2);
    assert.ok(peerB.current);
    assert.ok(responder.stats().indexTableSize <= 4);
    assert.ok(sentByB > 0);
  });
});
