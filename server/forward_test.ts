import assert from "node:assert/strict";
import {
  Forwarder,
  type ForwardOptions,
  relayTcp,
  type TcpDial,
  type UpstreamConn,
} from "./forward.ts";
import { parsePolicyRule } from "./policy.ts";
import type { PeerInfo, ServeLogRecord, TcpStream, UdpStream } from "./serve.ts";
import { requirement } from "../tests/_skip.ts";
import { decodeDns, encodeDns } from "./_dns_message.ts";
import { realQuicInitials } from "./test_helpers.ts";

const peer: PeerInfo = {
  publicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
  name: "phone",
  endpoint: undefined,
};
const source = { address: "198.18.0.2", port: 40000 };
/** Loopback is refused by default; these tests reach their own loopback services. */
const LOOPBACK = [parsePolicyRule("allow", "127.0.0.1")];

function recorder() {
  const records: ServeLogRecord[] = [];
  return { log: (r: ServeLogRecord) => records.push(r), records };
}

/** A forwarder that stops its timers when the test step ends. */
function forwarder(options: ForwardOptions, log?: (r: ServeLogRecord) => void) {
  const fwd = new Forwarder({ interfaces: () => [], ...options }, log);
  return Object.assign(fwd, { [Symbol.dispose]: () => fwd.close() });
}

/** A client stream pair like the server hands out, and the test's ends of it. */
function fakeTcp(destination: { address: string; port: number }) {
  const toServer = new TransformStream<Uint8Array, Uint8Array>();
  const toClient = new TransformStream<Uint8Array, Uint8Array>(undefined, undefined, {
    highWaterMark: 1,
  });
  let resets = 0;
  const clientWriter = toServer.writable.getWriter();
  // The relay's ends (it reads and writes without streams, as the server's connections allow).
  const fromClient = toServer.readable.getReader();
  const toClientWriter = toClient.writable.getWriter();
  const stream: TcpStream = {
    protocol: "tcp",
    closed: new Promise(() => {}),
    peer,
    ipVersion: 4,
    source,
    destination,
    readable: toServer.readable,
    writable: toClient.writable,
    read: async () => {
      const { value, done } = await fromClient.read();
      return done ? null : value;
    },
    // Copied, as a server connection's write does: the relay reuses its buffer.
    write: (chunk) => toClientWriter.write(chunk.slice()),
    close: () => void toClientWriter.close().catch(() => {}),
    reset() {
      // As a server connection: a second reset does nothing.
      if (resets > 0) return;
      resets++;
      clientWriter.abort(new Error("reset")).catch(() => {});
      toClientWriter.abort(new Error("reset")).catch(() => {});
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
    // An upstream that always has data at once: without backpressure the
    // relay would read all of it while the client reads nothing.
    const TOTAL = 8 << 20;
    const HELD = 4 * 64 * 1024; // the relay's chunk in hand plus the stream's queue, at most
    let upstreamRead = 0;
    const upstream: UpstreamConn = {
      read: (p) => {
        const n = Math.min(p.length, TOTAL - upstreamRead);
        upstreamRead += n;
        return Promise.resolve(n === 0 ? null : n);
      },
      write: (p) => Promise.resolve(p.length),
      closeWrite: () => Promise.resolve(),
      close: () => {},
    };
    const c = fakeTcp({ address: "192.0.2.80", port: 80 });
    await c.clientWriter.close();
    const relay = relayTcp(c.stream, upstream);
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 0));
    assert.ok(upstreamRead > 0 && upstreamRead <= HELD, `read ${upstreamRead} with nobody reading`);
    let clientRead = 0;
    for (;;) {
      const { value, done } = await c.clientReader.read();
      if (done) break;
      clientRead += value.length;
      assert.ok(upstreamRead - clientRead <= HELD, `${upstreamRead - clientRead} bytes held`);
    }
    assert.equal(clientRead, TOTAL);
    const result = await relay;
    assert.equal(result.bytesDown, TOTAL);
    assert.equal(result.end, "closed");
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

  await t.step(
    "a counter that throws ends the relay as an error, nothing left unhandled",
    async () => {
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const served = (async () => {
        const conn = await listener.accept();
        await conn.write(new Uint8Array([1, 2, 3]));
        const buf = new Uint8Array(16);
        while ((await conn.read(buf).catch(() => null)) !== null) { /* until closed */ }
        conn.close();
      })();
      const upstream = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
      const result = await relayTcp(c.stream, upstream, {
        bytesUp: 0,
        bytesDown: 0,
        touch() {
          throw new Error("the counter broke");
        },
      });
      await served;
      assert.equal(result.end, "error");
      assert.equal(result.error, "the counter broke");
      assert.equal(c.resets(), 1, "the client was reset");
    },
  );
});

/** An upstream that never answers until the dial is aborted. */
function hangingConnect(calls: { aborted: number; started: number }) {
  return (_h: string, _p: number, signal: AbortSignal) => {
    calls.started++;
    return new Promise<UpstreamConn>((_, reject) =>
      signal.addEventListener("abort", () => {
        calls.aborted++;
        reject(signal.reason);
      })
    );
  };
}

/** An upstream that sends nothing; a pending read fails when it is closed, as a socket's does. */
function fakeUpstream(closed: { n: number }): UpstreamConn {
  let fail!: (e: Error) => void;
  const ended = new Promise<never>((_, reject) => fail = reject);
  ended.catch(() => {});
  return {
    read: () => ended,
    write: (b: Uint8Array) => Promise.resolve(b.length),
    closeWrite: () => Promise.resolve(),
    close: () => {
      closed.n++;
      fail(new Deno.errors.BadResource("closed"));
    },
  };
}

