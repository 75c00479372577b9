/**
 * A handshake flood for bench/handshake_flood_bench.ts: initiations with a
 * bad MAC1, initiations with a valid MAC1 from unknown keys, and valid
 * initiations of a registered peer key (made by our own initiator),
 * round-robin, as fast as one socket sends, until stdin closes.
 *
 * `deno run -A bench/_handshake_flood.ts SERVER_PUBLIC_KEY HOST PORT PEER_PRIVATE_KEY`
 */

import { Device, generatePrivateKey, keyFromBase64 } from "@wgstack/wireguard";

const [serverPublic, host, portText, peerPrivate] = Deno.args;
const port = Number(portText);

function initiations(privateKey: Uint8Array, n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const device = new Device({
    privateKey,
    wallClock: () => Date.now(),
    sendDatagram: (d) => out.push(d.slice()),
    deliverPacket: () => {},
  });
  const peer = device.addPeer({
    publicKey: keyFromBase64(serverPublic),
    allowedIps: ["0.0.0.0/0"],
    endpoint: { address: host, port },
  });
  for (let i = 0; i < n; i++) device.initiate(peer, i * 10_000);
  return out;
}

const valid = initiations(keyFromBase64(peerPrivate), 500);
const unknown: Uint8Array[] = [];
for (let i = 0; i < 100; i++) unknown.push(...initiations(generatePrivateKey(), 5));
const badMac = unknown.map((m) => {
  const b = m.slice();
  b[b.length - 20] ^= 0xff; // inside MAC1
  return b;
});
const all = [valid, unknown, badMac];

const socket = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
let stop = false;
let sent = 0;
(async () => {
  for await (const _ of Deno.stdin.readable) {
    // keep reading until closed
  }
  stop = true;
})();
const target = { transport: "udp" as const, hostname: host, port };
const loops = Array.from({ length: 8 }, async (_, k) => {
  let i = k;
  while (!stop) {
    const kind = all[i % 3];
    await socket.send(kind[(i / 3 | 0) % kind.length], target).catch(() => {});
    sent++;
    i += 8;
  }
});
console.log("flooding");
await Promise.all(loops);
console.log(`sent ${sent}`);
socket.close();
