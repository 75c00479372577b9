import assert from "node:assert/strict";
import * as nodeCrypto from "node:crypto";
import { blake2s as nobleBlake2s } from "@noble/hashes/blake2.js";
import { hmac as nobleHmac } from "@noble/hashes/hmac.js";
import { Blake2s, blake2s, hash, hmac, mac16 } from "./blake2s.ts";

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function range(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => i & 0xff);
}

const text = (s: string) => new TextEncoder().encode(s);

/** A small seeded generator (xorshift32) so that a failing case can be replayed. */
function rng(seed: number): { int(n: number): number; bytes(n: number): Uint8Array } {
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  return {
    int: (n) => next() % n,
    bytes: (n) => Uint8Array.from({ length: n }, () => next() & 0xff),
  };
}

/** Splits `data` into `count` consecutive parts at random points (empty parts allowed). */
function randomSplit(data: Uint8Array, count: number, r: ReturnType<typeof rng>): Uint8Array[] {
  const cuts = Array.from({ length: count - 1 }, () => r.int(data.length + 1)).sort((a, b) =>
    a - b
  );
  const parts: Uint8Array[] = [];
  let start = 0;
  for (const cut of [...cuts, data.length]) {
    parts.push(data.subarray(start, cut));
    start = cut;
  }
  return parts;
}

/** BLAKE2s keyed with 00 01 … 1f (the BLAKE2 reference `blake2s-kat.txt` key). */
const KAT_KEY = range(32);

Deno.test("BLAKE2s known answers", async (t) => {
  await t.step('RFC 7693 Appendix B: BLAKE2s-256("abc")', () => {
    const expected = "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982";
    assert.equal(hex(blake2s(text("abc"))), expected);
    assert.equal(hex(hash(text("abc"))), expected);
    assert.equal(hex(hash(text("a"), text("b"), text("c"))), expected);
    assert.equal(hex(new Blake2s().update(text("ab")).update(text("c")).digest()), expected);
  });

  await t.step("BLAKE2s-256 of the empty string", () => {
    const expected = "69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9";
    assert.equal(hex(blake2s(new Uint8Array(0))), expected);
    assert.equal(hex(hash()), expected);
    assert.equal(hex(hash(new Uint8Array(0), new Uint8Array(0))), expected);
  });

  await t.step("keyed KAT (key 00..1f, input 00..n-1)", () => {
    const kat: [number, string][] = [
      [0, "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49"],
      [1, "40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1"],
      [255, "3fb735061abc519dfe979e54c1ee5bfad0a9d858b3315bad34bde999efd724dd"],
    ];
    for (const [length, expected] of kat) {
      assert.equal(hex(blake2s(range(length), KAT_KEY)), expected, `length ${length}`);
      assert.equal(hex(new Blake2s(32, KAT_KEY).update(range(length)).digest()), expected);
    }
  });

  await t.step("WireGuard's initial chaining key and hash (whitepaper §5.4.2)", () => {
    const chainingKey = hash(text("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"));
    assert.equal(
      hex(chainingKey),
      "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36",
    );
    assert.equal(
      hex(hash(chainingKey, text("WireGuard v1 zx2c4 Jason@zx2c4.com"))),
      "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3",
    );
  });
});

Deno.test("BLAKE2s multi-part input equals single-part input", async (t) => {
  const r = rng(7);
  const data = r.bytes(200);
  const key = r.bytes(32);

  await t.step("every single split point, lengths 0..200", () => {
    for (let length = 0; length <= 200; length++) {
      const whole = data.subarray(0, length);
      const expectHash = hex(hash(whole));
      const expectHmac = hex(hmac(key, whole));
      const expectMac = hex(mac16(key, whole));
      const expectKeyed = hex(blake2s(whole, key.subarray(0, 13), 20));
      for (let cut = 0; cut <= length; cut++) {
        const a = whole.subarray(0, cut);
        const b = whole.subarray(cut);
        assert.equal(hex(hash(a, b)), expectHash, `hash ${length}/${cut}`);
        assert.equal(hex(hmac(key, a, b)), expectHmac, `hmac ${length}/${cut}`);
        assert.equal(hex(mac16(key, a, b)), expectMac, `mac16 ${length}/${cut}`);
        const h = new Blake2s(20, key.subarray(0, 13)).update(a).update(b);
        assert.equal(hex(h.digest()), expectKeyed, `Blake2s ${length}/${cut}`);
      }
    }
  });

  await t.step("every pair of split points, lengths around block boundaries", () => {
    for (const length of [63, 64, 65, 128, 129, 150]) {
      const whole = data.subarray(0, length);
      const expectHash = hex(hash(whole));
      const expectHmac = hex(hmac(key, whole));
      for (let i = 0; i <= length; i++) {
        for (let j = i; j <= length; j++) {
          const parts = [whole.subarray(0, i), whole.subarray(i, j), whole.subarray(j)];
          assert.equal(hex(hash(...parts)), expectHash, `hash ${length}/${i}/${j}`);
          assert.equal(hex(hmac(key, ...parts)), expectHmac, `hmac ${length}/${i}/${j}`);
        }
      }
    }
  });
});

