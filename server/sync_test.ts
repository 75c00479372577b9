import assert from "node:assert/strict";
import {
  generatePresharedKey,
  generatePrivateKey,
  keyToBase64,
  publicKey,
} from "@wgstack/wireguard";
import { serve } from "./serve.ts";
import { syncPeers } from "./sync.ts";

const key = () => keyToBase64(publicKey(generatePrivateKey()));

Deno.test("syncPeers", async (t) => {
  const [a, b, c] = [key(), key(), key()];
  const psk = keyToBase64(generatePresharedKey());
  await using server = await serve({
    privateKey: generatePrivateKey(),
    hostname: "127.0.0.1",
    port: 0,
    peers: [
      { publicKey: a, allowedIps: ["10.9.0.2/32"], name: "a" },
      { publicKey: b, allowedIps: ["10.9.0.3/32"], presharedKey: psk },
    ],
  });

  await t.step("adds, removes and updates only what differs", () => {
    const result = syncPeers(server, [
      { publicKey: a, allowedIps: ["10.9.0.2/32", "fd00:9::2/128"], persistentKeepalive: 25 },
      { publicKey: c, allowedIps: ["10.9.0.4/32"], presharedKey: psk, name: "c" },
    ]);
    assert.deepEqual(result, { added: [c], removed: [b], updated: [a] });
    const sa = server.peer(a)!;
    assert.deepEqual(sa.allowedIps, ["10.9.0.2/32", "fd00:9::2/128"]);
    assert.equal(sa.persistentKeepalive, 25);
    assert.equal(sa.name, undefined, "the name follows the list");
    assert.equal(server.peer(c)!.presharedKey, psk);
    assert.equal(server.peer(c)!.name, "c");
  });

  await t.step("the same list again changes nothing; order and host bits do not matter", () => {
    const result = syncPeers(server, [
      { publicKey: c, allowedIps: ["10.9.0.4/32"], presharedKey: psk, name: "c" },
      { publicKey: a, allowedIps: ["fd00:9::2/128", "10.9.0.2"], persistentKeepalive: 25 },
    ]);
    assert.deepEqual(result, { added: [], removed: [], updated: [] });
  });

  await t.step("a removed preshared key and endpoints: set only where there is none", () => {
    server.updatePeer(a, { endpoint: { address: "192.0.2.7", port: 5000 } });
    const result = syncPeers(server, [
      {
        publicKey: c,
        allowedIps: ["10.9.0.4/32"],
        endpoint: { address: "192.0.2.8", port: 1 },
        name: "c",
      },
      {
        publicKey: a,
        allowedIps: ["10.9.0.2/32", "fd00:9::2/128"],
        persistentKeepalive: 25,
        endpoint: { address: "192.0.2.9", port: 1 },
      },
    ]);
    assert.deepEqual(result.updated, [c]);
    assert.equal(server.peer(c)!.presharedKey, undefined);
    assert.deepEqual(server.peer(c)!.endpoint, { address: "192.0.2.8", port: 1 });
    assert.deepEqual(server.peer(a)!.endpoint, { address: "192.0.2.7", port: 5000 });
  });

  await t.step("a bad list changes nothing", () => {
    assert.throws(() => syncPeers(server, [{ publicKey: a, allowedIps: ["10.9.0.300/32"] }]));
    assert.throws(() => syncPeers(server, [{ publicKey: "short", allowedIps: [] }]));
    assert.throws(
      () => syncPeers(server, [{ publicKey: a, allowedIps: [] }, { publicKey: a, allowedIps: [] }]),
      RangeError,
    );
    assert.equal(server.peers().length, 2);
  });
});
