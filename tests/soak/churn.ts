/**
 * Connection churn through forward mode: `serve({ forward })` in a child
 * process, an echo service in a target namespace this soak creates, and a
 * client: our own (tests/_client.ts, on loopback; the server in the root
 * namespace, a veth to the target) or a real `wireguard-go` in a client
 * namespace driven by a Python script (the server then in a namespace of
 * its own between the client's and the target's). Each round opens and closes `connections` TCP connections
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
import { createVeth, Netns, WireGuardGo } from "../netns.ts";
import { type ServerProcConfig, ServerProcess, type ServerSample } from "./server_proc.ts";

/**
 * Python: TCP and UDP echo on `argv[1]`:9000. A TCP request starting with
 * `c` is answered and then closed by the service (so the server sees the
 * upstream close first); others are echoed until the client closes.
 */
export const ECHO_PY = String.raw`
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
  /**
   * The server's `releaseMemory.quietMs`: how long after the last close it
   * gives memory back (default `serve()`'s, 60 000). Quiet samples wait for it.
   */
  releaseQuietMs?: number;
  /** `false`: the server leaves the allocator alone (`releaseMemory: false`, as before it existed). */
  releaseMemory?: boolean;
  /** A directory to write heap snapshots of the server to: idle, and after each round. */
  heapSnapshots?: string;
  /** Called after each round's sample. */
  onRound?: (round: ChurnRound) => void;
  /** Who opens the connections: `"ours"` (default) or a real `"wireguard-go"` client. */
  client?: "ours" | "wireguard-go";
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

/** What a round needs of the client side. */
interface ChurnDriver {
  server: ServerProcess;
  /** Opens and closes `connections` connections and `udpFlows` flows; resolves with the failures. */
  round(connections: number, udpFlows: number, concurrency: number): Promise<number>;
}

/** The server's configuration for a soak. */
function serverConfig(
  options: ChurnOptions,
  clientKey: Uint8Array,
  serverKey: Uint8Array,
  hostname?: string,
): ServerProcConfig {
  return {
    privateKey: keyToBase64(serverKey),
    hostname,
    peers: [{ publicKey: keyToBase64(publicKey(clientKey)), allowedIps: ["10.7.0.2/32"] }],
    forward: { connectTimeoutMs: 3000 },
    tcp: options.timeWait === undefined ? undefined : { timeWait: options.timeWait },
    releaseMemory: options.releaseMemory === false
      ? false
      : options.releaseQuietMs === undefined
      ? undefined
      : { quietMs: options.releaseQuietMs },
    limits: options.udpIdleTimeout === undefined
      ? undefined
      : { netstack: { udpIdleTimeout: options.udpIdleTimeout } },
  };
}

/** Our own client on loopback, the server in the root namespace. */
async function ourDriver(
  stack: AsyncDisposableStack,
  options: ChurnOptions,
  target: Netns,
): Promise<{ driver: ChurnDriver; host: string }> {
  const link = stack.use(await createVeth(null, target, { prefix: "ch" }));
  const host = link.b.v4;
  const serverKey = generatePrivateKey();
  const clientKey = generatePrivateKey();
  const server = stack.use(await ServerProcess.start(serverConfig(options, clientKey, serverKey)));
  const client = startTestClient({
    serverPublicKey: publicKey(serverKey),
    serverPort: server.port,
    privateKey: clientKey,
  });
  stack.defer(() => client.close());
  await client.handshake();
  let udpPort = 20_000;
  const round = async (connections: number, udpFlows: number, concurrency: number) => {
    let failures = 0, next = 0, flows = 0;
    const worker = async () => {
      while (next < connections) {
        const n = next++;
        if (!(await oneConnection(client, host, n))) failures++;
        // UDP flows spread evenly over the round's connections.
        while (flows < Math.floor((n + 1) * udpFlows / connections)) {
          oneFlow(client, host, udpPort);
          udpPort = udpPort >= 60_000 ? 20_000 : udpPort + 1;
          flows++;
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    // The client keeps the replies' flows: let them go.
    for (const flow of client.flows.splice(0)) void flow.readable.cancel().catch(() => {});
    return failures;
  };
  return { driver: { server, round }, host };
}

/**
 * Python: the wireguard-go side's client. Opens argv[2] TCP connections to
 * argv[1]:9000 with argv[4] threads, as `oneConnection` does (half closed by
 * the service first, one in 16 reset by the client), and argv[3] UDP flows
 * (a new socket each: a new source port, waiting up to 2 s for the echo);
 * prints the failed connections.
 */
const CLIENT_PY = String.raw`
import socket, struct, sys, threading
host, n, flows, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
state = {"next": 0, "flows": 0, "failures": 0}
def conn(i):
    closes = i % 2 == 0
    req = (b"c" if closes else b"a") + b"a" * 199
    try:
        s = socket.create_connection((host, 9000), timeout=10)
        try:
            s.sendall(req)
            got = 0
            while got < len(req):
                d = s.recv(65536)
                if not d:
                    return False
                got += len(d)
            if i % 16 == 15:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return True
            if not closes:
                s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
            return True
        finally:
            s.close()
    except OSError:
        return False
def flow():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    try:
        u.sendto(b"a" * 200, (host, 9000))
        u.recvfrom(65536)
    except OSError:
        pass
    finally:
        u.close()
