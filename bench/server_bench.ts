/**
 * Throughput and latency of `serve()` in forward mode against `wireguard-go`
 * with kernel IP forwarding, measured in the same run.
 *
 * Run (root, Linux; needs wireguard-go, wg, ip, iperf3, curl, python3):
 *
 * ```sh
 * deno run -A bench/server_bench.ts              # ~10 s per iperf3 run
 * deno run -A bench/server_bench.ts --seconds 3  # shorter
 * deno run -A bench/server_bench.ts --only baseline   # or: --only ours
 * deno run -A bench/server_bench.ts --metrics upload,download   # also: http, latency, ping
 * deno run -A bench/server_bench.ts --runs 3 --seconds 5   # alternating runs, medians
 * deno run -A bench/server_bench.ts --metrics latency,ping --breakdown
 *   # also: where the time goes inside our server, stage by stage
 * deno run -A bench/server_bench.ts --metrics latency --connect-gap 200 --connects 50
 * deno run -A bench/server_bench.ts --metrics latency --warmup 5
 *   # connects of a server just started (default: after 1000 untimed ones)
 *   # connections 200 ms apart: each one finds both servers idle (cold caches)
 * deno run -A bench/server_bench.ts --metrics latency --syn-ack immediate
 *   # our forwarder answers SYNs before dialling (ForwardOptions.synAck)
 * deno run -A bench/server_bench.ts --rmem 4194304   # UDP receive buffer default in S
 * WGSTACK_TCP_CC=bbr deno run -A bench/server_bench.ts   # our TCP's congestion controller
 * deno run -A bench/server_bench.ts --only ours --metrics upload --profile /tmp/prof
 *   # our server runs with --cpu-prof; the .cpuprofile lands in /tmp/prof
 *   # (WGSTACK_BENCH_PROFILE_INTERVAL=50: one sample per 50 µs)
 * deno run -A bench/server_bench.ts --metrics latency --runs 3 --stages
 *   # where each connect's time goes, both servers: packet captures at the
 *   # client's tunnel, the client's veth and the server's (needs tshark;
 *   # see bench/_connect_stages.ts)
 * deno run -A bench/server_bench.ts --metrics latency,ping --runs 5 --pin
 *   # the client's processes on CPU 1, the server's and the target's on CPU 0
 *   # (as if the client had a machine of its own)
 * deno run -A bench/server_bench.ts --metrics latency --latency-trace /tmp/t.txt
 *   # one line per timed connect: start (monotonic ns), connect ns, total ns,
 *   # start (wall clock ns): to line up with `perf sched record -k mono`
 *   # (appended: every run of both servers in turn; `--only` for one of them)
 * ```
 *
 * Our server process also reads, for diagnosis: `WGSTACK_BENCH_V8_FLAGS`
 * (passed as `--v8-flags`, e.g. `--trace-gc`; its output line-buffered),
 * `WGSTACK_BENCH_SERVER_LOG=FILE` (its whole output, written when it stops),
 * `WGSTACK_BENCH_TIME_WAIT=N` (the netstack's TIME_WAIT limit) and the heap
 * signals of `bench/_heap_signals.ts`.
 *
 * Topology (all inside namespaces this script creates, deleted at the end;
 * namespaces and interfaces are named `wgb…`, or `WGSTACK_BENCH_PREFIX…` to
 * run two at once, with `WGSTACK_NETNS_PREFIX` in front of both, e.g.
 * `WGSTACK_NETNS_PREFIX=l10` gives `l10wgbc-…` and `l10wgbws`):
 *
 * ```
 *  C (client)                         S (server)                       T (target)
 *  wg0 192.0.2.2 ──udp── wireguard-go :51820 wg0 192.0.2.1 ─ip_forward─┐
 *  wg1 192.0.2.6 ──udp── ours :51821 (serve + cli Forwarder, Deno.connect)─veth─ 198.18.0.10 (via wg0)
 *  iperf3 -c, curl, py                                                   198.18.0.20 (via wg1)
 *                                                                         iperf3 -s, http.server, py
 * ```
 *
 * Both client interfaces are wireguard-go in namespace C with MTU 1420. The
 * target has two addresses: traffic to 198.18.0.10 goes through the
 * wireguard-go server and the kernel's forwarding, traffic to 198.18.0.20
 * through our server, which dials the destination with `Deno.connect` (the
 * CLI's `Forwarder`) and pipes both ways. Each metric is measured for both
 * paths in the same run, one after the other, and printed with the ratio
 * ours / wireguard-go (for times: wireguard-go / ours, so > 1 is always
 * better for us).
 *
 * Run with `--serve CONFIG_JSON` (done by the script itself inside S) it is
 * the server process instead.
 *
 * @module
 */

import type { UdpSocket } from "../server/udp.ts";
import {
  captureStages,
  quantile,
  type StagePoints,
  type StageReport,
  STAGES,
  stagesAvailable,
} from "./_connect_stages.ts";
import { installHeapSignals } from "./_heap_signals.ts";
import { createVeth, Netns, run, waitFor, wgGenKeyPair, WireGuardGo } from "../tests/netns.ts";

/** Namespace/interface prefix (`WGSTACK_BENCH_PREFIX` to run two at once). */
const PREFIX = Deno.env.get("WGSTACK_BENCH_PREFIX") ?? "wgb";
/** Interface names inside the namespaces carry `WGSTACK_NETNS_PREFIX` too (as the namespaces do). */
const IFACE_PREFIX = (Deno.env.get("WGSTACK_NETNS_PREFIX") ?? "") + PREFIX;
const TARGET_BASE = "198.18.0.10";
const TARGET_OURS = "198.18.0.20";
const HTTP_PORT = 8080;
const LAT_PORT = 7000;
const HTTP_SIZE = 50 * 1024 * 1024;

