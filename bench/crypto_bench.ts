/**
 * Crypto backend benchmark, two ways:
 *
 * - `deno run -A bench/crypto_bench.ts` (the report): every backend's seal
 *   and open of 1 KB and 1420 B next to `openssl speed -evp
 *   chacha20-poly1305` run from this script on the same machine in the same
 *   run (the hardware's limit), as ratios; the bare EVP call sequence through
 *   FFI without our JavaScript (what OpenSSL's per-message API costs), and
 *   the same sequence in C (`bench/evp_floor.c`, compiled with `cc` when
 *   present: the floor of any binding of that API);
 *   X25519 per backend; BLAKE2s of 32–148 B in `blake2s.ts` against
 *   libcrypto's `EVP_Digest*` through FFI. Medians of {@linkcode ROUNDS}
 *   interleaved rounds. `--quick` shortens everything (a smoke run).
 * - `deno bench -A bench/crypto_bench.ts`: the same operations as
 *   `Deno.bench` groups with the native backend as baseline, plus BLAKE2s
 *   implementations and the cost of `node:crypto` KeyObjects.
 *
 * @module
 */

import * as nodeCrypto from "node:crypto";
import type { Buffer } from "node:buffer";
import { blake2s as nobleBlake2s } from "npm:@noble/hashes@2.4.0/blake2.js";
import { hmac as nobleHmac } from "npm:@noble/hashes@2.4.0/hmac.js";
import {
  type CryptoBackend,
  libcryptoBackend,
  nativeBackend,
  nobleBackend,
} from "../wireguard/crypto/mod.ts";
import * as blake2s from "../wireguard/crypto/blake2s.ts";

const native = nativeBackend();
if (native === null) throw new Error("The native backend is unavailable in this runtime");

const PACKET = 1420;
const TAG = 16;
const key = crypto.getRandomValues(new Uint8Array(32));
const nonce = new Uint8Array(12);
const nonceView = new DataView(nonce.buffer);
const openNonce = new Uint8Array(12);
const packet = crypto.getRandomValues(new Uint8Array(PACKET));
const out = new Uint8Array(PACKET + TAG);
const plainOut = new Uint8Array(PACKET);
const sealed = native.seal(key, openNonce, packet, undefined, new Uint8Array(PACKET + TAG)).slice();

const privateKey = crypto.getRandomValues(new Uint8Array(32));
const peerPublic = nobleBackend.x25519Public(crypto.getRandomValues(new Uint8Array(32)));

let sent = 0;
/** A fresh nonce per seal, as on the data path (little-endian counter from byte 4). */
function nextNonce(): Uint8Array {
  nonceView.setUint32(4, ++sent, true);
  return nonce;
}

function aeadBenches(backend: CryptoBackend, baseline: boolean): void {
  Deno.bench({
    name: `${backend.name} seal ${PACKET} B`,
    group: "seal 1420 B",
    baseline,
    fn() {
      backend.seal(key, nextNonce(), packet, undefined, out);
    },
  });
  Deno.bench({
    name: `${backend.name} open ${PACKET} B`,
    group: "open 1420 B",
    baseline,
    fn() {
      if (backend.open(key, openNonce, sealed, undefined, plainOut) === null) {
        throw new Error("open failed");
      }
    },
  });
}

function dhBenches(backend: CryptoBackend, baseline: boolean): void {
  Deno.bench({
    name: `${backend.name} x25519 shared secret`,
    group: "x25519 shared secret",
    baseline,
    fn() {
      backend.x25519(privateKey, peerPublic);
    },
  });
  Deno.bench({
    name: `${backend.name} x25519 public key`,
    group: "x25519 public key",
    baseline,
    fn() {
      backend.x25519Public(privateKey);
    },
  });
}

// BLAKE2s in the shapes a handshake uses: HASH(h || 32 B), HMAC(32 B chaining
// key, 32 B) in the KDF, MAC(32 B key, 116 B) for mac1 of an initiation. The
// old implementations (`node:crypto`, `@noble/hashes`, which the backends
// used before) are called directly; `blake2s.ts` is what both backends use
// now, and the backend rows add the backends' argument checks on top.
const input32 = packet.subarray(0, 32);
const input116 = packet.subarray(0, 116);
const macKey = key.subarray(0, 32);

function nodeHash(...parts: Uint8Array[]): Uint8Array {
  const h = nodeCrypto.createHash("blake2s256");
  for (let i = 0; i < parts.length; i++) h.update(parts[i]);
  return new Uint8Array(h.digest());
}

