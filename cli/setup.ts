/**
 * The server config file: loading it (with peer names kept in `# Name = …`
 * comments, so the file stays what `wg` and wg-quick accept), generating it
 * with a first client on first run, and adding clients (`add-peer`).
 *
 * Defaults of a new config: the server is `10.44.0.1/24` and
 * `fdXX:XXXX:XXXX::1/64` (a random RFC 4193 unique local prefix), listens
 * on UDP 51820, and client N gets the host number N + 1 in both subnets.
 * Client files sit beside the server file: `wg.conf` → `wg-client-1.conf`.
 *
 * @module
 */

import {
  ConfigError,
  type ConfigWarning,
  formatCidr,
  formatIp,
  generatePresharedKey,
  generatePrivateKey,
  keyToBase64,
  parseConfig,
  parseIpPrefix,
  publicKey as derivePublicKey,
} from "@wgstack/wireguard";
import { formatHostPort, UsageError } from "./args.ts";

/** The default IPv4 tunnel address (and subnet) of a new server config. */
export const DEFAULT_IPV4 = "10.44.0.1/24";

/** The default UDP port. */
export const DEFAULT_PORT = 51820;

/** The keepalive written into client files (keeps NAT mappings of phones open). */
export const CLIENT_KEEPALIVE = 25;

/** A `[Peer]` of the server config, as the CLI uses it. */
export interface SetupPeer {
  /** The name from the section's `# Name = …` comment. */
  name?: string;
  /** Public key, base64. */
  publicKey: string;
  /** Preshared key, base64. */
  presharedKey?: string;
  /** AllowedIPs as CIDR text. */
  allowedIps: string[];
  /** `Endpoint`: host (name or address, no brackets) and port. */
  endpoint?: { host: string; port: number };
  /** `PersistentKeepalive` seconds. */
  persistentKeepalive?: number;
  /** The section's `# Upstream = URL` comment (`direct`: no proxy for this peer). */
  upstream?: string;
  /** The section has `# Disabled = true`: wgstack does not load the peer. */
  disabled?: boolean;
  /** Line of the `[Peer]` header. */
  line: number;
}

/** The server config file, loaded. */
export interface ServerSetup {
  /** Path of the file. */
  path: string;
  /** Private key, base64. */
  privateKey: string;
  /** Public key, base64. */
  publicKey: string;
  /** `ListenPort`, default 51820. */
  listenPort: number;
  /** `Address`: the server's tunnel addresses with their prefix (e.g. `10.44.0.1/24`). */
  addresses: string[];
  /** `MTU`, when set. */
  mtu?: number;
  /** The peers, in file order. */
  peers: SetupPeer[];
  /** Parser warnings, as `file:line: message`. */
  warnings: string[];
}

/** A client config file written or found beside the server file. */
export interface ClientFile {
  /** The peer's name. */
  name: string;
  /** Path of the client file. */
  path: string;
  /** Its text. */
  text: string;
}

/** What {@linkcode ensureServerConfig} did. */
export interface EnsureResult {
  /** The loaded (or new) config. */
  setup: ServerSetup;
  /** Files created by this call (empty when the config existed). */
  created: string[];
}

/** Options for generating configs. */
export interface GenerateOptions {
  /** Host clients dial (IP or name). Default: the `detectEndpoint` result. */
  endpointHost?: string;
  /** Port clients dial. Default: the config's `ListenPort`. */
  endpointPort?: number;
  /** Server tunnel addresses of a new config (CIDRs). Default `10.44.0.1/24` and a random ULA /64. */
  addresses?: string[];
  /** `ListenPort` of a new config. Default 51820. */
  listenPort?: number;
  /** Finds the endpoint host when none is given. */
  detectEndpoint?: () => string | undefined;
}

/** `dir/wg.conf` + `phone` → `dir/wg-phone.conf`. */
export function clientFilePath(serverPath: string, name: string): string {
  const slash = serverPath.lastIndexOf("/");
  const dir = slash < 0 ? "" : serverPath.slice(0, slash + 1);
  const base = serverPath.slice(slash + 1).replace(/\.conf$/, "");
  return `${dir}${base}-${name}.conf`;
}

/** A random IPv6 unique local /64 (RFC 4193 §3.2: `fd` + 40-bit random global ID, subnet 0). */
export function randomUlaPrefix(): string {
  const bytes = new Uint8Array(16);
  bytes[0] = 0xfd;
  crypto.getRandomValues(bytes.subarray(1, 6));
  bytes[15] = 1;
  return `${formatIp(bytes)}/64`;
}

/**
 * The peer names of a config text: for each `[Peer]` section in order, the
 * value of its first `# Name = …` comment, if any.
 */