interface ServeConfig {
  privateKey: string;
  hostname: string;
  port: number;
  peerPublicKey: string;
  peerAddress: string;
  tunnelAddress: string;
  /** Time the stages of each packet's way through the server (see {@linkcode Breakdown}). */
  breakdown?: boolean;
  /** The forwarder's `synAck` mode. */
  synAck?: "after-dial" | "immediate";
}

/**
 * Where the time goes inside the server, from its public hooks only: a
 * wrapper around the UDP socket (datagram handed to `serve()`, datagram
 * handed back to the socket) and the `onPacket` tap (inner packet after
 * decryption, inner packet before encryption); the forwarder's dials are
 * timed by its own histogram (`stats().forward.dialSeconds`, printed as a
 * mean). Stages, in ms:
 *
 * - ICMP echo: datagram in → decrypted, decrypted → reply out of the
 *   netstack, reply → encrypted datagram handed to the socket;
 * - TCP SYN → SYN-ACK: datagram in → decrypted, decrypted → SYN-ACK out of
 *   the netstack (policy, dial, accept), SYN-ACK → handed to the socket, →
 *   flushed to the OS (the server flushes after a SYN-ACK);
 * - TCP request → response: the client's first data segment decrypted →
 *   first data segment back out of the netstack (relay, upstream write,
 *   the target's answer, upstream read).
 *
 * What is not here (kernel → JS wake-up, the socket's flush, the network,
 * the client) is the client's RTT minus these.
 */
class Breakdown {
  readonly samples = new Map<string, number[]>();
  #recvAt = 0;
  #echoIn = -1;
  #echoRecv = 0;
  #echoOut = -1;
  readonly #syns = new Map<string, { recv: number; decrypted: number }>();
  readonly #synAckOut = new Map<string, number>();
  readonly #requests = new Map<string, number>();
  #lastSynKey = "";

  #add(name: string, ms: number): void {
    let list = this.samples.get(name);
    if (!list) this.samples.set(name, list = []);
    if (list.length < 100_000) list.push(ms);
  }

  received(): void {
    this.#recvAt = performance.now();
  }

  packet(p: Uint8Array, direction: "in" | "out"): void {
    const t = performance.now();
    if (p.length < 20 || p[0] >> 4 !== 4) return;
    const ihl = (p[0] & 15) * 4;
    if (p[9] === 1 && p.length >= ihl + 8) {
      if (direction === "in" && p[ihl] === 8) {
        this.#echoIn = t;
        this.#echoRecv = this.#recvAt;
        this.#add("icmp echo: datagram in → decrypted", t - this.#recvAt);
      } else if (direction === "out" && p[ihl] === 0 && this.#echoIn >= 0) {
        this.#add("icmp echo: decrypted → reply out of netstack", t - this.#echoIn);
        this.#echoOut = t;
        this.#echoIn = -1;
      }
      return;
    }
    if (p[9] !== 6 || p.length < ihl + 20) return;
    const flags = p[ihl + 13];
    const payload = p.length - ihl - ((p[ihl + 12] >> 4) * 4);
    const a = `${p[12]}.${p[13]}.${p[14]}.${p[15]}:${(p[ihl] << 8) | p[ihl + 1]}`;
    const b = `${p[16]}.${p[17]}.${p[18]}.${p[19]}:${(p[ihl + 2] << 8) | p[ihl + 3]}`;
    const key = direction === "in" ? `${a}>${b}` : `${b}>${a}`; // client → server
    if (direction === "in") {
      if ((flags & 0x12) === 0x02) {
        this.#syns.set(key, { recv: this.#recvAt, decrypted: t });
        this.#lastSynKey = key;
        this.#add("tcp SYN: datagram in → decrypted", t - this.#recvAt);
      } else if (payload > 0 && !this.#requests.has(key) && !this.#synAckOut.has(key)) {
        this.#requests.set(key, t);
      }
      return;
    }
    const syn = this.#syns.get(key);
    if ((flags & 0x12) === 0x12 && syn) {
      this.#syns.delete(key);
      this.#add("tcp SYN: SYN in → SYN-ACK out (all)", t - syn.decrypted);
      this.#synAckOut.set(key, t);
      return;
    }
    this.#synAckOut.delete(key);
    const request = this.#requests.get(key);
    if (request !== undefined && payload > 0) {
      this.#requests.set(key, Infinity); // only the first response segment
      this.#add("tcp request decrypted → response out (relay + upstream)", t - request);
    }
    if (flags & 0x05) this.#requests.delete(key); // FIN or RST: forget the connection
  }

  sent(): void {
    const t = performance.now();
    if (this.#echoOut >= 0) {
      this.#add("icmp echo: reply out → handed to the socket", t - this.#echoOut);
      this.#add("icmp echo: datagram in → reply handed to the socket (all)", t - this.#echoRecv);
      this.#echoOut = -1;
    }
    for (const [key, at] of this.#synAckOut) {
      this.#add("tcp SYN: SYN-ACK out → handed to the socket", t - at);
      this.#synAckOut.delete(key);
      this.#synAckQueued.set(key, at);
    }
  }

  readonly #synAckQueued = new Map<string, number>();

  /** The socket was asked to flush (the server does after a SYN-ACK). */
  flushed(): void {
    const t = performance.now();
    for (const [key, at] of this.#synAckQueued) {
      this.#add("tcp SYN: SYN-ACK out → flushed to the OS (explicit flush)", t - at);
      this.#synAckQueued.delete(key);
    }
  }

  report(): Record<string, { n: number; median: number; p90: number }> {
    const out: Record<string, { n: number; median: number; p90: number }> = {};
    for (const [name, list] of [...this.samples].sort(([x], [y]) => x.localeCompare(y))) {
      list.sort((x, y) => x - y);
      out[name] = {
        n: list.length,
        median: list[list.length >> 1],
        p90: list[Math.min(list.length - 1, Math.floor(list.length * 0.9))],
      };
    }
    return out;
  }
}

