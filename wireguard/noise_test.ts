import assert from "node:assert/strict";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { blake2s } from "@noble/hashes/blake2.js";
import { hmac } from "@noble/hashes/hmac.js";
import { libcryptoBackend, nativeBackend, nobleBackend } from "./crypto/mod.ts";
import type { CryptoBackend } from "./crypto/backend.ts";
import { InitiationMessage, ResponseMessage } from "./messages.ts";
import {
  compareTimestamps,
  CONSTRUCTION,
  IDENTIFIER,
  Noise,
  NoiseRemote,
  tai64n,
} from "./noise.ts";

// ---- an independent straight-line reading of whitepaper §5.4.2–§5.4.5 ----
// It calls @noble directly and shares no code with noise.ts.

const enc = (s: string) => new TextEncoder().encode(s);
const cat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) out.set(p, o), o += p.length;
  return out;
};
const HASH = (...parts: Uint8Array[]): Uint8Array => blake2s(cat(...parts));
const HMAC = (key: Uint8Array, data: Uint8Array): Uint8Array => hmac(blake2s, key, data);
const KDF = (n: number, key: Uint8Array, input: Uint8Array): Uint8Array[] => {
  const t0 = HMAC(key, input);
  const out: Uint8Array[] = [];
  let prev: Uint8Array = new Uint8Array(0);
  for (let i = 1; i <= n; i++) {
    prev = HMAC(t0, cat(prev, new Uint8Array([i])));
    out.push(prev);
  }
  return out;
};
const AEAD = (key: Uint8Array, counter: number, plain: Uint8Array, aad: Uint8Array): Uint8Array => {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setUint32(4, counter, true);
  return chacha20poly1305(key, nonce, aad).encrypt(plain);
};
const DH = (priv: Uint8Array, pub: Uint8Array): Uint8Array => x25519.getSharedSecret(priv, pub);
const PUB = (priv: Uint8Array): Uint8Array => x25519.getPublicKey(priv);

function referenceHandshake(v: {
  si: Uint8Array;
  sr: Uint8Array;
  ei: Uint8Array;
  er: Uint8Array;
  psk: Uint8Array;
  timestamp: Uint8Array;
}) {
  const Si = PUB(v.si), Sr = PUB(v.sr), Ei = PUB(v.ei), Er = PUB(v.er);
  // Initiator → responder.
  let C: Uint8Array = HASH(enc(CONSTRUCTION));
  let H: Uint8Array = HASH(C, enc(IDENTIFIER));
  H = HASH(H, Sr);
  [C] = KDF(1, C, Ei);
  H = HASH(H, Ei);
  let k: Uint8Array;
  [C, k] = KDF(2, C, DH(v.ei, Sr));
  const encStatic = AEAD(k, 0, Si, H);
  H = HASH(H, encStatic);
  [C, k] = KDF(2, C, DH(v.si, Sr));
  const encTimestamp = AEAD(k, 0, v.timestamp, H);
  H = HASH(H, encTimestamp);
  // Responder → initiator.
  [C] = KDF(1, C, Er);
  H = HASH(H, Er);
  [C] = KDF(1, C, DH(v.er, Ei));
  [C] = KDF(1, C, DH(v.er, Si));
  let tau: Uint8Array;
  [C, tau, k] = KDF(3, C, v.psk);
  H = HASH(H, tau);
  const encNothing = AEAD(k, 0, new Uint8Array(0), H);
  const [initiatorSend, responderSend] = KDF(2, C, new Uint8Array(0));
  return { Ei, Er, encStatic, encTimestamp, encNothing, initiatorSend, responderSend };
}

function fixed(seed: number): Uint8Array {
  return Uint8Array.from({ length: 32 }, (_, i) => (seed * 31 + i * 7) & 0xff);
}

const backends: CryptoBackend[] = [nobleBackend];
const native = nativeBackend();
if (native) backends.push(native);
const libcrypto = libcryptoBackend();
if (libcrypto) backends.push(libcrypto);