export function peerNames(text: string): (string | undefined)[] {
  return peerComments(text, "Name");
}

/**
 * For each `[Peer]` section in order, the value of its first `# KEY = …`
 * comment (`KEY` matched without regard to case), if any.
 */
export function peerComments(text: string, key: string): (string | undefined)[] {
  const names: (string | undefined)[] = [];
  const pattern = new RegExp(`^#\\s*${key}\\s*=\\s*(.*?)\\s*$`, "i");
  let inPeer = false;
  for (const raw of text.split(/\r?\n|\r/)) {
    const line = raw.trim();
    if (line.startsWith("[")) {
      const section = line.replace(/#.*$/, "").trim();
      inPeer = /^\[\s*peer\s*\]$/i.test(section);
      if (inPeer) names.push(undefined);
      continue;
    }
    const m = pattern.exec(line);
    if (m && inPeer && names[names.length - 1] === undefined && m[1] !== "") {
      names[names.length - 1] = m[1];
    }
  }
  return names;
}

function fileError(path: string, error: unknown): UsageError {
  if (error instanceof Deno.errors.NotFound) return new UsageError(`${path}: no such file`);
  if (error instanceof Deno.errors.PermissionDenied) {
    return new UsageError(`${path}: permission denied`);
  }
  if (error instanceof Deno.errors.IsADirectory) return new UsageError(`${path} is a directory`);
  if (error instanceof Deno.errors.NotADirectory) {
    return new UsageError(`${path}: a parent is not a directory`);
  }
  if (error instanceof Deno.errors.InvalidData) {
    return new UsageError(`${path}: not a text file (invalid UTF-8)`);
  }
  return new UsageError(`${path}: ${(error as Error).message ?? error}`);
}

function formatWarning(w: ConfigWarning, path: string): string {
  return `${w.filename ?? path}:${w.line}: ${w.message}`;
}

/**
 * Replaces anything in a message that could be a key (a run of 20 or more
 * base64 characters) with `[redacted]`: config messages quote what they
 * could not parse, and a mistyped line may hold a private key.
 *
 * @example
 * ```ts
 * import { redactKeys } from "./setup.ts";
 * redactKeys('wg.conf:3: invalid PrivateKey "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBm"');
 * // 'wg.conf:3: invalid PrivateKey "[redacted]"'
 * ```
 */
export function redactKeys(message: string): string {
  return message.replace(/[A-Za-z0-9+/]{20,}={0,2}/g, "[redacted]");
}

/**
 * Parses a server config text.
 *
 * @throws {UsageError} With `file:line: reason` for any invalid content.
 */
export function parseServerConfig(text: string, path: string): ServerSetup {
  let parsed;
  try {
    parsed = parseConfig(text, { filename: path });
  } catch (error) {
    if (error instanceof ConfigError) throw new UsageError(redactKeys(error.message));
    throw error;
  }
  const { config, warnings } = parsed;
  const names = peerNames(text);
  const upstreams = peerComments(text, "Upstream");
  const disabled = peerComments(text, "Disabled");
  const privateKey = keyToBase64(config.interface.privateKey);
  const publicKey = keyToBase64(derivePublicKey(config.interface.privateKey));
  const peers: SetupPeer[] = config.peers.map((p, i) => {
    const peer: SetupPeer = {
      publicKey: keyToBase64(p.publicKey),
      allowedIps: p.allowedIps.map(formatCidr),
      line: 0,
    };
    if (names[i] !== undefined) peer.name = names[i];
    if (upstreams[i] !== undefined) peer.upstream = upstreams[i];
    if (/^(true|yes|1)$/i.test(disabled[i] ?? "")) peer.disabled = true;
    if (p.presharedKey) peer.presharedKey = keyToBase64(p.presharedKey);
    if (p.endpoint) peer.endpoint = { host: p.endpoint.host, port: p.endpoint.port };
    if (p.persistentKeepalive) peer.persistentKeepalive = p.persistentKeepalive;
    return peer;
  });
  // Lines of the [Peer] headers, for messages.
  let index = 0;
  text.split(/\r?\n|\r/).forEach((raw, i) => {
    if (/^\s*\[\s*peer\s*\]/i.test(raw) && index < peers.length) peers[index++].line = i + 1;
  });
  const messages = warnings.map((w) => redactKeys(formatWarning(w, path)));
  for (const peer of peers) {
    if (peer.publicKey === publicKey) {
      throw new UsageError(
        `${path}:${peer.line}: this peer has the server's own public key`,
      );
    }
  }
  const seen = new Map<string, SetupPeer>();
  for (const peer of peers) {
    if (peer.name === undefined) continue;
    const first = seen.get(peer.name);
    if (first) {
      throw new UsageError(
        `${path}:${peer.line}: duplicate peer name "${peer.name}" (also on line ${first.line})`,
      );
    }
    seen.set(peer.name, peer);
  }
  const setup: ServerSetup = {
    path,
    privateKey,
    publicKey,
    listenPort: config.interface.listenPort ?? DEFAULT_PORT,
    addresses: (config.interface.addresses ?? []).map((a) => `${formatIp(a.address)}/${a.prefix}`),
    peers,
    warnings: messages,
  };
  if (config.interface.mtu !== undefined) setup.mtu = config.interface.mtu;
  return setup;
}

/**
 * Reads and parses the server config at `path`.
 *
 * @example
 * ```ts ignore
 * import { loadServerConfig } from "@wgstack/cli";
 * const setup = await loadServerConfig("wg.conf");
 * for (const peer of setup.peers) console.log(peer.name, peer.publicKey);
 * ```
 *
 * @throws {UsageError} When the file is missing, unreadable or invalid.
 */
export async function loadServerConfig(path: string): Promise<ServerSetup> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw fileError(path, error);
  }
  return parseServerConfig(text, path);
}

