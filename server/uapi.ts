/**
 * The UAPI socket of a running server: `/var/run/wireguard/NAME.sock`, where
 * `wg` (wireguard-tools), `wg-quick`, wgctrl and other WireGuard control
 * planes read and change a userspace WireGuard implementation. The protocol
 * text is parsed and written by `@wgstack/wireguard`; this module owns the
 * Unix socket, its limits and applying changes to a {@linkcode Server}.
 *
 * A new `private_key` ends every session (clients need the new public key);
 * clearing it (all zeros) ends them too, and the server then neither sends
 * nor answers handshakes until a key is set again.
 * `fwmark` is accepted and reported but has no effect (wgstack's sockets are
 * not marked).
 *
 * @module
 */

import {
  formatUapiGet,
  keyFromBase64,
  keyToBase64,
  UAPI_EADDRINUSE,
  UAPI_EINVAL,
  UAPI_EMSGSIZE,
  UAPI_EOPNOTSUPP,
  UAPI_EPROTO,
  UapiError,
  type UapiPeerChange,
  type UapiSetOperation,
  UapiSetParser,
} from "@wgstack/wireguard";
import { formatCidr } from "@wgstack/wireguard";
import type { ServeLogRecord, ServePeerUpdate, Server } from "./serve.ts";

/** Where WireGuard's UAPI sockets live (wireguard-go and `wg` agree on it). */
export const UAPI_DIRECTORY = "/var/run/wireguard";

/** Options of the UAPI socket ({@linkcode ServeOptions.uapi}). */
export interface UapiOptions {
  /**
   * The interface name `wg` knows the server by: the socket is
   * `DIRECTORY/NAME.sock`. 1–15 characters of letters, digits, `_`, `=`,
   * `+`, `.` and `-` (a Linux interface name).
   */
  name: string;
  /** The socket directory. Default {@linkcode UAPI_DIRECTORY}. */
  directory?: string;
  /** Connections served at once; more are closed at once. Default 16. */
  maxConnections?: number;
  /** Bytes one request may have. Default 8 MiB (about 30 000 peers of `wg setconf`). */
  maxRequestBytes?: number;
  /** A connection that sends nothing for this long is closed. Default 30 000 ms. */
  idleTimeoutMs?: number;
}

/** The listening UAPI socket. */
export interface UapiListener {
  /** The socket's path. */
  readonly path: string;
  /** Stops listening, closes open connections and removes the socket file. */
  close(): Promise<void>;
}

/** What the UAPI socket needs of the server it controls. */
export interface UapiTarget {
  /** The running server. */
  readonly server: Server;
  /** The server's private key (reported by `get`). */
  readonly privateKey: Uint8Array;
  /** Receives log records. */
  readonly log?: (record: ServeLogRecord) => void;
  /** Called when the socket file is deleted (the server then shuts down, as wireguard-go does). */
  readonly onDeleted?: () => void;
}

/** Longest line accepted (wg's longest are a few hundred bytes). */
const MAX_LINE = 4096;

/**
 * Opens the UAPI socket of `target.server`: creates the directory (0755) if
 * needed, replaces a stale socket (one nobody answers on), and refuses with
 * `Deno.errors.AddrInUse` when another process serves that name. The socket
 * is created under umask 077 (only root can connect).
 *
 * @example
 * ```ts ignore
 * import { listenUapi, serve } from "@wgstack/server";
 * const privateKey = crypto.getRandomValues(new Uint8Array(32));
 * const server = await serve({ privateKey });
 * const uapi = await listenUapi({ server, privateKey }, { name: "wgs0" });
 * // now: wg show wgs0
 * ```
 */
