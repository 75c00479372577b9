/**
 * `runCli(args)`: the whole `wgstack` command, returning its exit code.
 *
 * @module
 */

import type {
  ForwarderStats,
  PolicyRule,
  ServeLogRecord,
  ServePeerState,
  Server,
} from "@wgstack/server";
import {
  generatePresharedKey,
  generatePrivateKey,
  keyFromBase64,
  keyToBase64,
  publicKey as derivePublicKey,
} from "@wgstack/wireguard";
import {
  type CliArgs,
  formatHostPort,
  HELP,
  parseCliArgs,
  UsageError,
  validateWebToken,
} from "./args.ts";
import { type DnsUpstream, systemResolver } from "./_dns.ts";
import { Echo, type EchoStats } from "./echo.ts";
import { createLogger, LineSink, type Logger, type LogRecord } from "./log.ts";
import { detectEndpointAddress, ipVersionOf } from "./_net.ts";
import { PcapWriter } from "./pcap.ts";
import type { WebServer } from "./web/server.ts";
import {
  addPeerLines,
  applyToRunning,
  type Control,
  removePeerLines,
  servePeers,
  startControl,
} from "./_control.ts";
import { qrPayload, renderQr } from "./_qr.ts";
import {
  addPeer,
  type ClientFile,
  ensureServerConfig,
  loadServerConfig,
  readClientFiles,
  removePeer,
  type ServerSetup,
  tunnelAddresses,
  withEndpoint,
} from "./setup.ts";

/** The version printed by `--version`. */
export const VERSION = "0.1.0";

/** Where the command reads and writes; defaults to the process's standard streams. */
export interface CliIo {
  /** Human output (help, keys, client configs, QR codes). */
  stdout(text: string): void;
  /** Errors and notices. */
  stderr(text: string): void;
  /** All of standard input (for `pubkey`). */
  readStdin(): Promise<string>;
  /** Log lines (default: standard output, written in the background). */
  logLine(line: string): void;
  /** Waits until every log line is out (called before the command returns). */
  flushLog?(): Promise<void>;
  /** Whether standard output is a terminal (coloured QR codes). */
  isTerminal: boolean;
  /** Aborts the server as SIGINT/SIGTERM do; default: the real signals. */
  signal?: AbortSignal;
  /**
   * Directory of the UAPI socket (tests use a private one). Default: the
   * `WGSTACK_UAPI_DIR` environment variable, else `/var/run/wireguard`.
   */
  uapiDirectory?: string;
  /** Called once the server listens (tests). */
  onListening?(server: ListeningServer): void;
}

/** What {@linkcode CliIo.onListening} is told about the running server. */
export interface ListeningServer {
  /** The bound UDP address. */
  readonly addr: { readonly address: string; readonly port: number };
  /** The server's public key, base64. */
  readonly publicKey: string;
  /** Shuts the server down (the command then prints its summary and returns 0). */
  shutdown(): Promise<void>;
  /** Re-reads the config and applies the peers' changes, as SIGHUP does. */
  reload(): Promise<void>;
  /** The peers and their counters. */
  peers(): ServePeerState[];
  /** With `--web`: the dashboard's URL, token included. */
  readonly webUrl?: string;
}

const encoder = new TextEncoder();

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(file.writeSync(bytes));
}

function defaultIo(): CliIo {
  // Log lines never block the server: written in the background, bounded.
  const sink = new LineSink({ write: (b) => Deno.stdout.write(b) });
  return {
    stdout: (text) => writeAll(Deno.stdout, text),
    stderr: (text) => writeAll(Deno.stderr, text),
    readStdin: () => new Response(Deno.stdin.readable).text(),
    logLine: (line) => sink.line(line),
    flushLog: () => sink.flush(),
    isTerminal: Deno.stdout.isTerminal(),
  };
}

/**
 * Runs `wgstack` with `args` (without the program name) and resolves to the
 * exit code: 0 done, 1 internal error, 2 usage or configuration error (one
 * line on standard error).
 *
 * @example
 * ```ts ignore
 * import { runCli } from "@wgstack/cli";
 * Deno.exit(await runCli(["wg.conf", "--mode", "echo"]));
 * ```
 */