function to(address: string, port: number, from = source, who: PeerInfo = peer) {
  return { peer: who, ipVersion: 4 as const, source: from, destination: { address, port } };
}

const needsLinux = requirement(
  "TCP_NODELAY check",
  Deno.build.os === "linux" ? undefined : `reads the socket option through libc.so.6 (Linux only)`,
);

/**
 * TCP_NODELAY of this process's TCP sockets connected to `port` on loopback,
 * read with getsockopt (libc through FFI): Deno does not expose it.
 */
function noDelayOfSocketsTo(port: number): number[] {
  const lib = Deno.dlopen("libc.so.6", {
    getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
    getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  });
  try {
    const sa = new Uint8Array(28);
    const len = new Uint32Array(1);
    const value = new Int32Array(1);
    const found: number[] = [];
    for (let fd = 3; fd < 4096; fd++) {
      len[0] = 28;
      if (lib.symbols.getpeername(fd, sa, new Uint8Array(len.buffer)) !== 0) continue;
      if (((sa[2] << 8) | sa[3]) !== port) continue;
      len[0] = 4;
      // IPPROTO_TCP = 6, TCP_NODELAY = 1
      if (
        lib.symbols.getsockopt(
          fd,
          6,
          1,
          new Uint8Array(value.buffer),
          new Uint8Array(len.buffer),
        ) === 0
      ) {
        found.push(value[0]);
      }
    }
    return found;
  } finally {
    lib.close();
  }
}

