import assert from "node:assert/strict";
import {
  formatHostPort,
  interfaceNameOf,
  parseCliArgs,
  parseHostPort,
  UsageError,
  validatePeerName,
} from "./args.ts";

Deno.test("parseCliArgs", async (t) => {
  await t.step("defaults: serve wg.conf in forward mode", () => {
    const a = parseCliArgs([]);
    assert.equal(a.command, "serve");
    assert.equal(a.config, "wg.conf");
    assert.equal(a.mode, "forward");
    assert.equal(a.logLevel, "info");
    assert.equal(a.logFormat, "text");
    assert.equal(a.connectTimeoutMs, 10_000);
    assert.equal(a.qr, true);
  });

  await t.step("upstream and domain flags", () => {
    const a = parseCliArgs([
      "--upstream",
      "socks5://192.0.2.9:1080",
      "--upstream-udp",
      "direct",
      "--deny-domain",
      "*.ads.example",
      "--deny-domain=tracker.test",
      "--allow-domain",
      "ok.ads.example",
      "--dns-block",
      "zero",
      "--no-sniff",
    ]);
    assert.equal(a.upstream, "socks5://192.0.2.9:1080");
    assert.equal(a.upstreamUdp, "direct");
    assert.deepEqual(a.denyDomains, ["*.ads.example", "tracker.test"]);
    assert.deepEqual(a.allowDomains, ["ok.ads.example"]);
    assert.equal(a.dnsBlock, "zero");
    assert.equal(a.sniff, false);
    const d = parseCliArgs([]);
    assert.equal(d.upstreamUdp, "refuse");
    assert.equal(d.dnsBlock, "nxdomain");
    assert.equal(d.sniff, true);
    assert.throws(() => parseCliArgs(["--upstream-udp", "maybe"]), UsageError);
    assert.throws(() => parseCliArgs(["--dns-block", "drop"]), UsageError);
  });

  await t.step("security flags: rules keep their order across --allow and --deny", () => {
    const a = parseCliArgs([
      "--allow",
      "203.0.113.0/24:443",
      "--deny",
      "0.0.0.0/0",
      "--allow=[2001:db8::/32]:80,8000-8100",
      "--deny",
      "::/0",
      "--deny-private",
      "--refuse-with",
      "icmp",
      "--syn-ack",
      "immediate",
      "--tcp-idle-timeout",
      "600",
      "--pcap-max-size",
      "50M",
    ]);
    assert.deepEqual(a.rules, [
      { action: "allow", target: "203.0.113.0/24:443" },
      { action: "deny", target: "0.0.0.0/0" },
      { action: "allow", target: "[2001:db8::/32]:80,8000-8100" },
      { action: "deny", target: "::/0" },
    ]);
    assert.equal(a.denyPrivate, true);
    assert.equal(a.refuseWith, "icmp");
    assert.equal(a.synAck, "immediate");
    assert.equal(a.tcpIdleTimeoutMs, 600_000);
    assert.equal(a.pcapMaxBytes, 50 * 1024 * 1024);
    const d = parseCliArgs([]);
    assert.deepEqual(d.rules, []);
    assert.equal(d.denyPrivate, false);
    assert.equal(d.refuseWith, "rst");
    assert.equal(d.synAck, "after-dial");
    assert.equal(d.tcpIdleTimeoutMs, 7_440_000);
    assert.equal(d.pcapMaxBytes, 100 * 1024 * 1024);
    for (
      const bad of [
        ["--allow", "example.com"],
        ["--refuse-with", "drop"],
        ["--syn-ack", "early"],
        ["--tcp-idle-timeout", "-1"],
        ["--pcap-max-size", "lots"],
      ]
    ) {
      assert.throws(() => parseCliArgs(bad), UsageError, bad.join(" "));
    }
  });

  await t.step("show-client NAME [CONFIG]", () => {
    const a = parseCliArgs(["show-client", "phone", "srv.conf"]);
    assert.equal(a.command, "show-client");
    assert.equal(a.peerName, "phone");
    assert.equal(a.config, "srv.conf");
    assert.throws(() => parseCliArgs(["show-client"]), /needs a NAME/);
  });

  await t.step("all serve flags", () => {
    const a = parseCliArgs([
      "server.conf",
      "--mode=echo",
      "-l",
      "[::1]:5000",
      "--endpoint",
      "vpn.example.com",
      "--pcap",
      "x.pcap",
      "--log-level",
      "debug",
      "--log-format",
      "json",
      "--dns-upstream",
      "192.0.2.53:5353",
      "--address",
      "198.18.0.1/24, fd00:1::1/64",
      "--connect-timeout",
      "2.5",
      "--tcp-cc",
      "newreno",
      "--no-qr",
    ]);
    assert.equal(a.config, "server.conf");
    assert.equal(a.mode, "echo");
    assert.deepEqual(a.listen, { hostname: "::1", port: 5000 });
    assert.deepEqual(a.endpoint, { hostname: "vpn.example.com" });
    assert.equal(a.pcap, "x.pcap");
    assert.equal(a.logLevel, "debug");
    assert.equal(a.logFormat, "json");
    assert.deepEqual(a.dnsUpstream, { hostname: "192.0.2.53", port: 5353 });
    assert.deepEqual(a.addresses, ["198.18.0.1/24", "fd00:1::1/64"]);
    assert.equal(a.connectTimeoutMs, 2500);
    assert.equal(a.tcpCc, "newreno");
    assert.equal(a.qr, false);
  });

  await t.step("subcommands", () => {
    assert.equal(parseCliArgs(["genkey"]).command, "genkey");
    assert.equal(parseCliArgs(["genpsk"]).command, "genpsk");
    assert.equal(parseCliArgs(["pubkey"]).command, "pubkey");
    const add = parseCliArgs(["add-peer", "phone", "s.conf", "-e", "192.0.2.1:1234"]);
    assert.equal(add.command, "add-peer");
    assert.equal(add.peerName, "phone");
    assert.equal(add.config, "s.conf");
    assert.deepEqual(add.endpoint, { hostname: "192.0.2.1", port: 1234 });
    assert.equal(parseCliArgs(["--help"]).command, "help");
    assert.equal(parseCliArgs(["-V"]).command, "version");
  });

  const errors: [string[], RegExp][] = [
    [["--foo"], /^Unknown flag --foo/],
    [["-x"], /^Unknown flag -x/],
    [["--mode"], /^Flag --mode needs a value/],
    [["--mode", "proxy"], /--mode must be forward or echo/],
    [["--listen", "0.0.0.0"], /--listen needs a port/],
    [["--listen", "0.0.0.0:70000"], /port must be a number from 0 to 65535/],
    [["--log-level", "loud"], /--log-level must be/],
    [["--log-format", "xml"], /--log-format must be text or json/],
    [["a.conf", "b.conf"], /Unexpected argument "b.conf"/],
    [["genkey", "x"], /genkey takes no arguments/],
    [["add-peer"], /add-peer needs a NAME/],
    [["add-peer", "../evil"], /Peer name "..\/evil" is not allowed/],
    [["--connect-timeout", "soon"], /--connect-timeout must be/],
    [["--tcp-cc", "vegas"], /--tcp-cc must be one of cubic, newreno, bbr/],
    [["--endpoint", ":51820"], /--endpoint needs a host/],
    [["--no-qr=yes"], /does not take an argument/],
  ];
  for (const [args, message] of errors) {
    await t.step(`rejects ${args.join(" ")}`, () => {
      assert.throws(() => parseCliArgs(args), (e: unknown) => {
        assert.ok(e instanceof UsageError);
        assert.equal(e.exitCode, 2);
        assert.match(e.message, message);
        assert.ok(!e.message.includes("\n"), "one line");
        return true;
      });
    });
  }
});

