/**
 * `@wgstack/netstack`: a sans-I/O userspace TCP/IP stack whose TCP connections
 * and UDP flows are web stream pairs.
 *
 * The API: a {@linkcode NetStack} (IP packets and the time in, IP packets
 * out; every TCP connection and UDP flow, to any address, comes out as a
 * {@linkcode TcpRequest} or {@linkcode UdpFlow}), its options, limits and
 * counters, and IP address text. Packet views and emitters are in
 * `@wgstack/netstack/wire`.
 *
 * @example Accept every TCP connection and echo it
 * ```ts ignore
 * import { NetStack } from "@wgstack/netstack";
 * const stack = new NetStack({
 *   output: (packet) => tunnel.send(packet.slice()),
 *   wake: () => queueMicrotask(() => stack.poll(performance.now())),
 *   onTcpConnection: (request) => {
 *     const conn = request.accept();
 *     conn.readable.pipeTo(conn.writable);
 *   },
 * });
 * // stack.input(packet, performance.now()) per packet from the tunnel;
 * // stack.poll(now) when now >= stack.nextDeadline().
 * ```
 *
 * @module
 */

export {
  NetStack,
  type NetStackLimits,
  type NetStackOptions,
  type NetStackSourceLimits,
  type NetStackSourceUsage,
  type NetStackStats,
  type TcpConnection,
  type TcpRejectHow,
  type TcpRequest,
} from "./stack.ts";
export type { UdpDatagramIn, UdpFlow, UdpFlowStats } from "./udp.ts";
export type * from "./tcp/api.ts";
export {
  TCP_CONGESTION_CONTROLS,
  type TcpCongestionControl,
  TcpError,
  type TcpKeepAliveOptions,
  type TcpOptions,
} from "./tcp/connection.ts";
export type { TcpLayerStats } from "./tcp/layer.ts";
export type { FragmentStats } from "./fragments.ts";
export {
  addressEquals,
  addressVersion,
  formatAddress,
  type IpAddress,
  parseAddress,
} from "./addr.ts";
