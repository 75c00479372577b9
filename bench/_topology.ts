/**
 * The namespaces of the forward-mode benchmarks: `wgstack` (the CLI, forward
 * mode) in a server namespace, a `wireguard-go` client namespace whose
 * tunnel routes a target namespace's address, and the target namespace.
 * Everything is removed when the returned stack is disposed.
 *
 * @module
 */

import { createVeth, Netns, type VethLink, wgGenKeyPair, WireGuardGo } from "../tests/netns.ts";

const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;

/** What {@linkcode forwardTopology} built. */
export interface ForwardTopology {
  /** Disposes everything (processes, namespaces, files). */
  stack: AsyncDisposableStack;
  /** A temporary directory for files. */
  dir: string;
  /** The namespaces. */
  server: Netns;
  /** The wireguard-go client's namespace. */
  client: Netns;
  /** The target's namespace. */
  target: Netns;
  /** The target's address (routed through the tunnel). */
  host: string;
  /** The client ↔ server link (`a`: server). */
  outer: VethLink;
  /** The server's public key. */
  serverPublicKey: string;
  /** A second registered peer's private key (not used by the client). */
  spareKey: string;
  /** The CLI's process id. */
  cliPid: number;
  /** The CLI's output once it ended (after `stack` disposal starts). */
  spawn(ns: Netns, argv: string[], stdin?: boolean): Deno.ChildProcess;
}

/** Builds the topology and starts the CLI (extra CLI flags in `flags`). */
export async function forwardTopology(flags: string[] = []): Promise<ForwardTopology> {
  const stack = new AsyncDisposableStack();
  try {
    const dir = await Deno.makeTempDir({ prefix: "wgstack-bench-" });
    stack.defer(() => Deno.remove(dir, { recursive: true }));
    const server = stack.use(await Netns.create("bs"));
    const client = stack.use(await Netns.create("bc"));
    const target = stack.use(await Netns.create("bt"));
    const inner = stack.use(await createVeth(server, target));
    const outer = stack.use(await createVeth(server, client));
    const host = inner.b.v4;
    const serverKeys = await wgGenKeyPair();
    const clientKeys = await wgGenKeyPair();
    const spare = await wgGenKeyPair();
    await Deno.writeTextFile(
      `${dir}/wg.conf`,
      `[Interface]\nPrivateKey = ${serverKeys.privateKey}\nAddress = 198.18.0.1/24\nListenPort = 51820\n\n` +
        `[Peer]\n# Name = bench\nPublicKey = ${clientKeys.publicKey}\nAllowedIPs = 198.18.0.2/32\n\n` +
        `[Peer]\n# Name = spare\nPublicKey = ${spare.publicKey}\nAllowedIPs = 198.18.0.3/32\n`,
      { mode: 0o600 },
    );
    const spawn = (ns: Netns, argv: string[], stdin = false) =>
      new Deno.Command("ip", {
        args: ["netns", "exec", ns.name, ...argv],
        stdin: stdin ? "piped" : "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    const cli = spawn(server, [
      Deno.execPath(),
      "run",
      "-A",
      MAIN,
      `${dir}/wg.conf`,
      "--log-level",
      "warn",
      "--no-qr",
      "--no-uapi",
      ...flags,
    ]);
    stack.defer(async () => {
      cli.kill("SIGKILL");
      await cli.output();
    });
    const wg = stack.use(await WireGuardGo.start(client));
    await wg.configure({
      privateKey: clientKeys.privateKey,
      peers: [{
        publicKey: serverKeys.publicKey,
        endpoint: `${outer.a.v4}:51820`,
        allowedIps: ["198.18.0.0/24", `${host}/32`],
      }],
    });
    await wg.up({ addresses: ["198.18.0.2/32"], routes: ["198.18.0.0/24", `${host}/32`] });
    await new Promise((r) => setTimeout(r, 1500)); // the CLI starts
    return {
      stack,
      dir,
      server,
      client,
      target,
      host,
      outer,
      serverPublicKey: serverKeys.publicKey,
      spareKey: spare.privateKey,
      // `ip netns exec` execs the command: the child is the deno process itself.
      cliPid: cli.pid,
      spawn,
    };
  } catch (error) {
    await stack.disposeAsync();
    throw error;
  }
}

/** The median of `xs`. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
