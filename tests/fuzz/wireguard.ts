/**
 * Fuzz targets of the WireGuard core: a responder `Device` with one
 * legitimate peer fed random, replayed and mutated datagrams captured from a
 * real exchange; handshake messages with a recomputed, valid MAC1 (so they
 * reach Noise); transport messages correctly encrypted by the legitimate
 * peer around mutated inner packets (so they reach the cryptokey source
 * check); and the message parsers on their own.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Device, type Endpoint } from "../../wireguard/device.ts";
import { defaultBackend } from "../../wireguard/crypto/mod.ts";
import { CookieGenerator } from "../../wireguard/cookie.ts";
import {
  CookieReplyMessage,
  InitiationMessage,
  messageType,
  ResponseMessage,
  TransportMessage,
} from "../../wireguard/messages.ts";
import {
  concat,
  type FuzzRun,
  type FuzzTarget,
  hex,
  mutateBytes,
  type Rng,
  touchGetters,
} from "./harness.ts";
import { corpus, fixChecksums, mutate } from "./packets.ts";

const WALL_BASE = 1_700_000_000_000;

/** A bare IPv4 header of `payload` zero bytes from `src` to `dst`. */
export function bareIpv4(src: string, dst: string, payload = 20): Uint8Array {
  const p = new Uint8Array(20 + payload);
  p[0] = 0x45;
  p[2] = p.length >> 8;
  p[3] = p.length & 0xff;
  p.set(src.split(".").map(Number), 12);
  p.set(dst.split(".").map(Number), 16);
  return p;
}

/** An initiator and a responder device joined by queues, with every datagram captured. */
export interface WireguardPair {
  /** Our server side. */
  responder: Device;
  /** The legitimate client. */
  initiator: Device;
  /** Every datagram either side sent, in order. */
  captured: Uint8Array[];
  /** Datagrams from the initiator not yet delivered (take them to feed them yourself). */
  toResponder: Uint8Array[];
  /** Datagrams from the responder not yet delivered, with their destination. */
  fromResponder: { d: Uint8Array; to: Endpoint }[];
  /** The client's source endpoint. */
  fromA: Endpoint;
  /** Packets the responder delivered. */
  delivered(): number;
  /** Moves the queued datagrams until both sides are quiet, at `now`. */
  pump(now: number): void;
  /**
   * Sets the simulated time the devices' wall clocks follow (a handshake's
   * TAI64N timestamp must grow, or the responder takes it for a replay).
   */
  setClock(now: number): void;
}

/**
 * Two devices that completed a handshake and exchanged data at `now`, and a
 * cookie reply from a loaded responder: messages of all four types captured.
 */
export function wireguardPair(rng: Rng, now: number): WireguardPair {
  const backend = defaultBackend();
  const fromA: Endpoint = { address: "192.0.2.1", port: 1111 };
  const toB: Endpoint = { address: "198.51.100.2", port: 51820 };
  const toA: { d: Uint8Array; to: Endpoint }[] = [];
  const toBQueue: Uint8Array[] = [];
  const captured: Uint8Array[] = [];
  let delivered = 0;
  let clock = now;
  const responder = new Device({
    privateKey: new Uint8Array(32).fill(2),
    backend,
    random: rng.fill,
    wallClock: () => WALL_BASE + clock,
    sendDatagram: (d, to) => toA.push({ d: d.slice(), to }),
    deliverPacket: () => delivered++,
    limits: { rateLimiterEntries: 512 },
  });
  const initiator = new Device({
    privateKey: new Uint8Array(32).fill(1),
    backend,
    random: rng.fill,
    wallClock: () => WALL_BASE + clock,
    sendDatagram: (d) => toBQueue.push(d.slice()),
    deliverPacket: () => {},
  });
  initiator.addPeer({ publicKey: responder.publicKey, allowedIps: ["10.0.0.2/32"], endpoint: toB });
  responder.addPeer({ publicKey: initiator.publicKey, allowedIps: ["10.0.0.1/32"] });
  const pump = (at: number) => {
    for (let guard = 0; toBQueue.length > 0 || toA.length > 0; guard++) {
      assert.ok(guard < 10_000);
      for (const d of toBQueue.splice(0)) {
        captured.push(d);
        responder.receive(d, fromA, at);
      }
      for (const { d } of toA.splice(0)) {
        captured.push(d);
        initiator.receive(d, toB, at);
      }
    }
  };
  initiator.send(bareIpv4("10.0.0.1", "10.0.0.2", 100), now);
  pump(now);
  for (let i = 0; i < 8; i++) initiator.send(bareIpv4("10.0.0.1", "10.0.0.2", i * 30), now);
  responder.send(bareIpv4("10.0.0.2", "10.0.0.1", 40), now);
  pump(now);
  const loaded = new Device({
    privateKey: new Uint8Array(32).fill(2),
    backend,
    random: rng.fill,
    wallClock: () => WALL_BASE + clock,
    sendDatagram: (d) => captured.push(d.slice()),
    deliverPacket: () => {},
    limits: { underLoadThreshold: 0 },
  });
  loaded.receive(captured.find((d) => messageType(d) === 1)!, fromA, now);
  assert.deepEqual([...new Set(captured.map(messageType))].sort(), [1, 2, 3, 4]);
  return {
    responder,
    initiator,
    captured,
    toResponder: toBQueue,
    fromResponder: toA,
    fromA,
    delivered: () => delivered,
    pump,
    setClock: (at) => clock = at,
  };
}