Deno.test("parseHostPort", async (t) => {
  const cases: [string, object][] = [
    ["192.0.2.1:51820", { hostname: "192.0.2.1", port: 51820 }],
    ["192.0.2.1", { hostname: "192.0.2.1" }],
    ["[2001:db8::1]:443", { hostname: "2001:db8::1", port: 443 }],
    ["[2001:db8::1]", { hostname: "2001:db8::1" }],
    ["2001:db8::1", { hostname: "2001:db8::1" }],
    [":51820", { port: 51820 }],
    ["51820", { port: 51820 }],
    ["vpn.example.com:1", { hostname: "vpn.example.com", port: 1 }],
  ];
  for (const [text, expected] of cases) {
    await t.step(text, () => assert.deepEqual(parseHostPort(text, "--x"), expected));
  }
  await t.step("errors", () => {
    assert.throws(() => parseHostPort("[2001:db8::1", "--x"), /missing \]/);
    assert.throws(() => parseHostPort("[192.0.2.1]:5", "--x"), /only for IPv6/);
    assert.throws(() => parseHostPort("host:port", "--x"), /port must be a number/);
    assert.throws(() => parseHostPort("", "--x"), /empty/);
  });
  await t.step("formatHostPort brackets IPv6", () => {
    assert.equal(formatHostPort("2001:db8::1", 5), "[2001:db8::1]:5");
    assert.equal(formatHostPort("192.0.2.1", 5), "192.0.2.1:5");
  });
  await t.step("validatePeerName", () => {
    assert.equal(validatePeerName("phone_2.b-c"), "phone_2.b-c");
    assert.throws(() => validatePeerName(".hidden"), UsageError);
    assert.throws(() => validatePeerName("a".repeat(33)), UsageError);
    assert.throws(() => validatePeerName("a/b"), UsageError);
  });
});

