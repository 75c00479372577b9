import assert from "node:assert/strict";
import {
  type CryptoBackend,
  defaultBackend,
  libcryptoBackend,
  nativeBackend,
  nobleBackend,
  TAG_LENGTH,
} from "./mod.ts";
import { hchacha20 } from "./_aead.ts";
import { requirement } from "../../tests/_skip.ts";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fromHex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function range(start: number, length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (start + i) & 0xff);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** A small seeded generator (xorshift32) so that a failing case can be replayed. */
function seededBytes(seed: number): (length: number) => Uint8Array {
  let state = seed >>> 0 || 1;
  return (length) => {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      out[i] = state;
    }
    return out;
  };
}

const native = nativeBackend();
const libcrypto = libcryptoBackend();
/** Why the libcrypto backend is missing here (it is required under CI=true). */
const libcryptoMissing = libcrypto === null
  ? "libcrypto.so.3 (OpenSSL 3) did not load through Deno.dlopen"
  : undefined;
const needsLibcrypto = requirement("libcrypto backend tests", libcryptoMissing);
/** Every backend this runtime offers; noble first (the reference for cross-checks). */
const backends: CryptoBackend[] = [nobleBackend];
if (native !== null) backends.push(native);
if (libcrypto !== null) backends.push(libcrypto);

function seal(
  b: CryptoBackend,
  key: Uint8Array,
  nonce: Uint8Array,
  pt: Uint8Array,
  aad?: Uint8Array,
) {
  return b.seal(key, nonce, pt, aad, new Uint8Array(pt.length + TAG_LENGTH)).slice();
}

function open(
  b: CryptoBackend,
  key: Uint8Array,
  nonce: Uint8Array,
  ct: Uint8Array,
  aad?: Uint8Array,
) {
  const out = b.open(key, nonce, ct, aad, new Uint8Array(Math.max(0, ct.length - TAG_LENGTH)));
  return out === null ? null : out.slice();
}

// ---------------------------------------------------------------------------
// A reference BLAKE2s written from the RFC 7693 pseudocode (§3.1, §3.2),
// independent of both backends, used to check keyed and truncated output.
// ---------------------------------------------------------------------------