export async function runCli(args: string[], io: Partial<CliIo> = {}): Promise<number> {
  const out: CliIo = { ...defaultIo(), ...io };
  try {
    const cli = parseCliArgs(args);
    switch (cli.command) {
      case "help":
        out.stdout(HELP + "\n");
        return 0;
      case "version":
        out.stdout(`wgstack ${VERSION}\n`);
        return 0;
      case "genkey":
        out.stdout(keyToBase64(generatePrivateKey()) + "\n");
        return 0;
      case "genpsk":
        out.stdout(keyToBase64(generatePresharedKey()) + "\n");
        return 0;
      case "pubkey":
        return await pubkey(out);
      case "add-peer":
        return await addPeerCommand(cli, out);
      case "remove-peer":
        return await removePeerCommand(cli, out);
      case "show-client":
        return await showClientCommand(cli, out);
      default:
        return await runServer(cli, out);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      out.stderr(`wgstack: ${error.message}\n`);
      return error.exitCode;
    }
    out.stderr(`wgstack: internal error: ${(error as Error)?.stack ?? error}\n`);
    return 1;
  } finally {
    await out.flushLog?.();
  }
}

async function pubkey(io: CliIo): Promise<number> {
  const text = await io.readStdin();
  let key: Uint8Array;
  try {
    key = keyFromBase64(text);
  } catch (error) {
    throw new UsageError(
      `pubkey: standard input is not a private key: ${(error as Error).message}`,
    );
  }
  io.stdout(keyToBase64(derivePublicKey(key)) + "\n");
  return 0;
}

/** `--listen`'s host when it is one address (not a wildcard): clients can reach us there. */
function listenHost(cli: CliArgs): string | undefined {
  const host = cli.listen?.hostname;
  return host && host !== "0.0.0.0" && host !== "::" ? host : undefined;
}

function endpointOptions(cli: CliArgs) {
  return {
    endpointHost: cli.endpoint?.hostname ?? listenHost(cli),
    endpointPort: cli.endpoint?.port,
    detectEndpoint: detectEndpointAddress,
  };
}

async function addPeerCommand(cli: CliArgs, io: CliIo): Promise<number> {
  const client = await addPeer(cli.config, cli.peerName!, endpointOptions(cli));
  io.stderr(`Added peer "${client.name}" to ${cli.config} and wrote ${client.path}.\n`);
  const peer = (await loadServerConfig(cli.config)).peers.find((p) => p.name === client.name)!;
  const live = await applyToRunning(cli, addPeerLines(peer), io.uapiDirectory);
  io.stderr(
    live
      ? `The running server (${live}) lets the new client in now.\n\n`
      : "No running server answered: it loads the new client when it starts.\n\n",
  );
  await showClient(client, cli, io, undefined);
  return 0;
}

async function removePeerCommand(cli: CliArgs, io: CliIo): Promise<number> {
  const peer = await removePeer(cli.config, cli.peerName!);
  io.stderr(`Removed peer "${cli.peerName}" from ${cli.config} (and its client file).\n`);
  const live = await applyToRunning(cli, removePeerLines(peer), io.uapiDirectory);
  io.stderr(
    live
      ? `The running server (${live}) dropped it and its connections.\n`
      : "No running server answered: nothing else to do.\n",
  );
  return 0;
}

async function showClientCommand(cli: CliArgs, io: CliIo): Promise<number> {
  const setup = await loadServerConfig(cli.config);
  const client = (await readClientFiles(setup)).find((c) => c.name === cli.peerName);
  if (!client) {
    throw new UsageError(
      `No client file for "${cli.peerName}" beside ${cli.config} (add one with wgstack add-peer)`,
    );
  }
  const endpoint = cli.endpoint
    ? formatHostPort(cli.endpoint.hostname!, cli.endpoint.port ?? setup.listenPort)
    : undefined;
  await showClient(client, cli, io, endpoint);
  return 0;
}

/**
 * Warns when a file holding keys can be read by group or others (as
 * wg-quick does). Names the file and the mode, never its contents.
 */
