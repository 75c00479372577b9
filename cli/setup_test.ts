import assert from "node:assert/strict";
import { keyFromBase64, keyToBase64, parseConfig, publicKey } from "@wgstack/wireguard";
import { UsageError } from "./args.ts";
import {
  addPeer,
  allocateClientAddresses,
  clientFilePath,
  ensureServerConfig,
  parseServerConfig,
  peerNames,
  randomUlaPrefix,
  readClientFiles,
  redactKeys,
  setPeerDisabled,
  withEndpoint,
} from "./setup.ts";
import { servePeers } from "./_control.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "wgstack-setup-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const KEY_A = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PUB_B = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const PUB_C = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

Deno.test("first run", async (t) => {
  await withTempDir(async (dir) => {
    const path = `${dir}/wg.conf`;
    let created: string[] = [];
    await t.step("creates the server file and one client file, mode 0600", async () => {
      const result = await ensureServerConfig(path, {
        detectEndpoint: () => "192.0.2.10",
        addresses: ["198.18.0.1/24", "fd00:44::1/64"],
      });
      created = result.created;
      assert.deepEqual(created, [path, `${dir}/wg-client-1.conf`]);
      for (const file of created) {
        assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600, file);
      }
      const { setup } = result;
      assert.equal(setup.listenPort, 51820);
      assert.deepEqual(setup.addresses, ["198.18.0.1/24", "fd00:44::1/64"]);
      assert.equal(setup.peers.length, 1);
      assert.equal(setup.peers[0].name, "client-1");
      assert.deepEqual(setup.peers[0].allowedIps, ["198.18.0.2/32", "fd00:44::2/128"]);
    });

    await t.step("the client file matches the server file", async () => {
      const serverText = await Deno.readTextFile(path);
      const clientText = await Deno.readTextFile(`${dir}/wg-client-1.conf`);
      const server = parseConfig(serverText).config;
      const { config: client, warnings } = parseConfig(clientText);
      assert.deepEqual(warnings, []);
      assert.deepEqual(
        keyToBase64(publicKey(client.interface.privateKey)),
        keyToBase64(server.peers[0].publicKey),
      );
      assert.equal(
        keyToBase64(client.peers[0].publicKey),
        keyToBase64(publicKey(server.interface.privateKey)),
      );
      assert.equal(
        keyToBase64(client.peers[0].presharedKey!),
        keyToBase64(server.peers[0].presharedKey!),
      );
      assert.match(clientText, /^Address = 198\.18\.0\.2\/32, fd00:44::2\/128$/m);
      assert.match(clientText, /^DNS = 198\.18\.0\.1, fd00:44::1$/m);
      assert.match(clientText, /^AllowedIPs = 0\.0\.0\.0\/0, ::\/0$/m);
      assert.match(clientText, /^Endpoint = 192\.0\.2\.10:51820$/m);
      assert.deepEqual(client.peers[0].endpoint, { host: "192.0.2.10", port: 51820 });
    });

    await t.step("a second run reuses both files unchanged", async () => {
      const before = await Promise.all(created.map((f) => Deno.readTextFile(f)));
      const again = await ensureServerConfig(path, { detectEndpoint: () => "192.0.2.99" });
      assert.deepEqual(again.created, []);
      const after = await Promise.all(created.map((f) => Deno.readTextFile(f)));
      assert.deepEqual(after, before);
      const clients = await readClientFiles(again.setup);
      assert.deepEqual(clients.map((c) => c.name), ["client-1"]);
    });

    await t.step("add-peer appends a peer and writes its file", async () => {
      const before = await Deno.readTextFile(path);
      const client = await addPeer(path, "phone", { endpointHost: "2001:db8::5" });
      assert.equal(client.path, `${dir}/wg-phone.conf`);
      assert.equal((await Deno.stat(client.path)).mode! & 0o777, 0o600);
      const after = await Deno.readTextFile(path);
      assert.ok(after.startsWith(before), "existing text kept");
      assert.match(client.text, /^Endpoint = \[2001:db8::5\]:51820$/m);
      const { setup } = await ensureServerConfig(path);
      assert.deepEqual(setup.peers.map((p) => p.name), ["client-1", "phone"]);
      assert.deepEqual(setup.peers[1].allowedIps, ["198.18.0.3/32", "fd00:44::3/128"]);
    });

    await t.step("add-peer refuses a taken name and an existing client file", async () => {
      await assert.rejects(() => addPeer(path, "phone"), /a peer named "phone" already exists/);
      await Deno.writeTextFile(`${dir}/wg-laptop.conf`, "mine\n");
      await assert.rejects(() => addPeer(path, "laptop"), /wg-laptop.conf already exists/);
      assert.equal(await Deno.readTextFile(`${dir}/wg-laptop.conf`), "mine\n");
    });
  });

  await withTempDir(async (dir) => {
    await t.step("never overwrites a leftover client file: picks the next name", async () => {
      await Deno.writeTextFile(`${dir}/wg-client-1.conf`, "old\n");
      const { created } = await ensureServerConfig(`${dir}/wg.conf`, {
        detectEndpoint: () => undefined,
        addresses: ["198.18.0.1/24"],
      });
      assert.deepEqual(created, [`${dir}/wg.conf`, `${dir}/wg-client-2.conf`]);
      assert.equal(await Deno.readTextFile(`${dir}/wg-client-1.conf`), "old\n");
      const text = await Deno.readTextFile(`${dir}/wg-client-2.conf`);
      assert.match(text, /^Endpoint = 127\.0\.0\.1:51820$/m, "falls back to loopback");
      assert.doesNotMatch(text, /^DNS = .*:/m, "no IPv6 DNS without an IPv6 subnet");
    });
  });

  await withTempDir(async (dir) => {
    await t.step("default addresses: 10.44.0.0/24 and a ULA /64", async () => {
      const { setup } = await ensureServerConfig(`${dir}/s.conf`, { endpointHost: "192.0.2.1" });
      assert.equal(setup.addresses[0], "10.44.0.1/24");
      assert.match(setup.addresses[1], /^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}::1\/64$/);
      assert.ok(await Deno.stat(`${dir}/s-client-1.conf`));
    });
  });
});

