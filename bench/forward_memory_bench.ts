/**
 * Memory per idle forwarded TCP connection, on loopback (no root needed):
 * `serve({ forward })` in a fresh process per round, our own WireGuard
 * client (tests/_client.ts) in another process opening N connections
 * through the tunnel, each dialled by the server and held open, silent, by a
 * Python service. The server process reports `Deno.memoryUsage()` (after a
 * full GC) with 0 connections — the baseline, same process — and with N;
 * printed per connection, medians over the rounds.
 *
 * The server dials the service on 127.0.0.1 through `forward.connect` (the
 * client's stack does not talk to a loopback address), so the relay is the
 * real one: `Deno.connect` upstream, the netstack connection downstream.
 *
 * ```sh
 * deno run -A bench/forward_memory_bench.ts [N] [ROUNDS] [OPTIONS]
 *   --baseline=DIR    also run the bench of another checkout (e.g. the previous
 *                     commit: `git worktree add /tmp/prev HEAD~1`), rounds alternating
 *   --v8=FLAGS        also run with these V8 flags (e.g. --v8=--max-semi-space-size=4)
 *   --mode=MODE       forward (default); fake: an upstream with no socket that never
 *                     answers (the relay's own cost); plain: no forwarding, one pending
 *                     read per connection (the netstack and serve() only)
 * ```
 * `WGSTACK_MEM_SNAPSHOT=DIR` writes V8 heap snapshots of the server with 0
 * and with N connections there (`base.heapsnapshot`, `loaded.heapsnapshot`).
 *
 * Each variant (this checkout, the baseline, each with and without the V8
 * flags) runs once per round, in turn; the summary gives medians and ratios
 * to the first variant. N above half of `ulimit -n` needs more upstream
 * sockets per peer than the default; this bench raises `peerUpstreamSockets`
 * to fit N.
 */

import { keyFromBase64 } from "@wgstack/wireguard";
import type { TcpConnection } from "@wgstack/netstack";
import { median } from "./_topology.ts";
import { HOLD_TCP_PY } from "../tests/_services.ts";

const SELF = new URL(import.meta.url).pathname;
const TARGET = "198.18.99.1";

/** `--mode=fake`: an upstream with no socket that never answers. */
const NEVER = new Promise<never>(() => {});
const FAKE_UPSTREAM = {
  read: () => NEVER,
  write: (p: Uint8Array) => Promise.resolve(p.length),
  closeWrite: () => Promise.resolve(),
  close() {},
};

if (Deno.args[0] === "--client") await client(Deno.args.slice(1));
else if (Deno.args[0] === "--server") await server(Deno.args.slice(1));
else await main();

interface Variant {
  name: string;
  script: string;
  v8: string;
}

