/**
 * Our TCP against Linux's TCP on the same impaired tunnel, in the same run.
 *
 * A real `wireguard-go` client in namespace C reaches a target host T through
 * namespace S, either through wireguard-go with kernel forwarding (the
 * baseline: Linux's TCP is the sender on the lossy leg of a download) or
 * through our server, `cli/main.ts --mode forward` (our netstack is the sender
 * on the lossy leg of a download, and the receiver of an upload). The outer
 * UDP of both tunnels is impaired in both directions by
 * `../shared/tools/netem-nfqueue.py` (NFQUEUE verdicts in C: loss, delay,
 * reordering with netem's semantics), restarted with the same seed for every
 * transfer.
 *
 * Run (root, Linux; needs wireguard-go, wg, ip, iptables(-legacy), python3,
 * dumpcap and tshark):
 *
 * ```sh
 * deno run -A bench/impaired_bench.ts                          # whole matrix, 3 runs
 * deno run -A bench/impaired_bench.ts --runs 1 --json out.json
 * deno run -A bench/impaired_bench.ts --cells 2/5/10,2/5/0 --runs 3
 * deno run -A bench/impaired_bench.ts --cells none,0/0/0 --size 100 --servers bbr
 *   # the impairment tool's own ceiling: no NFQUEUE process vs one that passes all
 * deno run -A bench/impaired_bench.ts --cells 2/5/0 --runs 1 --keep-captures /tmp/caps   # keep the pcaps
 * deno run -A bench/impaired_bench.ts --ours-args="--tcp-cc bbr"
 * WGSTACK_OURS_ARGS="--tcp-cc bbr" deno run -A bench/impaired_bench.ts   # same
 * ```
 *
 * Cells are `LOSS/DELAY/REORDER` (percent / ms / percent, applied to each
 * direction), or `none` (no impairment process: the NFQUEUE rules bypass).
 * Per cell and run it transfers `--size` MB (sha256 checked) for each of:
 *
 * - download (T → C): ours (our netstack sends), Linux BBR, Linux CUBIC (the
 *   target's listening socket has `TCP_CONGESTION` set, so the accepted
 *   socket sends with it);
 * - upload (C → T): the client's socket sends with BBR and with CUBIC (set per
 *   socket), received by ours and by Linux (through wireguard-go).
 *
 * A transfer longer than `--cap` seconds is killed and reported as `>cap`.
 * Retransmissions are counted by tshark from a capture of the client's
 * WireGuard interface (the decrypted inner packets, before the impairment):
 * for a download that is the receiver's view (a retransmission lost again on
 * the path is not seen; "spurious" means tshark saw the data already ACKed,
 * so it is a lower bound), for an upload the sender's. Where Linux is the
 * sender its own `TCP_INFO` (total_retrans, dsack_dups) is recorded too.
 *
 * Topology (namespaces and interfaces carry the prefix `b8`, deleted on exit):
 *
 * ```
 *  C (client)                               S (server)                          T (target)
 *  b8w0 192.0.2.2 ──udp (impaired)── wireguard-go :51820 192.0.2.1 ─ip_forward─┐
 *  b8w1 192.0.2.6 ──udp (impaired)── ours :51821 (cli/main.ts --mode forward)──veth─ 198.18.0.10 (via b8w0)
 *  python client, dumpcap, netem-nfqueue                                        198.18.0.20 (via b8w1)
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  Background,
  canRunNetns,
  createVeth,
  Netns,
  run,
  waitFor,
  wgGenKeyPair,
  WireGuardGo,
} from "../tests/netns.ts";

/** Namespace/interface prefix (`WGSTACK_BENCH_PREFIX` to run two at once). */
const PREFIX = Deno.env.get("WGSTACK_BENCH_PREFIX") ?? "b8";
const TARGET_BASE = "198.18.0.10";
const TARGET_OURS = "198.18.0.20";
const PORT_BASE = 51820;
const PORT_OURS = 51821;
const QUEUE = 8;
const CC_PORTS = { bbr: 9001, cubic: 9002 } as const;
/** The impairment tool: `WGSTACK_NETEM`, else `shared/tools/` beside the checkout (or above a worktree). */
const NETEM = Deno.env.get("WGSTACK_NETEM") ??
  ["../../shared", "../../../shared"]
    .map((d) => new URL(`${d}/tools/netem-nfqueue.py`, import.meta.url).pathname)
    .find((p) => {
      try {
        return Deno.statSync(p).isFile;
      } catch {
        return false;
      }
    }) ??
  new URL("../../shared/tools/netem-nfqueue.py", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;
const DEFAULT_CELLS = "2/5/10,1/25/25,5/50/0,0/50/10,0.5/100/0,2/5/0,0/5/10";

type Cc = keyof typeof CC_PORTS;
type Direction = "download" | "upload";
type Path = "ours" | "linux";

/** One impairment setting; `null` fields for the cell `none`. */
interface Cell {
  label: string;
  /** Percent, delay ms, percent; undefined for `none`. */
  impair?: { loss: number; delayMs: number; reorder: number };
}

/** One transfer kind: who carries the tunnel and which CC the Linux sender uses. */
interface Variant {
  direction: Direction;
  path: Path;
  /** Linux sender's CC: the target's for downloads, the client's for uploads. */
  cc: Cc;
  key: string;
}

/** What the capture on the client's WireGuard interface shows. */
interface CaptureStats {
  /** Data segments in the data direction. */
  dataSegments: number;
  /** Their payload bytes (retransmissions included). */
  payloadBytes: number;
  /**
   * Data segments all of whose bytes had been seen before in that direction:
   * at the receiver (download) the spurious retransmissions that arrived, at
   * the sender (upload) every retransmission.
   */
  duplicates: number;
  /** Segments in the ACK direction carrying a DSACK block (RFC 2883). */
  dsacks: number;
  /** Packets dumpcap said it dropped. */
  captureDrops: number | null;
}

/** The Linux sender's own counters (`TCP_INFO`), where Linux sends. */
interface TcpInfo {
  totalRetrans?: number;
  bytesRetrans?: number;
  dsackDups?: number;
  reordSeen?: number;
  minRttUs?: number;
  cc?: string;
}

interface Transfer {
  cell: string;
  run: number;
  variant: string;
  /** Milliseconds, or `null` when killed at the cap or failed. */
  ms: number | null;
  error?: string;
  capture?: CaptureStats;
  /** Segments the sender on the lossy leg retransmitted (its own count). */
  senderRetrans?: number;
  /**
   * Spurious retransmissions as the sender knows them: Linux's `dsack_dups`
   * (needs a DSACK-sending receiver), our `spuriousRecoveries` (undone
   * recoveries, not segments).
   */
  senderSpurious?: number;
  /** Linux sender's `TCP_INFO`, when Linux sends on the lossy leg. */
  senderInfo?: TcpInfo;
  /** Our connection's stats from the server's `tcp-close` record (forward mode). */
  ours?: Record<string, unknown>;
  netem?: Record<string, number>;
  /** CPU seconds the impairment process used, per wall second of the transfer. */
  netemCpuShare?: number;
  /**
   * UDP receive-buffer overflows during the transfer (/proc/net/snmp
   * RcvbufErrors) in C and S: losses on the path that the impairment did not
   * decide.
   */
  udpRcvbufErrors?: { c: number; s: number };
  load: string;
}

// ---------------------------------------------------------------------------
// Python helpers (target server in T, client in C)
// ---------------------------------------------------------------------------

const PY_TCP_INFO = `
import hashlib, json, os, socket, struct, sys, threading, time
def tcp_info(s):
    b = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    def u(fmt, o):
        n = struct.calcsize(fmt)
        return struct.unpack_from(fmt, b, o)[0] if len(b) >= o + n else None
    cc = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\\0").decode()
    return {"totalRetrans": u("I", 100), "minRttUs": u("I", 148), "bytesRetrans": u("Q", 208),
            "dsackDups": u("I", 216), "reordSeen": u("I", 220), "cc": cc}
def read_line(c):
    buf = b""
    while b"\\n" not in buf:
        d = c.recv(4096)
        if not d: raise SystemExit("eof before request line")
        buf += d
    line, rest = buf.split(b"\\n", 1)
    return line.decode(), rest
def drain(c):
    while c.recv(65536): pass
`;

/** argv: SIZE PORT:CC…; prints {"ready", "sha256"}, then one JSON line per finished connection. */
const TARGET_SERVER = PY_TCP_INFO + `
size = int(sys.argv[1])
blob = os.urandom(size)
lock = threading.Lock()
def out(o):
    with lock: print(json.dumps(o), flush=True)
def handle(c):
    try:
        line, rest = read_line(c)
        op, n, tid = line.split()
        n = int(n)
        if op == "GET":
            c.sendall(memoryview(blob)[:n])
            c.shutdown(socket.SHUT_WR)
            drain(c)
        else:
            h = hashlib.sha256(rest); got = len(rest)
            while got < n:
                d = c.recv(min(1 << 20, n - got))
                if not d: break
                h.update(d); got += len(d)
            c.sendall(("%s %d\\n" % (h.hexdigest(), got)).encode())
            c.shutdown(socket.SHUT_WR)
            drain(c)
        out({"id": tid, "op": op, "info": tcp_info(c)})
    except Exception as e:
        out({"error": repr(e)})
    finally:
        c.close()
def listen(port, cc):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
for spec in sys.argv[2:]:
    port, cc = spec.split(":")
    threading.Thread(target=listen, args=(int(port), cc), daemon=True).start()
time.sleep(0.2)
out({"ready": True, "sha256": hashlib.sha256(blob).hexdigest()})
threading.Event().wait()
`;

/** argv: HOST PORT GET|PUT SIZE CC|- ID SHA256; prints one JSON line. */
const CLIENT = PY_TCP_INFO + `
host, port, op, n, cc, tid, expect = sys.argv[1:8]
n = int(n)
data = os.urandom(n) if op == "PUT" else None
s = socket.socket()
if cc != "-": s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
t0 = time.perf_counter()
s.connect((host, int(port)))
lport = s.getsockname()[1]
print(json.dumps({"lport": lport}), flush=True)
s.sendall(("%s %d %s\\n" % (op, n, tid)).encode())
if op == "GET":
    h = hashlib.sha256(); got = 0
    while True:
        d = s.recv(1 << 20)
        if not d: break
        h.update(d); got += len(d)
    ok = got == n and h.hexdigest() == expect
    why = "got %d bytes, sha256 %s" % (got, h.hexdigest())
else:
    s.sendall(data)
    line, _ = read_line(s)
    digest, got = line.split()
    ok = int(got) == n and digest == hashlib.sha256(data).hexdigest()
    why = "target got %s bytes, sha256 %s" % (got, digest)
ms = (time.perf_counter() - t0) * 1000
info = tcp_info(s)
s.close()
print(json.dumps({"ms": ms, "ok": ok, "why": why, "info": info}), flush=True)
`;

// ---------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------

interface Options {
  cells: Cell[];
  directions: Direction[];
  servers: Set<string>;
  runs: number;
  sizeMb: number;
  capS: number;
  seed: number;
  oursArgs: string[];
  json?: string;
  capture: boolean;
  /** A directory the captures are moved to (named by cell, variant and run) instead of deleted. */
  keepCaptures?: string;
}

function parseCell(text: string): Cell {
  if (text === "none") return { label: "none" };
  const parts = text.split("/").map(Number);
  if (parts.length !== 3 || parts.some((p) => !Number.isFinite(p) || p < 0)) {
    throw new RangeError(`A cell is LOSS/DELAY/REORDER (e.g. 2/5/10) or none, not "${text}"`);
  }
  const [loss, delayMs, reorder] = parts;
  return {
    label: `${loss}% ${delayMs}ms ${reorder}%`,
    impair: { loss, delayMs, reorder },
  };
}

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      cells: { type: "string", default: DEFAULT_CELLS },
      directions: { type: "string", default: "download,upload" },
      servers: { type: "string", default: "ours,bbr,cubic" },
      runs: { type: "string", default: "3" },
      size: { type: "string", default: "20" },
      cap: { type: "string", default: "120" },
      seed: { type: "string", default: "1" },
      "ours-args": { type: "string", default: Deno.env.get("WGSTACK_OURS_ARGS") ?? "" },
      json: { type: "string" },
      "no-capture": { type: "boolean", default: false },
      "keep-captures": { type: "string" },
    },
  });
  const directions = values.directions.split(",") as Direction[];
  for (const d of directions) {
    if (d !== "download" && d !== "upload") throw new RangeError(`Unknown direction ${d}`);
  }
  const servers = new Set(values.servers.split(","));
  for (const s of servers) {
    if (!["ours", "bbr", "cubic"].includes(s)) throw new RangeError(`Unknown server ${s}`);
  }
  const num = (name: string, v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new RangeError(`--${name} must be > 0, not ${v}`);
    return n;
  };
  return {
    cells: values.cells.split(",").map(parseCell),
    directions,
    servers,
    runs: Math.round(num("runs", values.runs)),
    sizeMb: num("size", values.size),
    capS: num("cap", values.cap),
    seed: Math.round(Number(values.seed)),
    oursArgs: values["ours-args"].split(/\s+/).filter((a) => a),
    json: values.json,
    capture: !values["no-capture"],
    keepCaptures: values["keep-captures"],
  };
}

