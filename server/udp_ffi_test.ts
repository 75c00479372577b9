import assert from "node:assert/strict";
import {
  decodeSockaddr,
  encodeAddress,
  openFfiUdpSocket,
  RECV_BATCH,
  SEND_BATCH,
  SEND_SLOT,
} from "./udp_ffi.ts";
import { openUdpSocket, type UdpEndpoint, type UdpSocket } from "./udp.ts";

const supported = Deno.build.os === "linux" &&
  (Deno.build.arch === "x86_64" || Deno.build.arch === "aarch64");

function open(hostname: string): UdpSocket {
  const socket = openFfiUdpSocket({ hostname, port: 0 });
  assert.ok(socket !== null, "the FFI adapter opens on Linux with --allow-ffi");
  return socket;
}

/** Deterministic bytes, different per (length, seed). */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let s = (seed * 2654435761 + length) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s & 0xff;
  }
  return out;
}

interface Received {
  data: Uint8Array;
  from: UdpEndpoint;
}

/**
 * Listens on `socket`, keeping copies; `next(n)` waits for `n` more. The
 * 10 s guard only turns a hang into a failure.
 */
function collect(socket: UdpSocket, onEach?: (r: Received) => void) {
  const all: Received[] = [];
  let waiter: { count: number; resolve: () => void } | undefined;
  const listening = socket.listen((data, from) => {
    const r = { data: data.slice(), from };
    all.push(r);
    onEach?.(r);
    if (waiter && all.length >= waiter.count) {
      waiter.resolve();
      waiter = undefined;
    }
  });
  return {
    all,
    listening,
    async until(count: number): Promise<Received[]> {
      if (all.length < count) {
        let guard: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          new Promise<void>((resolve) => waiter = { count, resolve }),
          new Promise<never>((_, reject) =>
            guard = setTimeout(
              () => reject(new Error(`only ${all.length} of ${count} datagrams arrived`)),
              10_000,
            )
          ),
        ]).finally(() => clearTimeout(guard));
      }
      return all.slice(0, count);
    },
  };
}

async function exchange(hostA: string, hostB: string, to: string, expectFrom: string) {
  const a = open(hostA);
  const b = open(hostB);
  const atA = collect(a);
  const atB = collect(b);
  const sizes = [0, 1, 1452, 9000, SEND_SLOT, SEND_SLOT + 1];
  for (let i = 0; i < sizes.length; i++) {
    a.send(pattern(sizes[i], i), { address: to, port: b.addr.port });
  }
  const gotB = await atB.until(sizes.length);
  for (let i = 0; i < sizes.length; i++) {
    assert.deepEqual(gotB[i].data, pattern(sizes[i], i), `a → b datagram ${i}`);
    assert.deepEqual(gotB[i].from, { address: expectFrom, port: a.addr.port });
    // Reply to the endpoint as received.
    b.send(pattern(sizes[i], 100 + i), gotB[i].from);
  }
  const gotA = await atA.until(sizes.length);
  for (let i = 0; i < sizes.length; i++) {
    assert.deepEqual(gotA[i].data, pattern(sizes[i], 100 + i), `b → a datagram ${i}`);
    assert.equal(gotA[i].from.port, b.addr.port);
  }
  assert.deepEqual(a.stats(), {
    received: sizes.length,
    sent: sizes.length,
    sendDropped: 0,
    sendErrors: 0,
  });
  assert.deepEqual(b.stats(), {
    received: sizes.length,
    sent: sizes.length,
    sendDropped: 0,
    sendErrors: 0,
  });
  a.close();
  b.close();
  await atA.listening;
  await atB.listening;
  return { gotA, gotB };
}

