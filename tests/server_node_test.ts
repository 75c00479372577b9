/**
 * The same `serve()` under Node 20: `tests/fixtures/node_server.ts` (serve
 * with echo handlers) is bundled with `deno bundle` into a temporary
 * directory and run with `node`, so the Node UDP adapter (`node:dgram`) and
 * the `node:crypto` backend do the work. A `wireguard-go` client in a
 * namespace (same topology as `server_interop_test.ts`) handshakes with it,
 * echoes 1 MB over TCP and full-MTU datagrams over UDP.
 *
 * Skips with a printed reason when not root, tools are missing or `node` is
 * not on PATH; fails under `CI=true`.
 */

import assert from "node:assert/strict";
import {
  createVeth,
  forEachLine,
  missingOnPath,
  Netns,
  requireOrSkip,
  run,
  waitFor,
  wgGenKeyPair,
  WireGuardGo,
} from "./netns.ts";
import { tunnelClient } from "./_tunnel_client.ts";

const netns = await requireOrSkip(
  "server under Node (bundle + wireguard-go)",
  missingOnPath("node", "python3"),
);

const ENTRY = new URL("./fixtures/node_server.ts", import.meta.url).pathname;
const SERVER_V4 = "192.0.2.1";
const SERVER_V6 = "fd00:99::1";
const CLIENT_V4 = "192.0.2.2";
const CLIENT_V6 = "fd00:99::2";
const MTU = 1420;

const encoder = new TextEncoder();

/** `node bundle.mjs CONFIG` with its stdout split into JSON lines. */
class NodeServer {
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly lines: Record<string, unknown>[] = [];
  stderr = "";
  #done: Promise<unknown>;
  #exited = false;

  constructor(bundle: string, config: unknown) {
    this.#child = new Deno.Command("node", {
      args: [bundle, JSON.stringify(config)],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdin = this.#child.stdin.getWriter();
    const pump = forEachLine(this.#child.stdout, (line) => {
      try {
        this.lines.push(JSON.parse(line));
      } catch {
        this.stderr += line + "\n";
      }
    });
    const pumpErr = forEachLine(this.#child.stderr, undefined, (text) => this.stderr += text);
    this.#done = Promise.all([pump, pumpErr, this.#child.status.then(() => this.#exited = true)]);
  }

  /** Waits for the first line with `key`. */
  waitLine(key: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const seen = this.lines.length;
    return waitFor(`"${key}" from the Node server`, () => {
      const line = this.lines.slice(key === "ready" ? 0 : seen).find((l) => key in l);
      if (line) return line;
      if (this.#exited) throw new Error(`node exited:\n${this.stderr}`);
      return undefined;
    }, { timeoutMs });
  }

  /** Asks for the counters. */
  async stats(): Promise<Record<string, unknown>> {
    const next = this.waitLine("stats");
    await this.#stdin.write(encoder.encode("stats\n"));
    return (await next).stats as Record<string, unknown>;
  }

  /** Closes stdin (the server shuts down, prints its counters and exits). */
  async stop(): Promise<Deno.CommandStatus> {
    await this.#stdin.close().catch(() => {});
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // gone
      }
    }, 5000);
    const status = await this.#child.status;
    clearTimeout(timer);
    await this.#done;
    return status;
  }
}

const client = tunnelClient;

