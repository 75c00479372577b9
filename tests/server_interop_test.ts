/**
 * `serve()` against real `wireguard-go` clients (tier 3 in DESIGN.md).
 *
 * Topology per scenario: a namespace `wgsc-<pid>-<n>` joined to the root
 * namespace by a veth pair from `createVeth` in `tests/netns.ts`. Our server runs in this test
 * process, bound to the root end of that veth only. `wireguard-go` runs in
 * the namespace with tunnel addresses 192.0.2.2/32 and fd00:99::2/128 and
 * routes 192.0.2.0/24 and fd00:99::/64 through wg0 (MTU 1420). The client
 * programs are the Linux kernel's TCP/UDP/ICMP driven by
 * `fixtures/tunnel_client.py` inside the namespace (its `ping` uses raw
 * sockets: CI images have no iputils).
 *
 * Scenarios: ping v4/v6; TCP echo 4 MB each way full duplex v4/v6; UDP echo
 * of datagrams whose inner packet is exactly the MTU v4/v6; 50 parallel
 * connections; roaming (client port change mid-stream); a second peer using
 * the first peer's inner address; an unknown key; graceful shutdown with
 * open connections; a handler that never reads.
 *
 * Skips with a printed reason when not root or tools are missing; fails
 * under `CI=true`.
 */

import assert from "node:assert/strict";
import {
  createVeth,
  forEachLine,
  missingOnPath,
  Netns,
  requireOrSkip,
  type VethLink,
  waitFor,
  wgGenKeyPair,
  WireGuardGo,
} from "./netns.ts";

import {
  serve,
  type ServeLogRecord,
  type ServeOptions,
  type ServePeer,
  type Server,
  type TcpStream,
} from "../server/serve.ts";

/** Skip locally, fail under CI=true (see tests/_skip.ts). */
const netns = await requireOrSkip(
  "server interop (serve() + wireguard-go)",
  missingOnPath("python3", "iptables"),
);

const CLIENT = new URL("./fixtures/tunnel_client.py", import.meta.url).pathname;
const SERVER_V4 = "192.0.2.1";
const SERVER_V6 = "fd00:99::1";
const CLIENT_V4 = "192.0.2.2";
const CLIENT_V6 = "fd00:99::2";
const CLIENT_PORT = 51820;
const MTU = 1420;

const encoder = new TextEncoder();

/** A client namespace with wireguard-go, and our server bound to the veth's root end. */
interface Rig extends AsyncDisposable {
  ns: Netns;
  link: VethLink;
  wg: WireGuardGo;
  server: Server;
  clientPublicKey: string;
  /** Error-level log records of the server (shown when a step fails). */
  errors: ServeLogRecord[];
}

interface RigOptions {
  /** Handlers and options for `serve()` (keys, address and peers are filled in). */
  serve?: Partial<ServeOptions>;
  /** Peers the server knows besides (or instead of) the client. */
  extraPeers?: ServePeer[];
  /** The client's own allowed IPs on the server; `null`: the server does not know the client. */
  clientAllowedIps?: string[] | null;
}

