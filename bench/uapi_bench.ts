/**
 * The real `wg` against our UAPI socket and against wireguard-go's (the
 * baseline, same run), with N peers: `wg setconf` of N peers, `wg show
 * dump`, and `wg syncconf` of a file that changes one peer's allowed IPs.
 * Each is timed end to end (the `wg` process included, the same for both);
 * reported as medians of ROUNDS and as ratios ours / wireguard-go.
 *
 * Root, wireguard-go and wireguard-tools needed (wireguard-go runs in a
 * network namespace of its own, `ua` prefix).
 *
 * ```sh
 * sudo deno run -A bench/uapi_bench.ts [N] [ROUNDS]
 * ```
 */

import { Netns, requireOrSkip, run, wgGenKeyPair, WireGuardGo } from "../tests/netns.ts";
import { serve } from "../server/serve.ts";
import { median } from "./_topology.ts";

const N = Number(Deno.args[0] ?? 1000);
const ROUNDS = Number(Deno.args[1] ?? 5);

const req = await requireOrSkip("UAPI bench");
if (req.ignore) Deno.exit(0);

await using stack = new AsyncDisposableStack();
const dir = await Deno.makeTempDir({ prefix: "ua-bench-" });
stack.defer(() => Deno.remove(dir, { recursive: true }));
await Deno.mkdir(`${dir}/run`);

const serverKeys = await wgGenKeyPair();
const server = await serve({
  privateKey: serverKeys.privateKey,
  hostname: "127.0.0.1",
  port: 0,
  uapi: { name: "ua0", directory: `${dir}/run` },
});
stack.defer(() => server.shutdown());
const ns = await Netns.create("ua");
stack.defer(() => ns.destroy());
const go = await WireGuardGo.start(ns, "ua0");
stack.defer(() => go.stop());

// `wg` reaches ours the way it reaches wireguard-go: nsenter into a mount
// namespace (held by a sleeping process) where our directory is /run/wireguard.
const holder = new Deno.Command("unshare", {
  args: [
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount -t tmpfs uawg /run && mkdir /run/wireguard && mount --bind "$0" /run/wireguard && ' +
    "echo ready && exec sleep 100000",
    `${dir}/run`,
  ],
  stdout: "piped",
}).spawn();
stack.defer(async () => {
  holder.kill("SIGKILL");
  await holder.status;
});
await holder.stdout.pipeThrough(new TextDecoderStream()).getReader().read();

/** Runs `wg ARGS…` against ours or wireguard-go; returns the elapsed ms. */
async function wg(target: "ours" | "go", args: string[]): Promise<number> {
  const t0 = performance.now();
  if (target === "ours") await run(["nsenter", "-t", String(holder.pid), "-m", "wg", ...args]);
  else await go.wg(args);
  return performance.now() - t0;
}

// N peer keys (base64 of random bytes: wg accepts any 32 bytes as a public key).
const keys = Array.from({ length: N }, () => {
  const b = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...b));
});
const conf = (extra: string) =>
  [
    "[Interface]",
    `PrivateKey = ${serverKeys.privateKey}`,
    ...keys.map((k, i) =>
      `\n[Peer]\nPublicKey = ${k}\nAllowedIPs = 10.${(i >> 8) & 255}.${i & 255}.2/32${
        i === 0 ? extra : ""
      }`
    ),
    "",
  ].join("\n");
await Deno.writeTextFile(`${dir}/all.conf`, conf(""), { mode: 0o600 });
await Deno.writeTextFile(`${dir}/changed.conf`, conf(", 10.255.0.0/24"), { mode: 0o600 });

const results: Record<string, { ours: number[]; go: number[] }> = {};
const record = (name: string, target: "ours" | "go", ms: number) =>
  (results[name] ??= { ours: [], go: [] })[target].push(ms);

for (let round = 0; round < ROUNDS; round++) {
  for (const target of ["go", "ours"] as const) {
    record("setconf", target, await wg(target, ["setconf", "ua0", `${dir}/all.conf`]));
    record("show dump", target, await wg(target, ["show", "ua0", "dump"]));
    record(
      "syncconf (1 change)",
      target,
      await wg(target, ["syncconf", "ua0", `${dir}/changed.conf`]),
    );
    record(
      "syncconf (no change)",
      target,
      await wg(target, ["syncconf", "ua0", `${dir}/changed.conf`]),
    );
  }
}
const peers = server.peers().length;
console.log(`N=${N} peers (ours has ${peers}), ${ROUNDS} rounds, medians in ms:`);
for (const [name, r] of Object.entries(results)) {
  const ours = median(r.ours);
  const base = median(r.go);
  console.log(
    `${name.padEnd(22)} wireguard-go ${base.toFixed(1).padStart(8)}  ours ${
      ours.toFixed(1).padStart(8)
    }  ratio ${(ours / base).toFixed(2)}`,
  );
}