Deno.test("setup helpers", async (t) => {
  await t.step("clientFilePath", () => {
    assert.equal(clientFilePath("wg.conf", "a"), "wg-a.conf");
    assert.equal(clientFilePath("/etc/x/wg0.conf", "a"), "/etc/x/wg0-a.conf");
    assert.equal(clientFilePath("server", "a"), "server-a.conf");
  });

  await t.step("randomUlaPrefix is fd00::/8 with a random 40-bit ID", () => {
    const a = randomUlaPrefix();
    assert.match(a, /^fd/);
    assert.notEqual(a, randomUlaPrefix());
  });

  await t.step("peerNames follows [Peer] sections", () => {
    const text = `[Interface]
# Name = not-a-peer
[Peer]
#Name=one
# Name = ignored second
[Peer]
[ peer ]
  # name =   three  `;
    assert.deepEqual(peerNames(text), ["one", undefined, "three"]);
  });

  await t.step("a peer's # Upstream = URL comment", () => {
    const setup = parseServerConfig(
      `[Interface]\nPrivateKey = ${KEY_A}\nAddress = 198.18.0.1/30\n[Peer]\n# Name = phone\n` +
        `# Upstream = socks5h://u:p@192.0.2.9:1080\nPublicKey = ${PUB_B}\nAllowedIPs = 198.18.0.2/32\n`,
      "wg.conf",
    );
    assert.equal(setup.peers[0].upstream, "socks5h://u:p@192.0.2.9:1080");
    assert.equal(setup.peers[0].name, "phone");
  });

  await t.step("allocation skips used host numbers", () => {
    const setup = parseServerConfig(
      `[Interface]\nPrivateKey = ${KEY_A}\nAddress = 198.18.0.1/30\n[Peer]\nPublicKey = ${PUB_B}\nAllowedIPs = 198.18.0.2/32\n`,
      "x.conf",
    );
    assert.throws(() => allocateClientAddresses(setup), /no free client address/);
    const roomy = parseServerConfig(
      `[Interface]\nPrivateKey = ${KEY_A}\nAddress = 198.18.0.1/24\n[Peer]\nPublicKey = ${PUB_B}\nAllowedIPs = 198.18.0.2/32, 198.18.0.4/32\n`,
      "x.conf",
    );
    assert.deepEqual(allocateClientAddresses(roomy), ["198.18.0.3/32"]);
    const none = parseServerConfig(`[Interface]\nPrivateKey = ${KEY_A}\n`, "x.conf");
    assert.throws(() => allocateClientAddresses(none), /has no Address/);
  });

  await t.step("duplicate names and the server's own key are errors with the line", () => {
    const own = keyToBase64(publicKey(keyFromBase64(KEY_A)));
    assert.throws(
      () =>
        parseServerConfig(
          `[Interface]\nPrivateKey = ${KEY_A}\n[Peer]\n# Name = a\nPublicKey = ${PUB_B}\n[Peer]\n# Name = a\nPublicKey = ${PUB_C}\n`,
          "d.conf",
        ),
      (e: unknown) =>
        e instanceof UsageError &&
        /d.conf:6: duplicate peer name "a" \(also on line 3\)/.test(e.message),
    );
    assert.throws(
      () =>
        parseServerConfig(
          `[Interface]\nPrivateKey = ${KEY_A}\n[Peer]\nPublicKey = ${own}\n`,
          "o.conf",
        ),
      /o.conf:3: this peer has the server's own public key/,
    );
  });

  await t.step("config errors and warnings never echo a key", () => {
    const bad = KEY_A.slice(0, 40); // a truncated key: invalid, quoted by the parser
    for (
      const text of [
        `[Interface]\nPrivateKey = ${bad}\n`,
        `[Interface]\nPrivateKey ${KEY_A}\n`,
      ]
    ) {
      assert.throws(
        () => parseServerConfig(text, "k.conf"),
        (e: unknown) =>
          e instanceof UsageError && !e.message.includes(bad) && /^k\.conf:/.test(e.message),
      );
    }
    const setup = parseServerConfig(
      `[Interface]\nPrivateKey = ${KEY_A}\n[Peer]\nPublicKey = ${PUB_B}\n${
        KEY_A.slice(0, 30)
      }x = 1\n`,
      "w.conf",
    );
    assert.equal(setup.warnings.length, 1);
    assert.ok(!setup.warnings[0].includes(KEY_A.slice(0, 30)), setup.warnings[0]);
    assert.equal(redactKeys('ListenPort "abc"'), 'ListenPort "abc"');
  });

  await t.step("withEndpoint replaces the Endpoint line", () => {
    assert.equal(
      withEndpoint("[Peer]\nEndpoint = 192.0.2.1:1\nX = y\n", "[2001:db8::1]:2"),
      "[Peer]\nEndpoint = [2001:db8::1]:2\nX = y\n",
    );
  });
});

