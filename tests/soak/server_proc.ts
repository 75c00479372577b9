/**
 * `serve()` in a child process of its own, so a soak measures the server's
 * memory, CPU and file descriptors alone (its clients run in the parent).
 * The parent sends the configuration as the first line of the child's stdin,
 * then `sample` lines; the child answers each with one JSON line: RSS, heap
 * after a full GC, CPU time, open descriptors, timer wake-ups (`polls`) and
 * the size of every table.
 *
 * @module
 */

import { serve, type ServeOptions, type ServePeer } from "../../server/serve.ts";
import type { ForwardOptions } from "../../server/forward.ts";
import { spareSocketCount } from "../../server/_dial_ffi.ts";

/** What the child runs: `serve()` with these options. */
export interface ServerProcConfig {
  /** Base64 private key. */
  privateKey: string;
  /** The address the server listens on (default 127.0.0.1). */
  hostname?: string;
  /** The peers. */
  peers: ServePeer[];
  /** Forward mode options (destination policy etc.). */
  forward?: ForwardOptions;
  /** TCP options of the netstack (e.g. a short `timeWait` for CI). */
  tcp?: ServeOptions["tcp"];
  /** Limits, e.g. `{ netstack: { udpIdleTimeout } }`. */
  limits?: ServeOptions["limits"];
  /** `serve()`'s `releaseMemory` (default its own). */
  releaseMemory?: ServeOptions["releaseMemory"];
  /** Echo TCP and UDP instead of forwarding (when `forward` is absent). */
  echo?: boolean;
}

/** One measurement of the child. */
export interface ServerSample {
  /** Resident set size (bytes), after the GC. */
  rss: number;
  /** V8 heap in use after a full GC (bytes). */
  heapUsed: number;
  /** V8 heap reserved (bytes). */
  heapTotal: number;
  /** Memory outside the V8 heap held by JavaScript objects, e.g. ArrayBuffers (bytes). */
  external: number;
  /** User + system CPU time of the process so far (ms). */
  cpuMs: number;
  /** Timer wake-ups and queued-work turns of the server so far. */
  polls: number;
  /** Table sizes: WireGuard, netstack, forwarder, descriptors. */
  tables: Record<string, number>;
  /**
   * Resident anonymous (`anon`) and file-backed (`file`: the binary's code
   * pages, which the kernel may drop and read again) memory, and glibc's
   * heap when there is one (`arena`, `mmapped`, `inUse`, `free`), in bytes.
   */
  memory: Record<string, number>;
  /** Times the server gave memory back (`malloc_trim` after churn) so far. */
  trims: number;
  /** The longest of those trims (ms, wall time of the off-thread call). */
  trimMs: number;
}

/** A running server child. */
export class ServerProcess {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;
  /** The server's UDP port (on 127.0.0.1 unless the config names another address). */
  readonly port: number;
  /** The child's pid. */
  readonly pid: number;

  private constructor(
    child: Deno.ChildProcess,
    writer: WritableStreamDefaultWriter<Uint8Array>,
    lines: AsyncIterator<string>,
    port: number,
  ) {
    this.#child = child;
    this.#writer = writer;
    this.#lines = lines;
    this.port = port;
    this.pid = child.pid;
  }

  /** Starts the child (inside namespace `ns` when given) and waits until it listens. */
  static async start(config: ServerProcConfig, ns?: string): Promise<ServerProcess> {
    const argv = [
      Deno.execPath(),
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      new URL(import.meta.url).pathname,
    ];
    const [cmd, ...args] = ns === undefined ? argv : ["ip", "netns", "exec", ns, ...argv];
    const child = new Deno.Command(cmd, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    })
      .spawn();
    const writer = child.stdin.getWriter();
    const lines = readLines(child.stdout)[Symbol.asyncIterator]();
    await writer.write(new TextEncoder().encode(JSON.stringify(config) + "\n"));
    const first = await lines.next();
    if (first.done) throw new Error("The server process ended before it listened");
    return new ServerProcess(child, writer, lines, JSON.parse(first.value).port);
  }

  /**
   * A measurement, after a full GC in the child unless `gc` is false
   * (cheaper, for CPU); `"reduce"`: then also V8's memory-reducing GC (the
   * one V8 runs by itself about 30 s after the process went idle), which
   * gives V8's free pages back; measured 500 ms later, after what the
   * server does on a GC.
   */
  async sample(gc: boolean | "reduce" = true): Promise<ServerSample> {
    const kind = gc === "reduce" ? "reduce" : gc ? "sample" : "peek";
    await this.#writer.write(new TextEncoder().encode(kind + "\n"));
    const line = await this.#lines.next();
    if (line.done) throw new Error("The server process ended");
    return JSON.parse(line.value);
  }

  /** Writes a V8 heap snapshot of the child to `path` (for finding what holds memory). */
  async snapshot(path: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(`snapshot ${path}\n`));
    await this.#lines.next();
  }

  /** Shuts the server down and waits for the child. */
  async close(): Promise<void> {
    try {
      await this.#writer.write(new TextEncoder().encode("quit\n"));
      await this.#writer.close();
    } catch {
      // already gone
    }
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 10_000);
    await this.#child.status;
    clearTimeout(timer);
  }

  /** Same as {@linkcode ServerProcess.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** The lines of a byte stream. */
async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
      yield buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
    }
  }
}

