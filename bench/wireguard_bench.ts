/**
 * WireGuard core benchmarks, each against a baseline of the same backend
 * measured in the same run:
 *
 * - `handshake`: a responder handshake (`Device.receive` of a fresh
 *   initiation: MAC1, 4 X25519 scalar multiplications, BLAKE2s/HMAC chain,
 *   3 AEAD operations, the response) vs. 4 raw X25519 operations. Goal: the
 *   handshake takes at most 1/0.8 of the 4 X25519 operations.
 * - `data 1420 B`: encapsulate (A.send) + decapsulate (B.receive, AllowedIPs
 *   check, delivery) of a 1420-byte packet vs. a raw AEAD seal + open of the
 *   same (padded) size. Goal: ≥ 80 % of the raw rate.
 *
 * Run: `deno bench -A bench/wireguard_bench.ts`
 */
import { Device, type Endpoint } from "../wireguard/device.ts";
import { defaultBackend } from "../wireguard/crypto/mod.ts";

const backend = defaultBackend();
const WALL_BASE = 1_700_000_000_000;
const HANDSHAKES = 3000;
const WARMUP = 100;

function ipv4(src: number[], dst: number[], total: number): Uint8Array {
  const p = new Uint8Array(total);
  p[0] = 0x45;
  p[2] = total >> 8;
  p[3] = total & 0xff;
  p.set(src, 12);
  p.set(dst, 16);
  return p;
}

// ---- handshake ----

const keyA = new Uint8Array(32).fill(1);
const keyB = new Uint8Array(32).fill(2);
const endpointA: Endpoint = { address: "192.0.2.1", port: 1111 };
const endpointB: Endpoint = { address: "198.51.100.2", port: 51820 };

// Pre-generate initiations from one initiator, each with a newer TAI64N.
const initiations: Uint8Array[] = [];
{
  let wall = WALL_BASE;
  const initiator = new Device({
    privateKey: keyA,
    backend,
    wallClock: () => wall,
    sendDatagram: (d) => initiations.push(d.slice()),
    deliverPacket: () => {},
  });
  const peer = initiator.addPeer({ publicKey: backend.x25519Public(keyB), endpoint: endpointB });
  for (let i = 0; i < HANDSHAKES + WARMUP + 10; i++) {
    wall += 1000;
    initiator.initiate(peer, i * 10_000);
  }
}

let responses = 0;
let responderNow = 0;
let next = 0;
const responder = new Device({
  privateKey: keyB,
  backend,
  wallClock: () => WALL_BASE,
  sendDatagram: () => responses++,
  deliverPacket: () => {},
});
responder.addPeer({ publicKey: backend.x25519Public(keyA) });

const scalar = new Uint8Array(32).fill(3);
const point = backend.x25519Public(new Uint8Array(32).fill(4));

Deno.bench({
  name: "4 × X25519 (raw backend)",
  group: "handshake",
  baseline: true,
  fn() {
    backend.x25519(scalar, point);
    backend.x25519(scalar, point);
    backend.x25519(scalar, point);
    backend.x25519(scalar, point);
  },
});

Deno.bench({
  name: "responder handshake (Device.receive initiation → response)",
  group: "handshake",
  n: HANDSHAKES,
  warmup: WARMUP,
  fn() {
    responderNow += 50;
    responder.receive(initiations[next++], endpointA, responderNow);
  },
});

// ---- data path ----

const PACKET = 1420;
const padded = (PACKET + 15) & ~15;
const key = new Uint8Array(32).fill(9);
const nonce = new Uint8Array(12);
const plain = new Uint8Array(padded);
const sealed = new Uint8Array(padded + 16);
const opened = new Uint8Array(padded);

Deno.bench({
  name: "raw AEAD seal + open (1424 B + tag)",
  group: "data 1420 B",
  baseline: true,
  fn() {
    nonce[4]++;
    backend.seal(key, nonce, plain, undefined, sealed);
    if (backend.open(key, nonce, sealed, undefined, opened) === null) throw new Error("open");
  },
});

const now = 0;
let delivered = 0;
const link: { b?: Device } = {};
const a = new Device({
  privateKey: keyA,
  backend,
  wallClock: () => WALL_BASE + now,
  sendDatagram: (d) => link.b!.receive(d, endpointA, now),
  deliverPacket: () => {},
});
const b = new Device({
  privateKey: keyB,
  backend,
  wallClock: () => WALL_BASE + now,
  sendDatagram: (d) => a.receive(d, endpointB, now),
  deliverPacket: () => delivered++,
});
link.b = b;
a.addPeer({ publicKey: b.publicKey, allowedIps: ["10.0.0.2/32"], endpoint: endpointB });
b.addPeer({ publicKey: a.publicKey, allowedIps: ["10.0.0.1/32"] });
const packet = ipv4([10, 0, 0, 1], [10, 0, 0, 2], PACKET);
a.send(packet, now); // handshake + first packet
if (delivered !== 1) throw new Error("setup handshake failed");

Deno.bench({
  name: "Device encapsulate + decapsulate (A.send → B.receive → deliver)",
  group: "data 1420 B",
  fn() {
    a.send(packet, now);
  },
});

globalThis.addEventListener("unload", () => {
  if (responses < HANDSHAKES) {
    console.error(`only ${responses} responses for ${HANDSHAKES} handshakes`);
  }
});
