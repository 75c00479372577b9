import assert from "node:assert/strict";
import { isIP } from "node:net";
import { formatIp, parseIp, parseIpPrefix } from "./ip.ts";
import { xorshift32 } from "../tests/_prng.ts";

function bytes(...values: number[]): Uint8Array {
  return new Uint8Array(values);
}

function v6(...groups: number[]): Uint8Array {
  assert.equal(groups.length, 8);
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

Deno.test("parseIp", async (t) => {
  await t.step("IPv4 dotted quads", () => {
    assert.deepEqual(parseIp("0.0.0.0"), bytes(0, 0, 0, 0));
    assert.deepEqual(parseIp("10.0.0.1"), bytes(10, 0, 0, 1));
    assert.deepEqual(parseIp("255.255.255.255"), bytes(255, 255, 255, 255));
    assert.deepEqual(parseIp("192.168.100.9"), bytes(192, 168, 100, 9));
  });

  await t.step("rejects malformed IPv4 like inet_pton", () => {
    for (
      const text of [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.2.3.-1",
        "01.2.3.4",
        "1.2.3.04",
        "1..3.4",
        "1.2.3.4 ",
        " 1.2.3.4",
        "1.2.3.4/32",
        "0x1.2.3.4",
        "1.2.3.1000",
        "example.com",
        "1.2.3.a",
      ]
    ) {
      assert.equal(parseIp(text), null, `should reject ${JSON.stringify(text)}`);
    }
  });

  await t.step("IPv6 full, compressed and mixed forms (RFC 4291 §2.2)", () => {
    assert.deepEqual(parseIp("::"), new Uint8Array(16));
    assert.deepEqual(parseIp("::1"), v6(0, 0, 0, 0, 0, 0, 0, 1));
    assert.deepEqual(parseIp("1::"), v6(1, 0, 0, 0, 0, 0, 0, 0));
    assert.deepEqual(
      parseIp("2001:DB8:0:0:8:800:200C:417A"),
      v6(0x2001, 0xdb8, 0, 0, 8, 0x800, 0x200c, 0x417a),
    );
    assert.deepEqual(
      parseIp("2001:db8::8:800:200c:417a"),
      v6(0x2001, 0xdb8, 0, 0, 8, 0x800, 0x200c, 0x417a),
    );
    assert.deepEqual(parseIp("ff01::101"), v6(0xff01, 0, 0, 0, 0, 0, 0, 0x101));
    assert.deepEqual(parseIp("fd00::"), v6(0xfd00, 0, 0, 0, 0, 0, 0, 0));
    assert.deepEqual(parseIp("1:2:3:4:5:6:7::"), v6(1, 2, 3, 4, 5, 6, 7, 0));
    assert.deepEqual(parseIp("::2:3:4:5:6:7:8"), v6(0, 2, 3, 4, 5, 6, 7, 8));
    assert.deepEqual(parseIp("0:0:0:0:0:0:13.1.68.3"), v6(0, 0, 0, 0, 0, 0, 0x0d01, 0x4403));
    assert.deepEqual(parseIp("::13.1.68.3"), v6(0, 0, 0, 0, 0, 0, 0x0d01, 0x4403));
    assert.deepEqual(
      parseIp("::FFFF:129.144.52.38"),
      v6(0, 0, 0, 0, 0, 0xffff, 0x8190, 0x3426),
    );
    assert.deepEqual(parseIp("1:2:3:4:5:6:1.2.3.4"), v6(1, 2, 3, 4, 5, 6, 0x0102, 0x0304));
    assert.deepEqual(parseIp("1::1.2.3.4"), v6(1, 0, 0, 0, 0, 0, 0x0102, 0x0304));
  });

  await t.step("rejects malformed IPv6", () => {
    for (
      const text of [
        ":",
        ":::",
        "1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7:8::",
        "::1:2:3:4:5:6:7:8",
        "1::2::3",
        "12345::",
        "g::",
        ":1::",
        "1::2:",
        "1:2:3:4:5:6:7:",
        ":2:3:4:5:6:7:8",
        "1.2.3.4::",
        "::1.2.3.4:1",
        "1:2:3:4:5:6:7:1.2.3.4",
        "::1.2.3",
        "::01.2.3.4",
        "fe80::1%eth0",
        "[::1]",
        "::1/128",
        " ::1",
      ]
    ) {
      assert.equal(parseIp(text), null, `should reject ${JSON.stringify(text)}`);
    }
  });

  await t.step("agrees with node:net isIP on random near-addresses", () => {
    const next = xorshift32(0x1f2e3d4c);
    const hexDigits = "0123456789abcdefABCDEFg";
    const piece = (): string => {
      const kind = next() % 10;
      if (kind === 0) return "";
      if (kind === 1) {
        const octets = 3 + (next() % 3 === 0 ? next() % 3 : 1);
        const parts = [];
        for (let i = 0; i < octets; i++) {
          parts.push(String(next() % (next() % 4 === 0 ? 300 : 256)));
        }
        if (next() % 8 === 0) parts[0] = "0" + parts[0];
        return parts.join(".");
      }
      const length = next() % 6;
      let text = "";
      for (let i = 0; i < length; i++) text += hexDigits[next() % hexDigits.length];
      return text;
    };
    let valid4 = 0;
    let valid6 = 0;
    for (let n = 0; n < 50_000; n++) {
      const count = 1 + (next() % 10);
      const pieces = [];
      for (let i = 0; i < count; i++) pieces.push(piece());
      const text = pieces.join(":");
      const ours = parseIp(text);
      const expected = isIP(text);
      assert.equal(ours === null ? 0 : ours.length === 4 ? 4 : 6, expected, text);
      if (expected === 4) valid4++;
      if (expected === 6) valid6++;
    }
    // The generator must produce enough valid addresses to mean something.
    assert.ok(valid4 > 200 && valid6 > 1000, `valid4 ${valid4}, valid6 ${valid6}`);
  });
});

Deno.test("formatIp", async (t) => {
  await t.step("IPv4", () => {
    assert.equal(formatIp(bytes(0, 0, 0, 0)), "0.0.0.0");
    assert.equal(formatIp(bytes(192, 0, 2, 255)), "192.0.2.255");
  });

  await t.step("IPv6 per RFC 5952 §4", () => {
    assert.equal(formatIp(new Uint8Array(16)), "::");
    assert.equal(formatIp(v6(0, 0, 0, 0, 0, 0, 0, 1)), "::1");
    assert.equal(formatIp(v6(1, 0, 0, 0, 0, 0, 0, 0)), "1::");
    // §4.1 leading zeros dropped, §4.3 lowercase.
    assert.equal(formatIp(v6(0x2001, 0xdb8, 0, 0, 0, 0, 2, 1)), "2001:db8::2:1");
    assert.equal(formatIp(v6(0x2001, 0xdb8, 0xabcd, 0, 0, 0, 0, 1)), "2001:db8:abcd::1");
    // §4.2.2: a single zero group is not compressed.
    assert.equal(formatIp(v6(0x2001, 0xdb8, 0, 1, 1, 1, 1, 1)), "2001:db8:0:1:1:1:1:1");
    // §4.2.3: the longest run, and the first one on a tie.
    assert.equal(formatIp(v6(0x2001, 0, 0, 1, 0, 0, 0, 1)), "2001:0:0:1::1");
    assert.equal(formatIp(v6(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1)), "2001:db8::1:0:0:1");
    assert.equal(formatIp(v6(1, 2, 3, 4, 5, 6, 7, 8)), "1:2:3:4:5:6:7:8");
    assert.equal(formatIp(v6(0xfd00, 0, 0, 0, 0, 0, 0, 0)), "fd00::");
    // §5: IPv4-mapped addresses keep a dotted tail.
    assert.equal(formatIp(v6(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201)), "::ffff:192.0.2.1");
  });

  await t.step("rejects other lengths", () => {
    assert.throws(() => formatIp(new Uint8Array(5)), {
      name: "RangeError",
      message: "An IP address has 4 or 16 bytes, not 5",
    });
  });

  await t.step("random addresses round-trip through text", () => {
    const next = xorshift32(7);
    for (let n = 0; n < 20_000; n++) {
      const address = new Uint8Array(n % 3 === 0 ? 4 : 16);
      for (let i = 0; i < address.length; i++) {
        // Mostly zero bytes so that runs of zero groups are common.
        address[i] = next() % 3 === 0 ? next() & 0xff : 0;
      }
      const text = formatIp(address);
      assert.deepEqual(parseIp(text), address, text);
      assert.equal(formatIp(parseIp(text)!), text);
    }
  });
});

Deno.test("parseIpPrefix", async (t) => {
  await t.step("keeps host bits and defaults to a full prefix", () => {
    assert.deepEqual(parseIpPrefix("10.0.0.1/24"), { address: bytes(10, 0, 0, 1), prefix: 24 });
    assert.deepEqual(parseIpPrefix("10.0.0.1"), { address: bytes(10, 0, 0, 1), prefix: 32 });
    assert.deepEqual(parseIpPrefix("::/0"), { address: new Uint8Array(16), prefix: 0 });
    assert.equal(parseIpPrefix("fd00::1")?.prefix, 128);
    assert.equal(parseIpPrefix("fd00::1/128")?.prefix, 128);
  });

  await t.step("rejects bad prefixes", () => {
    for (
      const text of [
        "10.0.0.1/33",
        "fd00::/129",
        "10.0.0.1/",
        "10.0.0.1/-1",
        "10.0.0.1/+1",
        "10.0.0.1/ 8",
        "10.0.0.1/8/8",
        "10.0.0.1/0x8",
        "10.0.0.1/1000",
        "/8",
        "host/8",
      ]
    ) {
      assert.equal(parseIpPrefix(text), null, text);
    }
  });
});
