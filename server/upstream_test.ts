import assert from "node:assert/strict";
import {
  associateUdp,
  dialThrough,
  openDirectUdp,
  parseUpstream,
  ProxyError,
  socksUdpPayload,
} from "./upstream.ts";

const text = new TextEncoder();

/** A one-connection scripted proxy on loopback: `script` talks to the dialer. */
function scripted(script: (conn: Deno.TcpConn) => Promise<void>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    try {
      await script(conn);
    } catch {
      // the dialer hung up
    } finally {
      try {
        conn.close();
      } catch {
        // closed by the script
      }
      listener.close();
    }
  })();
  return { port: listener.addr.port, done };
}

async function readN(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  for (let got = 0; got < n;) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error("eof");
    got += r;
  }
  return out;
}

/** Reads a SOCKS5 CONNECT request after the no-auth greeting; returns its address field. */
async function socksRequest(conn: Deno.Conn): Promise<Uint8Array> {
  const [, n] = await readN(conn, 2);
  await readN(conn, n);
  await conn.write(Uint8Array.of(5, 0));
  const head = await readN(conn, 4);
  const len = head[3] === 1 ? 4 : head[3] === 4 ? 16 : (await readN(conn, 1))[0];
  const addr = await readN(conn, len + 2);
  return head[3] === 3 ? Uint8Array.of(len, ...addr) : addr;
}

Deno.test("parseUpstream", async (t) => {
  await t.step("schemes, credentials, default ports, labels without passwords", () => {
    const s = parseUpstream("socks5://u%40x:p%3Aw@192.0.2.1:1081");
    assert.deepEqual(
      { ...s },
      {
        kind: "socks5",
        hostname: "192.0.2.1",
        port: 1081,
        username: "u@x",
        password: "p:w",
        label: "socks5://u%40x@192.0.2.1:1081",
      },
    );
    assert.equal(parseUpstream("socks5h://[2001:db8::1]").hostname, "2001:db8::1");
    assert.equal(parseUpstream("socks5h://[2001:db8::1]").port, 1080);
    assert.equal(parseUpstream("http://proxy.test").port, 8080);
  });
  await t.step("errors name the problem and never echo a password", () => {
    assert.throws(() => parseUpstream("ftp://x:1"), /socks5, socks5h or http/);
    assert.throws(() => parseUpstream("http://x:1/path"), /only/);
    assert.throws(
      () => parseUpstream("not a url:secret@"),
      (e: Error) => !/secret/.test(e.message),
    );
    // Found by the fuzzer (tests/fuzz/sniff.ts): was a URIError from decodeURIComponent.
    assert.throws(
      () => parseUpstream("socks5h://me:sec%ret@192.0.2.9:1080"),
      (e: Error) => e instanceof TypeError && /%-escape/.test(e.message) && !/sec/.test(e.message),
    );
    assert.throws(() => parseUpstream("socks5h://m%:secret@192.0.2.9"), TypeError);
  });
});

