import assert from "node:assert/strict";
import { type Cidr, formatCidr } from "./allowed_ips.ts";
import {
  formatUapiGet,
  parseUapiEndpoint,
  UAPI_EINVAL,
  UAPI_EPROTO,
  UapiError,
  type UapiPeerChange,
  type UapiSetOperation,
  UapiSetParser,
} from "./uapi.ts";

const KEY_A = "a".repeat(64);
const KEY_B = "0123456789ABCDEF".repeat(4);
const ZERO = "0".repeat(64);

function parseAll(lines: string[]): UapiSetOperation[] {
  const parser = new UapiSetParser();
  const ops = lines.flatMap((l) => parser.line(l));
  return [...ops, ...parser.end()];
}

function errnoOf(lines: string[]): number {
  try {
    parseAll(lines);
  } catch (error) {
    assert.ok(error instanceof UapiError, String(error));
    return error.errno;
  }
  return 0;
}

Deno.test("UapiSetParser", async (t) => {
  await t.step("what wg setconf sends: device keys, then one block per peer", () => {
    const ops = parseAll([
      `private_key=${KEY_B}`,
      "listen_port=51820",
      "fwmark=0",
      "replace_peers=true",
      `public_key=${KEY_A}`,
      `preshared_key=${KEY_B}`,
      "endpoint=[2001:db8::1]:51820",
      "persistent_keepalive_interval=25",
      "replace_allowed_ips=true",
      "allowed_ip=10.0.0.2/32",
      "allowed_ip=-fd00::2/128",
      `public_key=${KEY_B}`,
      "remove=true",
    ]);
    assert.deepEqual(ops.map((o) => o.kind), [
      "private_key",
      "listen_port",
      "fwmark",
      "replace_peers",
      "peer",
      "peer",
    ]);
    const pk = ops[0] as { key: Uint8Array };
    assert.equal(pk.key[0], 0x01);
    assert.equal(pk.key[7], 0xef);
    assert.deepEqual(ops[1], { kind: "listen_port", port: 51820 });
    const a = (ops[4] as { peer: UapiPeerChange }).peer;
    assert.deepEqual(a.publicKey, new Uint8Array(32).fill(0xaa));
    assert.equal(a.presharedKey![1], 0x23);
    assert.deepEqual(a.endpoint, { address: "2001:db8::1", port: 51820 });
    assert.equal(a.persistentKeepalive, 25);
    assert.deepEqual(a.allowedIps.map((c) => c.kind), ["replace", "add", "remove"]);
    assert.equal(formatCidr((a.allowedIps[2] as { cidr: Cidr }).cidr), "fd00::2/128");
    const b = (ops[5] as { peer: UapiPeerChange }).peer;
    assert.equal(b.remove, true);
    assert.equal(b.updateOnly, false);
  });

  await t.step("all-zero keys mean none", () => {
    const ops = parseAll([`private_key=${ZERO}`, `public_key=${KEY_A}`, `preshared_key=${ZERO}`]);
    assert.deepEqual(ops[0], { kind: "private_key", key: null });
    assert.equal((ops[1] as { peer: { presharedKey: unknown } }).peer.presharedKey, null);
  });

  await t.step("a peer block is returned when the next one starts", () => {
    const parser = new UapiSetParser();
    assert.deepEqual(parser.line(`public_key=${KEY_A}`), []);
    assert.deepEqual(parser.line("update_only=true"), []);
    const done = parser.line(`public_key=${KEY_B}`);
    assert.equal(done.length, 1);
    assert.equal((done[0] as { peer: { updateOnly: boolean } }).peer.updateOnly, true);
    assert.equal(parser.end().length, 1);
    assert.deepEqual(parser.end(), []);
  });

  await t.step("errors carry wireguard-go's errno", () => {
    assert.equal(errnoOf(["listen_port"]), UAPI_EPROTO);
    assert.equal(errnoOf(["no_such_key=1"]), UAPI_EINVAL);
    assert.equal(errnoOf([`public_key=${KEY_A}`, "listen_port=1"]), UAPI_EINVAL);
    assert.equal(errnoOf([`public_key=${KEY_A}`, "private_key=" + KEY_A]), UAPI_EINVAL);
    assert.equal(errnoOf([`public_key=${"g".repeat(64)}`]), UAPI_EINVAL);
    assert.equal(errnoOf([`public_key=${"a".repeat(63)}`]), UAPI_EINVAL);
    assert.equal(errnoOf([`private_key=${"a".repeat(66)}`]), UAPI_EINVAL);
    assert.equal(errnoOf(["listen_port=65536"]), UAPI_EINVAL);
    assert.equal(errnoOf(["listen_port=-1"]), UAPI_EINVAL);
    assert.equal(errnoOf(["listen_port="]), UAPI_EINVAL);
    assert.equal(errnoOf(["fwmark=4294967296"]), UAPI_EINVAL);
    assert.equal(errnoOf(["fwmark=4294967295"]), 0);
    assert.equal(errnoOf(["replace_peers=yes"]), UAPI_EINVAL);
    assert.equal(errnoOf([`public_key=${KEY_A}`, "remove=1"]), UAPI_EINVAL);
    assert.equal(errnoOf([`public_key=${KEY_A}`, "protocol_version=2"]), UAPI_EINVAL);
    assert.equal(errnoOf([`public_key=${KEY_A}`, "persistent_keepalive_interval=65536"]), -22);
    assert.equal(errnoOf([`public_key=${KEY_A}`, "allowed_ip=10.0.0.0/33"]), UAPI_EINVAL);
    assert.equal(errnoOf([`public_key=${KEY_A}`, "allowed_ip=10.0.0.1"]), UAPI_EINVAL);
    assert.equal(errnoOf([`public_key=${KEY_A}`, "allowed_ip=--10.0.0.1/32"]), UAPI_EINVAL);
    assert.equal(errnoOf([`public_key=${KEY_A}`, "endpoint=host.example:1"]), UAPI_EINVAL);
  });

  await t.step("never throws anything but UapiError on random lines", () => {
    let seed = 12345;
    const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const keys = ["public_key", "allowed_ip", "endpoint", "listen_port", "remove", "x", ""];
    for (let i = 0; i < 2000; i++) {
      const parser = new UapiSetParser();
      const chars = Array.from(
        { length: Math.floor(rnd() * 70) },
        () => "0aF-:/.[]=\u00ff1"[Math.floor(rnd() * 14)],
      ).join("");
      const line = `${keys[Math.floor(rnd() * keys.length)]}=${chars}`;
      try {
        parser.line(line);
        parser.end();
      } catch (error) {
        assert.ok(error instanceof UapiError, `${line}: ${error}`);
      }
    }
  });
});

