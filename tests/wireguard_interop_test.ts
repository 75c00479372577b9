/**
 * Interop with the real `wireguard-go` (tier 3 in DESIGN.md).
 *
 * Topology per test: a namespace `wgc-<pid>-<n>` joined to the root
 * namespace by a veth pair (198.19.x.y/30 + fd00:19:x::/64). Our `Device`
 * runs in this process, on UDP sockets bound to the root end of the veth,
 * driven by {@linkcode TestDeviceDriver}. `wireguard-go` runs in the
 * namespace with tunnel addresses 192.0.2.2/32 and fd00:99::2/128 and routes
 * 192.0.2.0/24 and fd00:99::/64 through wg0; our side "is" 192.0.2.1 and
 * fd00:99::1. The Linux kernel in the namespace is the other end of the
 * tunnel's inner UDP traffic.
 *
 * Skips with a printed reason when not root or tools are missing; fails
 * under `CI=true`.
 */

import assert from "node:assert/strict";
import {
  buildUdpPacket,
  createVeth,
  type Endpoint,
  Netns,
  NsUdpSocket,
  parseUdpPacket,
  requireOrSkip,
  TestDeviceDriver,
  type VethLink,
  waitFor,
  wgGenKeyPair,
  WireGuardGo,
} from "./netns.ts";
import { Device, type DeviceEvent, type Peer } from "../wireguard/device.ts";
import { generatePrivateKey, keyFromBase64, keyToBase64, publicKey } from "../wireguard/keys.ts";

const netns = await requireOrSkip("wireguard-go interop");

const OUR_V4 = "192.0.2.1";
const OUR_V6 = "fd00:99::1";
const CLIENT_V4 = "192.0.2.2";
const CLIENT_V6 = "fd00:99::2";
const OUR_PORT = 9999;
const CLIENT_WG_PORT = 51820;

const encoder = new TextEncoder();

/** Deterministic bytes (no wall clock, no Math.random: failures reproduce). */
function patternBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Strips the IPv4-mapped prefix a dual-stack socket reports. */
function unmapped(address: string): string {
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}

interface Delivered {
  packet: Uint8Array;
  peer: Peer;
}

/** Everything one test needs; disposing it tears it all down in reverse order. */
interface Rig extends AsyncDisposable {
  ns: Netns;
  link: VethLink;
  wg: WireGuardGo;
  driver: TestDeviceDriver;
  device: Device;
  ourPublicKey: Uint8Array;
  client: { privateKey: string; publicKey: string };
  delivered: Delivered[];
  events: DeviceEvent[];
}

async function createRig(): Promise<Rig> {
  const stack = new AsyncDisposableStack();
  try {
    const ns = stack.use(await Netns.create("wgc"));
    const link = stack.use(await createVeth(null, ns));
    const wg = stack.use(await WireGuardGo.start(ns));
    const driver = stack.use(TestDeviceDriver.open([link.a.v4, link.a.v6]));

    const ourPrivateKey = generatePrivateKey();
    const ourPublicKey = publicKey(ourPrivateKey);
    const client = await wgGenKeyPair();
    const delivered: Delivered[] = [];
    const events: DeviceEvent[] = [];
    const device = new Device({
      privateKey: ourPrivateKey,
      wallClock: () => Date.now(),
      sendDatagram: (datagram: Uint8Array, to: Endpoint) => driver.sendDatagram(datagram, to),
      deliverPacket: (packet: Uint8Array, peer: Peer) =>
        delivered.push({ packet: packet.slice(), peer }),
      onEvent: (event: DeviceEvent) => events.push(event),
    });
    driver.attach(device);
    return {
      ns,
      link,
      wg,
      driver,
      device,
      ourPublicKey,
      client,
      delivered,
      events,
      [Symbol.asyncDispose]: () => stack.disposeAsync(),
    };
  } catch (error) {
    await stack.disposeAsync();
    throw error;
  }
}

