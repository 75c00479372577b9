/**
 * Hand-built inner IP packets for tests that play a hostile client.
 *
 * @module
 */

import { parseIp } from "@wgstack/wireguard";
import { emitIpv4Header, emitTcp, IP_PROTOCOL_TCP, TCP_SYN, TcpRepr } from "@wgstack/netstack/wire";

/** A bare IPv4 TCP SYN from `src:srcPort` to `dst:dstPort`. */
export function ipv4Syn(src: string, srcPort: number, dst: string, dstPort: number): Uint8Array {
  const s = parseIp(src)!, d = parseIp(dst)!;
  const r = new TcpRepr();
  r.srcPort = srcPort;
  r.dstPort = dstPort;
  r.seq = (srcPort * 2654435761) >>> 0;
  r.flags = TCP_SYN;
  r.window = 65535;
  r.mss = 1380;
  const segment = emitTcp(r, s, d);
  const packet = new Uint8Array(20 + segment.length);
  emitIpv4Header(packet, {
    src: s,
    dst: d,
    protocol: IP_PROTOCOL_TCP,
    payloadLength: segment.length,
  });
  packet.set(segment, 20);
  return packet;
}
