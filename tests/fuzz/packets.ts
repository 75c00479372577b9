/**
 * Packet corpus and mutations for fuzzing the IP layer: IPv4/IPv6 packets
 * with TCP, UDP, ICMP, fragments and extension header chains, built with
 * valid checksums; mutations that hit length fields, version/IHL, next
 * header chains and fragment fields, with checksums fixed up half of the
 * time so deeper layers are reached.
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseAddress } from "../../netstack/addr.ts";
import { internetChecksum, upperLayerChecksum } from "../../netstack/wire/checksum.ts";
import { emitIpv4Header, Ipv4Packet } from "../../netstack/wire/ipv4.ts";
import {
  emitIpv6FragmentHeader,
  emitIpv6Header,
  Ipv6HeaderChain,
  Ipv6Packet,
  walkIpv6Headers,
} from "../../netstack/wire/ipv6.ts";
import { emitIcmp } from "../../netstack/wire/icmp.ts";
import { emitUdp } from "../../netstack/wire/udp.ts";
import type { Rng } from "./harness.ts";

/** Inner source addresses of the fuzzed packets. */
export const CLIENTS4 = [parseAddress("10.0.0.2")!, parseAddress("10.0.0.3")!];
/** IPv6 sources. */
export const CLIENTS6 = [parseAddress("fd00::2")!, parseAddress("fd00::3")!];

// ------------------------------------------------------------ packet corpus

export function ipv4(
  rng: Rng,
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  payload: Uint8Array,
  frag?: { id: number; offset: number; more: boolean },
): Uint8Array {
  const p = new Uint8Array(20 + payload.length);
  emitIpv4Header(p, {
    src,
    dst,
    protocol,
    payloadLength: payload.length,
    ttl: 1 + rng.int(255),
    identification: frag?.id ?? rng.int(65536),
    fragmentOffset: frag?.offset ?? 0,
    moreFragments: frag?.more ?? false,
    dontFragment: !frag && rng.chance(0.5),
  });
  p.set(payload, 20);
  return p;
}

export function ipv6(
  src: Uint8Array,
  dst: Uint8Array,
  next: number,
  payload: Uint8Array,
): Uint8Array {
  const p = new Uint8Array(40 + payload.length);
  emitIpv6Header(p, { src, dst, nextHeader: next, payloadLength: payload.length });
  p.set(payload, 40);
  return p;
}

export function udpBytes(
  src: Uint8Array,
  dst: Uint8Array,
  sp: number,
  dp: number,
  data: Uint8Array,
) {
  const b = new Uint8Array(8 + data.length);
  emitUdp(b, { src, dst, srcPort: sp, dstPort: dp, payload: data });
  return b;
}

export function tcpBytes(rng: Rng, src: Uint8Array, dst: Uint8Array, data: Uint8Array): Uint8Array {
  const optLen = rng.pick([0, 4, 12, 20, 40]);
  const s = new Uint8Array(20 + optLen + data.length);
  const v = new DataView(s.buffer);
  v.setUint16(0, 1024 + rng.int(60000));
  v.setUint16(2, rng.pick([22, 80, 443, rng.int(65536)]));
  v.setUint32(4, rng.int(2 ** 32));
  v.setUint32(8, rng.int(2 ** 32));
  s[12] = ((20 + optLen) / 4) << 4;
  s[13] = rng.pick([0x02, 0x10, 0x18, 0x11, 0x04, 0x12, rng.int(256)]);
  v.setUint16(14, rng.int(65536));
  for (let i = 0; i < optLen; i++) s[20 + i] = rng.pick([0, 1, 2, 3, 4, 5, 8, rng.int(256)]);
  s.set(data, 20 + optLen);
  v.setUint16(16, upperLayerChecksum(src, dst, 6, s));
  return s;
}

export function icmpBytes(
  type: number,
  code: number,
  rest: number,
  data: Uint8Array,
  pseudo?: { src: Uint8Array; dst: Uint8Array },
): Uint8Array {
  const b = new Uint8Array(8 + data.length);
  emitIcmp(b, { type, code, restOfHeader: rest, data, pseudo });
  return b;
}

/** Random extension headers in front of `next`; returns [first next header, bytes]. */
function extChain(rng: Rng, next: number): [number, Uint8Array] {
  const parts: number[][] = [];
  const n = rng.int(4);
  const kinds: number[] = [];
  for (let i = 0; i < n; i++) kinds.push(rng.pick([0, 43, 60, 44, 51]));
  let nh = next;
  for (let i = kinds.length - 1; i >= 0; i--) {
    const k = kinds[i];
    let h: number[];
    if (k === 44) h = [nh, 0, 0, 0, ...rng.bytes(4)]; // atomic fragment
    else if (k === 43) h = [nh, 0, rng.int(5), 0, 0, 0, 0, 0];
    else if (k === 51) h = [nh, 1, 0, 0, ...rng.bytes(8)]; // (1 + 2) * 4 = 12
    else {
      const len = rng.int(3);
      h = [nh, len];
      const body = (len + 1) * 8 - 2;
      h.push(1, body - 2, ...new Array(body - 2).fill(0)); // one PadN
    }
    parts.unshift(h);
    nh = k;
  }
  return [nh, Uint8Array.from(parts.flat())];
}