/** The transfers of one cell and run, interleaved so drift hits all alike. */
function variants(opts: Options): Variant[] {
  const out: Variant[] = [];
  const add = (direction: Direction, path: Path, cc: Cc, key: string) =>
    out.push({ direction, path, cc, key });
  for (const dir of opts.directions) {
    if (dir === "download") {
      if (opts.servers.has("ours")) add(dir, "ours", "bbr", "down ours");
      if (opts.servers.has("bbr")) add(dir, "linux", "bbr", "down linux-bbr");
      if (opts.servers.has("cubic")) add(dir, "linux", "cubic", "down linux-cubic");
    } else {
      for (const cc of ["bbr", "cubic"] as const) {
        if (!opts.servers.has(cc)) continue;
        if (opts.servers.has("ours")) add(dir, "ours", cc, `up ours<-${cc}`);
        add(dir, "linux", cc, `up linux<-${cc}`);
      }
    }
  }
  return out;
}

/** Mathis et al.: a loss-based sender's rate ≈ MSS/RTT · 1.22/√p; used for the estimate only. */
function estimateSeconds(opts: Options): number {
  let total = 0;
  const bytes = opts.sizeMb * 1e6;
  for (const cell of opts.cells) {
    const rttS = Math.max(0.002, 2 * (cell.impair?.delayMs ?? 0) / 1000);
    const p = (cell.impair?.loss ?? 0) / 100;
    for (const v of variants(opts)) {
      const bbr = v.cc === "bbr" && (v.path === "linux" || v.direction === "upload");
      const lossRate = p > 0 ? 1368 / rttS * 1.22 / Math.sqrt(p) : Infinity;
      const rate = Math.min(bbr ? 20e6 : lossRate, 20e6); // bytes/s; ~160 Mbit/s ceiling
      total += Math.min(opts.capS, bytes / rate + 1.5) + 1;
    }
  }
  return total * opts.runs + 30;
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async function which(name: string): Promise<boolean> {
  return (await run(["sh", "-c", `command -v ${name}`], { check: false })).code === 0;
}

function loadavg(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

const CLOCK_TICKS = 100; // USER_HZ

function cpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/** UDP RcvbufErrors of a namespace so far (/proc/net/snmp). */
async function udpRcvbufErrors(ns: Netns): Promise<number> {
  const text = (await ns.run(["cat", "/proc/net/snmp"])).stdout;
  const [names, values] = text.split("\n").filter((l) => l.startsWith("Udp:"));
  const i = names.split(/\s+/).indexOf("RcvbufErrors");
  return Number(values.split(/\s+/)[i]);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Spawns `argv` in `ns` as a {@linkcode Background} child. */
function spawnIn(ns: Netns, argv: string[]): Background {
  return Background.spawn(["ip", "netns", "exec", ns.name, ...argv]);
}

/** Waits until `proc` printed a line for which `pick` returns a value. */
function waitLine<T>(
  what: string,
  proc: Background,
  pick: (line: string) => T | undefined,
  timeoutMs = 20_000,
): Promise<T> {
  return waitFor(what, () => {
    for (const line of proc.log.split("\n")) {
      const v = pick(line);
      if (v !== undefined) return v;
    }
    if (proc.exited) throw new Error(`${proc.argv.join(" ")} exited:\n${proc.log}`);
    return undefined;
  }, { timeoutMs, intervalMs: 20 });
}

function jsonLines(text: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      // a partial line
    }
  }
  return out;
}

/** Byte ranges seen so far (relative sequence numbers), merged; few holes at a time. */
class Seen {
  #ranges: [number, number][] = [];
  /** Adds [start, end); returns true when every byte was already there. */
  add(start: number, end: number): boolean {
    const r = this.#ranges;
    let i = 0;
    while (i < r.length && r[i][1] < start) i++;
    if (i < r.length && r[i][0] <= start && end <= r[i][1]) return true;
    let lo = start;
    let hi = end;
    let j = i;
    while (j < r.length && r[j][0] <= end) {
      lo = Math.min(lo, r[j][0]);
      hi = Math.max(hi, r[j][1]);
      j++;
    }
    r.splice(i, j - i, [lo, hi]);
    return false;
  }
}

/** Reads a capture with tshark and counts duplicates in the data direction (from `dataSrc`). */
async function analyze(file: string, dataSrc: string): Promise<Omit<CaptureStats, "captureDrops">> {
  const fields = ["ip.src", "tcp.seq", "tcp.len", "tcp.options.sack.dsack_le"];
  const r = await run([
    "tshark",
    "-r",
    file,
    "-n",
    "-o",
    "tcp.relative_sequence_numbers:FALSE",
    "-o",
    "tcp.analyze_sequence_numbers:FALSE",
    "-T",
    "fields",
    "-E",
    "separator=|",
    "-E",
    "occurrence=f",
    ...fields.flatMap((f) => ["-e", f]),
  ]);
  const s = { dataSegments: 0, payloadBytes: 0, duplicates: 0, dsacks: 0 };
  const seen = new Seen();
  let isn: number | undefined;
  for (const line of r.stdout.split("\n")) {
    if (!line) continue;
    const [src, seqText, lenText, dsack] = line.split("|");
    if (src !== dataSrc) {
      if (dsack) s.dsacks++;
      continue;
    }
    const len = Number(lenText);
    if (!(len > 0)) continue;
    isn ??= Number(seqText);
    const start = (Number(seqText) - isn) >>> 0;
    s.dataSegments++;
    s.payloadBytes += len;
    if (seen.add(start, start + len)) s.duplicates++;
  }
  return s;
}

// ---------------------------------------------------------------------------
// The bench
// ---------------------------------------------------------------------------

class Bench {
  c!: Netns;
  s!: Netns;
  t!: Netns;
  target!: Background;
  sha = "";
  iptables = "";
  tmp = "";
  clientIf: Record<Path, string> = { linux: `${PREFIX}w0`, ours: `${PREFIX}w1` };
  ours?: Background;
  #cleanup: (() => Promise<void>)[] = [];
  #current = new Set<Background>();
  #ids = 0;

  constructor(readonly opts: Options) {}

  defer(fn: () => Promise<void>): void {
    this.#cleanup.push(fn);
  }

  /** Runs every cleanup step once (also from a signal handler), newest first. */
  async cleanup(): Promise<void> {
    for (const p of this.#current) await p.stop().catch(() => {});
    const steps = this.#cleanup.reverse();
    this.#cleanup = [];
    for (const fn of steps) await fn().catch((e) => console.error(`cleanup: ${e}`));
  }

  async setup(): Promise<void> {
    this.tmp = await Deno.makeTempDir({ prefix: "wgstack-impaired-" });
    this.defer(() => Deno.remove(this.tmp, { recursive: true }));
    this.c = await Netns.create(`${PREFIX}c`);
    this.defer(() => this.c.destroy());
    this.s = await Netns.create(`${PREFIX}s`);
    this.defer(() => this.s.destroy());
    this.t = await Netns.create(`${PREFIX}t`);
    this.defer(() => this.t.destroy());
    const cs = await createVeth(this.c, this.s, { prefix: PREFIX });
    const st = await createVeth(this.s, this.t, { prefix: PREFIX });
    const { c, s, t } = this;
    await t.run(["ip", "addr", "add", `${TARGET_BASE}/32`, "dev", "lo"]);
    await t.run(["ip", "addr", "add", `${TARGET_OURS}/32`, "dev", "lo"]);
    await t.run(["ip", "route", "add", "192.0.2.0/24", "via", st.a.v4]);
    await s.run(["ip", "route", "add", "198.18.0.0/24", "via", st.b.v4]);
    await s.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);

    // Target: one listener per congestion control.
    const size = Math.round(this.opts.sizeMb * 1e6);
    this.target = spawnIn(t, [
      "python3",
      "-c",
      TARGET_SERVER,
      String(size),
      ...Object.entries(CC_PORTS).map(([cc, port]) => `${port}:${cc}`),
    ]);
    this.defer(() => this.target.stop());
    this.sha = await waitLine("the target server", this.target, (l) => {
      const m = /"sha256": "([0-9a-f]+)"/.exec(l);
      return m?.[1];
    });

    const clientKeys0 = await wgGenKeyPair();
    const clientKeys1 = await wgGenKeyPair();
    const baseKeys = await wgGenKeyPair();
    const ourKeys = await wgGenKeyPair();

    // Baseline: wireguard-go in S, kernel forwarding to T.
    const wgS = await WireGuardGo.start(s, `${PREFIX}ws`);
    this.defer(() => wgS.stop());
    await wgS.configure({
      privateKey: baseKeys.privateKey,
      listenPort: PORT_BASE,
      peers: [{ publicKey: clientKeys0.publicKey, allowedIps: ["192.0.2.2/32"] }],
    });
    await wgS.up({ addresses: ["192.0.2.1/32"], routes: ["192.0.2.2/32"] });
    const endpoint = (port: number) => `${cs.b.v4}:${port}`;
    await this.clientTunnel(this.clientIf.linux, clientKeys0.privateKey, {
      serverKey: baseKeys.publicKey,
      endpoint: endpoint(PORT_BASE),
      local: "192.0.2.2",
      remote: ["192.0.2.1/32", `${TARGET_BASE}/32`],
    });
    // Ours: the CLI in forward mode.
    await this.clientTunnel(this.clientIf.ours, clientKeys1.privateKey, {
      serverKey: ourKeys.publicKey,
      endpoint: endpoint(PORT_OURS),
      local: "192.0.2.6",
      remote: ["192.0.2.5/32", `${TARGET_OURS}/32`],
    });
    if (this.opts.servers.has("ours")) await this.startOurs(cs.b.v4, ourKeys, clientKeys1);

    // Impairment hooks: both tunnels' UDP, both directions, to one queue.
    this.iptables = await which("iptables-legacy") ? "iptables-legacy" : "iptables";
    for (const port of [PORT_BASE, PORT_OURS]) {
      const q = ["-j", "NFQUEUE", "--queue-num", String(QUEUE), "--queue-bypass"];
      await c.run([
        this.iptables,
        "-A",
        "OUTPUT",
        "-o",
        cs.a.ifname,
        "-p",
        "udp",
        "--dport",
        String(port),
        ...q,
      ]);
      await c.run([
        this.iptables,
        "-A",
        "INPUT",
        "-i",
        cs.a.ifname,
        "-p",
        "udp",
        "--sport",
        String(port),
        ...q,
      ]);
    }
    console.log(`impairment: ${this.iptables} NFQUEUE ${QUEUE} (--queue-bypass) in ${c.name}`);
  }

  /** A wireguard-go client interface in C whose one peer is the server at `endpoint`. */
  async clientTunnel(
    iface: string,
    privateKey: string,
    p: { serverKey: string; endpoint: string; local: string; remote: string[] },
  ): Promise<void> {
    const wg = await WireGuardGo.start(this.c, iface);
    this.defer(() => wg.stop());
    await wg.configure({
      privateKey,
      peers: [{ publicKey: p.serverKey, endpoint: p.endpoint, allowedIps: p.remote }],
    });
    await wg.up({ addresses: [`${p.local}/32`], routes: p.remote });
  }

  async startOurs(
    listen: string,
    ourKeys: { privateKey: string },
    client: { publicKey: string },
  ): Promise<void> {
    const dir = `${this.tmp}/ours`;
    await Deno.mkdir(dir, { mode: 0o700 });
    const config = `${dir}/wg.conf`;
    await Deno.writeTextFile(
      config,
      `[Interface]\nPrivateKey = ${ourKeys.privateKey}\nListenPort = ${PORT_OURS}\n` +
        `Address = 192.0.2.5/32\n\n[Peer]\nPublicKey = ${client.publicKey}\n` +
        `AllowedIPs = 192.0.2.6/32\n`,
      { mode: 0o600 },
    );
    const argv = [
      Deno.execPath(),
      "run",
      "-A",
      "--config",
      `${ROOT}deno.json`,
      `${ROOT}cli/main.ts`,
      config,
      "--mode",
      "forward",
      "--listen",
      `${listen}:${PORT_OURS}`,
      "--dns-upstream",
      "127.0.0.1:53", // inside S: nothing there, and nothing leaves the namespaces
      "--no-qr",
      "--no-uapi",
      "--log-format",
      "json",
      "--log-level",
      "debug", // per-connection tcp-close records carry the connection's stats
      ...this.opts.oursArgs,
    ];
    console.log(`ours: ${argv.slice(1).join(" ")}`);
    const ours = spawnIn(this.s, argv);
    this.ours = ours;
    this.defer(async () => {
      await ours.stop(5000);
      const summary = jsonLines(ours.log).find((r) => r.event === "summary");
      if (summary) {
        const { tcpAccepted, bytesUp, bytesDown, packetsIn, packetsOut, drops, netstack, socket } =
          summary as Record<string, Record<string, unknown>>;
        console.log(`our server's summary: ${
          JSON.stringify({
            tcpAccepted,
            bytesUp,
            bytesDown,
            packetsIn,
            packetsOut,
            drops,
            netstackDrops: netstack?.drops,
            socket,
          })
        }`);
      } else console.log(`our server said:\n${ours.log}`);
    });
    await waitLine("our server", ours, (l) => l.includes("listening on UDP") || undefined, 60_000);
  }

  /** One transfer: impairment and capture around the client; never throws for a failed transfer. */
  async transfer(v: Variant, cell: Cell, runIndex: number): Promise<Transfer> {
    const id = `t${this.#ids++}`;
    const size = Math.round(this.opts.sizeMb * 1e6);
    const result: Transfer = {
      cell: cell.label,
      run: runIndex,
      variant: v.key,
      ms: null,
      load: loadavg(),
    };
    let netem: Background | undefined;
    let capture: Background | undefined;
    let captureDrops: number | null = null;
    let lport: number | undefined;
    const oursLogStart = this.ours?.log.length ?? 0; // client ports repeat across transfers
    const pcap = `${this.tmp}/${id}.pcap`;
    try {
      if (cell.impair) {
        const ready = `${this.tmp}/${id}.ready`;
        netem = spawnIn(this.c, [
          "python3",
          NETEM,
          "--queue",
          String(QUEUE),
          "--loss",
          String(cell.impair.loss / 100),
          "--delay",
          String(cell.impair.delayMs / 1000),
          "--reorder",
          String(cell.impair.reorder / 100),
          "--seed",
          String(this.opts.seed + runIndex),
          "--ready",
          ready,
        ]);
        this.#current.add(netem);
        await waitFor("netem-nfqueue", async () => {
          if (netem!.exited) throw new Error(`netem-nfqueue exited:\n${netem!.log}`);
          return await Deno.stat(ready).then(() => true, () => undefined);
        });
      }
      if (this.opts.capture) {
        capture = spawnIn(this.c, [
          "dumpcap",
          "-q",
          "-i",
          this.clientIf[v.path],
          "-s",
          "128",
          "-P",
          "-w",
          pcap,
        ]);
        this.#current.add(capture);
        await waitLine("dumpcap", capture, (l) => l.includes("Capturing on") || undefined);
      }
      const cpu0 = netem ? cpuSeconds(netem.pid) : 0;
      const udp0 = await Promise.all([udpRcvbufErrors(this.c), udpRcvbufErrors(this.s)]);
      const host = v.path === "ours" ? TARGET_OURS : TARGET_BASE;
      const port = v.direction === "download" ? CC_PORTS[v.cc] : CC_PORTS.bbr;
      const client = spawnIn(this.c, [
        "python3",
        "-c",
        CLIENT,
        host,
        String(port),
        v.direction === "download" ? "GET" : "PUT",
        String(size),
        v.direction === "upload" ? v.cc : "-",
        id,
        this.sha,
      ]);
      this.#current.add(client);
      const t0 = performance.now();
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        try {
          client.child.kill("SIGKILL");
        } catch {
          // gone
        }
      }, this.opts.capS * 1000);
      await client.status;
      await client.stop(); // exited: only collects the rest of its output
      clearTimeout(timer);
      this.#current.delete(client);
      const wall = (performance.now() - t0) / 1000;
      if (netem) result.netemCpuShare = (cpuSeconds(netem.pid) - cpu0) / wall;
      const udp1 = await Promise.all([udpRcvbufErrors(this.c), udpRcvbufErrors(this.s)]);
      result.udpRcvbufErrors = { c: udp1[0] - udp0[0], s: udp1[1] - udp0[1] };
      const out = jsonLines(client.log).find((r) => "ms" in r);
      if (timedOut) result.error = `>${this.opts.capS}s`;
      else if (!out) result.error = `client failed: ${client.log.trim().slice(-300)}`;
      else if (!out.ok) result.error = `sha256/size mismatch: ${out.why}`;
      else result.ms = out.ms as number;
      if (out && v.direction === "upload") result.senderInfo = out.info as TcpInfo;
      // Printed at connect, so our stats are found for a transfer killed at the cap too.
      lport = jsonLines(client.log).find((r) => "lport" in r)?.lport as number | undefined;
    } finally {
      if (capture) {
        await capture.stop();
        this.#current.delete(capture);
        const m = /received\/dropped on interface '[^']+': \d+\/(\d+)/.exec(capture.log);
        if (m) captureDrops = Number(m[1]);
      }
      if (netem) {
        await netem.stop();
        this.#current.delete(netem);
        const m = /seen=\d+.*/.exec(netem.log);
        if (m) {
          result.netem = Object.fromEntries(
            m[0].trim().split(" ").map((kv) => kv.split("=")).map(([k, n]) => [k, Number(n)]),
          );
        }
      }
    }
    if (v.direction === "download" && v.path === "linux") {
      const rec = await waitFor(
        "the target's record",
        () => jsonLines(this.target.log).find((r) => r.id === id),
        { timeoutMs: 5000 },
      )
        .catch(() => undefined);
      result.senderInfo = rec?.info as TcpInfo | undefined;
    }
    if (v.path === "ours" && this.ours && lport !== undefined) {
      const ours = this.ours;
      const rec = await waitFor(
        "our tcp-close record",
        () =>
          jsonLines(ours.log.slice(oursLogStart)).find((r) =>
            r.event === "tcp-close" && r.tcp !== undefined &&
            String(r.source).endsWith(`:${lport}`) // the CLI writes endpoints as address:port
          ),
        { timeoutMs: 5000 },
      ).catch(() => undefined);
      result.ours = rec?.tcp as Record<string, unknown> | undefined;
    }
    if (v.direction === "download" && v.path === "ours") {
      result.senderRetrans = result.ours?.retransmits as number | undefined;
      result.senderSpurious = result.ours?.spuriousRecoveries as number | undefined;
    } else {
      result.senderRetrans = result.senderInfo?.totalRetrans;
      result.senderSpurious = result.senderInfo?.dsackDups;
    }
    if (capture) {
      const dataSrc = v.direction === "download"
        ? (v.path === "ours" ? TARGET_OURS : TARGET_BASE)
        : (v.path === "ours" ? "192.0.2.6" : "192.0.2.2");
      try {
        result.capture = { ...await analyze(pcap, dataSrc), captureDrops };
      } catch (error) {
        console.error(`tshark: ${(error as Error).message}`);
      }
      if (this.opts.keepCaptures) {
        await Deno.mkdir(this.opts.keepCaptures, { recursive: true });
        await Deno.rename(
          pcap,
          `${this.opts.keepCaptures}/${id}-${v.direction}-${v.path}-${v.cc}.pcap`,
        ).catch(() => {});
      }
      await Deno.remove(pcap).catch(() => {});
    }
    return result;
  }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