function checkSecretFileMode(path: string, logger: Logger): void {
  let mode: number | null;
  try {
    mode = Deno.statSync(path).mode;
  } catch {
    return;
  }
  if (mode === null || (mode & 0o077) === 0) return;
  logger.log({
    level: "warn",
    event: "config",
    warning: `${path} holds private keys and is readable by ${
      (mode & 0o070) !== 0 ? "its group" : "others"
    } (mode 0${(mode & 0o777).toString(8)}): run chmod 600 ${path}`,
  });
}

async function showClient(
  client: ClientFile,
  cli: CliArgs,
  io: CliIo,
  endpoint: string | undefined,
): Promise<void> {
  const text = endpoint ? withEndpoint(client.text, endpoint) : client.text;
  io.stderr(`--- ${client.name} (${client.path}) ---\n${text}`);
  if (cli.qr) {
    io.stderr(await renderQr(qrPayload(text), { type: io.isTerminal ? "terminal" : "utf8" }));
    io.stderr("\n");
  }
}

/** Log records of the server (its forwarding records included). */
function serverLogger(logger: Logger): (record: ServeLogRecord) => void {
  return (record) => {
    const { level, event, type: _type, ...rest } = record;
    let l = level;
    if (event === "handshake-failed" && l === "info") l = "warn";
    logger.log({ ...rest, level: l, event });
  };
}