Deno.test("Forwarder.accept dials first", async (t) => {
  await t.step({
    name: "the default dial turns Nagle's algorithm off upstream (TCP_NODELAY)",
    ignore: needsLinux.ignore,
    fn: async () => {
      needsLinux.assert();
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const accepted = listener.accept();
      using fwd = forwarder({ localAddresses: ["198.18.0.1"], rules: LOOPBACK });
      const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
      const dial = await fwd.accept(c.stream);
      assert.equal(dial.decision, "accept");
      assert.deepEqual(noDelayOfSocketsTo(listener.addr.port), [1]);
      dial.upstream!.close();
      (await accepted).close();
    },
  });

  await t.step("accept → relay: open and close are logged", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      const conn = await listener.accept();
      await conn.write(new TextEncoder().encode("hello"));
      conn.close();
    })();
    const { log, records } = recorder();
    using fwd = forwarder({ localAddresses: ["198.18.0.1"], rules: LOOPBACK }, log);
    const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
    const dial = await fwd.accept(c.stream);
    assert.equal(dial.decision, "accept");
    assert.equal(fwd.stats().upstreamSockets, 1);
    const handled = fwd.relay(c.stream, dial.upstream!);
    assert.equal(new TextDecoder().decode(await readAll(c.clientReader)), "hello");
    await c.clientWriter.close();
    await handled;
    await served;
    const close = records.find((r) => r.event === "tcp-close")!;
    assert.equal(close.peer, "phone");
    assert.deepEqual(close.source, source);
    assert.deepEqual(close.destination, { address: "127.0.0.1", port: listener.addr.port });
    assert.equal(close.bytesDown, 5);
    assert.equal(close.end, "closed");
    assert.ok(records.some((r) => r.event === "tcp-open"));
    assert.equal(fwd.stats().tcpAccepted, 1);
    assert.equal(fwd.stats().upstreamSockets, 0, "the relay released its socket");
  });

  await t.step("a refused port answers rst", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close();
    const { log, records } = recorder();
    using fwd = forwarder({ rules: LOOPBACK }, log);
    assert.equal((await fwd.accept(to("127.0.0.1", port))).decision, "rst");
    assert.equal(records.at(-1)?.event, "tcp-refused");
    assert.equal(fwd.stats().tcpRefused, 1);
    assert.equal(fwd.stats().upstreamSockets, 0);
  });

  await t.step("a dial timeout answers icmp (or rst when configured)", async () => {
    const calls = { aborted: 0, started: 0 };
    const info = to("192.0.2.1", 81);
    using icmp = forwarder({ connectTimeoutMs: 30, connect: hangingConnect(calls) });
    assert.equal((await icmp.accept(info)).decision, "icmp");
    assert.equal(icmp.stats().tcpUnreachable, 1);
    using rst = forwarder({
      connectTimeoutMs: 30,
      connect: hangingConnect(calls),
      onTimeout: "rst",
    });
    assert.equal((await rst.accept(info)).decision, "rst");
    assert.equal(calls.aborted, 2);
  });

  await t.step("the tunnel address: port 53 goes to the resolver, others are refused", async () => {
    const dialled: string[] = [];
    const closed = { n: 0 };
    const connect = (h: string, p: number) => {
      dialled.push(`${h}:${p}`);
      return Promise.resolve(fakeUpstream(closed));
    };
    const fwd = forwarder({
      localAddresses: ["198.18.0.1", "fd00:44::1"],
      dns: { hostname: "127.0.0.53", port: 53 },
      connect,
    });
    assert.equal((await fwd.accept(to("198.18.0.1", 53))).decision, "accept");
    assert.equal((await fwd.accept(to("fd00:44:0::1", 53))).decision, "accept");
    assert.equal((await fwd.accept(to("198.18.0.1", 22))).decision, "rst");
    assert.deepEqual(dialled, ["127.0.0.53:53", "127.0.0.53:53"]);
    fwd.close();
    assert.equal((await fwd.accept(to("192.0.2.1", 80))).decision, "rst", "closed forwarder");
  });

  await t.step("policy: refused destinations are never dialled", async () => {
    let dials = 0;
    const { log, records } = recorder();
    using fwd = forwarder({
      localAddresses: ["198.18.0.1"],
      tunnelSubnets: ["198.18.0.1/24", "fd00:44::1/64"],
      interfaces: () => [{ family: "IPv4", address: "192.0.2.10", cidr: "192.0.2.10/24" }],
      connect: () => {
        dials++;
        return Promise.reject(new Error("not reached"));
      },
    }, log);
    const refused = [
      "127.0.0.1",
      "127.1.2.3",
      "::1",
      "0.0.0.0",
      "::",
      "::ffff:127.0.0.1",
      "198.18.0.3",
      "fd00:44::7",
      "198.18.0.1",
      "192.0.2.10",
      "192.0.2.255",
      "169.254.169.254",
      "::ffff:169.254.169.254",
      "fd00:ec2::254",
      "64:ff9b::a9fe:a9fe",
    ];
    for (const address of refused) {
      assert.equal((await fwd.accept(to(address, 22))).decision, "rst", address);
    }
    assert.equal(dials, 0);
    const refusedLogs = records.filter((r) => r.event === "tcp-refused");
    assert.ok(refusedLogs.length < refused.length, "aggregated, not one line each");
    assert.equal(refusedLogs[0].reason, "loopback");
    assert.equal(fwd.stats().policy.refused.metadata, 4);
  });

  await t.step("refuseWith icmp answers administratively prohibited", async () => {
    using fwd = forwarder({ refuseWith: "icmp" });
    assert.equal((await fwd.accept(to("169.254.169.254", 80))).decision, "icmp-prohibited");
  });

  await t.step("a retransmitted SYN joins the dial of its 4-tuple", async () => {
    const closed = { n: 0 };
    let release!: () => void;
    let dials = 0;
    using fwd = forwarder({
      connect: () => {
        dials++;
        return new Promise((resolve) => release = () => resolve(fakeUpstream(closed)));
      },
    });
    const first = fwd.accept(to("192.0.2.1", 80));
    const second = fwd.accept(to("192.0.2.1", 80));
    release();
    assert.equal((await first).decision, "drop", "the older request gives way");
    const dial = await second;
    assert.equal(dial.decision, "accept");
    assert.equal(dials, 1);
    assert.equal(fwd.stats().dialsJoined, 1);
    assert.equal(fwd.stats().upstreamSockets, 1);
    dial.upstream!.close();
    dial.upstream!.close();
    assert.equal(closed.n, 1);
    assert.equal(fwd.stats().upstreamSockets, 0);
  });

  await t.step("per-peer pending dials: the peer's oldest dial is cancelled", async () => {
    const calls = { aborted: 0, started: 0 };
    using fwd = forwarder({
      connect: hangingConnect(calls),
      limits: { pendingDials: 100, peerPendingDials: 2, upstreamSockets: 100 },
    });
    const dials = [1, 2, 3].map((i) => fwd.accept(to("192.0.2.1", 80, { ...source, port: i })));
    assert.equal((await dials[0]).decision, "drop");
    assert.equal(calls.aborted, 1);
    assert.equal(fwd.stats().pendingDials, 2);
    assert.equal(fwd.stats().dialsEvicted, 1);
    fwd.close();
    await Promise.all(dials);
    assert.equal(calls.aborted, 3, "close cancels every dial");
    assert.equal(fwd.stats().upstreamSockets, 0);
  });

  await t.step("a full dial table takes from the peer with the most dials", async () => {
    const calls = { aborted: 0, started: 0 };
    using fwd = forwarder({
      connect: hangingConnect(calls),
      limits: { pendingDials: 4, peerPendingDials: 4, upstreamSockets: 100 },
    });
    const other: PeerInfo = { publicKey: "other", endpoint: undefined };
    const a = [1, 2, 3].map((i) => fwd.accept(to("192.0.2.1", 80, { ...source, port: i })));
    const b = fwd.accept(to("192.0.2.1", 80, { address: "198.18.0.3", port: 1 }, other));
    const c = fwd.accept(to("192.0.2.1", 80, { address: "198.18.0.3", port: 2 }, other));
    assert.equal((await a[0]).decision, "drop", "the flooding peer loses its oldest");
    assert.equal(fwd.stats().pendingDials, 4);
    const d = fwd.accept(to("192.0.2.1", 80, { ...source, port: 9 }));
    assert.equal((await a[1]).decision, "drop");
    fwd.close();
    assert.deepEqual(
      (await Promise.all([b, c, a[2], d])).map((x) => x.decision),
      ["drop", "drop", "drop", "drop"],
    );
    assert.equal(calls.started, 6);
  });

  await t.step("upstream socket cap: refused with rst until a socket is released", async () => {
    const closed = { n: 0 };
    const { log, records } = recorder();
    using fwd = forwarder({
      connect: () => Promise.resolve(fakeUpstream(closed)),
      limits: { upstreamSockets: 2, peerUpstreamSockets: 2, pendingDials: 2 },
    }, log);
    const one = await fwd.accept(to("192.0.2.1", 80, { ...source, port: 1 }));
    const two = await fwd.accept(to("192.0.2.1", 80, { ...source, port: 2 }));
    assert.equal(two.decision, "accept");
    assert.equal((await fwd.accept(to("192.0.2.1", 80, { ...source, port: 3 }))).decision, "rst");
    assert.equal(fwd.stats().limitRefused, 1);
    assert.equal(records.at(-1)?.reason, "upstream socket limit");
    one.upstream!.close();
    assert.equal(
      (await fwd.accept(to("192.0.2.1", 80, { ...source, port: 4 }))).decision,
      "accept",
    );
    assert.equal(fwd.stats().upstreamSocketsPeak, 2);
  });

  await t.step("per-peer socket quota leaves room for another peer", async () => {
    const closed = { n: 0 };
    using fwd = forwarder({
      connect: () => Promise.resolve(fakeUpstream(closed)),
      limits: { upstreamSockets: 4, peerUpstreamSockets: 2 },
    });
    const other: PeerInfo = { publicKey: "other", endpoint: undefined };
    for (const port of [1, 2]) {
      assert.equal((await fwd.accept(to("192.0.2.1", 80, { ...source, port }))).decision, "accept");
    }
    assert.equal((await fwd.accept(to("192.0.2.1", 80, { ...source, port: 3 }))).decision, "rst");
    const b = await fwd.accept(to("192.0.2.1", 80, { address: "198.18.0.3", port: 1 }, other));
    assert.equal(b.decision, "accept");
  });

  await t.step("an idle relay is closed: upstream closed, client reset", async () => {
    const closed = { n: 0 };
    const { log, records } = recorder();
    using fwd = forwarder({
      connect: () => Promise.resolve(fakeUpstream(closed)),
      tcpIdleTimeoutMs: 40,
    }, log);
    const c = fakeTcp({ address: "192.0.2.1", port: 80 });
    const dial = await fwd.accept(c.stream);
    // The idle sweep's timer does not keep a process alive (a server does): this one does.
    const alive = setInterval(() => {}, 1000);
    await fwd.relay(c.stream, dial.upstream!);
    clearInterval(alive);
    assert.equal(c.resets(), 1);
    assert.equal(closed.n, 1);
    assert.equal(records.find((r) => r.event === "tcp-close")?.end, "idle");
    assert.equal(fwd.stats().tcpIdleClosed, 1);
    assert.equal(fwd.stats().upstreamSockets, 0);
  });

  await t.step("datagrams from our own sockets are recognised", () => {
    using fwd = forwarder({
      interfaces: () => [{ family: "IPv4", address: "192.0.2.10", cidr: "192.0.2.10/24" }],
    });
    assert.equal(fwd.isOwnSocket({ address: "192.0.2.10", port: 51820 }, 51820), true);
    assert.equal(fwd.isOwnSocket({ address: "::ffff:127.0.0.1", port: 51820 }, 51820), true);
    assert.equal(fwd.isOwnSocket({ address: "192.0.2.11", port: 51820 }, 51820), false);
    assert.equal(fwd.isOwnSocket({ address: "192.0.2.10", port: 40000 }, 51820), false);
  });
});

