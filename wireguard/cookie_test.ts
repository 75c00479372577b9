import assert from "node:assert/strict";
import { blake2s } from "@noble/hashes/blake2.js";
import { defaultBackend } from "./crypto/mod.ts";
import { COOKIE_SECRET_LIFETIME, CookieChecker, CookieGenerator, LABEL_MAC1 } from "./cookie.ts";
import { CookieReplyMessage, InitiationMessage } from "./messages.ts";

const backend = defaultBackend();

function seeded(seed: number): (bytes: Uint8Array) => void {
  let x = seed >>> 0;
  return (bytes) => {
    for (let i = 0; i < bytes.length; i++) {
      x = (x * 1664525 + 1013904223) >>> 0;
      bytes[i] = x >>> 24;
    }
  };
}

const responderPublic = backend.x25519Public(new Uint8Array(32).fill(7));
const source = { address: "192.0.2.10", port: 40000 };
const MAC1 = InitiationMessage.MAC1_OFFSET;
const MAC2 = InitiationMessage.MAC2_OFFSET;

function message(fill: number): Uint8Array {
  const bytes = new Uint8Array(148);
  InitiationMessage.emit(bytes).ephemeral.fill(fill);
  return bytes;
}

Deno.test("cookie", async (t) => {
  await t.step("MAC1 is keyed BLAKE2s-128 under HASH(LABEL_MAC1 || public key)", () => {
    const generator = new CookieGenerator(backend, responderPublic);
    const msg = message(1);
    generator.addMacs(msg, MAC1, 0);
    const key = blake2s(
      new Uint8Array([...new TextEncoder().encode(LABEL_MAC1), ...responderPublic]),
    );
    const expected = blake2s(msg.subarray(0, MAC1), { key, dkLen: 16 });
    assert.deepEqual(msg.subarray(MAC1, MAC2), expected);
    assert.deepEqual(msg.subarray(MAC2), new Uint8Array(16), "no cookie: MAC2 is zero");
  });

  await t.step("the checker accepts a correct MAC1 and rejects any change", () => {
    const checker = new CookieChecker(backend, responderPublic, seeded(1));
    const generator = new CookieGenerator(backend, responderPublic);
    const msg = message(2);
    generator.addMacs(msg, MAC1, 0);
    assert.ok(checker.checkMac1(msg, MAC1));
    msg[20] ^= 1;
    assert.ok(!checker.checkMac1(msg, MAC1));
    msg[20] ^= 1;
    msg[MAC1] ^= 1;
    assert.ok(!checker.checkMac1(msg, MAC1));
    const other = new CookieGenerator(backend, backend.x25519Public(new Uint8Array(32).fill(8)));
    other.addMacs(msg, MAC1, 0);
    assert.ok(!checker.checkMac1(msg, MAC1), "MAC1 for another key");
  });

  await t.step("cookie round trip: reply, then MAC2 accepted for the same source", () => {
    const checker = new CookieChecker(backend, responderPublic, seeded(2));
    const generator = new CookieGenerator(backend, responderPublic);
    const msg = message(3);
    generator.addMacs(msg, MAC1, 1000);
    assert.ok(!checker.checkMac2(msg, MAC2, source, 1000), "no cookie yet");
    const out = new Uint8Array(64);
    const reply = checker.createReply(msg, MAC1, 0xabcd, source, 1000, out);
    assert.equal(reply.receiver, 0xabcd);
    assert.ok(generator.consumeReply(CookieReplyMessage.parse(out)!, 1010));
    assert.ok(generator.hasCookie(1010));
    const retry = message(4);
    generator.addMacs(retry, MAC1, 1020);
    assert.notDeepEqual(retry.subarray(MAC2), new Uint8Array(16));
    assert.ok(checker.checkMac1(retry, MAC1));
    assert.ok(checker.checkMac2(retry, MAC2, source, 1020));
    assert.ok(!checker.checkMac2(retry, MAC2, { ...source, port: 40001 }, 1020), "other port");
    assert.ok(!checker.checkMac2(retry, MAC2, { ...source, address: "192.0.2.11" }, 1020));
  });

  await t.step("a reply bound to another MAC1 or tampered is not accepted", () => {
    const checker = new CookieChecker(backend, responderPublic, seeded(3));
    const generator = new CookieGenerator(backend, responderPublic);
    const first = message(5);
    generator.addMacs(first, MAC1, 0);
    const out = new Uint8Array(64);
    checker.createReply(first, MAC1, 1, source, 0, out);
    generator.addMacs(message(6), MAC1, 0); // a newer message: the reply no longer matches
    assert.ok(!generator.consumeReply(CookieReplyMessage.parse(out)!, 0));
    generator.addMacs(first, MAC1, 0);
    out[40] ^= 1;
    assert.ok(!generator.consumeReply(CookieReplyMessage.parse(out)!, 0));
    out[40] ^= 1;
    assert.ok(generator.consumeReply(CookieReplyMessage.parse(out)!, 0));
    assert.ok(
      !new CookieGenerator(backend, responderPublic).consumeReply(
        CookieReplyMessage.parse(out)!,
        0,
      ),
      "nothing sent yet",
    );
  });

  await t.step("the secret rotates every 120 s and cookies expire after 120 s", () => {
    const checker = new CookieChecker(backend, responderPublic, seeded(4));
    const generator = new CookieGenerator(backend, responderPublic);
    const msg = message(7);
    generator.addMacs(msg, MAC1, 0);
    const out = new Uint8Array(64);
    checker.createReply(msg, MAC1, 1, source, 0, out);
    generator.consumeReply(CookieReplyMessage.parse(out)!, 0);
    generator.addMacs(msg, MAC1, 100_000);
    assert.ok(checker.checkMac2(msg, MAC2, source, 100_000));
    assert.ok(!checker.checkMac2(msg, MAC2, source, COOKIE_SECRET_LIFETIME), "secret rotated");
    assert.ok(!generator.hasCookie(COOKIE_SECRET_LIFETIME));
    generator.addMacs(msg, MAC1, COOKIE_SECRET_LIFETIME);
    assert.deepEqual(msg.subarray(MAC2), new Uint8Array(16), "stale cookie: MAC2 zero");
  });

  await t.step("IPv6 sources work", () => {
    const checker = new CookieChecker(backend, responderPublic, seeded(5));
    const generator = new CookieGenerator(backend, responderPublic);
    const v6 = { address: "2001:db8::1", port: 51820 };
    const msg = message(8);
    generator.addMacs(msg, MAC1, 0);
    const out = new Uint8Array(64);
    checker.createReply(msg, MAC1, 1, v6, 0, out);
    assert.ok(generator.consumeReply(CookieReplyMessage.parse(out)!, 0));
    generator.addMacs(msg, MAC1, 0);
    assert.ok(checker.checkMac2(msg, MAC2, v6, 0));
    assert.ok(checker.checkMac2(msg, MAC2, { address: "2001:db8:0::1", port: 51820 }, 0));
  });
});
