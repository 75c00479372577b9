/**
 * Command line flags of `wgstack`, parsed strictly with `node:util`
 * `parseArgs`: an unknown flag or a bad value is a {@linkcode UsageError}
 * (exit code 2) with one clear line.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { TCP_CONGESTION_CONTROLS, type TcpCongestionControl } from "@wgstack/netstack";

/** A mistake of the person running the command: printed as one line, exit code 2. */
export class UsageError extends Error {
  /** The process exit code for user errors. */
  readonly exitCode = 2;
  /**
   * Creates the error.
   *
   * @param message One line, in sentence case, naming the file or flag at fault.
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Log severities, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** What the server does with the connections and flows of its clients. */
export type Mode = "forward" | "echo";

/** A `HOST:PORT` value of a flag; `hostname` is absent for `:PORT`. */
export interface HostPort {
  /** Host name or IP address, without brackets; absent when only a port was given. */
  hostname?: string;
  /** Port, absent when only a host was given. */
  port?: number;
}

/** The command to run and its settings. */
export interface CliArgs {
  /** `serve` runs the server; the others are the subcommands. */
  command:
    | "serve"
    | "genkey"
    | "genpsk"
    | "pubkey"
    | "add-peer"
    | "remove-peer"
    | "show-client"
    | "help"
    | "version";
  /** Path of the server config file (default `wg.conf`). */
  config: string;
  /** The new peer's name (`add-peer`), the one to remove (`remove-peer`), or the client to print (`show-client`). */
  peerName?: string;
  /** `forward` (default) or `echo`. */
  mode: Mode;
  /** `--listen`: address and port to bind, overriding the config's `ListenPort`. */
  listen?: HostPort;
  /** `--endpoint`: host (and optional port) clients dial, instead of the detected one. */
  endpoint?: HostPort;
  /** `--pcap`: file receiving every inner packet. */
  pcap?: string;
  /** Lowest severity logged. */
  logLevel: LogLevel;
  /** `text` (default) or `json` (one object per line). */
  logFormat: "text" | "json";
  /** `--dns-upstream`: resolver the tunnel's DNS address forwards to. */
  dnsUpstream?: HostPort;
  /** `--address`: the server's tunnel addresses when a new config is generated. */
  addresses?: string[];
  /** `--connect-timeout` in milliseconds (forward mode dial timeout). */
  connectTimeoutMs: number;
  /** `--tcp-cc`: congestion controller of the connections we terminate. */
  tcpCc?: TcpCongestionControl;
  /** False with `--no-qr`. */
  qr: boolean;
  /** `--allow`/`--deny` rules in the order given (`CIDR[:PORTS]`, checked when the server starts). */
  rules: { action: "allow" | "deny"; target: string }[];
  /** `--deny-private`: refuse private destinations too. */
  denyPrivate: boolean;
  /** `--refuse-with`: how a refused TCP connection is answered (default `rst`). */
  refuseWith: "rst" | "icmp";
  /** `--syn-ack`: when a forwarded TCP connection is answered (default `after-dial`). */
  synAck: "after-dial" | "immediate";
  /** `--tcp-idle-timeout` in milliseconds (0: none; default 7 440 000). */
  tcpIdleTimeoutMs: number;
  /** `--pcap-max-size` in bytes (default 100 MiB; 0: no limit). */
  pcapMaxBytes: number;
  /** `--interface`: the name `wg` knows the server by (default: the config's base name). */
  interface?: string;
  /** False with `--no-uapi`: no UAPI socket. */
  uapi: boolean;
  /** `--metrics`: where to serve Prometheus metrics (host default 127.0.0.1). */
  metrics?: HostPort;
  /** `--upstream`: proxy URL for every peer without its own `# Upstream =` line. */
  upstream?: string;
  /** `--upstream-udp`: UDP of flows behind an HTTP proxy (default `refuse`). */
  upstreamUdp: "direct" | "refuse";
  /** `--deny-domain` patterns. */
  denyDomains: string[];
  /** `--allow-domain` patterns. */
  allowDomains: string[];
  /** `--dns-block`: the DNS answer for a denied name (default `nxdomain`). */
  dnsBlock: "nxdomain" | "zero" | "off";
  /** False with `--no-sniff`. */
  sniff: boolean;
  /** `--web`: where to serve the dashboard (host default 127.0.0.1). */
  web?: HostPort;
  /** `--web-token` (else `WGSTACK_WEB_TOKEN`, else random). */
  webToken?: string;
}

/** The usage text printed by `--help`. */
export const HELP = `wgstack: a userspace WireGuard server. Every TCP connection and UDP flow
of its clients is terminated here, forwarded to its destination (or echoed)
and logged.

Usage:
  wgstack [CONFIG] [flags]         run the server (CONFIG defaults to wg.conf;
                                   created with one client on first run)
  wgstack add-peer NAME [CONFIG]   add a client: appends a [Peer] to CONFIG, writes
                                   its client file beside it and adds it to the
                                   running server (through its UAPI socket)
  wgstack remove-peer NAME [CONFIG]  remove a client from CONFIG (and its client
                                   file) and from the running server
  wgstack show-client NAME [CONFIG]  print a client's config (and QR code): it
                                   holds the client's private key
  wgstack genkey                   print a new private key
  wgstack genpsk                   print a new preshared key
  wgstack pubkey < private.key     print the public key of a private key

Flags:
  -m, --mode forward|echo          forward (default): dial each connection's real
                                   destination; echo: send everything back
  -l, --listen HOST:PORT           UDP address to bind (default [::]:ListenPort)
  -e, --endpoint HOST[:PORT]       address clients reach the server at (default:
                                   detected from this machine's interfaces)
      --pcap FILE                  write every decrypted packet to FILE (pcap,
                                   mode 0600; it holds the clients' traffic in clear)
      --pcap-max-size SIZE         stop capturing at SIZE bytes (k/M/G suffix;
                                   default 100M; 0: no limit)
      --log-level debug|info|warn|error   (default info)
      --log-format text|json       (default text)
      --dns-upstream HOST[:PORT]   resolver for DNS sent to the tunnel address
                                   (default: first nameserver in /etc/resolv.conf)
      --address CIDR[,CIDR]        server tunnel addresses for a new config
                                   (default 10.44.0.1/24 and a random fdXX::1/64)
      --connect-timeout SECONDS    forward mode dial timeout (default 10)
      --tcp-cc cubic|newreno|bbr   congestion control of our TCP towards clients
                                   (default bbr)
      --allow CIDR[:PORTS]         forward mode: allow destinations (repeatable;
                                   rules apply in order, first match wins; IPv6
                                   with ports as [CIDR]:PORTS; PORTS like 80,8000-8100)
      --deny CIDR[:PORTS]          forward mode: refuse destinations (repeatable)
      --deny-private               refuse private ranges too (10/8, 172.16/12,
                                   192.168/16, 100.64/10, fc00::/7)
      --refuse-with rst|icmp       answer to a refused TCP connection (default rst;
                                   icmp: administratively prohibited)
      --syn-ack after-dial|immediate
                                   when a forwarded TCP connection is answered:
                                   after its dial connected (default; a closed
                                   port gets RST, an unreachable one ICMP) or at
                                   once (faster connects; a failed dial then
                                   resets the open connection, so closed ports
                                   look open)
      --tcp-idle-timeout SECONDS   close forwarded TCP connections idle this long
                                   (default 7440 = 2 h 4 min; 0: never)
      --interface NAME             the name wg knows this server by: its UAPI
                                   socket is /var/run/wireguard/NAME.sock (default:
                                   the config's base name, e.g. wg0 for wg0.conf)
      --no-uapi                    no UAPI socket (wg show/set cannot reach it)
      --metrics [HOST]:PORT        serve Prometheus metrics at http://HOST:PORT/metrics
                                   (and /healthz; HOST defaults to 127.0.0.1)
      --upstream URL               send forwarded flows through a proxy:
                                   socks5://[USER:PASS@]HOST:PORT (TCP and UDP),
                                   socks5h://… (sends the flow's DNS name),
                                   http://[USER:PASS@]HOST:PORT (TCP, CONNECT);
                                   a peer's "# Upstream = URL" line in CONFIG
                                   overrides it ("# Upstream = direct": none)
      --upstream-udp refuse|direct UDP behind an HTTP proxy (default refuse)
      --deny-domain PATTERN        refuse flows to a host name (repeatable): NAME,
                                   *.SUFFIX (also SUFFIX itself) or *; names come
                                   from TLS SNI, HTTP Host and DNS answers
      --allow-domain PATTERN       exception to a less specific --deny-domain
      --dns-block nxdomain|zero|off  DNS answer for a denied name (default nxdomain)
      --no-sniff                   do not read names from connections' first bytes
      --web [HOST:]PORT            serve the live dashboard and its JSON API at
                                   http://HOST:PORT/ (HOST defaults to 127.0.0.1);
                                   the URL to open, with its token, is printed
      --web-token TOKEN            the dashboard's access token (16+ characters of
                                   A-Z a-z 0-9 . _ ~ -; default: WGSTACK_WEB_TOKEN,
                                   else a random one)
      --no-qr                      do not print QR codes
  -h, --help                       show this help
  -V, --version                    show the version

SIGHUP makes the server re-read CONFIG and apply added, removed and changed
peers at once (as wg syncconf does); other peers' sessions stay.

Exit codes: 0 ok, 1 internal error, 2 usage or config error.`;

const SUBCOMMANDS = new Set([
  "genkey",
  "genpsk",
  "pubkey",
  "add-peer",
  "remove-peer",
  "show-client",
]);

/**
 * Parses `args` (without the program name).
 *
 * @throws {UsageError} For unknown flags, missing or bad values, and extra arguments.
 *
 * @example
 * ```ts
 * import { parseCliArgs } from "./args.ts";
 * parseCliArgs(["server.conf", "--mode", "echo"]).mode; // "echo"
 * ```
 */
export function parseCliArgs(args: string[]): CliArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: true,
      tokens: true,
      options: {
        mode: { type: "string", short: "m" },
        listen: { type: "string", short: "l" },
        endpoint: { type: "string", short: "e" },
        pcap: { type: "string" },
        "log-level": { type: "string" },
        "log-format": { type: "string" },
        "dns-upstream": { type: "string" },
        address: { type: "string" },
        "connect-timeout": { type: "string" },
        "tcp-cc": { type: "string" },
        "no-qr": { type: "boolean" },
        interface: { type: "string" },
        "no-uapi": { type: "boolean" },
        metrics: { type: "string" },
        allow: { type: "string", multiple: true },
        deny: { type: "string", multiple: true },
        "deny-private": { type: "boolean" },
        "refuse-with": { type: "string" },
        "syn-ack": { type: "string" },
        "tcp-idle-timeout": { type: "string" },
        "pcap-max-size": { type: "string" },
        upstream: { type: "string" },
        "upstream-udp": { type: "string" },
        "deny-domain": { type: "string", multiple: true },
        "allow-domain": { type: "string", multiple: true },
        "dns-block": { type: "string" },
        "no-sniff": { type: "boolean" },
        web: { type: "string" },
        "web-token": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (error) {
    throw new UsageError(parseArgsMessage(error));
  }
  const { values, positionals, tokens } = parsed;
  const base: CliArgs = {
    command: "serve",
    config: "wg.conf",
    mode: "forward",
    logLevel: "info",
    logFormat: "text",
    connectTimeoutMs: 10_000,
    qr: !values["no-qr"],
    rules: [],
    denyPrivate: values["deny-private"] ?? false,
    refuseWith: "rst",
    synAck: "after-dial",
    tcpIdleTimeoutMs: 7_440_000,
    pcapMaxBytes: 100 * 1024 * 1024,
    uapi: !values["no-uapi"],
    upstreamUdp: "refuse",
    denyDomains: [],
    allowDomains: [],
    dnsBlock: "nxdomain",
    sniff: !values["no-sniff"],
  };
  if (values.help) return { ...base, command: "help" };
  if (values.version) return { ...base, command: "version" };

  const rest = [...positionals];
  if (rest.length > 0 && SUBCOMMANDS.has(rest[0])) {
    base.command = rest.shift() as CliArgs["command"];
  }
  if (base.command === "genkey" || base.command === "genpsk" || base.command === "pubkey") {
    if (rest.length > 0) {
      throw new UsageError(`${base.command} takes no arguments (got "${rest[0]}")`);
    }
  } else if (
    base.command === "add-peer" || base.command === "remove-peer" ||
    base.command === "show-client"
  ) {
    const name = rest.shift();
    if (name === undefined) {
      throw new UsageError(`${base.command} needs a NAME, e.g. wgstack ${base.command} phone`);
    }
    base.peerName = validatePeerName(name);
  }
  if (base.command !== "genkey" && base.command !== "genpsk" && base.command !== "pubkey") {
    if (rest.length > 0) base.config = rest.shift()!;
    if (rest.length > 0) throw new UsageError(`Unexpected argument "${rest[0]}" (see --help)`);
    if (base.config === "") throw new UsageError("The config file name is empty");
  }

  if (values.mode !== undefined) {
    if (values.mode !== "forward" && values.mode !== "echo") {
      throw new UsageError(`--mode must be forward or echo, not "${values.mode}"`);
    }
    base.mode = values.mode;
  }
  if (values.listen !== undefined) {
    const listen = parseHostPort(values.listen, "--listen");
    if (listen.port === undefined) {
      throw new UsageError(`--listen needs a port, e.g. 0.0.0.0:51820 (got "${values.listen}")`);
    }
    base.listen = listen;
  }
  if (values.endpoint !== undefined) {
    base.endpoint = parseHostPort(values.endpoint, "--endpoint");
    if (base.endpoint.hostname === undefined) {
      throw new UsageError(`--endpoint needs a host (got "${values.endpoint}")`);
    }
  }
  if (values.pcap !== undefined) {
    if (values.pcap === "") throw new UsageError("--pcap needs a file name");
    base.pcap = values.pcap;
  }
  const level = values["log-level"];
  if (level !== undefined) {
    if (!["debug", "info", "warn", "error"].includes(level)) {
      throw new UsageError(`--log-level must be debug, info, warn or error, not "${level}"`);
    }
    base.logLevel = level as LogLevel;
  }
  const format = values["log-format"];
  if (format !== undefined) {
    if (format !== "text" && format !== "json") {
      throw new UsageError(`--log-format must be text or json, not "${format}"`);
    }
    base.logFormat = format;
  }
  if (values["dns-upstream"] !== undefined) {
    const dns = parseHostPort(values["dns-upstream"], "--dns-upstream");
    if (dns.hostname === undefined) {
      throw new UsageError(`--dns-upstream needs a host (got "${values["dns-upstream"]}")`);
    }
    base.dnsUpstream = dns;
  }
  if (values.address !== undefined) {
    base.addresses = values.address.split(",").map((s) => s.trim()).filter((s) => s !== "");
    if (base.addresses.length === 0) throw new UsageError("--address needs at least one CIDR");
  }
  const timeout = values["connect-timeout"];
  if (timeout !== undefined) {
    const seconds = Number(timeout);
    if (timeout.trim() === "" || !Number.isFinite(seconds) || seconds <= 0 || seconds > 600) {
      throw new UsageError(`--connect-timeout must be seconds between 0 and 600, not "${timeout}"`);
    }
    base.connectTimeoutMs = Math.round(seconds * 1000);
  }
  const cc = values["tcp-cc"];
  if (cc !== undefined) {
    if (!(TCP_CONGESTION_CONTROLS as readonly string[]).includes(cc)) {
      throw new UsageError(
        `--tcp-cc must be one of ${TCP_CONGESTION_CONTROLS.join(", ")}, not "${cc}"`,
      );
    }
    base.tcpCc = cc as TcpCongestionControl;
  }
  for (const token of tokens ?? []) {
    if (token.kind !== "option" || (token.name !== "allow" && token.name !== "deny")) continue;
    const target = (token.value ?? "").trim();
    if (!/^\[?[0-9A-Fa-f:.]+(\/\d{1,3})?\]?(:[\d,-]+)?$/.test(target)) {
      throw new UsageError(
        `--${token.name} needs CIDR[:PORTS], e.g. 10.0.0.0/8:22 (got "${target}")`,
      );
    }
    base.rules.push({ action: token.name, target });
  }
  const refuse = values["refuse-with"];
  if (refuse !== undefined) {
    if (refuse !== "rst" && refuse !== "icmp") {
      throw new UsageError(`--refuse-with must be rst or icmp, not "${refuse}"`);
    }
    base.refuseWith = refuse;
  }
  const synAck = values["syn-ack"];
  if (synAck !== undefined) {
    if (synAck !== "after-dial" && synAck !== "immediate") {
      throw new UsageError(`--syn-ack must be after-dial or immediate, not "${synAck}"`);
    }
    base.synAck = synAck;
  }
  const idle = values["tcp-idle-timeout"];
  if (idle !== undefined) {
    const seconds = Number(idle);
    if (
      idle.trim() === "" || !Number.isFinite(seconds) || seconds < 0 || seconds > 2 ** 31 / 1000
    ) {
      throw new UsageError(`--tcp-idle-timeout must be seconds (0: never), not "${idle}"`);
    }
    base.tcpIdleTimeoutMs = Math.round(seconds * 1000);
  }
  const size = values["pcap-max-size"];
  if (size !== undefined) {
    const m = /^(\d+)([kKmMgG]?)$/.exec(size.trim());
    if (!m) throw new UsageError(`--pcap-max-size must be a size like 50M, not "${size}"`);
    const unit = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase()]!;
    base.pcapMaxBytes = Number(m[1]) * unit;
  }
  if (values.metrics !== undefined) {
    const metrics = parseHostPort(values.metrics, "--metrics");
    if (metrics.port === undefined) {
      throw new UsageError(`--metrics needs a port, e.g. 127.0.0.1:9586 (got "${values.metrics}")`);
    }
    base.metrics = metrics;
  }
  if (values.interface !== undefined) {
    if (!isInterfaceName(values.interface)) {
      throw new UsageError(
        `--interface "${values.interface}": use 1 to 15 letters, digits, "_", "=", "+", "." or "-"`,
      );
    }
    if (!base.uapi) throw new UsageError("--interface and --no-uapi contradict each other");
    base.interface = values.interface;
  }
  // --upstream and the domain patterns are checked where the server is loaded (run.ts).
  if (values.upstream !== undefined) base.upstream = values.upstream;
  const udp = values["upstream-udp"];
  if (udp !== undefined) {
    if (udp !== "direct" && udp !== "refuse") {
      throw new UsageError(`--upstream-udp must be direct or refuse, not "${udp}"`);
    }
    base.upstreamUdp = udp;
  }
  base.denyDomains = values["deny-domain"] ?? [];
  base.allowDomains = values["allow-domain"] ?? [];
  const block = values["dns-block"];
  if (block !== undefined) {
    if (block !== "nxdomain" && block !== "zero" && block !== "off") {
      throw new UsageError(`--dns-block must be nxdomain, zero or off, not "${block}"`);
    }
    base.dnsBlock = block;
  }
  if (values.web !== undefined) {
    const web = parseHostPort(values.web, "--web");
    if (web.port === undefined) {
      throw new UsageError(`--web needs a port, e.g. 8080 or 127.0.0.1:8080 (got "${values.web}")`);
    }
    base.web = web;
  }
  if (values["web-token"] !== undefined) {
    if (base.web === undefined) throw new UsageError("--web-token needs --web");
    base.webToken = validateWebToken(values["web-token"], "--web-token");
  }
  return base;
}