function fakeUdp(destination: { address: string; port: number }) {
  const toServer = new TransformStream<Uint8Array, Uint8Array>();
  const toClient = new TransformStream<Uint8Array, Uint8Array>();
  const flow: UdpStream = {
    protocol: "udp",
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

Deno.test("Forwarder.decide answers without a promise where it can", async (t) => {
  await t.step("a refusal by the policy", () => {
    using fwd = forwarder({});
    const refused = fwd.decide(to("169.254.169.254", 80));
    assert.ok(!(refused instanceof Promise));
    assert.equal(refused.decision, "rst");
  });

  await t.step({
    name: "a default dial that connected within its call (loopback, Linux)",
    ignore: needsLinux.ignore,
    fn: async () => {
      needsLinux.assert();
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      using fwd = forwarder({ rules: LOOPBACK });
      const info = to("127.0.0.1", listener.addr.port);
      // The first dial goes through Deno.connect (it teaches the FFI dial Deno's connection class).
      const first = await fwd.accept(info);
      first.upstream!.close();
      (await listener.accept()).close();
      const dial = fwd.decide(to("127.0.0.1", listener.addr.port, { ...source, port: 2 }));
      assert.ok(!(dial instanceof Promise), "answered in the same turn");
      assert.equal(dial.decision, "accept");
      assert.equal(fwd.stats().upstreamSockets, 1);
      assert.equal(fwd.stats().pendingDials, 0, "no dial record for it");
      // The socket becomes a Deno connection on first use.
      const served = listener.accept();
      await dial.upstream!.write(new TextEncoder().encode("hi"));
      const conn = await served;
      const buf = new Uint8Array(2);
      assert.equal(await conn.read(buf), 2);
      assert.equal(new TextDecoder().decode(buf), "hi");
      conn.close();
      dial.upstream!.close();
      assert.equal(fwd.stats().upstreamSockets, 0);
    },
  });
});

Deno.test("Forwarder synAck immediate: accepted before the dial", async (t) => {
  await t.step("an unknown mode is a RangeError", () => {
    assert.throws(
      () => new Forwarder({ synAck: "later" as "immediate", interfaces: () => [] }),
      RangeError,
    );
  });

  await t.step("refused destinations are still refused at the SYN", () => {
    using fwd = forwarder({ synAck: "immediate" });
    const dial = fwd.decide(to("127.0.0.1", 80));
    assert.ok(!(dial instanceof Promise));
    assert.equal(dial.decision, "rst");
  });

  await t.step("a refused upstream resets the client after establishment", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close();
    const { log, records } = recorder();
    using fwd = forwarder({ synAck: "immediate", rules: LOOPBACK }, log);
    const c = fakeTcp({ address: "127.0.0.1", port });
    const dial = fwd.decide(c.stream);
    assert.ok(!(dial instanceof Promise), "answered at once");
    assert.equal(dial.decision, "accept");
    assert.equal(fwd.stats().pendingDials, 1, "the dial holds its slot");
    await fwd.relay(c.stream, dial.upstream!);
    assert.equal(c.resets(), 1);
    const stats = fwd.stats();
    assert.equal(stats.resetAfterAccept, 1);
    assert.equal(stats.tcpRefused, 1);
    assert.equal(stats.tcpAccepted, 0, "never relayed");
    assert.equal(stats.upstreamSockets, 0);
    assert.equal(stats.pendingDials, 0);
    const refused = records.find((r) => r.event === "tcp-refused")!;
    assert.equal(refused.answer, "reset");
    assert.match(String(refused.reason), /ConnectionRefused/);
  });

  await t.step("bytes the client sends while the dial runs arrive intact", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    let open!: () => void;
    const gate = new Promise<void>((resolve) => open = resolve);
    let dials = 0;
    using fwd = forwarder({
      synAck: "immediate",
      rules: LOOPBACK,
      connect: async (hostname, port) => {
        dials++;
        await gate;
        return await Deno.connect({ hostname, port });
      },
    });
    const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
    const dial = await fwd.accept(c.stream);
    assert.equal(dial.decision, "accept");
    assert.equal(dials, 0, "the dial starts when the relay does");
    const relayed = fwd.relay(c.stream, dial.upstream!);
    const data = pattern(200_000);
    const sent = (async () => {
      for (let i = 0; i < data.length; i += 10_000) {
        await c.clientWriter.write(data.slice(i, i + 10_000));
      }
      await c.clientWriter.close();
    })();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(dials, 1);
    assert.equal(fwd.stats().pendingDials, 1);
    open();
    const conn = await listener.accept();
    const got = await readConn(conn);
    await sent;
    assert.equal(got.length, data.length);
    assert.deepEqual(got, data);
    await relayed;
    assert.equal(fwd.stats().tcpAccepted, 1);
    assert.equal(fwd.stats().upstreamSockets, 0);
  });

  await t.step("the dial limits hold: the peer's oldest pending dial is cancelled", async () => {
    const calls = { aborted: 0, started: 0 };
    using fwd = forwarder({
      synAck: "immediate",
      connect: hangingConnect(calls),
      limits: { pendingDials: 100, peerPendingDials: 2, upstreamSockets: 100 },
    });
    const clients = [1, 2, 3].map(() => fakeTcp({ address: "192.0.2.1", port: 80 }));
    const relays: Promise<void>[] = [];
    for (const [i, c] of clients.entries()) {
      const dial = fwd.decide({ ...c.stream, source: { ...source, port: i + 1 } });
      assert.ok(!(dial instanceof Promise));
      assert.equal(dial.decision, "accept");
      relays.push(fwd.relay(c.stream, dial.upstream!));
    }
    await relays[0];
    assert.equal(clients[0].resets(), 1, "the evicted dial's client is reset");
    let stats = fwd.stats();
    assert.equal(stats.pendingDials, 2);
    assert.equal(stats.dialsEvicted, 1);
    assert.equal(stats.resetAfterAccept, 1);
    assert.equal(stats.upstreamSockets, 2);
    fwd.close();
    await Promise.all(relays);
    assert.deepEqual(clients.map((c) => c.resets()), [1, 1, 1]);
    stats = fwd.stats();
    assert.equal(stats.upstreamSockets, 0);
    assert.equal(stats.pendingDials, 0);
  });

  await t.step("pending dials give way to newer ones; a closed upstream frees its slot", () => {
    const calls = { aborted: 0, started: 0 };
    using fwd = forwarder({
      synAck: "immediate",
      connect: hangingConnect(calls),
      limits: { upstreamSockets: 2, peerUpstreamSockets: 2, pendingDials: 4, peerPendingDials: 4 },
    });
    const one = fwd.decide(to("192.0.2.1", 80, { ...source, port: 1 })) as TcpDial;
    const two = fwd.decide(to("192.0.2.1", 80, { ...source, port: 2 })) as TcpDial;
    assert.equal(two.decision, "accept");
    const three = fwd.decide(to("192.0.2.1", 80, { ...source, port: 3 })) as TcpDial;
    assert.equal(three.decision, "accept");
    assert.equal(fwd.stats().upstreamSockets, 2);
    assert.equal(fwd.stats().dialsEvicted, 1);
    one.upstream!.close();
    two.upstream!.close();
    three.upstream!.close();
    assert.equal(fwd.stats().upstreamSockets, 0);
    assert.equal(fwd.stats().pendingDials, 0);
    assert.equal(calls.started, 0, "never dialled (nobody used the upstreams)");
  });

  await t.step("the socket cap refuses at the SYN once connections hold the sockets", async () => {
    const closed = { n: 0 };
    const { log, records } = recorder();
    using fwd = forwarder({
      synAck: "immediate",
      connect: () => Promise.resolve(fakeUpstream(closed)),
      limits: { upstreamSockets: 2, peerUpstreamSockets: 2, pendingDials: 2, peerPendingDials: 2 },
    }, log);
    const dials = [1, 2].map((port) => fwd.decide(to("192.0.2.1", 80, { ...source, port })));
    for (const dial of dials as TcpDial[]) {
      assert.equal(dial.decision, "accept");
      assert.equal(await dial.upstream!.write(new Uint8Array(1)), 1, "waits for the dial");
    }
    assert.equal(fwd.stats().pendingDials, 0);
    const refused = fwd.decide(to("192.0.2.1", 80, { ...source, port: 3 })) as TcpDial;
    assert.equal(refused.decision, "rst");
    assert.equal(fwd.stats().limitRefused, 1);
    assert.equal(records.at(-1)?.reason, "upstream socket limit");
    (dials[0] as TcpDial).upstream!.close();
    assert.equal(closed.n, 1);
    const next = fwd.decide(to("192.0.2.1", 80, { ...source, port: 4 })) as TcpDial;
    assert.equal(next.decision, "accept");
    assert.equal(fwd.stats().upstreamSocketsPeak, 2);
  });
});

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
    const { log, records } = recorder();
    const fwd = forwarder({ localAddresses: ["198.18.0.1"], rules: LOOPBACK }, log);
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
    const { log } = recorder();
    using fwd = forwarder({
      localAddresses: ["198.18.0.1"],
      dns: { hostname: "127.0.0.1", port: (resolver.addr as Deno.NetAddr).port },
    }, log);
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
    const { log, records } = recorder();
    using fwd = forwarder({
      localAddresses: ["198.18.0.1"],
      dns: { hostname: "127.0.0.1", port: (resolver.addr as Deno.NetAddr).port },
      dnsIdleMs: 50,
    }, log);
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

  await t.step(
    "other ports of the tunnel address and policy-refused flows are refused",
    async () => {
      const { log, records } = recorder();
      const fwd = forwarder({ localAddresses: ["198.18.0.1"], rules: LOOPBACK }, log);
      const u = fakeUdp({ address: "198.18.0.1", port: 123 });
      await fwd.onUdp(u.flow);
      assert.equal(records.at(-1)?.event, "udp-refused");
      assert.equal(fwd.stats().udpFlows, 0);
      assert.equal(fwd.acceptUdp(to("198.18.0.1", 123)), false);
      assert.equal(fwd.acceptUdp(to("169.254.169.254", 53)), false);
      assert.equal(fwd.acceptUdp(to("192.0.2.1", 53)), true);
      assert.equal(fwd.stats().udpRefused, 3);
    },
  );
});

