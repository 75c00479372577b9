import assert from "node:assert/strict";
import { dialTcpFfi, dialTcpNow, FfiTcpConn, learnTcpConn, spareSocketCount } from "./_dial_ffi.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Open sockets of this process (only sockets: the runtime opens and closes
 * cache files of its own at any time, which made a count of every
 * descriptor flaky under `deno test --parallel`).
 */
function socketFds(): number {
  let n = 0;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${entry.name}`).startsWith("socket:")) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

/** Reads until EOF. */
async function readAll(conn: Deno.TcpConn): Promise<string> {
  const buffer = new Uint8Array(1024);
  let text = "";
  for (let n; (n = await conn.read(buffer)) !== null;) {
    text += decoder.decode(buffer.subarray(0, n));
  }
  return text;
}

Deno.test("dialTcpFfi", async (t) => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const served = (async () => {
    for await (const conn of listener) {
      const got = await readAll(conn);
      await conn.write(encoder.encode(`echo:${got}`));
      conn.close();
    }
  })();
  const signal = new AbortController().signal;

  await t.step("null until a Deno.connect connection taught it Deno's TcpConn", async () => {
    assert.equal(dialTcpFfi("127.0.0.1", port, signal), null);
    const first = await Deno.connect({ hostname: "127.0.0.1", port });
    learnTcpConn(first);
    await first.closeWrite();
    assert.equal(await readAll(first), "echo:");
    first.close();
  });

  await t.step("host names are left to Deno.connect", () => {
    assert.equal(dialTcpFfi("localhost", port, signal), null);
  });

  await t.step("a dialled connection is an ordinary Deno.TcpConn", async () => {
    const dialling = dialTcpFfi("127.0.0.1", port, signal);
    if (dialling === null) {
      // No FFI here (another OS, or no --allow-ffi): nothing more to test.
      console.log("dialTcpFfi unavailable here (needs Linux and --allow-ffi --allow-net)");
      if (Deno.build.os === "linux" && Deno.env.get("CI") === "true") {
        assert.fail("dialTcpFfi must work on Linux in CI");
      }
      return;
    }
    // Twice: the first hands its socket to Deno through node:net, later ones directly.
    for (const text of ["one", "two"]) {
      const conn: Deno.TcpConn = text === "one"
        ? await dialling
        : await dialTcpFfi("127.0.0.1", port, signal)!;
      assert.equal(conn.remoteAddr.hostname, "127.0.0.1");
      assert.equal(conn.remoteAddr.port, port);
      assert.equal(conn.localAddr.hostname, "127.0.0.1");
      assert.ok(conn.localAddr.port > 0);
      await conn.write(encoder.encode(text));
      await conn.closeWrite();
      assert.equal(await readAll(conn), `echo:${text}`);
      conn.close();
    }
  });

  await t.step(
    "dialTcpNow: connected within the call, a Deno connection on first use",
    async () => {
      const dial = dialTcpNow("127.0.0.1", port);
      if (dial === null) return; // no FFI here (see above)
      assert.ok(dial instanceof FfiTcpConn, String(dial));
      assert.equal(dial.connected, true, "loopback connects within the call");
      const before = socketFds();
      // Closed before any use: the descriptor goes at once, without Deno.
      dial.close();
      dial.close();
      assert.equal(socketFds(), before - 1);
      await assert.rejects(dial.read(new Uint8Array(1)), Deno.errors.BadResource);
      const used = dialTcpNow("127.0.0.1", port) as FfiTcpConn;
      assert.equal(await used.write(encoder.encode("lazy")), 4);
      await used.closeWrite();
      assert.equal(await readAll(used.conn), "echo:lazy");
      used.close();
      used.close();
    },
  );

  await t.step("sockets for the next dials are made after a dial's turn, and used", async () => {
    const first = dialTcpNow("127.0.0.1", port);
    if (first === null) return; // no FFI here (see above)
    // (The echo server serves one connection at a time: let this one end.)
    await (first as FfiTcpConn).closeWrite();
    assert.equal(await readAll((first as FfiTcpConn).conn), "echo:");
    (first as FfiTcpConn).close();
    await Promise.resolve(); // the refill ran after the dial's synchronous turn
    const spares = spareSocketCount();
    assert.ok(spares > 0, "no spare sockets after a dial");
    const before = socketFds();
    const next = dialTcpNow("127.0.0.1", port) as FfiTcpConn;
    assert.equal(spareSocketCount(), spares - 1, "the dial took a spare socket");
    assert.equal(socketFds(), before, "and made no socket of its own");
    assert.equal(await next.write(encoder.encode("spare")), 5);
    await next.closeWrite();
    assert.equal(await readAll(next.conn), "echo:spare");
    await Promise.resolve();
    assert.equal(spareSocketCount(), spares, "refilled");
    next.close();
  });

  await t.step("a refused port rejects with ConnectionRefused", async () => {
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const closedPort = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const dialling = dialTcpFfi("127.0.0.1", closedPort, signal);
    if (dialling === null) return;
    await assert.rejects(dialling, Deno.errors.ConnectionRefused);
  });

  await t.step("an aborted signal rejects with its reason", async () => {
    const ac = new AbortController();
    ac.abort(new Deno.errors.TimedOut("late"));
    const dialling = dialTcpFfi("127.0.0.1", port, ac.signal);
    if (dialling === null) return;
    await assert.rejects(dialling, Deno.errors.TimedOut);
  });

  await t.step("a pending dial ends on abort (its socket closed) or when it connects", async () => {
    // A listener that never accepts, with backlog 0: the first connection
    // fills its queue, later SYNs are dropped (loopback only).
    const libc = Deno.dlopen("libc.so.6", {
      socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
      bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
      listen: { parameters: ["i32", "i32"], result: "i32" },
      accept: { parameters: ["i32", "pointer", "pointer"], result: "i32" },
      getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
      close: { parameters: ["i32"], result: "i32" },
    });
    const fd = libc.symbols.socket(2, 1, 0);
    const sa = new Uint8Array(16);
    sa.set([2, 0, 0, 0, 127, 0, 0, 1]);
    assert.equal(libc.symbols.bind(fd, sa, 16), 0);
    assert.equal(libc.symbols.listen(fd, 0), 0);
    libc.symbols.getsockname(fd, sa, new Uint8Array(new Uint32Array([16]).buffer));
    const fullPort = (sa[2] << 8) | sa[3];
    try {
      const firstDial = dialTcpFfi("127.0.0.1", fullPort, signal);
      if (firstDial === null) return;
      const first = await firstDial;
      const before = socketFds();
      const ac = new AbortController();
      const pending = dialTcpFfi("127.0.0.1", fullPort, ac.signal)!;
      let settled = false;
      pending.finally(() => settled = true).catch(() => {});
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(settled, false, "the dial must still wait (SYN dropped)");
      ac.abort(new DOMException("evicted", "AbortError"));
      await assert.rejects(pending, (e) => e instanceof DOMException && e.name === "AbortError");
      assert.equal(socketFds(), before);

      // Room in the queue again: the next SYN retransmission (~1 s) connects a waiting dial.
      const waiting = dialTcpFfi("127.0.0.1", fullPort, signal)!;
      const accepted = libc.symbols.accept(fd, null, null);
      assert.ok(accepted >= 0);
      const conn = await waiting;
      assert.equal(conn.remoteAddr.port, fullPort);
      conn.close();
      libc.symbols.close(accepted);
      first.close();
    } finally {
      libc.symbols.close(fd);
      libc.close();
    }
  });

  listener.close();
  await served.catch(() => {});
});