async function runServer(cli: CliArgs, io: CliIo): Promise<number> {
  const logger = createLogger({ level: cli.logLevel, format: cli.logFormat, write: io.logLine });
  const started = performance.now();

  const { setup, created } = await ensureServerConfig(cli.config, {
    ...endpointOptions(cli),
    addresses: cli.addresses,
    listenPort: cli.listen?.port,
  });
  if (created.length > 0) {
    io.stderr(`Created ${created.join(" and ")} (mode 0600).\n`);
    if (!cli.endpoint && !listenHost(cli) && detectEndpointAddress() === undefined) {
      io.stderr(
        "No network address found on this machine: the client config says 127.0.0.1;\n" +
          "pass --endpoint HOST to print it with the address clients can reach.\n",
      );
    }
  } else if (cli.addresses) {
    logger.log({
      level: "warn",
      event: "config",
      warning: `--address is ignored: ${cli.config} exists (it only applies to a new config)`,
    });
  }
  for (const warning of setup.warnings) logger.log({ level: "warn", event: "config", warning });
  checkSecretFileMode(setup.path, logger);
  for (const client of await readClientFiles(setup)) checkSecretFileMode(client.path, logger);
  for (const peer of setup.peers) {
    if (peer.endpoint && ipVersionOf(peer.endpoint.host) === undefined) {
      logger.log({
        level: "warn",
        event: "config",
        peer: peer.name ?? peer.publicKey,
        warning: `${setup.path}:${peer.line}: Endpoint host names are not resolved; ` +
          "the peer is reached once it connects",
      });
    }
  }

  let dns: DnsUpstream | undefined;
  if (cli.mode === "forward") {
    dns = cli.dnsUpstream
      ? { hostname: cli.dnsUpstream.hostname!, port: cli.dnsUpstream.port ?? 53 }
      : await systemResolver();
    if (!dns) {
      logger.log({
        level: "warn",
        event: "dns",
        message: "no nameserver in /etc/resolv.conf; DNS through the tunnel is off",
      });
    }
  }

  // Loaded here so that the key and config commands start without the whole stack.
  const { DomainRules, parsePolicyRule, parseUpstream, serve } = await import("@wgstack/server");
  let rules: PolicyRule[];
  try {
    rules = cli.rules.map((r) => parsePolicyRule(r.action, r.target));
  } catch (error) {
    throw new UsageError(`--allow/--deny: ${(error as Error).message}`);
  }
  try {
    new DomainRules({ allow: cli.allowDomains, deny: cli.denyDomains });
  } catch (error) {
    throw new UsageError(`--allow-domain/--deny-domain: ${(error as Error).message}`);
  }
  // Each peer's "# Upstream =" line, else --upstream ("direct": none).
  const upstreams = new Map<string, string | undefined>();
  if (cli.upstream !== undefined) {
    try {
      parseUpstream(cli.upstream);
    } catch (error) {
      throw new UsageError(`--upstream: ${(error as Error).message}`);
    }
  }
  for (const peer of setup.peers) {
    if (peer.upstream === undefined) continue;
    if (peer.upstream.toLowerCase() === "direct") {
      upstreams.set(peer.publicKey, undefined);
      continue;
    }
    try {
      parseUpstream(peer.upstream);
    } catch (error) {
      throw new UsageError(`${setup.path}:${peer.line}: Upstream: ${(error as Error).message}`);
    }
    upstreams.set(peer.publicKey, peer.upstream);
  }
  const upstream = cli.upstream !== undefined || upstreams.size > 0
    ? (info: { peer: { publicKey: string } }) =>
      upstreams.has(info.peer.publicKey) ? upstreams.get(info.peer.publicKey) : cli.upstream
    : undefined;

  let pcap: PcapTap | undefined;
  if (cli.pcap) {
    try {
      pcap = new PcapTap(PcapWriter.create(cli.pcap, { maxBytes: cli.pcapMaxBytes }), logger);
    } catch (error) {
      throw new UsageError(`--pcap ${cli.pcap}: ${(error as Error).message}`);
    }
    logger.log({
      level: "warn",
      event: "pcap-start",
      message: `${cli.pcap} receives the clients' decrypted traffic (mode 0600${
        cli.pcapMaxBytes > 0 ? `, at most ${cli.pcapMaxBytes} bytes` : ", no size limit"
      }): keep it private and delete it when done`,
    });
  }

  const local = tunnelAddresses(setup);
  const echo = cli.mode === "echo" ? new Echo(logger) : undefined;

  const controller = new AbortController();
  const stop = () => controller.abort();
  // Our handlers hold their streams: end them so the server need not wait.
  controller.signal.addEventListener("abort", () => echo?.close(), { once: true });
  io.signal?.addEventListener("abort", stop, { once: true });
  const signals: Deno.Signal[] = io.signal
    ? []
    : Deno.build.os === "windows"
    ? ["SIGINT", "SIGBREAK"]
    : ["SIGINT", "SIGTERM"];
  let interrupts = 0;
  const onSignal = () => {
    if (++interrupts > 1) {
      io.stderr("wgstack: second interrupt, exiting now\n");
      pcap?.close();
      Deno.exit(130);
    }
    stop();
  };
  for (const s of signals) Deno.addSignalListener(s, onSignal);

  let server: Server;
  const port = cli.listen?.port ?? setup.listenPort;
  try {
    server = await serve({
      privateKey: setup.privateKey,
      hostname: cli.listen?.hostname,
      port,
      mtu: setup.mtu,
      tcp: cli.tcpCc ? { congestionControl: cli.tcpCc } : undefined,
      peers: servePeers(setup),
      forward: cli.mode === "forward"
        ? {
          localAddresses: local,
          tunnelSubnets: setup.addresses,
          dns,
          connectTimeoutMs: cli.connectTimeoutMs,
          rules,
          denyPrivate: cli.denyPrivate,
          refuseWith: cli.refuseWith,
          synAck: cli.synAck,
          tcpIdleTimeoutMs: cli.tcpIdleTimeoutMs,
          upstream,
          upstreamUdp: cli.upstreamUdp,
          denyDomains: cli.denyDomains,
          allowDomains: cli.allowDomains,
          dnsBlock: cli.dnsBlock,
          sniff: cli.sniff,
        }
        : undefined,
      onTcp: echo ? (s) => echo.onTcp(s) : undefined,
      onUdp: echo ? (f) => echo.onUdp(f) : undefined,
      logger: serverLogger(logger),
      onPacket: pcap?.onPacket,
      signal: controller.signal,
    });
  } catch (error) {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
    pcap?.close();
    throw bindError(error, cli.listen?.hostname, port);
  }
  let control: Control;
  try {
    control = await startControl(server, {
      cli,
      setup,
      logger,
      uapiDirectory: io.uapiDirectory,
      signals: signals.length > 0 && Deno.build.os !== "windows",
      stop,
      log: serverLogger(logger),
    });
  } catch (error) {
    await server.shutdown();
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
    pcap?.close();
    throw error;
  }
  let web: WebServer | undefined;
  try {
    web = cli.web ? await startDashboard(server, cli, setup) : undefined;
  } catch (error) {
    await server.shutdown();
    await control.close();
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
    pcap?.close();
    throw error;
  }
  io.onListening?.({
    get addr() {
      return server.addr;
    },
    publicKey: server.publicKey,
    shutdown: () => server.shutdown(),
    reload: () => control.reload(),
    peers: () => server.peers(),
    webUrl: web?.url,
  });

  await printBanner(setup, server, cli, io, created);
  // The token is a secret: on standard error beside the banner, never in the log.
  if (web) io.stderr(`Dashboard: ${web.url}\n`);

  await server.finished;
  await web?.shutdown();
  await control.close();
  for (const s of signals) Deno.removeSignalListener(s, onSignal);
  pcap?.close();
  const stats = server.stats();
  logger.log(summaryRecord({
    uptimeMs: Math.round(performance.now() - started),
    stats,
    forwarder: stats.forward,
    echo: echo?.stats(),
    pcapPackets: pcap?.packets,
    full: cli.logFormat === "json",
  }));
  return 0;
}

