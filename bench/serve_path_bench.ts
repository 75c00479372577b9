/**
 * The CPU cost of `serve()`'s own path, without a network: our client
 * (Device + NetStack, tests/_client.ts) and a server joined by an in-memory
 * datagram link that delivers in microtasks, so no socket, timer or other
 * process adds noise. Measures, per operation:
 *
 * - `tcp-open`: a TCP connection from the client's SYN to the server's
 *   `onTcp` (the accept decision, delivery, per-peer tables);
 * - `udp-new-flow`: a datagram that opens a new flow, to the server's
 *   `onUdp` (flow quotas and eviction beyond 1024 flows);
 * - `udp-datagram`: a datagram of an open flow, to the handler's read;
 * - `tcp-forward-open` (and `-immediate`): a connection through
 *   `serve({ forward })` to a listener on loopback (a Python process, so its
 *   accepts are not counted), from the client's SYN to the relay's start:
 *   policy, dial (socket and kernel handshake included), SYN-ACK, relay
 *   set-up; with `synAck: "after-dial"` and `"immediate"`.
 *
 * Times are the process's CPU time (user + system) per operation, so that
 * time the process waits for a core on a shared machine does not count.
 *
 * Run it from two checkouts to compare them (it imports only `serve()` and
 * the test client and memory socket of `tests/`):
 *
 * ```sh
 * deno run -A bench/serve_path_bench.ts            # 5 rounds: medians and best rounds, µs
 * deno run -A bench/serve_path_bench.ts --rounds 9
 * deno run -A bench/serve_path_bench.ts --udp-bytes 1200   # QUIC-sized datagrams
 * ```
 *
 * @module
 */

import { cpuUsage } from "node:process";
import { generatePrivateKey, keyFromBase64, publicKey } from "@wgstack/wireguard";
import { serve, type ServeOptions, type TcpStream, type UdpStream } from "../server/serve.ts";
import { startTestClient } from "../tests/_client.ts";
import { MemorySocket } from "../tests/_memory_socket.ts";

function arg(name: string, fallback: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}

const ROUNDS = arg("--rounds", 5);
/** UDP payload bytes (`--udp-bytes`; 1200 is a QUIC packet's size). */
const UDP_BYTES = arg("--udp-bytes", 64);
const TCP_OPENS = 300;
const UDP_FLOWS = 1500;
const UDP_DATAGRAMS = 5000;
const CLIENT4 = "10.7.0.2";

/** CPU time of the process in ms. */
function cpuMs(): number {
  const u = cpuUsage();
  return (u.user + u.system) / 1000;
}

/** A wait for a count, woken by whoever counts (no timer in the measured path). */
let waiting: (() => void) | undefined;
function counted(): void {
  const wake = waiting;
  waiting = undefined;
  wake?.();
}
async function reach(count: () => number, n: number): Promise<void> {
  while (count() < n) await new Promise<void>((resolve) => waiting = resolve);
}

/** A server with `options` and our client, joined by the in-memory link, after the handshake. */
async function linked(options: Partial<ServeOptions>) {
  // Datagrams arrive in a microtask: no timer in the measured path.
  const serverSocket = new MemorySocket({ address: "192.0.2.1", port: 51820 }, queueMicrotask);
  const clientSocket = new MemorySocket({ address: "192.0.2.2", port: 40000 }, queueMicrotask);
  serverSocket.link(clientSocket);
  const serverKey = generatePrivateKey();
  const clientKey = generatePrivateKey();
  const server = await serve({
    privateKey: serverKey,
    socket: serverSocket,
    peers: [{ publicKey: publicKey(clientKey), allowedIps: [`${CLIENT4}/32`] }],
    shutdownTimeout: 100,
    ...options,
  });
  const client = startTestClient({
    serverPublicKey: keyFromBase64(server.publicKey),
    serverAddress: serverSocket.addr.address,
    serverPort: serverSocket.addr.port,
    privateKey: clientKey,
    socket: clientSocket,
    address4: CLIENT4,
  });
  await client.handshake();
  return { server, client };
}