// ---------------------------------------------------------------------------
// Server mode (inside namespace S)
// ---------------------------------------------------------------------------

async function serveMode(config: ServeConfig): Promise<void> {
  const { serve } = await import("../server/serve.ts");
  const { openUdpSocket } = await import("../server/udp.ts");
  const breakdown = config.breakdown ? new Breakdown() : undefined;
  // Opened here (as serve() would) so that its GSO/GRO counters can be printed at the end.
  const inner = await openUdpSocket({ hostname: config.hostname, port: config.port });
  let socket: UdpSocket = inner;
  if (breakdown) {
    socket = {
      addr: inner.addr,
      listen: (onDatagram) =>
        inner.listen((data, from) => {
          breakdown.received();
          onDatagram(data, from);
        }),
      send: (data, to) => {
        breakdown.sent();
        inner.send(data, to);
      },
      flush: () => {
        inner.flush?.();
        breakdown.flushed();
      },
      stats: () => inner.stats(),
      close: () => inner.close(),
    };
  }
  const ac = new AbortController();
  const onTerm = () => ac.abort();
  Deno.addSignalListener("SIGTERM", onTerm);
  const cc = Deno.env.get("WGSTACK_TCP_CC");
  const timeWait = Deno.env.get("WGSTACK_BENCH_TIME_WAIT");
  const server = await serve({
    privateKey: config.privateKey,
    hostname: config.hostname,
    port: config.port,
    peers: [{ publicKey: config.peerPublicKey, allowedIps: [`${config.peerAddress}/32`] }],
    forward: { localAddresses: [config.tunnelAddress], synAck: config.synAck },
    socket,
    onPacket: breakdown ? (packet, direction) => breakdown.packet(packet, direction) : undefined,
    tcp: cc ? { congestionControl: cc as "cubic" | "newreno" | "bbr" } : undefined,
    signal: ac.signal,
    shutdownTimeout: 500,
    limits: timeWait === undefined ? undefined : { netstack: { tcpTimeWait: Number(timeWait) } },
  });
  await installHeapSignals();
  console.log(JSON.stringify({ ready: server.addr }));
  // Counters on stdin EOF / signal help spot drops when a number looks off.
  await server.finished;
  Deno.removeSignalListener("SIGTERM", onTerm);
  const { ffiDialStats } = await import("../server/_dial_ffi.ts");
  const { ffiUdpGroStatus, ffiUdpGsoStatus } = await import("../server/_udp_ffi.ts");
  const gso = ffiUdpGsoStatus(inner);
  const gro = ffiUdpGroStatus(inner);
  console.error(JSON.stringify({ stats: server.stats(), dials: ffiDialStats(), gso, gro }));
  if (breakdown) console.error(JSON.stringify({ breakdown: breakdown.report() }));

  // Ends the process the normal way, so that --cpu-prof writes its profile.
}

// ---------------------------------------------------------------------------
// Helper processes
// ---------------------------------------------------------------------------

/** A background child; killed (by its own pid) on stop. */
class Child {
  #child: Deno.ChildProcess;
  #out = "";
  #done: Promise<void>;
  constructor(argv: string[], env?: Record<string, string>) {
    this.#child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      env,
    }).spawn();
    const collect = async (s: ReadableStream<Uint8Array>) => {
      const dec = new TextDecoder();
      for await (const c of s) this.#out += dec.decode(c, { stream: true });
    };
    this.#done = Promise.all([collect(this.#child.stdout), collect(this.#child.stderr)]).then(
      () => {},
    );
  }
  get output(): string {
    return this.#out;
  }
  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // gone
    }
    const t = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // gone
      }
    }, 3000);
    await this.#child.status;
    clearTimeout(t);
    await this.#done;
  }
}

const LATENCY_SERVER = `
import socket, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(512)
print("ready", flush=True)
def handle(c):
    try:
        buf = b""
        while len(buf) < 64:
            d = c.recv(64 - len(buf))
            if not d: break
            buf += d
        c.sendall(b"r" * 256)
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
`;

const LATENCY_CLIENT = `
import socket, sys, time, json
host, port, n, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) / 1000
warmup = int(sys.argv[5])
trace = open(sys.argv[6], "a") if len(sys.argv) > 6 and sys.argv[6] else None
times, connects = [], []
for i in range(n + warmup):
    t0 = time.perf_counter()
    c = socket.create_connection((host, port), timeout=10)
    t1 = time.perf_counter()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(b"q" * 64)
    got = 0
    while got < 256:
        d = c.recv(4096)
        if not d: raise SystemExit("short response")
        got += len(d)
    t2 = time.perf_counter()
    c.close()
    if i >= warmup:
        times.append((t2 - t0) * 1000)
        connects.append((t1 - t0) * 1000)
        if trace: trace.write("%d %d %d %d\\n" % (t0 * 1e9, (t1 - t0) * 1e9, (t2 - t0) * 1e9, (time.time() - (time.perf_counter() - t0)) * 1e9))
    if gap and i >= warmup - 1: time.sleep(gap)
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]
print(json.dumps({"median": pct(times, 0.5), "p99": pct(times, 0.99),
                  "connectMedian": pct(connects, 0.5), "connectP99": pct(connects, 0.99),
                  "connects": [round(c, 4) for c in connects]}))
`;

// ---------------------------------------------------------------------------
// Measurements (run in namespace C)
// ---------------------------------------------------------------------------

/** UDP counters of a namespace (/proc/net/snmp): receive-buffer overflows show up as RcvbufErrors. */
async function udpSnmp(ns: Netns): Promise<Record<string, number>> {
  const text = (await ns.run(["cat", "/proc/net/snmp"])).stdout;
  const [names, values] = text.split("\n").filter((l) => l.startsWith("Udp:"));
  const keys = names.split(/\s+/).slice(1);
  const nums = values.split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(keys.map((k, i) => [k, nums[i]]));
}

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** CPU seconds (user + system) used so far by every process in namespace `ns`. */
async function nsCpuSeconds(ns: Netns): Promise<number> {
  const pids = (await run(["ip", "netns", "pids", ns.name])).stdout.trim().split(/\s+/);
  let ticks = 0;
  for (const pid of pids) {
    if (!pid) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch {
      // exited meanwhile
    }
  }
  return ticks / CLOCK_TICKS;
}

