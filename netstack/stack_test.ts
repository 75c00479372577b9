import assert from "node:assert/strict";
import { NetStack, type NetStackOptions, type TcpConnection, type TcpRequest } from "./stack.ts";
import type { UdpFlow } from "./udp.ts";
import { parseAddress } from "./addr.ts";
import type { TcpError } from "./tcp/connection.ts";
import { upperLayerChecksum } from "./wire/checksum.ts";
import { emitIpv4Header, Ipv4Packet } from "./wire/ipv4.ts";
import { emitIpv6FragmentHeader, emitIpv6Header, Ipv6Packet } from "./wire/ipv6.ts";
import { emitIcmp, IcmpPacket } from "./wire/icmp.ts";
import { emitUdp } from "./wire/udp.ts";
import type {
  TcpConnectionLike,
  TcpLayerHost,
  TcpLayerLike,
  TcpSynRequest,
  TcpTuple,
} from "./tcp/api.ts";

// ------------------------------------------------------------------ helpers

const CLIENT4 = parseAddress("10.0.0.2")!;
const SERVER4 = parseAddress("93.184.216.34")!;
const CLIENT6 = parseAddress("fd00::2")!;
const SERVER6 = parseAddress("2001:db8::80")!;

/** A scripted TCP layer: records what the IP layer hands it. */
class FakeTcp implements TcpLayerLike {
  static last: FakeTcp;
  inputs: { src: number[]; dst: number[]; segment: number[] }[] = [];
  errors: { src: number[]; dst: number[]; quoted: number[]; kind: string; mtu?: number }[] = [];
  resets = 0;
  drops = 0;
  connects: TcpTuple[] = [];
  /** Runs at the end of each input / poll (to script host calls from inside them). */
  onInput: () => void = () => {};
  onPoll: () => void = () => {};
  constructor(readonly host: TcpLayerHost) {
    FakeTcp.last = this;
  }
  input(
    src: Uint8Array,
    dst: Uint8Array,
    segment: Uint8Array,
    _now: number,
    source?: unknown,
  ): void {
    this.inputs.push({ src: [...src], dst: [...dst], segment: [...segment] });
    if ((segment[13] & 0x12) === 0x02) {
      const tuple: TcpTuple = {
        localAddress: dst.slice(),
        localPort: (segment[2] << 8) | segment[3],
        remoteAddress: src.slice(),
        remotePort: (segment[0] << 8) | segment[1],
      };
      const req: TcpSynRequest = {
        tuple,
        ipVersion: src.length === 4 ? 4 : 6,
        source,
        accept: () => fakeConnection(tuple),
        reset: () => {
          this.resets++;
        },
        drop: () => {
          this.drops++;
        },
      };
      this.host.onSyn(req);
    }
    this.onInput();
  }
  icmpError(
    src: Uint8Array,
    dst: Uint8Array,
    quoted: Uint8Array,
    error: { kind: string; mtu?: number },
  ): void {
    this.errors.push({ src: [...src], dst: [...dst], quoted: [...quoted], ...error });
  }
  poll(): void {
    this.onPoll();
  }
  nextDeadline(): number {
    return Infinity;
  }
  connect(tuple: TcpTuple): TcpConnectionLike {
    this.connects.push(tuple);
    return fakeConnection(tuple);
  }
}

function fakeConnection(tuple: TcpTuple): TcpConnectionLike {
  return {
    ...tuple,
    ipVersion: tuple.localAddress.length === 4 ? 4 : 6,
    readable: new ReadableStream(),
    writable: new WritableStream(),
    read: () => Promise.resolve(null),
    write: () => Promise.resolve(),
    closed: Promise.resolve(),
    stats: {
      state: "CLOSED",
      bytesIn: 0,
      bytesOut: 0,
      segmentsIn: 0,
      segmentsOut: 0,
      retransmits: 0,
      timeouts: 0,
      spuriousRecoveries: 0,
      fastRecoveries: 0,
      spuriousRetransmits: 0,
      dsacksReceived: 0,
      tailLossProbes: 0,
      reorderingWindowMultiplier: 1,
      minRtt: 0,
      dupAckThreshold: 3,
      pacingRate: 0,
      congestionControl: "cubic",
      congestionState: "open",
      bottleneckBandwidth: 0,
      srtt: 0,
      rttvar: 0,
      rto: 0,
      cwnd: 0,
      ssthresh: 0,
      sendWindow: 0,
      receiveBuffer: 0,
      mss: 0,
      dropped: 0,
      challengeAcks: 0,
    },
    close: () => {},
    reset: () => {},
  };
}

function makeStack(options: Partial<NetStackOptions> = {}) {
  const out: Uint8Array[] = [];
  let wakes = 0;
  const stack = new NetStack({
    output: (p) => out.push(p.slice()),
    wake: () => wakes++,
    random: (b) => b.fill(0), // IPv4 ids start at 1
    tcpLayer: FakeTcp,
    ...options,
  });
  return { stack, out, tcp: FakeTcp.last, wakes: () => wakes };
}

function ip4(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  payload: Uint8Array,
  extra: { id?: number; offset?: number; more?: boolean; ttl?: number } = {},
): Uint8Array {
  const p = new Uint8Array(20 + payload.length);
  emitIpv4Header(p, {
    src,
    dst,
    protocol,
    payloadLength: payload.length,
    identification: extra.id ?? 0x1c46,
    fragmentOffset: extra.offset ?? 0,
    moreFragments: extra.more ?? false,
    ttl: extra.ttl ?? 64,
  });
  p.set(payload, 20);
  return p;
}

function ip6(
  src: Uint8Array,
  dst: Uint8Array,
  nextHeader: number,
  payload: Uint8Array,
  hopLimit = 64,
): Uint8Array {
  const p = new Uint8Array(40 + payload.length);
  emitIpv6Header(p, { src, dst, nextHeader, payloadLength: payload.length, hopLimit });
  p.set(payload, 40);
  return p;
}

function udp(
  src: Uint8Array,
  dst: Uint8Array,
  srcPort: number,
  dstPort: number,
  payload: Uint8Array,
): Uint8Array {
  const b = new Uint8Array(8 + payload.length);
  emitUdp(b, { src, dst, srcPort, dstPort, payload });
  return b;
}