async function round(): Promise<Record<string, number>> {
  const tcp: TcpStream[] = [];
  let udpFlows = 0;
  let datagrams = 0;
  const { server, client } = await linked({
    onTcp: (s) => {
      tcp.push(s);
      counted();
    },
    onUdp: async (flow: UdpStream) => {
      udpFlows++;
      counted();
      for await (const _ of flow.readable) {
        datagrams++;
        counted();
      }
    },
  });
  const result: Record<string, number> = {};
  const payload = new Uint8Array(UDP_BYTES);
  const target = { address: "192.0.2.53", port: 53 };

  let t = cpuMs();
  for (let i = 0; i < TCP_OPENS; i++) {
    client.connect("192.0.2.80", 1000 + i);
    await reach(() => tcp.length, i + 1);
  }
  result["tcp-open"] = (cpuMs() - t) * 1000 / TCP_OPENS;

  t = cpuMs();
  for (let i = 0; i < UDP_FLOWS; i++) {
    client.sendUdp({ address: CLIENT4, port: 10000 + i }, target, payload);
  }
  await reach(() => udpFlows, UDP_FLOWS);
  result["udp-new-flow"] = (cpuMs() - t) * 1000 / UDP_FLOWS;

  const before = datagrams;
  t = cpuMs();
  for (let i = 0; i < UDP_DATAGRAMS; i++) {
    client.sendUdp({ address: CLIENT4, port: 10000 + UDP_FLOWS - 1 }, target, payload);
    if (i % 32 === 31) await reach(() => datagrams - before, i + 1);
  }
  await reach(() => datagrams - before, UDP_DATAGRAMS);
  result["udp-datagram"] = (cpuMs() - t) * 1000 / UDP_DATAGRAMS;

  for (const s of tcp) s.reset();
  client.close();
  await server.shutdown();
  return result;
}

/** A listener on loopback in another process that accepts and holds connections; its port. */
async function loopbackListener(): Promise<{ port: number; stop: () => Promise<void> }> {
  const child = new Deno.Command("python3", {
    args: [
      "-c",
      `import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4096)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept(); held.append(c)
    if len(held) > 2000: held.pop(0).close()`,
    ],
    stdout: "piped",
    stderr: "null",
    stdin: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the loopback listener did not start (python3 needed)");
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return {
    port: Number(text.trim()),
    stop: async () => {
      child.kill("SIGKILL");
      await child.stdout.cancel().catch(() => {});
      await child.status;
    },
  };
}

/** `tcp-forward-open`: connections through the forwarder to `port` on loopback. */
async function forwardRound(port: number, synAck: "after-dial" | "immediate"): Promise<number> {
  let opened = 0;
  const { server, client } = await linked({
    forward: { rules: [{ action: "allow", cidr: "127.0.0.1/32" }], synAck, sniff: false },
    logger: (r) => {
      if (r.event === "tcp-open") {
        opened++;
        counted();
      }
    },
  });
  const conns = [];
  const t = cpuMs();
  for (let i = 0; i < TCP_OPENS; i++) {
    conns.push(client.connect("127.0.0.1", port));
    await reach(() => opened, i + 1);
  }
  const perOpen = (cpuMs() - t) * 1000 / TCP_OPENS;
  for (const c of conns) c.reset();
  client.close();
  await server.shutdown();
  return perOpen;
}

const listener = await loopbackListener();
const rounds: Record<string, number>[] = [];
const fullRound = async () => {
  const r = await round();
  r["tcp-forward-open"] = await forwardRound(listener.port, "after-dial");
  r["tcp-forward-open-immediate"] = await forwardRound(listener.port, "immediate");
  return r;
};
await fullRound(); // warm-up (JIT)
for (let i = 0; i < ROUNDS; i++) rounds.push(await fullRound());
await listener.stop();
const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)];
// Medians, and the best round of each (the least disturbed by other work on the machine).
const out: Record<string, number> = {};
for (const key of Object.keys(rounds[0])) {
  const values = rounds.map((r) => r[key]);
  out[key] = Math.round(median(values) * 100) / 100;
  out[`${key}-best`] = Math.round(Math.min(...values) * 100) / 100;
}
console.log(JSON.stringify(out));
