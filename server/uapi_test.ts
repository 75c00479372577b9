import assert from "node:assert/strict";
import { generatePrivateKey, keyToBase64, publicKey } from "@wgstack/wireguard";
import { serve, type Server } from "./serve.ts";
import { listenUapi } from "./uapi.ts";

const hex = (key: Uint8Array) => [...key].map((b) => b.toString(16).padStart(2, "0")).join("");

/** One UAPI connection: send text, read until a reply's blank line or the close. */
class UapiClient {
  #conn: Deno.UnixConn;
  #buffered = "";
  #decoder = new TextDecoder();
  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }
  static async connect(path: string): Promise<UapiClient> {
    return new UapiClient(await Deno.connect({ transport: "unix", path }));
  }
  async send(text: string): Promise<void> {
    await this.#conn.write(new TextEncoder().encode(text));
  }
  /** The next reply (up to and including "\n\n"), or null when the server closed first. */
  async reply(): Promise<string | null> {
    const buf = new Uint8Array(65536);
    for (;;) {
      const end = this.#buffered.indexOf("\n\n");
      if (end >= 0) {
        const reply = this.#buffered.slice(0, end + 2);
        this.#buffered = this.#buffered.slice(end + 2);
        return reply;
      }
      const n = await this.#conn.read(buf).catch(() => null);
      if (n === null) return null;
      this.#buffered += this.#decoder.decode(buf.subarray(0, n));
    }
  }
  async request(text: string): Promise<string | null> {
    await this.send(text);
    return await this.reply();
  }
  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

function field(reply: string, key: string): string[] {
  return reply.split("\n").filter((l) => l.startsWith(key + "=")).map((l) =>
    l.slice(key.length + 1)
  );
}

async function setup(
  options: { idleTimeoutMs?: number; maxRequestBytes?: number } = {},
): Promise<
  {
    server: Server;
    dir: string;
    path: string;
    key: Uint8Array;
    [Symbol.asyncDispose](): Promise<void>;
  }