/** User + system CPU ms of this process (Linux `/proc/self/stat`). */
function cpuMs(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10; // clock ticks of 10 ms
}

/** Resident anonymous and file-backed memory (bytes, Linux `/proc/self/status`). */
function rssParts(): { anon: number; file: number } {
  const status = Deno.readTextFileSync("/proc/self/status");
  const kb = (name: string) =>
    Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) * 1024;
  return { anon: kb("RssAnon"), file: kb("RssFile") };
}

function openFds(): number {
  let n = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
  return n;
}

/** glibc through FFI, for the samples (`null` elsewhere). */
let libc: ReturnType<typeof openLibc> | null | undefined;
function openLibc() {
  return Deno.dlopen("libc.so.6", {
    malloc_trim: { parameters: ["usize"], result: "i32" },
    mallinfo2: { parameters: [], result: { struct: Array(10).fill("usize") } },
  }).symbols;
}
function glibc(): ReturnType<typeof openLibc> | null {
  if (libc === undefined) {
    try {
      libc = openLibc();
    } catch {
      libc = null;
    }
  }
  return libc;
}

/**
 * glibc's heap (`mallinfo2`): bytes from the system (`arena`: heaps,
 * `mmapped`: blocks mapped on their own), in use and free.
 */
function mallocInfo(): Record<string, number> {
  const info = glibc()?.mallinfo2();
  if (!info) return {};
  const v = new BigUint64Array(info.buffer, info.byteOffset, 10);
  return { arena: Number(v[0]), mmapped: Number(v[4]), inUse: Number(v[7]), free: Number(v[8]) };
}

async function child(): Promise<void> {
  const lines = readLines(Deno.stdin.readable)[Symbol.asyncIterator]();
  const first = await lines.next();
  const config: ServerProcConfig = JSON.parse(first.value);
  let trims = 0, trimMs = 0;
  const server = await serve({
    privateKey: config.privateKey,
    hostname: config.hostname ?? "127.0.0.1",
    port: 0,
    peers: config.peers,
    forward: config.forward,
    tcp: config.tcp,
    limits: config.limits,
    shutdownTimeout: 500,
    releaseMemory: config.releaseMemory,
    logger: (r) => {
      if (r.event === "memory-trim") {
        trims++;
        trimMs = Math.max(trimMs, r.ms as number);
      }
      if (r.event === "memory" && !r.release) {
        console.error(`serve() leaves memory to the allocator: ${r.reason}`);
      }
    },
    ...(config.forward === undefined && config.echo
      ? {
        onTcp: (c) => void c.readable.pipeTo(c.writable).catch(() => {}),
        onUdp: (f) => void f.readable.pipeTo(f.writable).catch(() => {}),
      }
      : {}),
  });
  const out = (value: unknown) => console.log(JSON.stringify(value));
  out({ port: server.addr.port });
  for (let line = await lines.next(); !line.done; line = await lines.next()) {
    if (line.value === "quit") break;
    if (line.value.startsWith("snapshot ")) {
      (await import("node:v8")).writeHeapSnapshot(line.value.slice(9));
      out({ snapshot: true });
      continue;
    }
    if (line.value === "sample" || line.value === "reduce") {
      // Twice: array buffers that one full GC found dead are freed by the next
      // (until then `external` still counts them).
      (globalThis as { gc?: () => void }).gc?.();
      (globalThis as { gc?: () => void }).gc?.();
    }
    if (line.value === "reduce") {
      (globalThis as { gc?: (o?: unknown) => void }).gc?.({
        type: "major",
        execution: "sync",
        flavor: "last-resort",
      });
      // The server reacts to a GC (serve() trims after the GCs that follow
      // a quiet spell): give it a moment, as a real GC would.
      await new Promise((r) => setTimeout(r, 500));
    }
    // An experiment knob: how much of the RSS is free memory glibc kept.
    if (Deno.env.get("WGSTACK_SOAK_TRIM")) glibc()?.malloc_trim(0n);
    const s = server.stats();
    const tcp = s.netstack.tcp.layer;
    const memory = Deno.memoryUsage();
    out({
      rss: memory.rss,
      heapUsed: memory.heapUsed,
      heapTotal: memory.heapTotal,
      external: memory.external,
      cpuMs: cpuMs(),
      polls: s.polls,
      memory: { ...rssParts(), ...mallocInfo() },
      trims,
      trimMs,
      tables: {
        peers: s.wireguard.peers,
        indices: s.wireguard.indexTableSize,
        queued: s.wireguard.queuedPackets,
        rateLimiter: s.wireguard.rateLimiterSize,
        tcpConnections: tcp?.connections ?? 0,
        tcpHalfOpen: tcp?.halfOpen ?? 0,
        timeWait: tcp?.timeWait ?? 0,
        tcpTimers: tcp?.timers ?? 0,
        udpFlows: s.netstack.udp.flows,
        fragments: s.netstack.fragments.datagrams,
        tcpOpen: s.tcpOpen,
        udpOpen: s.udpOpen,
        pendingDials: s.forward?.pendingDials ?? 0,
        upstreamSockets: s.forward?.upstreamSockets ?? 0,
        // The dialler's spare sockets (a fixed pool, made after the first
        // dial) are not a leak: counted on their own, not in `fds`.
        spareSockets: spareSocketCount(),
        fds: openFds() - spareSocketCount(),
      },
    });
  }
  await server.shutdown();
  Deno.exit(0);
}

if (import.meta.main) await child();