/**
 * Throughput in Mbit/s, and the server namespace's CPU seconds per GB moved
 * (a load-independent cost: wall-clock throughput on a shared 2-core machine
 * swings with what else runs; CPU per byte much less).
 */
async function iperf(
  ns: Netns,
  target: string,
  seconds: number,
  reverse: boolean,
  server: Netns,
): Promise<{ mbps: number; cpuPerGB: number }> {
  const args = ["iperf3", "-c", target, "-t", String(seconds), "-J", "-O", "1"];
  if (reverse) args.push("-R");
  const cpuBefore = await nsCpuSeconds(server);
  const r = await ns.run(pinned(args), { check: false });
  const cpu = await nsCpuSeconds(server) - cpuBefore;
  let json;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    throw new Error(`iperf3 to ${target} printed no JSON: ${r.stderr}\n${r.stdout}`);
  }
  if (json.error) throw new Error(`iperf3 to ${target}: ${json.error}`);
  const bytes = json.end.sum_received.bytes as number;
  return { mbps: json.end.sum_received.bits_per_second / 1e6, cpuPerGB: cpu / (bytes / 1e9) };
}

async function httpDownload(ns: Netns, target: string): Promise<number> {
  const r = await ns.run(pinned([
    "curl",
    "-sS",
    "-o",
    "/dev/null",
    "--max-time",
    "120",
    "-w",
    "%{time_total} %{size_download}",
    `http://${target}:${HTTP_PORT}/blob`,
  ]));
  const [time, size] = r.stdout.trim().split(" ").map(Number);
  if (size !== HTTP_SIZE) {
    throw new Error(`curl from ${target} got ${size} bytes, not ${HTTP_SIZE}`);
  }
  return time * 1000;
}

/** ICMP echo (raw socket, root; no ping binary needed): prints the median RTT in ms. */
const PING_CLIENT = `
import socket, struct, sys, time, os
host, count = sys.argv[1], int(sys.argv[2])
def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2)
ident, times = os.getpid() & 0xffff, []
for seq in range(count + 1):
    payload = b"w" * 56
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, seq) + payload
    t0 = time.perf_counter()
    s.sendto(packet, (host, 0))
    while True:
        data = s.recv(2048)
        ihl = (data[0] & 15) * 4
        typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if typ == 0 and rid == ident and rseq == seq: break
    if seq > 0: times.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.02)
times.sort()
print(times[len(times) // 2])
`;

/** Median ping RTT (ms) of `count` echo requests 20 ms apart (after one unmeasured). */
async function ping(ns: Netns, target: string, count: number): Promise<number> {
  const r = await ns.run(pinned(["python3", "-c", PING_CLIENT, target, String(count)]));
  return Number(r.stdout.trim());
}

/**
 * Connections per latency measurement, the pause after each (ms), and the
 * untimed connections before them (`--connects`, `--connect-gap`,
 * `--warmup`). The warm-up gives steady-state figures: V8 optimises our
 * connection path only after some hundreds of connections (measured on this
 * VM, SYN → SYN-ACK inside the server: ~115 µs over the first 200, ~75 µs
 * after 1,500); `--warmup 5` measures a server that has just started.
 */
const latencyPlan = { connects: 200, gapMs: 0, warmup: 1000, trace: "" };

/**
 * `--pin`: the client's processes run on CPU 1 only, the server's and the
 * target's on CPU 0 (both servers alike), so the client never waits for a
 * core the server or the target holds, as with a client on its own machine.
 */
let clientCpu: string | undefined;

/** `argv` of a client program, pinned to the client's CPU with `--pin`. */
function pinned(argv: string[]): string[] {
  return clientCpu === undefined ? argv : ["taskset", "-c", clientCpu, ...argv];
}

/** Pins every thread of every process in `ns` (with `--pin`) to `cpu`. */
async function pinNamespace(ns: Netns, cpu: string): Promise<void> {
  const pids = (await run(["ip", "netns", "pids", ns.name])).stdout.trim().split(/\s+/);
  for (const pid of pids.filter((p) => p)) {
    await run(["taskset", "-a", "-p", "-c", cpu, pid], { check: false });
  }
}

async function latency(ns: Netns, target: string) {
  const r = await ns.run(pinned([
    "python3",
    "-c",
    LATENCY_CLIENT,
    target,
    String(LAT_PORT),
    String(latencyPlan.connects),
    String(latencyPlan.gapMs),
    String(latencyPlan.warmup),
    latencyPlan.trace,
  ]));
  return JSON.parse(r.stdout) as {
    median: number;
    p99: number;
    connectMedian: number;
    connectP99: number;
    /** Every timed connect, ms. */
    connects: number[];
  };
}

interface Results {
  upload: number;
  uploadCpu: number;
  download: number;
  downloadCpu: number;
  http: number;
  latMedian: number;
  latP99: number;
  connectMedian: number;
  connectP99: number;
  /** Server CPU per connection of the latency test (connect, request, response, close), µs. */
  connectCpu: number;
  ping: number;
}

const METRICS = ["upload", "download", "http", "latency", "ping"] as const;
type Metric = typeof METRICS[number];