Deno.test({
  name: "serve() bundled with deno bundle runs under Node with a wireguard-go client",
  ignore: netns.ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    netns.assert();
    const nodeVersion = (await run(["node", "--version"])).stdout.trim();
    const dir = await Deno.makeTempDir({ prefix: "wgstack-node-" });
    const cleanups: (() => Promise<unknown>)[] = [() => Deno.remove(dir, { recursive: true })];
    try {
      const bundle = `${dir}/server.mjs`;
      await t.step("deno bundle produces one ES module for Node", async () => {
        const r = await run([
          Deno.execPath(),
          "bundle",
          "--quiet",
          "--platform",
          "deno",
          "--format",
          "esm",
          "-o",
          bundle,
          ENTRY,
        ], { check: false });
        assert.equal(r.code, 0, `deno bundle failed:\n${r.stderr}`);
        const text = await Deno.readTextFile(bundle);
        // Only Node built-ins stay as imports; everything else is inside.
        const imports = [...text.matchAll(/^import .* from "([^"]+)";$/gm)].map((m) => m[1]);
        assert.ok(imports.every((s) => s.startsWith("node:")), `imports: ${imports.join(", ")}`);
      });

      const ns = await Netns.create("wgsn");
      cleanups.push(() => ns.destroy());
      const link = await createVeth(null, ns);
      cleanups.push(() => link.destroy());
      const serverKeys = await wgGenKeyPair();
      const clientKeys = await wgGenKeyPair();
      const server = new NodeServer(bundle, {
        privateKey: serverKeys.privateKey,
        hostname: link.a.v4,
        port: 0,
        mtu: MTU,
        peers: [{
          publicKey: clientKeys.publicKey,
          allowedIps: [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
        }],
      });
      cleanups.push(() => server.stop());
      let port = 0;
      await t.step("the bundle starts under node, without Deno", async () => {
        const ready = await server.waitLine("ready");
        assert.equal(ready.deno, "undefined");
        assert.equal(`v${ready.node}`, nodeVersion);
        assert.equal(ready.publicKey, serverKeys.publicKey);
        // node:crypto is reached through process.getBuiltinModule (Node ≥ 20.16).
        const [major, minor] = String(ready.node).split(".").map(Number);
        if (major > 20 || (major === 20 && minor >= 16)) assert.equal(ready.crypto, "native");
        else assert.equal(ready.crypto, "noble");
        port = (ready.ready as { port: number }).port;
        assert.ok(port > 0);
      });

      const wg = await WireGuardGo.start(ns, "wg0");
      cleanups.push(() => wg.stop());
      await wg.configure({
        privateKey: clientKeys.privateKey,
        peers: [{
          publicKey: serverKeys.publicKey,
          endpoint: `${link.a.v4}:${port}`,
          allowedIps: ["192.0.2.0/24", "fd00:99::/64"],
        }],
      });
      await wg.up({
        addresses: [`${CLIENT_V4}/32`, `${CLIENT_V6}/128`],
        routes: ["192.0.2.0/24", "fd00:99::/64"],
        mtu: MTU,
      });

      await t.step("wireguard-go completes the handshake (and ping is answered)", async () => {
        const r = await client(ns, ["ping", SERVER_V4, 0, 2]);
        assert.deepEqual(r, { transmitted: 2, received: 2 });
        assert.ok((await wg.latestHandshake()) > 0);
      });

      await t.step("TCP echo of 1 MB each way, byte-exact (IPv4 and IPv6)", async () => {
        for (const address of [SERVER_V4, SERVER_V6]) {
          const r = await client(ns, ["tcp-echo", address, 7, 1024 * 1024, 1]);
          const [one] = r.results as Record<string, unknown>[];
          assert.deepEqual(one, {
            sent: 1048576,
            received: 1048576,
            match: true,
            eof: true,
            errors: [],
          });
        }
      });

      await t.step("UDP echo of full-MTU datagrams", async () => {
        const v4 = await client(ns, ["udp-echo", SERVER_V4, 9, MTU - 28, 10]);
        assert.deepEqual({ ok: v4.ok, bad: v4.bad }, { ok: 10, bad: [] });
        const v6 = await client(ns, ["udp-echo", SERVER_V6, 9, MTU - 48, 10]);
        assert.deepEqual({ ok: v6.ok, bad: v6.bad }, { ok: 10, bad: [] });
      });

      await t.step("counters, then a clean exit", async () => {
        const stats = await server.stats() as { socket: { received: number; sent: number } };
        assert.ok(stats.socket.received > 0 && stats.socket.sent > 0, JSON.stringify(stats));
        const status = await server.stop();
        assert.equal(status.code, 0, server.stderr);
        const errors = server.lines.filter((l) => "log" in l);
        assert.deepEqual(errors, []);
      });
    } finally {
      for (const fn of cleanups.reverse()) await fn().catch(() => {});
    }
  },
});
