/**
 * Where a TCP connect's time goes, from packet captures at three points of
 * `server_bench.ts`'s topology (`--stages`): the client's tunnel interface
 * (inner packets: the SYN the client's kernel hands to wireguard-go, the
 * SYN-ACK wireguard-go writes back), the client's end of the veth and the
 * server's end (the encrypted datagrams). Each timed connect of the latency
 * client (its start and duration, wall clock) is matched to its SYN by time
 * and to its SYN-ACK by port, and split into:
 *
 * - `clientOut`: `connect()` called → SYN in the tunnel interface (client kernel);
 * - `wgClientSend`: SYN in the tunnel → its datagram on the client's veth (wireguard-go);
 * - `server`: datagram at the server's veth → the server's first datagram
 *   back (the server: wake-up, decryption, forwarding or dial, SYN-ACK,
 *   encryption);
 * - `wgClientReceive`: that datagram at the client's veth → SYN-ACK in the
 *   tunnel (wireguard-go);
 * - `clientIn`: SYN-ACK in the tunnel → `connect()` returned (client kernel,
 *   wake-up of the client).
 *
 * The wire between the veth ends takes ~1 µs and is left out. Captures cost
 * CPU on this 2-core VM: the totals run higher than without them, for both
 * servers alike.
 *
 * @module
 */

import type { Netns } from "../tests/netns.ts";

/** The stages of one connect, µs (see the module doc). */
export const STAGES = [
  "clientOut",
  "wgClientSend",
  "server",
  "wgClientReceive",
  "clientIn",
] as const;
/** A stage's name. */
export type Stage = typeof STAGES[number];

/** Median, p90 and p99 of each stage and of the total, µs, and which stage made the slow connects slow. */
export interface StageReport {
  /** Connects matched to their packets. */
  matched: number;
  /** Connects in the trace. */
  connects: number;
  median: Record<Stage | "total", number>;
  p90: Record<Stage | "total", number>;
  p99: Record<Stage | "total", number>;
  /** For the slowest 2 % of connects: how often each stage was their largest. */
  slowestBy: Record<Stage, number>;
}

/** The interfaces to capture on. */
export interface StagePoints {
  client: Netns;
  server: Netns;
  /** The client's tunnel interface (in `client`). */
  tunnel: string;
  /** The client's end of the client–server veth. */
  clientLink: string;
  /** The server's end of it. */
  serverLink: string;
}

/** Whether `dumpcap` and `tshark` are installed. */
export async function stagesAvailable(): Promise<boolean> {
  for (const tool of ["dumpcap", "tshark"]) {
    try {
      const r = await new Deno.Command(tool, {
        args: ["--version"],
        stdout: "null",
        stderr: "null",
      })
        .output();
      if (!r.success) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/**
 * Starts the three captures; `finish(trace)` stops them and matches them to
 * the latency client's trace file (lines `t0Mono durationNs totalNs t0WallNs`).
 */
export async function captureStages(
  points: StagePoints,
  dir: string,
): Promise<{ finish(trace: string): Promise<StageReport> }> {
  const files = {
    tunnel: `${dir}/tunnel.pcapng`,
    clientLink: `${dir}/client-link.pcapng`,
    serverLink: `${dir}/server-link.pcapng`,
  };
  const start = (ns: Netns, iface: string, file: string, filter?: string) =>
    new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        ns.name,
        "dumpcap",
        "-q",
        "-i",
        iface,
        "-s",
        "96",
        ...(filter ? ["-f", filter] : []),
        "-w",
        file,
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
  const procs = [
    start(points.client, points.tunnel, files.tunnel, "tcp"),
    start(points.client, points.clientLink, files.clientLink, "udp"),
    start(points.server, points.serverLink, files.serverLink, "udp"),
  ];
  // dumpcap says "File: …" on stderr once it captures.
  await Promise.all(procs.map(async (p) => {
    const reader = p.stderr.getReader();
    let text = "";
    const dec = new TextDecoder();
    const deadline = Date.now() + 10_000;
    while (!text.includes("File:") && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value);
    }
    reader.releaseLock();
    void p.stderr.cancel().catch(() => {});
    if (!text.includes("File:")) throw new Error(`dumpcap did not start: ${text.trim()}`);
  }));
  return {
    async finish(trace: string): Promise<StageReport> {
      // The last packets are in by the time the client printed its result.
      await new Promise((r) => setTimeout(r, 200));
      for (const p of procs) {
        try {
          p.kill("SIGINT");
        } catch {
          // gone
        }
      }
      await Promise.all(procs.map((p) => p.status));
      const tunnel = await fields(files.tunnel, [
        "frame.time_epoch",
        "tcp.srcport",
        "tcp.dstport",
        "tcp.flags",
      ]);
      const clientLink = await fields(files.clientLink, ["frame.time_epoch", "ip.src"]);
      const serverLink = await fields(files.serverLink, ["frame.time_epoch", "ip.src"]);
      return splitStages(await Deno.readTextFile(trace), tunnel, clientLink, serverLink);
    },
  };
}

async function fields(file: string, names: string[]): Promise<string[][]> {
  const args = ["-r", file, "-T", "fields"];
  for (const n of names) args.push("-e", n);
  const r = await new Deno.Command("tshark", { args, stdout: "piped", stderr: "null" }).output();
  return new TextDecoder().decode(r.stdout).split("\n").filter((l) => l).map((l) => l.split("\t"));
}

/** The index of the first value in sorted `xs` above `t` (`orEqual`: at or above). */
function bound(xs: number[], t: number, orEqual: boolean): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < t || (!orEqual && xs[mid] === t)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The first value in sorted `xs` at or after `t`, or undefined. */
const after = (xs: number[], t: number): number | undefined => xs[bound(xs, t, true)];
/** The last value in sorted `xs` at or before `t`, or undefined. */
const before = (xs: number[], t: number): number | undefined => xs[bound(xs, t, false) - 1];

/** The `q` quantile of `xs` (the value at index ⌊n·q⌋ of the sorted list, as the latency client's `pct`); NaN when empty. */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))] ?? NaN;
}