Deno.test("dialThrough: a proxy's answers map to RST or ICMP", async (t) => {
  const target = { address: "192.0.2.80", port: 80 };
  const cases: [string, number, "rst" | "icmp"][] = [
    ["general failure", 1, "rst"],
    ["ruleset", 2, "rst"],
    ["network unreachable", 3, "icmp"],
    ["host unreachable", 4, "icmp"],
    ["connection refused", 5, "rst"],
  ];
  for (const [what, rep, answer] of cases) {
    await t.step(`SOCKS5 reply ${rep} (${what}) → ${answer}`, async () => {
      const p = scripted(async (c) => {
        await socksRequest(c);
        await c.write(Uint8Array.of(5, rep, 0, 1, 0, 0, 0, 0, 0, 0));
      });
      const e = await dialThrough(parseUpstream(`socks5://127.0.0.1:${p.port}`), target).then(
        () => undefined,
        (e) => e,
      );
      assert.ok(e instanceof ProxyError, String(e));
      assert.equal(e.answer, answer);
      await p.done;
    });
  }
  await t.step("socks5h sends the hostname (ATYP 3), socks5 the address", async () => {
    for (const [scheme, want] of [["socks5h", "\x08web.test"], ["socks5", "\xc0\x00\x02\x50"]]) {
      let seen = "";
      const p = scripted(async (c) => {
        const addr = await socksRequest(c);
        seen = String.fromCharCode(...addr.subarray(0, addr.length - 2));
        await c.write(Uint8Array.of(5, 0, 0, 1, 0, 0, 0, 0, 0, 0));
        await c.write(text.encode("hello"));
      });
      const conn = await dialThrough(parseUpstream(`${scheme}://127.0.0.1:${p.port}`), {
        ...target,
        hostname: "web.test",
      });
      assert.deepEqual(await readN(conn as Deno.Conn, 5), text.encode("hello"));
      conn.close();
      await p.done;
      assert.equal(seen, want);
    }
  });
  await t.step("IPv6: ATYP 4 both ways over SOCKS5, a bracketed authority over HTTP", async () => {
    const v6 = { address: "2001:db8::1", port: 443 };
    let seen: number[] = [];
    const p = scripted(async (c) => {
      seen = [...await socksRequest(c)];
      // BND.ADDR an IPv6 address: 4 + 16 + 2 bytes, then the destination's first byte.
      await c.write(Uint8Array.of(5, 0, 0, 4, ...new Uint8Array(16), 0, 0, 0x2a));
    });
    const conn = await dialThrough(parseUpstream(`socks5://127.0.0.1:${p.port}`), v6);
    assert.deepEqual(await readN(conn as Deno.Conn, 1), Uint8Array.of(0x2a));
    conn.close();
    await p.done;
    assert.deepEqual(seen, [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1, 1, 0xbb]);
    let request = "";
    const h = scripted(async (c) => {
      const buf = new Uint8Array(4096);
      request = new TextDecoder().decode(buf.subarray(0, (await c.read(buf))!));
      await c.write(text.encode("HTTP/1.0 200 OK\r\n\r\n"));
    });
    (await dialThrough(parseUpstream(`http://127.0.0.1:${h.port}`), v6)).close();
    await h.done;
    assert.match(
      request,
      /^CONNECT \[2001:db8::1\]:443 HTTP\/1\.1\r\nHost: \[2001:db8::1\]:443\r\n/,
    );
  });
  await t.step("wrong username/password → RST", async () => {
    const p = scripted(async (c) => {
      assert.deepEqual(await readN(c, 4), Uint8Array.of(5, 2, 0, 2));
      await c.write(Uint8Array.of(5, 2));
      const [, ul] = await readN(c, 2);
      const [pl] = await readN(c, ul + 1).then((b) => b.subarray(ul));
      await readN(c, pl);
      await c.write(Uint8Array.of(1, 1));
    });
    const e = await dialThrough(parseUpstream(`socks5://u:bad@127.0.0.1:${p.port}`), target)
      .catch((e) => e);
    assert.equal((e as ProxyError).answer, "rst");
    assert.match((e as Error).message, /username\/password/);
    await p.done;
  });
  await t.step("HTTP: 407 → RST, 504 → ICMP, bytes after a 200 are the destination's", async () => {
    for (
      const [status, answer] of [["407 Proxy Authentication Required", "rst"], [
        "504 Gateway Timeout",
        "icmp",
      ]]
    ) {
      const p = scripted(async (c) => {
        await c.read(new Uint8Array(4096));
        await c.write(text.encode(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\n\r\n`));
      });
      const e = await dialThrough(parseUpstream(`http://127.0.0.1:${p.port}`), target).catch((e) =>
        e
      );
      assert.equal((e as ProxyError).answer, answer);
      await p.done;
    }
    let request = "";
    const p = scripted(async (c) => {
      const buf = new Uint8Array(4096);
      request = new TextDecoder().decode(buf.subarray(0, (await c.read(buf))!));
      await c.write(text.encode("HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-banner\r\n"));
    });
    const conn = await dialThrough(parseUpstream(`http://me:pw@127.0.0.1:${p.port}`), target);
    assert.deepEqual(await readN(conn as Deno.Conn, 16), text.encode("SSH-2.0-banner\r\n"));
    conn.close();
    await p.done;
    assert.match(request, /^CONNECT 192\.0\.2\.80:80 HTTP\/1\.1\r\n/);
    assert.match(request, new RegExp(`Proxy-Authorization: Basic ${btoa("me:pw")}\r\n`));
  });
  await t.step("proxy down → ICMP; proxy hangs up mid-handshake → RST", async () => {
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = closed.addr.port;
    closed.close();
    const down = await dialThrough(parseUpstream(`socks5://127.0.0.1:${port}`), target).catch((e) =>
      e
    );
    assert.equal((down as ProxyError).answer, "icmp");
    const p = scripted(async (c) => void await readN(c, 3));
    const cut = await dialThrough(parseUpstream(`socks5://127.0.0.1:${p.port}`), target).catch((
      e,
    ) => e);
    assert.equal((cut as ProxyError).answer, "rst");
    await p.done;
  });
  await t.step("an abort ends a handshake the proxy never answers", async () => {
    const p = scripted(async (c) =>
      void await c.read(new Uint8Array(16)).then(() => new Promise((r) => setTimeout(r, 300)))
    );
    const abort = new AbortController();
    const dial = dialThrough(parseUpstream(`socks5://127.0.0.1:${p.port}`), target, {
      signal: abort.signal,
    });
    setTimeout(() => abort.abort(new Error("timed out")), 20);
    await assert.rejects(dial, /timed out/);
    await p.done;
  });
});

Deno.test("socksUdpPayload strips the RFC 1928 §7 header, drops fragments and garbage", () => {
  assert.deepEqual(
    socksUdpPayload(Uint8Array.of(0, 0, 0, 1, 1, 2, 3, 4, 0, 7, 9, 9)),
    Uint8Array.of(9, 9),
  );
  assert.deepEqual(socksUdpPayload(Uint8Array.of(0, 0, 0, 3, 1, 97, 0, 7, 5)), Uint8Array.of(5));
  assert.equal(socksUdpPayload(Uint8Array.of(0, 0, 1, 1, 1, 2, 3, 4, 0, 7, 9)), null, "fragment");
  assert.equal(socksUdpPayload(Uint8Array.of(0, 0, 0, 4, 1, 2)), null, "short");
  assert.equal(socksUdpPayload(Uint8Array.of(0, 0, 0, 9)), null, "bad ATYP");
});

Deno.test("associateUdp: a proxy that never answers the UDP ASSOCIATE is given up on abort", async () => {
  const p = scripted(async (c) => {
    await c.read(new Uint8Array(16));
    await new Promise((r) => setTimeout(r, 300));
  });
  const abort = new AbortController();
  const associating = associateUdp(parseUpstream(`socks5://127.0.0.1:${p.port}`), {
    address: "192.0.2.53",
    port: 53,
  }, { signal: abort.signal });
  setTimeout(() => abort.abort(new Error("timed out")), 20);
  await assert.rejects(associating, /timed out/);
  await p.done;
});

Deno.test("openDirectUdp: each datagram is a copy of its own (the socket's buffer is reused)", async () => {
  const peer = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (peer.addr as Deno.NetAddr).port;
  const up = openDirectUdp({ hostname: "127.0.0.1", port });
  try {
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: up.localPort };
    await peer.send(new TextEncoder().encode("first datagram"), to);
    const first = await up.receive();
    await peer.send(new TextEncoder().encode("2nd"), to);
    const second = await up.receive();
    assert.equal(new TextDecoder().decode(first), "first datagram");
    assert.equal(new TextDecoder().decode(second), "2nd");
    assert.equal(first.buffer.byteLength, first.length, "no 64 KiB buffer behind a datagram");
  } finally {
    up.close();
    peer.close();
  }
  await assert.rejects(up.receive(), Deno.errors.BadResource);
});
