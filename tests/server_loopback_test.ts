/**
 * End to end on loopback, no root needed: our WireGuard client (Device +
 * NetStack) → UDP 127.0.0.1 → `serve()` with echo handlers. The interop tests
 * with wireguard-go live in server_interop_test.ts.
 */

import assert from "node:assert/strict";
import {
  generatePrivateKey,
  keyFromBase64,
  keyToBase64,
  libcryptoBackend,
  publicKey,
} from "@wgstack/wireguard";
import type { TcpError } from "@wgstack/netstack";
import { serve, type ServeOptions } from "@wgstack/server";
import {
  type ServerWithClient,
  startServerWithClient,
  startTestClient,
  type TestClient,
} from "./_client.ts";
import { xorshift32 } from "./_prng.ts";

const CLIENT4 = "10.7.0.2";
const CLIENT6 = "fd00:7::2";

function setup(extra: Partial<ServeOptions> = {}): Promise<ServerWithClient> {
  return startServerWithClient({
    serve: {
      onTcp: (s) => s.readable.pipeTo(s.writable),
      onUdp: async (flow) => {
        const writer = flow.writable.getWriter();
        for await (const d of flow.readable) await writer.write(d);
      },
      shutdownTimeout: 1000,
      ...extra,
    },
    address4: CLIENT4,
    address6: CLIENT6,
    name: "test-client",
  });
}

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  const next = xorshift32(seed);
  for (let i = 0; i < length; i++) out[i] = next() & 0xff;
  return out;
}

async function readAll(
  readable: ReadableStream<Uint8Array>,
  expected: number,
): Promise<Uint8Array> {
  const out = new Uint8Array(expected);
  let n = 0;
  for await (const chunk of readable) {
    assert.ok(n + chunk.length <= expected, `received more than the ${expected} bytes sent`);
    out.set(chunk, n);
    n += chunk.length;
  }
  assert.equal(n, expected);
  return out;
}

async function echoRoundTrip(client: TestClient, address: string, size: number, seed: number) {
  const conn = client.connect(address, 7);
  const data = pattern(size, seed);
  const reading = readAll(conn.readable, size);
  const writer = conn.writable.getWriter();
  for (let i = 0; i < size; i += 16384) await writer.write(data.subarray(i, i + 16384));
  await writer.close();
  assert.deepEqual(await reading, data);
}

