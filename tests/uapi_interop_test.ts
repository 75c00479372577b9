/**
 * The real `wg` (wireguard-tools) against `serve()`'s UAPI socket, with real
 * `wireguard-go` clients (tier 3 in DESIGN.md).
 *
 * Our server runs in this test process, bound to the root end of a veth into
 * namespace 1, with its UAPI socket in a private directory. `wg` runs in a
 * mount namespace of its own where that directory is `/var/run/wireguard`,
 * so it sees our interface (`ua0`) and nobody else's, and nobody sees ours.
 * Client 1 (wireguard-go in namespace 1) is configured at start; client 2
 * (wireguard-go in namespace 2, whose veth reaches the server through the
 * root namespace) is added live with `wg set`.
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
  run,
  type RunResult,
  waitFor,
  wgGenKeyPair,
  WireGuardGo,
} from "./netns.ts";
import { serve, type Server } from "../server/serve.ts";
import { TUNNEL_CLIENT, tunnelClient } from "./_tunnel_client.ts";

/** Skip locally, fail under CI=true (see tests/_skip.ts). */
const netns = await requireOrSkip(
  "UAPI interop (wg + wireguard-go against serve())",
  missingOnPath("python3", "wg-quick", "unshare"),
);

const IFACE = "ua0";
const SERVER_V4 = "192.0.2.1";
const MTU = 1420;

/** `wg ARGS…` seeing only `dir` as /var/run/wireguard (a private mount namespace). */
function wg(dir: string, args: string[], check = true): Promise<RunResult> {
  const script = "mount -t tmpfs uawg /run && mkdir /run/wireguard && " +
    'mount --bind "$0" /run/wireguard && exec wg "$@"';
  return run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, dir, ...args], {
    check,
  });
}

/** A client script whose JSON lines arrive as they are printed. */
function spawnClient(ns: Netns, args: (string | number)[]) {
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns.name, "python3", TUNNEL_CLIENT, ...args.map(String)],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines: Record<string, unknown>[] = [];
  const done = forEachLine(child.stdout, (l) => {
    if (l.startsWith("{")) lines.push(JSON.parse(l));
  });
  return {
    next: (n: number) => waitFor(`client line ${n}`, () => lines[n], { timeoutMs: 60_000 }),
    async close() {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await done;
      await child.status;
    },
  };
}

/** A secret in a 0600 file (for `wg set … preshared-key FILE`). */
async function secretFile(dir: string, name: string, text: string): Promise<string> {
  const path = `${dir}/${name}`;
  await Deno.writeTextFile(path, text + "\n", { mode: 0o600 });
  return path;
}

/** A namespace joined to the root namespace by a veth (both removed with `stack`). */
async function namespace(stack: AsyncDisposableStack) {
  const ns = await Netns.create("ua");
  stack.defer(() => ns.destroy());
  const link = await createVeth(null, ns, { prefix: "ua" });
  stack.defer(() => link.destroy());
  return { ns, link };
}

/** A wireguard-go client in `ns` whose one peer is our server, routing `subnet` to it. */
async function wireguardGo(stack: AsyncDisposableStack, ns: Netns, o: {
  privateKey: string;
  server: string;
  endpoint: string;
  address: string;
  subnet: string;
}): Promise<WireGuardGo> {
  const go = await WireGuardGo.start(ns, "wg0");
  stack.defer(() => go.stop());
  await go.configure({
    privateKey: o.privateKey,
    peers: [{ publicKey: o.server, endpoint: o.endpoint, allowedIps: [o.subnet] }],
  });
  await go.up({ addresses: [`${o.address}/32`], routes: [o.subnet], mtu: MTU });
  return go;
}

/** A temporary directory with a private socket directory in it, and a first namespace. */
async function setUp(stack: AsyncDisposableStack) {
  netns.assert();
  const dir = await Deno.makeTempDir({ prefix: "ua-uapi-" });
  stack.defer(() => Deno.remove(dir, { recursive: true }));
  const sockets = `${dir}/run`;
  await Deno.mkdir(sockets, { mode: 0o755 });
  return { dir, sockets, ...await namespace(stack) };
}

