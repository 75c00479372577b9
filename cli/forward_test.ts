import assert from "node:assert/strict";
import {
  type ClientTcp,
  type ClientUdp,
  Forwarder,
  relayTcp,
  type UpstreamConn,
} from "./forward.ts";
import { createLogger, type LogRecord } from "./log.ts";

const peer = { publicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", name: "phone" };
const source = { address: "198.18.0.2", port: 40000 };

function recorder() {
  const records: LogRecord[] = [];
  const logger = createLogger({
    level: "debug",
    write: (l) => records.push(JSON.parse(l)),
    format: "json",
  });
  return { logger, records };
}

/** A client stream pair like the server hands out, and the test's ends of it. */
function fakeTcp(destination: { address: string; port: number }) {
  const toServer = new TransformStream<Uint8Array, Uint8Array>();
  const toClient = new TransformStream<Uint8Array, Uint8Array>(undefined, undefined, {
    highWaterMark: 1,
  });
  let resets = 0;
  const clientWriter = toServer.writable.getWriter();
  const stream: ClientTcp = {
    peer,
    ipVersion: 4,
    source,
    destination,
    readable: toServer.readable,
    writable: toClient.writable,
    reset() {
      resets++;
      clientWriter.abort(new Error("reset")).catch(() => {});
      toClient.readable.cancel().catch(() => {});
    },
  };
  return {
    stream,
    clientWriter,
    clientReader: toClient.readable.getReader(),
    resets: () => resets,
  };
}

async function readAll(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
  }
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of chunks) out.set(c, (o += c.length) - c.length);
  return out;
}

async function readConn(conn: Deno.Conn): Promise<Uint8Array> {
  return new Uint8Array(await new Response(conn.readable).arrayBuffer());
}

function pattern(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7 + (i >> 10)) & 0xff;
  return out;
}

Deno.test("relayTcp over loopback", async (t) => {
  await t.step("download, then the client closes: both FINs, byte-exact", async () => {
    const data = pattern(3_000_000);
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      const conn = await listener.accept();
      const w = conn.writable.getWriter();
      await w.write(data);
      await w.close(); // closes the connection
    })();
    const upstream = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
    const relay = relayTcp(c.stream, upstream);
    const got = await readAll(c.clientReader);
    await c.clientWriter.close();
    const result = await relay;
    await served;
    assert.equal(got.length, data.length);
    assert.deepEqual(got, data);
    assert.deepEqual(result, { bytesUp: 0, bytesDown: data.length, end: "closed" });
  });

  await t.step(
    "upload with half-close: client FIN reaches upstream, reply comes back",
    async () => {
      const data = pattern(2_000_000);
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const served = (async () => {
        const conn = await listener.accept();
        const buf = new Uint8Array(65536);
        let total = 0;
        let sum = 0;
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) break; // the client's FIN, relayed as closeWrite()
          total += n;
          for (let i = 0; i < n; i++) sum = (sum + buf[i]) % 65521;
        }
        await conn.write(new TextEncoder().encode(`${total} ${sum}`));
        conn.close();
      })();
      let sum = 0;
      for (const b of data) sum = (sum + b) % 65521;
      const upstream = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
      const totals = { bytesUp: 0, bytesDown: 0 };
      const relay = relayTcp(c.stream, upstream, totals);
      for (let i = 0; i < data.length; i += 100_000) {
        await c.clientWriter.write(
          data.slice(i, i + 100_000),
        );
      }
      await c.clientWriter.close();
      const reply = new TextDecoder().decode(await readAll(c.clientReader));
      const result = await relay;
      await served;
      assert.equal(reply, `${data.length} ${sum}`);
      assert.equal(result.end, "closed");
      assert.equal(result.bytesUp, data.length);
      assert.deepEqual(totals, { bytesUp: data.length, bytesDown: reply.length });
    },
  );

  await t.step("backpressure: a client that does not read stops the upstream", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    let written = 0;
    let stopWriting = false;
    const served = (async () => {
      const conn = await listener.accept();
      const chunk = new Uint8Array(65536);
      try {
        while (!stopWriting && written < 64_000_000) written += await conn.write(chunk);
      } catch {
        // the relay closed the connection
      }
      conn.close();
    })();
    const upstream = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
    const relay = relayTcp(c.stream, upstream);
    await new Promise((r) => setTimeout(r, 400));
    const stalled = written;
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(written < 32_000_000, `upstream wrote ${written} bytes with nobody reading`);
    assert.equal(written, stalled, "the upstream is blocked");
    stopWriting = true;
    const got = await readAll(c.clientReader);
    await c.clientWriter.close();
    await served;
    const result = await relay;
    assert.equal(got.length, written);
    assert.equal(result.bytesDown, written);
  });

  await t.step("a client reset closes the upstream", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      const conn = await listener.accept();
      try {
        return await readConn(conn);
      } catch {
        return null;
      }
    })();
    const upstream = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
    const relay = relayTcp(c.stream, upstream);
    await c.clientWriter.write(new Uint8Array([1, 2, 3]));
    await c.clientWriter.abort(new Error("RST from client"));
    const result = await relay;
    assert.equal(result.end, "client reset");
    assert.equal(result.error, "RST from client");
    await served; // the upstream saw its connection end
    assert.equal(c.resets(), 0, "the client is not reset again");
  });

  await t.step("an upstream error resets the client", async () => {
    let reads = 0;
    const conn: UpstreamConn = {
      read: () => {
        reads++;
        return Promise.reject(new Deno.errors.ConnectionReset("connection reset by peer"));
      },
      write: (p) => Promise.resolve(p.length),
      closeWrite: () => Promise.resolve(),
      close: () => {},
    };
    const c = fakeTcp({ address: "192.0.2.1", port: 80 });
    const result = await relayTcp(c.stream, conn);
    assert.equal(result.end, "upstream reset");
    assert.equal(reads, 1);
    assert.equal(c.resets(), 1);
  });
});

