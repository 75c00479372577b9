import assert from "node:assert/strict";
import {
  emitIpv6FragmentHeader,
  emitIpv6Header,
  IPV6_HEADER_LEN,
  IPV6_MAX_EXTENSION_HEADERS,
  Ipv6HeaderChain,
  Ipv6Packet,
  walkIpv6Headers,
} from "./ipv6.ts";
import { parseAddress } from "../addr.ts";

const SRC = parseAddress("2001:db8::1")!;
const DST = parseAddress("2001:db8::2")!;

/** Builds an IPv6 packet: fixed header, then `ext` (already chained), then `upper`. */
function build(nextHeader: number, ext: number[], upper: number[]): Uint8Array {
  const p = new Uint8Array(IPV6_HEADER_LEN + ext.length + upper.length);
  emitIpv6Header(p, {
    src: SRC,
    dst: DST,
    nextHeader,
    payloadLength: ext.length + upper.length,
    trafficClass: 0xab,
    flowLabel: 0x12345,
    hopLimit: 7,
  });
  p.set(ext, IPV6_HEADER_LEN);
  p.set(upper, IPV6_HEADER_LEN + ext.length);
  return p;
}

/** An 8-byte options header (HBH or DestOpts) with a PadN option. */
function opts(next: number, option = [1, 4, 0, 0, 0, 0]): number[] {
  return [next, 0, ...option];
}

