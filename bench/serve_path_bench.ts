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
 * - `udp-datagram`: a datagram of an open flow, to the handler's read.
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
 * ```
 *
 * @module
 */

import { cpuUsage } from "node:process";
import { generatePrivateKey, keyFromBase64, publicKey } from "@wgstack/wireguard";
import { serve, type TcpStream, type UdpStream } from "../server/serve.ts";
import { startTestClient } from "../tests/_client.ts";
import { MemorySocket } from "../tests/_memory_socket.ts";

function arg(name: string, fallback: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}

const ROUNDS = arg("--rounds", 5);
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

async function round(): Promise<Record<string, number>> {
  // Datagrams arrive in a microtask: no timer in the measured path.
  const serverSocket = new MemorySocket({ address: "192.0.2.1", port: 51820 }, queueMicrotask);
  const clientSocket = new MemorySocket({ address: "192.0.2.2", port: 40000 }, queueMicrotask);
  serverSocket.link(clientSocket);
  const serverKey = generatePrivateKey();
  const clientKey = generatePrivateKey();
  const tcp: TcpStream[] = [];
  let udpFlows = 0;
  let datagrams = 0;
  const server = await serve({
    privateKey: serverKey,
    socket: serverSocket,
    peers: [{ publicKey: publicKey(clientKey), allowedIps: [`${CLIENT4}/32`] }],
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
    shutdownTimeout: 100,
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
  const result: Record<string, number> = {};
  const payload = new Uint8Array(64);
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

const rounds: Record<string, number>[] = [];
await round(); // warm-up (JIT)
for (let i = 0; i < ROUNDS; i++) rounds.push(await round());
const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)];
// Medians, and the best round of each (the least disturbed by other work on the machine).
const out: Record<string, number> = {};
for (const key of Object.keys(rounds[0])) {
  const values = rounds.map((r) => r[key]);
  out[key] = Math.round(median(values) * 100) / 100;
  out[`${key}-best`] = Math.round(Math.min(...values) * 100) / 100;
}
console.log(JSON.stringify(out));
