/**
 * `@wgstack/server`: sockets, timers and {@linkcode serve}, joining
 * `@wgstack/wireguard` and `@wgstack/netstack`. Every TCP connection and UDP
 * flow a WireGuard client opens is handed over as a web stream pair.
 *
 * Operate a running server like WireGuard: `serve({ uapi: { name } })` or
 * {@linkcode listenUapi} opens the UAPI socket `wg show`/`wg set`/`wg syncconf`
 * talk to, {@linkcode syncPeers} applies a peer list like `wg syncconf`, and
 * {@linkcode serveMetrics} serves Prometheus metrics.
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
 * @module
 */

export * from "./serve.ts";
export * from "./udp.ts";
export { syncPeers, type SyncResult } from "./sync.ts";
export {
  listenUapi,
  UAPI_DIRECTORY,
  uapiGet,
  type UapiListener,
  type UapiOptions,
  uapiSet,
  type UapiTarget,
} from "./uapi.ts";
export {
  type FfiUdpGroStatus,
  ffiUdpGroStatus,
  type FfiUdpGsoStatus,
  ffiUdpGsoStatus,
  type FfiUdpOptions,
  type FfiUdpWait,
  ffiUdpWait,
  openFfiUdpSocket,
} from "./udp_ffi.ts";
export {
  type DialHistogram,
  fileDescriptorLimit,
  Forwarder,
  type ForwarderStats,
  type ForwardFlowInfo,
  type ForwardLimits,
  forwardLimits,
  type ForwardOptions,
  type RelayClient,
  type RelayCounters,
  type RelayResult,
  relayTcp,
  type TcpDial,
  type UpstreamConn,
} from "./forward.ts";
export {
  DestinationPolicy,
  type DestinationPolicyOptions,
  type DestinationPolicyStats,
  embeddedIpv4,
  parsePolicyRule,
  type PolicyInterface,
  type PolicyRule,
  type RefusalReason,
} from "./policy.ts";
export {
  type MetricsOptions,
  type MetricsRegistry,
  type MetricsServer,
  type MetricValues,
  serveMetrics,
  type ServeMetricsOptions,
  ServerMetrics,
} from "./metrics.ts";
export {
  associateUdp,
  dialThrough,
  type DialThroughOptions,
  openDirectUdp,
  parseUpstream,
  type ProxyConn,
  ProxyError,
  type ProxyTarget,
  socksUdpPayload,
  type UdpUpstream,
  type UpstreamProxy,
} from "./upstream.ts";
export {
  clientHelloName,
  type FirstBytes,
  HostnameRefused,
  type HostnameSource,
  normalizeHostname,
  SNIFF_MAX_BYTES,
  type SniffedStream,
  sniffFirstBytes,
  sniffHostname,
  type SniffState,
  sniffStream,
  type SniffStreamOptions,
} from "./sniff.ts";
export {
  clientInitialKeys,
  type InitialKeys,
  QuicSniffer,
  type QuicSnifferOptions,
} from "./sniff_quic.ts";
export {
  type FlowEntry,
  type FlowPage,
  type FlowQuery,
  type FlowSnapshot,
  FlowTable,
  type FlowTableOptions,
  normalizeFlowQuery,
} from "./flows.ts";
export { DomainRules, type DomainRulesOptions, parseDomainPattern } from "./domains.ts";
export {
  blockedAnswer,
  DnsNames,
  type DnsNamesOptions,
  type DnsNamesStats,
  queryName,
} from "./dns_names.ts";
