import assert from "node:assert/strict";
import { emitIpv4Header, IPV4_HEADER_LEN, Ipv4Packet } from "./ipv4.ts";

// The header from RFC 1071-style worked examples (Wikipedia "IPv4 header checksum").
const HEADER = Uint8Array.from([
  0x45,
  0x00,
  0x00,
  0x73,
  0x00,
  0x00,
  0x40,
  0x00,
  0x40,
  0x11,
  0xb8,
  0x61,
  0xc0,
  0xa8,
  0x00,
  0x01,
  0xc0,
  0xa8,
  0x00,
  0xc7,
]);

function packet(): Uint8Array {
  const p = new Uint8Array(0x73);
  p.set(HEADER);
  for (let i = 20; i < p.length; i++) p[i] = i & 0xff;
  return p;
}

Deno.test("Ipv4Packet", async (t) => {
  await t.step("parses a known header and its fields", () => {
    const ip = Ipv4Packet.parse(packet());
    assert.ok(typeof ip !== "string");
    assert.equal(ip.headerLength, 20);
    assert.equal(ip.totalLength, 0x73);
    assert.equal(ip.dontFragment, true);
    assert.equal(ip.moreFragments, false);
    assert.equal(ip.fragmentOffset, 0);
    assert.equal(ip.isFragment, false);
    assert.equal(ip.ttl, 64);
    assert.equal(ip.protocol, 17);
    assert.equal(ip.checksum, 0xb861);
    assert.deepEqual([...ip.src], [192, 168, 0, 1]);
    assert.deepEqual([...ip.dst], [192, 168, 0, 199]);
    assert.equal(ip.payload.length, 0x73 - 20);
    assert.equal(ip.payload[0], 20);
  });

  await t.step("trims link padding to Total Length", () => {
    const p = new Uint8Array(0x73 + 10);
    p.set(packet());
    const ip = Ipv4Packet.parse(p);
    assert.ok(typeof ip !== "string");
    assert.equal(ip.bytes.length, 0x73);
  });

  await t.step("rejects malformed headers with a reason", () => {
    assert.equal(Ipv4Packet.parse(HEADER.subarray(0, 19)), "truncated");
    const v6 = packet();
    v6[0] = 0x65;
    assert.equal(Ipv4Packet.parse(v6), "bad-version");
    const ihl = packet();
    ihl[0] = 0x44;
    assert.equal(Ipv4Packet.parse(ihl), "bad-header-length");
    const ihlLong = packet().subarray(0, 40);
    ihlLong[0] = 0x4f; // 60 bytes > 40 available
    assert.equal(Ipv4Packet.parse(ihlLong), "bad-header-length");
    const short = packet().subarray(0, 0x72);
    assert.equal(Ipv4Packet.parse(short), "bad-total-length");
    const tiny = packet();
    tiny[3] = 19;
    assert.equal(Ipv4Packet.parse(tiny), "bad-total-length");
    const sum = packet();
    sum[11] ^= 1;
    assert.equal(Ipv4Packet.parse(sum), "bad-checksum");
  });

  await t.step("skips options", () => {
    const p = new Uint8Array(28);
    p.set(HEADER);
    p[0] = 0x46; // IHL 6: 4 bytes of options
    p[2] = 0;
    p[3] = 28;
    p[20] = 1; // NOP options
    p[21] = 1;
    p[22] = 1;
    p[23] = 0;
    p[24] = 0xaa;
    p[10] = p[11] = 0;
    let sum = 0;
    for (let i = 0; i < 24; i += 2) sum += (p[i] << 8) | p[i + 1];
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    p[10] = (~sum >> 8) & 0xff;
    p[11] = ~sum & 0xff;
    const ip = Ipv4Packet.parse(p);
    assert.ok(typeof ip !== "string");
    assert.equal(ip.headerLength, 24);
    assert.deepEqual([...ip.options], [1, 1, 1, 0]);
    assert.equal(ip.payload[0], 0xaa);
  });

  await t.step("reads fragment flags and offset", () => {
    const p = new Uint8Array(28);
    emitIpv4Header(p, {
      src: new Uint8Array([10, 0, 0, 1]),
      dst: new Uint8Array([10, 0, 0, 2]),
      protocol: 17,
      payloadLength: 8,
      identification: 0xbeef,
      moreFragments: true,
      fragmentOffset: 1480,
    });
    const ip = Ipv4Packet.parse(p);
    assert.ok(typeof ip !== "string");
    assert.equal(ip.identification, 0xbeef);
    assert.equal(ip.moreFragments, true);
    assert.equal(ip.dontFragment, false);
    assert.equal(ip.fragmentOffset, 1480);
    assert.equal(ip.isFragment, true);
  });

  await t.step("emit writes the known header byte for byte", () => {
    const buf = new Uint8Array(IPV4_HEADER_LEN);
    emitIpv4Header(buf, {
      src: new Uint8Array([192, 168, 0, 1]),
      dst: new Uint8Array([192, 168, 0, 199]),
      protocol: 17,
      payloadLength: 0x73 - 20,
      dontFragment: true,
    });
    assert.deepEqual(buf, HEADER);
  });

  await t.step("emit rejects misuse with RangeError", () => {
    const src = new Uint8Array(4), dst = new Uint8Array(4);
    assert.throws(
      () => emitIpv4Header(new Uint8Array(19), { src, dst, protocol: 6, payloadLength: 0 }),
      RangeError,
    );
    assert.throws(
      () => emitIpv4Header(new Uint8Array(20), { src, dst, protocol: 6, payloadLength: 65516 }),
      RangeError,
    );
    assert.throws(
      () =>
        emitIpv4Header(new Uint8Array(20), {
          src,
          dst,
          protocol: 6,
          payloadLength: 0,
          fragmentOffset: 7,
        }),
      RangeError,
    );
    assert.throws(
      () =>
        emitIpv4Header(new Uint8Array(20), {
          src: new Uint8Array(16),
          dst,
          protocol: 6,
          payloadLength: 0,
        }),
      RangeError,
    );
  });
});