Deno.test("BLAKE2s agrees with @noble/hashes", async (t) => {
  const r = rng(2026);

  await t.step("blake2s with key 0..32 bytes and output 1..32 bytes, lengths 0..300", () => {
    for (let length = 0; length <= 300; length++) {
      const data = r.bytes(length);
      const key = r.bytes(r.int(33));
      const outputLength = 1 + r.int(32);
      // An empty key means unkeyed (RFC 7693 §2.5); noble wants `undefined` for that.
      const nobleKey = key.length === 0 ? undefined : key;
      const expected = hex(nobleBlake2s(data, { key: nobleKey, dkLen: outputLength }));
      const label = `length ${length}, key ${key.length}, output ${outputLength}`;
      assert.equal(hex(blake2s(data, key, outputLength)), expected, label);
      const h = new Blake2s(outputLength, key);
      for (const part of randomSplit(data, 1 + r.int(5), r)) h.update(part);
      assert.equal(hex(h.digest()), expected, label);
      assert.equal(hex(hash(...randomSplit(data, 1 + r.int(5), r))), hex(nobleBlake2s(data)));
    }
  });

  await t.step("mac16 is keyed BLAKE2s with a 16-byte output", () => {
    for (let length = 0; length <= 300; length++) {
      const data = r.bytes(length);
      const key = r.bytes(1 + r.int(32));
      const parts = randomSplit(data, 1 + r.int(4), r);
      assert.equal(
        hex(mac16(key, ...parts)),
        hex(nobleBlake2s(data, { key, dkLen: 16 })),
        `length ${length}, key ${key.length}`,
      );
    }
  });

  await t.step("hmac with keys of 0..200 bytes, lengths 0..300", () => {
    for (let length = 0; length <= 300; length++) {
      const data = r.bytes(length);
      const key = r.bytes(length % 3 === 0 ? 32 : r.int(201));
      const parts = randomSplit(data, 1 + r.int(4), r);
      assert.equal(
        hex(hmac(key, ...parts)),
        hex(nobleHmac(nobleBlake2s, key, data)),
        `length ${length}, key ${key.length}`,
      );
    }
  });
});

Deno.test("BLAKE2s agrees with node:crypto blake2s256", async (t) => {
  const r = rng(99);

  await t.step("createHash, lengths 0..300 in parts", () => {
    for (let length = 0; length <= 300; length++) {
      const data = r.bytes(length);
      const parts = randomSplit(data, 1 + r.int(5), r);
      const expected = nodeCrypto.createHash("blake2s256").update(data).digest("hex");
      assert.equal(hex(hash(...parts)), expected, `length ${length}`);
    }
  });

  await t.step("createHmac, keys of 0..200 bytes, lengths 0..300 in parts", () => {
    for (let length = 0; length <= 300; length++) {
      const data = r.bytes(length);
      const key = r.bytes(length % 3 === 0 ? 32 : r.int(201));
      const parts = randomSplit(data, 1 + r.int(5), r);
      const expected = nodeCrypto.createHmac("blake2s256", key).update(data).digest("hex");
      assert.equal(hex(hmac(key, ...parts)), expected, `length ${length}, key ${key.length}`);
    }
  });
});

Deno.test("BLAKE2s state handling", async (t) => {
  await t.step("results are fresh arrays and inputs are not modified", () => {
    const key = range(32);
    const data = range(100);
    const a = hmac(key, data);
    const b = hmac(key, data);
    assert.notEqual(a, b);
    assert.equal(hex(a), hex(b));
    a.fill(0);
    assert.equal(hex(hmac(key, data)), hex(b));
    assert.equal(hex(key), hex(range(32)));
    assert.equal(hex(data), hex(range(100)));
    assert.equal(hash(data).length, 32);
    assert.equal(mac16(key, data).length, 16);
    assert.equal(blake2s(data, undefined, 7).length, 7);
  });

  await t.step("the hmac key may be one of the message parts or a result buffer", () => {
    const key = range(32);
    const expected = hex(nobleHmac(nobleBlake2s, key, key));
    assert.equal(hex(hmac(key, key)), expected);
    const t0 = hmac(key, range(5));
    assert.equal(
      hex(hmac(t0, t0, t0)),
      hex(nobleHmac(nobleBlake2s, t0, new Uint8Array([...t0, ...t0]))),
    );
  });

  await t.step("a Blake2s hasher can be re-initialised", () => {
    const h = new Blake2s(16, range(32));
    h.update(range(70)).digest();
    assert.equal(
      hex(h.init().update(text("abc")).digest()),
      "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982",
    );
    const out = new Uint8Array(40).fill(0xee);
    h.init(4).update(text("abc")).digestInto(out);
    assert.equal(hex(out.subarray(0, 5)), hex(nobleBlake2s(text("abc"), { dkLen: 4 })) + "ee");
  });

  await t.step("argument ranges", () => {
    assert.throws(() => new Blake2s(0), RangeError);
    assert.throws(() => new Blake2s(33), RangeError);
    assert.throws(() => new Blake2s(1.5), RangeError);
    assert.throws(() => new Blake2s(32, new Uint8Array(33)), RangeError);
    assert.throws(() => blake2s(new Uint8Array(1), undefined, 0), RangeError);
    assert.throws(() => mac16(new Uint8Array(0), new Uint8Array(1)), RangeError);
    assert.throws(() => mac16(new Uint8Array(33), new Uint8Array(1)), RangeError);
    // A failed call leaves the shared state usable.
    assert.equal(hex(hash(text("abc"))).slice(0, 8), "508c5e8c");
  });
});
