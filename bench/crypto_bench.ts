/**
 * Crypto backend benchmark: `deno bench -A bench/crypto_bench.ts`.
 *
 * Each group compares the native backend (the baseline) with the portable
 * noble backend on the operations WireGuard does: sealing and opening a
 * 1420-byte data packet (the hot path), X25519 (handshakes), BLAKE2s hashing,
 * HMAC and the 16-byte MAC (handshakes: the old `node:crypto` and
 * `@noble/hashes` implementations vs. `blake2s.ts`), and the cost of building
 * `node:crypto` KeyObjects for every X25519 call compared with reusing them.
 *
 * @module
 */

import * as nodeCrypto from "node:crypto";
import type { Buffer } from "node:buffer";
import { blake2s as nobleBlake2s } from "npm:@noble/hashes@2.4.0/blake2.js";
import { hmac as nobleHmac } from "npm:@noble/hashes@2.4.0/hmac.js";
import { type CryptoBackend, nativeBackend, nobleBackend } from "../wireguard/crypto/mod.ts";
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

aeadBenches(native, true);
aeadBenches(nobleBackend, false);
dhBenches(native, true);
dhBenches(nobleBackend, false);
blake2sBenches();

// KeyObject cost: what a cache inside the native backend could save, and
// what importing raw keys as DER instead of JWK would cost.
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
  btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
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