async function startRig(options: RigOptions = {}): Promise<Rig> {
  const cleanups: (() => Promise<void>)[] = [];
  const dispose = async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => {});
  };
  try {
    const ns = await Netns.create("wgsc");
    cleanups.push(() => ns.destroy());
    const link = await createVeth(null, ns);
    cleanups.push(() => link.destroy());
    const serverKeys = await wgGenKeyPair();
    const clientKeys = await wgGenKeyPair();
    const errors: ServeLogRecord[] = [];
    const peers: ServePeer[] = [...(options.extraPeers ?? [])];
    if (options.clientAllowedIps !== null) {
      peers.push({
        publicKey: clientKeys.publicKey,
        allowedIps: options.clientAllowedIps ?? [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
        name: "client",
      });
    }
    const server = await serve({
      privateKey: serverKeys.privateKey,
      hostname: link.a.v4,
      port: 0,
      peers,
      mtu: MTU,
      shutdownTimeout: 1000,
      logger: (r) => {
        if (r.level === "error" || r.level === "warn") errors.push(r);
      },
      ...options.serve,
    });
    cleanups.push(async () => {
      await server.shutdown();
    });
    assert.equal(server.publicKey, serverKeys.publicKey);
    const wg = await WireGuardGo.start(ns, "wg0");
    cleanups.push(() => wg.stop());
    await wg.configure({
      privateKey: clientKeys.privateKey,
      listenPort: CLIENT_PORT,
      peers: [{
        publicKey: serverKeys.publicKey,
        endpoint: `${link.a.v4}:${server.addr.port}`,
        allowedIps: ["192.0.2.0/24", "fd00:99::/64"],
      }],
    });
    await wg.up({
      addresses: [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
      routes: ["192.0.2.0/24", "fd00:99::/64"],
      mtu: MTU,
    });
    return {
      ns,
      link,
      wg,
      server,
      clientPublicKey: clientKeys.publicKey,
      errors,
      [Symbol.asyncDispose]: dispose,
    };
  } catch (error) {
    await dispose();
    throw error;
  }
}

/** Runs the client script in the namespace and returns its last JSON line. */
async function client(rig: Rig, args: (string | number)[]): Promise<Record<string, unknown>> {
  const r = await rig.ns.run(["python3", CLIENT, ...args.map(String)], { check: false });
  const lines = r.stdout.trim().split("\n").filter((l) => l.startsWith("{"));
  if (r.code !== 0 || lines.length === 0) {
    throw new Error(
      `tunnel_client ${args.join(" ")} exited with ${r.code}:\n${r.stderr}\n${r.stdout}\n` +
        `server errors: ${JSON.stringify(rig.errors)}`,
    );
  }
  return JSON.parse(lines[lines.length - 1]);
}

/** The client script as a child we talk to line by line (stdin lines move it on). */
class Interactive {
  #child: Deno.ChildProcess;
  #lines: string[] = [];
  #waiters: (() => void)[] = [];
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #stderr = "";
  #done: Promise<unknown>;

  constructor(ns: Netns, args: (string | number)[]) {
    this.#child = new Deno.Command("ip", {
      args: ["netns", "exec", ns.name, "python3", CLIENT, ...args.map(String)],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdin = this.#child.stdin.getWriter();
    const wake = () => {
      for (const w of this.#waiters.splice(0)) w();
    };
    const pump = forEachLine(this.#child.stdout, (line) => {
      this.#lines.push(line);
      wake();
    }).then(wake);
    const pumpErr = forEachLine(this.#child.stderr, undefined, (text) => this.#stderr += text);
    this.#done = Promise.all([pump, pumpErr, this.#child.status]);
  }

  /** The next JSON line (fails when the script exits first or after `timeoutMs`). */
  async next(timeoutMs = 60_000): Promise<Record<string, unknown>> {
    const deadline = performance.now() + timeoutMs;
    while (this.#lines.length === 0) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`No line from tunnel_client within ${timeoutMs} ms`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const exited = await Promise.race([
        this.#done.then(() => true),
        new Promise<boolean>((r) => {
          this.#waiters.push(() => r(false));
          timer = setTimeout(() => r(false), Math.min(left, 500));
        }),
      ]);
      clearTimeout(timer);
      if (exited && this.#lines.length === 0) {
        throw new Error(`tunnel_client exited without output:\n${this.#stderr}`);
      }
    }
    return JSON.parse(this.#lines.shift()!);
  }

  /** Sends one line to the script's stdin. */
  async proceed(): Promise<void> {
    await this.#stdin.write(encoder.encode("\n"));
  }

  async close(): Promise<void> {
    await this.#stdin.close().catch(() => {});
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // exited already
    }
    await this.#done;
  }
}

type EchoResult = { sent: number; received: number; match: boolean; eof: boolean; errors: [] };

function assertEcho(result: Record<string, unknown>, conns: number, size: number): void {
  const results = result.results as EchoResult[];
  assert.equal(results.length, conns);
  results.forEach((r, i) => {
    assert.deepEqual(
      { i, sent: r.sent, received: r.received, match: r.match, eof: r.eof, errors: r.errors },
      { i, sent: size, received: size, match: true, eof: true, errors: [] },
    );
  });
}