/** Outer sources: IPv4 and IPv6, many of them (rate limiter, roaming). */
export function outerSources(): Endpoint[] {
  const out: Endpoint[] = [];
  for (let i = 0; i < 4096; i++) {
    out.push(
      i % 3 === 0
        ? { address: `2001:db8:${(i * 7919).toString(16)}::${i.toString(16)}`, port: i }
        : { address: `10.${(i >> 8) & 255}.${i & 255}.${i % 7}`, port: 1000 + i },
    );
  }
  return out;
}

/**
 * The responder `Device` under random, replayed, mutated and
 * well-formed-but-hostile datagrams. `loaded`: ten times the handshake rate
 * (the device is under load, cookies are required), and 64 sources that
 * answer cookie replies with a valid MAC2 (so they reach the rate limiter).
 */
function deviceTarget(loaded: boolean): FuzzTarget<{ d: Uint8Array; from: Endpoint }> {
  return {
    name: loaded ? "wireguard-loaded" : "wireguard-device",
    covers: loaded
      ? "Device.receive under load: cookie replies, MAC2, rate limiter"
      : "Device.receive: MAC1, Noise, replay, AEAD, cryptokey routing, roaming",
    msPerInput: loaded ? 0.1 : 2,
    setup: (rng) => deviceRun(rng, loaded),
  };
}

