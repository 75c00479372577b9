/**
 * `serve({ forward: { synAck } })` end to end on loopback with our own
 * client (no root): when the client's SYN is answered, and what a failed
 * dial looks like to the client in each mode.
 */

import assert from "node:assert/strict";
import type { ForwardOptions, Server } from "@wgstack/server";
import { startServerWithClient, type TestClient } from "./_client.ts";
import { waitFor } from "./netns.ts";

const CLIENT4 = "10.7.0.2";
/** Where the client connects; the forwarder's `connect` takes it to loopback. */
const TARGET = "198.18.0.77";

/** Dials `port` on loopback whatever the destination (a test's stand-in network). */
function toLoopback(port: number, gate?: Promise<void>, dials?: number[]) {
  return async (): Promise<Deno.TcpConn> => {
    dials?.push(port);
    await gate;
    return await Deno.connect({ hostname: "127.0.0.1", port });
  };
}

async function withServer(
  forward: ForwardOptions,
  run: (client: TestClient, server: Server) => Promise<void>,
): Promise<void> {
  await using pair = await startServerWithClient({
    serve: { forward, shutdownTimeout: 200 },
    address4: CLIENT4,
  });
  await pair.client.handshake();
  await run(pair.client, pair.server);
}

/** A loopback port nothing listens on. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

Deno.test("forward synAck", async (t) => {
  await t.step("after-dial (default): a closed port refuses the connect itself", async () => {
    await withServer({ connect: toLoopback(closedPort()) }, async (client, server) => {
      const conn = client.connect(TARGET, 80);
      await assert.rejects(conn.readable.getReader().read(), /refused/i);
      assert.equal(conn.stats.segmentsIn, 1, "only the RST");
      assert.equal(server.stats().forward!.tcpRefused, 1);
      assert.equal(server.stats().forward!.resetAfterAccept, 0);
    });
  });

  await t.step("immediate: a closed port resets the connection once established", async () => {
    const forward = { synAck: "immediate" as const, connect: toLoopback(closedPort()) };
    await withServer(forward, async (client, server) => {
      const conn = client.connect(TARGET, 80);
      // A RST to an established connection is a reset, not a refusal.
      await assert.rejects(conn.readable.getReader().read(), /reset by peer/i);
      assert.equal(conn.stats.segmentsIn, 2, "the SYN-ACK, then the RST");
      const stats = server.stats().forward!;
      assert.equal(stats.resetAfterAccept, 1);
      assert.equal(stats.tcpRefused, 1);
      assert.equal(stats.upstreamSockets, 0);
    });
  });

  await t.step("immediate: what the client sends while the dial runs arrives intact", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    let open!: () => void;
    const gate = new Promise<void>((resolve) => open = resolve);
    const dials: number[] = [];
    const connect = toLoopback(listener.addr.port, gate, dials);
    await withServer({ synAck: "immediate", connect }, async (client, server) => {
      const conn = client.connect(TARGET, 80);
      const data = new Uint8Array(300_000);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 9)) & 0xff;
      const writer = conn.writable.getWriter();
      const sent = (async () => {
        for (let i = 0; i < data.length; i += 16_384) await writer.write(data.slice(i, i + 16_384));
        await writer.close();
      })();
      await waitFor("the dial to start", () => dials.length === 1 || undefined);
      await waitFor(
        "the connection to be established",
        () => conn.stats.state === "ESTABLISHED" || undefined,
      );
      assert.equal(server.stats().forward!.pendingDials, 1, "while the dial still waits");
      open();
      const upstream = await listener.accept();
      const got = new Uint8Array(await new Response(upstream.readable).arrayBuffer());
      await sent;
      assert.equal(got.length, data.length);
      assert.deepEqual(got, data);
      await conn.readable.cancel().catch(() => {});
    });
  });
});