/**
 * Checks a dashboard token: 16 to 256 characters that need no escaping in a
 * URL (`A-Z a-z 0-9 . _ ~ -`).
 *
 * @throws {UsageError} Naming `source` when it is not.
 */
export function validateWebToken(token: string, source: string): string {
  if (!/^[A-Za-z0-9._~-]{16,256}$/.test(token)) {
    throw new UsageError(
      `${source}: use 16 to 256 characters from A-Z a-z 0-9 . _ ~ - (a guessable token lets anyone in)`,
    );
  }
  return token;
}

/** Whether `name` can be an interface name (as wg-quick checks it). */
export function isInterfaceName(name: string): boolean {
  return /^[A-Za-z0-9_=+.-]{1,15}$/.test(name) && name !== "." && name !== "..";
}

/**
 * The interface name of a config file as wg-quick derives it: the base name
 * without `.conf`; `undefined` when that is not a valid interface name.
 *
 * @example
 * ```ts
 * import { interfaceNameOf } from "./args.ts";
 * interfaceNameOf("/etc/wgstack/wg0.conf"); // "wg0"
 * ```
 */
export function interfaceNameOf(configPath: string): string | undefined {
  const base = configPath.replace(/\\/g, "/").split("/").pop()!.replace(/\.conf$/, "");
  return isInterfaceName(base) ? base : undefined;
}