export function corpus(rng: Rng): Uint8Array[] {
  const v6 = rng.chance(0.45);
  const src = v6 ? rng.pick(CLIENTS6) : rng.pick(CLIENTS4);
  const dst = v6 ? Uint8Array.from([0x20, 1, 0xd, 0xb8, ...rng.bytes(12)]) : rng.bytes(4);
  if (!v6) dst[0] = 1 + rng.int(223);
  const data = rng.bytes(rng.pick([0, 1, 7, 64, 500, 1400, 3000]));
  const kind = rng.int(8);
  let proto: number, l4: Uint8Array;
  switch (kind) {
    case 0:
    case 1:
      proto = 17;
      l4 = udpBytes(src, dst, 1024 + rng.int(60000), rng.pick([53, 123, rng.int(65536)]), data);
      break;
    case 2:
    case 3:
      proto = 6;
      l4 = tcpBytes(rng, src, dst, data.subarray(0, rng.int(200)));
      break;
    case 4:
      proto = v6 ? 58 : 1;
      l4 = icmpBytes(v6 ? 128 : 8, 0, rng.int(2 ** 32), data, v6 ? { src, dst } : undefined);
      break;
    case 5: {
      // An ICMP error quoting one of "our" TCP segments.
      proto = v6 ? 58 : 1;
      const inner = v6
        ? ipv6(dst, src, 6, tcpBytes(rng, dst, src, new Uint8Array(0)))
        : ipv4(rng, dst, src, 6, tcpBytes(rng, dst, src, new Uint8Array(0)));
      const type = v6 ? rng.pick([1, 2, 3, 4]) : rng.pick([3, 11, 12]);
      const code = rng.int(v6 ? 7 : 16);
      l4 = icmpBytes(
        type,
        code,
        rng.pick([0, 68, 576, 1280, 1400, rng.int(2 ** 32)]),
        inner.subarray(0, rng.pick([28, 48, 60, inner.length])),
        v6 ? { src, dst } : undefined,
      );
      break;
    }
    case 6:
      proto = rng.pick([0, 2, 47, 50, 59, 132, 255, rng.int(256)]);
      l4 = data;
      break;
    default:
      proto = 17;
      l4 = udpBytes(src, dst, 1024 + rng.int(60000), 53, rng.bytes(1000 + rng.int(4000)));
  }
  const fragment = kind === 7 || rng.chance(0.1);
  if (!v6) {
    if (!fragment) return [ipv4(rng, src, dst, proto, l4)];
    const id = rng.int(65536);
    const out: Uint8Array[] = [];
    const step = 8 * (1 + rng.int(200));
    for (let off = 0; off < l4.length; off += step) {
      const end = Math.min(l4.length, off + step);
      out.push(
        ipv4(rng, src, dst, proto, l4.subarray(off, end), {
          id,
          offset: off,
          more: end < l4.length,
        }),
      );
    }
    return shuffleSome(rng, out);
  }
  const [first, ext] = extChain(rng, proto);
  if (!fragment) return [ipv6(src, dst, first, Uint8Array.from([...ext, ...l4]))];
  const fragmentable = Uint8Array.from([...ext, ...l4]);
  const id = rng.int(2 ** 32);
  const out: Uint8Array[] = [];
  const step = 8 * (1 + rng.int(200));
  for (let off = 0; off < fragmentable.length || off === 0; off += step) {
    const end = Math.min(fragmentable.length, off + step);
    const body = new Uint8Array(8 + end - off);
    emitIpv6FragmentHeader(body, {
      nextHeader: first,
      offset: off,
      more: end < fragmentable.length,
      id,
    });
    body.set(fragmentable.subarray(off, end), 8);
    out.push(ipv6(src, dst, 44, body));
    if (end >= fragmentable.length) break;
  }
  return shuffleSome(rng, out);
}

function shuffleSome(rng: Rng, items: Uint8Array[]): Uint8Array[] {
  if (rng.chance(0.5)) {
    for (let i = items.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [items[i], items[j]] = [items[j], items[i]];
    }
  }
  if (rng.chance(0.2) && items.length > 0) items.push(items[rng.int(items.length)]); // duplicate
  if (rng.chance(0.1) && items.length > 1) items.splice(rng.int(items.length), 1); // loss
  return items;
}

// ------------------------------------------------------------ mutations

