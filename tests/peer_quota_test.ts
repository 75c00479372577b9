/**
 * Per-peer quotas of the netstack, end to end on loopback (no root needed):
 * two of our own WireGuard clients (tests/_client.ts) talk to one `serve()`.
 * Peer A floods half-open SYNs and first fragments that never complete;
 * peer B's SYNs waiting for a decision and B's fragmented datagram keep
 * their places (`serve()` passes the peer of each packet to the netstack,
 * whose tables count per source).
 */

import assert from "node:assert/strict";
import { generatePrivateKey, parseIp, publicKey } from "@wgstack/wireguard";
import { emitIpv4Header, emitUdp, IP_PROTOCOL_UDP } from "@wgstack/netstack/wire";
import { type AcceptDecision, serve, type ServeOptions } from "@wgstack/server";
import { startTestClient } from "./_client.ts";
import { waitFor } from "./netns.ts";
import { ipv4Syn } from "./_packets.ts";

const A4 = "10.7.0.2";
const B4 = "10.7.0.3";
const TARGET = "198.18.0.1";

/** A UDP datagram of `size` payload bytes from `src`, cut into two IPv4 fragments. */
function fragments(src: string, id: number, size: number): [Uint8Array, Uint8Array] {
  const s = parseIp(src)!, d = parseIp(TARGET)!;
  const udp = new Uint8Array(8 + size);
  const payload = new Uint8Array(size).map((_, i) => (i * 13 + id) & 0xff);
  emitUdp(udp, { src: s, dst: d, srcPort: 5000, dstPort: 7000, payload });
  const cut = 1200;
  const part = (offset: number, end: number, more: boolean) => {
    const p = new Uint8Array(20 + end - offset);
    emitIpv4Header(p, {
      src: s,
      dst: d,
      protocol: IP_PROTOCOL_UDP,
      payloadLength: end - offset,
      identification: id,
      moreFragments: more,
      fragmentOffset: offset,
    });
    p.set(udp.subarray(offset, end), 20);
    return p;
  };
  return [part(0, cut, true), part(cut, udp.length, false)];
}

/** A server with peers A and B, one of our own clients for each, handshakes done. */
async function twoPeers(options: Omit<ServeOptions, "privateKey">) {
  const keyA = generatePrivateKey(), keyB = generatePrivateKey(), serverKey = generatePrivateKey();
  const server = await serve({
    privateKey: serverKey,
    hostname: "127.0.0.1",
    port: 0,
    peers: [
      { publicKey: publicKey(keyA), allowedIps: [`${A4}/32`], name: "A" },
      { publicKey: publicKey(keyB), allowedIps: [`${B4}/32`], name: "B" },
    ],
    shutdownTimeout: 500,
    ...options,
  });
  const client = (key: Uint8Array, address4: string) =>
    startTestClient({
      serverPublicKey: publicKey(serverKey),
      serverPort: server.addr.port,
      privateKey: key,
      address4,
    });
  const a = client(keyA, A4), b = client(keyB, B4);
  await Promise.all([a.handshake(), b.handshake()]);
  return {
    server,
    a,
    b,
    keyA,
    async [Symbol.asyncDispose]() {
      a.close();
      b.close();
      await server.shutdown();
    },
  };
}