/** Echo handlers: every TCP connection and UDP flow sends back what it receives. */
function echoHandlers(opened: TcpStream[] = []): Partial<ServeOptions> {
  return {
    onTcp: (s) => {
      opened.push(s);
      return s.readable.pipeTo(s.writable);
    },
    onUdp: (f) => f.readable.pipeTo(f.writable),
  };
}

Deno.test({
  name: "serve() with a wireguard-go client: echo, ping, parallel connections, roaming",
  ignore: netns.ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    netns.assert();
    const opened: TcpStream[] = [];
    await using rig = await startRig({ serve: echoHandlers(opened) });

    await t.step("ping over IPv4 and IPv6 completes the handshake and is answered", async () => {
      // `ping -c 3` written with raw sockets (tunnel_client.py): CI images have no iputils.
      assert.deepEqual(await client(rig, ["ping", SERVER_V4, 0, 3]), {
        transmitted: 3,
        received: 3,
      });
      assert.deepEqual(await client(rig, ["ping", SERVER_V6, 0, 3]), {
        transmitted: 3,
        received: 3,
      });
      assert.ok((await rig.wg.latestHandshake()) > 0, "wireguard-go reports a handshake");
      assert.ok(rig.server.stats().netstack.icmp.echoReplies >= 6);
    });

    for (const [family, address] of [["IPv4", SERVER_V4], ["IPv6", SERVER_V6]]) {
      await t.step(`TCP echo over ${family}: 4 MB each way, full duplex, byte-exact`, async () => {
        const size = 4 * 1024 * 1024;
        assertEcho(await client(rig, ["tcp-echo", address, 7, size, 1]), 1, size);
        const s = opened[opened.length - 1];
        assert.equal(s.ipVersion, family === "IPv4" ? 4 : 6);
        assert.equal(s.destination.address, address);
        assert.equal(s.destination.port, 7);
        assert.equal(s.source.address, family === "IPv4" ? CLIENT_V4 : CLIENT_V6);
        assert.equal(s.peer.publicKey, rig.clientPublicKey);
        assert.equal(s.peer.name, "client");
        await s.closed;
      });
    }

    for (const [family, address, header] of [["IPv4", SERVER_V4, 28], ["IPv6", SERVER_V6, 48]]) {
      await t.step(`UDP echo over ${family} of datagrams filling the 1420 MTU`, async () => {
        const size = MTU - (header as number); // inner IP packet is exactly the tunnel MTU
        const count = 20;
        const r = await client(rig, ["udp-echo", address, 9, size, count]);
        assert.deepEqual({ ok: r.ok, bad: r.bad }, { ok: count, bad: [] });
      });
    }

    await t.step("50 parallel connections, 64 KB each, byte-exact", async () => {
      const before = opened.length;
      assertEcho(await client(rig, ["tcp-echo", SERVER_V4, 8, 65536, 50]), 50, 65536);
      assert.equal(opened.length - before, 50);
      await Promise.all(opened.slice(before).map((s) => s.closed));
      await waitFor(
        "open TCP count back to 0",
        () => rig.server.stats().tcpOpen === 0 || undefined,
      );
    });

    await t.step("roaming: the client's source port changes mid-stream", async () => {
      const before = opened.length;
      const proc = new Interactive(rig.ns, ["roam", SERVER_V4, 9000, 1024 * 1024]);
      try {
        const phase1 = await proc.next();
        assert.deepEqual({ match: phase1.match, errors: phase1.errors }, {
          match: true,
          errors: [],
        });
        const stream = opened[before];
        assert.ok(stream, "the server saw the connection");
        assert.equal(stream.peer.endpoint?.address, rig.link.b.v4);
        assert.equal(stream.peer.endpoint?.port, CLIENT_PORT);
        // Phase 2: the client streams both ways without pause while its port changes.
        assert.deepEqual(await proc.next(), { phase: "streaming" });
        const receivedBefore = rig.server.stats().socket.received;
        await waitFor(
          "data flowing",
          () => rig.server.stats().socket.received > receivedBefore + 100 || undefined,
        );
        const newPort = CLIENT_PORT + 77;
        await rig.wg.configure({ listenPort: newPort });
        await waitFor(
          "peer.endpoint to follow the new port",
          () => stream.peer.endpoint?.port === newPort || undefined,
        );
        // And data keeps flowing after the move.
        const receivedAfter = rig.server.stats().socket.received;
        await waitFor(
          "data flowing after the move",
          () => rig.server.stats().socket.received > receivedAfter + 100 || undefined,
        );
        await proc.proceed();
        const phase2 = await proc.next();
        assert.deepEqual(phase2.errors, []);
        assert.equal(phase2.sent, phase2.received);
        assert.ok((phase2.sent as number) > 0);
        assert.equal(phase2.match, true, "every byte came back in order");
        assert.equal(stream.peer.endpoint?.address, rig.link.b.v4);
        await stream.closed;
      } finally {
        await proc.close();
      }
      assert.deepEqual(rig.errors, []);
    });
  },
});