/**
 * Matches the trace to the captures (rows of `tshark -T fields`): exported
 * for its unit test.
 */
export function splitStages(
  trace: string,
  tunnel: string[][],
  clientLink: string[][],
  serverLink: string[][],
): StageReport {
  // The client's veth address is the source of the first datagram (its
  // handshake initiation came first).
  const clientIp = clientLink[0]?.[1];
  const syns: { t: number; port: string }[] = [];
  const synAcks = new Map<string, number>();
  for (const [t, sport, dport, flags] of tunnel) {
    const f = parseInt(flags, 16);
    if (f === 0x02) syns.push({ t: Number(t), port: sport });
    else if (f === 0x12 && !synAcks.has(dport)) synAcks.set(dport, Number(t));
  }
  const synTimes = syns.map((s) => s.t);
  const split = (rows: string[][]) => {
    const out: number[] = [];
    const back: number[] = [];
    for (const [t, src] of rows) (src === clientIp ? out : back).push(Number(t));
    return { out, back };
  };
  const cl = split(clientLink);
  const sl = split(serverLink);
  const rows: Record<Stage | "total", number>[] = [];
  let connects = 0;
  for (const line of trace.split("\n")) {
    const parts = line.trim().split(/\s+/).map(Number);
    if (parts.length < 4) continue;
    connects++;
    const t0 = parts[3] / 1e9;
    const t1 = t0 + parts[1] / 1e9;
    const syn = syns[bound(synTimes, t0, true)];
    if (!syn || syn.t > t1) continue;
    // Out: the first datagram after the SYN entered the tunnel. Back: the
    // last datagram before the SYN-ACK left it (a datagram answering the
    // previous connection's FIN may come between the SYN and its SYN-ACK).
    const sent = after(cl.out, syn.t);
    const arrived = after(sl.out, syn.t);
    const synAck = synAcks.get(syn.port);
    const back = synAck === undefined ? undefined : before(cl.back, synAck);
    const answered = back === undefined ? undefined : before(sl.back, back);
    if (
      sent === undefined || arrived === undefined || answered === undefined ||
      back === undefined || synAck === undefined || synAck > t1 + 1e-3 || answered < arrived
    ) continue;
    const us = (x: number) => Math.max(0, x * 1e6);
    rows.push({
      total: parts[1] / 1e3,
      clientOut: us(syn.t - t0),
      wgClientSend: us(sent - syn.t),
      server: us(answered - arrived),
      wgClientReceive: us(synAck - back),
      clientIn: us(t1 - synAck),
    });
  }
  const stat = (q: number) => {
    const r = {} as Record<Stage | "total", number>;
    for (const k of [...STAGES, "total"] as const) r[k] = quantile(rows.map((x) => x[k]), q);
    return r;
  };
  const slowestBy = {} as Record<Stage, number>;
  for (const k of STAGES) slowestBy[k] = 0;
  const slow = [...rows].sort((a, b) => b.total - a.total).slice(
    0,
    Math.max(1, Math.ceil(rows.length / 50)),
  );
  for (const r of rows.length ? slow : []) {
    let worst: Stage = STAGES[0];
    for (const k of STAGES) if (r[k] > r[worst]) worst = k;
    slowestBy[worst]++;
  }
  return {
    matched: rows.length,
    connects,
    median: stat(0.5),
    p90: stat(0.9),
    p99: stat(0.99),
    slowestBy,
  };
}
