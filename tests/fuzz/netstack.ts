/**
 * Fuzz targets of the IP layer: a `NetStack` fed generated and mutated
 * packets (valid checksums so input reaches TCP) and mutations of a live TCP
 * flow captured from a second stack (so input reaches the state machine of
 * an established connection); the fragment reassembler alone with
 * overlapping, duplicated and inconsistent fragments; and the wire parsers.
 *
 * @module
 */

import assert from "node:assert/strict";
import { NetStack, type TcpConnection, type TcpRequest } from "../../netstack/stack.ts";
import { parseAddress } from "../../netstack/addr.ts";
import { FragmentReassembler } from "../../netstack/fragments.ts";
import { Ipv4Packet } from "../../netstack/wire/ipv4.ts";
import { Ipv6HeaderChain, Ipv6Packet, walkIpv6Headers } from "../../netstack/wire/ipv6.ts";
import { UdpPacket } from "../../netstack/wire/udp.ts";
import { IcmpPacket } from "../../netstack/wire/icmp.ts";
import {
  emitTcp,
  parseTcpInto,
  TCP_ACK,
  TCP_URG,
  tcpHeaderLength,
  TcpRepr,
} from "../../netstack/wire/tcp.ts";
import { type FuzzTarget, hex, type Rng, touchGetters } from "./harness.ts";
import { checkOutput, corpus, fixChecksums, icmpBytes, ipv4, mutate } from "./packets.ts";

/** Limits of the fuzzed stack: small, so the fuzzing fills them. */
export const FUZZ_LIMITS = {
  udpFlows: 128,
  reassemblyBytes: 256 * 1024,
  reassemblyDatagrams: 64,
  icmpErrorsPerSecond: 1000,
  icmpErrorBurst: 100,
  pendingRejects: 16,
  tcpConnections: 256,
  tcpHalfOpen: 64,
};

const ANY4 = new Uint8Array(4);
const PROBE_CLIENT = parseAddress("10.9.9.9")!;
const PROBE_SERVER = parseAddress("198.51.100.7")!;

function isProbe(p: Uint8Array): boolean {
  return p[0] >> 4 === 4 && p[16] === 10 && p[17] === 9 && p[18] === 9 && p[19] === 9;
}

/** Lets the streams' promise jobs run. */
const turn = () => new Promise((r) => setTimeout(r, 0));

/** A mutation that keeps a captured segment plausible: seq/ack nudged, flags or window changed. */
function nudge(rng: Rng, packet: Uint8Array): Uint8Array {
  const p = packet.slice();
  const ihl = (p[0] & 0x0f) * 4;
  if (p.length < ihl + 20) return mutate(rng, p);
  const v = new DataView(p.buffer, p.byteOffset + ihl);
  switch (rng.int(5)) {
    case 0:
      v.setUint32(4, (v.getUint32(4) + rng.pick([-1, 1, -65536, 65536, rng.int(2 ** 32)])) >>> 0);
      break;
    case 1:
      v.setUint32(8, (v.getUint32(8) + rng.pick([-1, 1, 1000, -1000, rng.int(2 ** 32)])) >>> 0);
      break;
    case 2:
      p[ihl + 13] = rng.pick([0x01, 0x02, 0x04, 0x10, 0x11, 0x12, 0x14, 0x18, rng.int(256)]);
      break;
    case 3:
      v.setUint16(14, rng.pick([0, 1, 65535, rng.int(65536)]));
      break;
    default:
      return mutate(rng, p);
  }
  fixChecksums(p);
  return p;
}

const reshapeRepr = new TcpRepr();

/**
 * A captured IPv4 segment re-emitted with changed options and fields (valid
 * checksums): SACK blocks around the sequence space in use, old or zero
 * timestamps, window scale or MSS outside a SYN, urgent data, a payload cut
 * or moved in sequence space.
 */
