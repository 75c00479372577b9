import assert from "node:assert/strict";
import {
  emitIcmp,
  IcmpPacket,
  ICMPV4_CODE_FRAG_NEEDED,
  ICMPV4_DEST_UNREACHABLE,
  ICMPV4_ECHO_REQUEST,
  ICMPV6_ECHO_REQUEST,
  ICMPV6_PACKET_TOO_BIG,
} from "./icmp.ts";
import { upperLayerChecksum } from "./checksum.ts";
import { parseAddress } from "../addr.ts";

const SRC6 = parseAddress("fd00::1")!;
const DST6 = parseAddress("fd00::2")!;

Deno.test("ICMPv4", async (t) => {
  // Echo request id 0x1234 seq 1 data "abcd": checksum worked out by hand,
  // ~(0x0800 + 0x1234 + 0x0001 + 0x6162 + 0x6364) = ~0xdefb = 0x2104.
  const ECHO = Uint8Array.from([8, 0, 0x21, 0x04, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64]);

  await t.step("emits an echo request byte for byte", () => {
    const buf = new Uint8Array(64);
    const n = emitIcmp(buf, {
      type: ICMPV4_ECHO_REQUEST,
      code: 0,
      restOfHeader: 0x12340001,
      data: new TextEncoder().encode("abcd"),
    });
    assert.equal(n, 12);
    assert.deepEqual(buf.subarray(0, n), ECHO);
  });

  await t.step("parses echo fields and data", () => {
    const msg = IcmpPacket.parse(ECHO);
    assert.ok(typeof msg !== "string");
    assert.equal(msg.type, 8);
    assert.equal(msg.code, 0);
    assert.equal(msg.checksum, 0x2104);
    assert.equal(msg.echoId, 0x1234);
    assert.equal(msg.echoSequence, 1);
    assert.equal(msg.restOfHeader, 0x12340001);
    assert.deepEqual([...msg.data], [0x61, 0x62, 0x63, 0x64]);
  });

  await t.step("rejects truncation and a bad checksum", () => {
    assert.equal(IcmpPacket.parse(ECHO.subarray(0, 7)), "truncated");
    const bad = ECHO.slice();
    bad[9] ^= 0x10;
    assert.equal(IcmpPacket.parse(bad), "bad-checksum");
  });

  await t.step("fragmentation needed carries the next-hop MTU in the low 16 bits", () => {
    const buf = new Uint8Array(36);
    const n = emitIcmp(buf, {
      type: ICMPV4_DEST_UNREACHABLE,
      code: ICMPV4_CODE_FRAG_NEEDED,
      restOfHeader: 1400,
      data: new Uint8Array(28),
    });
    const msg = IcmpPacket.parse(buf.subarray(0, n));
    assert.ok(typeof msg !== "string");
    assert.equal(msg.v4NextHopMtu, 1400);
    assert.equal(msg.data.length, 28);
  });

  await t.step("data already in place is not copied over itself", () => {
    const buf = new Uint8Array(16);
    buf.set([1, 2, 3, 4, 5, 6, 7, 8], 8);
    const n = emitIcmp(buf, { type: 0, code: 0, restOfHeader: 0, data: buf.subarray(8, 16) });
    assert.equal(n, 16);
    assert.deepEqual([...buf.subarray(8)], [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.ok(typeof IcmpPacket.parse(buf) !== "string");
  });

  await t.step("a short buffer is a RangeError", () => {
    assert.throws(
      () =>
        emitIcmp(new Uint8Array(9), { type: 0, code: 0, restOfHeader: 0, data: new Uint8Array(2) }),
      RangeError,
    );
  });
});

Deno.test("ICMPv6", async (t) => {
  await t.step("echo request checksum includes the pseudo-header", () => {
    const buf = new Uint8Array(64);
    const n = emitIcmp(buf, {
      type: ICMPV6_ECHO_REQUEST,
      code: 0,
      restOfHeader: 0xabcd0007,
      data: Uint8Array.from([1, 2, 3]),
      pseudo: { src: SRC6, dst: DST6 },
    });
    const msg = buf.subarray(0, n);
    assert.equal(upperLayerChecksum(SRC6, DST6, 58, msg), 0);
    const parsed = IcmpPacket.parse(msg, { src: SRC6, dst: DST6 });
    assert.ok(typeof parsed !== "string");
    assert.equal(parsed.echoId, 0xabcd);
    assert.equal(parsed.echoSequence, 7);
    // Without the right pseudo-header the same bytes fail.
    assert.equal(IcmpPacket.parse(msg, { src: DST6, dst: DST6 }), "bad-checksum");
    assert.equal(IcmpPacket.parse(msg), "bad-checksum");
  });

  await t.step("packet too big carries a 32-bit MTU", () => {
    const buf = new Uint8Array(48);
    const n = emitIcmp(buf, {
      type: ICMPV6_PACKET_TOO_BIG,
      code: 0,
      restOfHeader: 1280,
      data: new Uint8Array(40),
      pseudo: { src: SRC6, dst: DST6 },
    });
    const msg = IcmpPacket.parse(buf.subarray(0, n), { src: SRC6, dst: DST6 });
    assert.ok(typeof msg !== "string");
    assert.equal(msg.type, 2);
    assert.equal(msg.v6Mtu, 1280);
  });
});