Deno.test({
  name: "serve(): a peer cannot use another peer's inner address",
  ignore: netns.ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    netns.assert();
    // The first peer (the rig's client, 192.0.2.2) works normally throughout.
    const opened: TcpStream[] = [];
    await using rig = await startRig({ serve: echoHandlers(opened) });
    assertEcho(await client(rig, ["tcp-echo", SERVER_V4, 7, 65536, 1]), 1, 65536);

    // A second wireguard-go in its own namespace with its own key: a known peer
    // (192.0.2.3, added at runtime) that puts the first peer's 192.0.2.2 on its wg0.
    await using ns2 = await Netns.create("wgsc");
    await using link2 = await createVeth(null, ns2);
    await ns2.run(["ip", "route", "add", `${rig.link.a.v4}/32`, "via", link2.a.v4]);
    const second = await wgGenKeyPair();
    rig.server.addPeer({ publicKey: second.publicKey, allowedIps: ["192.0.2.3/32"], name: "2nd" });
    await using wg2 = await WireGuardGo.start(ns2, "wg0");
    await wg2.configure({
      privateKey: second.privateKey,
      peers: [{
        publicKey: rig.server.publicKey,
        endpoint: `${rig.link.a.v4}:${rig.server.addr.port}`,
        allowedIps: ["192.0.2.0/24"],
      }],
    });
    await wg2.up({ addresses: [`${CLIENT_V4}/32`], routes: ["192.0.2.0/24"], mtu: MTU });
    const dropsBefore = rig.server.stats().wireguard.drops.sourceNotAllowed ?? 0;
    const openedBefore = opened.length;

    const r2 = await ns2.run(["python3", CLIENT, "connect", SERVER_V4, "7", "3"]);
    assert.deepEqual(JSON.parse(r2.stdout), { result: "timeout" }, "its TCP connect fails");
    // The handshake itself is fine (it is a real peer); its data packets are dropped.
    assert.ok((await wg2.latestHandshake()) > 0, "the second peer's handshake completed");
    const drops = rig.server.stats().wireguard.drops;
    assert.ok(
      (drops.sourceNotAllowed ?? 0) > dropsBefore,
      `its packets are dropped and counted: ${JSON.stringify(drops)}`,
    );
    assert.equal(opened.length, openedBefore, "no connection was opened for it");

    // The first peer is unaffected.
    assertEcho(await client(rig, ["tcp-echo", SERVER_V4, 7, 65536, 1]), 1, 65536);
    assert.ok(opened.every((s) => s.peer.publicKey === rig.clientPublicKey));
    await wg2.stop();
  },
});

