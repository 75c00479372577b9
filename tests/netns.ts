/**
 * Test-only helpers for the interop tests: network namespaces, veth links,
 * a real `wireguard-go` in a namespace, UDP endpoints inside a namespace,
 * hand-built IPv4/IPv6 UDP packets, and a minimal socket + timer driver for a
 * sans-I/O device.
 *
 * Nothing here is part of a published package. Every namespace and interface
 * name carries the test process's pid, so test files running in parallel do
 * not collide, and every resource has an async disposer (`await using`).
 *
 * @module
 */

import { missingAny, type Requirement, requirement } from "./_skip.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/** Options for {@linkcode run}. */
export interface RunOptions {
  /** Run inside this network namespace (`ip netns exec NS …`). */
  ns?: string;
  /** Bytes or text written to the command's standard input. */
  stdin?: Uint8Array | string;
  /** Throw when the exit code is not 0 (default `true`). */
  check?: boolean;
}

/** What a finished command printed and returned. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A command that exited with a non-zero code. */
export class CommandError extends Error {
  constructor(readonly argv: string[], readonly result: RunResult) {
    const out = [result.stderr.trim(), result.stdout.trim()].filter((s) => s).join("\n");
    super(`Command \`${argv.join(" ")}\` exited with code ${result.code}${out ? `:\n${out}` : ""}`);
    this.name = "CommandError";
  }
}

function withNs(argv: string[], ns: string | undefined): string[] {
  return ns === undefined ? argv : ["ip", "netns", "exec", ns, ...argv];
}

/** Runs a command to completion, capturing its output. */
export async function run(argv: string[], options: RunOptions = {}): Promise<RunResult> {
  const full = withNs(argv, options.ns);
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(full[0], {
      args: full.slice(1),
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw new Error(`Cannot start \`${full.join(" ")}\`: ${(error as Error).message}`);
  }
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(
      typeof options.stdin === "string" ? encoder.encode(options.stdin) : options.stdin,
    );
    await writer.close();
  }
  const out = await child.output();
  const result = {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
  if ((options.check ?? true) && result.code !== 0) throw new CommandError(full, result);
  return result;
}

function findInPath(name: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // not in this directory
    }
  }
  return null;
}

// ---------------------------------------------------------------------------
// Capability check and skip semantics
// ---------------------------------------------------------------------------

/**
 * Reads `stream` as UTF-8 text to its end, calling `onText` with each decoded
 * chunk and `onLine` with each complete line (without the newline).
 */
export async function forEachLine(
  stream: ReadableStream<Uint8Array>,
  onLine?: (line: string) => void,
  onText?: (text: string) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    const text = decoder.decode(chunk, { stream: true });
    onText?.(text);
    if (!onLine) continue;
    pending += text;
    let nl;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      onLine(line);
    }
  }
}

/** Whether this machine can run the namespace interop tests, and why not. */
export type NetnsCapability = { ok: true } | { ok: false; reason: string };

let capability: Promise<NetnsCapability> | undefined;

/** Checks (once per process): Linux, root, tools on PATH, /dev/net/tun, `ip netns add`. */
export function canRunNetns(): Promise<NetnsCapability> {
  return capability ??= probe();
}

async function probe(): Promise<NetnsCapability> {
  if (Deno.build.os !== "linux") return { ok: false, reason: `needs Linux, not ${Deno.build.os}` };
  if (Deno.uid() !== 0) return { ok: false, reason: "needs root (network namespaces, TUN)" };
  const missing = missingOnPath("ip", "wg", "wireguard-go", "unshare", "nsenter", "mount");
  if (missing !== undefined) return { ok: false, reason: missing };
  try {
    const tun = Deno.openSync("/dev/net/tun", { read: true, write: true });
    tun.close();
  } catch (error) {
    return { ok: false, reason: `/dev/net/tun is not usable: ${(error as Error).message}` };
  }
  // Unique per worker: test files run in parallel workers of one process.
  const name = uniqueName("wgprobe");
  try {
    await run(["ip", "netns", "add", name]);
    await run(["ip", "link", "set", "lo", "up"], { ns: name });
  } catch (error) {
    return { ok: false, reason: `cannot create a network namespace: ${(error as Error).message}` };
  } finally {
    await run(["ip", "netns", "del", name], { check: false });
  }
  await cleanupStaleNamespaces();
  return { ok: true };
}

/** Marker files of live {@linkcode Netns} (tmpfs: a reboot clears them with the namespaces). */
const MARKER_DIR = "/run/wgstack-netns";

/**
 * Deletes namespaces a crashed earlier test run left behind: only those made
 * by {@linkcode Netns.create} (they have a marker file naming their pid)
 * whose test process no longer exists. Their veth pairs go with them.
 */
export async function cleanupStaleNamespaces(): Promise<string[]> {
  const removed: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(MARKER_DIR)];
  } catch {
    return removed;
  }
  for (const entry of entries) {
    const name = entry.name;
    let pid: number;
    try {
      pid = Number(Deno.readTextFileSync(`${MARKER_DIR}/${name}`).trim());
    } catch {
      continue;
    }
    if (!Number.isInteger(pid) || pid <= 0 || pid === Deno.pid) continue;
    try {
      Deno.statSync(`/proc/${pid}`);
      continue; // its test process still runs
    } catch {
      // dead: stale
    }
    await run(["ip", "netns", "del", name], { check: false });
    try {
      Deno.removeSync(`${MARKER_DIR}/${name}`);
    } catch {
      // raced with another cleaner
    }
    removed.push(name);
  }
  return removed;
}