function reshape(rng: Rng, packet: Uint8Array): Uint8Array {
  const ihl = (packet[0] & 0x0f) * 4;
  const r = reshapeRepr;
  if (packet[0] >> 4 !== 4 || !parseTcpInto(packet.subarray(ihl), r)) return mutate(rng, packet);
  const src = packet.subarray(12, 16), dst = packet.subarray(16, 20);
  const near = (base: number) =>
    (base + rng.pick([0, 1, -1, 1460, -1460, 65536, -65536, 2 ** 31, rng.int(2 ** 32)])) >>> 0;
  for (let n = 1 + rng.int(3); n > 0; n--) {
    switch (rng.int(7)) {
      case 0: {
        r.sackCount = 1 + rng.int(4);
        for (let i = 0; i < 2 * r.sackCount; i++) r.sackBlocks[i] = near(r.ack);
        break;
      }
      case 1:
        r.hasTimestamp = true;
        r.tsVal = rng.pick([0, 1, r.tsVal - 1, r.tsVal + 2 ** 31, rng.int(2 ** 32)]) >>> 0;
        r.tsEcr = rng.pick([0, r.tsEcr, rng.int(2 ** 32)]) >>> 0;
        break;
      case 2:
        r.windowScale = rng.pick([-1, 0, 7, 14, 15, 255]);
        r.mss = rng.pick([-1, 0, 1, 536, 65535]);
        break;
      case 3:
        r.flags |= TCP_URG;
        r.urgent = rng.pick([0, 1, r.payload.length, 65535]);
        break;
      case 4:
        r.payload = r.payload.subarray(rng.int(r.payload.length + 1));
        break;
      case 5:
        r.seq = near(r.seq);
        break;
      default:
        r.ack = near(r.ack);
        r.flags |= TCP_ACK;
    }
  }
  if (tcpHeaderLength(r) > 60) {
    // More options than fit: keep the SACK blocks that do.
    r.mss = r.windowScale = -1;
    r.sackCount = Math.min(r.sackCount, r.hasTimestamp ? 3 : 4);
  }
  return ipv4(rng, src, dst, 6, emitTcp(r, src, dst));
}

/** An ICMP error from a router about a packet the server sent (e.g. fragmentation needed). */
function icmpAbout(rng: Rng, sent: Uint8Array): Uint8Array {
  const router = Uint8Array.of(192, 0, 2, 1 + rng.int(250));
  const type = rng.pick([3, 3, 3, 11, 12]);
  const code = type === 3 ? rng.pick([0, 1, 2, 3, 4, 4, 4, 13]) : rng.int(2);
  const mtu = rng.pick([0, 1, 68, 296, 576, 1280, 1400, 1500, 65535]);
  const quote = sent.subarray(0, rng.pick([20, 28, 40, 48, 68, sent.length]));
  return ipv4(rng, router, sent.subarray(12, 16), 1, icmpBytes(type, code, mtu, quote));
}

