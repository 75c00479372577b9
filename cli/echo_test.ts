import assert from "node:assert/strict";
import { Echo } from "./echo.ts";
import { createLogger, type LogRecord } from "./log.ts";

const peer = { publicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=" };
const source = { address: "198.18.0.2", port: 40000 };
const destination = { address: "192.0.2.7", port: 7 };

Deno.test("echo mode", async (t) => {
  const records: LogRecord[] = [];
  const echo = new Echo(
    createLogger({ format: "json", write: (l) => records.push(JSON.parse(l)) }),
  );

  await t.step("TCP: bytes come back, FIN answered with FIN", async () => {
    const toServer = new TransformStream<Uint8Array, Uint8Array>();
    const toClient = new TransformStream<Uint8Array, Uint8Array>();
    const done = echo.onTcp({
      peer,
      ipVersion: 4,
      source,
      destination,
      readable: toServer.readable,
      writable: toClient.writable,
      reset: () => {},
    });
    const w = toServer.writable.getWriter();
    const sent = [new Uint8Array([1, 2, 3]), new Uint8Array(100_000).fill(9)];
    const writing = (async () => {
      for (const chunk of sent) await w.write(chunk);
      await w.close();
    })();
    const back = new Uint8Array(await new Response(toClient.readable).arrayBuffer());
    await writing;
    await done;
    assert.equal(back.length, 100_003);
    assert.deepEqual(back.subarray(0, 3), new Uint8Array([1, 2, 3]));
    const close = records.find((r) => r.event === "tcp-close")!;
    assert.equal(close.bytesUp, 100_003);
    assert.equal(close.end, "closed");
    assert.equal(close.peer, peer.publicKey);
  });

  await t.step("UDP: each datagram comes back as one", async () => {
    const toServer = new TransformStream<Uint8Array, Uint8Array>();
    const toClient = new TransformStream<Uint8Array, Uint8Array>();
    const done = echo.onUdp({
      peer,
      ipVersion: 6,
      source: { address: "fd00::2", port: 5 },
      destination: { address: "2001:db8::1", port: 9 },
      readable: toServer.readable,
      writable: toClient.writable,
    });
    const w = toServer.writable.getWriter();
    const r = toClient.readable.getReader();
    await w.write(new Uint8Array([4, 5]));
    assert.deepEqual((await r.read()).value, new Uint8Array([4, 5]));
    await w.close();
    await done;
    assert.equal((await r.read()).done, true);
    assert.deepEqual(echo.stats(), { tcpConnections: 1, udpFlows: 1, bytes: 100_005 });
  });

  await t.step("close(): open connections get their FIN at once", async () => {
    const toServer = new TransformStream<Uint8Array, Uint8Array>();
    const toClient = new TransformStream<Uint8Array, Uint8Array>();
    const done = echo.onTcp({
      peer,
      ipVersion: 4,
      source,
      destination,
      readable: toServer.readable,
      writable: toClient.writable,
      reset: () => {},
    });
    const w = toServer.writable.getWriter();
    const r = toClient.readable.getReader();
    await w.write(new Uint8Array([7]));
    assert.deepEqual((await r.read()).value, new Uint8Array([7]));
    echo.close();
    assert.equal((await r.read()).done, true, "FIN");
    await done;
    assert.equal(records.at(-1)?.end, "shutdown");
  });
});
