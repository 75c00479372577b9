// What only the libcrypto backend can get wrong: state carried between calls on
// its reused EVP contexts, plaintext left behind by a failed open, and native
// memory that JavaScript's garbage collector never sees. The known-answer
// tests and the cross-checks against noble run for every backend in
// crypto_test.ts.

import assert from "node:assert/strict";
import { xorshift32 } from "../../tests/_prng.ts";
import { requirement } from "../../tests/_skip.ts";
import { libcryptoBackend, nobleBackend, TAG_LENGTH } from "./mod.ts";

const libcrypto = libcryptoBackend();
const needsLibcrypto = requirement(
  "libcrypto backend tests",
  libcrypto === null ? "libcrypto.so.3 (OpenSSL 3) did not load through Deno.dlopen" : undefined,
);

/** Reproducible bytes from a seed. */
function seededBytes(seed: number): (length: number) => Uint8Array {
  const next = xorshift32(seed);
  return (length) => Uint8Array.from({ length }, () => next() & 0xff);
}

/**
 * Bytes glibc's malloc has handed out and not got back (`mallinfo2()`:
 * `uordblks + hblkhd`), or `null` where that cannot be asked. Native leaks
 * show here; the JavaScript heap does not (V8 maps its own pages).
 */
function mallocInUse(): (() => number) | null {
  try {
    const lib = Deno.dlopen(
      "libc.so.6",
      {
        mallinfo2: { parameters: [], result: { struct: Array(10).fill("usize") } },
      } as const,
    );
    return () => {
      const info = new BigUint64Array(lib.symbols.mallinfo2().buffer);
      return Number(info[7] + info[4]);
    };
  } catch {
    return null;
  }
}

Deno.test({
  name: "libcrypto: FFI safety",
  ignore: needsLibcrypto.ignore,
  fn: async (t) => {
    needsLibcrypto.assert();
    const b = libcrypto!;
    const bytes = seededBytes(0x1c);
    const key = bytes(32);
    const nonce = bytes(12);
    const plaintext = bytes(1420);

    await t.step("a failed open returns null and leaves no plaintext in out", () => {
      const sealed = b.seal(key, nonce, plaintext, undefined, new Uint8Array(1436)).slice();
      sealed[1435] ^= 1; // the tag
      const out = new Uint8Array(1420).fill(0xee);
      assert.equal(b.open(key, nonce, sealed, undefined, out), null);
      assert.deepEqual(out, new Uint8Array(1420), "out is wiped, not left decrypted");
    });

    await t.step("no state carries over between calls on the reused contexts", () => {
      // Alternate keys, nonces, lengths, aad and failures; every result must
      // equal noble's (which has no state at all).
      for (let i = 0; i < 200; i++) {
        const k = bytes(32);
        const n = bytes(12);
        const pt = bytes(i * 7 % 300);
        const aad = i % 3 === 0 ? bytes(i % 40) : undefined;
        const expected = nobleBackend.seal(k, n, pt, aad, new Uint8Array(pt.length + TAG_LENGTH));
        const sealed = b.seal(k, n, pt, aad, new Uint8Array(pt.length + TAG_LENGTH));
        assert.deepEqual(sealed, expected, `seal ${i}`);
        if (i % 2 === 0) {
          const bad = sealed.slice();
          bad[i % bad.length] ^= 0x40;
          assert.equal(b.open(k, n, bad, aad, new Uint8Array(pt.length)), null, `bad ${i}`);
        }
        assert.deepEqual(b.open(k, n, sealed, aad, new Uint8Array(pt.length)), pt, `open ${i}`);
      }
    });

    await t.step("seal and open into an exactly sized out return out itself", () => {
      const out = new Uint8Array(1436);
      assert.equal(b.seal(key, nonce, plaintext, undefined, out), out);
      const back = new Uint8Array(1420);
      assert.equal(b.open(key, nonce, out, undefined, back), back);
      assert.deepEqual(back, plaintext);
    });

    await t.step("lengths are checked before any pointer reaches C", () => {
      // Too-small out buffers would let OpenSSL write past them.
      assert.throws(() => b.seal(key, nonce, plaintext, undefined, new Uint8Array(1435)), {
        name: "RangeError",
      });
      const sealed = b.seal(key, nonce, plaintext, undefined, new Uint8Array(1436));
      assert.throws(() => b.open(key, nonce, sealed, undefined, new Uint8Array(1419)), RangeError);
      assert.throws(() => b.seal(key.subarray(0, 31), nonce, plaintext, undefined, sealed));
      assert.throws(() => b.open(key, nonce.subarray(1), sealed, undefined, plaintext.slice()));
      assert.equal(b.open(key, nonce, sealed.subarray(0, 15), undefined, new Uint8Array(0)), null);
    });

    const inUse = mallocInUse();
    const needsMallinfo = requirement(
      "libcrypto native memory bound",
      inUse === null ? "glibc's mallinfo2 is needed to watch native memory" : undefined,
    );
    await t.step({
      name: "native memory stays bounded over many operations",
      ignore: needsMallinfo.ignore,
      fn: async () => {
        needsMallinfo.assert();
        // malloc statistics are process-wide, and `deno test --parallel` runs
        // other test files in this process: measure in a process of its own.
        const out = await new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", new URL(import.meta.url).pathname],
          cwd: new URL("../../", import.meta.url).pathname,
          env: { WGSTACK_LIBCRYPTO_LEAK_PROBE: "1" },
          stdout: "piped",
          stderr: "piped",
        }).output();
        const text = new TextDecoder().decode(out.stdout).trim();
        assert.ok(out.success, `probe failed: ${new TextDecoder().decode(out.stderr)}`);
        const growth = Number(text);
        assert.ok(Number.isFinite(growth), `probe said "${text}"`);
        // 300k AEAD calls and 8k key loads: leaking even 8 bytes per AEAD
        // call or 128 bytes per key would pass 1 MiB.
        assert.ok(growth < 1 << 20, `malloc'd memory grew by ${growth} bytes`);
      },
    });
  },
});

/** Native memory growth (bytes) over 300k AEAD calls and 8k key loads, after a warm-up. */
function leakProbe(b: NonNullable<typeof libcrypto>, measure: () => number): number {
  const bytes = seededBytes(0x1c);
  const key = bytes(32);
  const nonce = bytes(12);
  const plaintext = bytes(1420);
  const out = new Uint8Array(1436);
  const back = new Uint8Array(1420);
  const bad = b.seal(key, nonce, plaintext, undefined, new Uint8Array(1436)).slice();
  bad[0] ^= 1;
  const priv = bytes(32);
  const pub = nobleBackend.x25519Public(bytes(32));
  const lowOrder = new Uint8Array(32); // refused by OpenSSL: the error path
  const round = (aead: number, dh: number) => {
    for (let i = 0; i < aead; i++) {
      nonce[0] = i;
      b.seal(key, nonce, plaintext, undefined, out);
      b.open(key, nonce, out, undefined, back);
      b.open(key, nonce, bad, undefined, back);
    }
    for (let i = 0; i < dh; i++) {
      b.x25519(priv, pub);
      b.x25519Public(priv);
      if (i % 16 === 0) b.x25519(priv, lowOrder);
    }
  };
  round(2_000, 200); // warm up: OpenSSL's lazily built tables, error queue
  const before = measure();
  round(100_000, 4_000);
  return measure() - before;
}

if (import.meta.main && Deno.env.get("WGSTACK_LIBCRYPTO_LEAK_PROBE")) {
  console.log(leakProbe(libcrypto!, mallocInUse()!));
}
