/**
 * A handshake flood against `serve()` on loopback (no root needed): the
 * flood generator of the benchmark (bench/_handshake_flood.ts: bad MAC1,
 * valid MAC1 from unknown keys, valid initiations of a registered peer, as
 * fast as one socket sends) runs in its own process while another peer, our
 * own client, opens connections and moves a mebibyte each way. Checked: the
 * peer's transfers are byte-exact and complete during the flood, the
 * handshake queue stays bounded and the flood is counted (cookie replies
 * under load, queue drops). How much throughput the peer keeps is a
 * measurement, not a test: bench/handshake_flood_bench.ts.
 */

import assert from "node:assert/strict";
import { generatePrivateKey, keyToBase64, publicKey } from "@wgstack/wireguard";
import { serve } from "@wgstack/server";
import { startTestClient } from "./_client.ts";
import { xorshift32 } from "./_prng.ts";

const FLOOD = new URL("../bench/_handshake_flood.ts", import.meta.url).pathname;

Deno.test({
  name: "handshake flood: another peer's connections and transfers keep working",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const serverKey = generatePrivateKey(), clientKey = generatePrivateKey();
    const spareKey = generatePrivateKey();
    await using server = await serve({
      privateKey: serverKey,
      hostname: "127.0.0.1",
      port: 0,
      peers: [
        { publicKey: publicKey(clientKey), allowedIps: ["10.7.0.2/32"], name: "B" },
        { publicKey: publicKey(spareKey), allowedIps: ["10.7.0.9/32"], name: "flooded" },
      ],
      onTcp: (s) => s.readable.pipeTo(s.writable),
      shutdownTimeout: 500,
    });
    const client = startTestClient({
      serverPublicKey: publicKey(serverKey),
      serverPort: server.addr.port,
      privateKey: clientKey,
    });
    const flood = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        FLOOD,
        server.publicKey,
        "127.0.0.1",
        String(server.addr.port),
        keyToBase64(spareKey),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    try {
      await client.handshake();
      const lines = flood.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let out = "";
      while (!out.includes("flooding")) out += (await lines.read()).value ?? "";
      lines.releaseLock();
      // Wait until the flood reaches the server.
      while (
        server.stats().wireguard.handshakesPending + server.stats().wireguard.cookieRepliesSent ===
          0
      ) {
        await new Promise((r) => setTimeout(r, 20));
      }

      const rnd = xorshift32(9);
      for (let round = 0; round < 3; round++) {
        const data = new Uint8Array(1 << 20).map(() => rnd() & 0xff);
        const conn = client.connect("198.18.0.1", 7);
        const writer = conn.writable.getWriter();
        const sending = (async () => {
          for (let i = 0; i < data.length; i += 16384) {
            await writer.write(data.subarray(i, i + 16384));
          }
          await writer.close();
        })();
        const echoed = new Uint8Array(await new Response(conn.readable).arrayBuffer());
        await sending;
        assert.equal(echoed.length, data.length);
        assert.ok(echoed.every((b, i) => b === data[i]), "the echo is byte-exact");
      }

      const wg = server.stats().wireguard;
      assert.ok(wg.handshakesPending <= 1024, `${wg.handshakesPending} handshakes pending`);
      assert.ok(
        wg.cookieRepliesSent + wg.handshakeQueueDrops > 0,
        `the flood was answered with cookies or dropped: ${JSON.stringify(wg)}`,
      );
    } finally {
      await flood.stdin.close().catch(() => {});
      await flood.status;
      client.close();
    }
  },
});
