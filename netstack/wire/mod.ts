/**
 * `@wgstack/netstack/wire`: checked views over IPv4, IPv6 (with its extension
 * header chain), ICMP/ICMPv6, UDP and TCP packets, the emitters that write
 * them, and the Internet checksum. Each view validates lengths once in its
 * `parse`; its accessors cannot fail afterwards.
 *
 * @example Build an IPv4 UDP packet and read it back
 * ```ts
 * import { emitIpv4Header, emitUdp, IP_PROTOCOL_UDP, Ipv4Packet, UdpPacket } from "@wgstack/netstack/wire";
 * const src = new Uint8Array([10, 0, 0, 1]), dst = new Uint8Array([10, 0, 0, 2]);
 * const payload = new TextEncoder().encode("hi");
 * const packet = new Uint8Array(20 + 8 + payload.length);
 * emitUdp(packet.subarray(20), { src, dst, srcPort: 5000, dstPort: 53, payload });
 * emitIpv4Header(packet, { src, dst, protocol: IP_PROTOCOL_UDP, payloadLength: 8 + payload.length });
 * const ip = Ipv4Packet.parse(packet);
 * if (typeof ip !== "string") console.log(UdpPacket.parse(ip.payload, ip.src, ip.dst));
 * ```
 *
 * @module
 */

export * from "./checksum.ts";
export * from "./ipv4.ts";
export * from "./ipv6.ts";
export * from "./icmp.ts";
export * from "./udp.ts";
export * from "./tcp.ts";