Deno.test("parseUapiEndpoint", async (t) => {
  await t.step("IPv4 and bracketed IPv6", () => {
    assert.deepEqual(parseUapiEndpoint("192.0.2.1:51820"), { address: "192.0.2.1", port: 51820 });
    assert.deepEqual(parseUapiEndpoint("[2001:DB8::1]:1"), { address: "2001:db8::1", port: 1 });
  });
  await t.step("anything else is EINVAL", () => {
    for (const bad of ["192.0.2.1", "2001:db8::1:1", "[192.0.2.1]:1", "1.2.3.4:70000", ":1", ""]) {
      assert.throws(() => parseUapiEndpoint(bad), UapiError, bad);
    }
  });
});

Deno.test("formatUapiGet", async (t) => {
  await t.step(
    "wireguard-go's order, zeros for no preshared key, seconds before nanoseconds",
    () => {
      const text = formatUapiGet({
        privateKey: new Uint8Array(32).fill(0xab),
        listenPort: 51820,
        fwmark: 0,
        peers: [{
          publicKey: new Uint8Array(32).fill(1),
          endpoint: { address: "2001:db8::1", port: 4 },
          lastHandshakeMs: 1_700_000_000_123,
          txBytes: 148,
          rxBytes: 92,
          persistentKeepalive: 0,
          allowedIps: ["10.0.0.2/32", "fd00::2/128"],
        }],
      });
      assert.equal(
        text,
        [
          `private_key=${"ab".repeat(32)}`,
          "listen_port=51820",
          `public_key=${"01".repeat(32)}`,
          `preshared_key=${ZERO}`,
          "protocol_version=1",
          "endpoint=[2001:db8::1]:4",
          "last_handshake_time_sec=1700000000",
          "last_handshake_time_nsec=123000000",
          "tx_bytes=148",
          "rx_bytes=92",
          "persistent_keepalive_interval=0",
          "allowed_ip=10.0.0.2/32",
          "allowed_ip=fd00::2/128",
          "",
        ].join("\n"),
      );
    },
  );
  await t.step("an empty device is empty", () => {
    assert.equal(formatUapiGet({ listenPort: 0, fwmark: 0, peers: [] }), "");
  });
  await t.step("what it writes parses back as a set request", () => {
    const text = formatUapiGet({
      listenPort: 1,
      fwmark: 7,
      peers: [{
        publicKey: new Uint8Array(32).fill(2),
        lastHandshakeMs: 0,
        txBytes: 0,
        rxBytes: 0,
        persistentKeepalive: 25,
        allowedIps: ["192.0.2.0/24"],
      }],
    });
    const settable = text.split("\n").filter((l) =>
      l !== "" && !/^(last_handshake|tx_bytes|rx_bytes)/.test(l)
    );
    const ops = parseAll(settable);
    assert.deepEqual(ops.map((o) => o.kind), ["listen_port", "fwmark", "peer"]);
  });
});