/** Runs the rounds and prints the figures. */
async function main(): Promise<void> {
  const positional = Deno.args.filter((a) => !a.startsWith("--"));
  const option = (name: string) =>
    Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const n = Number(positional[0] ?? 10_000);
  const rounds = Number(positional[1] ?? 3);
  const baseline = option("baseline");
  const flags = option("v8");
  const mode = option("mode") ?? "forward";
  const trees = [{ name: "this checkout", script: SELF }];
  if (baseline) {
    trees.push({
      name: `baseline ${baseline}`,
      script: `${baseline}/bench/forward_memory_bench.ts`,
    });
  }
  const variants: Variant[] = trees.flatMap((t) => [
    { ...t, v8: "" },
    ...(flags ? [{ ...t, name: `${t.name} ${flags}`, v8: `,${flags}` }] : []),
  ]);
  const dir = await Deno.makeTempDir({ prefix: "wgstack-mem-" });
  try {
    await Deno.writeTextFile(`${dir}/hold.py`, HOLD_TCP_PY);
    const rows = new Map<Variant, Record<string, number>[]>(variants.map((v) => [v, []]));
    for (let round = 0; round < rounds; round++) {
      for (const v of variants) {
        const out = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            `--v8-flags=--expose-gc${v.v8}`,
            v.script,
            "--server",
            String(n),
            dir,
          ],
          env: { WGSTACK_MEM_MODE: mode },
          stdout: "piped",
          stderr: "inherit",
        }).output();
        const text = new TextDecoder().decode(out.stdout);
        const line = text.split("\n").find((l) => l.startsWith("{"));
        if (!out.success || !line) throw new Error(`round ${round + 1} failed:\n${text}`);
        const row = JSON.parse(line) as Record<string, number>;
        rows.get(v)!.push(row);
        console.log(
          `round ${round + 1}, ${v.name}: ${row.connections} idle connections; per connection ` +
            `RSS ${kib(row.rss)}, heap used ${kib(row.heapUsed)}, heap total ${
              kib(row.heapTotal)
            }, external ${kib(row.external)} KiB; RSS ${mib(row.rssBase)} → ${
              mib(row.rssLoaded)
            } MiB`,
        );
      }
    }
    const first = variants[0];
    const m = (v: Variant, k: string) => median(rows.get(v)!.map((r) => r[k]));
    console.log(
      `medians of ${rounds} rounds (mode ${mode}; the baseline of each round is the same server process with 0 connections):`,
    );
    for (const v of variants) {
      const ratio = v === first
        ? ""
        : ` (${(m(v, "rss") / m(first, "rss")).toFixed(2)}× ${first.name})`;
      console.log(
        `  ${v.name}: ${kib(m(v, "rss"))} KiB RSS per idle forwarded TCP connection${ratio}, ` +
          `heap used ${kib(m(v, "heapUsed"))} KiB; ${m(v, "connections")} connections: RSS ${
            mib(m(v, "rssBase"))
          } → ${mib(m(v, "rssLoaded"))} MiB`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function kib(bytes: number): string {
  return (bytes / 1024).toFixed(1);
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

/** The server process: baseline, N connections, figures as one JSON line. */
async function server([nText, dir]: string[]): Promise<void> {
  const { serve } = await import("@wgstack/server");
  const { generatePrivateKey, keyToBase64, publicKey } = await import("@wgstack/wireguard");
  const n = Number(nText);
  const mode = Deno.env.get("WGSTACK_MEM_MODE") ?? "forward";
  const holdPort = 30_000 + Math.floor(Math.random() * 20_000);
  const holder = new Deno.Command("python3", {
    args: [`${dir}/hold.py`, "127.0.0.1", String(holdPort)],
    stdout: "piped",
  }).spawn();
  const ready = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
  while (!((await ready.read()).value ?? "").includes("ready"));
  const serverKey = generatePrivateKey(), clientKey = generatePrivateKey();
  const srv = await serve({
    privateKey: serverKey,
    hostname: "127.0.0.1",
    port: 0,
    peers: [{ publicKey: publicKey(clientKey), allowedIps: ["10.7.0.2/32"] }],
    ...(mode === "plain"
      ? { onTcp: (s: { read(): Promise<unknown> }) => void s.read().catch(() => {}) }
      : {
        forward: {
          connect: mode === "fake"
            ? () => Promise.resolve(FAKE_UPSTREAM)
            : (_host: string, port: number, signal: AbortSignal) =>
              Deno.connect({ hostname: "127.0.0.1", port, signal }),
          limits: { peerUpstreamSockets: n + 16, upstreamSockets: n + 64 },
        },
      }),
  });
  const gc = (globalThis as { gc?: () => void }).gc!;
  const measure = () => {
    gc();
    gc();
    return Deno.memoryUsage();
  };
  await new Promise((r) => setTimeout(r, 500));
  const base = measure();
  const snap = Deno.env.get("WGSTACK_MEM_SNAPSHOT");
  const v8 = snap ? await import("node:v8") : undefined;
  if (snap) v8!.writeHeapSnapshot(`${snap}/base.heapsnapshot`);
  const cl = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      SELF,
      "--client",
      srv.publicKey,
      String(srv.addr.port),
      keyToBase64(clientKey),
      String(holdPort),
      String(n),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = cl.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("open")) {
    const { value, done } = await lines.read();
    if (done) throw new Error("the client ended early");
    text += value;
  }
  await new Promise((r) => setTimeout(r, 1500));
  const loaded = measure();
  if (snap) v8!.writeHeapSnapshot(`${snap}/loaded.heapsnapshot`);
  const connections = srv.stats().tcpOpen;
  const per = (k: keyof Deno.MemoryUsage) => (loaded[k] - base[k]) / connections;
  console.log(JSON.stringify({
    connections,
    rss: per("rss"),
    heapUsed: per("heapUsed"),
    heapTotal: per("heapTotal"),
    external: per("external"),
    rssBase: base.rss,
    rssLoaded: loaded.rss,
  }));

  const w = cl.stdin.getWriter();
  await w.write(new Uint8Array([10]));
  await w.close();
  await cl.status;
  holder.kill();
  await holder.status;
  await srv.shutdown();
}

/** The client process: opens N connections in batches, says "open", waits for a line. */
async function client([serverPublicKey, port, key, holdPort, nText]: string[]): Promise<void> {
  const { startTestClient } = await import("../tests/_client.ts");
  const c = startTestClient({
    serverPublicKey: keyFromBase64(serverPublicKey),
    serverPort: Number(port),
    privateKey: keyFromBase64(key),
  });
  await c.handshake();
  const n = Number(nText);
  const conns: TcpConnection[] = [];
  const opening = () => conns.some((x) => x.stats.state === "SYN_SENT");
  for (let i = 0; i < n; i++) {
    conns.push(c.stack.connect({
      localAddress: "10.7.0.2",
      localPort: 10_000 + i,
      remoteAddress: TARGET,
      remotePort: Number(holdPort),
    }, performance.now()));
    if (i % 200 === 199) {
      for (let k = 0; k < 200 && opening(); k++) await new Promise((r) => setTimeout(r, 50));
    }
  }
  while (opening()) await new Promise((r) => setTimeout(r, 200));
  console.log("open", conns.filter((x) => x.stats.state === "ESTABLISHED").length);
  await Deno.stdin.read(new Uint8Array(1));
  c.close();
}
