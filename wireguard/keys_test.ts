import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { requirement } from "../tests/_skip.ts";
import { nativeBackend, nobleBackend } from "./crypto/mod.ts";
import {
  generatePresharedKey,
  generatePrivateKey,
  keyFromBase64,
  keyToBase64,
  publicKey,
} from "./keys.ts";

const EXPECTED = "Expected a 32-byte key in base64 (44 characters), got ";

/** RFC 7748 §6.1 Alice's key pair. */
const ALICE_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const fromHex = (text: string) => new Uint8Array(Buffer.from(text, "hex"));

Deno.test("generatePrivateKey", async (t) => {
  await t.step("returns 32 clamped bytes (RFC 7748 §5)", () => {
    for (let i = 0; i < 50; i++) {
      const key = generatePrivateKey();
      assert.equal(key.length, 32);
      assert.equal(key[0] & 7, 0, "low three bits cleared");
      assert.equal(key[31] & 0x80, 0, "bit 255 cleared");
      assert.equal(key[31] & 0x40, 0x40, "bit 254 set");
    }
  });
  await t.step("returns a different key every time", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++) seen.add(hex(generatePrivateKey()));
    assert.equal(seen.size, 50);
  });
});

Deno.test("generatePresharedKey returns 32 fresh random bytes", () => {
  const a = generatePresharedKey();
  const b = generatePresharedKey();
  assert.equal(a.length, 32);
  assert.equal(b.length, 32);
  assert.notEqual(hex(a), hex(b));
});

Deno.test("publicKey", async (t) => {
  const native = nativeBackend();
  await t.step("RFC 7748 §6.1 with every backend and with the default", () => {
    assert.equal(hex(publicKey(fromHex(ALICE_PRIVATE))), ALICE_PUBLIC);
    assert.equal(hex(publicKey(fromHex(ALICE_PRIVATE), nobleBackend)), ALICE_PUBLIC);
    if (native !== null) assert.equal(hex(publicKey(fromHex(ALICE_PRIVATE), native)), ALICE_PUBLIC);
  });
  await t.step("rejects a wrong length or type", () => {
    assert.throws(() => publicKey(new Uint8Array(31)), {
      name: "RangeError",
      message: "Expected privateKey to be 32 bytes, got 31",
    });
    assert.throws(() => publicKey("key" as unknown as Uint8Array), {
      name: "TypeError",
      message: "Expected privateKey to be a Uint8Array, got string",
    });
  });
});

Deno.test("keyToBase64 and keyFromBase64", async (t) => {
  await t.step("the all-zero key", () => {
    assert.equal(keyToBase64(new Uint8Array(32)), "A".repeat(43) + "=");
    assert.deepEqual(keyFromBase64("A".repeat(43) + "="), new Uint8Array(32));
  });

  await t.step("agree with node:buffer's base64 on random keys, both ways", () => {
    for (let i = 0; i < 200; i++) {
      const key = crypto.getRandomValues(new Uint8Array(32));
      const text = keyToBase64(key);
      assert.equal(text, Buffer.from(key).toString("base64"));
      assert.deepEqual(keyFromBase64(text), key);
    }
    const ones = new Uint8Array(32).fill(0xff);
    assert.equal(keyToBase64(ones), Buffer.from(ones).toString("base64"));
    assert.deepEqual(keyFromBase64(keyToBase64(ones)), ones);
  });

  await t.step("keyFromBase64 ignores surrounding whitespace", () => {
    const text = keyToBase64(fromHex(ALICE_PUBLIC));
    assert.equal(hex(keyFromBase64(` ${text}\n`)), ALICE_PUBLIC);
  });

  await t.step("keyFromBase64 rejects malformed text with a clear message", () => {
    const good = keyToBase64(fromHex(ALICE_PUBLIC));
    const cases: [string, string][] = [
      ["", "0 characters"],
      [good.slice(0, 43), "43 characters"],
      [good + "A", "45 characters"],
      [good.slice(0, 43) + "A", "a string that does not end with a single '='"],
      [good.slice(0, 42) + "==", "a character outside the base64 alphabet at position 43"],
      ["*" + good.slice(1), "a character outside the base64 alphabet at position 1"],
      [
        good.slice(0, 10) + "é" + good.slice(11),
        "a character outside the base64 alphabet at position 11",
      ],
      [
        good.slice(0, 42) + "B=", // 'B' = 000001: its two low bits are outside the key
        "a non-canonical encoding (the character before '=' has stray low bits)",
      ],
    ];
    for (const [text, reason] of cases) {
      assert.throws(
        () => keyFromBase64(text),
        { name: "RangeError", message: EXPECTED + reason },
        text,
      );
    }
    assert.throws(() => keyFromBase64(42 as unknown as string), {
      name: "TypeError",
      message: EXPECTED + "number",
    });
  });

  await t.step("keyFromBase64 errors never echo the text (it may be a private key)", () => {
    const secret = keyToBase64(generatePrivateKey());
    for (const text of [secret.slice(0, 43), secret.slice(0, 42) + "!="]) {
      try {
        keyFromBase64(text);
        assert.fail("should have thrown");
      } catch (error) {
        assert.ok(!(error as Error).message.includes(text.slice(0, 20)));
      }
    }
  });

  await t.step("keyToBase64 rejects a wrong length or type", () => {
    assert.throws(() => keyToBase64(new Uint8Array(16)), {
      name: "RangeError",
      message: "Expected key to be 32 bytes, got 16",
    });
    assert.throws(() => keyToBase64([0] as unknown as Uint8Array), TypeError);
  });
});

