import assert from "node:assert/strict";
import {
  DestinationPolicy,
  embeddedIpv4,
  parsePolicyRule,
  type PolicyInterface,
  type RefusalReason,
} from "./policy.ts";
import { formatIp, parseIp } from "@wgstack/wireguard";

const INTERFACES: PolicyInterface[] = [
  { family: "IPv4", address: "127.0.0.1", cidr: "127.0.0.1/8" },
  { family: "IPv4", address: "192.0.2.10", cidr: "192.0.2.10/24" },
  { family: "IPv4", address: "10.0.0.5", cidr: "10.0.0.5/16" },
  { family: "IPv6", address: "2001:db8:1::10", cidr: "2001:db8:1::10/64" },
  { family: "IPv6", address: "fe80::1234%eth0", cidr: "fe80::1234/64" },
];

function policy(options: ConstructorParameters<typeof DestinationPolicy>[0] = {}) {
  return new DestinationPolicy({ interfaces: () => INTERFACES, refreshMs: 0, ...options });
}

type Row = [address: string, expected: RefusalReason | undefined];

/** Every address form of issue 9, with the default policy. */
const DEFAULT_TABLE: Row[] = [
  // loopback, unspecified, "this network"
  ["127.0.0.1", "own-address"], // lo's address is one of the server's own
  ["127.0.0.3", "loopback"],
  ["127.255.255.254", "loopback"],
  ["::1", "loopback"],
  ["::ffff:127.0.0.3", "loopback"],
  ["::ffff:7f00:3", "loopback"],
  ["::127.0.0.2", "loopback"], // IPv4-compatible
  ["64:ff9b::127.0.0.3", "loopback"], // NAT64 well-known prefix
  ["64:ff9b::7f00:3", "loopback"],
  ["0.0.0.0", "unspecified"],
  ["::", "unspecified"],
  ["::ffff:0.0.0.0", "unspecified"],
  ["0.1.2.3", "this-network"],
  // the server's own addresses (from its interfaces) and their broadcast
  ["192.0.2.10", "own-address"],
  ["::ffff:192.0.2.10", "own-address"],
  ["::192.0.2.10", "own-address"],
  ["64:ff9b::c000:20a", "own-address"],
  ["64:ff9b:1::192.0.2.10", "own-address"], // local-use NAT64, /96 layout
  ["10.0.0.5", "own-address"],
  ["2001:db8:1::10", "own-address"],
  ["2001:DB8:1:0::10", "own-address"],
  ["fe80::1234", "own-address"],
  ["192.0.2.255", "broadcast"],
  ["::ffff:192.0.2.255", "broadcast"],
  ["10.0.255.255", "broadcast"],
  ["255.255.255.255", "broadcast"],
  ["64:ff9b::ffff:ffff", "broadcast"],
  // link-local and metadata
  ["169.254.1.1", "link-local"],
  ["fe80::1", "link-local"],
  ["fe80::1%eth0", "link-local"],
  ["febf::1", "link-local"],
  ["169.254.169.254", "metadata"],
  ["::ffff:169.254.169.254", "metadata"],
  ["::ffff:a9fe:a9fe", "metadata"],
  ["::169.254.169.254", "metadata"],
  ["64:ff9b::169.254.169.254", "metadata"],
  ["64:ff9b::a9fe:a9fe", "metadata"],
  ["64:ff9b:1:a9fe:a9:fe00::", "metadata"], // local-use NAT64, /48 layout
  ["64:ff9b:1::a9fe:a9fe", "metadata"],
  ["169.254.170.2", "metadata"],
  ["fd00:ec2::254", "metadata"],
  // multicast
  ["224.0.0.1", "multicast"],
  ["239.255.255.250", "multicast"],
  ["::ffff:224.0.0.251", "multicast"],
  ["ff02::1", "multicast"],
  ["ff05::1:3", "multicast"],
  // private: allowed by default
  ["10.1.2.3", undefined],
  ["172.16.0.1", undefined],
  ["192.168.1.1", undefined],
  ["100.64.0.1", undefined],
  ["fd12:3456::1", undefined],
  ["::ffff:10.1.2.3", undefined],
  // public
  ["198.51.100.7", undefined],
  ["::ffff:198.51.100.7", undefined],
  ["64:ff9b::198.51.100.7", undefined],
  ["2001:db8::7", undefined],
  ["192.0.2.11", undefined], // a neighbour on the server's LAN
  ["192.0.2.0", undefined],
  ["64:ff9b:2::1", undefined], // not a NAT64 prefix
  // not an address
  ["example.com", "malformed"],
];