export async function listenUapi(target: UapiTarget, options: UapiOptions): Promise<UapiListener> {
  if (!/^[A-Za-z0-9_=+.-]{1,15}$/.test(options.name) || /^\.\.?$/.test(options.name)) {
    throw new RangeError(`Invalid UAPI interface name ${JSON.stringify(options.name)}`);
  }
  const directory = options.directory ?? UAPI_DIRECTORY;
  const path = `${directory}/${options.name}.sock`;
  const limits = {
    connections: positive(options.maxConnections ?? 16, "maxConnections"),
    requestBytes: positive(options.maxRequestBytes ?? 8 * 1024 * 1024, "maxRequestBytes"),
    idleMs: positive(options.idleTimeoutMs ?? 30_000, "idleTimeoutMs"),
  };
  await Deno.mkdir(directory, { recursive: true, mode: 0o755 });
  const listener = await bindUnix(path);
  const { ino } = await Deno.lstat(path);
  const state: DeviceState = { fwmark: 0, privateKey: target.privateKey.slice() };
  const conns = new Set<Deno.Conn>();
  const log = target.log ?? (() => {});
  let closed = false;

  const accepting = (async () => {
    for await (const conn of listener) {
      if (conns.size >= limits.connections) {
        conn.close();
        continue;
      }
      conns.add(conn);
      serveConnection(conn, target, state, limits).catch((error) => {
        log({ level: "debug", event: "uapi-error", error: String(error) });
      }).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed already */ }
      });
    }
  })().catch(() => {});

  // Deleting the socket stops the server (as wireguard-go does).
  const watcher = Deno.watchFs(path, { recursive: false });
  (async () => {
    for await (const _event of watcher) {
      if (closed) return;
      const now = await Deno.lstat(path).catch(() => undefined);
      if (now?.ino !== ino) {
        log({ level: "info", event: "uapi-deleted", path });
        target.onDeleted?.();
        return;
      }
    }
  })().catch(() => {});

  return {
    path,
    async close() {
      if (closed) return;
      closed = true;
      watcher.close();
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed already */ }
      }
      await accepting;
      // Ours only: another server may have replaced it meanwhile.
      const now = await Deno.lstat(path).catch(() => undefined);
      if (now?.ino === ino) await Deno.remove(path).catch(() => {});
    },
  };
}

/**
 * Sends a `set=1` request with `lines` (`key=value`, without newlines) to the
 * UAPI socket at `path`, as `wg set` does, and resolves when it applied.
 *
 * @throws {UapiError} With the errno of the reply when it is not 0.
 * @throws {Deno.errors.NotFound} Or another Deno error when no server answers at `path`.
 *
 * @example
 * ```ts ignore
 * import { uapiSet } from "@wgstack/server";
 * await uapiSet("/var/run/wireguard/wg0.sock", [`public_key=${hex}`, "remove=true"]);
 * ```
 */
export async function uapiSet(path: string, lines: string[], timeoutMs = 10_000): Promise<void> {
  if (lines.some((l) => l.includes("\n") || !l.includes("="))) {
    throw new TypeError("UAPI lines are key=value without newlines");
  }
  await uapiRequest(path, ["set=1", ...lines, "", ""].join("\n"), timeoutMs);
}

/**
 * Sends `get=1` to the UAPI socket at `path`, as `wg show` does, and returns
 * the answer's `key=value` lines (without the final `errno=0`).
 *
 * @throws {UapiError} With the errno of the reply when it is not 0.
 * @throws {Deno.errors.NotFound} Or another Deno error when no server answers at `path`.
 *
 * @example
 * ```ts ignore
 * import { uapiGet } from "@wgstack/server";
 * const lines = await uapiGet("/var/run/wireguard/wg0.sock");
 * const peers = lines.filter((line) => line.startsWith("public_key="));
 * ```
 */
export async function uapiGet(path: string, timeoutMs = 10_000): Promise<string[]> {
  return await uapiRequest(path, "get=1\n\n", timeoutMs);
}