Deno.test("Forwarder.accept dials first", async (t) => {
  await t.step("accept → relay: open and close are logged", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      const conn = await listener.accept();
      await conn.write(new TextEncoder().encode("hello"));
      conn.close();
    })();
    const { logger, records } = recorder();
    const fwd = new Forwarder({ logger, localAddresses: ["198.18.0.1"], allowLoopback: true });
    const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
    assert.equal(await fwd.accept(c.stream), "accept");
    const handled = fwd.onTcp(c.stream);
    assert.equal(new TextDecoder().decode(await readAll(c.clientReader)), "hello");
    await c.clientWriter.close();
    await handled;
    await served;
    const close = records.find((r) => r.event === "tcp-close")!;
    assert.equal(close.peer, "phone");
    assert.equal(close.source, "198.18.0.2:40000");
    assert.equal(close.destination, `127.0.0.1:${listener.addr.port}`);
    assert.equal(close.bytesDown, 5);
    assert.equal(close.end, "closed");
    assert.ok(records.some((r) => r.event === "tcp-open"));
    assert.equal(fwd.stats().tcpAccepted, 1);
  });

  await t.step("a refused port answers rst quickly", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close();
    const { logger, records } = recorder();
    const fwd = new Forwarder({ logger, localAddresses: [], allowLoopback: true });
    const started = performance.now();
    assert.equal(
      await fwd.accept({ peer, ipVersion: 4, source, destination: { address: "127.0.0.1", port } }),
      "rst",
    );
    assert.ok(performance.now() - started < 1000);
    assert.equal(records.at(-1)?.event, "tcp-refused");
    assert.equal(fwd.stats().tcpRefused, 1);
  });

  await t.step("a dial timeout answers icmp (or rst when configured)", async () => {
    const hanging = (_h: string, _p: number, signal: AbortSignal) =>
      new Promise<UpstreamConn>((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    const { logger } = recorder();
    const info = {
      peer,
      ipVersion: 4 as const,
      source,
      destination: { address: "192.0.2.1", port: 81 },
    };
    const icmp = new Forwarder({
      logger,
      localAddresses: [],
      connectTimeoutMs: 30,
      connect: hanging,
    });
    assert.equal(await icmp.accept(info), "icmp");
    assert.equal(icmp.stats().tcpUnreachable, 1);
    const rst = new Forwarder({
      logger,
      localAddresses: [],
      connectTimeoutMs: 30,
      connect: hanging,
      onTimeout: "rst",
    });
    assert.equal(await rst.accept(info), "rst");
  });

  await t.step("the tunnel address: port 53 goes to the resolver, others are refused", async () => {
    const dialled: string[] = [];
    const connect = (h: string, p: number) => {
      dialled.push(`${h}:${p}`);
      return Promise.resolve({
        read: () => Promise.resolve(null),
        write: (b: Uint8Array) => Promise.resolve(b.length),
        closeWrite: () => Promise.resolve(),
        close: () => {},
      });
    };
    const { logger } = recorder();
    const fwd = new Forwarder({
      logger,
      localAddresses: ["198.18.0.1", "fd00:44::1"],
      dns: { hostname: "127.0.0.53", port: 53 },
      connect,
    });
    const to = (address: string, port: number) => ({
      peer,
      ipVersion: 4 as const,
      source,
      destination: { address, port },
    });
    assert.equal(await fwd.accept(to("198.18.0.1", 53)), "accept");
    assert.equal(await fwd.accept(to("fd00:44:0::1", 53)), "accept");
    assert.equal(await fwd.accept(to("198.18.0.1", 22)), "rst");
    assert.deepEqual(dialled, ["127.0.0.53:53", "127.0.0.53:53"]);
    fwd.close();
    assert.equal(await fwd.accept(to("192.0.2.1", 80)), "rst", "closed forwarder refuses");
  });

  await t.step("loopback, unspecified and tunnel-subnet destinations are refused", async () => {
    const { logger } = recorder();
    let dials = 0;
    const fwd = new Forwarder({
      logger,
      localAddresses: ["198.18.0.1"],
      tunnelSubnets: ["198.18.0.1/24", "fd00:44::1/64"],
      connect: () => {
        dials++;
        return Promise.reject(new Error("not reached"));
      },
    });
    for (
      const address of [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "0.0.0.0",
        "::",
        "::ffff:127.0.0.1",
        "198.18.0.3",
        "fd00:44::7",
        "198.18.0.1",
      ]
    ) {
      const info = { peer, ipVersion: 4 as const, source, destination: { address, port: 22 } };
      assert.equal(await fwd.accept(info), "rst", address);
    }
    assert.equal(dials, 0);
  });

  await t.step("onTcp without a dialled upstream resets", async () => {
    const { logger } = recorder();
    const fwd = new Forwarder({ logger, localAddresses: [] });
    const c = fakeTcp({ address: "192.0.2.1", port: 80 });
    await fwd.onTcp(c.stream);
    assert.equal(c.resets(), 1);
  });
});