/**
 * Checks a peer name: it becomes part of a file name and a config comment, so
 * 1 to 32 letters, digits, `.`, `_` or `-`, not starting with `.` or `-`.
 *
 * @throws {UsageError} When the name has other characters.
 */
export function validatePeerName(name: string): string {
  if (!/^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$/.test(name)) {
    throw new UsageError(
      `Peer name "${name}" is not allowed: use 1 to 32 letters, digits, ".", "_" or "-"`,
    );
  }
  return name;
}

/**
 * Parses `HOST`, `HOST:PORT`, `[IPV6]`, `[IPV6]:PORT`, a bare IPv6 address,
 * `:PORT` or `PORT`.
 *
 * @throws {UsageError} When the port is not 0–65535 or brackets are unbalanced.
 *
 * @example
 * ```ts
 * import { parseHostPort } from "./args.ts";
 * parseHostPort("[2001:db8::1]:51820", "--endpoint"); // { hostname: "2001:db8::1", port: 51820 }
 * ```
 */
export function parseHostPort(text: string, flag: string): HostPort {
  const bad = (why: string) => new UsageError(`${flag} "${text}": ${why}`);
  const value = text.trim();
  if (value === "") throw bad("empty value");
  let host: string | undefined;
  let portText: string | undefined;
  if (value.startsWith("[")) {
    const close = value.indexOf("]");
    if (close < 0) throw bad("missing ]");
    host = value.slice(1, close);
    const after = value.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) throw bad("expected :PORT after ]");
      portText = after.slice(1);
    }
    if (!host.includes(":")) throw bad("brackets are only for IPv6 addresses");
  } else if (/^\d+$/.test(value)) {
    portText = value;
  } else {
    const colons = value.split(":").length - 1;
    if (colons === 0) host = value;
    else if (colons === 1) {
      const i = value.indexOf(":");
      host = value.slice(0, i) || undefined;
      portText = value.slice(i + 1);
    } else host = value; // a bare IPv6 address
  }
  if (host !== undefined && /[\s/]/.test(host)) throw bad("not a host name or address");
  const result: HostPort = {};
  if (host !== undefined) result.hostname = host;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
      throw bad("the port must be a number from 0 to 65535");
    }
    result.port = Number(portText);
  }
  return result;
}

/** Formats `host:port`, bracketing IPv6 addresses. */
export function formatHostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

function parseArgsMessage(error: unknown): string {
  const e = error as { code?: string; message?: string };
  const message = e.message ?? String(error);
  const flag = /'([^']+)'/.exec(message)?.[1];
  switch (e.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `Unknown flag ${flag ?? message} (see --help)`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      if (/ambiguous/.test(message)) {
        const name = flag?.match(/--[\w-]+/)?.[0] ?? flag;
        return `Flag ${name} needs a value; for one starting with "-", write ${name}=VALUE`;
      }
      if (/argument missing/.test(message)) {
        return `Flag ${flag?.match(/--[\w-]+/)?.[0] ?? flag} needs a value`;
      }
      return `${message.split(".")[0]} (see --help)`;
    default:
      return `${message.split(".")[0]} (see --help)`;
  }
}