function tcpSegment(
  src: Uint8Array,
  dst: Uint8Array,
  srcPort: number,
  dstPort: number,
  flags: number,
  seq = 1000,
): Uint8Array {
  const s = new Uint8Array(20);
  const v = new DataView(s.buffer);
  v.setUint16(0, srcPort);
  v.setUint16(2, dstPort);
  v.setUint32(4, seq);
  s[12] = 5 << 4;
  s[13] = flags;
  v.setUint16(14, 65535);
  v.setUint16(16, upperLayerChecksum(src, dst, 6, s));
  return s;
}

function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** Ones-complement add of a 16-bit delta to a checksum field (RFC 1624). */
function adjust(checksum: number, delta: number): number {
  let s = (~checksum & 0xffff) + delta;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  while (s < 0) s = s + 0xffff;
  return ~s & 0xffff;
}

// ------------------------------------------------------------------ tests

Deno.test("NetStack ICMP echo", async (t) => {
  await t.step("IPv4 echo request to any address is answered byte for byte (t=0)", () => {
    const { stack, out } = makeStack();
    const icmp = new Uint8Array(8 + 32);
    emitIcmp(icmp, {
      type: 8,
      code: 0,
      restOfHeader: 0x0001_0007,
      data: bytes("abcdefghijklmnopqrstuvwabcdefghi"),
    });
    stack.input(ip4(CLIENT4, SERVER4, 1, icmp), 0);
    // Expected: same ICMP message with type 0; checksum moved by +0x0800 (RFC 1624).
    const reply = icmp.slice();
    reply[0] = 0;
    const sum = adjust((icmp[2] << 8) | icmp[3], -0x0800);
    reply[2] = sum >> 8;
    reply[3] = sum & 0xff;
    const expected = new Uint8Array(20 + reply.length);
    emitIpv4Header(expected, {
      src: SERVER4,
      dst: CLIENT4,
      protocol: 1,
      payloadLength: reply.length,
      identification: 1,
      ttl: 64,
    });
    expected.set(reply, 20);
    assert.equal(out.length, 1);
    assert.deepEqual(out[0], expected);
    assert.equal(stack.stats().icmp.echoReplies, 1);
  });

  await t.step("IPv6 echo request is answered byte for byte (t=5)", () => {
    const { stack, out } = makeStack();
    const icmp = new Uint8Array(8 + 5);
    emitIcmp(icmp, {
      type: 128,
      code: 0,
      restOfHeader: 0xbeef_0002,
      data: bytes("hello"),
      pseudo: { src: CLIENT6, dst: SERVER6 },
    });
    stack.input(ip6(CLIENT6, SERVER6, 58, icmp), 5);
    const reply = icmp.slice();
    reply[0] = 129; // +0x0100 on the first word; pseudo-header sum is symmetric
    const sum = adjust((icmp[2] << 8) | icmp[3], 0x0100);
    reply[2] = sum >> 8;
    reply[3] = sum & 0xff;
    assert.deepEqual(out, [ip6(SERVER6, CLIENT6, 58, reply)]);
  });

  await t.step("echo disabled, multicast destinations and bad checksums get no reply", () => {
    const { stack, out } = makeStack({ icmpEcho: false });
    const icmp = new Uint8Array(8);
    emitIcmp(icmp, { type: 8, code: 0, restOfHeader: 1, data: new Uint8Array(0) });
    stack.input(ip4(CLIENT4, SERVER4, 1, icmp), 0);
    const s2 = makeStack();
    s2.stack.input(ip4(CLIENT4, parseAddress("224.0.0.1")!, 1, icmp), 0);
    const bad = icmp.slice();
    bad[3] ^= 1;
    s2.stack.input(ip4(CLIENT4, SERVER4, 1, bad), 0);
    assert.equal(out.length + s2.out.length, 0);
    assert.equal(stack.stats().drops["icmp.echo-disabled"], 1);
    assert.equal(s2.stack.stats().drops["icmp.echo-not-unicast"], 1);
    assert.equal(s2.stack.stats().drops["icmp.bad-checksum"], 1);
  });
});

