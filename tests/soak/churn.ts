/**
 * Connection churn through forward mode: `serve({ forward })` in a child
 * process, our own client (tests/_client.ts) on loopback, and an echo
 * service in a target namespace this soak creates (a veth from the root
 * namespace). Each round opens and closes `connections` TCP connections
 * (`concurrency` at a time; half closed by the client first, half by the
 * service, one in 16 reset by the client) and `udpFlows` UDP flows, then
 * samples the server (RSS and heap after a GC, tables). After the last
 * round, once TIME_WAIT and the UDP idle timeout have passed, every table
 * must be back to its idle size.
 *
 * Root and network namespaces needed (see tests/netns.ts).
 *
 * @module
 */

import { generatePrivateKey, keyToBase64, publicKey } from "../../wireguard/mod.ts";
import { startTestClient, type TestClient } from "../_client.ts";
import { createVeth, Netns } from "../netns.ts";
import { waitForTcp } from "../_services.ts";
import { ServerProcess, type ServerSample } from "./server_proc.ts";

/**
 * Python: TCP and UDP echo on `argv[1]`:9000. A TCP request starting with
 * `c` is answered and then closed by the service (so the server sees the
 * upstream close first); others are echoed until the client closes.
 */
const ECHO_PY = String.raw`
import selectors, socket, sys
sel = selectors.DefaultSelector()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9000))
s.listen(4096)
s.setblocking(False)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((sys.argv[1], 9000))
u.setblocking(False)
sel.register(s, selectors.EVENT_READ)
sel.register(u, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        f = key.fileobj
        if f is s:
            try:
                c, _ = s.accept()
                sel.register(c, selectors.EVENT_READ)
            except OSError:
                pass
        elif f is u:
            try:
                data, addr = u.recvfrom(65535)
                u.sendto(data, addr)
            except OSError:
                pass
        else:
            try:
                data = f.recv(65536)
            except OSError:
                data = b""
            if data:
                try:
                    f.sendall(data)
                except OSError:
                    data = b""
            if not data or data[:1] == b"c":
                sel.unregister(f)
                f.close()
`;

/** Options of {@linkcode churnSoak}. */
export interface ChurnOptions {
  /** TCP connections per round. */
  connections: number;
  /** UDP flows per round. */
  udpFlows: number;
  /** Rounds; or run until `minutes` have passed. */
  rounds?: number;
  /** Keep starting rounds until this much time has passed. */
  minutes?: number;
  /** Connections open at once. */
  concurrency?: number;
  /** Server TIME_WAIT (ms); default 60 000 as in production. */
  timeWait?: number;
  /** Server UDP flow idle timeout (ms); default 60 000. */
  udpIdleTimeout?: number;
  /**
   * Every this many rounds, wait for TIME_WAIT and the UDP idle timeout to
   * pass and take a quiet sample (default 1: after every round).
   */
  quiesceEvery?: number;
  /** A directory to write heap snapshots of the server to: idle, and after each round. */
  heapSnapshots?: string;
  /** Called after each round's sample. */
  onRound?: (round: ChurnRound) => void;
}

/** One round's totals and the server sample after it. */
export interface ChurnRound {
  /** 1-based. */
  round: number;
  /** TCP connections completed so far (all rounds). */
  connections: number;
  /** UDP flows completed so far. */
  udpFlows: number;
  /** Connections that failed (not echoed back) this round. */
  failures: number;
  /** The server after the round. */
  sample: ServerSample;
  /** The server after the round and the timeouts, when this round was followed by a pause. */
  quiet?: ServerSample;
  /** Seconds since the start. */
  seconds: number;
}

/** What {@linkcode churnSoak} measured. */
export interface ChurnResult {
  /** The server idle before the first round (handshake done). */
  idle: ServerSample;
  /** After each round. */
  rounds: ChurnRound[];
  /** After the last round and the timeouts: back to idle? */
  final: ServerSample;
  /**
   * Heap growth per connection (bytes): the least-squares slope of the quiet
   * samples' heap against connections opened, the first quiet sample (warm-up)
   * left out; `NaN` with fewer than two.
   */
  heapSlope: number;
}

/** The least-squares slope of `ys` against `xs`. */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b) / n, my = ys.reduce((a, b) => a + b) / n;
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return num / den;
}

const PAYLOAD = new Uint8Array(200).fill(0x61);

async function oneConnection(client: TestClient, host: string, n: number): Promise<boolean> {
  const conn = client.connect(host, 9000);
  const writer = conn.writable.getWriter();
  const reader = conn.readable.getReader();
  try {
    const request = PAYLOAD.slice();
    const serviceCloses = n % 2 === 0;
    request[0] = serviceCloses ? 0x63 : 0x61; // 'c': the service closes first
    await writer.write(request);
    let got = 0;
    while (got < request.length) {
      const { value, done } = await reader.read();
      if (done) return false;
      got += value.length;
    }
    if (n % 16 === 15) {
      conn.reset();
      return true;
    }
    if (!serviceCloses) await writer.close();
    while (!(await reader.read()).done) { /* until FIN */ }
    if (serviceCloses) await writer.close();
    return true;
  } catch {
    return false;
  }
}