interface Summary {
  cell: string;
  variant: string;
  /** Median seconds; `Infinity` when the median run hit the cap or failed. */
  seconds: number;
  runs: number;
  failed: number;
  /** Medians of the per-transfer figures (see {@linkcode Transfer} and {@linkcode CaptureStats}). */
  senderRetrans?: number;
  senderSpurious?: number;
  /** Our retransmission timeouts (downloads through ours). */
  oursTimeouts?: number;
  duplicates?: number;
  dsacks?: number;
}

function summarize(transfers: Transfer[]): Summary[] {
  const groups = new Map<string, Transfer[]>();
  for (const t of transfers) {
    const k = `${t.cell}\u0000${t.variant}`;
    groups.set(k, [...groups.get(k) ?? [], t]);
  }
  return [...groups.values()].map((ts) => {
    const med = (f: (t: Transfer) => number | undefined) => {
      const xs = ts.map(f).filter((x) => x !== undefined);
      return xs.length ? median(xs) : undefined;
    };
    return {
      cell: ts[0].cell,
      variant: ts[0].variant,
      seconds: median(ts.map((t) => t.ms === null ? Infinity : t.ms / 1000)),
      runs: ts.length,
      failed: ts.filter((t) => t.ms === null).length,
      senderRetrans: med((t) => t.senderRetrans),
      senderSpurious: med((t) => t.senderSpurious),
      oursTimeouts: med((t) => t.ours?.timeouts as number | undefined),
      duplicates: med((t) => t.capture?.duplicates),
      dsacks: med((t) => t.capture?.dsacks),
    };
  });
}