Deno.test("NetStack drops malformed IP and checksums, counted by reason", async (t) => {
  const { stack, out, tcp } = makeStack({ onUdpFlow: () => {} });
  await t.step("IPv4 header checksum", () => {
    const p = ip4(CLIENT4, SERVER4, 17, udp(CLIENT4, SERVER4, 1, 2, bytes("x")));
    p[10] ^= 0xff;
    stack.input(p, 0);
    assert.equal(stack.stats().drops["ipv4.bad-checksum"], 1);
  });
  /** An IPv4 datagram whose checksum is wrong, then an IPv6 one without a checksum. */
  const badUdpChecksums = (to: NetStack) => {
    const u = udp(CLIENT4, SERVER4, 1, 2, bytes("x"));
    u[8] ^= 1;
    to.input(ip4(CLIENT4, SERVER4, 17, u), 0);
    const u6 = udp(CLIENT6, SERVER6, 1, 2, bytes("x"));
    u6[6] = u6[7] = 0;
    to.input(ip6(CLIENT6, SERVER6, 17, u6), 0);
  };
  await t.step("UDP checksum (v4 and v6) and v6 zero checksum", () => {
    badUdpChecksums(stack);
    assert.equal(stack.stats().drops["udp.bad-checksum"], 1);
    assert.equal(stack.stats().drops["udp.zero-checksum-v6"], 1);
  });
  await t.step("TCP checksum is verified before the TCP layer sees the segment", () => {
    const seg = tcpSegment(CLIENT4, SERVER4, 40000, 80, 0x10);
    seg[4] ^= 1;
    stack.input(ip4(CLIENT4, SERVER4, 6, seg), 0);
    const seg6 = tcpSegment(CLIENT6, SERVER6, 40000, 80, 0x10);
    stack.input(ip6(CLIENT6, SERVER4.length === 4 ? CLIENT6 : SERVER6, 6, seg6), 0);
    assert.equal(stack.stats().drops["tcp.bad-checksum"], 2);
    assert.equal(tcp.inputs.length, 0);
    stack.input(ip6(CLIENT6, SERVER6, 6, seg6), 0);
    assert.equal(tcp.inputs.length, 1);
    assert.deepEqual(tcp.inputs[0].segment, [...seg6]);
  });
  await t.step("verifyTcpChecksums: false hands such a segment on (an authenticated link)", () => {
    const { stack, tcp } = makeStack({ verifyTcpChecksums: false });
    const seg = tcpSegment(CLIENT4, SERVER4, 40000, 80, 0x10);
    seg[4] ^= 1;
    stack.input(ip4(CLIENT4, SERVER4, 6, seg), 0);
    assert.equal(stack.stats().drops["tcp.bad-checksum"], undefined);
    assert.deepEqual(tcp.inputs.map((i) => i.segment), [[...seg]]);
  });
  await t.step("verifyUdpChecksums: false delivers such a datagram; v6 zero still drops", () => {
    const { stack } = makeStack({ verifyUdpChecksums: false, onUdpFlow: () => {} });
    badUdpChecksums(stack);
    assert.equal(stack.stats().drops["udp.bad-checksum"], undefined);
    assert.equal(stack.stats().drops["udp.zero-checksum-v6"], 1);
    assert.equal(stack.stats().udp.datagramsIn, 1);
  });
  await t.step("martian sources and TCP/UDP to multicast or broadcast", () => {
    const seen = tcp.inputs.length;
    for (const bad of ["0.1.2.3", "127.0.0.1", "224.0.0.5", "255.255.255.255"]) {
      const a = parseAddress(bad)!;
      stack.input(ip4(a, SERVER4, 6, tcpSegment(a, SERVER4, 1, 80, 0x02)), 0);
    }
    for (const bad of ["::", "::1", "ff02::1"]) {
      const a = parseAddress(bad)!;
      stack.input(ip6(a, SERVER6, 6, tcpSegment(a, SERVER6, 1, 80, 0x02)), 0);
    }
    const bcast = parseAddress("255.255.255.255")!;
    stack.input(ip4(CLIENT4, bcast, 6, tcpSegment(CLIENT4, bcast, 1, 80, 0x02)), 0);
    const mcast = parseAddress("ff02::fb")!;
    stack.input(ip6(CLIENT6, mcast, 17, udp(CLIENT6, mcast, 5353, 5353, bytes("mdns"))), 0);
    const d = stack.stats().drops;
    assert.equal(d["ipv4.bad-source"], 4);
    assert.equal(d["ipv6.bad-source"], 3);
    assert.equal(d["tcp.multicast-destination"], 1);
    assert.equal(d["udp.multicast-destination"], 1);
    assert.equal(tcp.inputs.length, seen);
  });

  await t.step("versions, truncation, lengths", () => {
    stack.input(new Uint8Array(0), 0);
    stack.input(Uint8Array.from([0x50, 0, 0, 0]), 0);
    stack.input(Uint8Array.from([0x45, 0, 0]), 0);
    stack.input(ip6(CLIENT6, SERVER6, 17, new Uint8Array(8)).subarray(0, 45), 0);
    const d = stack.stats().drops;
    assert.equal(d["ip.bad-version"], 2);
    assert.equal(d["ipv4.truncated"], 1);
    assert.equal(d["ipv6.bad-payload-length"], 1);
    assert.equal(out.length, 0);
  });
});

Deno.test("NetStack IPv4 fragments", async (t) => {
  const payload = new Uint8Array(3000);
  for (let i = 0; i < payload.length; i++) payload[i] = i % 251;
  const datagram = udp(CLIENT4, SERVER4, 5000, 53, payload);
  const pieces = (id: number) => [
    ip4(CLIENT4, SERVER4, 17, datagram.subarray(0, 1480), { id, more: true }),
    ip4(CLIENT4, SERVER4, 17, datagram.subarray(1480, 2960), { id, offset: 1480, more: true }),
    ip4(CLIENT4, SERVER4, 17, datagram.subarray(2960), { id, offset: 2960 }),
  ];
  async function firstDatagram(flows: UdpFlow[]): Promise<Uint8Array> {
    const r = flows[0].readable.getReader();
    const { value } = await r.read();
    r.releaseLock();
    return value!;
  }

  await t.step("in order", async () => {
    const flows: UdpFlow[] = [];
    const { stack } = makeStack({ onUdpFlow: (f) => flows.push(f) });
    for (const p of pieces(1)) stack.input(p, 0);
    assert.equal(flows.length, 1);
    assert.deepEqual(await firstDatagram(flows), payload);
  });

  await t.step("out of order", async () => {
    const flows: UdpFlow[] = [];
    const { stack } = makeStack({ onUdpFlow: (f) => flows.push(f) });
    const [a, b, c] = pieces(2);
    stack.input(c, 0);
    stack.input(a, 1);
    assert.equal(flows.length, 0);
    assert.equal(stack.stats().fragments.datagrams, 1);
    stack.input(b, 2);
    assert.deepEqual(await firstDatagram(flows), payload);
    assert.equal(stack.stats().fragments.datagrams, 0);
  });

  await t.step("overlapping: the datagram is dropped", () => {
    const flows: UdpFlow[] = [];
    const { stack } = makeStack({ onUdpFlow: (f) => flows.push(f) });
    const [a, , c] = pieces(3);
    stack.input(a, 0);
    stack.input(
      ip4(CLIENT4, SERVER4, 17, datagram.subarray(1472, 2960), { id: 3, offset: 1472, more: true }),
      0,
    );
    stack.input(c, 0);
    assert.equal(flows.length, 0);
    assert.equal(stack.stats().fragments.drops.overlap, 1);
  });

  await t.step("timeout after 30 s", () => {
    const flows: UdpFlow[] = [];
    const { stack, out } = makeStack({ onUdpFlow: (f) => flows.push(f) });
    const [a, b, c] = pieces(4);
    stack.input(a, 1000);
    stack.input(b, 2000);
    assert.equal(stack.nextDeadline(), 31_000);
    stack.poll(30_999);
    assert.equal(out.length, 0);
    stack.poll(31_000);
    assert.equal(stack.stats().fragments.drops.timeout, 1);
    // The first fragment arrived: ICMP time exceeded, reassembly (11/1),
    // quoting its first 128 bytes.
    const icmp = new Uint8Array(8 + 128);
    emitIcmp(icmp, { type: 11, code: 1, restOfHeader: 0, data: a.subarray(0, 128) });
    assert.deepEqual(out, [ip4(SERVER4, CLIENT4, 1, icmp, { id: 1 })]);
    // Without the first fragment, a timeout is silent.
    stack.input(c, 31_001);
    assert.equal(flows.length, 0);
    assert.equal(stack.stats().fragments.datagrams, 1);
    stack.poll(61_001);
    assert.equal(stack.stats().fragments.drops.timeout, 2);
    assert.equal(out.length, 1);
  });
});