/** One request on a connection of its own; the reply's lines before `errno=0`. */
async function uapiRequest(path: string, request: string, timeoutMs: number): Promise<string[]> {
  const conn = await Deno.connect({ transport: "unix", path });
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    await conn.write(new TextEncoder().encode(request));
    let reply = "";
    const buf = new Uint8Array(16 * 1024);
    const decoder = new TextDecoder();
    while (!reply.endsWith("\n\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      reply += decoder.decode(buf.subarray(0, n), { stream: true });
    }
    const lines = reply.split("\n").filter((l) => l !== "");
    const errno = /^errno=(-?\d+)$/.exec(lines.pop() ?? "")?.[1];
    if (errno === undefined) throw new UapiError(UAPI_EPROTO, `No errno in the reply from ${path}`);
    if (errno !== "0") throw new UapiError(Number(errno), `${path} answered errno=${errno}`);
    return lines;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

/** Binds `path`, replacing a socket file nobody listens on. */
async function bindUnix(path: string): Promise<Deno.Listener> {
  const listen = () => {
    const umask = Deno.umask(0o077);
    try {
      return Deno.listen({ transport: "unix", path });
    } finally {
      Deno.umask(umask);
    }
  };
  try {
    return listen();
  } catch (error) {
    if (!(error instanceof Deno.errors.AddrInUse)) throw error;
  }
  const stat = await Deno.lstat(path);
  if (!stat.isSocket) throw new Deno.errors.AlreadyExists(`${path} exists and is not a socket`);
  try {
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
    throw new Deno.errors.AddrInUse(`${path} is in use by another server`);
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) throw error;
  }
  await Deno.remove(path);
  return listen();
}

/** The device settings the server itself does not keep (or does not tell). */
interface DeviceState {
  fwmark: number;
  privateKey: Uint8Array;
}

interface Limits {
  connections: number;
  requestBytes: number;
  idleMs: number;
}

/**
 * Serves requests on one connection until it closes, sends an unknown
 * operation, goes over a limit or stays silent too long.
 */
async function serveConnection(
  conn: Deno.Conn,
  target: UapiTarget,
  state: DeviceState,
  limits: Limits,
): Promise<void> {
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  const write = async (text: string) => {
    const bytes = encoder.encode(text);
    for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
  };
  const buffer = new Uint8Array(16 * 1024);
  let pending = ""; // the start of a line not yet ended by "\n"
  let request: Request | undefined; // the request in progress
  let requestBytes = 0;

  for (;;) {
    const idle = setTimeout(() => conn.close(), limits.idleMs);
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch {
      return; // closed (by us on idle, or by the client)
    } finally {
      clearTimeout(idle);
    }
    if (n === null) return;
    const lines = (pending + decoder.decode(buffer.subarray(0, n), { stream: true })).split("\n");
    pending = lines.pop()!;
    if (pending.length > MAX_LINE) return await write(`errno=${UAPI_EMSGSIZE}\n\n`);
    for (const line of lines) {
      requestBytes += line.length + 1;
      if (line.length > MAX_LINE || requestBytes > limits.requestBytes) {
        return await write(`errno=${UAPI_EMSGSIZE}\n\n`);
      }
      if (request === undefined) {
        if (line === "get=1") request = { op: "get" };
        else if (line === "set=1") request = { op: "set", parser: new UapiSetParser() };
        else return; // an unknown operation closes the connection (as wireguard-go)
        continue;
      }
      if (request.op === "get") {
        // "get=1" must be followed by the blank line at once.
        if (line !== "") {
          await write(`errno=${UAPI_EINVAL}\n\n`);
          return;
        }
        await write(formatUapiGet(deviceOf(target, state)) + "errno=0\n\n");
      } else if (line !== "") {
        if (request.errno !== undefined) continue; // skip to the end of the failed request
        request.errno = await applyLines(target, state, request.parser, line);
        continue;
      } else {
        const errno = request.errno ??
          (await applyLines(target, state, request.parser, undefined)) ?? 0;
        await write(`errno=${errno}\n\n`);
      }
      request = undefined;
      requestBytes = 0;
    }
  }
}

type Request =
  | { op: "get" }
  | { op: "set"; parser: UapiSetParser; errno?: number };

/** Parses one line (or the end, for `undefined`) and applies what it completes; returns an errno on failure. */
async function applyLines(
  target: UapiTarget,
  state: DeviceState,
  parser: UapiSetParser,
  line: string | undefined,
): Promise<number | undefined> {
  try {
    let ops: UapiSetOperation[];
    try {
      ops = line === undefined ? parser.end() : parser.line(line);
    } catch (error) {
      // What the peer's block set before the bad line stays applied (as in wireguard-go).
      for (const op of parser.end()) await applyOperation(target, state, op);
      throw error;
    }
    for (const op of ops) await applyOperation(target, state, op);
    return undefined;
  } catch (error) {
    if (error instanceof UapiError) {
      target.log?.({ level: "warn", event: "uapi-set", errno: error.errno, error: error.message });
      return error.errno;
    }
    target.log?.({ level: "warn", event: "uapi-set", errno: UAPI_EINVAL, error: String(error) });
    return UAPI_EINVAL;
  }
}

/**
 * Applies one operation of a `set` request to the server.
 *
 * @throws {UapiError} With the errno to report.
 */
async function applyOperation(
  target: UapiTarget,
  state: DeviceState,
  op: UapiSetOperation,
): Promise<void> {
  const { server } = target;
  switch (op.kind) {
    case "private_key":
      if (op.key === null) {
        if (state.privateKey.some((b) => b !== 0)) {
          server.setPrivateKey(null);
          state.privateKey = new Uint8Array(32);
          target.log?.({ level: "info", event: "uapi-private-key-cleared" });
        }
        return;
      }
      if (!sameBytes(op.key, state.privateKey)) {
        server.setPrivateKey(op.key);
        state.privateKey = op.key.slice();
        target.log?.({ level: "info", event: "uapi-private-key", publicKey: server.publicKey });
      }
      return;
    case "listen_port":
      try {
        await server.setListenPort(op.port);
      } catch (error) {
        if (error instanceof TypeError) throw new UapiError(UAPI_EOPNOTSUPP, error.message);
        throw new UapiError(UAPI_EADDRINUSE, `Cannot listen on port ${op.port}: ${error}`);
      }
      return;
    case "fwmark":
      state.fwmark = op.fwmark;
      return;
    case "replace_peers":
      for (const peer of server.peers()) server.removePeer(peer.publicKey);
      target.log?.({ level: "info", event: "uapi-replace-peers" });
      return;
    case "peer":
      applyPeer(target, op.peer);
      return;
  }
}

function applyPeer(target: UapiTarget, change: UapiPeerChange): void {
  const { server } = target;
  const publicKey = keyToBase64(change.publicKey);
  if (publicKey === server.publicKey) return; // our own key is ignored (as wireguard-go)
  const existing = server.peer(publicKey);
  const log = (event: string) => target.log?.({ level: "info", event, peer: publicKey });
  if (change.remove) {
    if (existing && server.removePeer(publicKey)) log("uapi-remove-peer");
    return;
  }
  if (!existing && change.updateOnly) return;
  const allowed = new Map((existing?.allowedIps ?? []).map((ip) => [ip, ip]));
  for (const c of change.allowedIps) {
    if (c.kind === "replace") allowed.clear();
    else if (c.kind === "add") allowed.set(formatCidr(c.cidr), formatCidr(c.cidr));
    else allowed.delete(formatCidr(c.cidr));
  }
  const presharedKey = change.presharedKey === undefined
    ? undefined
    : change.presharedKey && keyToBase64(change.presharedKey);
  try {
    if (!existing) {
      server.addPeer({
        publicKey,
        presharedKey: presharedKey ?? undefined,
        allowedIps: [...allowed.keys()],
        endpoint: change.endpoint,
        persistentKeepalive: change.persistentKeepalive,
      });
      log("uapi-add-peer");
      return;
    }
    const update: ServePeerUpdate = {};
    if (presharedKey !== undefined && presharedKey !== (existing.presharedKey ?? null)) {
      update.presharedKey = presharedKey;
    }
    const next = [...allowed.keys()];
    if (change.allowedIps.length > 0 && !sameSet(next, existing.allowedIps)) {
      update.allowedIps = next;
    }
    if (change.endpoint) update.endpoint = change.endpoint;
    // Only a change: a new interval sends a keepalive right away.
    if (
      change.persistentKeepalive !== undefined &&
      change.persistentKeepalive !== existing.persistentKeepalive
    ) update.persistentKeepalive = change.persistentKeepalive;
    if (Object.keys(update).length > 0) {
      server.updatePeer(publicKey, update);
      log("uapi-update-peer");
    }
  } catch (error) {
    throw new UapiError(UAPI_EINVAL, (error as Error).message);
  }
}

function deviceOf(target: UapiTarget, state: DeviceState) {
  const { server } = target;
  return {
    privateKey: state.privateKey,
    listenPort: server.addr.port,
    fwmark: state.fwmark,
    peers: server.peers().map((p) => ({
      publicKey: keyFromBase64(p.publicKey),
      presharedKey: p.presharedKey === undefined ? undefined : keyFromBase64(p.presharedKey),
      endpoint: p.endpoint,
      lastHandshakeMs: p.lastHandshake,
      txBytes: p.txBytes,
      rxBytes: p.rxBytes,
      persistentKeepalive: p.persistentKeepalive,
      allowedIps: p.allowedIps,
    })),
  };
}

function sameSet(a: string[], b: string[]): boolean {
  const set = new Set(a);
  return set.size === b.length && b.every((x) => set.has(x));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function positive(n: number, name: string): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${name} must be a positive integer`);
  return n;
}
