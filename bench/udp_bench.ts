/**
 * Per-datagram cost of the UDP socket adapters on loopback: the batching FFI
 * adapter (`server/_udp_ffi.ts`) against the `Deno.listenDatagram` adapter
 * (the baseline), measured in the same run with 1452-byte datagrams (a
 * full-MTU WireGuard data message).
 *
 * Run: `deno run -A bench/udp_bench.ts [--seconds 1]`
 *
 * - send: the adapter sends bursts of 64 datagrams to a socket nobody reads
 *   (the kernel drops what does not fit); wall time per datagram until the
 *   sends completed (Deno: the send promises resolved; FFI: the microtask
 *   flush ran), and CPU time of this process per datagram. The FFI adapter
 *   runs with UDP GSO (runs of equal datagrams as one message; here 45 + 19
 *   per burst) and without (`sendmmsg` of 64 single datagrams). On loopback
 *   the sender's CPU includes the receive side up to the sink's queue (and
 *   the kernel's re-segmentation of GSO messages for it), as both do.
 * - receive: a separate process blasts datagrams with the FFI adapter; this
 *   process receives with the adapter under test for the given time.
 *   Datagrams received per second, and CPU per received datagram: of the
 *   whole process and of the JS thread alone (the server's bottleneck). The
 *   kernel drops what a receiver cannot take. The FFI adapter receives with
 *   UDP GRO (the blaster's GSO messages arrive whole and are cut apart in
 *   JS) and without; plain and GRO alternate, median of three each.
 * - echo RTT: a python3 client sends a 148-byte datagram and waits for it
 *   to come back, 1000 times, 1 ms apart; the adapter under test echoes it
 *   from its receive callback. A python3 echo server is the baseline (the
 *   kernel's loopback and two plain syscalls); the difference is what an
 *   adapter adds to every request/response (for the FFI adapter: the hop
 *   from the receive thread to the JS thread). Median and p90, median of
 *   three rounds.
 *
 * @module
 */

import process from "node:process";
import { openDenoUdpSocket, type UdpSocket } from "../server/udp.ts";
import { ffiUdpGsoStatus, openFfiUdpSocket } from "../server/_udp_ffi.ts";

const SIZE = 1452;
const BURST = 64;

function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}

/** CPU time (ms) of the whole process. */
function processCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** CPU time (ms) of the calling thread (the JS thread), at 10 ms resolution. */
function threadCpu(): number {
  const fields = Deno.readTextFileSync("/proc/thread-self/stat").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime in 1/100 s
}

interface Measure {
  count: number;
  wall: number;
  cpu: number;
  jsCpu: number;
}

async function measure(count: () => number, run: () => Promise<void>): Promise<Measure> {
  const cpu0 = processCpu();
  const js0 = threadCpu();
  const start = performance.now();
  await run();
  return {
    count: count(),
    wall: performance.now() - start,
    cpu: processCpu() - cpu0,
    jsCpu: threadCpu() - js0,
  };
}

async function sendFfi(n: number, sinkPort: number, gso: boolean): Promise<void> {
  const socket = openFfiUdpSocket({ hostname: "127.0.0.1", port: 0 }, { gso });
  if (socket === null) throw new Error("The FFI adapter is not available here");
  const data = new Uint8Array(SIZE).fill(1);
  const to = { address: "127.0.0.1", port: sinkPort };
  for (let done = 0; done < n; done += BURST) {
    for (let i = 0; i < BURST; i++) socket.send(data, to);
    await Promise.resolve(); // the queued microtask flush runs before this resumes
  }
  const stats = socket.stats();
  const status = ffiUdpGsoStatus(socket)!;
  socket.close();
  if (stats.sent + stats.sendDropped !== n) throw new Error("FFI send count mismatch");
  if (gso && status.segments === 0) throw new Error("GSO was not used (not supported here?)");
}