/**
 * Skip-or-fail (tests/_skip.ts) for tests that need namespaces and
 * wireguard-go, plus whatever else `alsoMissing` names (e.g.
 * {@linkcode missingOnPath}): locally a missing capability prints the reason
 * and ignores the test; with `CI=true` the test runs and fails at `assert()`.
 *
 * ```ts
 * const netns = await requireOrSkip("wireguard interop");
 * Deno.test({ name: "…", ignore: netns.ignore, fn: async (t) => { netns.assert(); … } });
 * ```
 */
export async function requireOrSkip(
  what: string,
  ...alsoMissing: (string | undefined)[]
): Promise<Requirement> {
  const cap = await canRunNetns();
  return requirement(what, missingAny(cap.ok ? undefined : cap.reason, ...alsoMissing));
}

/** `"missing on PATH: a, b"` for the commands not on PATH, `undefined` when all are. */
export function missingOnPath(...names: string[]): string | undefined {
  const missing = names.filter((name) => findInPath(name) === null);
  return missing.length > 0 ? `missing on PATH: ${missing.join(", ")}` : undefined;
}

// ---------------------------------------------------------------------------
// Namespaces and veth links
// ---------------------------------------------------------------------------

let counter = 0;
/**
 * Put in front of every namespace and interface name (env
 * `WGSTACK_NETNS_PREFIX`, e.g. `s9`), so that people sharing a machine can
 * tell their namespaces apart.
 */
const NAME_PREFIX = Deno.env.get("WGSTACK_NETNS_PREFIX") ?? "";
/**
 * A tag unique to this module instance: `deno test --parallel` runs test files
 * in workers of one process, so the pid alone does not tell them apart.
 */
const WORKER_TAG = crypto.getRandomValues(new Uint32Array(1))[0].toString(36).padStart(7, "0")
  .slice(-5);
/**
 * A name unique to this process and worker: `prefix-<pid>-<tag><n>`, or
 * `prefix<tag><n>` when `max` requires (interface names have 15 characters).
 */
export function uniqueName(prefix: string, max = 64): string {
  prefix = NAME_PREFIX + prefix;
  const n = (counter++).toString(36);
  const name = `${prefix}-${Deno.pid}-${WORKER_TAG}${n}`;
  if (name.length <= max) return name;
  const short = `${prefix}${WORKER_TAG}${n}`;
  if (short.length > max) throw new RangeError(`Name ${short} is longer than ${max} characters`);
  return short;
}

/** A network namespace this test created; deleted on dispose. */
export class Netns {
  #closed = false;
  private constructor(readonly name: string) {}

  /** Creates `prefix-<pid>-<n>` with `lo` up. */
  static async create(prefix = "wgt"): Promise<Netns> {
    const name = uniqueName(prefix);
    await Deno.mkdir(MARKER_DIR, { recursive: true });
    await Deno.writeTextFile(`${MARKER_DIR}/${name}`, `${Deno.pid}\n`);
    try {
      await run(["ip", "netns", "add", name]);
    } catch (error) {
      await Deno.remove(`${MARKER_DIR}/${name}`).catch(() => {});
      throw error;
    }
    const ns = new Netns(name);
    try {
      await ns.run(["ip", "link", "set", "lo", "up"]);
    } catch (error) {
      await ns.destroy();
      throw error;
    }
    return ns;
  }

  /** Runs a command inside this namespace. */
  run(argv: string[], options: Omit<RunOptions, "ns"> = {}): Promise<RunResult> {
    return run(argv, { ...options, ns: this.name });
  }

  /** Deletes the namespace (its interfaces go with it). Idempotent. */
  async destroy(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await run(["ip", "netns", "del", this.name], { check: false });
    await Deno.remove(`${MARKER_DIR}/${this.name}`).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.destroy();
  }
}

/** One end of a veth link: where it lives and its addresses. */
export interface VethEnd {
  /** Namespace, or `null` for the root namespace (the test process's own). */
  ns: Netns | null;
  ifname: string;
  /** IPv4 address without prefix length. */
  v4: string;
  /** IPv6 address without prefix length. */
  v6: string;
}