Deno.test("NetStack IPv6 extension headers and fragments", async (t) => {
  await t.step("UDP behind hop-by-hop and destination options is delivered", async () => {
    const flows: UdpFlow[] = [];
    const { stack } = makeStack({ onUdpFlow: (f) => flows.push(f) });
    const u = udp(CLIENT6, SERVER6, 5000, 53, bytes("dns?"));
    const ext = [60, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
    stack.input(ip6(CLIENT6, SERVER6, 0, Uint8Array.from([...ext, ...u])), 0);
    assert.equal(flows.length, 1);
    assert.equal(flows[0].localAddress, "2001:db8::80");
    const { value } = await flows[0].readable.getReader().read();
    assert.deepEqual(value, bytes("dns?"));
  });

  await t.step("routing header with segments left and bad options are dropped", () => {
    const { stack } = makeStack({ onUdpFlow: () => assert.fail("no flow") });
    const u = udp(CLIENT6, SERVER6, 5000, 53, bytes("x"));
    stack.input(ip6(CLIENT6, SERVER6, 43, Uint8Array.from([17, 0, 4, 1, 0, 0, 0, 0, ...u])), 0);
    stack.input(ip6(CLIENT6, SERVER6, 60, Uint8Array.from([17, 0, 0x80, 4, 0, 0, 0, 0, ...u])), 0);
    assert.equal(stack.stats().drops["ipv6.routing-segments-left"], 1);
    assert.equal(stack.stats().drops["ipv6.bad-option"], 1);
  });

  await t.step("fragments (with a destination options header inside) reassemble", async () => {
    const flows: UdpFlow[] = [];
    const { stack } = makeStack({ onUdpFlow: (f) => flows.push(f) });
    const payload = new Uint8Array(2000).map((_, i) => i & 0xff);
    const u = udp(CLIENT6, SERVER6, 5000, 53, payload);
    const fragmentable = Uint8Array.from([17, 0, 1, 4, 0, 0, 0, 0, ...u]); // DestOpts -> UDP
    const cut = 1232;
    const frag = (offset: number, end: number, more: boolean) => {
      const body = new Uint8Array(8 + end - offset);
      emitIpv6FragmentHeader(body, { nextHeader: 60, offset, more, id: 77 });
      body.set(fragmentable.subarray(offset, end), 8);
      return ip6(CLIENT6, SERVER6, 44, body);
    };
    stack.input(frag(cut, fragmentable.length, false), 0);
    stack.input(frag(0, cut, true), 0);
    assert.equal(flows.length, 1);
    const { value } = await flows[0].readable.getReader().read();
    assert.deepEqual(value, payload);
    // Overlap drops, 60 s timeout for IPv6.
    stack.input(frag(0, cut, true), 100);
    stack.input(frag(cut - 8, fragmentable.length, false), 100);
    assert.equal(stack.stats().fragments.drops.overlap, 1);
    stack.input(frag(0, cut, true), 200);
    stack.poll(60_199);
    assert.equal(stack.stats().fragments.datagrams, 1);
    stack.poll(60_200);
    assert.equal(stack.stats().fragments.datagrams, 0);
    assert.equal(stack.stats().fragments.drops.timeout, 1);
  });
});

Deno.test("NetStack UDP flows", async (t) => {
  await t.step("lifecycle: open, read, reply, idle expiry", async () => {
    const flows: UdpFlow[] = [];
    const { stack, out, wakes } = makeStack({ onUdpFlow: (f) => flows.push(f) });
    stack.input(ip4(CLIENT4, SERVER4, 17, udp(CLIENT4, SERVER4, 40000, 53, bytes("q1"))), 0);
    stack.input(ip4(CLIENT4, SERVER4, 17, udp(CLIENT4, SERVER4, 40000, 53, bytes("q2"))), 10);
    assert.equal(flows.length, 1);
    const flow = flows[0];
    const reader = flow.readable.getReader();
    assert.deepEqual((await reader.read()).value, bytes("q1"));
    assert.deepEqual((await reader.read()).value, bytes("q2"));
    const writer = flow.writable.getWriter();
    await writer.write(bytes("answer"));
    assert.equal(wakes(), 1);
    assert.equal(out.length, 0);
    stack.poll(20);
    // The reply comes from the address/port the client dialled.
    const expected = ip4(SERVER4, CLIENT4, 17, udp(SERVER4, CLIENT4, 53, 40000, bytes("answer")), {
      id: 1,
    });
    assert.deepEqual(out, [expected]);
    // The idle check is first due 60 s after the flow opened; it then finds
    // the later activity and moves on.
    assert.equal(stack.nextDeadline(), 60_000);
    stack.poll(60_000);
    assert.equal(stack.nextDeadline(), 60_020);
    stack.poll(60_019);
    assert.equal(stack.stats().udp.flows, 1);
    stack.poll(60_020);
    assert.equal(stack.stats().udp.flows, 0);
    assert.equal(stack.stats().udp.expired, 1);
    assert.equal((await reader.read()).done, true);
    await flow.closed;
  });

  await t.step("acceptUdpFlow false: ICMP administratively prohibited, no flow", () => {
    const asked: string[] = [];
    const flows: UdpFlow[] = [];
    const { stack, out } = makeStack({
      onUdpFlow: (f) => flows.push(f),
      acceptUdpFlow: (d, version) => {
        asked.push(`${version} ${d.localPort}`);
        return d.localPort !== 9999;
      },
    });
    const packet = ip4(CLIENT4, SERVER4, 17, udp(CLIENT4, SERVER4, 40000, 9999, bytes("hi")));
    stack.input(packet, 0);
    assert.equal(flows.length, 0);
    const icmp = new Uint8Array(8 + packet.length);
    emitIcmp(icmp, { type: 3, code: 13, restOfHeader: 0, data: packet });
    assert.deepEqual(out[0], ip4(SERVER4, CLIENT4, 1, icmp, { id: 1 }));
    assert.equal(stack.stats().drops["udp.refused"], 1);
    stack.input(ip4(CLIENT4, SERVER4, 17, udp(CLIENT4, SERVER4, 40000, 53, bytes("q"))), 0);
    stack.input(ip4(CLIENT4, SERVER4, 17, udp(CLIENT4, SERVER4, 40000, 53, bytes("q"))), 0);
    assert.equal(flows.length, 1);
    assert.deepEqual(asked, ["4 9999", "4 53"], "asked only before a flow opens");
  });

  await t.step("a flow and its accept check carry the source that opened it", () => {
    const asked: unknown[] = [];
    const flows: UdpFlow[] = [];
    const { stack } = makeStack({
      onUdpFlow: (f) => flows.push(f),
      acceptUdpFlow: (d) => {
        asked.push(d.source);
        return true;
      },
    });
    const peerA = { name: "a" }, peerB = { name: "b" };
    stack.input(ip4(CLIENT4, SERVER4, 17, udp(CLIENT4, SERVER4, 40000, 53, bytes("a"))), 0, peerA);
    // A datagram of an open flow from another source: the flow keeps its own.
    stack.input(ip4(CLIENT4, SERVER4, 17, udp(CLIENT4, SERVER4, 40000, 53, bytes("x"))), 0, peerB);
    stack.input(ip4(CLIENT4, SERVER4, 17, udp(CLIENT4, SERVER4, 40001, 53, bytes("b"))), 0, peerB);
    stack.input(ip4(CLIENT4, SERVER4, 17, udp(CLIENT4, SERVER4, 40002, 53, bytes("c"))), 0);
    assert.deepEqual(asked, [peerA, peerB, undefined]);
    assert.deepEqual(flows.map((f) => [f.remotePort, f.source]), [
      [40000, peerA],
      [40001, peerB],
      [40002, undefined],
    ]);
  });

  await t.step("no handler: ICMP port unreachable quoting the datagram, rate-limited", () => {
    const { stack, out } = makeStack({ limits: { icmpErrorBurst: 2, icmpErrorsPerSecond: 1 } });
    const packet = ip4(CLIENT4, SERVER4, 17, udp(CLIENT4, SERVER4, 40000, 9999, bytes("hi")));
    for (let i = 0; i < 4; i++) stack.input(packet, 0);
    assert.equal(out.length, 2);
    const icmp = new Uint8Array(8 + packet.length);
    emitIcmp(icmp, { type: 3, code: 3, restOfHeader: 0, data: packet });
    assert.deepEqual(out[0], ip4(SERVER4, CLIENT4, 1, icmp, { id: 1 }));
    assert.equal(stack.stats().icmp.errorsRateLimited, 2);
    stack.input(packet, 1000); // one token back after a second
    assert.equal(out.length, 3);
  });

  await t.step(
    "IPv6: the flow's reply is byte-exact; no handler: ICMPv6 port unreachable",
    async () => {
      const flows: UdpFlow[] = [];
      const { stack, out } = makeStack({ onUdpFlow: (f) => flows.push(f) });
      stack.input(ip6(CLIENT6, SERVER6, 17, udp(CLIENT6, SERVER6, 40000, 53, bytes("q"))), 0);
      const w = flows[0].writable.getWriter();
      await w.write(bytes("a6"));
      stack.poll(1);
      assert.deepEqual(out, [
        ip6(SERVER6, CLIENT6, 17, udp(SERVER6, CLIENT6, 53, 40000, bytes("a6"))),
      ]);
      const bare = makeStack();
      const packet = ip6(CLIENT6, SERVER6, 17, udp(CLIENT6, SERVER6, 40000, 53, bytes("q")));
      bare.stack.input(packet, 0);
      const icmp = new Uint8Array(8 + packet.length);
      emitIcmp(icmp, {
        type: 1,
        code: 4,
        restOfHeader: 0,
        data: packet,
        pseudo: { src: SERVER6, dst: CLIENT6 },
      });
      assert.deepEqual(bare.out, [ip6(SERVER6, CLIENT6, 58, icmp)]);
      flows[0].close();
    },
  );

  await t.step(
    "sendUdp from any address; too big for the MTU is fragmented and reassembles",
    async () => {
      const a = makeStack({ mtu: 1280 });
      const flows: UdpFlow[] = [];
      const b = makeStack({ onUdpFlow: (f) => flows.push(f) });
      const payload = new Uint8Array(4000).map((_, i) => (i * 13) & 0xff);
      a.stack.sendUdp(
        { address: "2001:db8::53", port: 53 },
        { address: CLIENT6, port: 5000 },
        payload,
        0,
      );
      assert.equal(a.out.length, 4);
      for (const p of a.out) {
        assert.ok(p.length <= 1280);
        b.stack.input(p, 0);
      }
      assert.equal(flows.length, 1);
      assert.deepEqual((await flows[0].readable.getReader().read()).value, payload);
      a.stack.sendUdp(
        { address: "8.8.8.8", port: 53 },
        { address: "10.0.0.2", port: 5000 },
        payload,
        0,
      );
      assert.equal(a.out.length, 8);
      const first = Ipv4Packet.parse(a.out[4]);
      assert.ok(typeof first !== "string" && first.moreFragments && first.totalLength === 1276);
      for (const p of a.out.slice(4)) b.stack.input(p, 0);
      assert.equal(flows.length, 2);
      assert.deepEqual((await flows[1].readable.getReader().read()).value, payload);
    },
  );

  await t.step(
    "the largest UDP payloads (65507 over IPv4, 65527 over IPv6) reassemble",
    async () => {
      const a = makeStack();
      const flows: UdpFlow[] = [];
      const b = makeStack({ onUdpFlow: (f) => flows.push(f) });
      for (
        const [from, to, size] of [
          ["10.0.0.1", "10.0.0.2", 65507],
          ["2001:db8::1", "2001:db8::2", 65527],
        ] as const
      ) {
        const payload = new Uint8Array(size).map((_, i) => (i * 7) & 0xff);
        a.out.length = 0;
        a.stack.sendUdp({ address: from, port: 53 }, { address: to, port: 5000 }, payload, 0);
        for (const p of a.out) b.stack.input(p, 0);
        assert.equal(b.stack.stats().fragments.drops.tooBig, 0, `${size} B`);
        assert.deepEqual((await flows.at(-1)!.readable.getReader().read()).value, payload);
      }
      assert.equal(flows.length, 2);
      for (const f of flows) f.close();
    },
  );

  await t.step("sendUdp misuse throws", () => {
    const { stack } = makeStack();
    const ok = { address: "10.0.0.1", port: 1 };
    assert.throws(
      () => stack.sendUdp({ address: "nope", port: 1 }, ok, new Uint8Array(1), 0),
      TypeError,
    );
    assert.throws(
      () => stack.sendUdp({ address: "::1", port: 1 }, ok, new Uint8Array(1), 0),
      TypeError,
    );
    assert.throws(
      () => stack.sendUdp({ address: "10.0.0.3", port: 70000 }, ok, new Uint8Array(1), 0),
      RangeError,
    );
    assert.throws(() => stack.sendUdp(ok, ok, new Uint8Array(65508), 0), RangeError);
  });
});

Deno.test("NetStack protocol errors", async (t) => {
  await t.step("unknown IPv4 protocol: protocol unreachable", () => {
    const { stack, out } = makeStack();
    const packet = ip4(CLIENT4, SERVER4, 132, bytes("sctp-ish"));
    stack.input(packet, 0);
    const icmp = new Uint8Array(8 + packet.length);
    emitIcmp(icmp, { type: 3, code: 2, restOfHeader: 0, data: packet });
    assert.deepEqual(out, [ip4(SERVER4, CLIENT4, 1, icmp, { id: 1 })]);
  });

  await t.step("unknown IPv6 next header: parameter problem pointing at it", () => {
    const { stack, out } = makeStack();
    const packet = ip6(CLIENT6, SERVER6, 60, Uint8Array.from([132, 0, 1, 4, 0, 0, 0, 0, 1, 2]));
    stack.input(packet, 0);
    assert.equal(out.length, 1);
    const ip = Ipv6Packet.parse(out[0]);
    assert.ok(typeof ip !== "string");
    const msg = IcmpPacket.parse(ip.payload, { src: SERVER6, dst: CLIENT6 });
    assert.ok(typeof msg !== "string");
    assert.equal(msg.type, 4);
    assert.equal(msg.code, 1);
    assert.equal(msg.restOfHeader, 40); // the DestOpts Next Header byte
    assert.deepEqual(msg.data, packet);
  });

  await t.step("no ICMP error about an ICMP error or to a multicast source", () => {
    const { stack, out } = makeStack();
    const err = new Uint8Array(8 + 28);
    emitIcmp(err, { type: 3, code: 3, restOfHeader: 0, data: new Uint8Array(28) });
    stack.input(ip4(CLIENT4, SERVER4, 1, err), 0); // dropped: bad quote, no answer
    stack.input(ip4(parseAddress("224.1.1.1")!, SERVER4, 132, new Uint8Array(4)), 0);
    stack.input(ip6(CLIENT6, parseAddress("ff02::1")!, 132, new Uint8Array(4)), 0);
    assert.equal(out.length, 0);
  });
});

Deno.test("NetStack TCP glue", async (t) => {
  await t.step("a SYN to any address becomes a TcpRequest with strings and bytes", () => {
    const requests: TcpRequest[] = [];
    const { stack } = makeStack({ onTcpConnection: (r) => requests.push(r) });
    stack.input(ip4(CLIENT4, SERVER4, 6, tcpSegment(CLIENT4, SERVER4, 40000, 443, 0x02)), 0);
    assert.equal(requests.length, 1);
    const r = requests[0];
    assert.equal(r.localAddress, "93.184.216.34");
    assert.equal(r.localPort, 443);
    assert.equal(r.remoteAddress, "10.0.0.2");
    assert.equal(r.remotePort, 40000);
    assert.deepEqual(r.tuple.localAddress, SERVER4);
    assert.equal(r.ipVersion, 4);
    const conn = r.accept();
    assert.equal(conn.localPort, 443);
    assert.throws(() => r.reject(), TypeError);
  });

  await t.step("a request carries the source of the input call that carried its SYN", () => {
    const requests: TcpRequest[] = [];
    const { stack } = makeStack({ onTcpConnection: (r) => requests.push(r) });
    const peerA = { name: "a" }, peerB = { name: "b" };
    stack.input(ip4(CLIENT4, SERVER4, 6, tcpSegment(CLIENT4, SERVER4, 40000, 443, 0x02)), 0, peerA);
    stack.input(ip4(CLIENT4, SERVER4, 6, tcpSegment(CLIENT4, SERVER4, 40001, 443, 0x02)), 0, peerB);
    stack.input(ip4(CLIENT4, SERVER4, 6, tcpSegment(CLIENT4, SERVER4, 40002, 443, 0x02)), 0);
    assert.deepEqual(requests.map((r) => [r.remotePort, r.source]), [
      [40000, peerA],
      [40001, peerB],
      [40002, undefined],
    ]);
  });

  await t.step("a wake asked for during input reaches the owner once the input returns", () => {
    const { stack, tcp, wakes } = makeStack();
    const seen: number[] = [];
    tcp.onInput = () => {
      tcp.host.wake(); // e.g. ACKs left for the end of the batch
      tcp.host.wake();
      seen.push(wakes());
    };
    const ack = ip4(CLIENT4, SERVER4, 6, tcpSegment(CLIENT4, SERVER4, 40000, 443, 0x10));
    stack.input(ack, 0);
    stack.input(ack, 0);
    assert.deepEqual(seen, [0, 1], "not during an input");
    assert.equal(wakes(), 2, "once after each input that asked");
    // One asked for during a poll is not given: the poll does the work.
    tcp.onPoll = () => tcp.host.wake();
    stack.poll(1);
    assert.equal(wakes(), 2);
    tcp.onInput = () => {};
    stack.input(ack, 2);
    assert.equal(wakes(), 2);
  });

  await t.step("reject('icmp') sends port unreachable quoting the SYN on the next poll", () => {
    const requests: TcpRequest[] = [];
    const { stack, out, tcp, wakes } = makeStack({ onTcpConnection: (r) => requests.push(r) });
    const syn = ip4(CLIENT4, SERVER4, 6, tcpSegment(CLIENT4, SERVER4, 40000, 443, 0x02));
    stack.input(syn, 0);
    requests[0].reject("icmp");
    assert.equal(tcp.drops, 1);
    assert.equal(wakes(), 1);
    assert.equal(stack.nextDeadline(), -Infinity);
    stack.poll(7);
    const icmp = new Uint8Array(8 + syn.length);
    emitIcmp(icmp, { type: 3, code: 3, restOfHeader: 0, data: syn });
    assert.deepEqual(out, [ip4(SERVER4, CLIENT4, 1, icmp, { id: 1 })]);
  });

  await t.step("reject('icmp-prohibited') over IPv6: admin prohibited", () => {
    const requests: TcpRequest[] = [];
    const { stack, out } = makeStack({ onTcpConnection: (r) => requests.push(r) });
    const syn = ip6(CLIENT6, SERVER6, 6, tcpSegment(CLIENT6, SERVER6, 40000, 22, 0x02));
    stack.input(syn, 0);
    requests[0].reject("icmp-prohibited");
    stack.poll(1);
    const icmp = new Uint8Array(8 + syn.length);
    emitIcmp(icmp, {
      type: 1,
      code: 1,
      restOfHeader: 0,
      data: syn,
      pseudo: { src: SERVER6, dst: CLIENT6 },
    });
    assert.deepEqual(out, [ip6(SERVER6, CLIENT6, 58, icmp)]);
  });

  await t.step("reject('rst'), reject('drop'), and no handler (RST)", () => {
    const requests: TcpRequest[] = [];
    const a = makeStack({ onTcpConnection: (r) => requests.push(r) });
    const syn = ip4(CLIENT4, SERVER4, 6, tcpSegment(CLIENT4, SERVER4, 40000, 443, 0x02));
    a.stack.input(syn, 0);
    a.stack.input(syn, 0);
    requests[0].reject("rst");
    requests[1].reject("drop");
    assert.equal(a.tcp.resets, 1);
    assert.equal(a.tcp.drops, 1);
    assert.throws(() => requests[1].reject("bogus" as "rst"), TypeError);
    const b = makeStack();
    b.stack.input(syn, 0);
    assert.equal(b.tcp.resets, 1);
  });

  await t.step("TCP segments from the TCP layer are wrapped in IP (DF on IPv4)", () => {
    const { out, tcp } = makeStack();
    const seg = tcpSegment(SERVER4, CLIENT4, 443, 40000, 0x12);
    tcp.host.sendSegment(SERVER4, CLIENT4, seg);
    const ip = Ipv4Packet.parse(out[0]);
    assert.ok(typeof ip !== "string");
    assert.equal(ip.dontFragment, true);
    assert.equal(ip.protocol, 6);
    assert.deepEqual(ip.payload, seg);
    const seg6 = tcpSegment(SERVER6, CLIENT6, 443, 40000, 0x12);
    tcp.host.sendSegment(SERVER6, CLIENT6, seg6);
    assert.deepEqual(out[1], ip6(SERVER6, CLIENT6, 6, seg6));
  });

  await t.step("ICMP frag-needed / packet-too-big / unreachable reach tcp.icmpError", () => {
    const { stack, tcp } = makeStack();
    // Our segment, as the client's router quotes it.
    const ours = ip4(SERVER4, CLIENT4, 6, tcpSegment(SERVER4, CLIENT4, 443, 40000, 0x10));
    const fragNeeded = new Uint8Array(8 + 28);
    emitIcmp(fragNeeded, { type: 3, code: 4, restOfHeader: 1300, data: ours.subarray(0, 28) });
    stack.input(ip4(parseAddress("10.0.0.254")!, SERVER4, 1, fragNeeded), 0);
    assert.deepEqual(tcp.errors[0], {
      src: [...SERVER4],
      dst: [...CLIENT4],
      quoted: [...ours.subarray(20, 28)],
      kind: "packet-too-big",
      mtu: 1300,
    });
    const unreach = new Uint8Array(8 + ours.length);
    emitIcmp(unreach, { type: 3, code: 1, restOfHeader: 0, data: ours });
    stack.input(ip4(CLIENT4, SERVER4, 1, unreach), 0);
    assert.equal(tcp.errors[1].kind, "unreachable");
    assert.equal(tcp.errors[1].mtu, undefined);
    const ours6 = ip6(SERVER6, CLIENT6, 6, tcpSegment(SERVER6, CLIENT6, 443, 40000, 0x10));
    const ptb = new Uint8Array(8 + ours6.length);
    emitIcmp(ptb, {
      type: 2,
      code: 0,
      restOfHeader: 1280,
      data: ours6,
      pseudo: { src: CLIENT6, dst: SERVER6 },
    });
    stack.input(ip6(CLIENT6, SERVER6, 58, ptb), 0);
    assert.deepEqual(tcp.errors[2].src, [...SERVER6]);
    assert.equal(tcp.errors[2].kind, "packet-too-big");
    assert.equal(tcp.errors[2].mtu, 1280);
    assert.equal(tcp.errors[2].quoted.length, 20);
    assert.equal(stack.stats().icmp.errorsToTcp, 3);
  });

  await t.step("connect() validates and passes the tuple", () => {
    const { stack, tcp } = makeStack();
    const conn = stack.connect({
      localAddress: "192.0.2.1",
      localPort: 8080,
      remoteAddress: CLIENT4,
      remotePort: 22,
    }, 0);
    assert.equal(conn.remotePort, 22);
    assert.deepEqual(tcp.connects[0].localAddress, parseAddress("192.0.2.1"));
    const eph = stack.connect({ localAddress: "::1", remoteAddress: "fd00::2", remotePort: 22 }, 0);
    assert.ok(eph.localPort >= 49152 && eph.localPort <= 65535);
    assert.throws(
      () => stack.connect({ localAddress: "::1", remoteAddress: "10.0.0.2", remotePort: 22 }, 0),
      TypeError,
    );
    assert.throws(
      () => stack.connect({ localAddress: "x", remoteAddress: "10.0.0.2", remotePort: 22 }, 0),
      TypeError,
    );
    assert.throws(
      () =>
        stack.connect({ localAddress: "10.0.0.1", remoteAddress: "10.0.0.2", remotePort: 0 }, 0),
      RangeError,
    );
  });

  await t.step("constructor misuse", () => {
    assert.throws(() => new NetStack({} as NetStackOptions), TypeError);
    assert.throws(() => makeStack({ mtu: 1000 }), RangeError);
  });
});

// ------------------------------------------------------------------ with the built-in TCP layer

/** Two stacks on an in-memory link (queued: `output` never re-enters a stack). */
class Pair {
  now = 0;
  aToB: Uint8Array[] = [];
  bToA: Uint8Array[] = [];
  server: NetStack;
  client: NetStack;
  constructor(serverOptions: Partial<NetStackOptions> = {}) {
    this.server = new NetStack({ output: (p) => this.aToB.push(p.slice()), ...serverOptions });
    this.client = new NetStack({ output: (p) => this.bToA.push(p.slice()) });
  }
  /** Moves packets and time until `done()` (at most `limit` simulated ms). */
  async run(done: () => boolean, limit = 10_000): Promise<void> {
    const end = this.now + limit;
    while (!done()) {
      if (this.now > end) throw new Error(`Not done after ${limit} ms`);
      await new Promise((r) => setTimeout(r, 0));
      this.server.poll(this.now);
      this.client.poll(this.now);
      while (this.aToB.length + this.bToA.length > 0) {
        for (const p of this.aToB.splice(0)) this.client.input(p, this.now);
        for (const p of this.bToA.splice(0)) this.server.input(p, this.now);
      }
      this.now += 5;
    }
  }
}

async function readAll(readable: ReadableStream<Uint8Array>, into: number[]): Promise<void> {
  for await (const chunk of readable) into.push(...chunk);
}

Deno.test("NetStack with the built-in TcpLayer", async (t) => {
  for (
    const [name, client, server] of [["IPv4", CLIENT4, SERVER4], [
      "IPv6",
      CLIENT6,
      SERVER6,
    ]] as const
  ) {
    await t.step(
      `${name}: accept a connection to any address, transfer both ways, close`,
      async () => {
        const accepted: TcpConnection[] = [];
        const pair = new Pair({
          onTcpConnection: (r) => {
            assert.equal(r.localPort, 443);
            accepted.push(r.accept());
          },
        });
        const conn = pair.client.connect(
          { localAddress: client, localPort: 40000, remoteAddress: server, remotePort: 443 },
          0,
        );
        await pair.run(() => accepted.length === 1);
        const peer = accepted[0];
        assert.deepEqual(peer.localAddress, server);
        const data = new Uint8Array(200_000).map((_, i) => (i * 31) & 0xff);
        const gotServer: number[] = [];
        const gotClient: number[] = [];
        const reads = [readAll(peer.readable, gotServer), readAll(conn.readable, gotClient)];
        const w = conn.writable.getWriter();
        const writing = w.write(data).then(() => w.close());
        const pw = peer.writable.getWriter();
        const replying = pw.write(bytes("pong")).then(() => pw.close());
        let finished = false;
        Promise.all([...reads, writing, replying]).then(() => finished = true);
        await pair.run(() => finished);
        assert.equal(gotServer.length, data.length);
        assert.deepEqual(Uint8Array.from(gotServer), data);
        assert.deepEqual(Uint8Array.from(gotClient), bytes("pong"));
        const s = pair.server.stats();
        assert.ok(s.tcp.segmentsIn > 100);
        assert.equal(s.drops["tcp.bad-checksum"], undefined);
        // A lossless path: nothing is ever sent twice (a window edge rounded
        // up but not accepted once made the client resend trimmed bytes).
        assert.equal(conn.stats.retransmits, 0);
        assert.equal(peer.stats.retransmits, 0);
        // The MSS follows the MTU: no segment exceeds it.
        assert.equal(s.fragments.fragmentsSent, 0);
        assert.equal(pair.client.stats().fragments.fragmentsSent, 0);
      },
    );
  }

  await t.step(
    "reject('icmp') reaches the client's TCP layer as an unreachable error",
    async () => {
      const pair = new Pair({ onTcpConnection: (r) => r.reject("icmp") });
      const conn = pair.client.connect(
        { localAddress: CLIENT4, localPort: 40001, remoteAddress: SERVER4, remotePort: 25 },
        0,
      );
      let error: TcpError | undefined;
      conn.readable.getReader().read().catch((e) => error = e);
      await pair.run(() => error !== undefined);
      assert.equal(pair.server.stats().icmp.errorsSent, 1);
      assert.equal(pair.client.stats().icmp.errorsToTcp, 1);
      assert.equal(error?.code, "EHOSTUNREACH", "a hard error for a SYN (RFC 1122 §4.2.3.9)");
    },
  );

  await t.step("options.random keys the TCP layer's ISNs (no other randomness)", () => {
    const isnWith = (fill: number) => {
      const out: Uint8Array[] = [];
      const stack = new NetStack({
        output: (p) => out.push(p.slice()),
        random: (b) => b.fill(fill),
        onTcpConnection: (r) => void r.accept(),
      });
      stack.input(ip4(CLIENT4, SERVER4, 6, tcpSegment(CLIENT4, SERVER4, 40000, 80, 0x02)), 0);
      assert.equal(out.length, 1, "a SYN-ACK");
      return new DataView(out[0].buffer).getUint32(20 + 4);
    };
    assert.equal(isnWith(1), isnWith(1), "the same random bytes, the same ISN");
    assert.notEqual(isnWith(1), isnWith(2));
  });

  await t.step("no handler: the SYN gets a RST and connect fails", async () => {
    const pair = new Pair();
    const conn = pair.client.connect(
      { localAddress: CLIENT6, localPort: 40002, remoteAddress: SERVER6, remotePort: 9 },
      0,
    );
    let failed = false;
    conn.readable.getReader().read().catch(() => failed = true);
    await pair.run(() => failed);
    assert.equal(pair.server.stats().tcp.layer?.resetsSent, 1);
  });
});
