/**
 * Fuzz target of the whole server data path: `serve()` over an in-memory
 * socket, with echo handlers, fed datagrams that a legitimate client seals
 * around hostile inner packets (so they pass WireGuard and reach the
 * netstack, the flow tables and the handlers), plus garbage and mutated
 * datagrams from anywhere. The server catches what its cores throw and logs
 * it as an error: each such log counts as a crash here.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Device, type Peer } from "../../wireguard/device.ts";
import { generatePrivateKey, publicKey } from "../../wireguard/keys.ts";
import { serve, type ServeLogRecord, type Server } from "../../server/serve.ts";
import type { UdpEndpoint, UdpSocket } from "../../server/udp.ts";
import { type FuzzRun, type FuzzTarget, hex, mutateBytes, type Rng } from "./harness.ts";
import { corpus, fixChecksums, mutate } from "./packets.ts";

const LIMITS = { tcpConnections: 256, tcpHalfOpen: 64, udpFlows: 128 };
const CLIENT: UdpEndpoint = { address: "192.0.2.7", port: 4444 };

/** A socket whose datagrams come from the test. */
class MemorySocket implements UdpSocket {
  readonly addr: UdpEndpoint = { address: "127.0.0.1", port: 51820 };
  onDatagram: (data: Uint8Array, from: UdpEndpoint) => void = () => {};
  sent = 0;
  #close: () => void = () => {};
  constructor(readonly deliver: (data: Uint8Array, to: UdpEndpoint) => void) {}
  listen(onDatagram: (data: Uint8Array, from: UdpEndpoint) => void): Promise<void> {
    this.onDatagram = onDatagram;
    return new Promise((resolve) => this.#close = resolve);
  }
  send(data: Uint8Array, to: UdpEndpoint): void {
    this.sent++;
    this.deliver(data, to);
  }
  stats() {
    return { received: 0, sent: this.sent, sendDropped: 0, sendErrors: 0 };
  }
  close(): void {
    this.#close();
  }
}

const turn = () => new Promise((r) => setTimeout(r, 0));

async function serverRun(rng: Rng): Promise<FuzzRun<{ d: Uint8Array; from: UdpEndpoint }>> {
  const serverKey = generatePrivateKey();
  const errors: ServeLogRecord[] = [];
  let handshaken = false;
  const socket = new MemorySocket((d) =>
    client.receive(d, { address: "127.0.0.1", port: 51820 }, performance.now())
  );
  const captured: Uint8Array[] = [];
  let sealed: Uint8Array | undefined;
  const client: Device = new Device({
    privateKey: generatePrivateKey(),
    random: rng.fill,
    wallClock: () => Date.now(),
    sendDatagram: (d) => {
      sealed = d.slice();
      if (!handshaken) socket.onDatagram(sealed, CLIENT);
    },
    deliverPacket: () => {},
    onEvent: (e) => {
      if (e.type === "handshake") handshaken = true;
    },
  });
  const server: Server = await serve({
    privateKey: serverKey,
    socket,
    peers: [{ publicKey: client.publicKey, allowedIps: ["10.7.0.2/32", "fd00:7::2/128"] }],
    onTcp: (c) => void c.readable.pipeTo(c.writable).catch(() => {}),
    onUdp: (f) => void f.readable.pipeTo(f.writable).catch(() => {}),
    limits: { netstack: { ...LIMITS, perSource: { udpFlows: 64 } } },
    logger: (r) => {
      if (r.level === "error") errors.push(r);
    },
    shutdownTimeout: 100,
  });
  const peer: Peer = client.addPeer({
    publicKey: publicKey(serverKey),
    allowedIps: ["0.0.0.0/0", "::/0"],
    endpoint: { address: "127.0.0.1", port: 51820 },
  });
  client.initiate(peer, performance.now());
  for (let i = 0; i < 100 && !handshaken; i++) await turn();
  assert.ok(handshaken, "the client completed a handshake");
  const v4 = Uint8Array.of(10, 7, 0, 2);
  const v6 = Uint8Array.of(0xfd, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2);
  return {
    generate(rng) {
      const kind = rng.next();
      if (kind < 0.05) return { d: rng.bytes(rng.int(200)), from: CLIENT };
      if (kind < 0.1 && captured.length > 0) {
        return { d: mutateBytes(rng, rng.pick(captured)), from: CLIENT };
      }
      // A hostile inner packet from the client's own address, sealed.
      let inner = rng.pick(corpus(rng)) ?? rng.bytes(40);
      if (inner.length >= 40 && inner[0] >> 4 === 6) inner.set(v6, 8);
      else if (inner.length >= 20 && inner[0] >> 4 === 4) inner.set(v4, 12);
      fixChecksums(inner);
      if (rng.chance(0.4)) inner = mutate(rng, inner);
      sealed = undefined;
      client.sendTo(peer, inner.subarray(0, 1400), performance.now());
      const d = sealed ?? rng.bytes(32);
      if (captured.length < 64) captured.push(d);
      return { d, from: CLIENT };
    },
    feed({ d, from }) {
      socket.onDatagram(d, from);
      if (errors.length > 0) throw new Error(JSON.stringify(errors.splice(0)));
    },
    show: ({ d, from }) => `${from.address}:${from.port} ${hex(d)}`,
    async tick() {
      await turn();
      if (errors.length > 0) throw new Error(JSON.stringify(errors.splice(0)));
    },
    tables() {
      const s = server.stats();
      return {
        tcpOpen: s.tcpOpen,
        udpOpen: s.udpOpen,
        tcpConnections: s.netstack.tcp.layer!.connections,
        tcpHalfOpen: s.netstack.tcp.layer!.halfOpen,
        udpFlows: s.netstack.udp.flows,
        fragments: s.netstack.fragments.datagrams,
        indices: s.wireguard.indexTableSize,
        queued: s.wireguard.queuedPackets,
      };
    },
    bounds: {
      tcpOpen: LIMITS.tcpConnections,
      udpOpen: LIMITS.udpFlows,
      tcpConnections: LIMITS.tcpConnections,
      tcpHalfOpen: LIMITS.tcpHalfOpen,
      udpFlows: LIMITS.udpFlows,
      fragments: 256,
      indices: 4,
      queued: 1024,
    },
    reached() {
      const s = server.stats();
      return {
        delivered: s.netstack.packetsIn,
        tcpSegments: s.netstack.tcp.segmentsIn,
        udpOpened: s.netstack.udp.opened,
        echoReplies: s.netstack.icmp.echoReplies,
        sent: socket.sent,
      };
    },
    async finish() {
      await server.shutdown();
      assert.deepEqual(errors, []);
    },
  };
}

/** `serve()` end to end over an in-memory socket. */
export const serverTarget: FuzzTarget<{ d: Uint8Array; from: UdpEndpoint }> = {
  name: "server-datapath",
  covers: "serve(): socket → Device → NetStack → flow tables and handlers, and back",
  setup: serverRun,
};