/** A resolver on loopback answering A queries from `zone`; counts the queries it saw. */
function zoneResolver(zone: Record<string, string>) {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const seen: string[] = [];
  const done = (async () => {
    try {
      for (;;) {
        const [data, from] = await socket.receive();
        const q = decodeDns(data)!;
        const question = q.questions![0];
        seen.push(question.name);
        const address = zone[question.name];
        await socket.send(
          encodeDns({
            type: "response",
            id: q.id,
            flags: 0x0180,
            questions: [question],
            answers: address ? [{ type: "A", name: question.name, ttl: 30, data: address }] : [],
          }),
          from,
        );
      }
    } catch {
      // closed
    }
  })();
  return {
    port: (socket.addr as Deno.NetAddr).port,
    seen,
    async [Symbol.asyncDispose]() {
      socket.close();
      await done;
    },
  };
}

/** Sends one DNS query for `name` through the forwarder's DNS relay; returns the answer. */
async function resolveThrough(fwd: Forwarder, name: string) {
  const u = fakeUdp({ address: "198.18.0.1", port: 53 });
  const handled = fwd.onUdp(u.flow);
  await u.clientWriter.write(
    encodeDns({ type: "query", id: 77, flags: 0x0100, questions: [{ type: "A", name }] }),
  );
  const { value } = await u.clientReader.read();
  await u.clientWriter.close();
  await handled;
  return decodeDns(value!)!;
}