function oneFlow(client: TestClient, host: string, port: number): void {
  client.sendUdp({ address: "10.7.0.2", port }, { address: host, port: 9000 }, PAYLOAD);
}

/** Runs the churn soak; see the module doc. */
export async function churnSoak(options: ChurnOptions): Promise<ChurnResult> {
  await using stack = new AsyncDisposableStack();
  const target = stack.use(await Netns.create("ch"));
  const link = stack.use(await createVeth(null, target, { prefix: "ch" }));
  const host = link.b.v4;
  const dir = await Deno.makeTempDir({ prefix: "churn" });
  stack.defer(() => Deno.remove(dir, { recursive: true }));
  await Deno.writeTextFile(`${dir}/echo.py`, ECHO_PY);
  const service = new Deno.Command("ip", {
    args: ["netns", "exec", target.name, "python3", `${dir}/echo.py`, host],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  stack.defer(async () => {
    service.kill("SIGKILL");
    await service.status;
  });
  await waitForTcp("the echo service", host, 9000);

  const serverKey = generatePrivateKey();
  const clientKey = generatePrivateKey();
  const server = stack.use(
    await ServerProcess.start({
      privateKey: keyToBase64(serverKey),
      peers: [{ publicKey: keyToBase64(publicKey(clientKey)), allowedIps: ["10.7.0.2/32"] }],
      forward: { connectTimeoutMs: 3000 },
      tcp: options.timeWait === undefined ? undefined : { timeWait: options.timeWait },
      limits: options.udpIdleTimeout === undefined
        ? undefined
        : { netstack: { udpIdleTimeout: options.udpIdleTimeout } },
    }),
  );
  const client = startTestClient({
    serverPublicKey: publicKey(serverKey),
    serverPort: server.port,
    privateKey: clientKey,
  });
  stack.defer(() => client.close());
  await client.handshake();
  // One connection and flow first, so lazily made state (policy, sockets) is in the baseline.
  await oneConnection(client, host, 1);
  await new Promise((r) => setTimeout(r, (options.timeWait ?? 60_000) + 2000));
  const idle = await server.sample();
  const snapshot = (name: string) =>
    options.heapSnapshots && server.snapshot(`${options.heapSnapshots}/${name}.heapsnapshot`);
  await snapshot("idle");

  const pause = () =>
    new Promise((r) =>
      setTimeout(r, Math.max(options.timeWait ?? 60_000, options.udpIdleTimeout ?? 60_000) + 3000)
    );
  const start = performance.now();
  const rounds: ChurnRound[] = [];
  const concurrency = options.concurrency ?? 64;
  let connections = 0, udpFlows = 0, udpPort = 20_000;
  for (let round = 1;; round++) {
    if (options.rounds !== undefined && round > options.rounds) break;
    if (options.minutes !== undefined && performance.now() - start > options.minutes * 60_000) {
      break;
    }
    let failures = 0, next = 0, flows = 0;
    const worker = async () => {
      while (next < options.connections) {
        const n = next++;
        if (!(await oneConnection(client, host, n))) failures++;
        // UDP flows spread evenly over the round's connections.
        while (flows < Math.floor((n + 1) * options.udpFlows / options.connections)) {
          oneFlow(client, host, udpPort);
          udpPort = udpPort >= 60_000 ? 20_000 : udpPort + 1;
          flows++;
          udpFlows++;
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    connections += options.connections;
    // The client keeps the replies' flows: let them go.
    for (const flow of client.flows.splice(0)) void flow.readable.cancel().catch(() => {});
    const r: ChurnRound = {
      round,
      connections,
      udpFlows,
      failures,
      sample: await server.sample(),
      seconds: (performance.now() - start) / 1000,
    };
    await snapshot(`round${round}`);
    const last = (options.rounds !== undefined && round === options.rounds) ||
      (options.minutes !== undefined && performance.now() - start > options.minutes * 60_000);
    if (last || round % (options.quiesceEvery ?? 1) === 0) {
      await pause();
      r.quiet = await server.sample();
    }
    rounds.push(r);
    options.onRound?.(r);
  }
  const final = rounds.at(-1)?.quiet ?? (await pause(), await server.sample());
  const quiet = rounds.filter((r) => r.quiet !== undefined).slice(1);
  const heapSlope = slope(quiet.map((r) => r.connections), quiet.map((r) => r.quiet!.heapUsed));
  return { idle, rounds, final, heapSlope };
}