Deno.test("parseCliArgs: --interface and --no-uapi", async (t) => {
  await t.step("UAPI is on by default, --no-uapi turns it off", () => {
    assert.equal(parseCliArgs([]).uapi, true);
    assert.equal(parseCliArgs(["--no-uapi"]).uapi, false);
    assert.equal(parseCliArgs(["--interface", "wgs0"]).interface, "wgs0");
  });
  await t.step("bad names and contradictions are usage errors", () => {
    for (
      const bad of [["--interface", "a/b"], ["--interface", "x".repeat(16)], [
        "--interface",
        "..",
      ], ["--interface", "wg0", "--no-uapi"]]
    ) {
      assert.throws(() => parseCliArgs(bad), UsageError, bad.join(" "));
    }
  });
  await t.step("--metrics takes [HOST]:PORT", () => {
    assert.deepEqual(parseCliArgs(["--metrics", ":9586"]).metrics, { port: 9586 });
    assert.deepEqual(parseCliArgs(["--metrics", "[::1]:9586"]).metrics, {
      hostname: "::1",
      port: 9586,
    });
    assert.throws(() => parseCliArgs(["--metrics", "localhost"]), UsageError);
  });
  await t.step("the default name is the config's base name, as wg-quick derives it", () => {
    assert.equal(interfaceNameOf("wg.conf"), "wg");
    assert.equal(interfaceNameOf("/etc/wgstack/wg0.conf"), "wg0");
    assert.equal(interfaceNameOf("server"), "server");
    assert.equal(interfaceNameOf("my server.conf"), undefined);
    assert.equal(interfaceNameOf("a-very-long-interface-name.conf"), undefined);
  });
});

Deno.test("parseCliArgs: --web and --web-token", async (t) => {
  await t.step("off by default; PORT alone leaves the host to the default (127.0.0.1)", () => {
    assert.equal(parseCliArgs([]).web, undefined);
    assert.deepEqual(parseCliArgs(["--web", "8080"]).web, { port: 8080 });
    assert.deepEqual(parseCliArgs(["--web", "0.0.0.0:8080"]).web, {
      hostname: "0.0.0.0",
      port: 8080,
    });
    const token = "abcdefghijklmnop-_.~";
    assert.equal(parseCliArgs(["--web", ":9", "--web-token", token]).webToken, token);
  });
  await t.step("errors", () => {
    for (
      const args of [
        ["--web", "localhost"],
        ["--web-token", "abcdefghijklmnopq"],
        ["--web", "8080", "--web-token", "short"],
        ["--web", "8080", "--web-token", "has spaces in the token"],
        ["--web", "8080", "--web-token", "<script>alert(1)</script>"],
      ]
    ) {
      assert.throws(() => parseCliArgs(args), UsageError, args.join(" "));
    }
  });
});
