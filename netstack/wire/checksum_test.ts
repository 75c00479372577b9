import assert from "node:assert/strict";
import { foldChecksum, internetChecksum, sumWords } from "./checksum.ts";

/** RFC 1071 the plain way: big-endian 16-bit words, folded as it goes. */
function reference(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    sum += (bytes[i] << 8) | (i + 1 < bytes.length ? bytes[i + 1] : 0);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  return ~sum & 0xffff;
}

Deno.test("sumWords", async (t) => {
  // A fixed pattern (no randomness): every byte value, shifted per run.
  const big = new Uint8Array(65536 + 8);
  for (let i = 0; i < big.length; i++) big[i] = (i * 131 + (i >> 8)) & 0xff;

  await t.step("equals the plain sum at every alignment and length", () => {
    for (let offset = 0; offset < 4; offset++) {
      for (const length of [0, 1, 2, 3, 63, 64, 65, 66, 67, 100, 1460, 1481, 65535, 65536]) {
        const bytes = big.subarray(offset, offset + length);
        assert.equal(
          internetChecksum(bytes),
          reference(bytes),
          `offset ${offset} length ${length}`,
        );
      }
    }
  });

  await t.step("all-ones words at the largest size stay exact", () => {
    const ones = new Uint8Array(65536).fill(0xff);
    assert.equal(internetChecksum(ones), reference(ones));
    assert.equal(internetChecksum(ones.subarray(0, 65535)), reference(ones.subarray(0, 65535)));
  });

  await t.step("a running sum carries on across calls", () => {
    const a = big.subarray(0, 1000);
    const b = big.subarray(1000, 2460);
    assert.equal(foldChecksum(sumWords(b, sumWords(a))), reference(big.subarray(0, 2460)));
  });
});