def worker():
    while True:
        with lock:
            i = state["next"]
            if i >= n:
                return
            state["next"] += 1
        ok = conn(i)
        with lock:
            if not ok:
                state["failures"] += 1
            todo = max(0, (i + 1) * flows // n - state["flows"])
            state["flows"] += todo
        for _ in range(todo):
            flow()
threads = [threading.Thread(target=worker) for _ in range(conc)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("failures", state["failures"], flush=True)
`;

/** A real wireguard-go client in its own namespace; the server in one between it and the target. */
async function wireguardGoDriver(
  stack: AsyncDisposableStack,
  options: ChurnOptions,
  target: Netns,
  dir: string,
): Promise<{ driver: ChurnDriver; host: string }> {
  const serverNs = stack.use(await Netns.create("chs"));
  const clientNs = stack.use(await Netns.create("chc"));
  const inner = stack.use(await createVeth(serverNs, target, { prefix: "ch" }));
  const outer = stack.use(await createVeth(serverNs, clientNs, { prefix: "ch" }));
  const host = inner.b.v4;
  const serverKey = generatePrivateKey();
  const clientKey = generatePrivateKey();
  const server = stack.use(
    await ServerProcess.start(
      serverConfig(options, clientKey, serverKey, outer.a.v4),
      serverNs.name,
    ),
  );
  const wg = stack.use(await WireGuardGo.start(clientNs));
  await wg.configure({
    privateKey: keyToBase64(clientKey),
    peers: [{
      publicKey: keyToBase64(publicKey(serverKey)),
      endpoint: `${outer.a.v4}:${server.port}`,
      allowedIps: [`${host}/32`],
    }],
  });
  await wg.up({ addresses: ["10.7.0.2/32"], routes: [`${host}/32`] });
  await Deno.writeTextFile(`${dir}/client.py`, CLIENT_PY);
  const round = async (connections: number, udpFlows: number, concurrency: number) => {
    const out = await new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        clientNs.name,
        "python3",
        `${dir}/client.py`,
        host,
        String(connections),
        String(udpFlows),
        String(concurrency),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const m = /failures (\d+)/.exec(new TextDecoder().decode(out.stdout));
    if (!out.success || !m) throw new Error("The wireguard-go side's client failed");
    return Number(m[1]);
  };
  return { driver: { server, round }, host };
}

/** Runs the churn soak; see the module doc. */
export async function churnSoak(options: ChurnOptions): Promise<ChurnResult> {
  await using stack = new AsyncDisposableStack();
  const target = stack.use(await Netns.create("ch"));
  const dir = await Deno.makeTempDir({ prefix: "churn" });
  stack.defer(() => Deno.remove(dir, { recursive: true }));
  const { driver, host } = options.client === "wireguard-go"
    ? await wireguardGoDriver(stack, options, target, dir)
    : await ourDriver(stack, options, target);
  const server = driver.server;
  await Deno.writeTextFile(`${dir}/echo.py`, ECHO_PY);
  const service = new Deno.Command("ip", {
    args: ["netns", "exec", target.name, "python3", `${dir}/echo.py`, host],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  stack.defer(async () => {
    service.kill("SIGKILL");
    await service.status;
  });
  // It prints "ready" once it listens (and nothing after).
  const ready = service.stdout.pipeThrough(new TextDecoderStream()).getReader();
  for (let text = ""; !text.includes("ready");) {
    const { value, done } = await ready.read();
    if (done) throw new Error("The echo service ended before it listened");
    text += value;
  }
  ready.releaseLock();
  // One connection and flow first, so lazily made state (policy, sockets) is in the baseline.
  if (await driver.round(1, 1, 1) !== 0) throw new Error("The first connection failed");
  await new Promise((r) => setTimeout(r, (options.timeWait ?? 60_000) + 2000));
  const idle = await server.sample("reduce");
  const snapshot = (name: string) =>
    options.heapSnapshots && server.snapshot(`${options.heapSnapshots}/${name}.heapsnapshot`);
  await snapshot("idle");

  // Until the timeouts have closed everything, and the server has been
  // quiet long enough to give memory back (and looked: at most every 10 s).
  const releaseQuiet = options.releaseQuietMs ?? 60_000;
  const pause = () =>
    new Promise((r) =>
      setTimeout(
        r,
        Math.max(options.timeWait ?? 60_000, options.udpIdleTimeout ?? 60_000) + releaseQuiet +
          Math.min(10_000, releaseQuiet) + 3000,
      )
    );
  const start = performance.now();
  const rounds: ChurnRound[] = [];
  const concurrency = options.concurrency ?? 64;
  let connections = 0, udpFlows = 0;
  for (let round = 1;; round++) {
    if (options.rounds !== undefined && round > options.rounds) break;
    if (options.minutes !== undefined && performance.now() - start > options.minutes * 60_000) {
      break;
    }
    const failures = await driver.round(options.connections, options.udpFlows, concurrency);
    connections += options.connections;
    udpFlows += options.udpFlows;
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
      r.quiet = await server.sample("reduce");
    }
    rounds.push(r);
    options.onRound?.(r);
  }
  const final = rounds.at(-1)?.quiet ?? (await pause(), await server.sample("reduce"));
  const quiet = rounds.filter((r) => r.quiet !== undefined).slice(1);
  const heapSlope = slope(quiet.map((r) => r.connections), quiet.map((r) => r.quiet!.heapUsed));
  return { idle, rounds, final, heapSlope };
}