async function sendDeno(n: number, sinkPort: number): Promise<void> {
  // The Deno adapter's send path with its completion observable: one
  // `conn.send(data.slice(), addr)` per datagram.
  const conn = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const data = new Uint8Array(SIZE).fill(1);
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port: sinkPort };
  for (let done = 0; done < n; done += BURST) {
    const burst: Promise<number>[] = [];
    for (let i = 0; i < BURST; i++) burst.push(conn.send(data.slice(), to));
    await Promise.all(burst);
  }
  conn.close();
}

async function receive(socket: UdpSocket, seconds: number): Promise<Measure> {
  let received = 0;
  let wrongSize = 0;
  const blaster = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--blast", String(socket.addr.port)],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  // Start counting once the blaster is up (first datagram).
  let first!: () => void;
  const started = new Promise<void>((r) => first = r);
  const listening = socket.listen((data) => {
    if (received++ === 0) first();
    if (data.length !== SIZE) wrongSize++;
  });
  await started;
  const result = await measure(() => received, async () => {
    const from = received;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    received -= from;
  });
  blaster.kill("SIGTERM");
  await blaster.status;
  socket.close();
  await listening;
  if (wrongSize > 0) throw new Error(`${wrongSize} datagrams of the wrong size`);
  return result;
}

async function blast(port: number): Promise<void> {
  const socket = openFfiUdpSocket({ hostname: "127.0.0.1", port: 0 })!;
  const data = new Uint8Array(SIZE).fill(7);
  const to = { address: "127.0.0.1", port };
  // A full send ring flushes at once; SIGTERM ends the process.
  for (;;) {
    for (let i = 0; i < BURST * 16; i++) socket.send(data, to);
    await Promise.resolve();
  }
}

function row(name: string, m: Measure): void {
  const rate = m.count / (m.wall / 1000);
  console.log(
    `${name.padEnd(14)} ${(rate / 1000).toFixed(0).padStart(5)} k/s  wall ${
      (m.wall * 1000 / m.count).toFixed(2).padStart(5)
    } µs  cpu ${(m.cpu * 1000 / m.count).toFixed(2).padStart(5)} µs  js-thread ${
      (m.jsCpu * 1000 / m.count).toFixed(2).padStart(5)
    } µs  per datagram`,
  );
}

const ECHO_CLIENT = `
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
data = b"x" * 148
times = []
for i in range(n + 50):
    t0 = time.perf_counter()
    s.sendto(data, ("127.0.0.1", port))
    s.recv(2048)
    if i >= 50: times.append((time.perf_counter() - t0) * 1e6)
    time.sleep(0.001)
times.sort()
print(times[len(times) // 2], times[int(len(times) * 0.9)])
`;