Deno.test("Forwarder hostnames and domain rules", async (t) => {
  await t.step(
    "a name learnt from DNS: in the dial, the upstream chooser and the refusal",
    async () => {
      await using resolver = zoneResolver({ "ok.test": "127.0.0.1", "bad.deny.test": "127.0.0.2" });
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = listener.addr.port;
      const { log, records } = recorder();
      const chooser: (string | undefined)[] = [];
      using fwd = forwarder({
        localAddresses: ["198.18.0.1"],
        rules: [...LOOPBACK, parsePolicyRule("allow", "127.0.0.2")],
        dns: { hostname: "127.0.0.1", port: resolver.port },
        denyDomains: ["*.deny.test"],
        dnsBlock: "off",
        upstream: (info) => void chooser.push(info.hostname),
      }, log);
      await resolveThrough(fwd, "ok.test");
      await resolveThrough(fwd, "bad.deny.test");
      const ok = await fwd.accept(to("127.0.0.1", port));
      assert.equal(ok.decision, "accept");
      assert.equal(ok.hostname, "ok.test");
      ok.upstream!.close();
      const bad = await fwd.accept(to("127.0.0.2", port));
      assert.equal(bad.decision, "rst");
      assert.deepEqual(chooser, ["ok.test"], "the upstream is not chosen for a refused flow");
      const refused = records.find((r) => r.event === "domain-refused")!;
      assert.equal(refused.host, "bad.deny.test");
      assert.equal(refused.hostSource, "dns");
      const stats = fwd.stats();
      assert.equal(stats.domainRefused, 1);
      assert.equal(stats.dnsNames.entries, 2);
    },
  );

  await t.step("the DNS forwarder answers a denied name itself (NXDOMAIN or 0.0.0.0)", async () => {
    await using resolver = zoneResolver({ "ok.test": "127.0.0.1" });
    for (const mode of ["nxdomain", "zero"] as const) {
      const { log, records } = recorder();
      using fwd = forwarder({
        localAddresses: ["198.18.0.1"],
        dns: { hostname: "127.0.0.1", port: resolver.port },
        denyDomains: ["*.ads.test"],
        dnsBlock: mode,
      }, log);
      const answer = await resolveThrough(fwd, "x.ads.test");
      assert.equal(answer.id, 77);
      assert.equal(answer.flags! & 0xf, mode === "nxdomain" ? 3 : 0);
      assert.equal(answer.answers!.length, mode === "zero" ? 1 : 0);
      assert.equal((await resolveThrough(fwd, "ok.test")).answers![0].data, "127.0.0.1");
      assert.equal(fwd.stats().dnsBlocked, 1);
      assert.equal(records.find((r) => r.event === "dns-blocked")?.host, "x.ads.test");
    }
    assert.deepEqual(resolver.seen, ["ok.test", "ok.test"], "blocked names never left");
  });

  await t.step(
    "a name read from the first bytes is refused before any byte goes upstream",
    async () => {
      const { log, records } = recorder();
      using fwd = forwarder({ localAddresses: ["198.18.0.1"], denyDomains: ["*.deny.test"] }, log);
      const written: number[] = [];
      const closed = { n: 0 };
      const upstream = {
        ...fakeUpstream(closed),
        write: (b: Uint8Array) => (written.push(b.length), Promise.resolve(b.length)),
      };
      const c = fakeTcp({ address: "192.0.2.80", port: 80 });
      const relay = fwd.relay(c.stream, upstream);
      await c.clientWriter.write(
        new TextEncoder().encode("GET / HTTP/1.1\r\nHost: www.deny.test\r\n\r\n"),
      ).catch(() => {});
      await relay;
      assert.deepEqual(written, []);
      assert.equal(c.resets(), 1);
      const close = records.find((r) => r.event === "tcp-close")!;
      assert.equal(close.end, "domain refused");
      assert.equal(close.host, "www.deny.test");
      assert.equal(close.hostSource, "http");
      assert.equal(fwd.stats().domainRefused, 1);
    },
  );

  await t.step("UDP behind an HTTP proxy: refused by default, or sent directly", () => {
    using refuse = forwarder({ upstream: "http://192.0.2.9:8080" });
    assert.equal(refuse.acceptUdp(to("192.0.2.80", 443)), false);
    using direct = forwarder({ upstream: "http://192.0.2.9:8080", upstreamUdp: "direct" });
    assert.equal(direct.acceptUdp(to("192.0.2.80", 443)), true);
    using socks = forwarder({ upstream: "socks5://192.0.2.9:1080" });
    assert.equal(socks.acceptUdp(to("192.0.2.80", 443)), true);
  });
});