Deno.test("serve() on loopback with our own client", async (t) => {
  await t.step("handshake, then TCP echo of 1 MB over IPv4 and IPv6 (full duplex)", async () => {
    await using env = await setup();
    await env.client.handshake();
    await Promise.all([
      echoRoundTrip(env.client, "192.0.2.80", 1 << 20, 1),
      echoRoundTrip(env.client, "2001:db8::80", 1 << 20, 2),
    ]);
    const peers = env.server.stats().wireguard;
    assert.ok(peers.handshakesCompleted >= 1);
  });

  await t.step("each connection carries peer, source and destination", async () => {
    const seen: { source: unknown; destination: unknown; peer: string; name?: string }[] = [];
    await using env = await setup({
      onTcp: (s) => {
        seen.push({
          source: s.source,
          destination: s.destination,
          peer: s.peer.publicKey,
          name: s.peer.name,
        });
        return s.readable.pipeTo(s.writable);
      },
    });
    await env.client.handshake();
    await echoRoundTrip(env.client, "198.18.5.5", 1000, 3);
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0].destination, { address: "198.18.5.5", port: 7 });
    assert.equal((seen[0].source as { address: string }).address, CLIENT4);
    assert.equal(seen[0].peer, keyToBase64(env.client.publicKey));
    assert.equal(seen[0].name, "test-client");
  });

  await t.step("UDP echo of full-MTU datagrams over IPv4 and IPv6", async () => {
    await using env = await setup();
    await env.client.handshake();
    const p4 = pattern(1420 - 28, 4);
    const p6 = pattern(1420 - 48, 5);
    env.client.sendUdp({ address: CLIENT4, port: 5000 }, { address: "192.0.2.53", port: 9 }, p4);
    env.client.sendUdp({ address: CLIENT6, port: 5000 }, { address: "2001:db8::53", port: 9 }, p6);
    const got: Uint8Array[] = [];
    for (let i = 0; i < 200 && env.client.flows.length < 2; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(env.client.flows.length, 2);
    for (const flow of env.client.flows) {
      const reader = flow.readable.getReader();
      const { value } = await reader.read();
      reader.releaseLock();
      got.push(value!);
    }
    got.sort((a, b) => a.length - b.length);
    assert.deepEqual(got[0], p6);
    assert.deepEqual(got[1], p4);
  });

  await t.step("accept policy: refusing with RST errors the client's stream", async () => {
    const asked: number[] = [];
    await using env = await setup({
      accept: (info) => {
        asked.push(info.destination.port);
        return info.destination.port === 23 ? "rst" : "accept";
      },
    });
    await env.client.handshake();
    const conn = env.client.connect("192.0.2.23", 23);
    // A RST answering our SYN: refused (ICMP would be EHOSTUNREACH, a drop a timeout).
    await assert.rejects(readAll(conn.readable, 0), (e: TcpError) => e.code === "ECONNREFUSED");
    assert.equal(env.server.stats().tcpOpen, 0);
    await echoRoundTrip(env.client, "192.0.2.24", 1000, 9);
    assert.deepEqual(asked, [23, 7]);
  });

  await t.step("accept policy may decide later (dial first)", async () => {
    await using env = await setup({
      accept: () => new Promise((resolve) => setTimeout(() => resolve(true), 50)),
    });
    await env.client.handshake();
    await echoRoundTrip(env.client, "192.0.2.81", 10_000, 6);
  });

  await t.step("without handlers, connections come from the async iterator", async () => {
    await using env = await setup({ onTcp: undefined });
    await env.client.handshake();
    const serving = (async () => {
      for await (const s of env.server) {
        if (s.protocol === "tcp") {
          await s.readable.pipeTo(s.writable);
          return;
        }
      }
    })();
    await echoRoundTrip(env.client, "192.0.2.82", 50_000, 7);
    await serving;
  });

  await t.step("shutdown ends open connections with FIN and resolves finished", async () => {
    await using env = await setup({ onTcp: () => {} });
    await env.client.handshake();
    const conn = env.client.connect("192.0.2.83", 80);
    const reading = readAll(conn.readable, 0);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(env.server.stats().tcpOpen, 1);
    await env.server.shutdown();
    await reading;
    await env.server.finished;
  });

  await t.step("a throwing packet tap is logged and the server keeps serving", async () => {
    const errors: string[] = [];
    let thrown = false;
    await using env = await setup({
      onPacket: (_packet, direction) => {
        if (direction === "in" && !thrown) {
          thrown = true;
          throw new Error("tap failed");
        }
      },
      logger: (r) => {
        if (r.level === "error") errors.push(`${r.event}: ${r.error}`);
      },
    });
    await env.client.handshake();
    await echoRoundTrip(env.client, "192.0.2.84", 20_000, 8);
    assert.deepEqual(errors, ["receive-error: Error: tap failed"]);
  });

  await t.step("the crypto backend in use is named in the startup log and stats()", async () => {
    const records: Record<string, unknown>[] = [];
    await using server = await serve({
      privateKey: generatePrivateKey(),
      hostname: "127.0.0.1",
      port: 0,
      logger: (r) => void records.push(r),
    });
    // Tests run with -A: FFI is allowed, so libcrypto is used wherever it loads.
    const expected = libcryptoBackend() !== null ? "libcrypto" : "native";
    assert.equal(server.stats().cryptoBackend, expected);
    const listening = records.find((r) => r.event === "listening");
    assert.equal(listening?.crypto, server.stats().cryptoBackend);
  });

  await t.step("100 idle peers: no timer runs (CPU stays at zero)", async () => {
    await using server = await serve({
      privateKey: generatePrivateKey(),
      hostname: "127.0.0.1",
      port: 0,
      peers: Array.from({ length: 100 }, (_, i) => ({
        publicKey: publicKey(generatePrivateKey()),
        allowedIps: [`10.8.${i >> 8}.${i & 0xff}/32`],
      })),
    });
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(server.stats().wireguard.peers, 100);
    assert.equal(server.stats().polls, 0, "no timer or wake-up while nothing happens");
  });

  await t.step("an unknown client key gets no answer at all", async () => {
    await using env = await setup();
    await env.client.handshake();
    const sentBefore = env.server.stats().socket.sent;
    const stranger = startTestClient({
      serverPublicKey: keyFromBase64(env.server.publicKey),
      serverPort: env.server.addr.port,
    });
    try {
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(env.server.stats().socket.sent, sentBefore);
      assert.ok(env.server.stats().socket.received > 0);
    } finally {
      stranger.close();
    }
  });
});