/** A veth pair with one /30 and one /64; deleting either side deletes both. */
export interface VethLink {
  a: VethEnd;
  b: VethEnd;
  /** Deletes the pair (only needed when side `a` is the root namespace and `b` lives on). */
  destroy(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

async function usedRootV4(): Promise<Set<string>> {
  const out = await run(["ip", "-j", "addr", "show"]);
  const used = new Set<string>();
  for (const link of JSON.parse(out.stdout) as { addr_info?: { local?: string }[] }[]) {
    for (const info of link.addr_info ?? []) if (info.local) used.add(info.local);
  }
  return used;
}

let subnetCounter = crypto.getRandomValues(new Uint16Array(1))[0];
/**
 * Picks a /30 in 198.19.0.0/16 (benchmarking range, RFC 2544) and a matching
 * fd00:19:<n>::/64, starting from a random place per worker so parallel test
 * files pick apart, skipping any /30 already used in the root namespace.
 */
async function pickSubnet(): Promise<{ v4: [string, string]; v6: [string, string] }> {
  const used = await usedRootV4();
  for (let tries = 0; tries < 16384; tries++) {
    const i = subnetCounter++ % 16384;
    const third = i >> 6;
    const fourth = (i & 63) * 4;
    const a = `198.19.${third}.${fourth + 1}`;
    const b = `198.19.${third}.${fourth + 2}`;
    if (used.has(a) || used.has(b)) continue;
    const hex = i.toString(16);
    return { v4: [a, b], v6: [`fd00:19:${hex}::1`, `fd00:19:${hex}::2`] };
  }
  throw new Error("No free /30 left in 198.19.0.0/16");
}

/**
 * Creates a veth pair between `a` (a namespace, or `null` for the root
 * namespace) and namespace `b`, with IPv4 /30 and IPv6 /64 (nodad) addresses
 * on both ends, both up. The interface names start with `prefix` (default
 * `"vw"`) followed by `a` or `b`.
 */
export async function createVeth(
  a: Netns | null,
  b: Netns,
  { prefix = "vw" }: { prefix?: string } = {},
): Promise<VethLink> {
  const subnet = await pickSubnet();
  const ifA = uniqueName(`${prefix}a`, 15);
  const ifB = uniqueName(`${prefix}b`, 15);
  const inA = (argv: string[]) => a === null ? run(argv) : a.run(argv);
  await inA(["ip", "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b.name]);
  let destroyed = false;
  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    await run(withNs(["ip", "link", "del", ifA], a?.name), { check: false });
  };
  try {
    await inA(["ip", "addr", "add", `${subnet.v4[0]}/30`, "dev", ifA]);
    await inA(["ip", "-6", "addr", "add", `${subnet.v6[0]}/64`, "dev", ifA, "nodad"]);
    await inA(["ip", "link", "set", ifA, "up"]);
    await b.run(["ip", "addr", "add", `${subnet.v4[1]}/30`, "dev", ifB]);
    await b.run(["ip", "-6", "addr", "add", `${subnet.v6[1]}/64`, "dev", ifB, "nodad"]);
    await b.run(["ip", "link", "set", ifB, "up"]);
  } catch (error) {
    await destroy();
    throw error;
  }
  return {
    a: { ns: a, ifname: ifA, v4: subnet.v4[0], v6: subnet.v6[0] },
    b: { ns: b, ifname: ifB, v4: subnet.v4[1], v6: subnet.v6[1] },
    destroy,
    [Symbol.asyncDispose]: destroy,
  };
}

// ---------------------------------------------------------------------------
// Background processes
// ---------------------------------------------------------------------------

/**
 * A long-running child whose output is collected (for error messages and for
 * lines a caller waits for); stopped by its own pid.
 */
export class Background {
  #child: Deno.ChildProcess;
  #log = "";
  #done: Promise<Deno.CommandStatus>;
  #pumps: Promise<void>[];
  #exited = false;
  onLine?: (line: string) => void;

  /** Spawns `argv` with stdout and stderr collected (and stdin piped when asked). */
  static spawn(argv: string[], env?: Record<string, string>, stdin = false): Background {
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      env,
    }).spawn();
    return new Background(argv, child);
  }

  private constructor(readonly argv: string[], child: Deno.ChildProcess) {
    this.#child = child;
    this.#pumps = [this.#pump(this.#child.stdout, true), this.#pump(this.#child.stderr, false)];
    this.#done = this.#child.status.then((s) => {
      this.#exited = true;
      return s;
    });
  }

  get child(): Deno.ChildProcess {
    return this.#child;
  }
  get pid(): number {
    return this.#child.pid;
  }
  get exited(): boolean {
    return this.#exited;
  }
  /** Everything the process printed so far (stdout and stderr interleaved by chunk). */
  get log(): string {
    return this.#log;
  }

  #pump(stream: ReadableStream<Uint8Array>, lines: boolean): Promise<void> {
    return forEachLine(stream, lines ? (line) => this.onLine?.(line) : undefined, (text) => {
      this.#log += text;
    });
  }

  /** Sends SIGTERM (then SIGKILL after `graceMs`) and waits for the exit and the output. */
  async stop(graceMs = 2000): Promise<void> {
    if (!this.#exited) {
      try {
        this.#child.kill("SIGTERM");
      } catch {
        // already gone
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const killed = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          try {
            this.#child.kill("SIGKILL");
          } catch {
            // already gone
          }
          resolve();
        }, graceMs);
      });
      await Promise.race([this.#done, killed]);
      clearTimeout(timer);
    }
    await this.#done;
    await Promise.all(this.#pumps);
  }

  /** Resolves with the exit status. */
  get status(): Promise<Deno.CommandStatus> {
    return this.#done;
  }
}

