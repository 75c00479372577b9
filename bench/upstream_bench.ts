/**
 * What an upstream proxy and hostname sniffing cost, against a direct dial
 * measured in the same run: connection setup time (the client's connect(),
 * which returns when our server's dial — through the proxy — succeeded) and
 * download throughput (iperf3 -R) through a real `wireguard-go` tunnel.
 *
 * Run (root, Linux; needs wireguard-go, wg, ip, iperf3, python3, danted,
 * microsocks, tinyproxy):
 *
 * ```sh
 * deno run -A bench/upstream_bench.ts               # 3 rounds, 3 s iperf3 runs
 * deno run -A bench/upstream_bench.ts --rounds 5 --seconds 5
 * ```
 *
 * Topology (namespaces prefixed `pxb`, deleted at the end):
 *
 * ```
 *  client ns: wireguard-go, iperf3 -c, python ──veth── root: serve({ forward }) in this process
 *                                                      │ ──veth── target ns: iperf3 -s, TCP :8080
 *                                                      └ 127.0.0.1: microsocks :21081, danted :21080,
 *                                                                   tinyproxy :21888 (no auth)
 * ```
 *
 * Paths, interleaved round by round so drift hits all alike, each on a
 * freshly started server after a warm-up: direct (the baseline), direct without sniffing, and through each proxy. Printed:
 * medians and ratios to the direct path (for times and CPU: direct / path,
 * so < 1 means slower or costlier than direct). Server CPU per GB is this
 * process's CPU time (the server; not the proxies') per GB downloaded, a
 * figure that depends less on what else the machine runs than Mbit/s.
 *
 * @module
 */

import { createVeth, Netns, waitFor, wgGenKeyPair, WireGuardGo } from "../tests/netns.ts";
import { waitForTcp } from "../tests/_services.ts";
import { median } from "./_topology.ts";
import { serve, type Server } from "@wgstack/server";
import type { ForwardOptions } from "../server/forward.ts";

const args = Deno.args;
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const ROUNDS = flag("rounds", 3);
const SECONDS = flag("seconds", 3);
const CONNECTS = flag("connects", 30);

const CONNECT_PY = `
import socket, sys, time, json
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ts = []
for i in range(n):
    t = time.perf_counter()
    s = socket.create_connection((host, port), timeout=10)
    ts.append((time.perf_counter() - t) * 1000)
    s.close()
ts.sort()
print(json.dumps({"median": ts[len(ts)//2]}))
`;

const ACCEPT_PY = `
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080)); s.listen(128)
while True:
    c, _ = s.accept(); c.close()
`;

interface Path {
  name: string;
  upstream?: string;
  sniff: boolean;
}