Deno.test({
  name: "UAPI: wg show, set, syncconf, setconf, addconf against serve() with wireguard-go clients",
  ignore: netns.ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using stack = new AsyncDisposableStack();
    const { dir, sockets, ns: ns1, link: link1 } = await setUp(stack);
    const { ns: ns2, link: link2 } = await namespace(stack);
    // Namespace 2 reaches the server's address through the root namespace.
    await ns2.run(["ip", "route", "add", `${link1.a.v4}/32`, "via", link2.a.v4]);

    const [serverKeys, c1, c2, c3] = await Promise.all([
      wgGenKeyPair(),
      wgGenKeyPair(),
      wgGenKeyPair(),
      wgGenKeyPair(),
    ]);
    const server: Server = await serve({
      privateKey: serverKeys.privateKey,
      hostname: link1.a.v4,
      port: 0,
      mtu: MTU,
      peers: [{ publicKey: c1.publicKey, allowedIps: ["192.0.2.2/32", "fd00:99::2/128"] }],
      uapi: { name: IFACE, directory: sockets, idleTimeoutMs: 500 },
      onTcp: (s) => s.readable.pipeTo(s.writable),
      onUdp: async (flow) => {
        const writer = flow.writable.getWriter();
        for await (const d of flow.readable) await writer.write(d);
      },
      shutdownTimeout: 1000,
    });
    stack.defer(() => server.shutdown());
    const port = server.addr.port;

    const startClient = (ns: Netns, keys: { privateKey: string }, address: string) =>
      wireguardGo(stack, ns, {
        privateKey: keys.privateKey,
        server: serverKeys.publicKey,
        endpoint: `${link1.a.v4}:${port}`,
        address,
        subnet: "192.0.2.0/24",
      });
    const go1 = await startClient(ns1, c1, "192.0.2.2");

    await t.step(
      "wg show and wg show dump: the handshake and counters of what happened",
      async () => {
        const echo = await tunnelClient(ns1, ["udp-echo", SERVER_V4, 9, 1000, 5]);
        assert.equal(echo.ok, 5);
        const before = server.peer(c1.publicKey)!;
        const dump = (await wg(sockets, ["show", IFACE, "dump"])).stdout.trim().split("\n");
        const after = server.peer(c1.publicKey)!;
        assert.equal(dump.length, 2, dump.join("\n"));
        assert.deepEqual(dump[0].split("\t"), [
          serverKeys.privateKey,
          serverKeys.publicKey,
          String(port),
          "off",
        ]);
        const [pub, psk, endpoint, allowed, handshake, rx, tx, keepalive] = dump[1].split("\t");
        assert.equal(pub, c1.publicKey);
        assert.equal(psk, "(none)");
        assert.equal(endpoint, `${link1.b.v4}:${await go1Port()}`);
        assert.equal(allowed, "192.0.2.2/32,fd00:99::2/128");
        assert.equal(Number(handshake), Math.floor(before.lastHandshake / 1000));
        assert.ok(Number(handshake) > 1_700_000_000);
        // Five 1000-byte datagrams each way, in WireGuard transport datagrams.
        assert.ok(Number(rx) >= before.rxBytes && Number(rx) <= after.rxBytes && Number(rx) > 5000);
        assert.ok(Number(tx) >= before.txBytes && Number(tx) <= after.txBytes && Number(tx) > 5000);
        assert.equal(keepalive, "off");

        const shown = (await wg(sockets, ["show"])).stdout;
        assert.match(shown, new RegExp(`^interface: ${IFACE}$`, "m"));
        assert.match(shown, new RegExp(`^peer: ${c1.publicKey.replace(/[+/]/g, "\\$&")}$`, "m"));
        assert.match(shown, /latest handshake: /);
        assert.match(shown, /transfer: .* received, .* sent/);
        assert.equal((await wg(sockets, ["show", "interfaces"])).stdout.trim(), IFACE);
        const all = (await wg(sockets, ["show", "all", "dump"])).stdout.trim().split("\n");
        assert.ok(all.every((line) => line.startsWith(`${IFACE}\t`)), all.join("\n"));
        assert.equal(all.length, 2);
      },
    );

    async function go1Port(): Promise<number> {
      return Number((await go1.wg(["show", "wg0", "listen-port"])).trim());
    }

    let go2: WireGuardGo | undefined;
    const c1Handshakes = () => server.peer(c1.publicKey)!.handshakes;
    const c1Before = c1Handshakes();

    await t.step(
      "wg set adds a peer (with a PSK) that a second wireguard-go client then uses",
      async () => {
        const psk = (await run(["wg", "genpsk"])).stdout.trim();
        await wg(sockets, [
          "set",
          IFACE,
          "peer",
          c2.publicKey,
          "preshared-key",
          await secretFile(dir, "psk", psk),
          "allowed-ips",
          "192.0.2.3/32,fd00:99::3/128",
        ]);
        const added = server.peer(c2.publicKey)!;
        assert.deepEqual(added.allowedIps, ["192.0.2.3/32", "fd00:99::3/128"]);
        assert.equal(added.presharedKey, psk);
        go2 = await startClient(ns2, c2, "192.0.2.3");
        await go2.configure({ peers: [{ publicKey: serverKeys.publicKey, presharedKey: psk }] });
        const r = await tunnelClient(ns2, ["tcp-echo", SERVER_V4, 7, 200_000, 2]);
        const results = r.results as { received: number; match: boolean }[];
        assert.deepEqual(results.map((x) => [x.received, x.match]), [[200_000, true], [
          200_000,
          true,
        ]]);
        assert.ok(server.peer(c2.publicKey)!.handshakes >= 1);
        const dump = (await wg(sockets, ["show", IFACE, "dump"])).stdout;
        assert.match(
          dump,
          new RegExp(
            `^${c2.publicKey.replace(/[+/]/g, "\\$&")}\t${psk.replace(/[+/]/g, "\\$&")}\t`,
            "m",
          ),
        );
        // Client 1 did not notice: no new handshake.
        assert.equal(c1Handshakes(), c1Before);
      },
    );

    await t.step("wg set … remove ends the peer's connections and its tunnel", async () => {
      const hold = spawnClient(ns2, ["hold", SERVER_V4, 7, 2, 30]);
      try {
        assert.equal((await hold.next(0)).phase, "open");
        await waitFor(
          "two open connections",
          () => server.peer(c2.publicKey)!.tcpOpen === 2 || undefined,
        );
        await wg(sockets, ["set", IFACE, "peer", c2.publicKey, "remove"]);
        const end = await hold.next(1);
        assert.deepEqual(end.ends, ["reset", "reset"]);
      } finally {
        await hold.close();
      }
      assert.equal(server.peer(c2.publicKey), undefined);
      assert.equal(server.stats().tcpOpen, 0);
      const r = await tunnelClient(ns2, ["connect", SERVER_V4, 7, 3]);
      assert.equal(r.result, "timeout");
      assert.equal(c1Handshakes(), c1Before);
    });

    await t.step(
      "wg syncconf from an edited file: changes apply, client 1 keeps its session",
      async () => {
        const conf = `${dir}/${IFACE}.conf`;
        await Deno.writeTextFile(
          conf,
          [
            "[Interface]",
            `PrivateKey = ${serverKeys.privateKey}`,
            `ListenPort = ${port}`,
            "Address = 192.0.2.1/24",
            "",
            "[Peer]",
            `PublicKey = ${c1.publicKey}`,
            "AllowedIPs = 192.0.2.2/32, fd00:99::2/128, 192.0.2.20/32",
            "",
            "[Peer]",
            `PublicKey = ${c3.publicKey}`,
            "AllowedIPs = 192.0.2.4/32",
            "PersistentKeepalive = 25",
            "",
          ].join("\n"),
          { mode: 0o600 },
        );
        const stripped = (await run(["wg-quick", "strip", conf])).stdout;
        assert.ok(!stripped.includes("Address"));
        const strippedPath = await secretFile(dir, "stripped.conf", stripped);
        await wg(sockets, ["syncconf", IFACE, strippedPath]);
        assert.deepEqual(
          server.peers().map((p) => [p.publicKey, p.allowedIps, p.persistentKeepalive]).sort(),
          [
            [c1.publicKey, ["192.0.2.2/32", "192.0.2.20/32", "fd00:99::2/128"], 0],
            [c3.publicKey, ["192.0.2.4/32"], 25],
          ].sort(),
        );
        const echo = await tunnelClient(ns1, ["udp-echo", SERVER_V4, 9, 500, 3]);
        assert.equal(echo.ok, 3);
        assert.equal(c1Handshakes(), c1Before, "client 1's session survived the syncconf");
        // Nothing to change: the same file again changes nothing.
        await wg(sockets, ["syncconf", IFACE, strippedPath]);
        assert.equal(server.peers().length, 2);
      },
    );

    await t.step(
      "bad requests get an errno or a closed connection; client 1 is still served",
      async () => {
        const path = `${sockets}/${IFACE}.sock`;
        const ask = async (text: string): Promise<string> => {
          const conn = await Deno.connect({ transport: "unix", path });
          try {
            await conn.write(new TextEncoder().encode(text));
            let reply = "";
            const buf = new Uint8Array(4096);
            while (!reply.endsWith("\n\n")) {
              const n = await conn.read(buf).catch(() => null);
              if (n === null) break;
              reply += new TextDecoder().decode(buf.subarray(0, n));
            }
            return reply;
          } finally {
            conn.close();
          }
        };
        const hex = "ab".repeat(32);
        assert.equal(await ask("set=1\nunknown_key=1\n\n"), "errno=-22\n\n");
        assert.equal(await ask(`set=1\npublic_key=${hex}\nlisten_port=1\n\n`), "errno=-22\n\n");
        // As in wireguard-go, the lines before the bad one stay applied: the peer exists.
        assert.equal(server.peers().length, 3);
        assert.equal(await ask(`set=1\npublic_key=${hex}\nremove=true\n\n`), "errno=0\n\n");
        assert.equal(await ask(`set=1\npublic_key=${"zz".repeat(32)}\n\n`), "errno=-22\n\n");
        assert.equal(await ask("set=1\nfwmark=" + "9".repeat(10_000)), "errno=-90\n\n");
        assert.equal(await ask("hello\n"), "");
        assert.equal(await ask("set=1\nfwmark=1\n"), "", "a never-ending request is cut off");
        assert.equal(await ask(""), "", "a silent client is cut off");
        // `wg` still works, and so does the tunnel.
        assert.equal(
          (await wg(sockets, ["show", IFACE, "peers"])).stdout.trim().split("\n").length,
          2,
        );
        const echo = await tunnelClient(ns1, ["udp-echo", SERVER_V4, 9, 500, 2]);
        assert.equal(echo.ok, 2);
      },
    );

    await t.step("wg setconf replaces all peers, wg addconf adds", async () => {
      const only3 = await secretFile(
        dir,
        "only3.conf",
        [
          "[Interface]",
          `PrivateKey = ${serverKeys.privateKey}`,
          `ListenPort = ${port}`,
          "",
          "[Peer]",
          `PublicKey = ${c3.publicKey}`,
          "AllowedIPs = 192.0.2.4/32",
          "",
        ].join("\n"),
      );
      // wg setconf always sends private_key: all zeros (clear it) for a file
      // without one; with no [Peer] it also removes every peer.
      const keyless = await secretFile(
        dir,
        "keyless.conf",
        `[Interface]\nListenPort = ${port}\n`,
      );
      await wg(sockets, ["setconf", IFACE, keyless]);
      assert.equal((await wg(sockets, ["show", IFACE, "private-key"])).stdout.trim(), "(none)");
      assert.equal(server.peers().length, 0);
      assert.equal(server.addr.port, port);
      await wg(sockets, ["setconf", IFACE, only3]);
      assert.deepEqual(server.peers().map((p) => p.publicKey), [c3.publicKey]);
      const add2 = await secretFile(
        dir,
        "add2.conf",
        [
          "[Interface]",
          "",
          "[Peer]",
          `PublicKey = ${c2.publicKey}`,
          "AllowedIPs = 192.0.2.3/32",
          "",
        ].join("\n"),
      );
      await wg(sockets, ["addconf", IFACE, add2]);
      assert.deepEqual(
        server.peers().map((p) => p.publicKey).sort(),
        [c2.publicKey, c3.publicKey].sort(),
      );
    });

    await t.step(
      "wg set private-key: a new server key, which client 2 then handshakes with",
      async () => {
        const other = await wgGenKeyPair();
        await wg(sockets, [
          "set",
          IFACE,
          "private-key",
          await secretFile(dir, "other.key", other.privateKey),
        ]);
        assert.equal(server.publicKey, other.publicKey);
        assert.equal(
          (await wg(sockets, ["show", IFACE, "public-key"])).stdout.trim(),
          other.publicKey,
        );
        assert.equal(
          (await wg(sockets, ["show", IFACE, "private-key"])).stdout.trim(),
          other.privateKey,
        );
        // Client 2 learns the new key and gets through again.
        await go2!.removePeer(serverKeys.publicKey);
        await go2!.configure({
          peers: [{
            publicKey: other.publicKey,
            endpoint: `${link1.a.v4}:${port}`,
            allowedIps: ["192.0.2.0/24"],
          }],
        });
        const echo = await tunnelClient(ns2, ["udp-echo", SERVER_V4, 9, 500, 2]);
        assert.equal(echo.ok, 2);
        assert.ok(server.peer(c2.publicKey)!.handshakes >= 1);
      },
    );

    await t.step("wg set listen-port rebinds the server", async () => {
      const probe = Deno.listenDatagram({ transport: "udp", hostname: link1.a.v4, port: 0 });
      const free = (probe.addr as Deno.NetAddr).port;
      probe.close();
      await wg(sockets, ["set", IFACE, "listen-port", String(free)]);
      assert.equal(server.addr.port, free);
      assert.equal((await wg(sockets, ["show", IFACE, "listen-port"])).stdout.trim(), String(free));
    });
  },
});