/** `--web`: the dashboard over the server, its metrics and the config file. */
async function startDashboard(
  server: Server,
  cli: CliArgs,
  setup: ServerSetup,
): Promise<WebServer> {
  const { ServerMetrics } = await import("@wgstack/server");
  const { startWeb } = await import("./web/server.ts");
  const { WebClients } = await import("./web/clients.ts");
  const envToken = Deno.env.get("WGSTACK_WEB_TOKEN");
  const token = cli.webToken ??
    (envToken ? validateWebToken(envToken, "WGSTACK_WEB_TOKEN") : undefined);
  const hostname = cli.web!.hostname ?? "127.0.0.1";
  const port = cli.web!.port!;
  try {
    return await startWeb(server, {
      hostname,
      port,
      token,
      metrics: new ServerMetrics(server, { device: cli.interface ?? "wgstack" }),
      clients: new WebClients(server, {
        config: setup.path,
        generate: endpointOptions(cli),
        endpoint: cli.endpoint
          ? formatHostPort(cli.endpoint.hostname!, cli.endpoint.port ?? server.addr.port)
          : undefined,
      }),
      info: { mode: cli.mode, version: VERSION, config: setup.path },
    });
  } catch (error) {
    throw new UsageError(`--web ${formatHostPort(hostname, port)}: ${(error as Error).message}`);
  }
}

/** The shutdown summary: the main counters flat, drops only when there were any. */
function summaryRecord(parts: {
  uptimeMs: number;
  stats: ReturnType<Server["stats"]>;
  forwarder?: ForwarderStats;
  echo?: EchoStats;
  pcapPackets?: number;
  full: boolean;
}): LogRecord {
  const wg = parts.stats.wireguard as unknown as Record<string, unknown>;
  const drops: Record<string, number> = {};
  for (const [reason, n] of Object.entries((wg.drops ?? {}) as Record<string, number>)) {
    if (n > 0) drops[reason] = n;
  }
  const fwd = parts.forwarder;
  return {
    level: "info",
    event: "summary",
    uptimeMs: parts.uptimeMs,
    ...(fwd
      ? {
        tcpAccepted: fwd.tcpAccepted,
        tcpRefused: fwd.tcpRefused,
        tcpUnreachable: fwd.tcpUnreachable,
        resetAfterAccept: fwd.resetAfterAccept > 0 ? fwd.resetAfterAccept : undefined,
        udpFlows: fwd.udpFlows,
        udpRefused: fwd.udpRefused,
        bytesUp: fwd.bytesUp,
        bytesDown: fwd.bytesDown,
        refused: Object.keys(fwd.policy.refused).length > 0 ? fwd.policy.refused : undefined,
        upstreamSocketsPeak: fwd.upstreamSocketsPeak,
      }
      : {}),
    ...(parts.echo
      ? {
        tcpConnections: parts.echo.tcpConnections,
        udpFlows: parts.echo.udpFlows,
        bytesEchoed: parts.echo.bytes,
      }
      : {}),
    handshakes: wg.handshakesCompleted,
    packetsIn: wg.rxPackets,
    packetsOut: wg.txPackets,
    drops: Object.keys(drops).length > 0 ? drops : undefined,
    pcapPackets: parts.pcapPackets,
    selfDatagrams: parts.stats.selfDatagrams > 0 ? parts.stats.selfDatagrams : undefined,
    ...(parts.full
      ? {
        wireguard: wg,
        netstack: parts.stats.netstack,
        socket: parts.stats.socket,
        forward: parts.forwarder,
      }
      : {}),
  };
}