function fmtS(s: number | undefined, cap: number): string {
  if (s === undefined) return "-";
  return Number.isFinite(s) ? s.toFixed(s >= 10 ? 1 : 2) : `>${cap}`;
}

function ratio(a: number | undefined, b: number | undefined, cap: number): string {
  if (a === undefined || b === undefined) return "-";
  if (!Number.isFinite(a)) return Number.isFinite(b) ? `>${(cap / b).toFixed(1)}×` : "?";
  if (!Number.isFinite(b)) return "<1×";
  return `${(a / b).toFixed(2)}×`;
}

function num(x: number | undefined): string {
  return x === undefined ? "-" : String(Math.round(x));
}

function printTables(summary: Summary[], opts: Options, loads: Map<string, string>): void {
  const get = (cell: string, variant: string) =>
    summary.find((s) => s.cell === cell && s.variant === variant);
  const cap = opts.capS;
  const t = (s: Summary | undefined) => fmtS(s?.seconds, cap);
  const rd = (s: Summary | undefined) => `${num(s?.senderRetrans)} / ${num(s?.duplicates)}`;
  const lines: string[] = [];
  if (opts.directions.includes("download")) {
    lines.push(
      `\n### Download (target → client: ours or Linux sends on the lossy leg), ${opts.sizeMb} MB, median of ${opts.runs}\n`,
      "| cell (loss delay reorder) | load | ours s | Linux-BBR s | Linux-CUBIC s | ours/BBR | ours/CUBIC " +
        "| retx / dup ours | Linux-BBR | Linux-CUBIC | ours: RTOs / undone recoveries |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
    );
    for (const cell of opts.cells) {
      const o = get(cell.label, "down ours");
      const b = get(cell.label, "down linux-bbr");
      const c = get(cell.label, "down linux-cubic");
      lines.push(
        `| ${cell.label} | ${loads.get(cell.label)} | ${t(o)} | ${t(b)} | ${t(c)} | ` +
          `${ratio(o?.seconds, b?.seconds, cap)} | ${ratio(o?.seconds, c?.seconds, cap)} | ` +
          `${rd(o)} | ${rd(b)} | ${rd(c)} | ${num(o?.oursTimeouts)} / ${num(o?.senderSpurious)} |`,
      );
    }
    lines.push(
      "\nretx = segments the sender retransmitted (ours: its stats; Linux: TCP_INFO total_retrans); " +
        "dup = segments that reached the client with data it already had (spurious retransmissions " +
        "that arrived; from the capture).",
    );
  }
  if (opts.directions.includes("upload")) {
    lines.push(
      `\n### Upload (client → target: Linux sends, ours or Linux receives), ${opts.sizeMb} MB, median of ${opts.runs}\n`,
      "| cell (loss delay reorder) | client CC | ours s | Linux s | ours/Linux | sender retx → ours " +
        "| → Linux | DSACKs from ours | from Linux |",
      "|---|---|---|---|---|---|---|---|---|",
    );
    for (const cell of opts.cells) {
      for (const cc of ["bbr", "cubic"]) {
        const o = get(cell.label, `up ours<-${cc}`);
        const l = get(cell.label, `up linux<-${cc}`);
        if (!o && !l) continue;
        lines.push(
          `| ${cell.label} | ${cc} | ${t(o)} | ${t(l)} | ${ratio(o?.seconds, l?.seconds, cap)} | ` +
            `${num(o?.senderRetrans)} | ${num(l?.senderRetrans)} | ${num(o?.dsacks)} | ${
              num(l?.dsacks)
            } |`,
        );
      }
    }
    lines.push(
      "\nsender retx = the Linux client's TCP_INFO total_retrans; DSACKs = ACKs with a DSACK block " +
        "seen at the client (how a receiver tells the sender a retransmission was spurious).",
    );
  }
  console.log(lines.join("\n"));
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

async function checkTools(opts: Options): Promise<string[]> {
  const problems: string[] = [];
  const cap = await canRunNetns();
  if (!cap.ok) problems.push(cap.reason);
  const tools = ["python3", "sysctl"];
  if (opts.capture) tools.push("dumpcap", "tshark");
  for (const t of tools) if (!await which(t)) problems.push(`missing on PATH: ${t}`);
  if (!await which("iptables-legacy") && !await which("iptables")) {
    problems.push("missing on PATH: iptables-legacy or iptables");
  }
  try {
    await Deno.stat(NETEM);
  } catch {
    problems.push(`impairment tool not found at ${NETEM}`);
  }
  return problems;
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = parseOptions(Deno.args);
  } catch (error) {
    console.error(`impaired_bench: ${(error as Error).message}`);
    return 2;
  }
  const problems = await checkTools(opts);
  if (problems.length) {
    console.error(`impaired_bench cannot run:\n  ${problems.join("\n  ")}`);
    console.error("(Debian: apt-get install wireguard-go wireguard-tools iptables tshark)");
    return 2;
  }
  const vs = variants(opts);
  const est = estimateSeconds(opts);
  console.log(
    `${opts.cells.length} cells × ${vs.length} transfers × ${opts.runs} runs of ${opts.sizeMb} MB, ` +
      `cap ${opts.capS} s: roughly ${Math.round(est / 60)} min (a guess from the Mathis model)`,
  );
  console.log(`load average at start: ${loadavg()} (nproc ${navigator.hardwareConcurrency})`);

  const bench = new Bench(opts);
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    console.error("\ninterrupted: cleaning up");
    bench.cleanup().finally(() => Deno.exit(130));
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, onSignal);

  const transfers: Transfer[] = [];
  const loads = new Map<string, string>();
  const started = new Date().toISOString();
  try {
    await bench.setup();
    // Handshakes and first-connection costs out of the way, unimpaired.
    for (const v of vs.filter((v) => v.direction === "download")) {
      await bench.transfer(v, { label: "warm-up" }, 0);
    }
    for (const cell of opts.cells) {
      const load = loadavg();
      loads.set(cell.label, load);
      console.log(`\n== cell ${cell.label}: load average ${load}`);
      for (let r = 0; r < opts.runs; r++) {
        for (const v of vs) {
          if (interrupted) return 130;
          const t = await bench.transfer(v, cell, r);
          transfers.push(t);
          const c = t.capture;
          console.log(
            `  run ${r + 1} ${v.key.padEnd(18)} ${
              t.ms === null ? t.error : `${(t.ms / 1000).toFixed(2)} s`
            }  retx ${t.senderRetrans ?? "-"} spurious ${t.senderSpurious ?? "-"}` +
              (c
                ? `  capture: dup ${c.duplicates} dsack ${c.dsacks}` +
                  (c.captureDrops ? ` drops ${c.captureDrops}` : "")
                : "") +
              (t.udpRcvbufErrors && (t.udpRcvbufErrors.c || t.udpRcvbufErrors.s)
                ? `  udp-rcvbuf-drops C ${t.udpRcvbufErrors.c} S ${t.udpRcvbufErrors.s}`
                : "") +
              (t.netemCpuShare !== undefined
                ? `  netem cpu ${(t.netemCpuShare * 100).toFixed(0)}%`
                : ""),
          );
        }
      }
    }
    const summary = summarize(transfers);
    printTables(summary, opts, loads);
    if (opts.json) {
      await Deno.writeTextFile(
        opts.json,
        JSON.stringify(
          {
            started,
            finished: new Date().toISOString(),
            iptables: bench.iptables,
            options: { ...opts, servers: [...opts.servers] },
            summary: summary.map((s) => ({
              ...s,
              seconds: Number.isFinite(s.seconds) ? s.seconds : null,
            })),
            transfers,
          },
          null,
          2,
        ) + "\n",
      );
      console.log(`\nJSON written to ${opts.json}`);
    }
    console.log(`load average at end: ${loadavg()}`);
    return 0;
  } catch (error) {
    console.error(`impaired_bench failed: ${(error as Error).stack ?? error}`);
    return 1;
  } finally {
    await bench.cleanup();
    for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(sig, onSignal);
  }
}

if (import.meta.main) Deno.exit(await main());
