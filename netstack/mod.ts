/**
 * `@wgstack/netstack`: a sans-I/O userspace TCP/IP stack whose TCP connections
 * and UDP flows are web stream pairs.
 *
 * @module
 */

export * from "./addr.ts";
export * from "./stack.ts";
export * from "./udp.ts";
export * from "./fragments.ts";
export * from "./wire/checksum.ts";
export * from "./wire/ipv4.ts";
export * from "./wire/ipv6.ts";
export * from "./wire/icmp.ts";
export * from "./wire/udp.ts";
export type * from "./tcp/api.ts";
export * from "./wire/tcp.ts";
export { TcpLayer, type TcpLayerStats } from "./tcp/layer.ts";
export {
  Connection,
  type ConnectionOwner,
  type ResolvedTcpOptions,
  type SynOptions,
  TcpError,
  type TcpKeepAliveOptions,
  type TcpOptions,
  TcpState,
  type TcpStateValue,
} from "./tcp/connection.ts";
