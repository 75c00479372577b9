/**
 * `@wgstack/server`: a userspace WireGuard server whose clients' TCP
 * connections and UDP flows, to any address, come out as web stream pairs.
 * It owns the sockets and timers and joins `@wgstack/wireguard` and
 * `@wgstack/netstack`.
 *
 * The API, by task:
 *
 * - **Serve**: {@linkcode serve} starts a server; its {@linkcode ServeOptions}
 *   take handlers (`onTcp`, `onUdp`, an `accept` decision before the
 *   SYN-ACK) and limits, and the returned {@linkcode Server} adds, updates
 *   and removes peers at runtime and reports counters. Each connection is a
 *   {@linkcode TcpStream}, each flow a {@linkcode UdpStream}, both with
 *   their {@linkcode FlowInfo} (peer, source, destination).
 * - **Forward** (an exit node): `serve({ forward })` dials each connection's
 *   real destination before the client gets its SYN-ACK and relays both
 *   ways with backpressure, under a {@linkcode DestinationPolicy} (never the
 *   server's own addresses, loopback, link-local/metadata; rules from
 *   {@linkcode parsePolicyRule}), per-peer quotas, {@linkcode DomainRules}
 *   and optional upstream proxies ({@linkcode parseUpstream}); see
 *   {@linkcode ForwardOptions}.
 * - **Operate it like WireGuard**: `serve({ uapi: { name } })` or
 *   {@linkcode listenUapi} serves the UAPI socket `wg show`/`wg set`/
 *   `wg syncconf` talk to ({@linkcode uapiGet}/{@linkcode uapiSet} are its
 *   client side), {@linkcode syncPeers} applies a peer list like
 *   `wg syncconf`, and {@linkcode serveMetrics} serves Prometheus metrics.
 * - **Sockets**: {@linkcode openUdpSocket} opens the fastest
 *   {@linkcode UdpSocket} for the runtime; pass your own through
 *   `ServeOptions.socket` (tests, other transports).
 *
 * Under Deno, add `"unstable": ["net"]` to your deno.json to use the fast
 * `Deno.listenDatagram` adapter; without it, `node:dgram` is used.
 *
 * @example Echo server
 * ```ts ignore
 * import { serve } from "@wgstack/server";
 * const server = await serve({
 *   privateKey: Deno.env.get("WG_PRIVATE_KEY")!,
 *   peers: [{ publicKey: "…", allowedIps: ["10.0.0.2/32"] }],
 *   onTcp: (conn) => conn.readable.pipeTo(conn.writable),
 * });
 * await server.finished;
 * ```
 *
 * @example An exit node that refuses private ranges
 * ```ts ignore
 * import { parsePolicyRule, serve } from "@wgstack/server";
 * const server = await serve({
 *   privateKey: Deno.env.get("WG_PRIVATE_KEY")!,
 *   peers: [{ publicKey: "…", allowedIps: ["10.0.0.2/32"] }],
 *   forward: {
 *     denyPrivate: true,
 *     rules: [parsePolicyRule("allow", "192.168.1.10:8080")],
 *     denyDomains: ["*.ads.example"],
 *   },
 * });
 * ```
 *
 * @module
 */

export {
  type AcceptDecision,
  type FlowInfo,
  type PeerInfo,
  serve,
  type ServeLogRecord,
  type ServeOptions,
  type ServePeer,
  type ServePeerState,
  type ServePeerUpdate,
  type Server,
  type ServerStats,
  type TcpStream,
  type UdpStream,
} from "./serve.ts";
export {
  openUdpSocket,
  type UdpAdapter,
  type UdpEndpoint,
  type UdpSocket,
  type UdpSocketOptions,
  type UdpSocketStats,
} from "./udp.ts";
export type {
  DialHistogram,
  ForwarderStats,
  ForwardFlowInfo,
  ForwardLimits,
  ForwardOptions,
  UpstreamConn,
} from "./forward.ts";
export {
  DestinationPolicy,
  type DestinationPolicyOptions,
  type DestinationPolicyStats,
  parsePolicyRule,
  type PolicyInterface,
  type PolicyRule,
  type RefusalReason,
} from "./policy.ts";
export { DomainRules, type DomainRulesOptions, parseDomainPattern } from "./domains.ts";
export { parseUpstream, type UpstreamProxy } from "./upstream.ts";
export type { HostnameSource } from "./sniff.ts";
export type { DnsNamesOptions, DnsNamesStats } from "./dns_names.ts";
export type { FlowPage, FlowQuery, FlowSnapshot } from "./flows.ts";
export {
  listenUapi,
  UAPI_DIRECTORY,
  uapiGet,
  type UapiListener,
  type UapiOptions,
  uapiSet,
  type UapiTarget,
} from "./uapi.ts";
export { syncPeers, type SyncResult } from "./sync.ts";
// The types of the other packages that this one's options and stats use, so
// that its documentation (and a user's import) is complete on its own.
export type { DeviceLimits, DeviceStats, DropCounters, PeerStats } from "@wgstack/wireguard";
export { TCP_CONGESTION_CONTROLS } from "@wgstack/netstack";
export type {
  FragmentStats,
  NetStackLimits,
  NetStackSourceLimits,
  NetStackSourceUsage,
  NetStackStats,
  TcpCongestionControl,
  TcpKeepAliveOptions,
  TcpLayerStats,
  TcpOptions,
  UdpFlowStats,
} from "@wgstack/netstack";
export {
  type MetricsOptions,
  type MetricsRegistry,
  type MetricsServer,
  type MetricValues,
  serveMetrics,
  type ServeMetricsOptions,
  ServerMetrics,
} from "./metrics.ts";