function nodeHmac(k: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = nodeCrypto.createHmac("blake2s256", k);
  for (let i = 0; i < parts.length; i++) h.update(parts[i]);
  return new Uint8Array(h.digest());
}

function nobleHash(...parts: Uint8Array[]): Uint8Array {
  const h = nobleBlake2s.create();
  for (let i = 0; i < parts.length; i++) h.update(parts[i]);
  return h.digest();
}

function nobleHmacBlake2s(k: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = nobleHmac.create(nobleBlake2s, k);
  for (let i = 0; i < parts.length; i++) h.update(parts[i]);
  return h.digest();
}

function nobleMac(k: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = nobleBlake2s.create({ key: k, dkLen: 16 });
  for (let i = 0; i < parts.length; i++) h.update(parts[i]);
  return h.digest();
}

function blake2sBenches(): void {
  const cases: [string, string, () => void][] = [
    ["blake2s hash(32 B, 32 B)", "old node:crypto createHash", () => nodeHash(key, input32)],
    ["blake2s hash(32 B, 32 B)", "old @noble/hashes blake2s", () => nobleHash(key, input32)],
    ["blake2s hash(32 B, 32 B)", "new blake2s.ts hash", () => blake2s.hash(key, input32)],
    ["blake2s hash(32 B, 32 B)", "native backend hash", () => native!.hash(key, input32)],
    ["blake2s hash(32 B, 32 B)", "noble backend hash", () => nobleBackend.hash(key, input32)],
    ["hmac-blake2s(32 B, 32 B)", "old node:crypto createHmac", () => nodeHmac(key, input32)],
    ["hmac-blake2s(32 B, 32 B)", "old @noble/hashes hmac", () => nobleHmacBlake2s(key, input32)],
    ["hmac-blake2s(32 B, 32 B)", "new blake2s.ts hmac", () => blake2s.hmac(key, input32)],
    ["hmac-blake2s(32 B, 32 B)", "native backend hmac", () => native!.hmac(key, input32)],
    ["hmac-blake2s(32 B, 32 B)", "noble backend hmac", () => nobleBackend.hmac(key, input32)],
    ["mac 16 B (32 B, 116 B)", "old @noble/hashes blake2s", () => nobleMac(macKey, input116)],
    ["mac 16 B (32 B, 116 B)", "new blake2s.ts mac16", () => blake2s.mac16(macKey, input116)],
    ["mac 16 B (32 B, 116 B)", "native backend mac", () => native!.mac(macKey, input116)],
    ["mac 16 B (32 B, 116 B)", "noble backend mac", () => nobleBackend.mac(macKey, input116)],
  ];
  const groups = new Set<string>();
  for (const [group, name, fn] of cases) {
    // The first (old) implementation of each group is its baseline.
    Deno.bench({ name, group, baseline: !groups.has(group), fn });
    groups.add(group);
  }
}

// KeyObject cost: what a cache inside the native backend could save, and
// what importing raw keys as DER instead of JWK would cost.
function keyObjectBenches(): void {
  const PKCS8 = [
    0x30,
    0x2e,
    0x02,
    0x01,
    0x00,
    0x30,
    0x05,
    0x06,
    0x03,
    0x2b,
    0x65,
    0x6e,
    0x04,
    0x22,
    0x04,
    0x20,
  ];
  const SPKI = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00];
  const privateDer = new Uint8Array([...PKCS8, ...privateKey]) as unknown as Buffer;
  const publicDer = new Uint8Array([...SPKI, ...peerPublic]) as unknown as Buffer;
  const base64url = (bytes: Uint8Array) =>
    btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(
      /=+$/,
      "",
    );
  const privateJwk = { kty: "OKP", crv: "X25519", d: base64url(privateKey), x: "" };
  const publicJwk = { kty: "OKP", crv: "X25519", x: base64url(peerPublic) };
  const privateObject = nodeCrypto.createPrivateKey({ key: privateJwk, format: "jwk" });
  const publicObject = nodeCrypto.createPublicKey({ key: publicJwk, format: "jwk" });

  Deno.bench({
    name: "diffieHellman, both KeyObjects built per call (JWK)",
    group: "x25519 KeyObject cost",
    baseline: true,
    fn() {
      nodeCrypto.diffieHellman({
        privateKey: nodeCrypto.createPrivateKey({ key: privateJwk, format: "jwk" }),
        publicKey: nodeCrypto.createPublicKey({ key: publicJwk, format: "jwk" }),
      });
    },
  });
  Deno.bench({
    name: "diffieHellman, both KeyObjects built per call (DER)",
    group: "x25519 KeyObject cost",
    fn() {
      nodeCrypto.diffieHellman({
        privateKey: nodeCrypto.createPrivateKey({ key: privateDer, format: "der", type: "pkcs8" }),
        publicKey: nodeCrypto.createPublicKey({ key: publicDer, format: "der", type: "spki" }),
      });
    },
  });
  Deno.bench({
    name: "diffieHellman, private KeyObject cached",
    group: "x25519 KeyObject cost",
    fn() {
      nodeCrypto.diffieHellman({
        privateKey: privateObject,
        publicKey: nodeCrypto.createPublicKey({ key: publicJwk, format: "jwk" }),
      });
    },
  });
  Deno.bench({
    name: "diffieHellman, both KeyObjects cached",
    group: "x25519 KeyObject cost",
    fn() {
      nodeCrypto.diffieHellman({ privateKey: privateObject, publicKey: publicObject });
    },
  });
}