/** Brings the client's wg0 up with its tunnel addresses and routes to our side. */
async function clientUp(rig: Rig): Promise<void> {
  await rig.wg.up({
    addresses: [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
    routes: ["192.0.2.0/24", "fd00:99::/64"],
  });
}

/** Waits for the next packet our device delivers (decrypted, from the tunnel). */
async function nextDelivered(rig: Rig, from: number): Promise<Delivered> {
  return await waitFor(`a packet delivered by our device (have ${rig.delivered.length})`, () => {
    if (rig.driver.errors.length > 0) throw rig.driver.errors[0];
    return rig.delivered[from];
  }, { timeoutMs: 15_000 });
}

function failureContext(rig: Rig): string {
  const sent = rig.driver.sent.map((d) => `${d.data[0]}→${d.to.address}:${d.to.port}`);
  const got = rig.driver.received.map((d) => `${d.data[0]}←${d.to.address}:${d.to.port}`);
  return `\nour datagrams out: [${sent.join(", ")}]\nin: [${got.join(", ")}]` +
    `\nevents: [${rig.events.map((e) => e.type).join(", ")}]` +
    `\nwireguard-go log (tail):\n${rig.wg.log.split("\n").slice(-30).join("\n")}`;
}

/** Client kernel → wg0 → wireguard-go → our device: inner headers and payload byte-exact. */
async function checkClientToUs(
  rig: Rig,
  sock: NsUdpSocket,
  version: 4 | 6,
  payload: Uint8Array,
): Promise<void> {
  const index = rig.delivered.length;
  await sock.send(payload, version === 4 ? OUR_V4 : OUR_V6, OUR_PORT);
  const { packet } = await nextDelivered(rig, index).catch((error) => {
    throw new Error(`${(error as Error).message}${failureContext(rig)}`);
  });
  const udp = parseUdpPacket(packet);
  assert.equal(udp.version, version);
  assert.equal(udp.src, version === 4 ? CLIENT_V4 : CLIENT_V6);
  assert.equal(udp.dst, version === 4 ? OUR_V4 : OUR_V6);
  assert.equal(udp.srcPort, sock.port);
  assert.equal(udp.dstPort, OUR_PORT);
  assert.ok(udp.ipChecksumOk, "IPv4 header checksum from the client kernel verifies");
  assert.ok(udp.udpChecksumOk, "UDP checksum from the client kernel verifies");
  assert.equal(hex(udp.payload), hex(payload));
}

/** Our device → wireguard-go → wg0 → a socket in the namespace: payload byte-exact. */
async function checkUsToClient(
  rig: Rig,
  sock: NsUdpSocket,
  version: 4 | 6,
  payload: Uint8Array,
): Promise<void> {
  const packet = buildUdpPacket({
    src: version === 4 ? OUR_V4 : OUR_V6,
    dst: version === 4 ? CLIENT_V4 : CLIENT_V6,
    srcPort: OUR_PORT,
    dstPort: sock.port,
    payload,
  });
  const accepted = rig.driver.call((now) => rig.device.send(packet, now));
  assert.equal(accepted, true, "device.send routes the packet to the client peer");
  const got = await sock.receive(15_000).catch((error) => {
    throw new Error(`${(error as Error).message}${failureContext(rig)}`);
  });
  assert.equal(unmapped(got.address), version === 4 ? OUR_V4 : OUR_V6);
  assert.equal(got.port, OUR_PORT);
  assert.equal(hex(got.data), hex(payload));
}

/** The payloads each direction carries: tiny, text, and near the tunnel MTU (1420). */
function payloads(version: 4 | 6): Uint8Array[] {
  const max = 1420 - (version === 4 ? 20 : 40) - 8;
  return [
    new Uint8Array([version]),
    encoder.encode(`hello over IPv${version} through wireguard-go`),
    patternBytes(max, 0x5eed + version),
  ];
}

/** Our device reported exactly one completed handshake, with the client's peer. */
function assertHandshakeEvent(rig: Rig): void {
  const handshakes = rig.events.filter((e) => e.type === "handshake");
  assert.equal(handshakes.length, 1, `events: ${rig.events.map((e) => e.type)}`);
  const peer = rig.device.getPeer(keyFromBase64(rig.client.publicKey));
  assert.ok(peer !== undefined && handshakes[0].peer === peer, "the event names the client's peer");
}

/** The non-zero drop counters of our device (a clean run has none). */
function drops(rig: Rig): Record<string, number> {
  return Object.fromEntries(
    Object.entries(rig.device.stats().drops).filter(([, n]) => n !== 0),
  );
}

/**
 * `count` datagrams each way, sent back to back, each payload carrying its
 * index: every one arrives, byte-exact (order is not asserted).
 */
async function checkBurst(rig: Rig, sock: NsUdpSocket, count: number): Promise<void> {
  const make = (i: number, version: number) => {
    const payload = patternBytes(1000, 0xb0 + i * 7 + version);
    payload[0] = version;
    payload[1] = i;
    return payload;
  };
  // Client → us.
  const base = rig.delivered.length;
  for (let i = 0; i < count; i++) {
    await sock.send(make(i, 4), OUR_V4, OUR_PORT);
    await sock.send(make(i, 6), OUR_V6, OUR_PORT);
  }
  await waitFor(`${2 * count} delivered packets`, () => {
    if (rig.driver.errors.length > 0) throw rig.driver.errors[0];
    return rig.delivered.length - base >= 2 * count ? true : undefined;
  }, { timeoutMs: 15_000 });
  const seen = new Set<string>();
  for (const { packet } of rig.delivered.slice(base)) {
    const udp = parseUdpPacket(packet);
    assert.ok(udp.udpChecksumOk);
    const key = `${udp.version}/${udp.payload[1]}`;
    assert.equal(hex(udp.payload), hex(make(udp.payload[1], udp.version)), key);
    seen.add(key);
  }
  assert.equal(seen.size, 2 * count);
  // Us → client: all handed to the device in one synchronous run.
  rig.driver.call((now) => {
    for (let i = 0; i < count; i++) {
      for (const version of [4, 6] as const) {
        const packet = buildUdpPacket({
          src: version === 4 ? OUR_V4 : OUR_V6,
          dst: version === 4 ? CLIENT_V4 : CLIENT_V6,
          srcPort: OUR_PORT,
          dstPort: sock.port,
          payload: make(i, version),
        });
        assert.equal(rig.device.send(packet, now), true);
      }
    }
  });
  const got = new Set<string>();
  while (got.size < 2 * count) {
    const d = await sock.receive(15_000);
    const key = `${d.data[0]}/${d.data[1]}`;
    assert.equal(hex(d.data), hex(make(d.data[1], d.data[0])), key);
    assert.ok(!got.has(key), `duplicate ${key}`);
    got.add(key);
  }
}

function typesOf(datagrams: { data: Uint8Array }[]): number[] {
  return datagrams.map((d) => d.data[0]);
}

Deno.test({
  name: "harness: wireguard-go ↔ wireguard-go across two namespaces",
  ignore: netns.ignore,
  async fn(t) {
    netns.assert();
    const a = await wgGenKeyPair();
    const b = await wgGenKeyPair();
    await using nsA = await Netns.create("wga");
    await using nsB = await Netns.create("wgb");
    await using link = await createVeth(nsA, nsB);
    await using wa = await WireGuardGo.start(nsA);
    await using wb = await WireGuardGo.start(nsB);
    await wa.configure({
      privateKey: a.privateKey,
      listenPort: 51820,
      peers: [{
        publicKey: b.publicKey,
        endpoint: `${link.b.v4}:51821`,
        allowedIps: [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
      }],
    });
    await wb.configure({
      privateKey: b.privateKey,
      listenPort: 51821,
      peers: [{ publicKey: a.publicKey, allowedIps: [`${OUR_V4}/32`, `${OUR_V6}/128`] }],
    });
    await wa.up({
      addresses: [`${OUR_V4}/32`, `${OUR_V6}/128`],
      routes: [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
    });
    await wb.up({
      addresses: [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
      routes: [`${OUR_V4}/32`, `${OUR_V6}/128`],
    });
    await using receiver = await NsUdpSocket.bind(nsB, "::", OUR_PORT);
    await using sender = await NsUdpSocket.bind(nsA, "::");

    await t.step("UDP over IPv4 and IPv6 inside the tunnel, byte-exact", async () => {
      for (const [version, to] of [[4, CLIENT_V4], [6, CLIENT_V6]] as const) {
        const payload = patternBytes(1000, version);
        await sender.send(payload, to, OUR_PORT);
        const got = await receiver.receive(15_000);
        assert.equal(unmapped(got.address), version === 4 ? OUR_V4 : OUR_V6);
        assert.equal(got.port, sender.port);
        assert.equal(hex(got.data), hex(payload));
      }
    });

    await t.step("both ends report the handshake", async () => {
      assert.ok((await wa.latestHandshake(b.publicKey)) > 0);
      assert.ok((await wb.latestHandshake(a.publicKey)) > 0);
    });
  },
});

Deno.test({
  name: "interop: wireguard-go initiates, our device responds",
  ignore: netns.ignore,
  async fn(t) {
    netns.assert();
    await using rig = await createRig();
    const { wg, driver, device, client } = rig;

    await t.step("keys: our X25519 agrees with `wg pubkey`", () => {
      assert.equal(keyToBase64(publicKey(keyFromBase64(client.privateKey))), client.publicKey);
    });

    device.addPeer({
      publicKey: keyFromBase64(client.publicKey),
      allowedIps: [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
    });
    await wg.configure({
      privateKey: client.privateKey,
      peers: [{
        publicKey: keyToBase64(rig.ourPublicKey),
        endpoint: `${rig.link.a.v4}:${driver.port}`,
        allowedIps: ["192.0.2.0/24", "fd00:99::/64"],
      }],
    });
    await clientUp(rig);
    await using sock = await NsUdpSocket.bind(rig.ns, "::");

    await t.step("client → us over IPv4 (first datagram triggers the handshake)", async () => {
      for (const payload of payloads(4)) await checkClientToUs(rig, sock, 4, payload);
    });

    await t.step("handshake: wireguard-go and our device both report it", async () => {
      assert.ok((await wg.latestHandshake(rig.ourPublicKey)) > 0, "wg show latest-handshakes");
      assert.equal(typesOf(driver.received)[0], 1, "the first datagram in is an initiation");
      assert.equal(typesOf(driver.sent)[0], 2, "our first datagram out is a response");
      assert.equal(typesOf(driver.sent).filter((x) => x === 2).length, 1, "one response");
      assertHandshakeEvent(rig);
      const stats = device.stats();
      assert.equal(stats.handshakesReceived, 1);
      assert.equal(stats.handshakesCompleted, 1);
      assert.equal(stats.handshakesSent, 0);
    });

    await t.step("client → us over IPv6", async () => {
      for (const payload of payloads(6)) await checkClientToUs(rig, sock, 6, payload);
    });

    await t.step("us → client over IPv4 and IPv6", async () => {
      for (const payload of payloads(4)) await checkUsToClient(rig, sock, 4, payload);
      for (const payload of payloads(6)) await checkUsToClient(rig, sock, 6, payload);
    });

    await t.step("a burst of 32 datagrams per family each way, none lost", async () => {
      await checkBurst(rig, sock, 32);
    });

    await t.step("wireguard-go counted our traffic", async () => {
      const transfer = (await wg.transfer()).get(keyToBase64(rig.ourPublicKey));
      assert.ok(transfer && transfer.rx > 0 && transfer.tx > 0, JSON.stringify(transfer));
      assert.deepEqual(driver.errors, []);
    });

    await t.step("the client roams to an IPv6 outer endpoint; we follow", async () => {
      await wg.configure({
        peers: [{
          publicKey: keyToBase64(rig.ourPublicKey),
          endpoint: `[${rig.link.a.v6}]:${driver.port}`,
        }],
      });
      await checkClientToUs(rig, sock, 4, encoder.encode("from the v6 outer endpoint"));
      const last = driver.received[driver.received.length - 1];
      assert.equal(last.to.address, rig.link.b.v6);
      const sentBefore = driver.sent.length;
      await checkUsToClient(rig, sock, 6, encoder.encode("back to the v6 outer endpoint"));
      const reply = driver.sent.slice(sentBefore).find((d) => d.data[0] === 4);
      assert.equal(reply?.to.address, rig.link.b.v6, "our reply goes to the roamed endpoint");
      assert.ok(rig.events.some((e) => e.type === "roam"), "a roam event");
    });

    await t.step("our device dropped nothing", () => {
      assert.deepEqual(drops(rig), {});
      assert.deepEqual(driver.errors, []);
    });
  },
});

Deno.test({
  name: "interop: our device initiates, wireguard-go responds",
  ignore: netns.ignore,
  async fn(t) {
    netns.assert();
    await using rig = await createRig();
    const { wg, driver, device, client } = rig;

    await wg.configure({
      privateKey: client.privateKey,
      listenPort: CLIENT_WG_PORT,
      peers: [{
        publicKey: keyToBase64(rig.ourPublicKey),
        allowedIps: ["192.0.2.0/24", "fd00:99::/64"],
      }],
    });
    await clientUp(rig);
    await using sock = await NsUdpSocket.bind(rig.ns, "::");
    const peer = device.addPeer({
      publicKey: keyFromBase64(client.publicKey),
      allowedIps: [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
      endpoint: { address: rig.link.b.v4, port: CLIENT_WG_PORT },
    });

    await t.step("handshake: we initiate, wireguard-go answers", async () => {
      driver.call((now) => device.initiate(peer, now));
      await waitFor("wireguard-go to report the handshake", async () => {
        if (driver.errors.length > 0) throw driver.errors[0];
        return (await wg.latestHandshake(rig.ourPublicKey)) > 0 ? true : undefined;
      }, { timeoutMs: 15_000 }).catch((error) => {
        throw new Error(`${(error as Error).message}${failureContext(rig)}`);
      });
      await waitFor("our device to receive the response", () => {
        return typesOf(driver.received).includes(2) ? true : undefined;
      });
      assert.equal(typesOf(driver.sent)[0], 1, "our first datagram out is an initiation");
      assertHandshakeEvent(rig);
    });

    await t.step("client → us over IPv4 and IPv6 (session confirmed by us)", async () => {
      for (const payload of payloads(4)) await checkClientToUs(rig, sock, 4, payload);
      for (const payload of payloads(6)) await checkClientToUs(rig, sock, 6, payload);
      assert.ok(
        !typesOf(driver.received).includes(1),
        `wireguard-go needed no handshake of its own: in ${typesOf(driver.received)}`,
      );
    });

    await t.step("us → client over IPv4 and IPv6", async () => {
      for (const payload of payloads(4)) await checkUsToClient(rig, sock, 4, payload);
      for (const payload of payloads(6)) await checkUsToClient(rig, sock, 6, payload);
      assert.deepEqual(driver.errors, []);
    });

    await t.step("a burst of 32 datagrams per family each way, none lost", async () => {
      await checkBurst(rig, sock, 32);
    });

    await t.step("one handshake in all, nothing dropped", () => {
      const stats = device.stats();
      assert.equal(stats.handshakesSent, 1);
      assert.equal(stats.handshakesCompleted, 1);
      assert.equal(stats.handshakesReceived, 0);
      assert.ok(stats.keepalivesSent >= 1, "we confirmed the session with a keepalive");
      assert.deepEqual(drops(rig), {});
    });
  },
});

Deno.test({
  name: "interop: our device initiates over an IPv6 outer endpoint",
  ignore: netns.ignore,
  async fn() {
    netns.assert();
    await using rig = await createRig();
    const { wg, device, client } = rig;
    await wg.configure({
      privateKey: client.privateKey,
      listenPort: CLIENT_WG_PORT,
      peers: [{
        publicKey: keyToBase64(rig.ourPublicKey),
        allowedIps: ["192.0.2.0/24", "fd00:99::/64"],
      }],
    });
    await clientUp(rig);
    await using sock = await NsUdpSocket.bind(rig.ns, "::");
    device.addPeer({
      publicKey: keyFromBase64(client.publicKey),
      allowedIps: [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
      endpoint: { address: rig.link.b.v6, port: CLIENT_WG_PORT },
    });
    // No explicit initiate: the first packet we send starts the handshake.
    await checkUsToClient(rig, sock, 6, encoder.encode("queued until the handshake completes"));
    await checkClientToUs(rig, sock, 6, encoder.encode("and back"));
    assert.ok(rig.driver.sent.every((d) => d.to.address === rig.link.b.v6));
  },
});

Deno.test({
  name: "interop: an unknown client key gets no answer",
  ignore: netns.ignore,
  async fn() {
    netns.assert();
    await using rig = await createRig();
    const { wg, driver, device, client } = rig;
    // Our device knows some other key, not the client's.
    device.addPeer({
      publicKey: publicKey(generatePrivateKey()),
      allowedIps: [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
    });
    await wg.configure({
      privateKey: client.privateKey,
      peers: [{
        publicKey: keyToBase64(rig.ourPublicKey),
        endpoint: `${rig.link.a.v4}:${driver.port}`,
        allowedIps: ["192.0.2.0/24", "fd00:99::/64"],
      }],
    });
    await clientUp(rig);
    await using sock = await NsUdpSocket.bind(rig.ns, "::");
    await sock.send(encoder.encode("let me in"), OUR_V4, OUR_PORT);
    await waitFor("an initiation from wireguard-go", () => {
      return typesOf(driver.received).includes(1) ? true : undefined;
    }, { timeoutMs: 15_000 });
    // The device handles a datagram synchronously in receive(); also let a
    // timer deadline or two pass in case an answer were scheduled.
    await new Promise((r) => setTimeout(r, 300));
    driver.call((now) => device.poll(now));
    assert.deepEqual(driver.sent, [], "not a single datagram sent to an unknown key");
    const stats = device.stats();
    assert.ok(stats.drops.unknownPeer >= 1, JSON.stringify(drops(rig)));
    assert.equal(stats.handshakesReceived, 0);
    assert.equal(stats.cookieRepliesSent, 0);
    assert.deepEqual(rig.delivered, []);
    assert.equal(await wg.latestHandshake(rig.ourPublicKey), 0);
    assert.deepEqual(driver.errors, []);
  },
});