Deno.test({
  name:
    "UAPI: the wgstack command: SIGHUP, add-peer and remove-peer while a client holds connections",
  ignore: netns.ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using stack = new AsyncDisposableStack();
    const { dir, sockets, ns, link } = await setUp(stack);

    const [serverKeys, c1] = await Promise.all([wgGenKeyPair(), wgGenKeyPair()]);
    const conf = `${dir}/ua1.conf`;
    await Deno.writeTextFile(
      conf,
      [
        "[Interface]",
        `PrivateKey = ${serverKeys.privateKey}`,
        "Address = 10.44.0.1/24",
        "",
        "[Peer]",
        "# Name = client-1",
        `PublicKey = ${c1.publicKey}`,
        "AllowedIPs = 10.44.0.2/32",
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    const env = { NO_COLOR: "1", WGSTACK_UAPI_DIR: sockets };
    const main = new URL("../cli/main.ts", import.meta.url).pathname;
    const cli = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", main, conf, "--mode", "echo", "--listen", `${link.a.v4}:0`, "--no-qr"],
      env,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    stack.defer(async () => {
      try {
        cli.kill("SIGTERM");
      } catch { /* exited */ }
      await cli.status;
    });
    const wgOut = async (args: string[]) => (await wg(sockets, args)).stdout.trim();
    const port = Number(
      await waitFor("the server's UAPI socket", async () => {
        const r = await wg(sockets, ["show", "ua1", "listen-port"], false);
        return r.code === 0 ? r.stdout.trim() : undefined;
      }, { timeoutMs: 30_000 }),
    );
    const go = await wireguardGo(stack, ns, {
      privateKey: c1.privateKey,
      server: serverKeys.publicKey,
      endpoint: `${link.a.v4}:${port}`,
      address: "10.44.0.2",
      subnet: "10.44.0.0/24",
    });
    const command = (args: string[]) =>
      new Deno.Command(Deno.execPath(), { args: ["run", "-A", main, ...args], env }).output();

    await t.step(
      "changes while client 1 holds two connections, which it never notices",
      async () => {
        const hold = spawnClient(ns, ["hold", "10.44.0.1", 7, 2, 3]);
        stack.defer(() => hold.close());
        assert.equal((await hold.next(0)).phase, "open");
        const handshake = await go.latestHandshake();
        assert.ok(handshake > 0);

        const added = await command(["add-peer", "laptop", conf, "--no-qr"]);
        const addedText = new TextDecoder().decode(added.stderr);
        assert.equal(added.code, 0, addedText);
        assert.match(addedText, /lets the new client in now/);
        assert.equal((await wgOut(["show", "ua1", "peers"])).split("\n").length, 2);

        await Deno.writeTextFile(
          conf,
          (await Deno.readTextFile(conf)).replace(
            "AllowedIPs = 10.44.0.2/32",
            "AllowedIPs = 10.44.0.2/32, 10.44.0.20/32",
          ),
        );
        cli.kill("SIGHUP");
        await waitFor(
          "the reload",
          async () =>
            (await wgOut(["show", "ua1", "allowed-ips"])).includes("10.44.0.20/32") || undefined,
        );

        const removed = await command(["remove-peer", "laptop", conf]);
        assert.equal(removed.code, 0, new TextDecoder().decode(removed.stderr));
        assert.equal(await wgOut(["show", "ua1", "peers"]), c1.publicKey);

        // The server ended neither connection (the client stopped waiting), and no new handshake.
        assert.deepEqual((await hold.next(1)).ends, ["timeout", "timeout"]);
        assert.equal(await go.latestHandshake(), handshake);
        const echo = await tunnelClient(ns, ["udp-echo", "10.44.0.1", 9, 500, 2]);
        assert.equal(echo.ok, 2);
      },
    );
  },
});