function fakeUdp(destination: { address: string; port: number }) {
  const toServer = new TransformStream<Uint8Array, Uint8Array>();
  const toClient = new TransformStream<Uint8Array, Uint8Array>();
  const flow: ClientUdp = {
    peer,
    ipVersion: 4,
    source,
    destination,
    readable: toServer.readable,
    writable: toClient.writable,
  };
  return {
    flow,
    clientWriter: toServer.writable.getWriter(),
    clientReader: toClient.readable.getReader(),
  };
}

Deno.test("Forwarder UDP", async (t) => {
  await t.step("relays both ways, filters strangers, logs the flow", async () => {
    const echo = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const stranger = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const echoPort = (echo.addr as Deno.NetAddr).port;
    const echoing = (async () => {
      try {
        for (;;) {
          const [data, from] = await echo.receive();
          // a stranger's datagram first: it must not reach the client
          await stranger.send(new TextEncoder().encode("spoof"), from);
          await echo.send(data, from);
        }
      } catch {
        // closed
      }
    })();
    const { logger, records } = recorder();
    const fwd = new Forwarder({ logger, localAddresses: ["198.18.0.1"], allowLoopback: true });
    const u = fakeUdp({ address: "127.0.0.1", port: echoPort });
    const handled = fwd.onUdp(u.flow);
    for (const word of ["one", "two", "three"]) {
      await u.clientWriter.write(new TextEncoder().encode(word));
      const { value } = await u.clientReader.read();
      assert.equal(new TextDecoder().decode(value), word);
    }
    await u.clientWriter.close(); // the flow expires
    await handled;
    echo.close();
    stranger.close();
    await echoing;
    const close = records.find((r) => r.event === "udp-close")!;
    assert.equal(close.datagramsUp, 3);
    assert.equal(close.datagramsDown, 3);
    assert.equal(close.bytesUp, 11);
    assert.equal(fwd.stats().udpFlows, 1);
  });

  await t.step("DNS to the tunnel address goes to the resolver", async () => {
    const resolver = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const answering = (async () => {
      const [data, from] = await resolver.receive();
      await resolver.send(new Uint8Array([...data, 0xaa]), from);
    })();
    const { logger } = recorder();
    const fwd = new Forwarder({
      logger,
      localAddresses: ["198.18.0.1"],
      dns: { hostname: "127.0.0.1", port: (resolver.addr as Deno.NetAddr).port },
    });
    const u = fakeUdp({ address: "198.18.0.1", port: 53 });
    const handled = fwd.onUdp(u.flow);
    await u.clientWriter.write(new Uint8Array([1, 2]));
    const { value } = await u.clientReader.read();
    assert.deepEqual(value, new Uint8Array([1, 2, 0xaa]));
    await u.clientWriter.close();
    await handled;
    await answering;
    resolver.close();
  });

  await t.step("a DNS relay ends by itself when idle", async () => {
    const resolver = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const answering = (async () => {
      const [data, from] = await resolver.receive();
      await resolver.send(data, from);
    })();
    const { logger, records } = recorder();
    const fwd = new Forwarder({
      logger,
      localAddresses: ["198.18.0.1"],
      dns: { hostname: "127.0.0.1", port: (resolver.addr as Deno.NetAddr).port },
      dnsIdleMs: 50,
    });
    const u = fakeUdp({ address: "198.18.0.1", port: 53 });
    const handled = fwd.onUdp(u.flow);
    await u.clientWriter.write(new Uint8Array([9]));
    assert.deepEqual((await u.clientReader.read()).value, new Uint8Array([9]));
    await handled; // without the client closing anything
    await answering;
    resolver.close();
    const close = records.find((r) => r.event === "udp-close")!;
    assert.equal(close.end, "idle");
    assert.equal(close.datagramsDown, 1);
  });

  await t.step("other ports of the tunnel address are dropped", async () => {
    const { logger, records } = recorder();
    const fwd = new Forwarder({ logger, localAddresses: ["198.18.0.1"], allowLoopback: true });
    const u = fakeUdp({ address: "198.18.0.1", port: 123 });
    await fwd.onUdp(u.flow);
    assert.equal(records.at(-1)?.event, "udp-dropped");
    assert.equal(fwd.stats().udpFlows, 0);
  });
});