/** The host addresses a new client gets: the same host number in each server subnet. */
export function allocateClientAddresses(setup: ServerSetup): string[] {
  const subnets = setup.addresses.map((text) => {
    const p = parseIpPrefix(text);
    if (!p) throw new UsageError(`${setup.path}: invalid Address "${text}"`);
    return p;
  });
  if (subnets.length === 0) {
    throw new UsageError(
      `${setup.path}: [Interface] has no Address; it is needed to give clients tunnel addresses`,
    );
  }
  const used = new Set<string>();
  for (const s of subnets) used.add(formatIp(s.address));
  for (const peer of setup.peers) {
    for (const cidr of peer.allowedIps) used.add(cidr.replace(/\/\d+$/, ""));
  }
  const limit = Math.min(
    ...subnets.map((s) => {
      const hostBits = s.address.length * 8 - s.prefix;
      return hostBits >= 16 ? 65534 : Math.max(0, 2 ** hostBits - 2);
    }),
  );
  for (let host = 2; host <= limit; host++) {
    const candidates = subnets.map((s) => withHost(s.address, s.prefix, host));
    if (candidates.every((c) => !used.has(formatIp(c)))) {
      return candidates.map((c) => `${formatIp(c)}/${c.length * 8}`);
    }
  }
  throw new UsageError(
    `${setup.path}: no free client address left in ${setup.addresses.join(", ")}`,
  );
}

function withHost(address: Uint8Array, prefix: number, host: number): Uint8Array {
  const out = new Uint8Array(address);
  // Clear the host bits, then set the host number in the low bits.
  for (let bit = prefix; bit < out.length * 8; bit++) out[bit >> 3] &= ~(0x80 >> (bit & 7));
  let h = host;
  for (let i = out.length - 1; h > 0 && i >= 0; i--) {
    out[i] |= h & 0xff;
    h = Math.floor(h / 256);
  }
  return out;
}

/** The text of a client config file. */
export function clientConfigText(options: {
  name: string;
  privateKey: string;
  addresses: string[];
  dns: string[];
  serverPublicKey: string;
  presharedKey?: string;
  endpoint: string;
}): string {
  const lines = [
    `# wgstack client "${options.name}". Import it into a WireGuard app, or: wg-quick up ./FILE`,
    "[Interface]",
    `PrivateKey = ${options.privateKey}`,
    `Address = ${options.addresses.join(", ")}`,
  ];
  if (options.dns.length > 0) lines.push(`DNS = ${options.dns.join(", ")}`);
  lines.push("", "[Peer]", `PublicKey = ${options.serverPublicKey}`);
  if (options.presharedKey) lines.push(`PresharedKey = ${options.presharedKey}`);
  lines.push(
    "AllowedIPs = 0.0.0.0/0, ::/0",
    `Endpoint = ${options.endpoint}`,
    `PersistentKeepalive = ${CLIENT_KEEPALIVE}`,
  );
  return lines.join("\n") + "\n";
}

/** The `[Peer]` section for the server file. */
export function serverPeerText(
  options: { name: string; publicKey: string; presharedKey: string; allowedIps: string[] },
): string {
  return [
    "[Peer]",
    `# Name = ${options.name}`,
    `PublicKey = ${options.publicKey}`,
    `PresharedKey = ${options.presharedKey}`,
    `AllowedIPs = ${options.allowedIps.join(", ")}`,
  ].join("\n") + "\n";
}

