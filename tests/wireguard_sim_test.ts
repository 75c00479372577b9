/**
 * Simulation: our initiator Device ↔ our responder Device over an in-memory
 * link with a fake clock. Each step states the time and what must happen.
 */
import assert from "node:assert/strict";
import { Device, type DeviceEvent, type Endpoint } from "../wireguard/device.ts";
import type { PeerState } from "../wireguard/peer.ts";
import { defaultBackend } from "../wireguard/crypto/mod.ts";
import { messageType } from "../wireguard/messages.ts";
import { REKEY_AFTER_SAFE_MESSAGES, REKEY_TIMEOUT, ZERO_KEYS_AFTER } from "../wireguard/timers.ts";

const backend = defaultBackend();
const WALL_BASE = 1_700_000_000_000;

/** A seeded xorshift PRNG as the devices' randomness. */
function seeded(seed: number): (bytes: Uint8Array) => void {
  let x = seed | 1;
  return (bytes) => {
    for (let i = 0; i < bytes.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      bytes[i] = x & 0xff;
    }
  };
}

function key(seed: number): Uint8Array {
  const k = new Uint8Array(32);
  seeded(seed * 7919)(k);
  return k;
}

/** An IPv4 packet with a valid header and `payload` bytes of payload. */
function ipv4(src: string, dst: string, payload = 20, fill = 0): Uint8Array {
  const p = new Uint8Array(20 + payload).fill(fill);
  p[0] = 0x45;
  p[2] = p.length >> 8;
  p[3] = p.length & 0xff;
  p[8] = 64;
  p[9] = 17;
  p.set(src.split(".").map(Number), 12);
  p.set(dst.split(".").map(Number), 16);
  return p;
}

/** An IPv6 packet (`fd00::<src>` → `fd00::<dst>`) with a valid fixed header. */
function ipv6(src: number, dst: number, payload = 20): Uint8Array {
  const p = new Uint8Array(40 + payload);
  p[0] = 0x60;
  p[4] = payload >> 8;
  p[5] = payload & 0xff;
  p[6] = 17;
  p[7] = 64;
  p[8] = 0xfd;
  p[23] = src;
  p[24] = 0xfd;
  p[39] = dst;
  return p;
}

interface Datagram {
  from: "a" | "b";
  data: Uint8Array;
  to: Endpoint;
  source: Endpoint;
}

interface Options {
  pskA?: Uint8Array;
  pskB?: Uint8Array;
  keepaliveA?: number;
  limitsA?: { queuePerPeer?: number; mtu?: number; underLoadThreshold?: number };
  limitsB?: { underLoadThreshold?: number };
}

/** Two devices and a link; `a` initiates (knows `b`'s endpoint), `b` responds. */
class Sim {
  now = 0;
  /** Added to the wall clock only (TAI64N), not to the monotonic clock. */
  wallOffset = 0;
  readonly a: Device;
  readonly b: Device;
  readonly peerB: PeerState; // b as seen by a (its protocol state, for the checks)
  readonly peerA: PeerState; // a as seen by b
  readonly queue: Datagram[] = [];
  readonly sent: Datagram[] = [];
  readonly delivered = { a: [] as Uint8Array[], b: [] as Uint8Array[] };
  readonly events = { a: [] as DeviceEvent[], b: [] as DeviceEvent[] };
  endpointA: Endpoint = { address: "192.0.2.1", port: 1111 };
  readonly endpointB: Endpoint = { address: "198.51.100.2", port: 51820 };
  /** Return false to lose a datagram on the link. */
  filter: (d: Datagram) => boolean = () => true;

  constructor(options: Options = {}) {
    const make = (name: "a" | "b", seed: number, limits?: object) =>
      new Device({
        privateKey: key(seed),
        backend,
        random: seeded(seed),
        wallClock: () => WALL_BASE + this.now + this.wallOffset,
        sendDatagram: (data, to) => {
          const d: Datagram = {
            from: name,
            data: data.slice(),
            to,
            source: name === "a" ? this.endpointA : this.endpointB,
          };
          this.sent.push(d);
          this.queue.push(d);
        },
        deliverPacket: (packet) => this.delivered[name].push(packet.slice()),
        onEvent: (event) => this.events[name].push(event),
        limits,
      });
    this.a = make("a", 1, options.limitsA);
    this.b = make("b", 2, options.limitsB);
    this.peerB = this.a.addPeer({
      publicKey: this.b.publicKey,
      presharedKey: options.pskA,
      allowedIps: ["10.0.0.2/32", "fd00::2/128"],
      endpoint: this.endpointB,
      persistentKeepalive: options.keepaliveA,
    }) as PeerState;
    this.peerA = this.b.addPeer({
      publicKey: this.a.publicKey,
      presharedKey: options.pskB,
      allowedIps: ["10.0.0.1/32", "fd00::1/128"],
    }) as PeerState;
  }

