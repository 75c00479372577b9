/**
 * Many WireGuard clients (our own `Device`s, initiators) behind one UDP
 * socket on loopback: datagrams from the server are handed to the client
 * whose index they carry. For soaks that need hundreds of live sessions.
 *
 * @module
 */

import { Device, generatePrivateKey, keyToBase64, publicKey } from "../../wireguard/mod.ts";

/** A crowd of clients of one server. */
export interface ClientCrowd {
  /** The clients' public keys, base64 (to configure the server). */
  readonly publicKeys: string[];
  /** Handshakes completed so far (each client counts once). */
  readonly handshaken: number;
  /**
   * Starts the handshakes, `batch` clients every `everyMs` (staying under the
   * server's load threshold), and resolves when all completed.
   */
  connect(options?: { batch?: number; everyMs?: number; timeoutMs?: number }): Promise<void>;
  /** Closes the socket; the clients go quiet. */
  close(): void;
}

function indexAt(d: Uint8Array, at: number): number {
  return (d[at] | (d[at + 1] << 8) | (d[at + 2] << 16) | (d[at + 3] << 24)) >>> 0;
}

/**
 * `n` clients of the server at 127.0.0.1:`serverPort` with `serverPublicKey`
 * (base64), with the given private keys or fresh ones.
 */
export function clientCrowd(
  n: number,
  serverPublicKey: string,
  serverPort: number,
  privateKeys?: Uint8Array[],
): ClientCrowd {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const now = () => performance.now();
  const byIndex = new Map<number, Device>();
  const done = new Set<Device>();
  const keys = privateKeys ?? Array.from({ length: n }, () => generatePrivateKey());
  let closed = false;
  const devices = keys.map((privateKey) => {
    const device: Device = new Device({
      privateKey,
      wallClock: () => Date.now(),
      sendDatagram(d, to) {
        if (closed) return;
        if (d[0] === 1) byIndex.set(indexAt(d, 4), device); // our sender index
        socket.send(d.slice(), { transport: "udp", hostname: to.address, port: to.port })
          .catch(() => {});
      },
      deliverPacket: () => {},
      onEvent: (e) => {
        if (e.type === "handshake") done.add(device);
      },
    });
    device.addPeer({
      publicKey: Uint8Array.from(atob(serverPublicKey), (c) => c.charCodeAt(0)),
      allowedIps: ["0.0.0.0/0"],
      endpoint: { address: "127.0.0.1", port: serverPort },
    });
    return device;
  });
  (async () => {
    while (!closed) {
      try {
        const [d, from] = await socket.receive();
        const addr = from as Deno.NetAddr;
        const at = d[0] === 2 ? 8 : 4; // response: receiver index after the sender's
        byIndex.get(indexAt(d, at))?.receive(d, { address: addr.hostname, port: addr.port }, now());
      } catch {
        return;
      }
    }
  })();

  return {
    publicKeys: keys.map((k) => keyToBase64(publicKey(k))),
    get handshaken() {
      return done.size;
    },
    async connect({ batch = 100, everyMs = 500, timeoutMs = 120_000 } = {}) {
      const end = now() + timeoutMs;
      let started = 0;
      while (done.size < n) {
        if (now() > end) throw new Error(`${done.size} of ${n} clients completed a handshake`);
        for (const d of devices.slice(started, started + batch)) {
          d.initiate(d.peers().next().value!, now());
        }
        started += batch;
        const until = now() + everyMs;
        while (now() < until && done.size < n) {
          for (const d of devices) if (!done.has(d)) d.poll(now());
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
    close() {
      closed = true;
      socket.close();
    },
  };
}