Deno.test({
  name: "serve(): an unknown client key gets no answer at all",
  ignore: netns.ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    netns.assert();
    const known = await wgGenKeyPair();
    await using rig = await startRig({
      serve: echoHandlers(),
      extraPeers: [{ publicKey: known.publicKey, allowedIps: [`${CLIENT_V4}/32`] }],
      clientAllowedIps: null,
    });
    // Count every UDP datagram from the server's address arriving in the namespace.
    await rig.ns.run(["iptables", "-I", "INPUT", "-p", "udp", "-s", rig.link.a.v4, "-j", "ACCEPT"]);
    const r = await client(rig, ["connect", SERVER_V4, 7, 3]);
    assert.equal(r.result, "timeout");
    const stats = rig.server.stats();
    assert.ok(stats.socket.received > 0, "the initiation reached the server");
    assert.equal(stats.socket.sent, 0, "the server sent nothing");
    assert.ok((stats.wireguard.drops.unknownPeer ?? 0) > 0, JSON.stringify(stats.wireguard.drops));
    const counters = await rig.ns.run(["iptables", "-nvxL", "INPUT"]);
    const line = counters.stdout.split("\n").find((l) => l.includes(rig.link.a.v4));
    assert.ok(line, counters.stdout);
    assert.equal(Number(line.trim().split(/\s+/)[0]), 0, `nothing arrived: ${line}`);
    assert.equal(await rig.wg.latestHandshake(), 0);
  },
});

Deno.test({
  name: "serve(): graceful shutdown sends FIN on open connections, then finishes",
  ignore: netns.ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    netns.assert();
    await using rig = await startRig({ serve: { ...echoHandlers(), shutdownTimeout: 8000 } });
    const proc = new Interactive(rig.ns, ["hold", SERVER_V4, 7, 3, 20]);
    try {
      const open = await proc.next();
      assert.deepEqual(open, { phase: "open", conns: 3 });
      assert.equal(rig.server.stats().tcpOpen, 3);
      let finished = false;
      const shut = rig.server.shutdown();
      rig.server.finished.then(() => finished = true);
      const end = await proc.next();
      // The client saw each connection end with a FIN before the server finished.
      assert.deepEqual(end, { phase: "end", ends: ["eof", "eof", "eof"] });
      await shut;
      await rig.server.finished;
      assert.ok(finished);
      assert.equal(rig.server.stats().tcpOpen, 0);
    } finally {
      await proc.close();
    }
  },
});

Deno.test({
  name: "serve(): a handler that never reads stalls the client instead of buffering",
  ignore: netns.ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    netns.assert();
    const held: TcpStream[] = [];
    await using rig = await startRig({
      // Keeps the streams (so nothing is garbage) and never reads them.
      serve: { onTcp: (s) => void held.push(s), shutdownTimeout: 200 },
    });
    const total = 50 * 1024 * 1024;
    // Stated bound: what the server acknowledges (and so holds) for a reader
    // that never reads is at most 128 KiB, twice the netstack's initial
    // receive buffer (64 KiB): the window must not grow for a consumer that
    // does not drain (measured here: ~65 KiB).
    const bound = 128 * 1024;
    const heapBefore = Deno.memoryUsage().heapUsed;
    const proc = new Interactive(rig.ns, ["flood", SERVER_V4, 7, total, 3]);
    try {
      const r = await proc.next(120_000) as {
        sent: number;
        acked: number;
        unacked: number;
        stalled: boolean;
      };
      const heapAfter = Deno.memoryUsage().heapUsed;
      console.log(
        `never-reading handler: client wrote ${r.sent} B, server acknowledged ${r.acked} B ` +
          `(bound ${bound}), heap +${((heapAfter - heapBefore) / 1048576).toFixed(1)} MiB`,
      );
      assert.equal(r.stalled, true, "the client's send stalled");
      assert.ok(r.sent < total);
      assert.ok(r.acked <= bound, `server acknowledged ${r.acked} B > ${bound}`);
      assert.equal(held.length, 1);
      // A loose bound on what the process holds: well under the 50 MB offered.
      assert.ok(heapAfter - heapBefore < 40 * 1024 * 1024, "heap stays bounded");
      assert.equal(rig.server.stats().wireguard.queuedPackets, 0);
      await proc.proceed();
    } finally {
      await proc.close();
    }
  },
});
