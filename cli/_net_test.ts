import assert from "node:assert/strict";
import { canonicalIp, ipVersionOf, pickEndpointAddress, subnetMatcher } from "./_net.ts";
import { parseResolvConf, systemResolver } from "./_dns.ts";

Deno.test("endpoint detection", async (t) => {
  await t.step("prefers a real interface's IPv4, skips loopback and link-local", () => {
    assert.equal(
      pickEndpointAddress([
        { name: "lo", family: "IPv4", address: "127.0.0.1" },
        { name: "lo", family: "IPv6", address: "::1" },
        { name: "eth0", family: "IPv6", address: "fe80::1" },
        { name: "docker0", family: "IPv4", address: "172.17.0.1" },
        { name: "eth0", family: "IPv6", address: "2001:db8::10" },
        { name: "eth0", family: "IPv4", address: "192.168.1.20" },
      ]),
      "192.168.1.20",
    );
  });
  await t.step("a public IPv4 beats a private one", () => {
    assert.equal(
      pickEndpointAddress([
        { name: "eth0", family: "IPv4", address: "10.1.2.3" },
        { name: "eth1", family: "IPv4", address: "198.51.100.7" },
      ]),
      "198.51.100.7",
    );
  });
  await t.step("IPv6 only, or nothing", () => {
    assert.equal(
      pickEndpointAddress([
        { name: "lo", family: "IPv4", address: "127.0.0.1" },
        { name: "eth0", family: "IPv6", address: "2001:db8::10" },
      ]),
      "2001:db8::10",
    );
    assert.equal(
      pickEndpointAddress([{ name: "lo", family: "IPv4", address: "127.0.0.1" }]),
      undefined,
    );
  });
  await t.step("subnetMatcher", () => {
    const inside = subnetMatcher(["10.44.0.1/24", "fd00:44::1/64", "192.0.2.128/25"]);
    assert.equal(inside("10.44.0.200"), true);
    assert.equal(inside("10.44.1.1"), false);
    assert.equal(inside("::ffff:10.44.0.9"), true);
    assert.equal(inside("fd00:44::abcd"), true);
    assert.equal(inside("fd00:45::1"), false);
    assert.equal(inside("192.0.2.129"), true);
    assert.equal(inside("192.0.2.127"), false);
    assert.equal(inside("example.com"), false);
    assert.equal(subnetMatcher([])("10.0.0.1"), false);
    assert.throws(() => subnetMatcher(["10.0.0.0/33"]), RangeError);
  });
  await t.step("address helpers", () => {
    assert.equal(canonicalIp("2001:DB8:0:0::1"), "2001:db8::1");
    assert.equal(canonicalIp("::ffff:192.0.2.1"), "192.0.2.1");
    assert.equal(canonicalIp("example.com"), "example.com");
    assert.equal(ipVersionOf("192.0.2.1"), 4);
    assert.equal(ipVersionOf("fe80::1%eth0"), 6);
    assert.equal(ipVersionOf("example.com"), undefined);
  });
});

Deno.test("resolv.conf", async (t) => {
  await t.step("first nameserver, comments skipped", () => {
    assert.equal(
      parseResolvConf(
        "# nameserver 192.0.2.9\n; x\nsearch lan\nnameserver 192.0.2.53 # main\nnameserver 192.0.2.54\n",
      ),
      "192.0.2.53",
    );
    assert.equal(parseResolvConf("nameserver fe80::1%eth0"), "fe80::1%eth0");
    assert.equal(parseResolvConf("search lan\n"), undefined);
  });
  await t.step("systemResolver reads a file, port 53", async () => {
    const path = await Deno.makeTempFile();
    try {
      await Deno.writeTextFile(path, "nameserver 192.0.2.53\n");
      assert.deepEqual(await systemResolver(path), { hostname: "192.0.2.53", port: 53 });
      assert.equal(await systemResolver(path + ".missing"), undefined);
    } finally {
      await Deno.remove(path);
    }
  });
});