Deno.test("Forwarder: a QUIC flow named by its Initial", async (t) => {
  const initials = await realQuicInitials("video.deny.test");
  const allowed = await realQuicInitials("ok.test");
  const target = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (target.addr as Deno.NetAddr).port;
  const received: number[] = [];
  const receiving = (async () => {
    try {
      for (;;) received.push((await target.receive())[0].length);
    } catch {
      // closed
    }
  })();
  await t.step("a denied name: the Initial never leaves, the flow ends", async () => {
    const { log, records } = recorder();
    using fwd = forwarder({ rules: LOOPBACK, denyDomains: ["*.deny.test"] }, log);
    const u = fakeUdp({ address: "127.0.0.1", port });
    const handled = fwd.onUdp(u.flow);
    for (const d of initials) await u.clientWriter.write(d).catch(() => {});
    await handled;
    const close = records.find((r) => r.event === "udp-close")!;
    assert.equal(close.end, "domain refused");
    assert.equal(close.host, "video.deny.test");
    assert.equal(close.hostSource, "quic");
    assert.equal(close.datagramsUp, 0);
    assert.equal(fwd.stats().domainRefused, 1);
    assert.equal(fwd.stats().hostnames.quic, 1);
  });
  await t.step("an allowed name is logged and the datagrams go on unchanged", async () => {
    const { log, records } = recorder();
    using fwd = forwarder({ rules: LOOPBACK, denyDomains: ["*.deny.test"] }, log);
    const u = fakeUdp({ address: "127.0.0.1", port });
    const handled = fwd.onUdp(u.flow);
    for (const d of allowed) await u.clientWriter.write(d);
    await waitUntil(() => received.length === allowed.length);
    await u.clientWriter.close();
    await handled;
    assert.deepEqual(received, allowed.map((d) => d.length));
    assert.equal(records.find((r) => r.event === "udp-close")?.host, "ok.test");
  });
  target.close();
  await receiving;
});

async function waitUntil(ok: () => boolean): Promise<void> {
  while (!ok()) await new Promise((r) => setTimeout(r, 5));
}