Deno.test("destination policy", async (t) => {
  await t.step("default: every address form", () => {
    const p = policy();
    const wrong: string[] = [];
    for (const [address, expected] of DEFAULT_TABLE) {
      const got = p.check(address, 80);
      if (got !== expected) wrong.push(`${address}: ${got} (expected ${expected})`);
    }
    assert.deepEqual(wrong, []);
    p.close();
  });

  await t.step("bytes are accepted as well as text", () => {
    const p = policy();
    assert.equal(p.check(parseIp("::ffff:169.254.169.254")!, 80), "metadata");
    assert.equal(p.check(new Uint8Array([198, 51, 100, 1]), 80), undefined);
    assert.equal(p.check(new Uint8Array(5), 80), "malformed");
  });

  await t.step("--deny-private refuses RFC 1918, CGNAT and ULA in every form", () => {
    const p = policy({ denyPrivate: true });
    const rows: Row[] = [
      ["10.1.2.3", "private"],
      ["172.31.255.1", "private"],
      ["192.168.1.1", "private"],
      ["100.127.0.1", "private"],
      ["fc00::1", "private"],
      ["fd12:3456::1", "private"],
      ["::ffff:192.168.1.1", "private"],
      ["64:ff9b::10.0.0.1", "private"],
      ["fd00:ec2::254", "metadata"], // more specific than fc00::/7
      ["10.0.0.5", "own-address"],
      ["172.32.0.1", undefined],
      ["100.128.0.1", undefined],
      ["198.51.100.7", undefined],
    ];
    for (const [address, expected] of rows) assert.equal(p.check(address, 80), expected, address);
  });

  await t.step("tunnel subnets are refused", () => {
    const p = policy({ tunnelSubnets: ["10.44.0.1/24", "fd00:44::1/64"] });
    assert.equal(p.check("10.44.0.7", 80), "tunnel");
    assert.equal(p.check("::ffff:10.44.0.7", 80), "tunnel");
    assert.equal(p.check("fd00:44::9", 80), "tunnel");
    assert.equal(p.check("10.45.0.7", 80), undefined);
  });

  await t.step("ordered rules: first match wins, ports narrow a rule", () => {
    const p = policy({
      rules: [
        parsePolicyRule("allow", "198.51.100.7"),
        parsePolicyRule("deny", "198.51.100.0/24"),
        parsePolicyRule("deny", "203.0.113.0/24:22,6000-6010"),
        parsePolicyRule("deny", "[2001:db8::/32]:25"),
      ],
    });
    assert.equal(p.check("198.51.100.7", 80), undefined);
    assert.equal(p.check("198.51.100.8", 80), "rule");
    assert.equal(p.check("::ffff:198.51.100.8", 80), "rule");
    assert.equal(p.check("64:ff9b::198.51.100.8", 80), "rule");
    assert.equal(p.check("203.0.113.1", 22), "rule");
    assert.equal(p.check("203.0.113.1", 6005), "rule");
    assert.equal(p.check("203.0.113.1", 6011), undefined);
    assert.equal(p.check("2001:db8::1", 25), "rule");
    assert.equal(p.check("2001:db8::1", 443), undefined);
  });

  await t.step("an allow-list: allow some, deny the rest", () => {
    const p = policy({
      rules: [
        parsePolicyRule("allow", "203.0.113.0/24:443"),
        parsePolicyRule("deny", "0.0.0.0/0"),
        parsePolicyRule("deny", "::/0"),
      ],
    });
    assert.equal(p.check("203.0.113.9", 443), undefined);
    assert.equal(p.check("203.0.113.9", 80), "rule");
    assert.equal(p.check("2001:db8::1", 443), "rule");
    assert.equal(p.check("::ffff:203.0.113.9", 443), undefined);
  });

  await t.step("only a host rule lifts a built-in refusal", () => {
    const p = policy({
      rules: [
        parsePolicyRule("allow", "127.0.0.1:8080"),
        parsePolicyRule("allow", "10.0.0.0/8"),
        parsePolicyRule("allow", "0.0.0.0/0"),
      ],
    });
    assert.equal(p.check("127.0.0.1", 8080), undefined);
    assert.equal(p.check("::ffff:127.0.0.1", 8080), undefined);
    assert.equal(p.check("127.0.0.1", 22), "own-address");
    assert.equal(p.check("127.0.0.2", 8080), "loopback");
    assert.equal(p.check("10.0.0.5", 80), "own-address");
    assert.equal(p.check("169.254.169.254", 80), "metadata");
    assert.equal(p.check("10.9.9.9", 80), undefined);
  });

  await t.step("rule syntax errors are RangeErrors", () => {
    for (const bad of ["10.0.0.0/33", "10.0.0.0/8:70000", "10.0.0.0/8:", "x", "10.0.0.0/8:9-1"]) {
      assert.throws(() => parsePolicyRule("deny", bad), RangeError, bad);
    }
    assert.deepEqual(parsePolicyRule("deny", "10.0.0.0/8:22,8000-8999"), {
      action: "deny",
      cidr: "10.0.0.0/8",
      ports: [[22, 22], [8000, 8999]],
    });
    assert.deepEqual(parsePolicyRule("allow", "fd00::/8"), { action: "allow", cidr: "fd00::/8" });
    assert.throws(
      () => new DestinationPolicy({ rules: [{ action: "permit" as "allow", cidr: "::/0" }] }),
      RangeError,
    );
  });

  await t.step("refresh picks up new interface addresses and forgets old ones", () => {
    let list: PolicyInterface[] = [{
      family: "IPv4",
      address: "192.0.2.10",
      cidr: "192.0.2.10/24",
    }];
    const p = new DestinationPolicy({ interfaces: () => list, refreshMs: 0 });
    assert.equal(p.check("192.0.2.10", 80), "own-address");
    list = [{ family: "IPv4", address: "198.51.100.20", cidr: "198.51.100.20/31" }];
    p.refresh();
    assert.equal(p.check("192.0.2.10", 80), undefined);
    assert.equal(p.check("198.51.100.20", 80), "own-address");
    assert.equal(p.check("198.51.100.21", 80), undefined); // /31 has no broadcast
    assert.deepEqual(p.ownAddresses(), ["198.51.100.20"]);
    const failing = new DestinationPolicy({
      interfaces: () => {
        throw new Error("no interfaces");
      },
      refreshMs: 0,
    });
    assert.equal(failing.check("127.0.0.1", 80), "loopback");
  });

  await t.step("the real interfaces: loopback is among them", () => {
    const p = new DestinationPolicy({ refreshMs: 0 });
    assert.ok(p.ownAddresses().includes("127.0.0.1"));
    assert.equal(p.check("127.0.0.1", 80), "own-address");
  });

  await t.step("counts outcomes by reason", () => {
    const p = policy();
    p.check("127.0.0.1", 1);
    p.check("127.0.0.2", 1);
    p.check("169.254.169.254", 1);
    p.check("198.51.100.1", 1);
    const s = p.stats();
    assert.equal(s.allowed, 1);
    assert.deepEqual(s.refused, { "own-address": 1, loopback: 1, metadata: 1 });
    assert.equal(s.ownAddresses, 8); // 5 addresses and 3 broadcasts (127/8, 192.0.2/24, 10.0/16)
  });

  await t.step("embeddedIpv4 reads every NAT64 layout", () => {
    const forms = embeddedIpv4(parseIp("64:ff9b:1:a9fe:a9:fe00::")!).map(formatIp);
    assert.deepEqual(forms, ["169.254.169.254", "254.169.254.0", "169.254.0.0"]);
    assert.deepEqual(embeddedIpv4(parseIp("64:ff9b:1::a9fe:a9fe")!).map(formatIp), [
      "169.254.169.254",
    ]);
    assert.deepEqual(embeddedIpv4(parseIp("2001:db8::1")!), []);
    assert.deepEqual(embeddedIpv4(parseIp("::1")!), []);
    assert.deepEqual(embeddedIpv4(new Uint8Array(4)), []);
  });
});