function endpointOf(setup: ServerSetup, options: GenerateOptions): string {
  const host = options.endpointHost ?? options.detectEndpoint?.() ?? "127.0.0.1";
  return formatHostPort(host, options.endpointPort ?? setup.listenPort);
}

async function writeNew(path: string, text: string): Promise<void> {
  try {
    await Deno.writeTextFile(path, text, { createNew: true, mode: 0o600 });
    await Deno.chmod(path, 0o600);
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      throw new UsageError(`${path} already exists; not overwriting it`);
    }
    if (error instanceof Deno.errors.NotFound) {
      throw new UsageError(`Cannot create ${path}: its directory does not exist`);
    }
    throw fileError(path, error);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw fileError(path, error);
  }
}

/** The server's tunnel addresses without prefix (the clients' DNS). */
export function tunnelAddresses(setup: ServerSetup): string[] {
  return setup.addresses.map((a) => a.replace(/\/\d+$/, ""));
}

/**
 * Loads the server config at `path`, or, when there is no file there,
 * creates it (mode 0600) with a new key and one client, `client-1`, whose
 * file is written beside it. Never overwrites a file.
 *
 * @example
 * ```ts ignore
 * import { ensureServerConfig } from "@wgstack/cli";
 * const { setup, created } = await ensureServerConfig("wg.conf");
 * for (const path of created) console.log("wrote", path);
 * console.log(setup.listenPort, setup.peers.length);
 * ```
 *
 * @throws {UsageError} When the file is unreadable or invalid, or cannot be created.
 */
export async function ensureServerConfig(
  path: string,
  options: GenerateOptions = {},
): Promise<EnsureResult> {
  if (await exists(path)) return { setup: await loadServerConfig(path), created: [] };

  const addresses = options.addresses ?? [DEFAULT_IPV4, randomUlaPrefix()];
  for (const a of addresses) {
    const p = parseIpPrefix(a);
    if (!p || p.prefix === p.address.length * 8) {
      throw new UsageError(
        `--address "${a}" must be an address with its subnet, e.g. ${DEFAULT_IPV4}`,
      );
    }
  }
  const privateKey = generatePrivateKey();
  const listenPort = options.listenPort || DEFAULT_PORT;
  const header = [
    '# wgstack server config (wg-quick format). Peers\' names are the "# Name =" comments;',
    "# add clients with: wgstack add-peer NAME " + path,
    "[Interface]",
    `PrivateKey = ${keyToBase64(privateKey)}`,
    `ListenPort = ${listenPort}`,
    `Address = ${addresses.join(", ")}`,
  ].join("\n") + "\n";
  const setup = parseServerConfig(header, path);
  // The first client name whose file does not exist yet.
  let n = 1;
  while (await exists(clientFilePath(path, `client-${n}`))) n++;
  const { serverText, client } = newPeer(setup, `client-${n}`, options);
  await writeNew(path, header + "\n" + serverText);
  await writeNew(client.path, client.text);
  return { setup: await loadServerConfig(path), created: [path, client.path] };
}

function newPeer(
  setup: ServerSetup,
  name: string,
  options: GenerateOptions,
): { serverText: string; client: ClientFile } {
  const clientKey = generatePrivateKey();
  const psk = keyToBase64(generatePresharedKey());
  const clientAddresses = allocateClientAddresses(setup);
  const serverText = serverPeerText({
    name,
    publicKey: keyToBase64(derivePublicKey(clientKey)),
    presharedKey: psk,
    allowedIps: clientAddresses,
  });
  const text = clientConfigText({
    name,
    privateKey: keyToBase64(clientKey),
    addresses: clientAddresses,
    dns: tunnelAddresses(setup),
    serverPublicKey: setup.publicKey,
    presharedKey: psk,
    endpoint: endpointOf(setup, options),
  });
  return { serverText, client: { name, path: clientFilePath(setup.path, name), text } };
}

/**
 * Adds a client named `name` to the server config at `path`: appends its
 * `[Peer]` section and writes its client file beside the server file.
 *
 * @example
 * ```ts ignore
 * import { addPeer } from "@wgstack/cli";
 * const client = await addPeer("wg.conf", "laptop");
 * console.log(client.path); // the client's wg-quick file, beside wg.conf
 * ```
 *
 * @throws {UsageError} When the config is missing or invalid, the name is
 * taken, or the client file already exists.
 */
