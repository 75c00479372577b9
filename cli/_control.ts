/**
 * Running the server like WireGuard: its UAPI socket (so `wg show`/`wg set`
 * work), `--metrics`, SIGHUP reloading the config, and `add-peer` /
 * `remove-peer` reaching a running server through its socket.
 *
 * @module
 */

import type {
  MetricsServer,
  ServeLogRecord,
  ServePeer,
  Server,
  UapiListener,
} from "@wgstack/server";
import { keyFromBase64 } from "@wgstack/wireguard";
import { type CliArgs, formatHostPort, interfaceNameOf, UsageError } from "./args.ts";
import type { Logger } from "./log.ts";
import { ipVersionOf } from "./_net.ts";
import { loadServerConfig, type ServerSetup, type SetupPeer } from "./setup.ts";

/** The socket directory: the test's, else `WGSTACK_UAPI_DIR`, else `/var/run/wireguard`. */
export function uapiDirectory(override?: string): string {
  return override ?? Deno.env.get("WGSTACK_UAPI_DIR") ?? "/var/run/wireguard";
}

/**
 * The peers of a config as `serve()` takes them (host-name endpoints are
 * left out, and so are disabled peers).
 */
export function servePeers(setup: ServerSetup): ServePeer[] {
  return setup.peers.filter((p) => !p.disabled).map((p) => servePeer(p));
}

/** One peer of a config as `serve()` takes it. */
export function servePeer(p: SetupPeer): ServePeer {
  return ({
    publicKey: p.publicKey,
    presharedKey: p.presharedKey,
    allowedIps: p.allowedIps,
    name: p.name,
    persistentKeepalive: p.persistentKeepalive,
    endpoint: p.endpoint && ipVersionOf(p.endpoint.host) !== undefined
      ? { address: p.endpoint.host, port: p.endpoint.port }
      : undefined,
  });
}

/** What {@linkcode startControl} started. */
export interface Control {
  /** Re-reads the config and applies the peers' changes (what SIGHUP does). */
  reload(): Promise<void>;
  /** Stops the UAPI socket, the metrics server and the SIGHUP handler. */
  close(): Promise<void>;
}

/**
 * Opens the UAPI socket (unless `--no-uapi`), the metrics server (with
 * `--metrics`) and the SIGHUP handler (with `signals`) of a running server.
 *
 * @throws {UsageError} When an explicitly asked socket or port cannot be opened.
 */