  /** Carries every queued datagram (and what they cause) across the link. */
  pump(): void {
    for (let guard = 0; this.queue.length > 0; guard++) {
      assert.ok(guard < 100_000, "link does not settle");
      const d = this.queue.shift()!;
      if (!this.filter(d)) continue;
      this.inject(d);
    }
  }

  /** Delivers one datagram now, from its recorded source. */
  inject(d: Datagram): void {
    if (d.from === "a") this.b.receive(d.data, d.source, this.now);
    else if (d.to.address === this.endpointA.address && d.to.port === this.endpointA.port) {
      this.a.receive(d.data, d.source, this.now);
    }
  }

  /** Moves the clock forward by `ms`, running the timers as they fall due. */
  advance(ms: number): void {
    const target = this.now + ms;
    for (let guard = 0;; guard++) {
      assert.ok(guard < 100_000, "timers do not settle");
      const next = Math.min(this.a.nextDeadline(), this.b.nextDeadline());
      if (next > target) break;
      this.now = Math.max(this.now, next);
      this.a.poll(this.now);
      this.b.poll(this.now);
      this.pump();
    }
    this.now = target;
  }

  /** Datagrams sent by `who` of a message type. */
  sentOf(who: "a" | "b", type: number): Datagram[] {
    return this.sent.filter((d) => d.from === who && messageType(d.data) === type);
  }

  handshake(): void {
    this.a.initiate(this.peerB, this.now);
    this.pump();
  }
}

