import assert from "node:assert/strict";
import {
  decodeSockaddr,
  encodeAddress,
  ffiUdpGroStatus,
  ffiUdpGsoStatus,
  type FfiUdpWait,
  ffiUdpWait,
  GSO_MAX_BYTES_V4,
  GSO_MAX_BYTES_V6,
  openFfiUdpSocket,
  RECV_BATCH,
  SEND_BATCH,
  SEND_SLOT,
} from "./_udp_ffi.ts";
import { openUdpSocket, type UdpEndpoint, type UdpSocket } from "./udp.ts";
import { xorshift32 } from "../tests/_prng.ts";
import { requirement } from "../tests/_skip.ts";

const needsFfi = requirement(
  "udp_ffi",
  Deno.build.os === "linux" && (Deno.build.arch === "x86_64" || Deno.build.arch === "aarch64")
    ? undefined
    : `the FFI adapter is for Linux on x86_64 or aarch64, not ${Deno.build.os} on ${Deno.build.arch}`,
);

function open(hostname: string, gso?: boolean, gro?: boolean, wait?: FfiUdpWait): UdpSocket {
  const socket = openFfiUdpSocket({ hostname, port: 0 }, { gso, gro, wait });
  assert.ok(socket !== null, "the FFI adapter opens on Linux with --allow-ffi");
  return socket;
}