/** A `NetStack` under generated, mutated and replayed-flow packets. */
export const netstackTarget: FuzzTarget<Uint8Array[]> = {
  name: "netstack",
  covers: "NetStack.input: IPv4/IPv6, ext headers, fragments, ICMP, UDP flows, TCP (live flow)",
  setup(rng) {
    const toClient: Uint8Array[] = [];
    const toServer: Uint8Array[] = [];
    /** The latest client→server packets of live connections (a ring). */
    const flow: Uint8Array[] = [];
    /** The latest server→client packets of live connections (a ring). */
    const back: Uint8Array[] = [];
    const accepted: TcpConnection[] = [];
    /** Requests decided at the next tick (as a dialling owner does). */
    const later: TcpRequest[] = [];
    let probe: TcpConnection | undefined;
    let probePort = 5000;
    const server = new NetStack({
      output(p) {
        checkOutput(p);
        if (isProbe(p)) {
          toClient.push(p.slice());
          back.push(p.slice());
          if (back.length > 64) back.shift();
        }
      },
      onUdpFlow(f) {
        if (rng.chance(0.3)) void f.readable.cancel().catch(() => {});
      },
      onTcpConnection(request: TcpRequest) {
        if (request.remoteAddress === "10.9.9.9") {
          // Read everything the client sends, forever.
          void request.accept().readable.pipeTo(new WritableStream()).catch(() => {});
          return;
        }
        const how = rng.pick(
          ["rst", "icmp", "icmp-prohibited", "drop", "accept", "later"] as const,
        );
        if (how === "accept") accepted.push(request.accept());
        else if (how === "later") later.push(request);
        else request.reject(how);
      },
      limits: FUZZ_LIMITS,
      random: rng.fill,
      tcp: { secret: rng.bytes(16) },
    });
    const client = new NetStack({
      output(p) {
        toServer.push(p.slice());
        flow.push(p.slice());
        if (flow.length > 256) flow.shift();
      },
      random: rng.fill,
      tcp: { secret: rng.bytes(16) },
    });
    let writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
    const exchange = (now: number) => {
      server.poll(now);
      client.poll(now);
      for (let guard = 0; toClient.length + toServer.length > 0 && guard < 64; guard++) {
        for (const p of toClient.splice(0)) client.input(p, now);
        for (const p of toServer.splice(0)) server.input(p, now);
      }
      toClient.length = toServer.length = 0;
    };
    /** A new live connection when the last one died (the fuzzing may reset it). */
    const reopen = (now: number) => {
      probe = client.connect({
        localAddress: PROBE_CLIENT,
        localPort: probePort++,
        remoteAddress: PROBE_SERVER,
        remotePort: 443,
      }, now);
      writer = probe.writable.getWriter();
      void probe.closed?.catch?.(() => {});
      const dead = () => probe = undefined;
      writer.closed.then(dead, dead);
    };
    reopen(1000);
    exchange(1000);
    let ticks = 0;
    const payload = rng.bytes(3000);
    return {
      generate(rng) {
        if (flow.length > 0 && rng.chance(0.15)) return [nudge(rng, rng.pick(flow))];
        if (flow.length > 0 && rng.chance(0.15)) return [reshape(rng, rng.pick(flow))];
        if (back.length > 0 && rng.chance(0.05)) return [icmpAbout(rng, rng.pick(back))];
        return corpus(rng).map((p) => rng.chance(0.8) ? mutate(rng, p) : p);
      },
      feed(packets, now) {
        for (const p of packets) server.input(p, now);
      },
      show: (packets) => packets.map(hex).join(" "),
      async tick(now) {
        ticks++;
        if (probe === undefined) reopen(now);
        else if ((writer!.desiredSize ?? 0) > 0) {
          void writer!.write(payload.subarray(0, 1 + (ticks * 7919) % payload.length)).catch(
            () => {},
          );
        }
        if (ticks % 64 === 0) { for (const c of accepted.splice(0)) c.reset(); }
        await turn();
        exchange(now);
      },
      reached() {
        const s = server.stats();
        return {
          tcpSegments: s.tcp.segmentsIn,
          udpOpened: s.udp.opened,
          reassembled: s.fragments.reassembled,
          echoReplies: s.icmp.echoReplies,
          icmpToTcp: s.icmp.errorsToTcp,
          dropReasons: Object.keys(s.drops).length,
          probesOpened: probePort - 5000,
        };
      },
      tables() {
        const s = server.stats();
        return {
          tcpConnections: s.tcp.layer!.connections,
          tcpHalfOpen: s.tcp.layer!.halfOpen,
          timeWait: s.tcp.layer!.timeWait,
          udpFlows: s.udp.flows,
          fragmentDatagrams: s.fragments.datagrams,
          fragmentBytes: s.fragments.bytes,
        };
      },
      bounds: {
        tcpConnections: FUZZ_LIMITS.tcpConnections,
        tcpHalfOpen: FUZZ_LIMITS.tcpHalfOpen,
        udpFlows: FUZZ_LIMITS.udpFlows,
        fragmentDatagrams: FUZZ_LIMITS.reassemblyDatagrams,
        fragmentBytes: FUZZ_LIMITS.reassemblyBytes,
      },
      async finish(now) {
        // Every table drains once the timeouts pass.
        for (const r of later.splice(0)) r.reject("drop");
        for (const c of accepted.splice(0)) c.reset();
        void writer?.abort().catch(() => {});
        await turn();
        for (let i = 0; i < 400; i++) {
          now += 5_000;
          exchange(now);
          if (i % 50 === 0) await turn();
        }
        const s = server.stats();
        assert.equal(s.fragments.datagrams, 0, "reassembly drained");
        assert.equal(s.udp.flows, 0, "UDP flows expired");
        assert.equal(s.tcp.layer!.halfOpen, 0, "no half-open connection left");
        assert.ok(s.tcp.segmentsIn > 0 && s.udp.opened > 0 && s.fragments.reassembled > 0);
      },
    };
  },
};

