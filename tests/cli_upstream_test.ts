/**
 * The CLI's upstream choice per peer, on loopback (no root): `# Upstream =`
 * in wg.conf beats `--upstream`, `# Upstream = direct` dials directly. Two
 * scripted SOCKS5 proxies on 127.0.0.1 answer every CONNECT with success and
 * a greeting naming themselves; the direct peer's dial goes to a closed
 * port on 127.0.0.1. No byte leaves the machine.
 */

import assert from "node:assert/strict";
import { generatePrivateKey, keyToBase64, publicKey } from "@wgstack/wireguard";
import { type ListeningServer, runCli } from "../cli/run.ts";
import { startTestClient, type TestClient } from "./_client.ts";

/** A SOCKS5 proxy (no auth) that accepts any CONNECT, sends `greeting` and closes; records the targets. */
function greetingProxy(greeting: string) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const targets: string[] = [];
  const done = (async () => {
    for await (const conn of listener) {
      try {
        const buf = new Uint8Array(512);
        await conn.read(buf); // greeting: VER NMETHODS METHODS
        await conn.write(Uint8Array.of(5, 0));
        const n = (await conn.read(buf))!; // VER CMD RSV ATYP(1) ADDR(4) PORT(2)
        targets.push(`${buf.subarray(4, 8).join(".")}:${(buf[8] << 8) | buf[9]}`);
        assert.equal(n, 10);
        await conn.write(Uint8Array.of(5, 0, 0, 1, 0, 0, 0, 0, 0, 0));
        await conn.write(new TextEncoder().encode(greeting));
      } catch {
        // the client went away
      }
      conn.close();
    }
  })();
  return {
    port: listener.addr.port,
    targets,
    async [Symbol.asyncDispose]() {
      listener.close();
      await done;
    },
  };
}

Deno.test({
  name: "cli: # Upstream = per peer beats --upstream; # Upstream = direct dials directly",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using own = greetingProxy("via-own");
    await using fallback = greetingProxy("via-default");
    // A port nothing listens on: a direct dial there is refused at once.
    const closedPort = (() => {
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      l.close();
      return l.addr.port;
    })();
    const dir = await Deno.makeTempDir({ prefix: "wgstack-upstream-" });
    const serverKey = generatePrivateKey();
    const keys = [generatePrivateKey(), generatePrivateKey(), generatePrivateKey()];
    const peer = (i: number, extra: string) =>
      `[Peer]\n# Name = p${i}\n${extra}PublicKey = ${keyToBase64(publicKey(keys[i]))}\n` +
      `AllowedIPs = 198.18.7.${i + 2}/32\n\n`;
    await Deno.writeTextFile(
      `${dir}/wg.conf`,
      `[Interface]\nPrivateKey = ${
        keyToBase64(serverKey)
      }\nAddress = 198.18.7.1/24\nListenPort = 51820\n\n` +
        peer(0, `# Upstream = socks5://127.0.0.1:${own.port}\n`) +
        peer(1, "# Upstream = direct\n") +
        peer(2, ""),
      { mode: 0o600 },
    );
    const logs: Record<string, unknown>[] = [];
    const controller = new AbortController();
    let server: ListeningServer | undefined;
    const exit = runCli([
      `${dir}/wg.conf`,
      "--listen=127.0.0.1:0",
      "--no-qr",
      "--log-format=json",
      `--upstream=socks5://127.0.0.1:${fallback.port}`,
      "--allow=127.0.0.1",
      "--dns-upstream=127.0.0.1:9",
    ], {
      stderr: () => {},
      stdout: () => {},
      logLine: (l) => void logs.push(JSON.parse(l)),
      signal: controller.signal,
      onListening: (s) => server = s,
    });
    const clients: TestClient[] = [];
    try {
      while (!server) await new Promise((r) => setTimeout(r, 10));
      const open = async (i: number, host: string, port: number) => {
        const client = startTestClient({
          serverPublicKey: publicKey(serverKey),
          serverPort: server!.addr.port,
          privateKey: keys[i],
          address4: `198.18.7.${i + 2}`,
        });
        clients.push(client);
        await client.handshake();
        return client.connect(host, port);
      };
      const fetch = async (i: number, host: string, port: number) => {
        const conn = await open(i, host, port);
        await conn.writable.close();
        return await new Response(conn.readable).text();
      };
      assert.equal(await fetch(0, "198.18.9.9", 80), "via-own");
      // The direct peer's dial goes to the closed local port itself: refused, no proxy asked.
      // (Its client cannot take the RST: a tunnel client drops packets from 127.0.0.0/8.)
      const direct = await open(1, "127.0.0.1", closedPort);
      direct.readable.cancel().catch(() => {});
      const refused = await until(() =>
        logs.find((r) => r.event === "tcp-refused" && r.peer === "p1")
      );
      assert.match(String(refused.reason), /refused/i);
      assert.equal(refused.answer, "rst");
      assert.equal(await fetch(2, "198.18.9.9", 443), "via-default");
      assert.deepEqual(own.targets, ["198.18.9.9:80"]);
      assert.deepEqual(fallback.targets, ["198.18.9.9:443"]);
    } finally {
      controller.abort();
      assert.equal(await exit, 0);
      for (const c of clients) c.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

async function until<T>(f: () => T | undefined): Promise<T> {
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 10));
  }
}