// ---------------------------------------------------------------------------
// Interop with wireguard-tools: runs when `wg` is installed; skipped with a
// printed reason otherwise, and under CI=true a failure (tests/_skip.ts).
// ---------------------------------------------------------------------------

async function wg(args: string[], input?: string): Promise<string> {
  const child = new Deno.Command("wg", {
    args,
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(input));
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  if (code !== 0) {
    throw new Error(`wg ${args.join(" ")} failed: ${new TextDecoder().decode(stderr)}`);
  }
  return new TextDecoder().decode(stdout).trim();
}

async function wgUnavailableReason(): Promise<string | null> {
  if (Deno.permissions.querySync({ name: "run", command: "wg" }).state !== "granted") {
    return "no permission to run `wg` (use -A or --allow-run=wg)";
  }
  try {
    await wg(["--version"]);
    return null;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "`wg` (wireguard-tools) is not installed";
    return `\`wg --version\` failed: ${(error as Error).message}`;
  }
}

const needsWg = requirement("keys against wireguard-tools", await wgUnavailableReason());

Deno.test({
  name: "keys match wireguard-tools (wg genkey, wg pubkey, wg genpsk)",
  ignore: needsWg.ignore,
}, async (t) => {
  needsWg.assert();
  const native = nativeBackend();

  await t.step("our publicKey of `wg genkey` keys equals `wg pubkey`", async () => {
    for (let i = 0; i < 5; i++) {
      const privateText = await wg(["genkey"]);
      const expected = await wg(["pubkey"], privateText + "\n");
      const privateKey = keyFromBase64(privateText);
      assert.equal(keyToBase64(privateKey), privateText, "base64 round trip");
      assert.equal(keyToBase64(publicKey(privateKey, nobleBackend)), expected);
      if (native !== null) assert.equal(keyToBase64(publicKey(privateKey, native)), expected);
    }
  });

  await t.step("`wg pubkey` accepts our keys and agrees with publicKey", async () => {
    for (let i = 0; i < 5; i++) {
      const privateKey = generatePrivateKey();
      const expected = await wg(["pubkey"], keyToBase64(privateKey) + "\n");
      assert.equal(keyToBase64(publicKey(privateKey)), expected);
    }
  });

  await t.step("`wg genkey` keys are clamped like ours and `wg genpsk` keys parse", async () => {
    const key = keyFromBase64(await wg(["genkey"]));
    assert.equal(key[0] & 7, 0);
    assert.equal(key[31] & 0xc0, 0x40);
    assert.equal(keyFromBase64(await wg(["genpsk"])).length, 32);
  });
});