Deno.test("wireguard simulation", async (t) => {
  await t.step("handshake, then IPv4 and IPv6 data both ways", () => {
    const sim = new Sim();
    sim.now = 1000;
    assert.ok(sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 100, 7), sim.now));
    sim.pump();
    // initiation → response → queued packet; the responder confirmed on it.
    assert.equal(sim.sentOf("a", 1).length, 1);
    assert.equal(sim.sentOf("b", 2).length, 1);
    assert.equal(sim.delivered.b.length, 1);
    assert.deepEqual(sim.delivered.b[0], ipv4("10.0.0.1", "10.0.0.2", 100, 7));
    assert.equal(sim.events.a.filter((e) => e.type === "handshake").length, 1);
    assert.equal(sim.events.b.filter((e) => e.type === "handshake").length, 1);
    assert.equal(sim.peerB.lastHandshake, WALL_BASE + 1000);
    assert.ok(sim.b.send(ipv4("10.0.0.2", "10.0.0.1", 50), sim.now));
    assert.ok(sim.b.send(ipv6(2, 1, 300), sim.now));
    assert.ok(sim.a.send(ipv6(1, 2, 1), sim.now));
    sim.pump();
    assert.equal(sim.delivered.a.length, 2);
    assert.deepEqual(sim.delivered.a[1], ipv6(2, 1, 300));
    assert.deepEqual(sim.delivered.b[1], ipv6(1, 2, 1));
    // Padding: 120 bytes → 128 + 16 header + 16 tag.
    const data = sim.sentOf("a", 4);
    assert.equal(data[0].data.length, 16 + 128 + 16);
    const stats = sim.a.stats();
    assert.equal(stats.handshakesSent, 1);
    assert.equal(stats.handshakesCompleted, 1);
    assert.equal(stats.txPackets, 2);
    assert.equal(stats.rxPackets, 2);
    assert.equal(sim.peerB.stats.txPackets, 2);
    assert.equal(sim.b.stats().handshakesReceived, 1);
    assert.equal(Object.values(sim.b.stats().drops).reduce((x, y) => x + y), 0);
    assert.equal(sim.a.send(ipv4("10.0.0.1", "10.9.9.9"), sim.now), false);
    assert.equal(sim.a.stats().drops.noRoute, 1);
    assert.equal(sim.a.send(new Uint8Array([0x45, 0, 0]), sim.now), false);
    assert.equal(sim.a.stats().drops.outboundInvalid, 1);
  });

  await t.step("the initiator rekeys after 120 s of traffic, without loss", () => {
    const sim = new Sim();
    sim.handshake();
    const first = sim.peerB.current!;
    let sent = 0;
    for (let s = 1; s <= 130; s++) {
      sim.advance(1000);
      sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 10), sim.now);
      sim.b.send(ipv4("10.0.0.2", "10.0.0.1", 10), sim.now);
      sent++;
      sim.pump();
    }
    assert.equal(sim.delivered.a.length, sent);
    assert.equal(sim.delivered.b.length, sent);
    assert.equal(sim.sentOf("a", 1).length, 2, "one rekey initiation");
    assert.notEqual(sim.peerB.current, first);
    assert.equal(sim.peerB.previous, first, "the old session is kept as previous");
    assert.ok(sim.peerB.current!.created >= 120_000 && sim.peerB.current!.created < 122_000);
    assert.equal(sim.a.stats().handshakesCompleted, 2);
  });

  await t.step("traffic is rejected after 180 s without a rekey", () => {
    const sim = new Sim();
    sim.handshake();
    // From now on handshake messages are lost.
    sim.filter = (d) => messageType(d.data) > 2;
    let last: Datagram | undefined;
    for (let s = 1; s < 180; s++) {
      sim.advance(1000);
      sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 10), sim.now);
      last = sim.sent.at(-1);
      sim.pump();
    }
    assert.equal(sim.delivered.b.length, 179, "the old session works until then");
    assert.equal(messageType(last!.data), 4);
    sim.advance(1000); // t = 180 s
    const before = sim.sentOf("a", 4).length;
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 10), sim.now);
    assert.equal(sim.sentOf("a", 4).length, before, "no data on an expired session");
    assert.equal(sim.a.stats().queuedPackets, 1, "queued for a new session instead");
    sim.inject(last!); // a datagram of the old session arrives late
    assert.equal(sim.b.stats().drops.expiredKeypair, 1);
    assert.equal(sim.delivered.b.length, 179);
  });

  await t.step("keepalive 10 s after receiving data without sending any", () => {
    const sim = new Sim();
    sim.handshake();
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    sim.pump();
    const keepalives = () => sim.sentOf("b", 4).filter((d) => d.data.length === 32).length;
    sim.advance(9_999);
    assert.equal(keepalives(), 0);
    sim.advance(1);
    assert.equal(keepalives(), 1);
    assert.equal(sim.a.stats().keepalivesReceived, 1);
    assert.equal(sim.b.stats().keepalivesSent, 1);
    sim.advance(60_000);
    assert.equal(keepalives(), 1, "only one per received data");
    // Sending data back in time suppresses the keepalive.
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    sim.pump();
    sim.advance(5_000);
    sim.b.send(ipv4("10.0.0.2", "10.0.0.1"), sim.now);
    sim.pump();
    sim.advance(20_000);
    assert.equal(keepalives(), 1);
  });

  await t.step("data sent without any answer for 15 s starts a new handshake", () => {
    const sim = new Sim();
    sim.handshake();
    sim.filter = (d) => d.from === "a"; // b's answers are lost
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    sim.pump();
    assert.equal(sim.sentOf("a", 1).length, 1);
    sim.advance(15_333);
    assert.equal(sim.sentOf("a", 1).length, 2, "new initiation");
  });

  await t.step("persistent keepalive every 25 s", () => {
    const sim = new Sim({ keepaliveA: 25 });
    sim.advance(0); // the peer comes up: a keepalive at once (it needs a handshake first)
    assert.equal(sim.sentOf("a", 1).length, 1);
    assert.ok(sim.peerB.current);
    const keepalives = () => sim.sentOf("a", 4).filter((d) => d.data.length === 32).length;
    const start = keepalives();
    sim.advance(24_999);
    assert.equal(keepalives(), start);
    sim.advance(1);
    assert.equal(keepalives(), start + 1);
    sim.advance(25_000);
    assert.equal(keepalives(), start + 2);
  });

  await t.step("under load: cookie reply, MAC2 required, then accepted", () => {
    const sim = new Sim({ limitsB: { underLoadThreshold: 0 } });
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    sim.pump();
    assert.equal(sim.sentOf("b", 2).length, 0, "no response without MAC2");
    assert.equal(sim.sentOf("b", 3).length, 1, "a cookie reply instead");
    assert.equal(sim.b.stats().drops.cookieRequired, 1);
    assert.equal(sim.b.stats().cookieRepliesSent, 1);
    assert.equal(sim.a.stats().cookieRepliesReceived, 1);
    assert.ok(sim.b.stats().underLoad);
    // The retransmission after REKEY_TIMEOUT carries MAC2.
    sim.advance(5_333);
    assert.equal(sim.sentOf("a", 1).length, 2);
    assert.equal(sim.sentOf("b", 2).length, 1, "accepted with MAC2");
    assert.equal(sim.delivered.b.length, 1, "queued packet delivered");
    // A stale MAC2 from another source port is not accepted.
    const init = sim.sentOf("a", 1)[1];
    sim.now += 1000;
    sim.b.receive(init.data, { ...init.source, port: 9 }, sim.now);
    assert.equal(sim.b.stats().drops.cookieRequired, 2);
  });

  await t.step("an initiator under load answers a response with a cookie too", () => {
    const sim = new Sim({ limitsA: { underLoadThreshold: 0 } });
    sim.handshake();
    assert.equal(sim.sentOf("b", 2).length, 1);
    assert.equal(sim.sentOf("a", 3).length, 1, "a wants MAC2 on the response");
    assert.equal(sim.b.stats().cookieRepliesReceived, 1, "b found it by its index");
    assert.equal(sim.peerB.current, null);
    sim.advance(5_333); // a retries; b's new response carries MAC2
    assert.equal(sim.sentOf("b", 2).length, 2);
    assert.ok(sim.peerB.current);
    assert.ok(sim.peerA.current, "confirmed by a's keepalive");
  });

  await t.step("under load: a source over its rate is limited", () => {
    const sim = new Sim({ limitsB: { underLoadThreshold: 0 } });
    sim.handshake(); // cookie
    sim.advance(5_333); // handshake with MAC2
    const init = sim.sentOf("a", 1)[1];
    for (let i = 0; i < 10; i++) sim.b.receive(init.data, init.source, sim.now);
    assert.ok(sim.b.stats().drops.rateLimited >= 5);
  });

  await t.step("replayed data is rejected", () => {
    const sim = new Sim();
    sim.handshake();
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    const data = sim.sent.at(-1)!;
    sim.pump();
    sim.inject(data);
    assert.equal(sim.delivered.b.length, 1);
    assert.equal(sim.b.stats().drops.replay, 1);
    assert.equal(sim.peerA.stats.drops.replay, 1);
  });

  await t.step("a replayed initiation (same TAI64N) is rejected", () => {
    const sim = new Sim();
    sim.handshake();
    const init = sim.sentOf("a", 1)[0];
    sim.now += 1000;
    sim.inject(init);
    assert.equal(sim.b.stats().drops.replayedInitiation, 1);
    assert.equal(sim.sentOf("b", 2).length, 1, "no second response");
  });

  await t.step("initiations faster than 50 per second are refused", () => {
    const sim = new Sim();
    sim.handshake();
    // A second genuine initiation with a newer TAI64N only 10 ms later is a
    // flood. (Re-adding the peer resets a's own one-per-REKEY_TIMEOUT limit.)
    sim.a.removePeer(sim.b.publicKey);
    const peer = sim.a.addPeer({ publicKey: sim.b.publicKey, endpoint: sim.endpointB });
    sim.wallOffset = 1000;
    sim.now += 10;
    sim.a.initiate(peer, sim.now);
    sim.pump();
    assert.equal(sim.b.stats().drops.initiationFlood, 1);
    assert.equal(sim.b.stats().drops.replayedInitiation, 0);
    assert.equal(sim.sentOf("b", 2).length, 1);
    // 20 ms after the accepted one, the same message is fine.
    sim.now += 10;
    sim.inject(sim.sentOf("a", 1)[1]);
    assert.equal(sim.sentOf("b", 2).length, 2);
  });

  await t.step("reordering inside the window is accepted", () => {
    const sim = new Sim();
    sim.handshake();
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    sim.pump();
    const held: Datagram[] = [];
    sim.filter = (d) => (d.from === "a" ? (held.push(d), false) : true);
    for (let i = 0; i < 5; i++) sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 10, i), sim.now);
    sim.pump();
    sim.filter = () => true;
    for (const i of [4, 2, 0, 1, 3]) sim.inject(held[i]);
    assert.equal(sim.delivered.b.length, 6);
    assert.deepEqual(sim.delivered.b.slice(1).map((p) => p[20]), [4, 2, 0, 1, 3]);
    assert.equal(sim.b.stats().drops.replay, 0);
  });

  await t.step("a preshared-key mismatch fails the handshake", () => {
    const sim = new Sim({ pskA: new Uint8Array(32).fill(1), pskB: new Uint8Array(32).fill(2) });
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    sim.pump();
    assert.equal(sim.sentOf("b", 2).length, 1, "the responder cannot tell yet");
    assert.equal(sim.a.stats().drops.handshakeInvalid, 1);
    assert.equal(sim.peerB.current, null);
    assert.equal(sim.delivered.b.length, 0);
    assert.equal(sim.a.stats().handshakesCompleted, 0);
    // With matching keys it works.
    const psk = new Uint8Array(32).fill(3);
    sim.peerB.presharedKey = psk;
    sim.peerA.update({ presharedKey: psk });
    sim.advance(5_333);
    assert.equal(sim.a.stats().handshakesCompleted, 1);
    assert.equal(sim.delivered.b.length, 1);
  });

  await t.step("an unknown peer gets no answer at all", () => {
    const sim = new Sim();
    let answered = 0;
    const b = new Device({
      privateKey: key(2),
      backend,
      random: seeded(9),
      wallClock: () => WALL_BASE,
      sendDatagram: () => answered++,
      deliverPacket: () => {},
    });
    sim.handshake();
    const init = sim.sentOf("a", 1)[0];
    b.receive(init.data, init.source, 0);
    assert.equal(answered, 0);
    assert.equal(b.stats().drops.unknownPeer, 1);
    b.addPeer({ publicKey: key(77).map((x) => x ^ 1) });
    b.receive(init.data, init.source, 1);
    assert.equal(answered, 0);
    assert.equal(b.stats().drops.unknownPeer, 2);
  });

  await t.step("roaming: the endpoint follows the latest authenticated source", () => {
    const sim = new Sim();
    sim.handshake();
    assert.deepEqual(sim.peerA.endpoint, sim.endpointA);
    sim.endpointA = { address: "203.0.113.9", port: 4444 };
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    sim.pump();
    assert.deepEqual(sim.peerA.endpoint, sim.endpointA);
    const roam = sim.events.b.filter((e) => e.type === "roam").at(-1);
    assert.ok(roam?.type === "roam");
    assert.deepEqual(roam.to, sim.endpointA);
    assert.equal(roam.from?.address, "192.0.2.1");
    sim.b.send(ipv4("10.0.0.2", "10.0.0.1"), sim.now);
    sim.pump();
    assert.equal(sim.delivered.a.length, 1, "replies go to the new endpoint");
    // An unauthenticated packet from elsewhere does not move the endpoint.
    const forged = sim.sentOf("a", 4)[0].data.slice();
    forged[40] ^= 1;
    sim.b.receive(forged, { address: "192.0.2.66", port: 1 }, sim.now);
    assert.deepEqual(sim.peerA.endpoint, sim.endpointA);
  });

  await t.step("AllowedIPs source filter drops and counts", () => {
    const sim = new Sim();
    sim.handshake();
    sim.a.sendTo(sim.peerB, ipv4("10.0.0.99", "10.0.0.2"), sim.now);
    sim.a.sendTo(sim.peerB, ipv6(99, 2), sim.now);
    sim.a.sendTo(sim.peerB, new Uint8Array(40).fill(0x12), sim.now);
    sim.pump();
    assert.equal(sim.delivered.b.length, 0);
    assert.equal(sim.b.stats().drops.sourceNotAllowed, 2);
    assert.equal(sim.peerA.stats.drops.sourceNotAllowed, 2);
    assert.equal(sim.b.stats().drops.innerInvalid, 1);
  });

  await t.step("key confirmation: the responder uses `next` only after first data", () => {
    const sim = new Sim();
    // Hold a's datagrams after the initiation.
    const held: Datagram[] = [];
    sim.filter = (
      d,
    ) => (d.from === "a" && messageType(d.data) === 4 ? (held.push(d), false) : true);
    sim.a.initiate(sim.peerB, sim.now);
    sim.pump();
    assert.ok(sim.peerA.next, "derived but not confirmed");
    assert.equal(sim.peerA.current, null);
    assert.equal(held.length, 1, "the initiator's confirming keepalive");
    sim.b.send(ipv4("10.0.0.2", "10.0.0.1"), sim.now);
    assert.equal(sim.sentOf("b", 4).length, 0, "b must not send with `next`");
    assert.equal(sim.b.stats().queuedPackets, 1);
    sim.filter = () => true;
    sim.inject(held[0]);
    sim.pump();
    assert.equal(sim.peerA.next, null);
    assert.ok(sim.peerA.current);
    assert.equal(sim.delivered.a.length, 1, "queued packet sent once confirmed");
    assert.equal(sim.b.stats().handshakesCompleted, 1);
  });

  await t.step("removing a peer at runtime", () => {
    const sim = new Sim();
    sim.handshake();
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    sim.pump();
    assert.equal(sim.delivered.b.length, 1);
    assert.ok(sim.b.removePeer(sim.a.publicKey));
    assert.equal(sim.b.removePeer(sim.a.publicKey), false);
    assert.equal(sim.b.getPeer(sim.a.publicKey), undefined);
    assert.equal([...sim.b.peers()].length, 0);
    assert.equal(sim.b.stats().indexTableSize, 0);
    assert.equal(sim.b.nextDeadline(), Infinity);
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    sim.pump();
    assert.equal(sim.delivered.b.length, 1);
    assert.equal(sim.b.stats().drops.unknownIndex, 1);
    assert.equal(sim.b.send(ipv4("10.0.0.2", "10.0.0.1"), sim.now), false);
    assert.throws(() => sim.b.sendTo(sim.peerA, new Uint8Array(0), sim.now), RangeError);
    assert.deepEqual(sim.peerA.allowedIps, []);
    // Adding it back lets a new handshake through.
    sim.b.addPeer({ publicKey: sim.a.publicKey, allowedIps: ["10.0.0.1/32"] });
    sim.advance(15_333);
    assert.equal(sim.sentOf("a", 1).length, 2);
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    sim.pump();
    assert.equal(sim.delivered.b.length, 2);
  });

  await t.step("keys are zeroed after 3 × REJECT_AFTER_TIME without a handshake", () => {
    const sim = new Sim();
    sim.handshake();
    const keypair = sim.peerB.current!;
    sim.advance(540_000);
    assert.equal(sim.peerB.current, null);
    assert.deepEqual(keypair.sendKey, new Uint8Array(32));
    assert.ok(sim.events.a.some((e) => e.type === "session-expired"));
    assert.equal(sim.a.stats().indexTableSize, 0);
  });

  await t.step("a handshake that gave up never reports session-expired", () => {
    const sim = new Sim();
    sim.filter = () => false; // nothing arrives: the peer never had a session
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 10), sim.now);
    sim.advance(100_000);
    assert.ok(sim.events.a.some((e) => e.type === "handshake-failed"));
    sim.advance(ZERO_KEYS_AFTER + 60_000);
    assert.deepEqual(sim.events.a.map((e) => e.type), ["handshake-failed"]);
    assert.equal(sim.a.nextDeadline(), Infinity, "no timer left armed");
  });

  await t.step("rekey after messages applies to the responder's session too", () => {
    const sim = new Sim();
    sim.handshake();
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 10), sim.now); // confirms b's session
    sim.pump();
    sim.advance(REKEY_TIMEOUT + 1); // past b's own initiation guard
    const session = sim.peerA.current!;
    assert.equal(session.initiator, false);
    session.sendCounter = REKEY_AFTER_SAFE_MESSAGES;
    sim.b.send(ipv4("10.0.0.2", "10.0.0.1", 10), sim.now);
    assert.equal(sim.sentOf("b", 1).length, 1, "the responder initiates a rekey");
    sim.pump();
    assert.notEqual(sim.peerA.current, session);
    assert.equal(sim.peerA.current!.initiator, true);
  });

  await t.step("rekey after messages: the initiator's session, before the counter runs out", () => {
    const sim = new Sim();
    sim.handshake();
    sim.advance(REKEY_TIMEOUT + 1);
    const session = sim.peerB.current!;
    session.sendCounter = REKEY_AFTER_SAFE_MESSAGES - 2;
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 10), sim.now);
    assert.equal(sim.sentOf("a", 1).length, 1, "below the threshold: no rekey");
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 10), sim.now);
    assert.equal(sim.sentOf("a", 1).length, 2, "at the threshold: a rekey");
    sim.pump();
    assert.equal(sim.delivered.b.length, 2, "the old session still carried both");
    assert.notEqual(sim.peerB.current, session);
  });

  await t.step("IPv6 outer endpoints; AllowedIPs changed at runtime", () => {
    const sim = new Sim();
    sim.endpointA = { address: "2001:db8::a", port: 5555 };
    sim.handshake();
    assert.deepEqual(sim.peerA.endpoint, { address: "2001:db8::a", port: 5555 });
    sim.b.send(ipv4("10.0.0.2", "10.0.0.1"), sim.now);
    sim.pump();
    assert.equal(sim.delivered.a.length, 1);
    // Move 10.0.0.1 away from a: b neither routes to it nor accepts it from a.
    sim.peerA.update({ allowedIps: ["10.0.0.5/32"] });
    assert.deepEqual(sim.peerA.allowedIps.map((c) => c.prefix), [32]);
    assert.equal(sim.b.send(ipv4("10.0.0.2", "10.0.0.1"), sim.now), false);
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2"), sim.now);
    sim.a.send(ipv4("10.0.0.5", "10.0.0.2"), sim.now);
    sim.pump();
    assert.equal(sim.b.stats().drops.sourceNotAllowed, 1);
    assert.equal(sim.delivered.b.length, 1);
    assert.equal(sim.delivered.b[0][15], 5);
    assert.throws(() => sim.peerA.update({ publicKey: key(99) }), RangeError);
  });

  await t.step("padding stops at the MTU", () => {
    const sim = new Sim({ limitsA: { mtu: 1420 } });
    sim.handshake();
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 1419 - 20), sim.now);
    sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 1000 - 20), sim.now);
    sim.pump();
    const lengths = sim.sentOf("a", 4).slice(-2).map((d) => d.data.length - 32);
    assert.deepEqual(lengths, [1420, 1008]);
    assert.equal(sim.delivered.b.length, 2);
    assert.equal(sim.delivered.b[0].length, 1419, "padding removed by the IP length");
  });

  await t.step("the queue is bounded (drop-oldest) and flushed when the handshake gives up", () => {
    const sim = new Sim({ limitsA: { queuePerPeer: 3 } });
    sim.filter = () => false; // nothing arrives
    for (let i = 0; i < 5; i++) sim.a.send(ipv4("10.0.0.1", "10.0.0.2", 10, i), sim.now);
    assert.equal(sim.a.stats().queuedPackets, 3);
    assert.equal(sim.a.stats().drops.queueOverflow, 2);
    assert.deepEqual(sim.peerB.queue.map((p) => p[20]), [2, 3, 4], "the oldest went first");
    sim.advance(89_000);
    assert.equal(sim.sentOf("a", 1).length, 18, "retries every 5 s + jitter");
    assert.ok(!sim.events.a.some((e) => e.type === "handshake-failed"));
    sim.advance(13_000); // 19 × (5 s + up to 333 ms) after the first
    assert.equal(sim.sentOf("a", 1).length, 19, "the first plus 18 retries");
    assert.ok(sim.events.a.some((e) => e.type === "handshake-failed"));
    assert.equal(sim.a.stats().queuedPackets, 0);
    assert.equal(sim.a.stats().drops.queueFlushed, 3);
    assert.equal(sim.a.stats().indexTableSize, 0);
    sim.advance(60_000);
    assert.equal(sim.sentOf("a", 1).length, 19, "no more attempts until new traffic");
  });

  await t.step("misuse throws", () => {
    const sim = new Sim();
    assert.throws(() => sim.a.addPeer({ publicKey: sim.b.publicKey }), RangeError);
    assert.throws(() => sim.a.addPeer({ publicKey: sim.a.publicKey }), RangeError);
    assert.throws(() => sim.a.addPeer({ publicKey: new Uint8Array(31) }), RangeError);
    assert.throws(
      () => sim.a.addPeer({ publicKey: key(50), allowedIps: ["not a cidr"] }),
      RangeError,
    );
  });
});