Deno.test({
  name: "udp_ffi: loopback sockets",
  ignore: !supported,
  async fn(t) {
    await t.step("binds port 0 and reports the real port", async () => {
      const v4 = open("127.0.0.1");
      const v6 = open("::1");
      const any = open("::");
      assert.equal(v4.addr.address, "127.0.0.1");
      assert.equal(v6.addr.address, "::1");
      assert.equal(any.addr.address, "::");
      for (const s of [v4, v6, any]) {
        assert.ok(s.addr.port > 0 && s.addr.port <= 65535);
        s.close();
      }
      // A taken port throws (it does not fall back).
      const first = open("127.0.0.1");
      assert.throws(
        () => openFfiUdpSocket({ hostname: "127.0.0.1", port: first.addr.port }),
        Deno.errors.AddrInUse,
      );
      first.close();
      await Promise.resolve();
    });

    await t.step("hostnames that are not IP literals return null", () => {
      assert.equal(openFfiUdpSocket({ hostname: "localhost", port: 0 }), null);
    });

    await t.step("IPv4 both ways, byte-exact, sizes 0 to past a send slot", async () => {
      await exchange("127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1");
    });

    await t.step("IPv6 both ways", async () => {
      await exchange("::1", "::1", "::1", "::1");
    });

    await t.step("IPv4 into a dual-stack :: socket is seen as plain IPv4 text", async () => {
      const { gotB } = await exchange("127.0.0.1", "::", "127.0.0.1", "127.0.0.1");
      assert.ok(!gotB[0].from.address.includes(":"));
    });

    await t.step("a dual-stack socket sends to IPv4-mapped text", async () => {
      const a = open("127.0.0.1");
      const b = open("::");
      const atA = collect(a);
      b.send(pattern(10, 1), { address: "::ffff:127.0.0.1", port: a.addr.port });
      const [got] = await atA.until(1);
      assert.deepEqual(got.data, pattern(10, 1));
      assert.deepEqual(got.from, { address: "127.0.0.1", port: b.addr.port });
      a.close();
      b.close();
      await atA.listening;
    });

    await t.step("the largest IPv4 datagram (65507 bytes) arrives whole", async () => {
      const a = open("127.0.0.1");
      const b = open("127.0.0.1");
      const atB = collect(b);
      a.send(pattern(65507, 9), { address: "127.0.0.1", port: b.addr.port });
      const [got] = await atB.until(1);
      assert.deepEqual(got.data, pattern(65507, 9));
      a.close();
      b.close();
      await atB.listening;
    });

    await t.step("1000 datagrams sent in one go arrive complete and in order", async () => {
      const a = open("127.0.0.1");
      const b = open("127.0.0.1");
      const atB = collect(b);
      const to = { address: "127.0.0.1", port: b.addr.port };
      const count = 1000;
      for (let i = 0; i < count; i++) {
        // Mostly small, every 97th bigger than a slot (the direct path).
        const size = i % 97 === 0 ? SEND_SLOT + 500 : 4 + (i % 300);
        const data = pattern(size, i);
        new DataView(data.buffer).setUint32(0, i);
        a.send(data, to);
      }
      assert.ok(count > SEND_BATCH && count > RECV_BATCH);
      const got = await atB.until(count);
      for (let i = 0; i < count; i++) {
        const size = i % 97 === 0 ? SEND_SLOT + 500 : 4 + (i % 300);
        const expected = pattern(size, i);
        new DataView(expected.buffer).setUint32(0, i);
        assert.deepEqual(got[i].data, expected, `datagram ${i}`);
      }
      assert.equal(a.stats().sent, count);
      assert.equal(b.stats().received, count);
      a.close();
      b.close();
      await atB.listening;
    });

    await t.step("replies sent from the receive callback go out in one flush", async () => {
      const echo = open("127.0.0.1");
      const client = open("127.0.0.1");
      const echoing = echo.listen((data, from) => echo.send(data, from));
      const atClient = collect(client);
      const to = { address: "127.0.0.1", port: echo.addr.port };
      for (let i = 0; i < 200; i++) client.send(pattern(64, i), to);
      const got = await atClient.until(200);
      for (let i = 0; i < 200; i++) assert.deepEqual(got[i].data, pattern(64, i));
      assert.equal(echo.stats().sent, 200);
      echo.close();
      client.close();
      await echoing;
      await atClient.listening;
    });

    await t.step("bad destinations count as send errors and do not throw", () => {
      const v4 = open("127.0.0.1");
      v4.send(new Uint8Array(4), { address: "not-an-address", port: 9 });
      v4.send(new Uint8Array(4), { address: "127.0.0.1", port: 0 });
      v4.send(new Uint8Array(4), { address: "::1", port: 9 }); // IPv6 from an IPv4 socket
      assert.deepEqual(v4.stats(), { received: 0, sent: 0, sendDropped: 0, sendErrors: 3 });
      v4.close();
    });

    await t.step("close() ends listen(); listen after close resolves at once", async () => {
      const a = open("127.0.0.1");
      const listening = a.listen(() => {});
      await assert.rejects(a.listen(() => {}), TypeError);
      a.close();
      await listening;
      a.close(); // twice is fine
      a.send(new Uint8Array(1), { address: "127.0.0.1", port: 9 }); // ignored after close
      assert.equal(a.stats().sent, 0);
      const b = open("127.0.0.1");
      b.close();
      await b.listen(() => {});
    });

    await t.step("close() from inside the callback", async () => {
      const a = open("127.0.0.1");
      const b = open("127.0.0.1");
      let calls = 0;
      const listening = b.listen(() => {
        calls++;
        b.close();
      });
      for (let i = 0; i < 5; i++) {
        a.send(new Uint8Array(8), { address: "127.0.0.1", port: b.addr.port });
      }
      await listening;
      assert.equal(calls, 1, "nothing is delivered after close()");
      a.close();
    });

    await t.step("a throwing callback rejects listen() and closes the socket", async () => {
      const a = open("127.0.0.1");
      const b = open("127.0.0.1");
      const listening = b.listen(() => {
        throw new Error("boom");
      });
      a.send(new Uint8Array(8), { address: "127.0.0.1", port: b.addr.port });
      await assert.rejects(listening, /boom/);
      a.close();
    });

    await t.step("interop with a Deno.listenDatagram peer", async () => {
      const ours = open("::");
      const peer = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
      const peerPort = (peer.addr as Deno.NetAddr).port;
      const atOurs = collect(ours);
      const sizes = [0, 1, 1452, 9000];
      for (let i = 0; i < sizes.length; i++) {
        ours.send(pattern(sizes[i], i), { address: "127.0.0.1", port: peerPort });
      }
      for (let i = 0; i < sizes.length; i++) {
        const [data, from] = await peer.receive();
        assert.deepEqual(data, pattern(sizes[i], i));
        assert.equal((from as Deno.NetAddr).port, ours.addr.port);
        await peer.send(pattern(sizes[i], 50 + i), {
          transport: "udp",
          hostname: "127.0.0.1",
          port: ours.addr.port,
        });
      }
      const got = await atOurs.until(sizes.length);
      for (let i = 0; i < sizes.length; i++) {
        assert.deepEqual(got[i].data, pattern(sizes[i], 50 + i));
        assert.deepEqual(got[i].from, { address: "127.0.0.1", port: peerPort });
      }
      peer.close();
      ours.close();
      await atOurs.listening;
    });
  },
});

