/**
 * `@wgstack/wireguard`: a sans-I/O WireGuard implementation (Noise_IKpsk2,
 * cookies, timers, cryptokey routing, wg-quick config files).
 *
 * The API: a {@linkcode Device} (one static key, many peers; datagrams and
 * IP packets in, datagrams and IP packets out, time passed in), keys, wg-quick
 * config files, IP prefixes and cryptokey routing, and the crypto backends.
 * The protocol's parts (Noise, messages, cookies, timers, replay window) are
 * the device's internals.
 *
 * @example A device that answers a peer
 * ```ts ignore
 * import { Device, generatePrivateKey, keyFromBase64 } from "@wgstack/wireguard";
 * const device = new Device({
 *   privateKey: generatePrivateKey(),
 *   wallClock: Date.now,
 *   sendDatagram: (datagram, to) => socket.send(datagram.slice(), to),
 *   deliverPacket: (packet, peer) => console.log(packet.length, "bytes from", peer.endpoint),
 * });
 * device.addPeer({ publicKey: keyFromBase64(clientKey), allowedIps: ["10.0.0.2/32"] });
 * // device.receive(datagram, from, performance.now()) per datagram;
 * // device.poll(now) when now >= device.nextDeadline().
 * ```
 *
 * @module
 */

export {
  Device,
  type DeviceEvent,
  type DeviceLimits,
  type DeviceOptions,
  type DeviceStats,
} from "./device.ts";
export type { DropCounters, DropReason, Peer, PeerConfig, PeerStats } from "./peer.ts";
export type { Endpoint } from "./endpoint.ts";
export {
  generatePresharedKey,
  generatePrivateKey,
  keyFromBase64,
  keyToBase64,
  publicKey,
} from "./keys.ts";
export { formatIp, type IpPrefix, parseIp, parseIpPrefix } from "./ip.ts";
export { AllowedIps, type Cidr, formatCidr, parseCidr } from "./allowed_ips.ts";
export {
  type ConfigEndpoint,
  ConfigError,
  type ConfigWarning,
  formatConfig,
  type FormatConfigOptions,
  parseConfig,
  type ParseConfigOptions,
  type WgConfig,
  type WgInterface,
  type WgPeer,
} from "./config.ts";
export * from "./crypto/mod.ts";
export {
  formatUapiEndpoint,
  formatUapiGet,
  parseUapiEndpoint,
  UAPI_EADDRINUSE,
  UAPI_EINVAL,
  UAPI_EIO,
  UAPI_EMSGSIZE,
  UAPI_EOPNOTSUPP,
  UAPI_EPROTO,
  type UapiAllowedIpChange,
  type UapiDevice,
  UapiError,
  type UapiPeer,
  type UapiPeerChange,
  type UapiSetOperation,
  UapiSetParser,
} from "./uapi.ts";