const B2S_IV = [
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
];
const B2S_SIGMA = [
  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
  [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
  [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
  [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
  [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
  [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
  [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
  [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
  [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
  [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
];

function referenceBlake2s(data: Uint8Array, key: Uint8Array, outLength: number): Uint8Array {
  const rotr = (x: number, n: number) => (x >>> n) | (x << (32 - n));
  const h = B2S_IV.slice();
  h[0] ^= 0x01010000 ^ (key.length << 8) ^ outLength;
  const input = key.length > 0 ? concat(key, new Uint8Array(64 - key.length), data) : data;
  const blocks = Math.max(1, Math.ceil(input.length / 64));
  for (let block = 0; block < blocks; block++) {
    const last = block === blocks - 1;
    const chunk = new Uint8Array(64);
    chunk.set(input.subarray(64 * block, 64 * block + 64));
    const m: number[] = [];
    for (let i = 0; i < 16; i++) {
      m.push(
        chunk[4 * i] | (chunk[4 * i + 1] << 8) | (chunk[4 * i + 2] << 16) |
          (chunk[4 * i + 3] << 24),
      );
    }
    const t = last ? input.length : 64 * (block + 1);
    const v = [...h, ...B2S_IV];
    v[12] ^= t; // inputs here are far below 2^32 bytes: the high counter word stays zero
    if (last) v[14] = ~v[14];
    const g = (a: number, b: number, c: number, d: number, x: number, y: number) => {
      v[a] = (v[a] + v[b] + x) | 0;
      v[d] = rotr(v[d] ^ v[a], 16);
      v[c] = (v[c] + v[d]) | 0;
      v[b] = rotr(v[b] ^ v[c], 12);
      v[a] = (v[a] + v[b] + y) | 0;
      v[d] = rotr(v[d] ^ v[a], 8);
      v[c] = (v[c] + v[d]) | 0;
      v[b] = rotr(v[b] ^ v[c], 7);
    };
    for (let round = 0; round < 10; round++) {
      const s = B2S_SIGMA[round];
      g(0, 4, 8, 12, m[s[0]], m[s[1]]);
      g(1, 5, 9, 13, m[s[2]], m[s[3]]);
      g(2, 6, 10, 14, m[s[4]], m[s[5]]);
      g(3, 7, 11, 15, m[s[6]], m[s[7]]);
      g(0, 5, 10, 15, m[s[8]], m[s[9]]);
      g(1, 6, 11, 12, m[s[10]], m[s[11]]);
      g(2, 7, 8, 13, m[s[12]], m[s[13]]);
      g(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (let i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
  }
  const out = new Uint8Array(32);
  for (let i = 0; i < 8; i++) {
    out[4 * i] = h[i];
    out[4 * i + 1] = h[i] >>> 8;
    out[4 * i + 2] = h[i] >>> 16;
    out[4 * i + 3] = h[i] >>> 24;
  }
  return out.slice(0, outLength);
}

/** HMAC (RFC 2104) over BLAKE2s-256 from first principles, with a 64-byte block. */
function referenceHmac(b: CryptoBackend, key: Uint8Array, data: Uint8Array): Uint8Array {
  const block = new Uint8Array(64);
  block.set(key.length > 64 ? b.hash(key) : key);
  const ipad = block.map((x) => x ^ 0x36);
  const opad = block.map((x) => x ^ 0x5c);
  return b.hash(opad, b.hash(ipad, data));
}

// ---------------------------------------------------------------------------
// Vectors
// ---------------------------------------------------------------------------

const SUNSCREEN = new TextEncoder().encode(
  "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
);

/** RFC 8439 §2.8.2. */
const AEAD_VECTOR = {
  key: range(0x80, 32),
  nonce: fromHex("07000000 40414243 44454647"),
  aad: fromHex("50515253c0c1c2c3c4c5c6c7"),
  ciphertext: fromHex(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6" +
      "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36" +
      "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc" +
      "3ff4def08e4b7a9de576d26586cec64b6116",
  ),
  tag: fromHex("1ae10b594f09e26a7e902ecbd0600691"),
};

/** draft-irtf-cfrg-xchacha-03 §A.3.1. */
const XAEAD_VECTOR = {
  key: range(0x80, 32),
  nonce: fromHex("404142434445464748494a4b4c4d4e4f5051525354555657"),
  aad: fromHex("50515253c0c1c2c3c4c5c6c7"),
  ciphertext: fromHex(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb" +
      "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452" +
      "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9" +
      "21f9664c97637da9768812f615c68b13b52e",
  ),
  tag: fromHex("c0875924c1c7987947deafd8780acf49"),
};

/** RFC 7748 §6.1. */
const ALICE_PRIVATE = fromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
const ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
const BOB_PRIVATE = fromHex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
const BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
const SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

Deno.test("backend selection", async (t) => {
  await t.step("the native backend exists in Deno", () => {
    assert.notEqual(native, null, "node:crypto should offer chacha20-poly1305 in Deno");
    assert.equal(native?.name, "native");
    assert.equal(nativeBackend(), native, "nativeBackend() returns the same object every time");
  });
  await t.step({
    name: "with FFI allowed, the libcrypto backend loads and is the default",
    ignore: needsLibcrypto.ignore,
    fn: () => {
      needsLibcrypto.assert();
      assert.equal(libcrypto?.name, "libcrypto");
      assert.equal(defaultBackend(), libcrypto);
      assert.equal(libcryptoBackend(), libcrypto, "the same object every time");
    },
  });
  await t.step(
    "without --allow-ffi the default is the native backend, without a prompt",
    async () => {
      const code = `import { defaultBackend, libcryptoBackend } from ${
        JSON.stringify(new URL("./mod.ts", import.meta.url).href)
      };
console.log(JSON.stringify([libcryptoBackend(), defaultBackend().name]));`;
      // `deno run -` reads the program from stdin, with no permissions at all.
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "--no-prompt", "-"],
        cwd: new URL("..", import.meta.url), // the package's deno.json maps @noble/*
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(code));
      await writer.close();
      const { code: status, stdout, stderr } = await child.output();
      const text = new TextDecoder();
      assert.equal(status, 0, text.decode(stderr));
      assert.deepEqual(JSON.parse(text.decode(stdout)), [null, "native"]);
    },
  );
  await t.step("the portable backend is named noble", () => {
    assert.equal(nobleBackend.name, "noble");
  });
});

for (const b of backends) {
  Deno.test(`${b.name}: ChaCha20-Poly1305`, async (t) => {
    const { key, nonce, aad, ciphertext, tag } = AEAD_VECTOR;
    const sealedVector = concat(ciphertext, tag);

    await t.step("RFC 8439 §2.8.2 seal", () => {
      assert.equal(hex(seal(b, key, nonce, SUNSCREEN, aad)), hex(sealedVector));
    });

    await t.step("RFC 8439 §2.8.2 open", () => {
      const opened = open(b, key, nonce, sealedVector, aad);
      assert.notEqual(opened, null);
      assert.equal(hex(opened!), hex(SUNSCREEN));
    });

    await t.step("a flipped bit anywhere makes open return null", () => {
      for (
        const position of [0, 57, ciphertext.length - 1, ciphertext.length, sealedVector.length - 1]
      ) {
        for (const bit of [0x01, 0x80]) {
          const tampered = sealedVector.slice();
          tampered[position] ^= bit;
          assert.equal(open(b, key, nonce, tampered, aad), null, `byte ${position} bit ${bit}`);
        }
      }
      const badAad = aad.slice();
      badAad[3] ^= 1;
      assert.equal(open(b, key, nonce, sealedVector, badAad), null, "tampered aad");
      assert.equal(open(b, key, nonce, sealedVector, undefined), null, "missing aad");
      const badNonce = nonce.slice();
      badNonce[11] ^= 1;
      assert.equal(open(b, key, badNonce, sealedVector, aad), null, "wrong nonce");
      const badKey = key.slice();
      badKey[0] ^= 1;
      assert.equal(open(b, badKey, nonce, sealedVector, aad), null, "wrong key");
    });

    await t.step("a ciphertext shorter than the tag opens to null", () => {
      for (const length of [0, 1, 15]) {
        assert.equal(
          b.open(key, nonce, new Uint8Array(length), undefined, new Uint8Array(0)),
          null,
        );
      }
    });

    await t.step("an empty plaintext seals to a bare tag and opens back", () => {
      const sealed = seal(b, key, nonce, new Uint8Array(0));
      assert.equal(sealed.length, TAG_LENGTH);
      assert.deepEqual(open(b, key, nonce, sealed), new Uint8Array(0));
      // Empty aad and no aad are the same thing (RFC 8439 §2.8: pad16 of nothing).
      assert.deepEqual(
        seal(b, key, nonce, SUNSCREEN, new Uint8Array(0)),
        seal(b, key, nonce, SUNSCREEN),
      );
    });

    await t.step("seal writes into out and returns a view of it", () => {
      const backing = new Uint8Array(8 + SUNSCREEN.length + TAG_LENGTH + 8).fill(0xee);
      const out = backing.subarray(8);
      const result = b.seal(key, nonce, SUNSCREEN, aad, out);
      assert.equal(result.buffer, backing.buffer);
      assert.equal(result.byteOffset, 8);
      assert.equal(result.length, SUNSCREEN.length + TAG_LENGTH);
      assert.equal(hex(result), hex(sealedVector));
      assert.deepEqual(
        backing.subarray(0, 8),
        new Uint8Array(8).fill(0xee),
        "bytes before out untouched",
      );
      assert.deepEqual(
        backing.subarray(8 + result.length),
        new Uint8Array(8).fill(0xee),
        "bytes after untouched",
      );
    });

    await t.step("open writes into out and returns a view of it", () => {
      const backing = new Uint8Array(4 + SUNSCREEN.length + 4).fill(0xee);
      const out = backing.subarray(4);
      const result = b.open(key, nonce, sealedVector, aad, out);
      assert.notEqual(result, null);
      assert.equal(result!.buffer, backing.buffer);
      assert.equal(result!.byteOffset, 4);
      assert.equal(hex(result!), hex(SUNSCREEN));
      assert.deepEqual(backing.subarray(4 + SUNSCREEN.length), new Uint8Array(4).fill(0xee));
    });

    await t.step("seal and open work in place (same offset)", () => {
      const buffer = new Uint8Array(SUNSCREEN.length + TAG_LENGTH);
      buffer.set(SUNSCREEN);
      const sealed = b.seal(key, nonce, buffer.subarray(0, SUNSCREEN.length), aad, buffer);
      assert.equal(hex(sealed), hex(sealedVector));
      const opened = b.open(key, nonce, buffer, aad, buffer);
      assert.notEqual(opened, null);
      assert.equal(hex(opened!), hex(SUNSCREEN));
    });

    await t.step("misuse throws TypeError or RangeError", () => {
      const pt = new Uint8Array(10);
      assert.throws(() => b.seal(key, nonce, pt, undefined, new Uint8Array(25)), RangeError);
      assert.throws(
        () => b.seal(key.subarray(1), nonce, pt, undefined, new Uint8Array(26)),
        RangeError,
      );
      assert.throws(
        () => b.seal(key, new Uint8Array(24), pt, undefined, new Uint8Array(26)),
        RangeError,
      );
      assert.throws(
        () => b.seal("key" as unknown as Uint8Array, nonce, pt, undefined, new Uint8Array(26)),
        TypeError,
      );
      assert.throws(() => b.open(key, nonce, sealedVector, aad, new Uint8Array(10)), {
        name: "RangeError",
        message: `Expected out to hold at least ${SUNSCREEN.length} bytes, got 10`,
      });
    });
  });

  Deno.test(`${b.name}: XChaCha20-Poly1305`, async (t) => {
    const { key, nonce, aad, ciphertext, tag } = XAEAD_VECTOR;
    const sealedVector = concat(ciphertext, tag);

    await t.step("draft-irtf-cfrg-xchacha-03 §A.3.1 seal and open", () => {
      assert.equal(hex(b.xseal(key, nonce, SUNSCREEN, aad)), hex(sealedVector));
      const opened = b.xopen(key, nonce, sealedVector, aad);
      assert.notEqual(opened, null);
      assert.equal(hex(opened!), hex(SUNSCREEN));
    });

    await t.step("tampering makes xopen return null", () => {
      for (const position of [0, ciphertext.length, sealedVector.length - 1]) {
        const tampered = sealedVector.slice();
        tampered[position] ^= 0x10;
        assert.equal(b.xopen(key, nonce, tampered, aad), null);
      }
      const badNonce = nonce.slice();
      badNonce[20] ^= 1; // a byte of the part that does not go through HChaCha20
      assert.equal(b.xopen(key, badNonce, sealedVector, aad), null);
      badNonce[20] ^= 1;
      badNonce[2] ^= 1; // a byte that does
      assert.equal(b.xopen(key, badNonce, sealedVector, aad), null);
      assert.equal(b.xopen(key, nonce, new Uint8Array(15), aad), null);
    });

    await t.step("misuse throws", () => {
      assert.throws(() => b.xseal(key, new Uint8Array(12), SUNSCREEN, aad), RangeError);
    });
  });

  Deno.test(`${b.name}: X25519`, async (t) => {
    await t.step("RFC 7748 §5.2 test vectors", () => {
      assert.equal(
        hex(b.x25519(
          fromHex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
          fromHex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
        )),
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
      );
      // The u-coordinate has its top bit set: it must be masked (RFC 7748 §5).
      assert.equal(
        hex(b.x25519(
          fromHex("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
          fromHex("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"),
        )),
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
      );
    });

    await t.step("RFC 7748 §5.2 iterated vector (1 and 1000 iterations)", () => {
      let k: Uint8Array = new Uint8Array(32);
      k[0] = 9;
      let u: Uint8Array = k.slice();
      for (let i = 1; i <= 1000; i++) {
        const next = b.x25519(k, u);
        u = k;
        k = next;
        if (i === 1) {
          assert.equal(hex(k), "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079");
        }
      }
      assert.equal(hex(k), "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51");
    });

    await t.step("RFC 7748 §6.1 Diffie-Hellman (Alice and Bob)", () => {
      assert.equal(hex(b.x25519Public(ALICE_PRIVATE)), ALICE_PUBLIC);
      assert.equal(hex(b.x25519Public(BOB_PRIVATE)), BOB_PUBLIC);
      assert.equal(hex(b.x25519(ALICE_PRIVATE, fromHex(BOB_PUBLIC))), SHARED);
      assert.equal(hex(b.x25519(BOB_PRIVATE, fromHex(ALICE_PUBLIC))), SHARED);
    });

    await t.step("low-order points give an all-zero secret instead of throwing", () => {
      const p = "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"; // 2^255 - 19
      const lowOrder = [
        "0000000000000000000000000000000000000000000000000000000000000000", // 0
        "0100000000000000000000000000000000000000000000000000000000000000", // 1
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p - 1
        p, // non-canonical 0
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // non-canonical 1
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", // order 8
      ];
      for (const u of lowOrder) {
        assert.equal(hex(b.x25519(ALICE_PRIVATE, fromHex(u))), "00".repeat(32), u);
      }
    });

    await t.step("the top bit of the u-coordinate is ignored", () => {
      const u = fromHex(BOB_PUBLIC);
      u[31] |= 0x80;
      assert.equal(hex(b.x25519(ALICE_PRIVATE, u)), SHARED);
    });

    await t.step("the private key is clamped (RFC 7748 §5 decodeScalar25519)", () => {
      const unclamped = ALICE_PRIVATE.slice();
      unclamped[0] |= 7;
      unclamped[31] = (unclamped[31] | 0x80) & ~0x40;
      assert.equal(hex(b.x25519Public(unclamped)), ALICE_PUBLIC);
      assert.equal(hex(b.x25519(unclamped, fromHex(BOB_PUBLIC))), SHARED);
    });

    await t.step("inputs are not modified and results are plain Uint8Arrays", () => {
      const priv = ALICE_PRIVATE.slice();
      const pub = fromHex(BOB_PUBLIC);
      const secret = b.x25519(priv, pub);
      assert.deepEqual(priv, ALICE_PRIVATE);
      assert.equal(hex(pub), BOB_PUBLIC);
      assert.equal(Object.getPrototypeOf(secret), Uint8Array.prototype);
      assert.equal(Object.getPrototypeOf(b.x25519Public(priv)), Uint8Array.prototype);
    });

    await t.step("misuse throws", () => {
      assert.throws(() => b.x25519(ALICE_PRIVATE.subarray(1), fromHex(BOB_PUBLIC)), {
        name: "RangeError",
        message: "Expected privateKey to be 32 bytes, got 31",
      });
      assert.throws(() => b.x25519Public(new Uint8Array(33)), RangeError);
      assert.throws(() => b.x25519(ALICE_PRIVATE, [1, 2] as unknown as Uint8Array), TypeError);
    });
  });

  Deno.test(`${b.name}: BLAKE2s`, async (t) => {
    const abc = new TextEncoder().encode("abc");
    const key32 = range(0, 32);

    await t.step('RFC 7693 Appendix B: BLAKE2s-256("abc")', () => {
      assert.equal(
        hex(b.hash(abc)),
        "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982",
      );
    });

    await t.step("BLAKE2s-256 of the empty string (BLAKE2 reference)", () => {
      assert.equal(
        hex(b.hash()),
        "69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9",
      );
      assert.equal(hex(b.hash(new Uint8Array(0))), hex(b.hash()));
    });

    await t.step("hash of several parts is the hash of their concatenation", () => {
      const bytes = seededBytes(7);
      const parts = [bytes(1), bytes(0), bytes(63), bytes(64), bytes(65), bytes(200)];
      assert.equal(hex(b.hash(...parts)), hex(b.hash(concat(...parts))));
      assert.equal(
        hex(b.hash(...parts)),
        hex(referenceBlake2s(concat(...parts), new Uint8Array(0), 32)),
      );
      assert.equal(Object.getPrototypeOf(b.hash(abc)), Uint8Array.prototype);
    });

    await t.step("keyed 16-byte MAC: known answers", () => {
      // Independent values from CPython's hashlib.blake2s(key=00..1f, digest_size=16).
      assert.equal(hex(b.mac(key32)), "9536f9b267655743dee97b8a670f9f53");
      assert.equal(hex(b.mac(key32, abc)), "61ba5f165c194692e09d12520cc4c74a");
      assert.equal(hex(b.mac(key32, new Uint8Array(0), abc)), "61ba5f165c194692e09d12520cc4c74a");
    });

    await t.step("keyed 16-byte MAC matches the RFC 7693 reference", () => {
      const bytes = seededBytes(11);
      for (const keyLength of [16, 32]) {
        for (const length of [0, 1, 31, 32, 63, 64, 65, 116, 148, 200, 1000]) {
          const key = bytes(keyLength);
          const data = bytes(length);
          assert.equal(
            hex(b.mac(key, data.subarray(0, length >> 1), data.subarray(length >> 1))),
            hex(referenceBlake2s(data, key, 16)),
            `key ${keyLength} bytes, data ${length} bytes`,
          );
        }
      }
    });

    await t.step("misuse throws", () => {
      assert.throws(() => b.mac(new Uint8Array(33), abc), RangeError);
      assert.throws(() => b.mac(new Uint8Array(0), abc), RangeError);
      assert.throws(() => b.hash(abc, "x" as unknown as Uint8Array), TypeError);
    });

    await t.step("HMAC-BLAKE2s matches HMAC built from the hash", () => {
      const bytes = seededBytes(13);
      for (const keyLength of [0, 1, 32, 63, 64, 65, 100]) {
        for (const length of [0, 1, 32, 64, 65, 300]) {
          const key = bytes(keyLength);
          const data = bytes(length);
          assert.equal(
            hex(b.hmac(key, data.subarray(0, 5), data.subarray(5))),
            hex(referenceHmac(b, key, data)),
            `key ${keyLength} bytes, data ${length} bytes`,
          );
        }
      }
      assert.equal(Object.getPrototypeOf(b.hmac(key32, abc)), Uint8Array.prototype);
    });
  });
}

Deno.test("reference BLAKE2s passes the known answers it is trusted for", async (t) => {
  await t.step("unkeyed (RFC 7693 Appendix B)", () => {
    assert.equal(
      hex(referenceBlake2s(new TextEncoder().encode("abc"), new Uint8Array(0), 32)),
      "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982",
    );
  });
  await t.step("keyed, key 00..1f, inputs 00..(n-1) (BLAKE2 reference KAT)", () => {
    const key = range(0, 32);
    const kat = [
      "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49",
      "40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1",
      "6bb71300644cd3991b26ccd4d274acd1adeab8b1d7914546c1198bbe9fc9d803",
      "1d220dbe2ee134661fdf6d9e74b41704710556f2f6e5a091b227697445dbea6b",
    ];
    kat.forEach((expected, n) =>
      assert.equal(hex(referenceBlake2s(range(0, n), key, 32)), expected)
    );
    // 16-byte output, against CPython's hashlib.blake2s(key=00..1f, digest_size=16).
    assert.equal(
      hex(referenceBlake2s(new Uint8Array(0), key, 16)),
      "9536f9b267655743dee97b8a670f9f53",
    );
  });
});

Deno.test("HChaCha20 (draft-irtf-cfrg-xchacha-03 §2.2.1)", () => {
  assert.equal(
    hex(hchacha20(range(0, 32), fromHex("000000090000004a0000000031415927"))),
    "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc",
  );
});

for (const a of backends.slice(1)) {
  Deno.test(`${a.name} and noble agree on random inputs`, async (t) => {
    const b = nobleBackend;
    const bytes = seededBytes(0x5eed);

    await t.step("ChaCha20-Poly1305, lengths 0..2000, with and without aad", () => {
      const lengths: number[] = [];
      for (let n = 0; n <= 130; n++) lengths.push(n);
      for (let n = 131; n <= 2000; n += 1 + (bytes(1)[0] % 29)) lengths.push(n);
      lengths.push(1420, 2000);
      for (const n of lengths) {
        const key = bytes(32);
        const nonce = bytes(12);
        const pt = bytes(n);
        for (const aad of [undefined, bytes(n % 40)]) {
          const sa = seal(a, key, nonce, pt, aad);
          const sb = seal(b, key, nonce, pt, aad);
          assert.equal(hex(sa), hex(sb), `seal, length ${n}, aad ${aad?.length}`);
          assert.equal(
            hex(open(a, key, nonce, sb, aad)!),
            hex(pt),
            `${a.name} opens noble, length ${n}`,
          );
          assert.equal(
            hex(open(b, key, nonce, sa, aad)!),
            hex(pt),
            `noble opens ${a.name}, length ${n}`,
          );
        }
      }
    });

    await t.step("XChaCha20-Poly1305, lengths 0..300", () => {
      for (let n = 0; n <= 300; n += 7) {
        const key = bytes(32);
        const nonce = bytes(24);
        const pt = bytes(n);
        const aad = n % 2 === 0 ? undefined : bytes(n % 50);
        const sa = a.xseal(key, nonce, pt, aad);
        assert.equal(hex(sa), hex(b.xseal(key, nonce, pt, aad)), `length ${n}`);
        assert.equal(hex(b.xopen(key, nonce, sa, aad)!), hex(pt));
      }
    });

    await t.step("X25519 and public keys, unclamped random keys", () => {
      for (let i = 0; i < 40; i++) {
        const priv = bytes(32);
        const pub = bytes(32); // random u-coordinates, top bit set about half the time
        assert.equal(hex(a.x25519(priv, pub)), hex(b.x25519(priv, pub)), `pair ${i}`);
        assert.equal(hex(a.x25519Public(priv)), hex(b.x25519Public(priv)), `public ${i}`);
      }
    });

    await t.step("hash, hmac and mac", () => {
      for (let n = 0; n <= 260; n += 13) {
        const data = bytes(n);
        const key = bytes(1 + (n % 32));
        assert.equal(hex(a.hash(data, key)), hex(b.hash(data, key)));
        assert.equal(hex(a.hmac(key, data)), hex(b.hmac(key, data)));
        assert.equal(hex(a.mac(key, data)), hex(b.mac(key, data)));
      }
    });
  });
}