/** Deterministic bytes, different per (length, seed). */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  const next = xorshift32(seed * 2654435761 + length);
  for (let i = 0; i < length; i++) out[i] = next() & 0xff;
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
  ignore: needsFfi.ignore,
  async fn(t) {
    needsFfi.assert();
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

/** `pattern(length, seed)` with `seed` in the first 4 bytes (when they fit). */
function numbered(length: number, seed: number): Uint8Array {
  const out = pattern(length, seed);
  if (length >= 4) new DataView(out.buffer).setUint32(0, seed);
  return out;
}

/**
 * Runs `fn` with the descriptor of `socket` (found by its bound port among
 * this process's sockets) and a libc `setsockopt`, to put the socket into
 * states the kernel refuses GSO in.
 */
function withDescriptor(
  socket: UdpSocket,
  fn: (fd: number, setsockopt: (level: number, name: number, value: number) => void) => void,
): void {
  const lib = Deno.dlopen("libc.so.6", {
    getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
    setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  });
  try {
    const found: number[] = [];
    for (const entry of Deno.readDirSync("/proc/self/fd")) {
      const fd = Number(entry.name);
      let link: string;
      try {
        link = Deno.readLinkSync(`/proc/self/fd/${fd}`);
      } catch {
        continue;
      }
      if (!link.startsWith("socket:")) continue;
      const sa = new Uint8Array(28);
      const len = new Uint32Array([28]);
      if (lib.symbols.getsockname(fd, sa, new Uint8Array(len.buffer)) !== 0) continue;
      const family = sa[0] | (sa[1] << 8);
      if (family !== 2 && family !== 10) continue;
      if (decodeSockaddr(sa, 0)?.port === socket.addr.port) found.push(fd);
    }
    assert.equal(found.length, 1, "exactly one socket has the port");
    fn(found[0], (level, name, value) => {
      const int = new Int32Array([value]);
      const rc = lib.symbols.setsockopt(found[0], level, name, new Uint8Array(int.buffer), 4);
      assert.equal(rc, 0, `setsockopt(${level}, ${name})`);
    });
  } finally {
    lib.close();
  }
}

Deno.test({
  name: "udp_ffi: UDP GSO on send",
  ignore: needsFfi.ignore,
  async fn(t) {
    needsFfi.assert();
    for (const host of ["127.0.0.1", "::1"]) {
      for (const gso of [true, false]) {
        await t.step(
          `${host}, GSO ${gso ? "on" : "off"}: 200 × 1452 B and a shorter tail arrive ` +
            `one by one at a Deno.listenDatagram peer`,
          async () => {
            const ours = open(host, gso);
            const peer = Deno.listenDatagram({ transport: "udp", hostname: host, port: 0 });
            const to = { address: host, port: (peer.addr as Deno.NetAddr).port };
            const sizes = [...Array(200).fill(1452), 100];
            // Bursts of one full send ring (one flush each), drained in
            // between: the peer's default receive buffer holds about 90.
            for (let first = 0; first < sizes.length; first += SEND_BATCH) {
              const last = Math.min(sizes.length, first + SEND_BATCH);
              for (let i = first; i < last; i++) ours.send(numbered(sizes[i], i), to);
              for (let i = first; i < last; i++) {
                const [data, from] = await peer.receive();
                assert.deepEqual(data, numbered(sizes[i], i), `datagram ${i}`);
                assert.equal((from as Deno.NetAddr).port, ours.addr.port);
              }
            }
            assert.deepEqual(ours.stats(), {
              received: 0,
              sent: sizes.length,
              sendDropped: 0,
              sendErrors: 0,
            });
            const status = ffiUdpGsoStatus(ours)!;
            if (gso) {
              // Per full ring 45 + 19 (45 × 1452 B is the most under 64 KiB),
              // then 8 × 1452 B + 100 B in one message.
              assert.deepEqual(status, {
                enabled: true,
                messages: 7,
                segments: 201,
                fallbacks: 0,
                disabledErrno: 0,
              });
            } else {
              assert.equal(status.enabled, false);
              assert.equal(status.messages, 0);
            }
            peer.close();
            ours.close();
          },
        );
      }
    }

    for (
      const [local, remote] of [["127.0.0.1", "127.0.0.1"], ["::1", "::1"], ["::", "127.0.0.1"]]
    ) {
      for (const gso of [true, false]) {
        await t.step(
          `${local} → ${remote}, GSO ${gso ? "on" : "off"}: mixed sizes to two interleaved ` +
            `destinations keep content and order per destination`,
          async () => {
            const ours = open(local, gso);
            const b = open(remote, false);
            const c = open(remote, false);
            const atB = collect(b);
            const atC = collect(c);
            // Runs of 1 to 70 datagrams to one destination, then the other;
            // per run one size, sometimes ended by a shorter or longer one.
            const plan: { to: UdpSocket; size: number }[] = [];
            const runSizes = [1452, 1452, 1452, 1, 100, 1000, SEND_SLOT, 0, 1452, 77];
            let run = 0;
            while (plan.length < 1500) {
              const to = run % 3 === 1 ? c : b; // b, c, b, b, c, b, ...
              const size = runSizes[run % runSizes.length];
              const length = 1 + ((run * 37) % 70);
              for (let i = 0; i < length; i++) plan.push({ to, size });
              if (run % 4 === 1) plan.push({ to, size: Math.max(0, size - 50) });
              if (run % 5 === 3) plan.push({ to, size: size + 60 }); // may exceed a slot
              run++;
            }
            for (let i = 0; i < plan.length; i++) {
              ours.send(numbered(plan[i].size, i), { address: remote, port: plan[i].to.addr.port });
              if (i % 500 === 499) await new Promise((r) => setTimeout(r, 0));
            }
            const expectB = plan.flatMap((p, i) => p.to === b ? [numbered(p.size, i)] : []);
            const expectC = plan.flatMap((p, i) => p.to === c ? [numbered(p.size, i)] : []);
            const gotB = await atB.until(expectB.length);
            const gotC = await atC.until(expectC.length);
            assert.deepEqual(gotB.map((r) => r.data), expectB);
            assert.deepEqual(gotC.map((r) => r.data), expectC);
            assert.deepEqual(gotB[0].from, { address: remote, port: ours.addr.port });
            assert.equal(ours.stats().sent, plan.length);
            const status = ffiUdpGsoStatus(ours)!;
            assert.equal(status.fallbacks, 0);
            if (gso) assert.ok(status.messages > 0 && status.segments > status.messages);
            else assert.equal(status.messages, 0);
            for (const s of [ours, b, c]) s.close();
            await atB.listening;
            await atC.listening;
          },
        );
      }
    }

    await t.step(
      "runs at the byte limits: 65507 B (IPv4), 65527 B (IPv6) per message",
      async () => {
        for (const [host, limit] of [["127.0.0.1", GSO_MAX_BYTES_V4], ["::1", GSO_MAX_BYTES_V6]]) {
          for (const extra of [0, 1]) {
            const ours = open(host as string);
            const rx = open(host as string, false);
            const at = collect(rx);
            // 31 full slots and a tail that reaches the limit (or passes it by 1).
            const sizes = [
              ...Array(31).fill(SEND_SLOT),
              (limit as number) - 31 * SEND_SLOT + extra,
            ];
            assert.ok(sizes[31] <= SEND_SLOT);
            const to = { address: host as string, port: rx.addr.port };
            sizes.forEach((size, i) => ours.send(numbered(size, i), to));
            const got = await at.until(sizes.length);
            assert.deepEqual(got.map((r) => r.data), sizes.map((size, i) => numbered(size, i)));
            const status = ffiUdpGsoStatus(ours)!;
            assert.equal(status.fallbacks, 0, "the kernel took every message");
            // Within the limit: one message; past it: the tail goes alone.
            assert.equal(status.segments, extra === 0 ? 32 : 31);
            ours.close();
            rx.close();
            await at.listening;
          }
        }
      },
    );

    for (
      const [variable, option, status] of [
        ["WGSTACK_UDP_GSO", "gso", ffiUdpGsoStatus],
        ["WGSTACK_UDP_GRO", "gro", ffiUdpGroStatus],
      ] as const
    ) {
      await t.step(`${variable}=0 turns ${option} off; an explicit option wins`, () => {
        const previous = Deno.env.get(variable);
        try {
          Deno.env.set(variable, "0");
          const off = openFfiUdpSocket({ hostname: "127.0.0.1", port: 0 })!;
          assert.equal(status(off)!.enabled, false);
          const on = openFfiUdpSocket({ hostname: "127.0.0.1", port: 0 }, { [option]: true })!;
          assert.equal(status(on)!.enabled, true);
          Deno.env.delete(variable);
          const dflt = openFfiUdpSocket({ hostname: "::", port: 0 })!;
          assert.equal(status(dflt)!.enabled, true);
          for (const s of [off, on, dflt]) s.close();
        } finally {
          if (previous === undefined) Deno.env.delete(variable);
          else Deno.env.set(variable, previous);
        }
      });
    }

    await t.step(
      "a GSO send the kernel refuses (EINVAL) is resent plainly and GSO turns off",
      async () => {
        const ours = open("127.0.0.1", true);
        const rx = open("127.0.0.1", false);
        const at = collect(rx);
        // SO_NO_CHECK (no UDP checksums) makes the kernel refuse GSO with EINVAL.
        withDescriptor(ours, (_fd, setsockopt) => setsockopt(1, 11, 1));
        const to = { address: "127.0.0.1", port: rx.addr.port };
        for (let i = 0; i < 100; i++) ours.send(numbered(1452, i), to);
        await Promise.resolve();
        for (let i = 100; i < 150; i++) ours.send(numbered(1452, i), to);
        const got = await at.until(150);
        for (let i = 0; i < 150; i++) assert.deepEqual(got[i].data, numbered(1452, i), `${i}`);
        assert.deepEqual(ours.stats(), { received: 0, sent: 150, sendDropped: 0, sendErrors: 0 });
        assert.deepEqual(ffiUdpGsoStatus(ours), {
          enabled: false,
          messages: 0,
          segments: 0,
          fallbacks: 1,
          disabledErrno: 22,
        });
        ours.close();
        rx.close();
        await at.listening;
      },
    );

    await t.step("segments over the path MTU (EMSGSIZE) are resent plainly", async () => {
      const ours = open("::1", true);
      const rx = open("::1", false);
      const at = collect(rx);
      // IPV6_MTU 1280: a 1452-byte datagram needs fragments, a GSO segment may not.
      withDescriptor(ours, (_fd, setsockopt) => setsockopt(41, 24, 1280));
      const to = { address: "::1", port: rx.addr.port };
      for (let i = 0; i < 40; i++) ours.send(numbered(1452, i), to);
      await Promise.resolve();
      assert.deepEqual(
        { ...ffiUdpGsoStatus(ours)!, disabledErrno: 0 },
        { enabled: true, messages: 0, segments: 0, fallbacks: 1, disabledErrno: 0 },
      );
      // Later runs of that size go out plainly at once; smaller ones still use GSO.
      for (let i = 40; i < 80; i++) ours.send(numbered(1452, i), to);
      await Promise.resolve();
      for (let i = 80; i < 120; i++) ours.send(numbered(1000, i), to);
      const got = await at.until(120);
      for (let i = 0; i < 120; i++) {
        assert.deepEqual(got[i].data, numbered(i < 80 ? 1452 : 1000, i), `${i}`);
      }
      assert.deepEqual(ours.stats(), { received: 0, sent: 120, sendDropped: 0, sendErrors: 0 });
      assert.deepEqual(ffiUdpGsoStatus(ours), {
        enabled: true,
        messages: 1,
        segments: 40,
        fallbacks: 1,
        disabledErrno: 0,
      });
      ours.close();
      rx.close();
      await at.listening;
    });
  },
});

Deno.test({
  name: "udp_ffi: UDP GRO on receive",
  ignore: needsFfi.ignore,
  async fn(t) {
    needsFfi.assert();
    for (const host of ["127.0.0.1", "::1"]) {
      for (const gro of [true, false]) {
        await t.step(
          `${host}, GRO ${gro ? "on" : "off"}, receive thread: GSO bursts of 1452 B with ` +
            `shorter tails arrive byte-exact and in order (cut back apart when coalesced)`,
          async () => {
            const tx = open(host, true, false);
            const rx = open(host, false, gro, "thread");
            const at = collect(rx);
            const to = { address: host, port: rx.addr.port };
            // Bursts of one flush each: equal sizes (GSO groups them), some
            // ended by a shorter datagram, a size change, single datagrams.
            const bursts = [
              [...Array(45).fill(1452)],
              [...Array(30).fill(1452), 600],
              [1000, 1000, 1000, 1],
              [77],
              [...Array(20).fill(1200), ...Array(20).fill(1452)],
              [...Array(64).fill(100)],
            ];
            const sizes: number[] = [];
            for (const burst of bursts) {
              for (const size of burst) tx.send(numbered(size, sizes.length), to), sizes.push(size);
              await Promise.resolve(); // the flush
            }
            const got = await at.until(sizes.length);
            assert.deepEqual(got.map((r) => r.data), sizes.map((size, i) => numbered(size, i)));
            for (const r of got) assert.deepEqual(r.from, { address: host, port: tx.addr.port });
            assert.ok(ffiUdpGsoStatus(tx)!.messages >= 6, "the sender grouped the bursts");
            assert.equal(rx.stats().received, sizes.length);
            const status = ffiUdpGroStatus(rx)!;
            if (gro) {
              assert.equal(status.enabled, true);
              assert.equal(status.disabledErrno, 0);
              // Loopback hands each GSO message over whole to a GRO socket.
              assert.ok(status.messages > 0, "some messages arrived coalesced");
              assert.ok(status.segments > status.messages && status.segments <= sizes.length);
            } else {
              assert.deepEqual(status, {
                enabled: false,
                messages: 0,
                segments: 0,
                disabledErrno: 0,
                busyPeriods: 0,
              });
            }
            tx.close();
            rx.close();
            await at.listening;
          },
        );
      }
    }

    for (const host of ["127.0.0.1", "::1"]) {
      await t.step(
        `${host}, event-loop wait: GRO goes on while a full batch drains, coalesced ` +
          `messages are cut back apart, and the loop waits on the event loop again after`,
        async () => {
          const tx = open(host, true, false);
          const rx = open(host, false, true, "event-loop");
          const to = { address: host, port: rx.addr.port };
          const sizes: number[] = [];
          const send = (burst: number[]) => {
            for (const size of burst) tx.send(numbered(size, sizes.length), to), sizes.push(size);
          };
          // Burst A (100 datagrams) arrives while GRO is off: one datagram wakes
          // the loop, the first drain reads a full batch (GRO on), the second
          // drain the rest; from inside it, burst B is sent and flushed at once
          // (loopback delivers it during the send), so it queues coalesced.
          const at = collect(rx, () => {
            if (at.all.length === 80) {
              send([...Array(30).fill(1452), 600]);
              ffiUdpGsoStatus(tx); // flushes now
            }
          });
          send(Array(100).fill(100));
          await at.until(131);
          const status = ffiUdpGroStatus(rx)!;
          assert.equal(status.enabled, true);
          assert.ok(status.messages > 0, "burst B arrived coalesced");
          // After the drain GRO is off again and the event loop wakes the loop.
          send([1452, 1452, 1452, 7]);
          ffiUdpGsoStatus(tx);
          const got = await at.until(sizes.length);
          assert.deepEqual(got.map((r) => r.data), sizes.map((size, i) => numbered(size, i)));
          for (const r of got) assert.deepEqual(r.from, { address: host, port: tx.addr.port });
          assert.equal(rx.stats().received, sizes.length);
          tx.close();
          rx.close();
          await at.listening;
        },
      );
    }

    await t.step(
      "event-loop wait: where nothing is coalesced, GRO stops being turned on after 8 busy stretches",
      async () => {
        // Plain datagrams (no GSO sender): the kernel never coalesces them.
        const tx = open("127.0.0.1", false, false);
        const rx = open("127.0.0.1", false, true, "event-loop");
        const to = { address: "127.0.0.1", port: rx.addr.port };
        const at = collect(rx);
        let sent = 0;
        const periods: number[] = [];
        for (let burst = 0; burst < 12; burst++) {
          // 100 at once: a full batch makes each burst a busy stretch.
          for (let i = 0; i < 100; i++) tx.send(numbered(200, sent++), to);
          await at.until(sent);
          // Let the receive loop go back to waiting (it settles microtasks
          // after each batch: a burst sent from inside would join this stretch).
          await new Promise((r) => setTimeout(r, 5));
          periods.push(ffiUdpGroStatus(rx)!.busyPeriods);
        }
        assert.deepEqual(periods, [1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8]);
        assert.equal(ffiUdpGroStatus(rx)!.messages, 0);
        assert.deepEqual(
          at.all.map((r) => r.data),
          [...Array(sent)].map((_, i) => numbered(200, i)),
        );
        tx.close();
        rx.close();
        await at.listening;
      },
    );

    await t.step("a coalesced message and a callback that closes the socket mid-way", async () => {
      const tx = open("127.0.0.1", true, false);
      const rx = open("127.0.0.1", false, true, "thread");
      let seen = 0;
      const listening = rx.listen(() => {
        if (++seen === 3) rx.close();
      });
      const to = { address: "127.0.0.1", port: rx.addr.port };
      for (let i = 0; i < 10; i++) tx.send(numbered(1452, i), to);
      await listening;
      assert.equal(seen, 3, "no datagram is delivered after close()");
      tx.close();
    });
  },
});

Deno.test({
  name: "udp_ffi: waiting on the event loop or on a receive thread",
  ignore: needsFfi.ignore,
  async fn(t) {
    needsFfi.assert();
    const eventLoop = typeof Deno.listenDatagram === "function";
    await t.step("the default is the event loop (with --unstable-net); thread on request", () => {
      const previous = Deno.env.get("WGSTACK_UDP_WAIT");
      try {
        Deno.env.delete("WGSTACK_UDP_WAIT");
        const dflt = open("127.0.0.1");
        assert.equal(ffiUdpWait(dflt), eventLoop ? "event-loop" : "thread");
        const thread = open("::", undefined, undefined, "thread");
        assert.equal(ffiUdpWait(thread), "thread");
        Deno.env.set("WGSTACK_UDP_WAIT", "thread");
        const fromEnv = open("127.0.0.1");
        assert.equal(ffiUdpWait(fromEnv), "thread");
        const explicit = open("127.0.0.1", undefined, undefined, "event-loop");
        assert.equal(ffiUdpWait(explicit), eventLoop ? "event-loop" : "thread");
        for (const s of [dflt, thread, fromEnv, explicit]) s.close();
      } finally {
        if (previous === undefined) Deno.env.delete("WGSTACK_UDP_WAIT");
        else Deno.env.set("WGSTACK_UDP_WAIT", previous);
      }
    });

    for (const [a, b] of [["event-loop", "thread"], ["thread", "event-loop"]] as const) {
      await t.step(`${a} ↔ ${b}: 300 datagrams each way, one at a time and in bursts`, async () => {
        const x = open("::", undefined, undefined, a);
        const y = open("127.0.0.1", undefined, undefined, b);
        const atX = collect(x);
        const atY = collect(y, (r) => y.send(r.data, r.from)); // echo
        const to = { address: "127.0.0.1", port: y.addr.port };
        const sent: Uint8Array[] = [];
        for (let i = 0; i < 100; i++) {
          sent.push(numbered(200 + i, i));
          x.send(sent[i], to);
          await atX.until(sent.length); // one at a time: the loop waits in between
        }
        for (let i = 100; i < 300; i++) x.send(sent[i] = numbered(1000, i), to);
        const got = await atX.until(300);
        assert.deepEqual(got.map((r) => r.data), sent);
        assert.equal((await atY.until(300)).length, 300);
        for (const r of got) assert.deepEqual(r.from, { address: "127.0.0.1", port: y.addr.port });
        x.close();
        y.close();
        await atX.listening;
        await atY.listening;
      });
    }

    await t.step("a port in use throws; after close() the port is free again", async () => {
      const first = open("127.0.0.1");
      const port = first.addr.port;
      assert.throws(
        () => openFfiUdpSocket({ hostname: "127.0.0.1", port }),
        Deno.errors.AddrInUse,
      );
      const listening = first.listen(() => {});
      first.close();
      await listening;
      const again = openFfiUdpSocket({ hostname: "127.0.0.1", port })!;
      assert.equal(again.addr.port, port);
      assert.equal(ffiUdpWait(again), eventLoop ? "event-loop" : "thread");
      again.close();
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
  ignore: needsFfi.ignore,
  async fn(t) {
    needsFfi.assert();
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