/** Polls `check` every `intervalMs` until it returns a value other than `undefined`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  { timeoutMs = 10_000, intervalMs = 50 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let lastError: unknown;
  while (true) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (performance.now() > deadline) {
      const detail = lastError ? `; last error: ${(lastError as Error).message}` : "";
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// ---------------------------------------------------------------------------
// wireguard-go
// ---------------------------------------------------------------------------

/** Base64 text of a 32-byte key (accepts text unchanged). */
function keyText(key: Uint8Array | string): string {
  if (typeof key === "string") return key;
  if (key.length !== 32) throw new RangeError(`A key has 32 bytes, not ${key.length}`);
  return btoa(String.fromCharCode(...key));
}

/** A key pair made by `wg genkey` / `wg pubkey` (base64 text). */
export async function wgGenKeyPair(): Promise<{ privateKey: string; publicKey: string }> {
  const privateKey = (await run(["wg", "genkey"])).stdout.trim();
  const publicKey = (await run(["wg", "pubkey"], { stdin: privateKey + "\n" })).stdout.trim();
  return { privateKey, publicKey };
}

/** A peer for {@linkcode WireGuardGo.configure}. Keys are bytes or base64 text. */
export interface WgPeerConfig {
  publicKey: Uint8Array | string;
  presharedKey?: Uint8Array | string;
  /** `host:port` or `[v6]:port`. */
  endpoint?: string;
  allowedIps?: string[];
  persistentKeepalive?: number;
}

/** Interface settings for {@linkcode WireGuardGo.configure}. */
export interface WgConfig {
  privateKey?: Uint8Array | string;
  listenPort?: number;
  peers?: WgPeerConfig[];
}

/**
 * A `wireguard-go -f IFACE` child inside a namespace, in its own mount
 * namespace with a private tmpfs on /var/run/wireguard, so several instances
 * may all call their interface `wg0`. `wg` commands enter the same mount and
 * network namespaces with `nsenter`.
 */
export class WireGuardGo {
  #proc: Background;
  private constructor(readonly ns: Netns, readonly iface: string, proc: Background) {
    this.#proc = proc;
  }

  /** Starts wireguard-go and waits until `wg show IFACE` answers. */
  static async start(ns: Netns, iface = "wg0"): Promise<WireGuardGo> {
    const script = "mkdir -p /var/run/wireguard && mount -t tmpfs -o mode=0700 wgsock " +
      '/var/run/wireguard && exec wireguard-go -f "$0"';
    const proc = Background.spawn(
      [
        "ip",
        "netns",
        "exec",
        ns.name,
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        iface,
      ],
      { LOG_LEVEL: "debug", WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: "1" },
    );
    const wg = new WireGuardGo(ns, iface, proc);
    try {
      await waitFor(`wireguard-go ${iface} in ${ns.name} to answer \`wg show\``, async () => {
        if (proc.exited) throw new Error(`wireguard-go exited:\n${proc.log}`);
        const r = await wg.#nsenter(["wg", "show", iface], false);
        return r.code === 0 ? true : undefined;
      });
    } catch (error) {
      await wg.stop();
      throw new Error(`${(error as Error).message}\nwireguard-go output:\n${proc.log}`);
    }
    return wg;
  }

  /** Everything wireguard-go printed so far (LOG_LEVEL=debug). */
  get log(): string {
    return this.#proc.log;
  }