Deno.test("relay sniffing: server-first protocols are not delayed, no byte is lost", async (t) => {
  await t.step(
    "the banner reaches the client while the client's first bytes are awaited",
    async () => {
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      let got = "";
      const served = (async () => {
        const conn = await listener.accept();
        await conn.write(new TextEncoder().encode("SSH-2.0-test\r\n"));
        got = new TextDecoder().decode(await readConn(conn));
      })();
      const { log, records } = recorder();
      // A long budget: were the banner held until it ran out, the test would wait for it.
      using fwd = forwarder({ rules: LOOPBACK, sniff: { timeoutMs: 60_000 } }, log);
      const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
      const dial = await fwd.accept(c.stream);
      const relay = fwd.relay(c.stream, dial.upstream!);
      const banner = await c.clientReader.read();
      assert.equal(new TextDecoder().decode(banner.value), "SSH-2.0-test\r\n");
      await c.clientWriter.write(new TextEncoder().encode("SSH-2.0-client\r\n"));
      await c.clientWriter.write(new TextEncoder().encode("rest"));
      await c.clientWriter.close();
      await readAll(c.clientReader);
      await relay;
      await served;
      assert.equal(got, "SSH-2.0-client\r\nrest");
      assert.equal(records.find((r) => r.event === "tcp-close")?.host, undefined);
    },
  );
  await t.step("bytes after the budget ran out follow the held ones in order", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    let got = "";
    const served = (async () => {
      got = new TextDecoder().decode(await readConn(await listener.accept()));
    })();
    using fwd = forwarder({ rules: LOOPBACK, sniff: { timeoutMs: 30 } });
    const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
    const dial = await fwd.accept(c.stream);
    const relay = fwd.relay(c.stream, dial.upstream!);
    await c.clientWriter.write(new TextEncoder().encode("GET / HTT")); // held: no name yet
    await new Promise((r) => setTimeout(r, 60)); // the budget ends while a read waits
    await c.clientWriter.write(new TextEncoder().encode("P/1.1\r\nHost: late.test\r\n\r\n"));
    await c.clientWriter.close();
    await readAll(c.clientReader);
    await relay;
    await served;
    assert.equal(got, "GET / HTTP/1.1\r\nHost: late.test\r\n\r\n");
  });
});

Deno.test("Forwarder.flows: live connections and flows, then the closed ones", async (t) => {
  await t.step("a TCP relay: host name, bytes, state, then how it ended", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted = listener.accept();
    using fwd = forwarder({ localAddresses: ["198.18.0.1"], rules: LOOPBACK });
    const c = fakeTcp({ address: "127.0.0.1", port: listener.addr.port });
    const dial = await fwd.accept(c.stream);
    const handled = fwd.relay(c.stream, dial.upstream!);
    const request = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: Flows.Test\r\n\r\n");
    await c.clientWriter.write(request);
    const up = await accepted;
    const got = new Uint8Array(request.length);
    let n = 0;
    while (n < got.length) n += (await up.read(got.subarray(n)))!;
    await up.write(new TextEncoder().encode("hello"));
    await c.clientReader.read();
    await waitUntil(() => fwd.flows().flows[0]?.bytesDown === 5);
    const page = fwd.flows();
    assert.equal(page.total, 1);
    const f = page.flows[0];
    assert.equal(f.protocol, "tcp");
    assert.equal(f.peer, peer.publicKey);
    assert.equal(f.peerName, "phone");
    assert.deepEqual(f.source, source);
    assert.equal(f.destination.port, listener.addr.port);
    assert.equal(f.hostname, "flows.test");
    assert.equal(f.hostnameSource, "http");
    assert.equal(f.bytesUp, request.length);
    assert.equal(f.state, "open");
    assert.equal(fwd.flows({ host: "flows", peer: "phone", port: listener.addr.port }).matched, 1);
    assert.equal(fwd.flows({ protocol: "udp" }).matched, 0);
    await c.clientWriter.close();
    await waitUntil(() => fwd.flows().flows[0]?.state === "client-fin");
    up.close();
    await handled;
    assert.equal(fwd.flows().total, 0);
    const closed = fwd.flows({ closed: true });
    assert.equal(closed.total, 1);
    assert.equal(closed.flows[0].id, f.id);
    assert.equal(closed.flows[0].end, "closed");
    assert.equal(closed.flows[0].state, "closed");
    assert.equal(closed.flows[0].bytesDown, 5);
  });

  await t.step("a UDP flow: bytes as they go, then expired", async () => {
    const echo = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const echoPort = (echo.addr as Deno.NetAddr).port;
    const echoing = (async () => {
      try {
        for (;;) {
          const [data, from] = await echo.receive();
          await echo.send(data, from);
        }
      } catch {
        // closed
      }
    })();
    const fwd = forwarder({ localAddresses: ["198.18.0.1"], rules: LOOPBACK, closedFlows: 1 });
    const u = fakeUdp({ address: "127.0.0.1", port: echoPort });
    const handled = fwd.onUdp(u.flow);
    await u.clientWriter.write(new TextEncoder().encode("four"));
    await u.clientReader.read();
    await waitUntil(() => fwd.flows().flows[0]?.bytesDown === 4);
    const f = fwd.flows({ protocol: "udp" }).flows[0];
    assert.equal(f.bytesUp, 4);
    assert.equal(f.destination.port, echoPort);
    await u.clientWriter.close();
    await handled;
    echo.close();
    await echoing;
    assert.equal(fwd.flows().total, 0);
    assert.deepEqual(fwd.flows({ closed: true }).flows.map((x) => [x.protocol, x.end]), [
      ["udp", "expired"],
    ]);
    fwd.close();
  });
});