Deno.test("Ipv6Packet", async (t) => {
  await t.step("emit then parse round-trips the fixed header", () => {
    const p = build(17, [], [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual([...p.subarray(0, 8)], [0x6a, 0xb1, 0x23, 0x45, 0, 8, 17, 7]);
    const ip = Ipv6Packet.parse(p);
    assert.ok(typeof ip !== "string");
    assert.equal(ip.trafficClass, 0xab);
    assert.equal(ip.flowLabel, 0x12345);
    assert.equal(ip.payloadLength, 8);
    assert.equal(ip.nextHeader, 17);
    assert.equal(ip.hopLimit, 7);
    assert.deepEqual(ip.src, SRC);
    assert.deepEqual(ip.dst, DST);
    assert.deepEqual([...ip.payload], [1, 2, 3, 4, 5, 6, 7, 8]);
  });

  await t.step("rejects bad version and lengths; trims padding", () => {
    assert.equal(Ipv6Packet.parse(new Uint8Array(39)), "truncated");
    const p = build(17, [], [1, 2, 3, 4]);
    assert.equal(Ipv6Packet.parse(p.subarray(0, 43)), "bad-payload-length");
    const v = p.slice();
    v[0] = 0x45;
    assert.equal(Ipv6Packet.parse(v), "bad-version");
    const padded = new Uint8Array(p.length + 5);
    padded.set(p);
    const ip = Ipv6Packet.parse(padded);
    assert.ok(typeof ip !== "string");
    assert.equal(ip.bytes.length, p.length);
  });

  await t.step("emit rejects misuse", () => {
    assert.throws(
      () =>
        emitIpv6Header(new Uint8Array(39), { src: SRC, dst: DST, nextHeader: 6, payloadLength: 0 }),
      RangeError,
    );
    assert.throws(
      () =>
        emitIpv6Header(new Uint8Array(40), {
          src: new Uint8Array(4),
          dst: DST,
          nextHeader: 6,
          payloadLength: 0,
        }),
      RangeError,
    );
    assert.throws(
      () =>
        emitIpv6Header(new Uint8Array(40), {
          src: SRC,
          dst: DST,
          nextHeader: 6,
          payloadLength: 65536,
        }),
      RangeError,
    );
  });
});

Deno.test("walkIpv6Headers", async (t) => {
  const chain = new Ipv6HeaderChain();

  await t.step("no extension headers", () => {
    assert.equal(walkIpv6Headers(build(6, [], new Array(20).fill(0)), chain), null);
    assert.equal(chain.protocol, 6);
    assert.equal(chain.offset, 40);
    assert.equal(chain.protocolFieldOffset, 6);
    assert.equal(chain.headers, 0);
    assert.equal(chain.isFragment, false);
  });

  await t.step("hop-by-hop, destination options, routing (segments left 0), then UDP", () => {
    const ext = [
      ...opts(60), // HBH -> DestOpts
      ...opts(43, [0, 0, 0, 1, 1, 0]), // DestOpts (Pad1 ×3 + PadN(1)) -> Routing
      17,
      0,
      4,
      0,
      0,
      0,
      0,
      0, // Routing type 4, segments left 0 -> UDP
    ];
    assert.equal(walkIpv6Headers(build(0, ext, [9, 9, 9, 9, 9, 9, 9, 9]), chain), null);
    assert.equal(chain.protocol, 17);
    assert.equal(chain.offset, 64);
    assert.equal(chain.protocolFieldOffset, 56);
    assert.equal(chain.headers, 3);
  });

  await t.step("authentication header length is in 4-octet units", () => {
    const ah = [6, 4, 0, 0, ...new Array(20).fill(0)]; // (4 + 2) * 4 = 24 bytes
    assert.equal(walkIpv6Headers(build(51, ah, new Array(20).fill(0)), chain), null);
    assert.equal(chain.protocol, 6);
    assert.equal(chain.offset, 64);
  });

  await t.step("no next header stops the walk", () => {
    assert.equal(walkIpv6Headers(build(60, opts(59), [1, 2, 3]), chain), null);
    assert.equal(chain.protocol, 59);
  });

  await t.step("fragment header: real fragment stops with fragment info", () => {
    const frag = new Uint8Array(8);
    emitIpv6FragmentHeader(frag, { nextHeader: 17, offset: 1232, more: true, id: 0xdeadbeef });
    assert.deepEqual([...frag], [17, 0, 0x04, 0xd1, 0xde, 0xad, 0xbe, 0xef]);
    assert.equal(
      walkIpv6Headers(build(0, [...opts(44), ...frag], [1, 2, 3, 4, 5, 6, 7, 8]), chain),
      null,
    );
    assert.equal(chain.isFragment, true);
    assert.equal(chain.fragmentOffset, 1232);
    assert.equal(chain.moreFragments, true);
    assert.equal(chain.fragmentId, 0xdeadbeef);
    assert.equal(chain.fragmentHeaderOffset, 48);
    assert.equal(chain.protocol, 17);
    assert.equal(chain.offset, 56);
  });

  await t.step("atomic fragment (offset 0, M=0) is walked through (RFC 6946)", () => {
    const frag = [60, 0, 0, 0, 0, 0, 0, 1];
    assert.equal(
      walkIpv6Headers(build(44, [...frag, ...opts(6)], new Array(20).fill(0)), chain),
      null,
    );
    assert.equal(chain.isFragment, false);
    assert.equal(chain.protocol, 6);
    assert.equal(chain.offset, 56);
  });

  await t.step("malformed chains are refused", () => {
    // Hop-by-hop after another header.
    assert.equal(
      walkIpv6Headers(build(60, [...opts(0), ...opts(6)], []), chain),
      "hop-by-hop-not-first",
    );
    // Too many headers.
    const many: number[] = [];
    for (let i = 0; i < IPV6_MAX_EXTENSION_HEADERS + 1; i++) {
      many.push(...opts(i === IPV6_MAX_EXTENSION_HEADERS ? 6 : 60));
    }
    assert.equal(walkIpv6Headers(build(60, many, []), chain), "too-many-headers");
    // Header running past the end.
    assert.equal(walkIpv6Headers(build(60, [6, 1, 1, 4, 0, 0, 0, 0], []), chain), "truncated");
    assert.equal(walkIpv6Headers(build(60, [6, 0, 1], []), chain), "truncated");
    // Unknown option whose high bits say discard (0b01xxxxxx).
    assert.equal(
      walkIpv6Headers(build(60, opts(6, [0x41, 4, 0, 0, 0, 0]), []), chain),
      "bad-option",
    );
    // Jumbo payload option (0xC2) is not supported.
    assert.equal(
      walkIpv6Headers(build(0, opts(6, [0xc2, 4, 0, 0, 0, 0]), []), chain),
      "bad-option",
    );
    // Option TLV overrunning its header.
    assert.equal(walkIpv6Headers(build(60, opts(6, [1, 5, 0, 0, 0, 0]), []), chain), "bad-option");
    // Unknown option with "skip" bits is fine.
    assert.equal(walkIpv6Headers(build(60, opts(6, [0x1e, 4, 0, 0, 0, 0]), []), chain), null);
    // Routing header with segments left.
    assert.equal(
      walkIpv6Headers(build(43, [6, 0, 4, 1, 0, 0, 0, 0], []), chain),
      "routing-segments-left",
    );
  });
});
