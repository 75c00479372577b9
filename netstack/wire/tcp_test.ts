import assert from "node:assert/strict";
import {
  emitTcp,
  parseTcp,
  parseTcpOptions,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_SYN,
  TcpPacket,
  TcpRepr,
} from "./tcp.ts";

const SRC = new Uint8Array([192, 0, 2, 1]);
const DST = new Uint8Array([198, 51, 100, 7]);

// A SYN laid out the way Linux sends it: 40000 -> 80, MSS 1460, SACK-perm,
// TS, NOP, wscale 7 (checksum left zero; the view does not check it).
function linuxSyn(): Uint8Array {
  const hdr = new Uint8Array([
    0x9c,
    0x40,
    0x00,
    0x50,
    0x01,
    0x02,
    0x03,
    0x04,
    0,
    0,
    0,
    0,
    0xa0,
    0x02,
    0xfa,
    0xf0,
    0,
    0,
    0,
    0,
    2,
    4,
    0x05,
    0xb4,
    4,
    2,
    8,
    10,
    0,
    0,
    0x10,
    0,
    0,
    0,
    0,
    0,
    1,
    3,
    3,
    7,
  ]);
  return hdr;
}

Deno.test("TcpPacket view", async (t) => {
  await t.step("parses fixed fields and options of a Linux-style SYN", () => {
    const p = TcpPacket.parse(linuxSyn())!;
    assert.ok(p);
    assert.equal(p.srcPort, 40000);
    assert.equal(p.dstPort, 80);
    assert.equal(p.seqNumber, 0x01020304);
    assert.equal(p.headerLength, 40);
    assert.equal(p.flags, TCP_SYN);
    assert.equal(p.window, 64240);
    assert.equal(p.options.length, 20);
    assert.equal(p.payload.length, 0);
    const r = parseTcp(linuxSyn())!;
    assert.equal(r.mss, 1460);
    assert.equal(r.sackPermitted, true);
    assert.equal(r.hasTimestamp, true);
    assert.equal(r.tsVal, 0x1000);
    assert.equal(r.tsEcr, 0);
    assert.equal(r.windowScale, 7);
  });
  await t.step("rejects short buffers and bad data offsets", () => {
    assert.equal(TcpPacket.parse(new Uint8Array(19)), null);
    const b = linuxSyn();
    b[12] = 0x40; // 16-byte header
    assert.equal(TcpPacket.parse(b), null);
    b[12] = 0xf0; // 60 bytes > 40 available
    assert.equal(TcpPacket.parse(b), null);
    assert.equal(parseTcp(b), null);
  });
});

Deno.test("TCP options", async (t) => {
  const parse = (bytes: number[]) => {
    const r = new TcpRepr();
    return parseTcpOptions(new Uint8Array(bytes), r) ? r : null;
  };
  await t.step("NOP and EOL; bytes after EOL ignored", () => {
    const r = parse([1, 1, 2, 4, 0x02, 0x18, 0, 99, 99])!;
    assert.equal(r.mss, 536);
  });
  await t.step("SACK blocks", () => {
    const r = parse([1, 1, 5, 18, 0, 0, 0, 10, 0, 0, 0, 20, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 5])!;
    assert.equal(r.sackCount, 2);
    assert.deepEqual([...r.sackBlocks.subarray(0, 4)], [10, 20, 0xfffffff0, 5]);
  });
  await t.step("unknown option skipped", () => {
    const r = parse([30, 4, 0, 0, 3, 3, 14])!;
    assert.equal(r.windowScale, 14);
  });
  await t.step("malformed options are refused", () => {
    assert.equal(parse([2, 4, 5]), null, "runs past end");
    assert.equal(parse([2]), null, "no length byte");
    assert.equal(parse([30, 1, 0, 0]), null, "length below 2");
    assert.equal(parse([2, 3, 5]), null, "MSS of length 3");
    assert.equal(parse([3, 4, 5, 0]), null, "wscale of length 4");
    assert.equal(parse([4, 3, 0]), null, "SACK-perm of length 3");
    assert.equal(parse([8, 8, 0, 0, 0, 0, 0, 0]), null, "timestamp of length 8");
    assert.equal(parse([5, 7, 0, 0, 0, 0, 0]), null, "SACK of length 7");
    assert.equal(parse([5, 2]), null, "SACK with no blocks");
  });
});

Deno.test("TcpRepr emit/parse round trip", async (t) => {
  const cases: [string, (r: TcpRepr) => void][] = [
    ["no options", () => {}],
    ["MSS", (r) => (r.mss = 1380)],
    ["wscale", (r) => (r.windowScale = 7)],
    ["SACK-permitted alone", (r) => (r.sackPermitted = true)],
    ["timestamps", (r) => {
      r.hasTimestamp = true;
      r.tsVal = 0xdeadbeef;
      r.tsEcr = 7;
    }],
    ["all SYN options", (r) => {
      r.mss = 1460;
      r.windowScale = 14;
      r.sackPermitted = true;
      r.hasTimestamp = true;
      r.tsVal = 1;
    }],
    ["TS + 3 SACK blocks", (r) => {
      r.hasTimestamp = true;
      r.sackCount = 3;
      r.sackBlocks.set([1, 2, 3, 4, 0xffffffff, 9]);
    }],
    ["4 SACK blocks", (r) => {
      r.sackCount = 4;
      r.sackBlocks.set([1, 2, 3, 4, 5, 6, 7, 8]);
    }],
  ];
  for (const [name, set] of cases) {
    await t.step(name, () => {
      const r = new TcpRepr();
      r.srcPort = 1234;
      r.dstPort = 443;
      r.seq = 0xfffffffe;
      r.ack = 0x80000000;
      r.flags = TCP_ACK | TCP_PSH | TCP_FIN;
      r.window = 65535;
      r.payload = new Uint8Array([1, 2, 3]);
      set(r);
      const bytes = emitTcp(r, SRC, DST);
      const p = TcpPacket.parse(bytes)!;
      assert.ok(p.verifyChecksum(SRC, DST));
      assert.equal(p.headerLength % 4, 0);
      const back = parseTcp(bytes)!;
      assert.ok(back);
      for (
        const k of [
          "srcPort",
          "dstPort",
          "seq",
          "ack",
          "flags",
          "window",
          "mss",
          "windowScale",
          "sackPermitted",
          "hasTimestamp",
          "tsVal",
          "tsEcr",
          "sackCount",
        ] as const
      ) {
        assert.equal(back[k], r[k], k);
      }
      assert.deepEqual(back.sackBlocks, r.sackBlocks);
      assert.deepEqual(back.payload, r.payload);
      assert.equal(back.segmentLength, 4);
    });
  }
  await t.step("too many options throw RangeError", () => {
    const r = new TcpRepr();
    r.mss = 1;
    r.windowScale = 1;
    r.hasTimestamp = true;
    r.sackCount = 4;
    assert.throws(() => emitTcp(r, SRC, DST), RangeError);
  });
  await t.step("checksum over IPv6 pseudo-header", () => {
    const r = new TcpRepr();
    r.flags = TCP_SYN;
    const s6 = new Uint8Array(16).fill(1), d6 = new Uint8Array(16).fill(2);
    const p = TcpPacket.parse(emitTcp(r, s6, d6))!;
    assert.ok(p.verifyChecksum(s6, d6));
    assert.ok(!p.verifyChecksum(s6, s6));
  });
});