Deno.test("disabled peers: # Disabled = true, kept in the file, not served", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/wg.conf`;
    await ensureServerConfig(path, { endpointHost: "192.0.2.1", addresses: ["10.44.0.1/24"] });
    await addPeer(path, "phone", { endpointHost: "192.0.2.1" });
    const before = await Deno.readTextFile(path);
    const off = await setPeerDisabled(path, "phone", true);
    assert.equal(off.disabled, true);
    const text = await Deno.readTextFile(path);
    assert.match(text, /\[Peer\]\n# Disabled = true\n# Name = phone\n/);
    // Still a file wg accepts, with both peers.
    assert.equal(parseConfig(text).config.peers.length, 2);
    const setup = parseServerConfig(text, path);
    assert.deepEqual(setup.peers.map((p) => [p.name, p.disabled]), [
      ["client-1", undefined],
      ["phone", true],
    ]);
    assert.deepEqual(servePeers(setup).map((p) => p.name), ["client-1"]);
    await setPeerDisabled(path, "phone", true); // twice: one line
    assert.equal((await Deno.readTextFile(path)).match(/# Disabled/g)?.length, 1);
    await setPeerDisabled(path, "phone", false);
    assert.equal(await Deno.readTextFile(path), before, "enabling restores the file");
    const key = (n: number) => keyToBase64(new Uint8Array(32).fill(n));
    const lower = `[Interface]\nPrivateKey = ${key(1)}\n[Peer]\n# disabled = yes\n` +
      `PublicKey = ${key(2)}\nAllowedIPs = 10.0.0.2/32\n`;
    assert.equal(parseServerConfig(lower, "x.conf").peers[0].disabled, true, "any case, yes");
    await assert.rejects(setPeerDisabled(path, "nobody", true), UsageError);
  });
});