async function measure(
  c: Netns,
  s: Netns,
  target: string,
  seconds: number,
  metrics: Set<Metric>,
  stages?: StagePoints,
  stageReports?: StageReport[],
  connectTimes?: number[],
): Promise<Partial<Results>> {
  const r: Partial<Results> = {};
  if (metrics.has("upload")) {
    ({ mbps: r.upload, cpuPerGB: r.uploadCpu } = await iperf(c, target, seconds, false, s));
  }
  if (metrics.has("download")) {
    ({ mbps: r.download, cpuPerGB: r.downloadCpu } = await iperf(c, target, seconds, true, s));
  }
  if (metrics.has("http")) {
    // Warm once (page cache, handshake), then time.
    await httpDownload(c, target);
    r.http = await httpDownload(c, target);
  }
  if (metrics.has("latency")) {
    // The other server in S is idle meanwhile: the namespace's CPU is this one's.
    let capture: Awaited<ReturnType<typeof captureStages>> | undefined;
    let dir: string | undefined;
    const traceBefore = latencyPlan.trace;
    if (stages) {
      dir = await Deno.makeTempDir({ prefix: "wgstack-stages-" });
      latencyPlan.trace = `${dir}/connects.txt`;
      capture = await captureStages(stages, dir);
    }
    const cpuBefore = await nsCpuSeconds(s);
    let lat;
    try {
      lat = await latency(c, target);
    } finally {
      latencyPlan.trace = traceBefore;
    }
    const cpu = await nsCpuSeconds(s) - cpuBefore;
    if (capture && dir) {
      const report = await capture.finish(`${dir}/connects.txt`);
      await Deno.remove(dir, { recursive: true });
      console.log(`connect stages (µs, median): ${JSON.stringify(report.median)}`);
      stageReports?.push(report);
    }
    r.connectCpu = cpu / (latencyPlan.connects + latencyPlan.warmup) * 1e6;
    r.latMedian = lat.median;
    r.latP99 = lat.p99;
    r.connectMedian = lat.connectMedian;
    r.connectP99 = lat.connectP99;
    connectTimes?.push(...lat.connects);
  }
  if (metrics.has("ping")) r.ping = await ping(c, target, 100);
  return r;
}