> {
  const dir = await Deno.makeTempDir({ prefix: "ua-uapi-" });
  const key = generatePrivateKey();
  const server = await serve({
    privateKey: key,
    hostname: "127.0.0.1",
    port: 0,
    uapi: { name: "ua0", directory: `${dir}/wireguard`, ...options },
    onTcp: (s) => s.readable.pipeTo(s.writable),
  });
  return {
    server,
    dir,
    key,
    path: `${dir}/wireguard/ua0.sock`,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("UAPI socket", async (t) => {
  await t.step("socket 0700 in a 0755 directory; removed at shutdown", async () => {
    await using s = await setup();
    assert.equal((await Deno.stat(`${s.dir}/wireguard`)).mode! & 0o777, 0o755);
    const st = await Deno.lstat(s.path);
    assert.ok(st.isSocket);
    assert.equal(st.mode! & 0o077, 0);
    await s.server.shutdown();
    await assert.rejects(Deno.lstat(s.path), Deno.errors.NotFound);
  });

  await t.step("get reports the device; set adds, changes and removes peers", async () => {
    await using s = await setup();
    const c = await UapiClient.connect(s.path);
    let reply = (await c.request("get=1\n\n"))!;
    assert.equal(
      reply,
      `private_key=${hex(s.key)}\nlisten_port=${s.server.addr.port}\nerrno=0\n\n`,
    );
    const peer = publicKey(generatePrivateKey());
    const psk = new Uint8Array(32).fill(7);
    reply = (await c.request(
      `set=1\npublic_key=${hex(peer).toUpperCase()}\npreshared_key=${hex(psk)}\n` +
        `endpoint=192.0.2.9:51000\npersistent_keepalive_interval=25\n` +
        `replace_allowed_ips=true\nallowed_ip=10.9.0.2/32\nallowed_ip=fd00:9::2/128\n\n`,
    ))!;
    assert.equal(reply, "errno=0\n\n");
    const state = s.server.peer(peer)!;
    assert.deepEqual(state.allowedIps, ["10.9.0.2/32", "fd00:9::2/128"]);
    assert.equal(state.presharedKey, keyToBase64(psk));
    assert.deepEqual(state.endpoint, { address: "192.0.2.9", port: 51000 });
    assert.equal(state.persistentKeepalive, 25);

    reply = (await c.request("get=1\n\n"))!;
    assert.deepEqual(field(reply, "public_key"), [hex(peer)]);
    assert.deepEqual(field(reply, "preshared_key"), [hex(psk)]);
    assert.deepEqual(field(reply, "endpoint"), ["192.0.2.9:51000"]);
    assert.deepEqual(field(reply, "allowed_ip"), ["10.9.0.2/32", "fd00:9::2/128"]);
    assert.deepEqual(field(reply, "last_handshake_time_sec"), ["0"]);
    assert.ok(reply.endsWith("errno=0\n\n"));

    // wg set ua0 peer K allowed-ips … (no replace): adds; a leading "-" removes.
    reply = (await c.request(
      `set=1\npublic_key=${hex(peer)}\nallowed_ip=10.9.1.0/24\nallowed_ip=-fd00:9::2/128\n` +
        `preshared_key=${"0".repeat(64)}\n\n`,
    ))!;
    assert.equal(reply, "errno=0\n\n");
    assert.deepEqual(s.server.peer(peer)!.allowedIps, ["10.9.0.2/32", "10.9.1.0/24"]);
    assert.equal(s.server.peer(peer)!.presharedKey, undefined);

    // update_only does not create; our own key is ignored.
    const other = publicKey(generatePrivateKey());
    reply = (await c.request(
      `set=1\npublic_key=${hex(other)}\nupdate_only=true\nallowed_ip=10.9.2.2/32\n` +
        `public_key=${hex(publicKey(s.key))}\nallowed_ip=10.9.3.3/32\n\n`,
    ))!;
    assert.equal(reply, "errno=0\n\n");
    assert.equal(s.server.peers().length, 1);

    reply = (await c.request(`set=1\npublic_key=${hex(peer)}\nremove=true\n\n`))!;
    assert.equal(reply, "errno=0\n\n");
    assert.equal(s.server.peers().length, 0);
    c.close();
  });

  await t.step("replace_peers, fwmark (reported only) and the same private key", async () => {
    await using s = await setup();
    s.server.addPeer({ publicKey: publicKey(generatePrivateKey()), allowedIps: ["10.9.0.5/32"] });
    const fresh = publicKey(generatePrivateKey());
    const c = await UapiClient.connect(s.path);
    const reply = await c.request(
      `set=1\nprivate_key=${hex(s.key)}\nfwmark=51\nreplace_peers=true\n` +
        `public_key=${hex(fresh)}\nallowed_ip=10.9.0.6/32\n\n`,
    );
    assert.equal(reply, "errno=0\n\n");
    assert.deepEqual(s.server.peers().map((p) => p.publicKey), [keyToBase64(fresh)]);
    assert.deepEqual(field((await c.request("get=1\n\n"))!, "fwmark"), ["51"]);
    // Another private key: the server takes it; all zeros clears it (get
    // then has no private_key), and setting one restores it.
    const other = generatePrivateKey();
    assert.equal(await c.request(`set=1\nprivate_key=${hex(other)}\n\n`), "errno=0\n\n");
    assert.equal(s.server.publicKey, keyToBase64(publicKey(other)));
    assert.deepEqual(field((await c.request("get=1\n\n"))!, "private_key"), [hex(other)]);
    assert.equal(await c.request(`set=1\nprivate_key=${"0".repeat(64)}\n\n`), "errno=0\n\n");
    assert.deepEqual(field((await c.request("get=1\n\n"))!, "private_key"), []);
    assert.equal(await c.request(`set=1\nprivate_key=${hex(other)}\n\n`), "errno=0\n\n");
    assert.deepEqual(field((await c.request("get=1\n\n"))!, "private_key"), [hex(other)]);
    c.close();
  });

  await t.step(
    "listen_port rebinds; a port in use is EADDRINUSE and the old one stays",
    async () => {
      await using s = await setup();
      const c = await UapiClient.connect(s.path);
      const busy = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
      const before = s.server.addr.port;
      const busyPort = (busy.addr as Deno.NetAddr).port;
      assert.equal(await c.request(`set=1\nlisten_port=${busyPort}\n\n`), "errno=-98\n\n");
      assert.equal(s.server.addr.port, before);
      busy.close();
      assert.equal(await c.request(`set=1\nlisten_port=${busyPort}\n\n`), "errno=0\n\n");
      assert.equal(s.server.addr.port, busyPort);
      assert.deepEqual(field((await c.request("get=1\n\n"))!, "listen_port"), [String(busyPort)]);
      c.close();
    },
  );

  await t.step("bad requests get an errno, and the connection goes on", async () => {
    await using s = await setup();
    const c = await UapiClient.connect(s.path);
    const peer = hex(publicKey(generatePrivateKey()));
    const cases: [string, number][] = [
      ["set=1\nno_such_key=1\n\n", -22],
      [`set=1\npublic_key=${peer}\nlisten_port=1\n\n`, -22],
      ["set=1\npublic_key=xyz\n\n", -22],
      [`set=1\npublic_key=${"g".repeat(64)}\n\n`, -22],
      ["set=1\nthis line has no equals sign\n\n", -71],
      [`set=1\npublic_key=${peer}\nallowed_ip=300.0.0.1/32\n\n`, -22],
      [`set=1\npublic_key=${peer}\nendpoint=nohost\n\n`, -22],
    ];
    for (const [request, errno] of cases) {
      assert.equal(await c.request(request), `errno=${errno}\n\n`, request);
    }
    // Lines before the bad one stay applied (the protocol is not atomic).
    assert.equal(
      await c.request(`set=1\npublic_key=${peer}\nallowed_ip=10.9.9.9/32\nbogus=1\n\n`),
      "errno=-22\n\n",
    );
    assert.equal(s.server.peers().length, 1);
    assert.match((await c.request("get=1\n\n"))!, /errno=0\n\n$/);
    c.close();
  });

  await t.step(
    "unknown operations, get with trailing text, oversized and silent clients",
    async () => {
      await using s = await setup({ idleTimeoutMs: 200, maxRequestBytes: 4096 });
      let c = await UapiClient.connect(s.path);
      assert.equal(await c.request("delete=1\n\n"), null);
      c = await UapiClient.connect(s.path);
      assert.equal(await c.request("get=1\nx\n"), "errno=-22\n\n");
      assert.equal(await c.reply(), null);
      c = await UapiClient.connect(s.path);
      assert.equal(await c.request("set=1\n" + "fwmark=1\n".repeat(1000)), "errno=-90\n\n");
      assert.equal(await c.reply(), null);
      c = await UapiClient.connect(s.path);
      assert.equal(await c.request("set=1\nfwmark=" + "1".repeat(5000)), "errno=-90\n\n");
      // Never-ending and silent: closed after the idle timeout.
      c = await UapiClient.connect(s.path);
      await c.send("set=1\nfwmark=1\n");
      assert.equal(await c.reply(), null);
      c = await UapiClient.connect(s.path);
      assert.equal(await c.reply(), null);
      // Still serving.
      c = await UapiClient.connect(s.path);
      assert.match((await c.request("get=1\n\n"))!, /errno=0\n\n$/);
      c.close();
    },
  );

  await t.step("several requests in one write, answered in order", async () => {
    await using s = await setup();
    const c = await UapiClient.connect(s.path);
    await c.send("get=1\n\nset=1\nfwmark=3\n\nget=1\n\n");
    assert.match((await c.reply())!, /^private_key=/);
    assert.equal(await c.reply(), "errno=0\n\n");
    assert.deepEqual(field((await c.reply())!, "fwmark"), ["3"]);
    c.close();
  });

  await t.step("a stale socket is replaced; a live one is refused", async () => {
    await using s = await setup();
    // Live: a second server with the same name is refused and the first keeps serving.
    await assert.rejects(
      serve({
        privateKey: generatePrivateKey(),
        hostname: "127.0.0.1",
        port: 0,
        uapi: { name: "ua0", directory: `${s.dir}/wireguard` },
      }),
      Deno.errors.AddrInUse,
    );
    const c = await UapiClient.connect(s.path);
    assert.match((await c.request("get=1\n\n"))!, /errno=0/);
    c.close();
    // Stale: a socket file nobody listens on.
    const stalePath = `${s.dir}/wireguard/ua1.sock`;
    const stale = Deno.listen({ transport: "unix", path: stalePath });
    stale.close();
    await Deno.lstat(stalePath).catch(async () => {
      // Deno may unlink on close: leave a socket file behind some other way.
      const l = Deno.listen({ transport: "unix", path: stalePath });
      await Deno.link(stalePath, stalePath + ".keep");
      l.close();
      await Deno.rename(stalePath + ".keep", stalePath);
    });
    assert.ok((await Deno.lstat(stalePath)).isSocket);
    const uapi = await listenUapi(
      { server: s.server, privateKey: s.key },
      { name: "ua1", directory: `${s.dir}/wireguard` },
    );
    const c1 = await UapiClient.connect(stalePath);
    assert.match((await c1.request("get=1\n\n"))!, /errno=0/);
    c1.close();
    await uapi.close();
  });

  await t.step("deleting the socket file shuts the server down", async () => {
    await using s = await setup();
    await Deno.remove(s.path);
    await s.server.finished;
  });
});