export function mutate(rng: Rng, packet: Uint8Array): Uint8Array {
  let p = packet.slice();
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    switch (rng.int(8)) {
      case 0: { // bit flips
        const n = 1 + rng.int(8);
        for (let i = 0; i < n && p.length > 0; i++) p[rng.int(p.length)] ^= 1 << rng.int(8);
        break;
      }
      case 1: // truncation
        p = p.subarray(0, rng.int(p.length + 1));
        break;
      case 2: // IP length fields
        if (p.length >= 6) {
          const at = (p[0] >> 4) === 6 ? 4 : 2;
          const v = rng.pick([
            0,
            1,
            19,
            20,
            39,
            40,
            p.length - 1,
            p.length,
            p.length + 1,
            rng.int(65536),
          ]);
          p[at] = (v >> 8) & 0xff;
          p[at + 1] = v & 0xff;
        }
        break;
      case 3: // IHL / version nibble
        if (p.length > 0) {
          p[0] = rng.chance(0.5) ? (p[0] & 0xf0) | rng.int(16) : (rng.int(16) << 4) | (p[0] & 0x0f);
        }
        break;
      case 4: // next header / protocol / ext header chain bytes
        if (p.length > 40 && (p[0] >> 4) === 6) {
          const at = rng.chance(0.5) ? 6 : 40 + 8 * rng.int(Math.max(1, (p.length - 40) >> 3));
          if (at < p.length) p[at] = rng.pick([0, 43, 44, 50, 51, 59, 60, 6, 17, 58, rng.int(256)]);
          if (at + 1 < p.length && rng.chance(0.5)) p[at + 1] = rng.int(256); // ext length
        } else if (p.length > 9) {
          p[9] = rng.pick([1, 6, 17, 58, rng.int(256)]);
        }
        break;
      case 5: // fragment fields (v4 flags/offset, or a whole random byte range)
        if (p.length > 8 && (p[0] >> 4) === 4) {
          p[6] = rng.int(256);
          p[7] = rng.int(256);
        } else if (p.length > 0) {
          p[rng.int(p.length)] = rng.int(256);
        }
        break;
      case 6: { // garbage appended or inserted
        const extra = rng.bytes(rng.int(64));
        const at = rng.int(p.length + 1);
        const q = new Uint8Array(p.length + extra.length);
        q.set(p.subarray(0, at));
        q.set(extra, at);
        q.set(p.subarray(at), at + extra.length);
        p = q;
        break;
      }
      default: // the L4 length / checksum area
        if (p.length > 30) {
          const at = ((p[0] >> 4) === 6 ? 40 : 20) + rng.int(8);
          if (at < p.length) p[at] = rng.int(256);
        }
    }
  }
  if (rng.chance(0.5)) fixChecksums(p);
  return p;
}

const chain = new Ipv6HeaderChain();

/** Recomputes the checksums a mutation broke, where the structure allows it. */
export function fixChecksums(p: Uint8Array): void {
  if (p.length < 1) return;
  const version = p[0] >> 4;
  if (version === 4 && p.length >= 20) {
    const ihl = (p[0] & 0x0f) * 4;
    if (ihl < 20 || ihl > p.length) return;
    p[10] = p[11] = 0;
    const sum = internetChecksum(p.subarray(0, ihl));
    p[10] = sum >> 8;
    p[11] = sum & 0xff;
    const total = (p[2] << 8) | p[3];
    if (total < ihl || total > p.length || (p[6] & 0x3f) !== 0 || p[7] !== 0) return;
    fixL4(p.subarray(12, 16), p.subarray(16, 20), p[9], p.subarray(ihl, total));
  } else if (version === 6 && p.length >= 40) {
    const total = 40 + ((p[4] << 8) | p[5]);
    if (total > p.length) return;
    const pkt = p.subarray(0, total);
    if (walkIpv6Headers(pkt, chain) !== null || chain.isFragment) return;
    fixL4(p.subarray(8, 24), p.subarray(24, 40), chain.protocol, pkt.subarray(chain.offset));
  }
}

function fixL4(src: Uint8Array, dst: Uint8Array, protocol: number, l4: Uint8Array): void {
  let at: number;
  if (protocol === 6 && l4.length >= 20) at = 16;
  else if (protocol === 17 && l4.length >= 8) at = 6;
  else if ((protocol === 1 || protocol === 58) && l4.length >= 8) at = 2;
  else return;
  if (protocol === 17) {
    const len = (l4[4] << 8) | l4[5];
    if (len < 8 || len > l4.length) return;
    l4 = l4.subarray(0, len);
  }
  l4[at] = l4[at + 1] = 0;
  const sum = protocol === 1 ? internetChecksum(l4) : upperLayerChecksum(src, dst, protocol, l4);
  l4[at] = sum >> 8;
  l4[at + 1] = sum & 0xff;
}

// ------------------------------------------------------------ the test

/** Every packet the stack emits must parse as what it claims to be. */
export function checkOutput(packet: Uint8Array): void {
  const version = packet[0] >> 4;
  if (version === 4) {
    const ip = Ipv4Packet.parse(packet);
    assert.ok(typeof ip !== "string", `bad IPv4 output: ${ip}`);
    assert.equal(ip.totalLength, packet.length);
    assert.ok(packet.length <= 1420);
  } else {
    const ip = Ipv6Packet.parse(packet);
    assert.ok(typeof ip !== "string", `bad IPv6 output: ${ip}`);
    assert.equal(ip.bytes.length, packet.length);
    assert.ok(packet.length <= 1420);
  }
}