  #nsenter(argv: string[], check = true, stdin?: string): Promise<RunResult> {
    return run(["nsenter", "-t", String(this.#proc.pid), "-m", "-n", ...argv], { check, stdin });
  }

  /** Runs `wg ARGS…` against this instance (its mount namespace holds the socket). */
  async wg(args: string[]): Promise<string> {
    return (await this.#nsenter(["wg", ...args])).stdout;
  }

  /** Runs `ip ARGS…` in the namespace. */
  async ip(args: string[]): Promise<string> {
    return (await this.ns.run(["ip", ...args])).stdout;
  }

  /** Applies settings with `wg set` (the private key through a 0600 temp file, removed after). */
  async configure(config: WgConfig): Promise<void> {
    const args = ["set", this.iface];
    const temps: string[] = [];
    try {
      const secretFile = async (key: Uint8Array | string) => {
        const path = await Deno.makeTempFile({ prefix: "wgstack-key-" });
        temps.push(path);
        await Deno.chmod(path, 0o600);
        await Deno.writeTextFile(path, keyText(key) + "\n");
        return path;
      };
      if (config.listenPort !== undefined) args.push("listen-port", String(config.listenPort));
      if (config.privateKey !== undefined) {
        args.push("private-key", await secretFile(config.privateKey));
      }
      for (const peer of config.peers ?? []) {
        args.push("peer", keyText(peer.publicKey));
        if (peer.presharedKey !== undefined) {
          args.push("preshared-key", await secretFile(peer.presharedKey));
        }
        if (peer.endpoint !== undefined) args.push("endpoint", peer.endpoint);
        if (peer.allowedIps !== undefined) args.push("allowed-ips", peer.allowedIps.join(","));
        if (peer.persistentKeepalive !== undefined) {
          args.push("persistent-keepalive", String(peer.persistentKeepalive));
        }
      }
      await this.wg(args);
    } finally {
      for (const path of temps) await Deno.remove(path).catch(() => {});
    }
  }

  /** Removes a peer (`wg set IFACE peer KEY remove`). */
  async removePeer(publicKey: Uint8Array | string): Promise<void> {
    await this.wg(["set", this.iface, "peer", keyText(publicKey), "remove"]);
  }

  /**
   * Adds tunnel addresses (IPv6 with `nodad`), brings the interface up and
   * adds routes through it (e.g. the peer's allowed-ips).
   */
  async up({ addresses, routes = [], mtu }: {
    addresses: string[];
    routes?: string[];
    mtu?: number;
  }): Promise<void> {
    for (const cidr of addresses) {
      const v6 = cidr.includes(":");
      await this.ip([
        ...(v6 ? ["-6"] : []),
        "addr",
        "add",
        cidr,
        "dev",
        this.iface,
        ...(v6 ? ["nodad"] : []),
      ]);
    }
    if (mtu !== undefined) await this.ip(["link", "set", this.iface, "mtu", String(mtu)]);
    await this.ip(["link", "set", this.iface, "up"]);
    for (const cidr of routes) {
      await this.ip([
        ...(cidr.includes(":") ? ["-6"] : []),
        "route",
        "add",
        cidr,
        "dev",
        this.iface,
      ]);
    }
  }

  /** Unix seconds of the latest handshake per peer (base64 public key → seconds, 0 = none). */
  async latestHandshakes(): Promise<Map<string, number>> {
    return parseLatestHandshakes(await this.wg(["show", this.iface, "latest-handshakes"]));
  }

  /** Unix seconds of the latest handshake with `peer` (or the only/first peer); 0 when none. */
  async latestHandshake(peer?: Uint8Array | string): Promise<number> {
    const all = await this.latestHandshakes();
    if (peer !== undefined) return all.get(keyText(peer)) ?? 0;
    return all.values().next().value ?? 0;
  }

  /** Transfer counters per peer from `wg show IFACE transfer`. */
  async transfer(): Promise<Map<string, { rx: number; tx: number }>> {
    const out = await this.wg(["show", this.iface, "transfer"]);
    const map = new Map<string, { rx: number; tx: number }>();
    for (const line of out.split("\n")) {
      const [key, rx, tx] = line.trim().split(/\s+/);
      if (key && rx !== undefined) map.set(key, { rx: Number(rx), tx: Number(tx) });
    }
    return map;
  }

  /** Stops wireguard-go (SIGTERM, then SIGKILL); the TUN interface disappears with it. */
  async stop(): Promise<void> {
    await this.#proc.stop();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Parses `wg show IFACE latest-handshakes` output. */
export function parseLatestHandshakes(out: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const line of out.split("\n")) {
    const [key, seconds] = line.trim().split(/\s+/);
    if (key && seconds !== undefined) map.set(key, Number(seconds));
  }
  return map;
}

/** `wg show IFACE latest-handshakes` for an instance; same as `wg.latestHandshake()`. */
export function latestHandshake(wg: WireGuardGo, peer?: Uint8Array | string): Promise<number> {
  return wg.latestHandshake(peer);
}

// ---------------------------------------------------------------------------
// UDP endpoints inside a namespace (a tiny Deno script per endpoint)
// ---------------------------------------------------------------------------

/** One datagram as seen by a {@linkcode NsUdpSocket}. */
export interface NsDatagram {
  address: string;
  port: number;
  data: Uint8Array;
}

const UDP_SCRIPT = `
const [hostname, port] = [Deno.args[0], Number(Deno.args[1])];
const sock = Deno.listenDatagram({ transport: "udp", hostname, port });
const enc = new TextEncoder();
const out = (o) => Deno.stdout.writeSync(enc.encode(JSON.stringify(o) + "\\n"));
out({ ready: sock.addr.port });
(async () => {
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let buf = "";
  for await (const text of lines) {
    buf += text;
    let nl;
    while ((nl = buf.indexOf("\\n")) >= 0) {
      const cmd = JSON.parse(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      const data = Uint8Array.from(atob(cmd.data), (c) => c.charCodeAt(0));
      try {
        await sock.send(data, { transport: "udp", hostname: cmd.address, port: cmd.port });
        out({ sent: cmd.id });
      } catch (e) {
        out({ sent: cmd.id, error: String(e) });
      }
    }
  }
  Deno.exit(0);
})();
for await (const [data, addr] of sock) {
  out({ address: addr.hostname, port: addr.port, data: btoa(String.fromCharCode(...data)) });
}
`;

let udpScriptPath: string | undefined;
async function udpScript(): Promise<string> {
  if (udpScriptPath === undefined) {
    udpScriptPath = await Deno.makeTempFile({ prefix: "wgstack-udp-", suffix: ".js" });
    await Deno.writeTextFile(udpScriptPath, UDP_SCRIPT);
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(udpScriptPath!);
      } catch {
        // gone already
      }
    });
  }
  return udpScriptPath;
}

function base64(data: Uint8Array): string {
  let s = "";
  for (const b of data) s += String.fromCharCode(b);
  return btoa(s);
}

/**
 * A UDP socket bound inside a namespace (a child `deno run` in the namespace):
 * it reports every datagram it receives and sends what it is told to, so the
 * test sees the kernel's side of the tunnel.
 */
export class NsUdpSocket {
  #proc: Background;
  #queue: NsDatagram[] = [];
  #waiters: (() => void)[] = [];
  #sent = new Map<number, (error?: string) => void>();
  #nextId = 0;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #child: Deno.ChildProcess;
  port = 0;