const ECHO_SERVER = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
`;

/** Median and p90 echo round trip (µs) against the UDP port `port`. */
async function echoClient(port: number): Promise<[number, number]> {
  const r = await new Deno.Command("python3", {
    args: ["-c", ECHO_CLIENT, String(port), "1000"],
    stdout: "piped",
  }).output();
  const [median, p90] = new TextDecoder().decode(r.stdout).trim().split(" ").map(Number);
  return [median, p90];
}

/** Echo RTT with `name`'s echo server: "python" (baseline), "deno" or "ffi". */
async function echoRtt(name: string): Promise<[number, number]> {
  if (name === "python") {
    const server = new Deno.Command("python3", { args: ["-c", ECHO_SERVER], stdout: "piped" })
      .spawn();
    const reader = server.stdout.getReader();
    const { value } = await reader.read();
    try {
      return await echoClient(Number(new TextDecoder().decode(value).trim()));
    } finally {
      server.kill();
      await server.status;
      reader.releaseLock();
      await server.stdout.cancel().catch(() => {});
    }
  }
  const socket = name === "deno"
    ? openDenoUdpSocket({ hostname: "127.0.0.1", port: 0 })
    : openFfiUdpSocket({ hostname: "127.0.0.1", port: 0 })!;
  const listening = socket.listen((data, from) => socket.send(data, from));
  try {
    return await echoClient(socket.addr.port);
  } finally {
    socket.close();
    await listening;
  }
}

async function main(): Promise<void> {
  const seconds = flag("--seconds", 1);
  const sink = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const sinkPort = (sink.addr as Deno.NetAddr).port;
  const count = 128 * 1024;

  await sendDeno(8192, sinkPort); // warm-up
  await sendFfi(8192, sinkPort, false);
  await sendFfi(8192, sinkPort, true);
  const denoSend = await measure(() => count, () => sendDeno(count, sinkPort));
  // Plain and GSO alternately, best of three each (less noise from the machine).
  let ffiSend: Measure | undefined;
  let gsoSend: Measure | undefined;
  const better = (a: Measure | undefined, b: Measure) => a === undefined || b.wall < a.wall ? b : a;
  for (let round = 0; round < 3; round++) {
    ffiSend = better(ffiSend, await measure(() => count, () => sendFfi(count, sinkPort, false)));
    gsoSend = better(gsoSend, await measure(() => count, () => sendFfi(count, sinkPort, true)));
  }
  sink.close();
  const denoRecv = await receive(openDenoUdpSocket({ hostname: "127.0.0.1", port: 0 }), seconds);
  const ffiRecvs: Measure[] = [];
  const groRecvs: Measure[] = [];
  for (let round = 0; round < 3; round++) {
    for (const [gro, into] of [[false, ffiRecvs], [true, groRecvs]] as const) {
      const socket = openFfiUdpSocket({ hostname: "127.0.0.1", port: 0 }, { gro })!;
      into.push(await receive(socket, seconds));
    }
  }
  const median = (ms: Measure[]) =>
    ms.toSorted((a, b) => a.cpu / a.count - b.cpu / b.count)[ms.length >> 1];
  const ffiRecv = median(ffiRecvs);
  const groRecv = median(groRecvs);

  const echoNames = ["python", "deno", "ffi"];
  const echoes = new Map<string, [number, number][]>(echoNames.map((n) => [n, []]));
  for (let round = 0; round < 3; round++) {
    for (const name of echoNames) echoes.get(name)!.push(await echoRtt(name));
  }

  console.log(`UDP adapters, ${SIZE}-byte datagrams on loopback (${Deno.build.arch})`);
  row("send deno", denoSend);
  row("send ffi", ffiSend!);
  row("send ffi+gso", gsoSend!);
  row("recv deno", denoRecv);
  row("recv ffi", ffiRecv);
  row("recv ffi+gro", groRecv);
  const ratio = (base: Measure, ours: Measure) => {
    const r = (m: Measure, k: "wall" | "cpu" | "jsCpu") => m[k] / m.count;
    return `rate ${(r(base, "wall") / r(ours, "wall")).toFixed(2)}×, cpu ${
      (r(base, "cpu") / r(ours, "cpu")).toFixed(2)
    }×, js-thread cpu ${(r(base, "jsCpu") / r(ours, "jsCpu")).toFixed(2)}×`;
  };
  console.log(`send ffi vs deno: ${ratio(denoSend, ffiSend!)}`);
  console.log(`send ffi+gso vs ffi: ${ratio(ffiSend!, gsoSend!)}`);
  console.log(`recv ffi vs deno: ${ratio(denoRecv, ffiRecv)}`);
  console.log(`recv ffi+gro vs ffi: ${ratio(ffiRecv, groRecv)}`);
  const mid = (xs: number[]) => xs.toSorted((a, b) => a - b)[xs.length >> 1];
  const baseEcho = mid(echoes.get("python")!.map((e) => e[0]));
  for (const name of echoNames) {
    const runs = echoes.get(name)!;
    const median = mid(runs.map((e) => e[0]));
    console.log(
      `echo RTT ${name.padEnd(7)} median ${median.toFixed(0).padStart(4)} µs, p90 ${
        mid(runs.map((e) => e[1])).toFixed(0).padStart(4)
      } µs (${(median - baseEcho).toFixed(0)} µs over the python3 echo server)`,
    );
  }
  console.log(
    "(recv rates are capped by the blaster when both receivers keep up with it; the CPU " +
      "per datagram is the comparison then. The FFI receive syscall runs off the JS thread.)",
  );
}

if (Deno.args[0] === "--blast") await blast(Number(Deno.args[1]));
else await main();
