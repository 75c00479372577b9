/**
 * Crypto backend benchmark: `deno bench -A bench/crypto_bench.ts`.
 *
 * Each group compares the native backend (the baseline) with the portable
 * noble backend on the operations WireGuard does: sealing and opening a
 * 1420-byte data packet (the hot path), X25519 (handshakes), BLAKE2s hashing
 * and HMAC (handshakes), and the cost of building `node:crypto` KeyObjects
 * for every X25519 call compared with reusing them.
 *
 * @module
 */

import * as nodeCrypto from "node:crypto";
import type { Buffer } from "node:buffer";
import { type CryptoBackend, nativeBackend, nobleBackend } from "../wireguard/crypto/mod.ts";

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

function hashBenches(backend: CryptoBackend, baseline: boolean): void {
  const chunk = packet.subarray(0, 100);
  Deno.bench({
    name: `${backend.name} hash(32 B, 100 B)`,
    group: "blake2s hash",
    baseline,
    fn() {
      backend.hash(key, chunk);
    },
  });
  Deno.bench({
    name: `${backend.name} hmac(32 B key, 100 B)`,
    group: "hmac-blake2s",
    baseline,
    fn() {
      backend.hmac(key, chunk);
    },
  });
}

aeadBenches(native, true);
aeadBenches(nobleBackend, false);
dhBenches(native, true);
dhBenches(nobleBackend, false);
hashBenches(native, true);
hashBenches(nobleBackend, false);

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