export async function addPeer(
  path: string,
  name: string,
  options: GenerateOptions = {},
): Promise<ClientFile> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UsageError(`${path}: no such file (run "wgstack ${path}" once to create it)`);
    }
    throw fileError(path, error);
  }
  const setup = parseServerConfig(text, path);
  const taken = setup.peers.find((p) => p.name === name);
  if (taken) {
    throw new UsageError(`${path}:${taken.line}: a peer named "${name}" already exists`);
  }
  const { serverText, client } = newPeer(setup, name, options);
  if (await exists(client.path)) {
    throw new UsageError(`${client.path} already exists; not overwriting it`);
  }
  await writeNew(client.path, client.text);
  const separator = text === "" || text.endsWith("\n\n") ? "" : text.endsWith("\n") ? "\n" : "\n\n";
  try {
    await Deno.writeTextFile(path, separator + serverText, { append: true });
  } catch (error) {
    await Deno.remove(client.path).catch(() => {});
    throw fileError(path, error);
  }
  return client;
}

/**
 * The file's lines and the `[Peer]` section of `name`: its header is line
 * `peer.line`, its body the lines up to index `end` (the next section header).
 */
async function peerSection(
  path: string,
  name: string,
): Promise<{ peer: SetupPeer; lines: string[]; end: number }> {
  const text = await Deno.readTextFile(path).catch((error) => {
    throw fileError(path, error);
  });
  const setup = parseServerConfig(text, path);
  const peer = setup.peers.find((p) => p.name === name);
  if (!peer) throw new UsageError(`${path}: no peer named "${name}"`);
  const lines = text.split("\n");
  let end = peer.line;
  while (end < lines.length && !/^\s*\[/.test(lines[end])) end++;
  return { peer, lines, end };
}

/**
 * Removes the peer named `name` from the server config at `path` (its whole
 * `[Peer]` section; the rest of the file stays as it was) and deletes its
 * client file beside it, if there is one.
 *
 * @example
 * ```ts ignore
 * import { removePeer } from "@wgstack/cli";
 * const removed = await removePeer("wg.conf", "laptop");
 * console.log("remove from the running server:", removed.publicKey);
 * ```
 *
 * @returns The removed peer (its public key says which to remove from a running server).
 * @throws {UsageError} When the file cannot be read or written or has no such peer.
 */
export async function removePeer(path: string, name: string): Promise<SetupPeer> {
  const section = await peerSection(path, name);
  const { peer, lines } = section;
  let end = section.end;
  while (end > peer.line && lines[end - 1].trim() === "") end--;
  let start = peer.line - 1;
  // The blank lines in front of it go with it.
  while (start > 0 && lines[start - 1].trim() === "") start--;
  const kept = [...lines.slice(0, start), ...lines.slice(end)].join("\n");
  try {
    await Deno.writeTextFile(path, kept.endsWith("\n") || kept === "" ? kept : kept + "\n");
  } catch (error) {
    throw fileError(path, error);
  }
  await Deno.remove(clientFilePath(path, name)).catch(() => {});
  return peer;
}

/**
 * Disables (`# Disabled = true` in its `[Peer]` section: wgstack does not
 * load it; its keys stay) or enables the peer named `name` in the server
 * config at `path`. The rest of the file stays as it was.
 *
 * @returns The peer as it is now.
 * @throws {UsageError} When the file cannot be read or written or has no such peer.
 */
export async function setPeerDisabled(
  path: string,
  name: string,
  disabled: boolean,
): Promise<SetupPeer> {
  const { peer, lines, end } = await peerSection(path, name);
  const body = lines.slice(peer.line, end).filter((l) => !/^\s*#\s*Disabled\s*=/i.test(l));
  if (disabled) body.unshift("# Disabled = true");
  const next = [...lines.slice(0, peer.line), ...body, ...lines.slice(end)].join("\n");
  try {
    await Deno.writeTextFile(path, next);
  } catch (error) {
    throw fileError(path, error);
  }
  return { ...peer, disabled: disabled || undefined };
}

/**
 * The client files of the named peers that exist beside the server file,
 * in peer order.
 */
export async function readClientFiles(setup: ServerSetup): Promise<ClientFile[]> {
  const out: ClientFile[] = [];
  for (const peer of setup.peers) {
    if (peer.name === undefined) continue;
    const path = clientFilePath(setup.path, peer.name);
    try {
      out.push({ name: peer.name, path, text: await Deno.readTextFile(path) });
    } catch {
      // a peer whose client file is elsewhere (or deleted): nothing to show
    }
  }
  return out;
}

/** Replaces the `Endpoint` line of a client config text (for `--endpoint`). */
export function withEndpoint(text: string, endpoint: string): string {
  return text.replace(/^(\s*Endpoint\s*=\s*).*$/im, `$1${endpoint}`);
}