function loadavg(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

/** The flags `main` reads (each but `--breakdown` takes a value). */
const FLAGS = [
  "--serve",
  "--seconds",
  "--only",
  "--metrics",
  "--rmem",
  "--runs",
  "--profile",
  "--breakdown",
  "--syn-ack",
  "--connects",
  "--connect-gap",
  "--warmup",
  "--latency-trace",
  "--stages",
  "--pin",
];

async function main(): Promise<void> {
  const unknown = Deno.args.filter((a) => a.startsWith("--") && !FLAGS.includes(a));
  if (unknown.length > 0) {
    // (--help too: without this check the whole benchmark ran.)
    console.error(
      `usage: deno run -A bench/server_bench.ts [--runs N] [--seconds S] [--only ours|baseline]\n` +
        `  [--metrics upload,download,http,latency,ping] [--breakdown] [--rmem BYTES] [--profile DIR]\n` +
        `  [--syn-ack after-dial|immediate] [--connects N] [--connect-gap MS] [--warmup N]\n` +
        `  [--latency-trace FILE] [--stages] [--pin]` +
        (unknown.includes("--help") ? "" : `\nunknown: ${unknown.join(" ")}`),
    );
    Deno.exit(unknown.includes("--help") ? 0 : 2);
  }
  const argIdx = (name: string) => Deno.args.indexOf(name);
  const serveIdx = argIdx("--serve");
  if (serveIdx >= 0) return serveMode(JSON.parse(Deno.args[serveIdx + 1]));
  const secIdx = argIdx("--seconds");
  const seconds = secIdx >= 0 ? Number(Deno.args[secIdx + 1]) : 10;
  const onlyIdx = argIdx("--only");
  const only = onlyIdx >= 0 ? Deno.args[onlyIdx + 1] : undefined;
  const metricsIdx = argIdx("--metrics");
  const metrics = new Set(
    (metricsIdx >= 0 ? Deno.args[metricsIdx + 1].split(",") : METRICS) as Metric[],
  );
  const rmemIdx = argIdx("--rmem");
  const rmem = rmemIdx >= 0 ? Number(Deno.args[rmemIdx + 1]) : undefined;
  const runsIdx = argIdx("--runs");
  const runs = runsIdx >= 0 ? Number(Deno.args[runsIdx + 1]) : 1;
  const profIdx = argIdx("--profile");
  const profileDir = profIdx >= 0 ? Deno.args[profIdx + 1] : undefined;
  const synAckIdx = argIdx("--syn-ack");
  const synAck = synAckIdx >= 0 ? Deno.args[synAckIdx + 1] : undefined;
  const connectsIdx = argIdx("--connects");
  if (connectsIdx >= 0) latencyPlan.connects = Number(Deno.args[connectsIdx + 1]);
  const gapIdx = argIdx("--connect-gap");
  if (gapIdx >= 0) latencyPlan.gapMs = Number(Deno.args[gapIdx + 1]);
  const warmupIdx = argIdx("--warmup");
  if (warmupIdx >= 0) latencyPlan.warmup = Number(Deno.args[warmupIdx + 1]);
  const traceIdx = argIdx("--latency-trace");
  if (traceIdx >= 0) latencyPlan.trace = Deno.args[traceIdx + 1];
  if (!(Number.isInteger(latencyPlan.warmup) && latencyPlan.warmup >= 0)) {
    console.error(`--warmup is an integer ≥ 0`);
    Deno.exit(2);
  }
  if (!(Number.isInteger(latencyPlan.connects) && latencyPlan.connects > 0)) {
    console.error(`--connects is a positive integer`);
    Deno.exit(2);
  }
  if (!(latencyPlan.gapMs >= 0 && latencyPlan.gapMs <= 60_000)) {
    console.error(`--connect-gap is 0–60000 ms`);
    Deno.exit(2);
  }
  const stagesWanted = Deno.args.includes("--stages");
  if (Deno.args.includes("--pin")) {
    if (navigator.hardwareConcurrency < 2) {
      console.error(`--pin needs two CPUs`);
      Deno.exit(2);
    }
    clientCpu = "1";
  }
  if (stagesWanted && !metrics.has("latency")) {
    console.error(`--stages times the latency test's connects: add latency to --metrics`);
    Deno.exit(2);
  }
  if (stagesWanted && !(await stagesAvailable())) {
    console.error(`--stages needs dumpcap and tshark (apt-get install tshark)`);
    Deno.exit(2);
  }
  if (synAck !== undefined && synAck !== "after-dial" && synAck !== "immediate") {
    console.error(`--syn-ack is after-dial or immediate, not ${synAck}`);
    Deno.exit(2);
  }

  if (Deno.uid() !== 0) {
    console.error("server_bench needs root (network namespaces, TUN)");
    Deno.exit(2);
  }
  console.log(`load average before: ${loadavg()} (nproc ${navigator.hardwareConcurrency})`);

  const cleanup: (() => Promise<void>)[] = [];
  try {
    const c = await Netns.create(`${PREFIX}c`);
    cleanup.push(() => c.destroy());
    const s = await Netns.create(`${PREFIX}s`);
    cleanup.push(() => s.destroy());
    const t = await Netns.create(`${PREFIX}t`);
    cleanup.push(() => t.destroy());
    const cs = await createVeth(c, s, { prefix: PREFIX });
    const st = await createVeth(s, t, { prefix: PREFIX });
    // Target addresses and routes.
    await t.run(["ip", "addr", "add", `${TARGET_BASE}/32`, "dev", "lo"]);
    await t.run(["ip", "addr", "add", `${TARGET_OURS}/32`, "dev", "lo"]);
    await t.run(["ip", "route", "add", "192.0.2.0/24", "via", st.a.v4]);
    await s.run(["ip", "route", "add", "198.18.0.0/24", "via", st.b.v4]);
    await s.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    if (rmem !== undefined) {
      // Per-namespace on current kernels: the default UDP receive buffer of
      // sockets created in S (Deno cannot set SO_RCVBUF itself).
      await s.run(["sysctl", "-qw", `net.core.rmem_default=${rmem}`]);
      await s.run(["sysctl", "-qw", `net.core.rmem_max=${Math.max(rmem, 4194304)}`]);
      console.log(`namespace S: net.core.rmem_default=${rmem}`);
    }

    // Target services.
    const blobDir = await Deno.makeTempDir({ prefix: "wgstack-bench-" });
    cleanup.push(() => Deno.remove(blobDir, { recursive: true }));
    const blob = new Uint8Array(HTTP_SIZE);
    for (let i = 0; i < blob.length; i += 65536) {
      crypto.getRandomValues(blob.subarray(i, Math.min(blob.length, i + 65536)));
    }
    await Deno.writeFile(`${blobDir}/blob`, blob);
    const services = [
      new Child(["ip", "netns", "exec", t.name, "iperf3", "-s"]),
      new Child([
        "ip",
        "netns",
        "exec",
        t.name,
        "python3",
        "-m",
        "http.server",
        String(HTTP_PORT),
        "--bind",
        "0.0.0.0",
        "--directory",
        blobDir,
      ]),
      new Child(["ip", "netns", "exec", t.name, "python3", "-c", LATENCY_SERVER, String(LAT_PORT)]),
    ];
    cleanup.push(async () => {
      for (const p of services) await p.stop();
    });
    for (const port of [5201, HTTP_PORT, LAT_PORT]) {
      await waitFor(`port ${port} in ${t.name}`, async () => {
        const r = await t.run(["ss", "-ltnH", `sport = :${port}`]);
        return r.stdout.trim() ? true : undefined;
      });
    }

    const clientKeys0 = await wgGenKeyPair();
    const clientKeys1 = await wgGenKeyPair();
    const baseKeys = await wgGenKeyPair();
    const ourKeys = await wgGenKeyPair();

    // Baseline: wireguard-go in S, kernel forwarding to T.
    const wgS = await WireGuardGo.start(s, `${IFACE_PREFIX}ws`);
    cleanup.push(() => wgS.stop());
    await wgS.configure({
      privateKey: baseKeys.privateKey,
      listenPort: 51820,
      peers: [{ publicKey: clientKeys0.publicKey, allowedIps: ["192.0.2.2/32"] }],
    });
    await wgS.up({ addresses: ["192.0.2.1/32"], routes: ["192.0.2.2/32"] });

    const wgC0 = await WireGuardGo.start(c, `${IFACE_PREFIX}w0`);
    cleanup.push(() => wgC0.stop());
    await wgC0.configure({
      privateKey: clientKeys0.privateKey,
      peers: [{
        publicKey: baseKeys.publicKey,
        endpoint: `${cs.b.v4}:51820`,
        allowedIps: ["192.0.2.1/32", `${TARGET_BASE}/32`],
      }],
    });
    await wgC0.up({ addresses: ["192.0.2.2/32"], routes: ["192.0.2.1/32", `${TARGET_BASE}/32`] });

    // Ours: serve() + Forwarder in S (a child process of this script).
    const wgC1 = await WireGuardGo.start(c, `${IFACE_PREFIX}w1`);
    cleanup.push(() => wgC1.stop());
    await wgC1.configure({
      privateKey: clientKeys1.privateKey,
      peers: [{
        publicKey: ourKeys.publicKey,
        endpoint: `${cs.b.v4}:51821`,
        allowedIps: ["192.0.2.5/32", `${TARGET_OURS}/32`],
      }],
    });
    await wgC1.up({ addresses: ["192.0.2.6/32"], routes: ["192.0.2.5/32", `${TARGET_OURS}/32`] });

    let server: Child | undefined;
    if (only !== "baseline") {
      const config: ServeConfig = {
        privateKey: ourKeys.privateKey,
        hostname: cs.b.v4,
        port: 51821,
        peerPublicKey: clientKeys1.publicKey,
        peerAddress: "192.0.2.6",
        tunnelAddress: "192.0.2.5",
        breakdown: Deno.args.includes("--breakdown"),
        synAck,
      };
      const denoArgs = ["run", "-A", "--unstable-net"];
      if (profileDir) {
        denoArgs.push("--cpu-prof", `--cpu-prof-dir=${profileDir}`);
        const interval = Deno.env.get("WGSTACK_BENCH_PROFILE_INTERVAL");
        if (interval) denoArgs.push(`--cpu-prof-interval=${interval}`);
      }
      const v8Flags = Deno.env.get("WGSTACK_BENCH_V8_FLAGS");
      if (v8Flags) denoArgs.push(`--v8-flags=${v8Flags}`);
      const child = server = new Child([
        "ip",
        "netns",
        "exec",
        s.name,
        // (Line-buffered, so that V8's traces are not lost at exit.)
        ...(v8Flags ? ["stdbuf", "-oL"] : []),
        Deno.execPath(),
        ...denoArgs,
        new URL(import.meta.url).pathname,
        "--serve",
        JSON.stringify(config),
      ]);
      const logFile = Deno.env.get("WGSTACK_BENCH_SERVER_LOG");
      cleanup.push(async () => {
        await child.stop();
        if (logFile) await Deno.writeTextFile(logFile, child.output);
      });
      await waitFor("our server to be ready", () => {
        if (child.output.includes('"ready"')) return true;
        if (child.output.includes("error")) throw new Error(child.output);
        return undefined;
      }, { timeoutMs: 60_000 });
    }
    if (clientCpu !== undefined) {
      await pinNamespace(c, clientCpu);
      await pinNamespace(s, "0");
      await pinNamespace(t, "0");
      console.log("pinned: client processes to CPU 1, server and target processes to CPU 0");
    }
    // Alternating runs (baseline, ours, baseline, ...); the table shows medians.
    const baseRuns: Partial<Results>[] = [];
    const ourRuns: Partial<Results>[] = [];
    const baseStages: StageReport[] = [];
    const ourStages: StageReport[] = [];
    const baseConnects: number[] = [];
    const ourConnects: number[] = [];
    /** One server's metrics; `tunnel` is the client's interface towards it. */
    const measureOne = (
      target: string,
      tunnel: string,
      stageReports: StageReport[],
      connectTimes: number[],
    ) => {
      const points: StagePoints | undefined = stagesWanted
        ? { client: c, server: s, tunnel, clientLink: cs.a.ifname, serverLink: cs.b.ifname }
        : undefined;
      return measure(c, s, target, seconds, metrics, points, stageReports, connectTimes);
    };
    for (let run = 1; run <= runs; run++) {
      if (only !== "ours") {
        console.log(`run ${run}/${runs}: measuring wireguard-go + kernel forwarding …`);
        const udpBefore = await udpSnmp(s);
        const base = await measureOne(
          TARGET_BASE,
          `${IFACE_PREFIX}w0`,
          baseStages,
          baseConnects,
        );
        const udpAfter = await udpSnmp(s);
        console.log(
          `wireguard-go in S: UDP RcvbufErrors +${
            udpAfter.RcvbufErrors - udpBefore.RcvbufErrors
          }, ` +
            `InDatagrams +${udpAfter.InDatagrams - udpBefore.InDatagrams}`,
        );
        console.log(JSON.stringify(base));
        baseRuns.push(base);
      }
      if (server) {
        console.log(`run ${run}/${runs}: measuring ours (serve + Forwarder) …`);
        try {
          const udpBefore = await udpSnmp(s);
          const ours = await measureOne(
            TARGET_OURS,
            `${IFACE_PREFIX}w1`,
            ourStages,
            ourConnects,
          );
          const udpAfter = await udpSnmp(s);
          console.log(
            `ours in S: UDP RcvbufErrors +${udpAfter.RcvbufErrors - udpBefore.RcvbufErrors}, ` +
              `InDatagrams +${udpAfter.InDatagrams - udpBefore.InDatagrams}`,
          );
          console.log(JSON.stringify(ours));
          ourRuns.push(ours);
        } catch (error) {
          console.error(`our server output:\n${server.output}`);
          throw error;
        }
      }
    }
    if (server) {
      await server.stop();
      const statsLine = server.output.split("\n").find((l) => l.startsWith('{"stats"'));
      if (statsLine) {
        const { stats, dials, gso, gro } = JSON.parse(statsLine);
        console.log(`our dials: ${JSON.stringify(dials)}`);
        const dialSeconds = stats.forward?.dialSeconds;
        if (dialSeconds?.count > 0) {
          console.log(
            `our upstream dials: ${dialSeconds.count}, mean ${
              (dialSeconds.sum / dialSeconds.count * 1000).toFixed(3)
            } ms (synAck ${
              synAck ?? "after-dial"
            }; resets after accept: ${stats.forward.resetAfterAccept})`,
          );
        }
        if (gso) {
          console.log(
            `our UDP GSO: ${gso.segments} datagrams in ${gso.messages} messages (${
              (gso.segments / Math.max(1, gso.messages)).toFixed(1)
            } each); GRO: ${JSON.stringify(gro)}`,
          );
        }
        const drops = Object.entries(stats.wireguard.drops).filter(([, n]) => n !== 0);
        console.log(
          `our server (crypto ${stats.cryptoBackend ?? "?"}): socket ${
            JSON.stringify(stats.socket)
          }, wireguard drops ${JSON.stringify(Object.fromEntries(drops))}, netstack drops ${
            JSON.stringify(stats.netstack.drops)
          }`,
        );
      } else console.log(`our server said:\n${server.output}`);
      const breakdownLine = server.output.split("\n").find((l) => l.startsWith('{"breakdown"'));
      if (breakdownLine) {
        const stages = JSON.parse(breakdownLine).breakdown as Record<
          string,
          { n: number; median: number; p90: number }
        >;
        console.log("\nwhere the time goes inside our server (all runs; ms):\n");
        console.log("| stage | samples | median | p90 |\n|---|---|---|---|");
        for (const [name, v] of Object.entries(stages)) {
          console.log(`| ${name} | ${v.n} | ${v.median.toFixed(3)} | ${v.p90.toFixed(3)} |`);
        }
      }
    }
    if (stagesWanted) printStages(baseStages, ourStages);
    const base = medians(baseRuns);
    const ours = medians(ourRuns);
    if (runs > 1) console.log(`\nmedians of ${runs} alternating runs:`);
    printTable(base, ours);
    if (runs > 1) printPooledConnects(baseConnects, ourConnects);
    console.log(`load average after: ${loadavg()}`);
  } finally {
    for (const fn of cleanup.reverse()) await fn().catch((e) => console.error(String(e)));
  }
}

/** The connect stages of both servers: per stage, the median over runs of each run's median and p99. */
function printStages(base: StageReport[], ours: StageReport[]): void {
  const cell = (reports: StageReport[], k: typeof STAGES[number] | "total", q: "median" | "p99") =>
    reports.length ? quantile(reports.map((r) => r[q][k]), 0.5).toFixed(0) : "-";
  const matched = (reports: StageReport[]) =>
    reports.map((r) => `${r.matched}/${r.connects}`).join(", ") || "-";
  console.log(
    `\nwhere a connect's time goes (µs; median over runs of each run's median | p99; ` +
      `connects matched to packets: wireguard-go ${matched(base)}, ours ${matched(ours)}):\n`,
  );
  console.log("| stage | wireguard-go median | ours median | wireguard-go p99 | ours p99 |");
  console.log("|---|---|---|---|---|");
  for (const k of [...STAGES, "total"] as const) {
    console.log(
      `| ${k} | ${cell(base, k, "median")} | ${cell(ours, k, "median")} | ${
        cell(base, k, "p99")
      } | ${cell(ours, k, "p99")} |`,
    );
  }
  const sum = (reports: StageReport[]) => {
    const out: Record<string, number> = {};
    for (const k of STAGES) out[k] = reports.reduce((n, r) => n + r.slowestBy[k], 0);
    return JSON.stringify(out);
  };
  console.log(
    `\nthe slowest 2 % of connects, by their largest stage: wireguard-go ${sum(base)}, ours ${
      sum(ours)
    }`,
  );
}

/**
 * The connect-time median and p99 over every run's connects together: the
 * p99 of one run of 200 is its third slowest connect and moves a lot from
 * run to run; pooled, it rests on more of them.
 */
function printPooledConnects(base: number[], ours: number[]): void {
  if (base.length === 0 && ours.length === 0) return;
  const cell = (xs: number[], p: number) => xs.length ? quantile(xs, p).toFixed(2) : "-";
  const ratio = (p: number) =>
    base.length && ours.length ? `${(quantile(base, p) / quantile(ours, p)).toFixed(2)}×` : "-";
  console.log(
    `| connect time median, all runs pooled (${ours.length} / ${base.length} connects) | ms | ${
      cell(ours, 0.5)
    } | ${cell(base, 0.5)} | ${ratio(0.5)} |`,
  );
  console.log(
    `| connect time p99, all runs pooled | ms | ${cell(ours, 0.99)} | ${cell(base, 0.99)} | ${
      ratio(0.99)
    } |`,
  );
}

/** Per metric, the median over runs (undefined when there were no runs). */
function medians(runs: Partial<Results>[]): Partial<Results> | undefined {
  if (runs.length === 0) return undefined;
  const out: Partial<Results> = {};
  for (const key of Object.keys(runs[0]) as (keyof Results)[]) {
    const values = runs.map((r) => r[key]).filter((v) => v !== undefined).sort((a, b) => a - b);
    out[key] = values[values.length >> 1];
  }
  return out;
}

function printTable(base: Partial<Results> | undefined, ours: Partial<Results> | undefined): void {
  const rows: [string, keyof Results, string, boolean][] = [
    ["upload (iperf3)", "upload", "Mbit/s", true],
    ["download (iperf3 -R)", "download", "Mbit/s", true],
    ["server CPU, upload", "uploadCpu", "CPU s/GB", false],
    ["server CPU, download", "downloadCpu", "CPU s/GB", false],
    ["50 MB HTTP download (curl)", "http", "ms", false],
    [
      `connect time median (${latencyPlan.connects} × TCP connect${
        latencyPlan.gapMs ? `, ${latencyPlan.gapMs} ms apart` : ""
      }, after ${latencyPlan.warmup} untimed)`,
      "connectMedian",
      "ms",
      false,
    ],
    ["connect time p99", "connectP99", "ms", false],
    ["connect+req+resp median", "latMedian", "ms", false],
    ["connect+req+resp p99", "latP99", "ms", false],
    ["server CPU per connection (all of the latency test)", "connectCpu", "µs", false],
    ["ping RTT median (100 × 20 ms apart)", "ping", "ms", false],
  ];
  const fmt = (v: number | undefined) => v === undefined ? "-" : v.toFixed(v >= 100 ? 0 : 2);
  console.log("");
  console.log(
    "| metric | unit | ours | wireguard-go | ratio (>1 = ours better) |\n|---|---|---|---|---|",
  );
  for (const [label, k, unit, higherBetter] of rows) {
    const o = ours?.[k];
    const b = base?.[k];
    const ratio = o !== undefined && b !== undefined ? (higherBetter ? o / b : b / o) : undefined;
    console.log(
      `| ${label} | ${unit} | ${fmt(o)} | ${fmt(b)} | ${
        ratio === undefined ? "-" : ratio.toFixed(2) + "×"
      } |`,
    );
  }
}

if (import.meta.main) await main();