/**
 * The capture as the server's packet tap: a write or flush error (disk full)
 * is logged once and ends the capture, never the server.
 */
class PcapTap {
  #pcap: PcapWriter | undefined;
  #logger: Logger;
  #timer: ReturnType<typeof setInterval>;
  constructor(pcap: PcapWriter, logger: Logger) {
    this.#pcap = pcap;
    this.#logger = logger;
    this.#timer = setInterval(() => this.#guard(() => pcap.flush()), 1000);
  }
  #reportedFull = false;
  readonly onPacket = (packet: Uint8Array): void => {
    const pcap = this.#pcap;
    if (!pcap) return;
    this.#guard(() => pcap.write(packet));
    if (pcap.full && !this.#reportedFull) {
      this.#reportedFull = true;
      this.#logger.log({
        level: "warn",
        event: "pcap-full",
        message: "the capture reached --pcap-max-size and stopped",
      });
    }
  };
  #packets = 0;
  /** Packets captured (kept after close). */
  get packets(): number {
    return this.#pcap?.packets ?? this.#packets;
  }
  #guard(fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.#logger.log({
        level: "error",
        event: "pcap",
        error: (error as Error).message,
        message: "capture stopped",
      });
      this.close(false);
    }
  }
  /** Ends the capture; `report` false after a failure already logged. */
  close(report = true): void {
    clearInterval(this.#timer);
    const pcap = this.#pcap;
    if (!pcap) return;
    this.#packets = pcap.packets;
    this.#pcap = undefined;
    try {
      pcap.close();
    } catch (error) {
      if (report) {
        this.#logger.log({ level: "error", event: "pcap", error: (error as Error).message });
      }
    }
  }
}

function bindError(error: unknown, hostname: string | undefined, port: number): unknown {
  const where = formatHostPort(hostname ?? "::", port);
  if (error instanceof Deno.errors.AddrInUse) {
    return new UsageError(
      `UDP ${where} is already in use (another WireGuard or wgstack?); choose another with --listen`,
    );
  }
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return new UsageError(`Cannot listen on ${where}: the address is not on this machine`);
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return new UsageError(`Cannot listen on ${where}: permission denied`);
  }
  if (error instanceof RangeError || error instanceof TypeError) {
    return new UsageError(`Cannot start: ${error.message}`);
  }
  return error;
}

async function printBanner(
  setup: ServerSetup,
  server: Server,
  cli: CliArgs,
  io: CliIo,
  created: string[],
): Promise<void> {
  const endpoint = cli.endpoint
    ? formatHostPort(cli.endpoint.hostname!, cli.endpoint.port ?? server.addr.port)
    : undefined;
  const clients = await readClientFiles(setup);
  // A client config holds the client's private key: print it only when it
  // was just made (first run), never on every start (logs keep it).
  for (const client of clients) {
    if (created.includes(client.path)) await showClient(client, cli, io, endpoint);
  }
  const others = clients.filter((c) => !created.includes(c.path)).map((c) => c.name);
  if (others.length > 0) {
    io.stderr(
      `Clients: ${others.join(", ")} (print one with: wgstack show-client NAME ${setup.path})\n`,
    );
  }
  const unnamed = setup.peers.length - clients.length;
  if (unnamed > 0) {
    io.stderr(`(${unnamed} more peer(s) without a client file beside ${setup.path})\n`);
  }
  const addr = formatHostPort(server.addr.address, server.addr.port);
  io.stderr(
    `wgstack ${VERSION}: ${cli.mode} mode, listening on UDP ${addr}, public key ${server.publicKey}\n`,
  );
  if (cli.mode === "echo") {
    const target = tunnelAddresses(setup)[0] ?? "192.0.2.1";
    io.stderr(
      `Echo mode: every TCP connection and UDP datagram, to any address, comes back.\n` +
        `Connect a client, then try: nc ${target} 7   or   nc -u ${target} 7\n`,
    );
  } else {
    io.stderr("Forward mode: client connections go to their real destinations.\n");
  }
  io.stderr("Press Ctrl-C to stop.\n");
}