for (const backend of backends) {
  Deno.test(`noise (${backend.name} backend)`, async (t) => {
    const si = fixed(1), sr = fixed(2), ei = fixed(3), er = fixed(4), psk = fixed(5);
    const timestamp = tai64n(Date.UTC(2024, 0, 2, 3, 4, 5, 678));
    const initiator = new Noise(backend, si);
    const responder = new Noise(backend, sr);

    await t.step("a full handshake matches the straight-line reference", () => {
      const ref = referenceHandshake({ si, sr, ei, er, psk, timestamp });
      const remoteOfInitiator = new NoiseRemote(initiator, responder.publicKey, psk);
      const remoteOfResponder = new NoiseRemote(responder, initiator.publicKey, psk);

      const init = InitiationMessage.emit(new Uint8Array(148));
      const state = initiator.createInitiation(remoteOfInitiator, init, {
        localIndex: 0x11111111,
        ephemeralPrivate: ei,
        timestamp,
      });
      assert.ok(state);
      assert.deepEqual(init.ephemeral, ref.Ei);
      assert.deepEqual(init.encryptedStatic, ref.encStatic);
      assert.deepEqual(init.encryptedTimestamp, ref.encTimestamp);
      assert.equal(init.sender, 0x11111111);

      const opening = responder.openInitiation(init);
      assert.ok(opening);
      assert.deepEqual(opening.remoteStatic, initiator.publicKey);
      const consumed = responder.finishInitiation(opening, remoteOfResponder);
      assert.ok(consumed);
      assert.deepEqual(consumed.timestamp, timestamp);
      assert.equal(consumed.remoteIndex, 0x11111111);

      const resp = ResponseMessage.emit(new Uint8Array(92));
      const rkeys = responder.createResponse(consumed, resp, {
        localIndex: 0x22222222,
        ephemeralPrivate: er,
      });
      assert.ok(rkeys);
      assert.deepEqual(resp.ephemeral, ref.Er);
      assert.deepEqual(resp.encryptedNothing, ref.encNothing);
      assert.equal(resp.receiver, 0x11111111);
      assert.equal(resp.sender, 0x22222222);

      const ikeys = initiator.consumeResponse(state, resp);
      assert.ok(ikeys);
      assert.deepEqual(ikeys.send, ref.initiatorSend);
      assert.deepEqual(ikeys.receive, ref.responderSend);
      assert.deepEqual(rkeys.send, ref.responderSend);
      assert.deepEqual(rkeys.receive, ref.initiatorSend);
      assert.notDeepEqual(ikeys.send, ikeys.receive);
    });

    await t.step("a preshared-key mismatch fails at the initiator", () => {
      const a = new NoiseRemote(initiator, responder.publicKey, psk);
      const b = new NoiseRemote(responder, initiator.publicKey); // no PSK
      const init = InitiationMessage.emit(new Uint8Array(148));
      const state = initiator.createInitiation(a, init, {
        localIndex: 1,
        ephemeralPrivate: ei,
        timestamp,
      })!;
      const consumed = responder.finishInitiation(responder.openInitiation(init)!, b)!;
      assert.ok(consumed, "the PSK only enters at the response");
      const resp = ResponseMessage.emit(new Uint8Array(92));
      assert.ok(responder.createResponse(consumed, resp, { localIndex: 2, ephemeralPrivate: er }));
      assert.equal(initiator.consumeResponse(state, resp), null);
    });

    await t.step("an initiation for another responder does not open", () => {
      const other = new Noise(backend, fixed(9));
      const a = new NoiseRemote(initiator, other.publicKey);
      const init = InitiationMessage.emit(new Uint8Array(148));
      initiator.createInitiation(a, init, { localIndex: 1, ephemeralPrivate: ei, timestamp });
      assert.equal(responder.openInitiation(init), null);
      assert.ok(other.openInitiation(init));
    });

    await t.step("every flipped byte of an initiation or response is rejected", () => {
      const a = new NoiseRemote(initiator, responder.publicKey, psk);
      const b = new NoiseRemote(responder, initiator.publicKey, psk);
      const init = InitiationMessage.emit(new Uint8Array(148));
      const state = initiator.createInitiation(a, init, {
        localIndex: 1,
        ephemeralPrivate: ei,
        timestamp,
      })!;
      for (let i = 8; i < InitiationMessage.MAC1_OFFSET; i += 5) {
        init.bytes[i] ^= 0x40;
        const opening = responder.openInitiation(init);
        const consumed = opening && responder.finishInitiation(opening, b);
        assert.equal(consumed, null, `flip at ${i}`);
        init.bytes[i] ^= 0x40;
      }
      const consumed = responder.finishInitiation(responder.openInitiation(init)!, b)!;
      const resp = ResponseMessage.emit(new Uint8Array(92));
      responder.createResponse(consumed, resp, { localIndex: 2, ephemeralPrivate: er });
      for (let i = 12; i < ResponseMessage.MAC1_OFFSET; i += 3) {
        resp.bytes[i] ^= 1;
        assert.equal(initiator.consumeResponse(state, resp), null, `flip at ${i}`);
        resp.bytes[i] ^= 1;
      }
      assert.ok(initiator.consumeResponse(state, resp));
    });

    await t.step("zero DH results (low-order points) are rejected", () => {
      const init = InitiationMessage.emit(new Uint8Array(148));
      const remote = new NoiseRemote(initiator, responder.publicKey);
      initiator.createInitiation(remote, init, { localIndex: 1, ephemeralPrivate: ei, timestamp });
      init.ephemeral.fill(0); // the point 0 has order 4: DH gives zero
      assert.equal(responder.openInitiation(init), null);
      const lowOrder = new NoiseRemote(initiator, new Uint8Array(32));
      assert.equal(lowOrder.staticStatic, null);
      assert.equal(
        initiator.createInitiation(lowOrder, init, {
          localIndex: 1,
          ephemeralPrivate: ei,
          timestamp,
        }),
        null,
      );
    });
  });
}

Deno.test("tai64n", async (t) => {
  await t.step("seconds carry the 2^62 + 10 label, nanoseconds are whitened", () => {
    const ts = tai64n(1_000_500); // 1000 s + 500 ms
    const view = new DataView(ts.buffer);
    assert.equal(view.getUint32(0), 0x40000000);
    assert.equal(view.getUint32(4), 1010);
    assert.equal(view.getUint32(8), (500_000_000 & ~0xffffff) >>> 0);
    assert.equal(view.getUint32(8) % 2 ** 24, 0);
  });

  await t.step("later times compare greater; within 16 ms may compare equal", () => {
    const a = tai64n(1_700_000_000_000);
    const b = tai64n(1_700_000_000_020);
    const c = tai64n(1_700_000_001_000);
    assert.ok(compareTimestamps(c, a) > 0);
    assert.ok(compareTimestamps(a, c) < 0);
    assert.ok(compareTimestamps(b, a) >= 0);
    assert.equal(compareTimestamps(a, tai64n(1_700_000_000_000)), 0);
  });

  await t.step("rejects bad wall-clock values", () => {
    assert.throws(() => tai64n(-1), RangeError);
    assert.throws(() => tai64n(NaN), RangeError);
  });
});
