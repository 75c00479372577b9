import assert from "node:assert/strict";
import { emitUdp, UDP_HEADER_LEN, UdpPacket } from "./udp.ts";
import { upperLayerChecksum } from "./checksum.ts";
import { parseAddress } from "../addr.ts";

const SRC4 = parseAddress("10.0.0.1")!;
const DST4 = parseAddress("10.0.0.2")!;
const SRC6 = parseAddress("fd00::1")!;
const DST6 = parseAddress("fd00::2")!;

function datagram(src: Uint8Array, dst: Uint8Array, payload: number[]): Uint8Array {
  const buf = new Uint8Array(UDP_HEADER_LEN + payload.length);
  emitUdp(buf, { src, dst, srcPort: 5353, dstPort: 53, payload: Uint8Array.from(payload) });
  return buf;
}

Deno.test("UdpPacket", async (t) => {
  await t.step("emit writes header, payload and a checksum that verifies", () => {
    const d = datagram(SRC4, DST4, [1, 2, 3]);
    assert.deepEqual([...d.subarray(0, 6)], [0x14, 0xe9, 0x00, 0x35, 0x00, 11]);
    assert.equal(upperLayerChecksum(SRC4, DST4, 17, d), 0);
    const u = UdpPacket.parse(d, SRC4, DST4);
    assert.ok(typeof u !== "string");
    assert.equal(u.srcPort, 5353);
    assert.equal(u.dstPort, 53);
    assert.equal(u.length, 11);
    assert.deepEqual([...u.payload], [1, 2, 3]);
  });

  await t.step("a computed zero checksum is sent as 0xffff", () => {
    const probe = datagram(SRC4, DST4, [0, 0]);
    const c = (probe[6] << 8) | probe[7];
    // Putting the checksum itself into the payload makes the sum 0xffff.
    const d = datagram(SRC4, DST4, [c >> 8, c & 0xff]);
    assert.equal((d[6] << 8) | d[7], 0xffff);
    assert.ok(typeof UdpPacket.parse(d, SRC4, DST4) !== "string");
  });

  await t.step("IPv4 zero checksum means none; IPv6 zero checksum is refused", () => {
    const d4 = datagram(SRC4, DST4, [1, 2, 3, 4]);
    d4[6] = d4[7] = 0;
    d4[8] = 99; // payload changed too: no checksum, so still accepted
    assert.ok(typeof UdpPacket.parse(d4, SRC4, DST4) !== "string");
    const d6 = datagram(SRC6, DST6, [1, 2, 3, 4]);
    assert.ok(typeof UdpPacket.parse(d6, SRC6, DST6) !== "string");
    d6[6] = d6[7] = 0;
    assert.equal(UdpPacket.parse(d6, SRC6, DST6), "zero-checksum-v6");
  });

  await t.step("bad checksum, lengths and trailing bytes", () => {
    const d = datagram(SRC6, DST6, [1, 2, 3, 4]);
    const bad = d.slice();
    bad[9] ^= 1;
    assert.equal(UdpPacket.parse(bad, SRC6, DST6), "bad-checksum");
    assert.equal(UdpPacket.parse(d, SRC6, parseAddress("fd00::3")!), "bad-checksum");
    assert.equal(UdpPacket.parse(d.subarray(0, 7), SRC6, DST6), "truncated");
    assert.equal(UdpPacket.parse(d.subarray(0, 11), SRC6, DST6), "bad-length");
    const small = d.slice();
    small[5] = 7;
    assert.equal(UdpPacket.parse(small, SRC6, DST6), "bad-length");
    const padded = new Uint8Array(d.length + 3);
    padded.set(d);
    const u = UdpPacket.parse(padded, SRC6, DST6);
    assert.ok(typeof u !== "string");
    assert.equal(u.payload.length, 4);
  });

  await t.step("emit misuse is a RangeError", () => {
    const p = { src: SRC4, dst: DST4, srcPort: 1, dstPort: 2, payload: new Uint8Array(4) };
    assert.throws(() => emitUdp(new Uint8Array(11), p), RangeError);
    assert.throws(() => emitUdp(new Uint8Array(12), { ...p, srcPort: 70000 }), RangeError);
    assert.throws(
      () => emitUdp(new Uint8Array(70000), { ...p, payload: new Uint8Array(65528) }),
      RangeError,
    );
  });
});