  private constructor(child: Deno.ChildProcess, proc: Background) {
    this.#child = child;
    this.#proc = proc;
    this.#stdin = child.stdin.getWriter();
  }

  /** Binds `hostname:port` (port 0 = any) inside `ns` and waits until the socket is ready. */
  static async bind(ns: Netns, hostname: string, port = 0): Promise<NsUdpSocket> {
    const path = await udpScript();
    const argv = [
      "ip",
      "netns",
      "exec",
      ns.name,
      Deno.execPath(),
      "run",
      "--quiet",
      "--no-config",
      "--unstable-net",
      "--allow-net",
      path,
      hostname,
      String(port),
    ];
    const proc = Background.spawn(argv, { NO_COLOR: "1" }, true);
    const sock = new NsUdpSocket(proc.child, proc);
    let ready: (port: number) => void;
    const readyP = new Promise<number>((r) => ready = r);
    proc.onLine = (line) => {
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (typeof msg.ready === "number") ready(msg.ready);
      else if (typeof msg.sent === "number") {
        sock.#sent.get(msg.sent)?.(msg.error);
        sock.#sent.delete(msg.sent);
      } else {
        sock.#queue.push({
          address: msg.address,
          port: msg.port,
          data: Uint8Array.from(atob(msg.data), (c) => c.charCodeAt(0)),
        });
        for (const w of sock.#waiters.splice(0)) w();
      }
    };
    try {
      sock.port = await waitFor(`UDP socket ${hostname}:${port} in ${ns.name}`, async () => {
        if (proc.exited) throw new Error(`UDP helper exited:\n${proc.log}`);
        return await Promise.race([
          readyP,
          new Promise<undefined>((r) => setTimeout(() => r(undefined), 50)),
        ]);
      }, { timeoutMs: 30_000 });
    } catch (error) {
      await sock.close();
      throw error;
    }
    return sock;
  }