/** One fragment as the reassembler takes it. */
interface Fragment {
  v6: boolean;
  id: number;
  offset: number;
  more: boolean;
  data: Uint8Array;
}

/** The fragment reassembler alone: overlaps, duplicates, inconsistent lengths, floods of ids. */
export const fragmentsTarget: FuzzTarget<Fragment> = {
  name: "fragments",
  covers: "FragmentReassembler.add/poll: overlap, duplicate, length and limit rules",
  setup() {
    const reassembler = new FragmentReassembler({
      maxBytes: 256 * 1024,
      maxDatagrams: 64,
      maxFragmentsPerDatagram: 64,
    });
    const src4 = Uint8Array.of(10, 0, 0, 2), dst4 = Uint8Array.of(192, 0, 2, 1);
    const src6 = parseAddress("fd00::2")!, dst6 = parseAddress("2001:db8::1")!;
    return {
      generate(rng) {
        const step = 8 * (1 + rng.int(64));
        const offset = rng.chance(0.9) ? step * rng.int(24) : rng.int(70_000);
        const len = rng.chance(0.9) ? step : rng.int(2000);
        return {
          v6: rng.chance(0.4),
          id: rng.chance(0.8) ? rng.int(8) : rng.int(2 ** 32),
          offset,
          more: rng.chance(0.8),
          data: rng.bytes(len),
        };
      },
      feed(f, now) {
        const out = reassembler.add({
          version: f.v6 ? 6 : 4,
          src: f.v6 ? src6 : src4,
          dst: f.v6 ? dst6 : dst4,
          protocol: 17,
          id: f.v6 ? f.id : f.id & 0xffff,
          offset: f.offset,
          more: f.more,
          data: f.data,
        }, now);
        if (out !== null) assert.ok(out.length <= 65535);
      },
      show: (f) => JSON.stringify({ ...f, data: f.data.length }),
      tick: (now) => void reassembler.poll(now),
      tables: () => ({ datagrams: reassembler.size, bytes: reassembler.bytes }),
      bounds: { datagrams: 64, bytes: 256 * 1024 },
      finish(now) {
        reassembler.poll(now + 120_000);
        assert.equal(reassembler.size, 0);
        assert.equal(reassembler.bytes, 0);
      },
    };
  },
};

/** The wire views and parsers on their own, each on every input. */
export const wireTarget: FuzzTarget<Uint8Array> = {
  name: "wire",
  covers: "Ipv4Packet/Ipv6Packet.parse, walkIpv6Headers, parseTcpInto, UdpPacket, IcmpPacket",
  setup() {
    const chain = new Ipv6HeaderChain();
    const repr = new TcpRepr();
    return {
      generate: (rng) => {
        const p = rng.pick(corpus(rng)) ?? rng.bytes(40);
        return rng.chance(0.8) ? mutate(rng, p) : p;
      },
      feed(p) {
        let l4: Uint8Array = p, src: Uint8Array = ANY4, dst: Uint8Array = ANY4, protocol = -1;
        const v4 = Ipv4Packet.parse(p);
        if (typeof v4 !== "string") {
          touchGetters(v4);
          [l4, src, dst, protocol] = [v4.payload, v4.src, v4.dst, v4.protocol];
        }
        const v6 = Ipv6Packet.parse(p);
        if (typeof v6 !== "string") {
          touchGetters(v6);
          if (walkIpv6Headers(v6.bytes, chain) === null) {
            touchGetters(chain);
            [l4, src, dst, protocol] = [
              v6.bytes.subarray(chain.offset),
              v6.src,
              v6.dst,
              chain.protocol,
            ];
          }
        }
        if (protocol === 6 || protocol === -1) parseTcpInto(l4, repr);
        if (protocol === 17 || protocol === -1) touchGetters(UdpPacket.parse(l4, src, dst));
        if (protocol === 1 || protocol === -1) touchGetters(IcmpPacket.parse(l4));
        if (protocol === 58) touchGetters(IcmpPacket.parse(l4, { src, dst }));
      },
      show: hex,
    };
  },
};