async function main() {
  await using stack = new AsyncDisposableStack();
  const tmp = await Deno.makeTempDir({ prefix: "pxb-" });
  stack.defer(() => Deno.remove(tmp, { recursive: true }));
  const clientNs = stack.use(await Netns.create("pxbc"));
  const targetNs = stack.use(await Netns.create("pxbt"));
  const toClient = stack.use(await createVeth(null, clientNs, { prefix: "pxb" }));
  const toTarget = stack.use(await createVeth(null, targetNs, { prefix: "pxb" }));
  const TARGET = toTarget.b.v4;

  const procs: Deno.ChildProcess[] = [];
  const spawn = (argv: string[]) => {
    const p = new Deno.Command(argv[0], { args: argv.slice(1), stdout: "null", stderr: "null" })
      .spawn();
    procs.push(p);
  };
  stack.defer(async () => {
    for (const p of procs) {
      try {
        p.kill("SIGKILL");
      } catch {
        // gone
      }
      await p.status;
    }
  });
  spawn(["ip", "netns", "exec", targetNs.name, "iperf3", "-s", "-B", TARGET]);
  spawn(["ip", "netns", "exec", targetNs.name, "python3", "-c", ACCEPT_PY, TARGET]);
  await Deno.writeTextFile(
    `${tmp}/danted.conf`,
    `logoutput: /dev/null\ninternal: 127.0.0.1 port = 21080\nexternal: ${toTarget.a.v4}\n` +
      `socksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n` +
      `client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n` +
      `socks pass { from: 127.0.0.0/8 to: ${TARGET}/32 command: connect }\n`,
  );
  await Deno.writeTextFile(
    `${tmp}/tinyproxy.conf`,
    `Port 21888\nListen 127.0.0.1\nUser nobody\nGroup nogroup\nTimeout 60\nMaxClients 100\n` +
      `ConnectPort 5201\nConnectPort 8080\nLogLevel Critical\n`,
  );
  spawn(["danted", "-f", `${tmp}/danted.conf`]);
  spawn(["microsocks", "-i", "127.0.0.1", "-p", "21081"]);
  spawn(["tinyproxy", "-d", "-c", `${tmp}/tinyproxy.conf`]);
  for (const port of [21080, 21081, 21888]) await waitForTcp(`proxy :${port}`, "127.0.0.1", port);
  await waitForTcp("iperf3 -s", TARGET, 5201);
  await waitForTcp("the accept loop", TARGET, 8080);

  const serverKeys = await wgGenKeyPair();
  const clientKeys = await wgGenKeyPair();
  let upstream: string | undefined;
  let server: Server | undefined;
  let port = 0;
  const start = async (extra: Partial<ForwardOptions>) => {
    await server?.shutdown();
    server = await serve({
      privateKey: serverKeys.privateKey,
      hostname: toClient.a.v4,
      port,
      peers: [{ publicKey: clientKeys.publicKey, allowedIps: ["192.0.2.2/32"] }],
      forward: { localAddresses: ["192.0.2.1"], upstream: () => upstream, ...extra },
      logger: () => {},
    });
    port = server.addr.port;
  };
  await start({});
  stack.defer(() => server?.shutdown());
  const wg = await WireGuardGo.start(clientNs, "wg0");
  stack.defer(() => wg.stop());
  const peerArgs = () => [
    "set",
    "wg0",
    "peer",
    serverKeys.publicKey,
    "endpoint",
    `${toClient.a.v4}:${port}`,
    "allowed-ips",
    `192.0.2.0/24,${TARGET}/32`,
  ];
  await wg.configure({ privateKey: clientKeys.privateKey, listenPort: 51820, peers: [] });
  await wg.wg(peerArgs());
  await wg.up({ addresses: ["192.0.2.2/32"], routes: ["192.0.2.0/24", `${TARGET}/32`], mtu: 1420 });

  // Every path runs on a fresh server (a long-lived one would carry the heap of earlier runs).
  const use = async (path: Path) => {
    upstream = path.upstream;
    await start({ sniff: path.sniff });
    await wg.wg(["set", "wg0", "peer", serverKeys.publicKey, "remove"]);
    await wg.wg(peerArgs());
    await connectMs(); // warm-up: the handshake and the first dial
  };
  const connectMs = async () => {
    const r = await clientNs.run(["python3", "-c", CONNECT_PY, TARGET, "8080", String(CONNECTS)]);
    return (JSON.parse(r.stdout) as { median: number }).median;
  };
  /** Download throughput, and this process's CPU seconds per GB moved (the server's cost). */
  const download = async () => {
    const cpu0 = cpuSeconds();
    const r = await clientNs.run(
      ["iperf3", "-c", TARGET, "-t", String(SECONDS), "-R", "-J", "-O", "1"],
      { check: false },
    );
    const cpu = cpuSeconds() - cpu0;
    const json = JSON.parse(r.stdout);
    if (json.error) throw new Error(`iperf3: ${json.error}`);
    const bytes = json.end.sum_received.bytes as number;
    return { mbps: json.end.sum_received.bits_per_second / 1e6, cpuPerGB: cpu / (bytes / 1e9) };
  };

  const paths: Path[] = [
    { name: "direct", sniff: true },
    { name: "direct, no sniffing", sniff: false },
    { name: "socks5 microsocks", upstream: "socks5://127.0.0.1:21081", sniff: true },
    { name: "socks5 dante", upstream: "socks5://127.0.0.1:21080", sniff: true },
    { name: "http tinyproxy", upstream: "http://127.0.0.1:21888", sniff: true },
  ];
  await waitFor("the first connection", async () => (await connectMs(), true), {
    timeoutMs: 20_000,
  });
  const results = new Map(
    paths.map((
      p,
    ) => [p.name, { connect: [] as number[], mbps: [] as number[], cpu: [] as number[] }]),
  );
  for (let round = 0; round < ROUNDS; round++) {
    for (const path of paths) {
      await use(path);
      const r = results.get(path.name)!;
      r.connect.push(await connectMs());
      const d = await download();
      r.mbps.push(d.mbps);
      r.cpu.push(d.cpuPerGB);
      console.error(
        `round ${round + 1} ${path.name}: connect ${r.connect.at(-1)!.toFixed(2)} ms, ` +
          `${d.mbps.toFixed(0)} Mbit/s, ${d.cpuPerGB.toFixed(2)} CPU s/GB`,
      );
    }
  }
  const base = results.get("direct")!;
  const baseConnect = median(base.connect);
  const baseMbps = median(base.mbps);
  const baseCpu = median(base.cpu);
  console.log(
    `\n${ROUNDS} rounds, ${CONNECTS} connects and a ${SECONDS} s download per path per round\n\n` +
      "| path | connect median (ms) | vs direct | download median (Mbit/s) | vs direct | server CPU s/GB | vs direct |\n" +
      "|---|---|---|---|---|---|---|",
  );
  for (const path of paths) {
    const r = results.get(path.name)!;
    const c = median(r.connect), m = median(r.mbps), u = median(r.cpu);
    console.log(
      `| ${path.name} | ${c.toFixed(2)} | ${(baseConnect / c).toFixed(2)}× | ${m.toFixed(0)} | ${
        (m / baseMbps).toFixed(2)
      }× | ${u.toFixed(2)} | ${(baseCpu / u).toFixed(2)}× |`,
    );
  }
}

/** User + system CPU seconds of this process so far (Linux /proc). */
function cpuSeconds(): number {
  const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

if (import.meta.main) await main();