  /** Sends one datagram from this socket; resolves when the kernel accepted it. */
  send(data: Uint8Array, address: string, port: number): Promise<void> {
    const id = this.#nextId++;
    const done = new Promise<void>((resolve, reject) => {
      this.#sent.set(
        id,
        (error) => error ? reject(new Error(`UDP send failed: ${error}`)) : resolve(),
      );
    });
    const line = JSON.stringify({ id, address, port, data: base64(data) }) + "\n";
    return this.#stdin.write(encoder.encode(line)).then(() => done);
  }

  /** The next datagram received, or an error after `timeoutMs`. */
  async receive(timeoutMs = 10_000): Promise<NsDatagram> {
    const deadline = performance.now() + timeoutMs;
    while (this.#queue.length === 0) {
      if (this.#proc.exited) throw new Error(`UDP helper exited:\n${this.#proc.log}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`No datagram within ${timeoutMs} ms on port ${this.port}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, Math.min(left, 200));
      });
      clearTimeout(timer);
    }
    return this.#queue.shift()!;
  }

  /** Datagrams received and not yet taken by `receive`. */
  get pending(): number {
    return this.#queue.length;
  }

  async close(): Promise<void> {
    await this.#stdin.close().catch(() => {});
    await this.#proc.stop();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

// ---------------------------------------------------------------------------
// Hand-built IPv4/IPv6 UDP packets (independent of netstack/ on purpose)
// ---------------------------------------------------------------------------

/** Parses IPv4 dotted text or IPv6 text into 4 or 16 bytes. */
export function parseAddress(text: string): Uint8Array {
  if (!text.includes(":")) {
    const parts = text.split(".").map(Number);
    if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
      throw new TypeError(`Invalid IPv4 address: ${text}`);
    }
    return Uint8Array.from(parts);
  }
  let head = text;
  let tail = "";
  const gap = text.indexOf("::");
  if (gap >= 0) {
    head = text.slice(0, gap);
    tail = text.slice(gap + 2);
  }
  const groups = (s: string): number[] => {
    if (s === "") return [];
    const out: number[] = [];
    for (const g of s.split(":")) {
      if (g.includes(".")) {
        const v4 = parseAddress(g);
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new TypeError(`Invalid IPv6 address: ${text}`);
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const h = groups(head);
  const t = groups(tail);
  const fill = 8 - h.length - t.length;
  if ((gap >= 0 && fill < 1) || (gap < 0 && fill !== 0)) {
    throw new TypeError(`Invalid IPv6 address: ${text}`);
  }
  const all = [...h, ...new Array(gap >= 0 ? fill : 0).fill(0), ...t];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

/** Formats 4 or 16 address bytes as text (IPv6 in RFC 5952 form). */
export function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]) => g.map((x) => x.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** Internet checksum (RFC 1071) over the concatenation of `parts`. */
export function internetChecksum(...parts: Uint8Array[]): number {
  let sum = 0;
  let odd = -1; // pending high byte across part boundaries
  for (const part of parts) {
    for (const byte of part) {
      if (odd < 0) odd = byte;
      else {
        sum += (odd << 8) | byte;
        odd = -1;
      }
    }
  }
  if (odd >= 0) sum += odd << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function pseudoHeader(src: Uint8Array, dst: Uint8Array, protocol: number, length: number) {
  if (src.length === 4) {
    const p = new Uint8Array(12);
    p.set(src, 0);
    p.set(dst, 4);
    p[9] = protocol;
    p[10] = length >> 8;
    p[11] = length & 0xff;
    return p;
  }
  const p = new Uint8Array(40);
  p.set(src, 0);
  p.set(dst, 16);
  new DataView(p.buffer).setUint32(32, length);
  p[39] = protocol;
  return p;
}

/** A UDP datagram inside an IPv4 or IPv6 packet. */
export interface UdpPacketFields {
  /** Source address text; the family picks IPv4 or IPv6. */
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
  /** IPv4 TTL / IPv6 hop limit (default 64). */
  ttl?: number;
}

const UDP_PROTOCOL = 17;

/**
 * Builds an IPv4 (RFC 791, header checksum) or IPv6 (RFC 8200) packet
 * carrying a UDP datagram (RFC 768) with a correct checksum.
 */
export function buildUdpPacket(fields: UdpPacketFields): Uint8Array {
  const src = parseAddress(fields.src);
  const dst = parseAddress(fields.dst);
  if (src.length !== dst.length) throw new TypeError("Source and destination families differ");
  const v6 = src.length === 16;
  const ipLen = v6 ? 40 : 20;
  const udpLen = 8 + fields.payload.length;
  const packet = new Uint8Array(ipLen + udpLen);
  const view = new DataView(packet.buffer);
  if (v6) {
    view.setUint32(0, 6 << 28);
    view.setUint16(4, udpLen);
    packet[6] = UDP_PROTOCOL;
    packet[7] = fields.ttl ?? 64;
    packet.set(src, 8);
    packet.set(dst, 24);
  } else {
    packet[0] = 0x45;
    view.setUint16(2, packet.length);
    view.setUint16(4, 0x1234); // identification
    view.setUint16(6, 0x4000); // DF
    packet[8] = fields.ttl ?? 64;
    packet[9] = UDP_PROTOCOL;
    packet.set(src, 12);
    packet.set(dst, 16);
    view.setUint16(10, internetChecksum(packet.subarray(0, 20)));
  }
  const udp = packet.subarray(ipLen);
  const udpView = new DataView(udp.buffer, udp.byteOffset);
  udpView.setUint16(0, fields.srcPort);
  udpView.setUint16(2, fields.dstPort);
  udpView.setUint16(4, udpLen);
  udp.set(fields.payload, 8);
  let sum = internetChecksum(pseudoHeader(src, dst, UDP_PROTOCOL, udpLen), udp);
  if (sum === 0) sum = 0xffff; // RFC 768: zero means "no checksum"
  udpView.setUint16(6, sum);
  return packet;
}

/** A parsed UDP-in-IP packet, with the checksum results. */
export interface ParsedUdpPacket extends UdpPacketFields {
  version: 4 | 6;
  ttl: number;
  /** IPv4 header checksum verifies (always `true` for IPv6). */
  ipChecksumOk: boolean;
  /** UDP checksum verifies (IPv4 zero checksum counts as ok). */
  udpChecksumOk: boolean;
}

/**
 * Parses an IPv4/IPv6 packet that carries UDP directly (no IPv6 extension
 * headers, no IPv4 fragments); throws with a description otherwise.
 */
export function parseUdpPacket(packet: Uint8Array): ParsedUdpPacket {
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const version = packet[0] >> 4;
  let ipLen: number, protocol: number, src: Uint8Array, dst: Uint8Array, ttl: number;
  let ipChecksumOk = true;
  if (version === 4) {
    ipLen = (packet[0] & 0x0f) * 4;
    if (packet.length < ipLen || view.getUint16(2) !== packet.length) {
      throw new Error(`IPv4 total length ${view.getUint16(2)} != packet length ${packet.length}`);
    }
    if ((view.getUint16(6) & 0x3fff) !== 0) throw new Error("IPv4 fragment");
    protocol = packet[9];
    ttl = packet[8];
    src = packet.slice(12, 16);
    dst = packet.slice(16, 20);
    ipChecksumOk = internetChecksum(packet.subarray(0, ipLen)) === 0;
  } else if (version === 6) {
    ipLen = 40;
    if (packet.length < 40 || view.getUint16(4) + 40 !== packet.length) {
      throw new Error(`IPv6 payload length ${view.getUint16(4)} + 40 != ${packet.length}`);
    }
    protocol = packet[6];
    ttl = packet[7];
    src = packet.slice(8, 24);
    dst = packet.slice(24, 40);
  } else {
    throw new Error(`Not an IP packet (version ${version})`);
  }
  if (protocol !== UDP_PROTOCOL) throw new Error(`Not UDP (protocol/next header ${protocol})`);
  const udp = packet.subarray(ipLen);
  const udpView = new DataView(udp.buffer, udp.byteOffset, udp.byteLength);
  if (udp.length < 8 || udpView.getUint16(4) !== udp.length) {
    throw new Error(`UDP length field ${udpView.getUint16(4)} != ${udp.length}`);
  }
  const checksum = udpView.getUint16(6);
  const udpChecksumOk = (version === 4 && checksum === 0) ||
    internetChecksum(pseudoHeader(src, dst, UDP_PROTOCOL, udp.length), udp) === 0;
  return {
    version,
    src: formatAddress(src),
    dst: formatAddress(dst),
    srcPort: udpView.getUint16(0),
    dstPort: udpView.getUint16(2),
    payload: udp.slice(8),
    ttl,
    ipChecksumOk,
    udpChecksumOk,
  };
}

// ---------------------------------------------------------------------------
// Minimal driver for a sans-I/O device (test-only; the real one is server/)
// ---------------------------------------------------------------------------

/** An outer UDP endpoint. */
export interface Endpoint {
  address: string;
  port: number;
}

/** The part of the sans-I/O device the driver calls. */
export interface DrivenDevice {
  receive(datagram: Uint8Array, from: Endpoint, now: number): void;
  poll(now: number): void;
  nextDeadline(): number;
}

/** One datagram the driver sent for the device (a copy). */
export interface SentDatagram {
  to: Endpoint;
  data: Uint8Array;
}

/**
 * Owns UDP sockets (one per local address, same port where possible) and one
 * timer for a sans-I/O device: datagrams in → `device.receive(…, now)`,
 * `device.sendDatagram` → `driver.sendDatagram` (copied, logged), and a
 * `setTimeout` to `device.nextDeadline()` that calls `device.poll(now)`.
 *
 * Create the driver, then the device with
 * `sendDatagram: (d, to) => driver.sendDatagram(d, to)`, then `driver.attach(device)`.
 */
export class TestDeviceDriver {
  #sockets: Deno.DatagramConn[] = [];
  #loops: Promise<void>[] = [];
  #device: DrivenDevice | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #closed = false;
  /** Every datagram handed to the sockets, in order. */
  readonly sent: SentDatagram[] = [];
  /** Every datagram received, in order (copies). */
  readonly received: SentDatagram[] = [];
  /** Errors thrown by the device or the sockets (a test asserts this stays empty). */
  readonly errors: unknown[] = [];
  /** The bound port (the same on every address). */
  port = 0;

  private constructor() {}

  /** Binds one UDP socket per address in `hostnames`, all on `port` (0 = pick one). */
  static open(hostnames: string[], port = 0): TestDeviceDriver {
    if (typeof Deno.listenDatagram !== "function") {
      throw new Error(
        'Deno.listenDatagram is missing: run with --unstable-net or "unstable": ["net"] in deno.json',
      );
    }
    const driver = new TestDeviceDriver();
    try {
      for (const hostname of hostnames) {
        const conn = Deno.listenDatagram({
          transport: "udp",
          hostname,
          port: driver.port || port,
        });
        driver.port = (conn.addr as Deno.NetAddr).port;
        driver.#sockets.push(conn);
      }
    } catch (error) {
      for (const conn of driver.#sockets) conn.close();
      throw error;
    }
    return driver;
  }

  /** Monotonic milliseconds, the clock handed to the device. */
  now(): number {
    return performance.now();
  }

  /** Starts feeding the device; call once, after constructing it. */
  attach(device: DrivenDevice): void {
    if (this.#device) throw new Error("Driver already attached");
    this.#device = device;
    for (const conn of this.#sockets) this.#loops.push(this.#receiveLoop(conn));
    this.kick();
  }

  async #receiveLoop(conn: Deno.DatagramConn): Promise<void> {
    try {
      for await (const [data, addr] of conn) {
        if (this.#closed) return;
        const net = addr as Deno.NetAddr;
        const from = { address: unmap(net.hostname), port: net.port };
        this.received.push({ to: from, data: data.slice() });
        try {
          this.#device!.receive(data, from, this.now());
        } catch (error) {
          this.errors.push(error);
        }
        this.kick();
      }
    } catch (error) {
      if (!this.#closed) this.errors.push(error);
    }
  }

  /** The device's `sendDatagram`: copies `datagram` and sends it from the matching family. */
  sendDatagram(datagram: Uint8Array, to: Endpoint): void {
    const copy = datagram.slice();
    this.sent.push({ to: { address: to.address, port: to.port }, data: copy });
    const v6 = to.address.includes(":");
    const conn =
      this.#sockets.find((c) => ((c.addr as Deno.NetAddr).hostname.includes(":")) === v6) ??
        this.#sockets[0];
    conn.send(copy, { transport: "udp", hostname: to.address, port: to.port }).catch(
      (error) => {
        if (!this.#closed) this.errors.push(error);
      },
    );
  }

  /** Re-arms the timer after anything that may have changed the device's next deadline. */
  kick(): void {
    if (this.#closed || !this.#device) return;
    const deadline = this.#device.nextDeadline();
    if (deadline === this.#timerAt && this.#timer !== undefined) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = deadline;
    if (!Number.isFinite(deadline)) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      try {
        this.#device!.poll(this.now());
      } catch (error) {
        this.errors.push(error);
      }
      this.kick();
    }, Math.max(0, Math.ceil(deadline - this.now())));
  }

  /** Runs `fn(now)` against the device, then re-arms the timer. */
  call<T>(fn: (now: number) => T): T {
    try {
      return fn(this.now());
    } finally {
      this.kick();
    }
  }

  /** Closes the sockets and the timer. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    for (const conn of this.#sockets) conn.close();
    await Promise.allSettled(this.#loops);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function unmap(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}