// ---------------------------------------------------------------------------
// The report (`deno run -A bench/crypto_bench.ts`)
// ---------------------------------------------------------------------------

/** Rounds per figure; the report shows the median. */
const ROUNDS = 5;
const QUICK = Deno.args.includes("--quick");
/** Wall time each round of one figure aims for. */
const ROUND_MS = QUICK ? 20 : 300;

/** ns per call of `fn`, median of ROUNDS rounds (interleaved by the caller). */
class Figure {
  readonly samples: number[] = [];
  #iterations = 0;
  constructor(readonly name: string, readonly fn: () => void) {}

  round(): void {
    if (this.#iterations === 0) {
      // Calibrate (and warm up the JIT) on the first round.
      let n = 16;
      for (;;) {
        const t = performance.now();
        for (let i = 0; i < n; i++) this.fn();
        const ms = performance.now() - t;
        if (ms > ROUND_MS / 4) {
          this.#iterations = Math.max(1, Math.round((n * ROUND_MS) / ms));
          break;
        }
        n *= 4;
      }
    }
    const t = performance.now();
    for (let i = 0; i < this.#iterations; i++) this.fn();
    this.samples.push(((performance.now() - t) * 1e6) / this.#iterations);
  }

  get median(): number {
    const sorted = [...this.samples].sort((a, b) => a - b);
    return sorted[sorted.length >> 1];
  }
}

function runInterleaved(figures: Figure[]): void {
  for (let r = 0; r < (QUICK ? 1 : ROUNDS); r++) for (const f of figures) f.round();
}

/** `openssl speed -evp chacha20-poly1305 -bytes N`: bytes per second, or null. */
async function opensslSpeed(bytes: number): Promise<number | null> {
  try {
    const { code, stdout } = await new Deno.Command("openssl", {
      args: ["speed", "-evp", "chacha20-poly1305", "-bytes", String(bytes), "-seconds"].concat(
        QUICK ? "1" : "3",
      ),
      stdout: "piped",
      stderr: "null",
    }).output();
    if (code !== 0) return null;
    // The last line: "ChaCha20-Poly1305  4997182.67k" (thousands of bytes per second).
    const match = new TextDecoder().decode(stdout).match(/^ChaCha20-Poly1305\s+([\d.]+)k\s*$/m);
    return match === null ? null : Number(match[1]) * 1000;
  } catch {
    return null; // no openssl binary
  }
}

/**
 * The bare per-message EVP sequence a libcrypto seal makes (init with key
 * and nonce, update, final, get tag), every argument a preallocated
 * pointer: what OpenSSL's API costs per message with no JavaScript around it.
 */
function rawEvpSeal(length: number): (() => void) | null {
  try {
    const lib = Deno.dlopen(
      "libcrypto.so.3",
      {
        EVP_chacha20_poly1305: { parameters: [], result: "pointer" },
        EVP_CIPHER_CTX_new: { parameters: [], result: "pointer" },
        EVP_CipherInit_ex: {
          parameters: ["pointer", "pointer", "pointer", "pointer", "pointer", "i32"],
          result: "i32",
        },
        EVP_CipherUpdate: {
          parameters: ["pointer", "pointer", "pointer", "pointer", "i32"],
          result: "i32",
        },
        EVP_CipherFinal_ex: { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
        EVP_CIPHER_CTX_ctrl: { parameters: ["pointer", "i32", "i32", "pointer"], result: "i32" },
      } as const,
    );
    const c = lib.symbols;
    const ctx = c.EVP_CIPHER_CTX_new();
    c.EVP_CipherInit_ex(ctx, c.EVP_chacha20_poly1305(), null, null, null, 1);
    const memory = new Uint8Array(8192);
    crypto.getRandomValues(memory.subarray(0, 32));
    const base = Deno.UnsafePointer.of(memory)!;
    const at = (offset: number) => Deno.UnsafePointer.offset(base, offset);
    const [key, iv, outl, tag, fin, input, output] = [0, 32, 48, 64, 128, 256, 4096].map(at);
    return () => {
      c.EVP_CipherInit_ex(ctx, null, null, key, iv, 1);
      c.EVP_CipherUpdate(ctx, output, outl, input, length);
      c.EVP_CipherFinal_ex(ctx, fin, outl);
      c.EVP_CIPHER_CTX_ctrl(ctx, 0x10, 16, tag);
    };
  } catch {
    return null;
  }
}

/** BLAKE2s-256 through libcrypto's EVP_Digest* on one reused EVP_MD_CTX, or null. */
function libcryptoBlake2s(): ((data: Uint8Array) => Uint8Array) | null {
  try {
    const lib = Deno.dlopen(
      "libcrypto.so.3",
      {
        EVP_blake2s256: { parameters: [], result: "pointer" },
        EVP_MD_CTX_new: { parameters: [], result: "pointer" },
        EVP_DigestInit_ex: { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
        EVP_DigestUpdate: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
        EVP_DigestFinal_ex: { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
      } as const,
    );
    const c = lib.symbols;
    const md = c.EVP_blake2s256();
    const ctx = c.EVP_MD_CTX_new();
    const scratch = new Uint8Array(128);
    const digestAt = Deno.UnsafePointer.of(scratch)!;
    return (data) => {
      c.EVP_DigestInit_ex(ctx, md, null);
      c.EVP_DigestUpdate(ctx, data, BigInt(data.length));
      c.EVP_DigestFinal_ex(ctx, digestAt, null);
      return scratch.slice(0, 32); // a new result per call, as the backends return
    };
  } catch {
    return null;
  }
}

/**
 * `bench/evp_floor.c` compiled with `cc` and run for `sizes`: OpenSSL's
 * per-message EVP sequence in C, no FFI (the floor any binding of this API
 * can reach). Empty when there is no C compiler or OpenSSL header here.
 */
async function nativeEvpFloor(sizes: number[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const dir = await Deno.makeTempDir({ prefix: "wgstack-evp-floor-" });
  try {
    const source = new URL("./evp_floor.c", import.meta.url).pathname;
    const exe = `${dir}/evp_floor`;
    const cc = await new Deno.Command("cc", {
      args: ["-O2", "-o", exe, source, "-lcrypto"],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!cc.success) return out;
    for (const size of sizes) {
      const run = await new Deno.Command(exe, { args: [String(size)], stderr: "null" }).output();
      if (!run.success) continue;
      for (const line of new TextDecoder().decode(run.stdout).trim().split("\n")) {
        const [name, ns] = line.split(" ");
        out.set(`${name} ${size}`, Number(ns));
      }
    }
  } catch {
    // no C compiler
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return out;
}

function row(name: string, ns: number, extra = ""): void {
  console.log(`${name.padEnd(52)} ${ns.toFixed(0).padStart(8)} ns ${extra}`);
}

async function report(): Promise<void> {
  const backends = [libcrypto, native, nobleBackend].filter((b) => b !== null);
  console.log(`backends: ${backends.map((b) => b.name).join(", ")} (default first)`);

  // ChaCha20-Poly1305.
  const sizes = [1024, 1420];
  const speedBefore = new Map<number, number | null>();
  for (const size of sizes) speedBefore.set(size, await opensslSpeed(size));
  const aead: Figure[] = [];
  const seals = new Map<string, Figure>();
  for (const size of sizes) {
    const plain = crypto.getRandomValues(new Uint8Array(size));
    const sealedOut = new Uint8Array(size + TAG);
    const opened = new Uint8Array(size);
    for (const backend of backends) {
      const ciphertext = backend.seal(key, openNonce, plain, undefined, new Uint8Array(size + TAG));
      const seal = new Figure(`${backend.name} seal ${size} B`, () => {
        backend.seal(key, nextNonce(), plain, undefined, sealedOut);
      });
      seals.set(seal.name, seal);
      aead.push(seal);
      aead.push(
        new Figure(`${backend.name} open ${size} B`, () => {
          if (backend.open(key, openNonce, ciphertext, undefined, opened) === null) {
            throw new Error("open failed");
          }
        }),
      );
    }
    const raw = rawEvpSeal(size);
    if (raw !== null) aead.push(new Figure(`bare EVP sequence via FFI, seal ${size} B`, raw));
  }
  runInterleaved(aead);
  const speedAfter = new Map<number, number | null>();
  for (const size of sizes) speedAfter.set(size, await opensslSpeed(size));
  const floor = await nativeEvpFloor(sizes);

  console.log("\nChaCha20-Poly1305 (median of rounds; rate = size / time)");
  for (const size of sizes) {
    const before = speedBefore.get(size) ?? null;
    const after = speedAfter.get(size) ?? null;
    const speeds = [before, after].filter((x) => x !== null);
    const speed = speeds.length === 0 ? null : speeds.reduce((a, b) => a + b) / speeds.length;
    if (speed !== null) {
      const ns = (size * 1e9) / speed;
      row(
        `openssl speed -evp chacha20-poly1305 -bytes ${size}`,
        ns,
        `${(speed / 1e6).toFixed(0)} MB/s (runs before/after: ${
          speeds.map((x) => (x / 1e6).toFixed(0)).join("/")
        } MB/s)`,
      );
    } else {
      console.log(`openssl speed -bytes ${size}: not available (no openssl binary?)`);
    }
    const nativeSeal = seals.get(`native seal ${size} B`)?.median;
    for (const f of aead.filter((f) => f.name.endsWith(` ${size} B`))) {
      const rate = (size * 1e3) / f.median; // MB/s
      const parts = [`${rate.toFixed(0)} MB/s`];
      if (speed !== null) {
        parts.push(`${((rate * 1e6 * 100) / speed).toFixed(1)} % of openssl speed`);
      }
      if (nativeSeal !== undefined && f.name.includes(" seal ")) {
        parts.push(`${(nativeSeal / f.median).toFixed(2)}× native seal`);
      }
      row(f.name, f.median, parts.join(", "));
    }
    // The same sequence in C: how close to `openssl speed` the EVP API lets any caller get.
    const update = floor.get(`update-only ${size}`);
    for (
      const [name, label] of [
        ["per-message", "C, EVP per message (our sequence, no FFI)"],
        ["key-kept", "C, EVP per message, key set once"],
        ["update-only", "C, EVP update only (what openssl speed times)"],
      ]
    ) {
      const ns = floor.get(`${name} ${size}`);
      if (ns === undefined || update === undefined) continue;
      row(`${label} ${size} B`, ns, `${((update / ns) * 100).toFixed(1)} % of C update-only`);
    }
  }
  if (floor.size === 0) {
    console.log("(no C compiler or OpenSSL headers: the native floor was not measured)");
  }

  // X25519.
  const dh: Figure[] = [];
  for (const backend of backends) {
    dh.push(
      new Figure(`${backend.name} x25519 shared secret`, () => {
        backend.x25519(privateKey, peerPublic);
      }),
    );
    dh.push(
      new Figure(`${backend.name} x25519 public key`, () => {
        backend.x25519Public(privateKey);
      }),
    );
  }
  runInterleaved(dh);
  console.log("\nX25519 (median of rounds)");
  for (const f of dh) {
    const base = dh.find((g) => g.name === f.name.replace(/^\S+/, "native"));
    row(f.name, f.median, base ? `${(f.median / base.median).toFixed(2)}× native's time` : "");
  }

  // BLAKE2s at WireGuard's sizes.
  const evpBlake2s = libcryptoBlake2s();
  const hashes: Figure[] = [];
  for (const size of [32, 64, 148]) {
    const data = packet.subarray(0, size);
    hashes.push(new Figure(`blake2s.ts hash ${size} B`, () => blake2s.hash(data)));
    if (evpBlake2s !== null) {
      hashes.push(new Figure(`libcrypto EVP_Digest blake2s256 ${size} B`, () => evpBlake2s(data)));
    }
  }
  runInterleaved(hashes);
  console.log("\nBLAKE2s-256 (median of rounds)");
  for (const f of hashes) {
    const size = f.name.match(/(\d+) B$/)![1];
    const ours = hashes.find((g) => g.name === `blake2s.ts hash ${size} B`)!;
    row(f.name, f.median, `${(f.median / ours.median).toFixed(2)}× blake2s.ts's time`);
  }
}

const libcrypto = libcryptoBackend();
if (import.meta.main) {
  await report();
} else {
  aeadBenches(native, true);
  if (libcrypto !== null) aeadBenches(libcrypto, false);
  aeadBenches(nobleBackend, false);
  dhBenches(native, true);
  if (libcrypto !== null) dhBenches(libcrypto, false);
  dhBenches(nobleBackend, false);
  blake2sBenches();
  keyObjectBenches();
}