export async function startControl(server: Server, options: {
  cli: CliArgs;
  setup: ServerSetup;
  logger: Logger;
  uapiDirectory?: string;
  /** Listen for SIGHUP (the real process, not a test). */
  signals: boolean;
  /** Stops the server (the UAPI socket was deleted). */
  stop: () => void;
  /** Log records of the server. */
  log: (record: ServeLogRecord) => void;
}): Promise<Control> {
  const { cli, logger } = options;
  let setup = options.setup;
  const { listenUapi, serveMetrics, syncPeers } = await import("@wgstack/server");
  let uapi: UapiListener | undefined;
  let metrics: MetricsServer | undefined;
  const name = cli.uapi ? cli.interface ?? interfaceNameOf(cli.config) : undefined;
  const close = async () => {
    if (options.signals) Deno.removeSignalListener("SIGHUP", onHangup);
    await metrics?.shutdown();
    await uapi?.close();
  };

  const reload = async () => {
    let next: ServerSetup;
    try {
      next = await loadServerConfig(cli.config);
    } catch (error) {
      logger.log({ level: "warn", event: "reload", error: (error as Error).message });
      return;
    }
    if (next.privateKey !== setup.privateKey) {
      logger.log({
        level: "warn",
        event: "reload",
        warning: "PrivateKey changed: restart to use it",
      });
    }
    if (cli.listen === undefined && next.listenPort !== setup.listenPort) {
      await server.setListenPort(next.listenPort).catch((error) => {
        logger.log({ level: "warn", event: "reload", error: `ListenPort: ${error.message}` });
      });
    }
    const r = syncPeers(server, servePeers(next));
    const label = (key: string) => next.peers.find((p) => p.publicKey === key)?.name ?? key;
    logger.log({
      level: "info",
      event: "reload",
      added: r.added.map(label).join(",") || undefined,
      removed: r.removed.map((k) => setup.peers.find((p) => p.publicKey === k)?.name ?? k)
        .join(",") || undefined,
      updated: r.updated.map(label).join(",") || undefined,
    });
    setup = next;
  };
  const onHangup = () => void reload();
  // A peer added through the socket (add-peer, wg set) takes its name from the file, if there.
  const uapiLog = (record: ServeLogRecord) => {
    options.log(record);
    if (record.event !== "uapi-add-peer") return;
    const key = record.peer as string;
    loadServerConfig(cli.config).then((file) => {
      const name = file.peers.find((p) => p.publicKey === key)?.name;
      if (name !== undefined && server.peer(key)) server.updatePeer(key, { name });
    }, () => {});
  };
  if (options.signals) Deno.addSignalListener("SIGHUP", onHangup);

  try {
    if (cli.uapi && name === undefined) {
      logger.log({
        level: "warn",
        event: "uapi",
        warning: `${cli.config} is no interface name: pass --interface NAME for wg to reach it`,
      });
    } else if (name !== undefined) {
      const directory = uapiDirectory(options.uapiDirectory);
      try {
        // wg asks a socket before the kernel: ours would hide a real interface of that name.
        if (options.uapiDirectory === undefined && await exists(`/sys/class/net/${name}`)) {
          throw new Error(`a network interface ${name} exists; choose another with --interface`);
        }
        uapi = await listenUapi({
          server,
          privateKey: keyFromBase64(setup.privateKey),
          log: uapiLog,
          onDeleted: options.stop,
        }, { name, directory });
        logger.log({ level: "info", event: "uapi", path: uapi.path });
      } catch (error) {
        const why = `UAPI socket ${directory}/${name}.sock: ${(error as Error).message}`;
        if (cli.interface !== undefined) throw new UsageError(why);
        logger.log({ level: "warn", event: "uapi", warning: `${why} (wg cannot reach it)` });
      }
    }
    if (cli.metrics) {
      const hostname = cli.metrics.hostname ?? "127.0.0.1";
      const port = cli.metrics.port!;
      try {
        metrics = await serveMetrics(server, { hostname, port, device: name ?? "wgstack" });
      } catch (error) {
        throw new UsageError(
          `--metrics ${formatHostPort(hostname, port)}: ${(error as Error).message}`,
        );
      }
      const url = `http://${formatHostPort(metrics.addr.hostname, metrics.addr.port)}/metrics`;
      logger.log({ level: "info", event: "metrics", url });
    }
  } catch (error) {
    await close();
    throw error;
  }
  return { reload, close };
}

/** UAPI `set` lines adding `peer` (replacing its allowed IPs). */
export function addPeerLines(peer: SetupPeer): string[] {
  const lines = [`public_key=${hex(peer.publicKey)}`];
  if (peer.presharedKey) lines.push(`preshared_key=${hex(peer.presharedKey)}`);
  if (peer.persistentKeepalive) {
    lines.push(`persistent_keepalive_interval=${peer.persistentKeepalive}`);
  }
  lines.push("replace_allowed_ips=true", ...peer.allowedIps.map((ip) => `allowed_ip=${ip}`));
  return lines;
}

/** UAPI `set` lines removing `peer`. */
export function removePeerLines(peer: SetupPeer): string[] {
  return [`public_key=${hex(peer.publicKey)}`, "remove=true"];
}

/**
 * Sends `lines` to the running server of `cli.config` through its UAPI
 * socket. Resolves to the socket's path when applied, `undefined` when no
 * server answers there.
 *
 * @throws {UsageError} When the server refused the change.
 */
export async function applyToRunning(
  cli: CliArgs,
  lines: string[],
  directory?: string,
): Promise<string | undefined> {
  const name = cli.interface ?? interfaceNameOf(cli.config);
  if (name === undefined) return undefined;
  const path = `${uapiDirectory(directory)}/${name}.sock`;
  const { uapiSet } = await import("@wgstack/server");
  try {
    await uapiSet(path, lines);
    return path;
  } catch (error) {
    if (
      error instanceof Deno.errors.NotFound || error instanceof Deno.errors.ConnectionRefused ||
      error instanceof Deno.errors.PermissionDenied
    ) return undefined;
    throw new UsageError(`The server at ${path} refused the change: ${(error as Error).message}`);
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

function hex(base64: string): string {
  return [...keyFromBase64(base64)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