function deviceRun(rng: Rng, loaded: boolean): FuzzRun<{ d: Uint8Array; from: Endpoint }> {
  const pair = wireguardPair(rng, 1000);
  const { responder, initiator, captured } = pair;
  /** The latest sealed transport messages (a ring). */
  const recent: Uint8Array[] = new Array(64);
  let recentAt = 0;
  const backend = defaultBackend();
  const mac = new CookieGenerator(backend, responder.publicKey);
  const server = [...initiator.peers()][0];
  const from = outerSources();
  /** Sources that keep their cookie (loaded only). */
  const cookieSources = from.slice(0, 64).map((endpoint) => ({
    endpoint,
    mac: new CookieGenerator(backend, responder.publicKey),
  }));
  let now = 1000;
  /** The responder's output: responses and keepalives reach the initiator, cookies their source. */
  const drain = (at: number) => {
    for (const { d, to } of pair.fromResponder.splice(0)) {
      const type = messageType(d);
      if (type === 3) {
        const reply = CookieReplyMessage.parse(d);
        const source = cookieSources.find((s) => s.endpoint === to);
        if (reply !== null && source !== undefined) source.mac.consumeReply(reply, at);
      } else if (type === 2 || type === 4) initiator.receive(d, to, at);
    }
    pair.toResponder.length = 0;
  };
  return {
    generate(rng) {
      const kind = rng.next();
      let d: Uint8Array;
      if (kind < 0.1) {
        d = rng.bytes(rng.int(200));
        if (d.length >= 4 && rng.chance(0.5)) d.set([1 + rng.int(4), 0, 0, 0]);
      } else if (kind < 0.25) {
        // A handshake message body change with a valid MAC1: reaches Noise.
        d = rng.pick(captured.filter((m) => m[0] <= 2)).slice();
        const n = 1 + rng.int(4);
        for (let i = 0; i < n; i++) d[4 + rng.int(d.length - 36)] ^= 1 << rng.int(8);
        const offset = d[0] === 1 ? InitiationMessage.MAC1_OFFSET : ResponseMessage.MAC1_OFFSET;
        mac.addMacs(d, offset, now);
      } else if (kind < 0.4) {
        // A transport message sealed with the live session around a
        // hostile inner packet: reaches decryption and the source check.
        let inner = rng.pick(corpus(rng)) ?? rng.bytes(40);
        if (inner[0] >> 4 === 4 && inner.length >= 20 && rng.chance(0.7)) {
          inner.set([10, 0, 0, 1], 12);
          fixChecksums(inner);
        }
        if (rng.chance(0.5)) inner = mutate(rng, inner);
        initiator.sendTo(server, inner.subarray(0, 1400), now);
        d = pair.toResponder.pop() ?? rng.pick(captured);
        pair.toResponder.length = 0;
        // Kept to replay and mutate while its session lives.
        recent[recentAt++ % recent.length] = d;
      } else {
        const base = rng.chance(0.5) && recentAt > 0
          ? recent[rng.int(Math.min(recentAt, recent.length))]
          : rng.pick(captured);
        d = rng.chance(0.2) ? base.slice() : mutateBytes(rng, base, rng.pick(captured));
        const op = rng.next();
        if (op < 0.2 && d.length >= 1) d[0] = rng.int(6);
        else if (op < 0.4 && d.length >= 8) d.set(rng.bytes(4), 4); // indices
        else if (op < 0.6 && d.length >= 16 && d[0] === 4) d.set(rng.bytes(8), 8); // counter
      }
      if (loaded && rng.chance(0.3)) {
        // An initiation with a valid MAC1 and, once a cookie came, MAC2.
        const source = rng.pick(cookieSources);
        d = rng.pick(captured.filter((m) => m[0] === 1)).slice();
        d[8 + rng.int(100)] ^= 1 << rng.int(8);
        source.mac.addMacs(d, InitiationMessage.MAC1_OFFSET, now);
        return { d, from: source.endpoint };
      }
      return { d, from: rng.chance(0.3) ? pair.fromA : rng.pick(from) };
    },
    feed({ d, from }, at) {
      now = at;
      pair.setClock(at);
      responder.receive(d, from, at);
      drain(at);
    },
    show: ({ d, from }) => `${from.address}:${from.port} ${hex(d)}`,
    tick(at) {
      pair.setClock(at);
      responder.poll(at);
      initiator.poll(at);
      drain(at);
    },
    reached() {
      const s = responder.stats();
      const drops = Object.entries(s.drops).filter(([, n]) => n > 0);
      return {
        ...Object.fromEntries(drops),
        handshakes: s.handshakesCompleted,
        delivered: pair.delivered(),
      };
    },
    tables() {
      const s = responder.stats();
      return {
        peers: s.peers,
        indices: s.indexTableSize,
        rateLimiter: s.rateLimiterSize,
        queued: s.queuedPackets,
        handshakesPending: s.handshakesPending,
      };
    },
    bounds: {
      peers: 1,
      indices: 8,
      rateLimiter: loaded ? 512 : 0,
      queued: 1024,
      handshakesPending: 0,
    },
    finish(at) {
      // The legitimate peer still gets through: a fresh handshake when
      // needed, then data both ways.
      const before = pair.delivered();
      drain(at);
      const t = at + 200_000;
      pair.setClock(t);
      responder.poll(t);
      initiator.poll(t);
      initiator.send(bareIpv4("10.0.0.1", "10.0.0.2", 64), t);
      pair.pump(t);
      assert.ok(pair.delivered() > before, "the legitimate peer got through after the fuzzing");
    },
  };
}

/** The responder device at a handshake rate below the load threshold. */
export const wireguardDevice = deviceTarget(false);
/** The responder device under load (cookies, MAC2, rate limiter). */
export const wireguardLoaded = deviceTarget(true);

/** The message views on their own: `parse` of each type, accessors on what parsed. */
export const wireguardMessages: FuzzTarget<Uint8Array> = {
  name: "wireguard-messages",
  covers: "messageType, Initiation/Response/CookieReply/TransportMessage.parse and fields",
  setup(rng) {
    const { captured } = wireguardPair(rng, 1000);
    return {
      generate: (rng) =>
        rng.chance(0.1)
          ? concat(Uint8Array.of(rng.int(6), 0, 0, 0), rng.bytes(rng.int(160)))
          : mutateBytes(rng, rng.pick(captured), rng.pick(captured)),
      feed(d) {
        const type = messageType(d);
        const m = type === 1
          ? InitiationMessage.parse(d)
          : type === 2
          ? ResponseMessage.parse(d)
          : type === 3
          ? CookieReplyMessage.parse(d)
          : type === 4
          ? TransportMessage.parse(d)
          : null;
        touchGetters(m);
      },
      show: hex,
    };
  },
};