Deno.test("udp_ffi: sockaddr encoding", async (t) => {
  const cases: [string, string][] = [
    ["::", "::"],
    ["::1", "::1"],
    ["2001:db8::1", "2001:db8::1"],
    ["2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
    ["1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"], // a single zero group is not compressed
    ["fe80::1%3", "fe80::1%3"],
    ["::ffff:192.0.2.7", "192.0.2.7"],
    ["64:ff9b::192.0.2.7", "64:ff9b::c000:207"],
  ];
  await t.step("IPv6 text round-trips to RFC 5952 form", () => {
    for (const [text, expected] of cases) {
      const sa = new Uint8Array(28);
      assert.equal(encodeAddress(text, sa, true), 10, text);
      sa[2] = 0x12;
      sa[3] = 0x34;
      assert.deepEqual(decodeSockaddr(sa, 0), { address: expected, port: 0x1234 }, text);
    }
  });
  await t.step("IPv4 on v4 and v6 sockets", () => {
    const sa = new Uint8Array(28);
    assert.equal(encodeAddress("192.0.2.7", sa, false), 2);
    assert.deepEqual([...sa.subarray(0, 8)], [2, 0, 0, 0, 192, 0, 2, 7]);
    assert.deepEqual(decodeSockaddr(sa, 0), { address: "192.0.2.7", port: 0 });
    assert.equal(encodeAddress("192.0.2.7", sa, true), 10);
    assert.deepEqual(decodeSockaddr(sa, 0), { address: "192.0.2.7", port: 0 });
    assert.equal(encodeAddress("::ffff:192.0.2.7", sa, false), 2);
    assert.deepEqual(decodeSockaddr(sa, 0), { address: "192.0.2.7", port: 0 });
  });
  await t.step("invalid text is refused", () => {
    for (
      const text of [
        "",
        "1.2.3",
        "1.2.3.256",
        "01.2.3.4",
        "1::2::3",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7",
        "12345::",
        "fe80::1%eth0",
        "example.com",
      ]
    ) {
      assert.equal(encodeAddress(text, new Uint8Array(28), true), 0, text);
    }
    assert.equal(encodeAddress("2001:db8::1", new Uint8Array(28), false), 0);
  });
});

Deno.test({
  name: "udp: openUdpSocket picks the adapter",
  ignore: !supported,
  async fn(t) {
    const kind = (s: UdpSocket) => s.constructor.name === "FfiUdpSocket" ? "ffi" : "other";
    await t.step("auto prefers ffi under Deno on Linux", async () => {
      const previous = Deno.env.get("WGSTACK_UDP");
      Deno.env.delete("WGSTACK_UDP");
      try {
        const s = await openUdpSocket({ hostname: "127.0.0.1", port: 0 });
        assert.equal(kind(s), "ffi");
        s.close();
      } finally {
        if (previous !== undefined) Deno.env.set("WGSTACK_UDP", previous);
      }
    });
    await t.step("an explicit adapter and WGSTACK_UDP", async () => {
      const deno = await openUdpSocket({ hostname: "127.0.0.1", port: 0, adapter: "deno" });
      assert.equal(kind(deno), "other");
      deno.close();
      const ffi = await openUdpSocket({ hostname: "127.0.0.1", port: 0, adapter: "ffi" });
      assert.equal(kind(ffi), "ffi");
      ffi.close();
      const previous = Deno.env.get("WGSTACK_UDP");
      Deno.env.set("WGSTACK_UDP", "deno");
      try {
        const s = await openUdpSocket({ hostname: "127.0.0.1", port: 0 });
        assert.equal(kind(s), "other");
        s.close();
      } finally {
        if (previous === undefined) Deno.env.delete("WGSTACK_UDP");
        else Deno.env.set("WGSTACK_UDP", previous);
      }
      await assert.rejects(
        // deno-lint-ignore no-explicit-any
        openUdpSocket({ hostname: "127.0.0.1", port: 0, adapter: "bogus" as any }),
        TypeError,
      );
      await assert.rejects(
        openUdpSocket({ hostname: "localhost", port: 0, adapter: "ffi" }),
        /not available/,
      );
    });
  },
});