Deno.test({
  name: "per-peer quotas: one peer's SYN and fragment floods do not take another's places",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // B's SYNs to port 81 wait for this decision; A's to port 9 wait forever.
    let decideB!: (d: AcceptDecision) => void;
    const decisionB = new Promise<AcceptDecision>((r) => decideB = r);
    let asksB = 0;
    const datagrams: Uint8Array[] = [];
    await using peers = await twoPeers({
      accept: (info) => {
        if (info.destination.port === 9) return new Promise<AcceptDecision>(() => {});
        asksB++;
        return decisionB;
      },
      onTcp: (s) => s.readable.pipeTo(s.writable),
      onUdp: async (flow) => {
        for await (const d of flow.readable) datagrams.push(d);
      },
      limits: { netstack: { tcpHalfOpen: 64, reassemblyDatagrams: 32 } },
    });
    const { server, a, b } = peers;
    {
      // B: three connections waiting for a decision, and the first half of a datagram.
      const conns = [0, 1, 2].map(() => b.connect(TARGET, 81));
      const [first, second] = fragments(B4, 77, 2000);
      b.sendPacket(first);
      const layer = () => server.stats().netstack.tcp.layer!;
      await waitFor("B's SYNs", () => layer().halfOpen >= 3 || undefined);

      // A: 3,000 SYNs that are never decided and 1,000 first fragments that never complete.
      for (let i = 0; i < 3000; i++) {
        a.sendPacket(ipv4Syn(A4, 10_000 + i, TARGET, 9));
        if (i < 1000) a.sendPacket(fragments(A4, 1000 + i, 2000)[0]);
        if (i % 100 === 99) await new Promise((r) => setTimeout(r, 5));
      }
      await waitFor("A's flood", () => layer().halfOpenEvicted >= 2900 || undefined, {
        timeoutMs: 20_000,
      });
      await waitFor("A's fragments", () => {
        const f = server.stats().netstack.fragments;
        return f.fragments >= 1001 || undefined;
      }, { timeoutMs: 20_000 });
      const stats = server.stats().netstack;
      assert.ok(stats.tcp.layer!.halfOpen <= 64);
      assert.ok(stats.fragments.datagrams <= 32);
      assert.ok(stats.fragments.drops.sourceQuota > 900, JSON.stringify(stats.fragments.drops));

      // B's datagram completes and B's waiting connections open and echo.
      b.sendPacket(second);
      decideB("accept");
      for (const conn of conns) {
        const writer = conn.writable.getWriter();
        await writer.write(new TextEncoder().encode("still here"));
        await writer.close();
        assert.equal(await new Response(conn.readable).text(), "still here");
      }
      // Each of B's SYNs was asked about once: none was evicted (a retransmitted SYN would ask again).
      assert.equal(asksB, 3);
      await waitFor("B's datagram", () => datagrams.length > 0 || undefined);
      assert.equal(datagrams.length, 1);
      assert.equal(datagrams[0].length, 2000);
      assert.equal(datagrams[0][1999], (1999 * 13 + 77) & 0xff);
    }
  },
});

/** A service on loopback that streams a byte pattern (byte i is i & 0xff) to each connection. */
function streamingService(): { port: number; [Symbol.dispose](): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const chunk = new Uint8Array(16384).map((_, i) => i & 0xff);
  const conns = new Set<Deno.Conn>();
  (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      (async () => {
        try {
          for (;;) await conn.write(chunk);
        } catch {
          // the relay closed it
        }
      })();
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    [Symbol.dispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
    },
  };
}

Deno.test({
  name: "per-peer send bytes: a peer that stops reading holds its budget; another peer downloads",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    using service = streamingService();
    const BUDGET = 65536;
    await using peers = await twoPeers({
      // Every destination is the streaming service (our client stack does not talk to loopback).
      forward: {
        connect: (_host, _port, signal) =>
          Deno.connect({ hostname: "127.0.0.1", port: service.port, signal }),
        interfaces: () => [],
      },
      limits: { netstack: { perSource: { tcpSendBytes: BUDGET } } },
    });
    const { server, a, b, keyA } = peers;
    {
      // A: eight downloads it never reads.
      const stalled = Array.from({ length: 8 }, () => a.connect(TARGET, 80));
      await waitFor("A's buffers to fill", () => {
        const usage = server.peerUsage(publicKey(keyA))!;
        return usage.tcpSendBytes >= BUDGET / 2 || undefined;
      });
      // B downloads 4 MiB meanwhile.
      const reader = b.connect(TARGET, 80).readable.getReader();
      let got = 0;
      while (got < 4 << 20) {
        const { value, done } = await reader.read();
        assert.ok(!done);
        for (let i = 0; i < value.length; i += 4099) assert.equal(value[i], (got + i) & 0xff);
        got += value.length;
      }
      await reader.cancel();
      // A never held more than its budget in the server's send buffers.
      const usage = server.peerUsage(publicKey(keyA))!;
      assert.equal(usage.tcpConnections, 8);
      assert.ok(usage.tcpSendBytes <= BUDGET, `${usage.tcpSendBytes} bytes`);
      // Nothing of A's was dropped: a stalled download goes on, in order, once read.
      const r = stalled[3].readable.getReader();
      let n = 0;
      while (n < 1 << 20) {
        const { value } = await r.read();
        for (let i = 0; i < value!.length; i += 997) assert.equal(value![i], (n + i) & 0xff);
        n += value!.length;
      }
      await r.cancel();
    }
  },
});
