/**
 * `@wgstack/cli`: the `wgstack` command line. One command starts a
 * WireGuard server; on first run it writes the server config and a client
 * config (printed with a QR code for the WireGuard mobile apps). Every TCP
 * connection and UDP flow of the clients is forwarded to its real
 * destination (or echoed back) and logged; `--pcap` records the decrypted
 * packets.
 *
 * ```sh
 * deno run -A cli/main.ts                     # wg.conf; forward mode
 * deno run -A cli/main.ts wg.conf --mode echo # everything comes back
 * deno run -A cli/main.ts add-peer laptop     # one more client
 * deno run -A cli/main.ts --help
 * ```
 *
 * - **First run**: when CONFIG (default `wg.conf`) does not exist, it is
 *   created (mode 0600) with a new key, `ListenPort = 51820` and the tunnel
 *   addresses `10.44.0.1/24` and `fdXX:XXXX:XXXX::1/64` (a random unique
 *   local prefix; `--address` picks others), plus a first client
 *   `client-1` written beside it as `wg-client-1.conf`. Files are never
 *   overwritten. Peer names live in `# Name = …` comments inside each
 *   `[Peer]`, so the file stays what `wg` and wg-quick read.
 * - **Client configs**: `Endpoint` is this machine's address (detected from
 *   its interfaces; `--endpoint` overrides), `DNS` the server's tunnel
 *   addresses, `AllowedIPs = 0.0.0.0/0, ::/0`. Each start prints them with
 *   a QR code.
 * - **Forward mode**: a TCP connection is dialled at its destination before
 *   the client gets its SYN-ACK (refused → RST, timed out → ICMP
 *   unreachable), then relayed with backpressure and half-close. UDP flows
 *   get a socket each. DNS to the tunnel address goes to the machine's
 *   resolver. The destination policy of `@wgstack/server` refuses the
 *   server's own addresses, loopback, link-local/metadata, multicast and
 *   broadcast (`--allow`/`--deny` rules, `--deny-private`).
 * - **Upstream proxies and names**: `--upstream socks5://…|socks5h://…|http://…`
 *   (or a peer's `# Upstream = URL` comment, `direct` for none) sends the
 *   forwarded flows through a proxy; each flow's host name (TLS SNI, HTTP
 *   Host, QUIC Initial, DNS answers) is logged as `host=…`, and
 *   `--deny-domain`/`--allow-domain` refuse by name, also at the DNS address.
 * - **Dashboard**: `--web [HOST:]PORT` serves a live page (peers, flows with
 *   host names, totals, QR codes, add/disable/remove clients) and its JSON
 *   API, behind a token printed at start as a ready-to-open URL.
 * - **Logs**: one line per connection or flow open and close (peer, source →
 *   destination, bytes each way, duration, how it ended), handshakes,
 *   roaming, errors; `--log-format json` for one object per line; a
 *   summary on SIGINT/SIGTERM, which shut down gracefully.
 * - **Exit codes**: 0 done, 1 internal error, 2 usage or config error (one
 *   line on standard error naming the file and line or the flag).
 *
 * The library API is what the command is made of that a program may reuse
 * (forwarding itself is `serve({ forward })` of `@wgstack/server`):
 *
 * - {@linkcode runCli} runs the whole command with its arguments;
 * - the config files: {@linkcode ensureServerConfig} (load, or create with a
 *   first client), {@linkcode loadServerConfig}, {@linkcode addPeer} and
 *   {@linkcode removePeer}; their errors are {@linkcode UsageError}s that
 *   name the file and line;
 * - {@linkcode Echo}: the echo mode's `serve()` handlers;
 * - {@linkcode PcapWriter}: decrypted packets to a pcap file, bounded;
 * - {@linkcode createLogger}: the command's log lines (text or JSON) for
 *   `serve()`'s logger.
 *
 * @module
 */

export { type CliIo, type ListeningServer, runCli, VERSION } from "./run.ts";
export { type LogLevel, UsageError } from "./args.ts";
export {
  addPeer,
  type ClientFile,
  type EnsureResult,
  ensureServerConfig,
  type GenerateOptions,
  loadServerConfig,
  removePeer,
  type ServerSetup,
  type SetupPeer,
} from "./setup.ts";
export { Echo, type EchoStats, type EchoTcp, type EchoUdp } from "./echo.ts";
export { PcapWriter, type PcapWriterOptions } from "./pcap.ts";
// The server types that this package's API uses.
export type {
  FlowInfo,
  PeerInfo,
  ServePeerState,
  TcpStream,
  UdpEndpoint,
  UdpStream,
} from "@wgstack/server";
export { createLogger, type Logger, type LoggerOptions, type LogRecord } from "./log.ts";
