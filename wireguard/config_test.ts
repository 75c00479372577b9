import assert from "node:assert/strict";
import { type Cidr, formatCidr, parseCidr } from "./allowed_ips.ts";
import {
  ConfigError,
  formatConfig,
  parseConfig,
  type WgConfig,
  type WgInterface,
  type WgPeer,
} from "./config.ts";
import { formatIp, parseIp } from "./ip.ts";
import { xorshift32 } from "../tests/_prng.ts";
import { requirement } from "../tests/_skip.ts";

/** A deterministic 32-byte key: bytes seed, seed+7, seed+14, … (mod 256). */
function key(seed: number): Uint8Array {
  return Uint8Array.from({ length: 32 }, (_, i) => (seed + 7 * i) & 0xff);
}

function b64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

const PRIVATE = b64(key(1));
const PEER_A = b64(key(2));
const PEER_B = b64(key(3));
const PEER_C = b64(key(4));
const PSK = b64(key(5));

function ip(text: string): Uint8Array {
  const address = parseIp(text);
  assert.ok(address, text);
  return address;
}

/** Parses and asserts the parse threw a ConfigError with exactly this message and line. */
function assertConfigError(
  text: string,
  message: string | RegExp,
  line: number | undefined,
  filename: string | null = "wg0.conf",
): void {
  try {
    parseConfig(text, filename === null ? {} : { filename });
  } catch (error) {
    assert.ok(error instanceof ConfigError, `not a ConfigError: ${error}`);
    assert.ok(error instanceof Error);
    assert.equal(error.name, "ConfigError");
    if (typeof message === "string") assert.equal(error.message, message);
    else assert.match(error.message, message);
    assert.equal(error.line, line);
    assert.equal(error.filename, filename ?? undefined);
    return;
  }
  assert.fail(`no error for:\n${text}`);
}

function roundTrip(config: WgConfig): void {
  const text = formatConfig(config);
  const again = parseConfig(text);
  assert.deepEqual(again.warnings, []);
  assert.deepEqual(again.config, config);
  assert.equal(formatConfig(again.config), text);
}

Deno.test("parseConfig: a full wg-quick file", async (t) => {
  const text = [
    "# wg0.conf: the server",
    "[Interface]",
    `PrivateKey = ${PRIVATE}   # keep secret`,
    "ListenPort = 51820",
    "FwMark = 0x1234",
    "Address = 10.0.0.1/24, fd00::1/64",
    "Address = 10.0.1.1",
    "DNS = 1.1.1.1, 2606:4700:4700::1111, example.com, corp.example.",
    "MTU = 1420",
    "Table = off",
    "PreUp = echo pre-up",
    "PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE",
    "PostUp = sysctl -w net.ipv4.ip_forward=1",
    "PreDown = echo pre-down",
    "PostDown = iptables -D FORWARD -i %i -j ACCEPT",
    "SaveConfig = false",
    "",
    "[Peer]",
    `PublicKey = ${PEER_A}`,
    `PresharedKey = ${PSK}`,
    "AllowedIPs = 10.0.0.2/32, fd00::2/128",
    "AllowedIPs = 192.168.7.0/24",
    "Endpoint = 203.0.113.5:51820",
    "PersistentKeepalive = 25",
    "",
    "  [peer]  ",
    `  publickey=${PEER_B}`,
    "allowedips = 10.0.0.3/32",
    "ENDPOINT = [2001:db8::5]:4500",
    "persistentkeepalive = off",
    "",
    "[Peer]",
    `PublicKey = ${PEER_C}`,
    "Endpoint = vpn.example.com:51820",
  ].join("\r\n");

  const { config, warnings } = parseConfig(text, { filename: "wg0.conf" });

  await t.step("interface", () => {
    const expected: WgInterface = {
      privateKey: key(1),
      listenPort: 51820,
      fwMark: 0x1234,
      addresses: [
        { address: ip("10.0.0.1"), prefix: 24 },
        { address: ip("fd00::1"), prefix: 64 },
        { address: ip("10.0.1.1"), prefix: 32 },
      ],
      dns: [ip("1.1.1.1"), ip("2606:4700:4700::1111")],
      dnsSearch: ["example.com", "corp.example."],
      mtu: 1420,
      table: "off",
      preUp: ["echo pre-up"],
      postUp: [
        "iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE",
        "sysctl -w net.ipv4.ip_forward=1",
      ],
      preDown: ["echo pre-down"],
      postDown: ["iptables -D FORWARD -i %i -j ACCEPT"],
      saveConfig: false,
    };
    assert.deepEqual(config.interface, expected);
  });

  await t.step("peers", () => {
    const expected: WgPeer[] = [
      {
        publicKey: key(2),
        presharedKey: key(5),
        allowedIps: ["10.0.0.2/32", "fd00::2/128", "192.168.7.0/24"].map(parseCidr),
        endpoint: { host: "203.0.113.5", port: 51820 },
        persistentKeepalive: 25,
      },
      {
        publicKey: key(3),
        allowedIps: [parseCidr("10.0.0.3/32")],
        endpoint: { host: "2001:db8::5", port: 4500 },
        persistentKeepalive: 0,
      },
      {
        publicKey: key(4),
        allowedIps: [],
        endpoint: { host: "vpn.example.com", port: 51820 },
      },
    ];
    assert.deepEqual(config.peers, expected);
    assert.deepEqual(warnings, []);
  });

  await t.step("round-trips", () => roundTrip(config));
});

Deno.test("parseConfig: values", async (t) => {
  const base = `[Interface]\nPrivateKey = ${PRIVATE}\n`;
  const peer = (lines: string) => parseConfig(`${base}[Peer]\nPublicKey = ${PEER_A}\n${lines}\n`);
  const iface = (lines: string) => parseConfig(`${base}${lines}\n`).config.interface;

  await t.step("a minimal file sets only what it says", () => {
    const { config, warnings } = parseConfig(base);
    assert.deepEqual(config, { interface: { privateKey: key(1) }, peers: [] });
    assert.deepEqual(warnings, []);
  });

  await t.step("a value is everything after the first =, trimmed", () => {
    const cmd = iface("PostUp =  ip rule add fwmark=1 table=2  ");
    assert.deepEqual(cmd.postUp, ["ip rule add fwmark=1 table=2"]);
    assert.deepEqual(iface("PrivateKey=" + b64(key(9))).privateKey, key(9));
  });

  await t.step("# starts a comment anywhere, as in wg and wg-quick", () => {
    assert.deepEqual(iface("PostUp = echo a # b").postUp, ["echo a"]);
    assert.equal(iface("ListenPort = 1#2").listenPort, 1);
    assert.equal(iface("# ListenPort = 1").listenPort, undefined);
  });

  await t.step("a byte order mark and bare CR line ends are tolerated", () => {
    const { config } = parseConfig(`\uFEFF[Interface]\rPrivateKey = ${PRIVATE}\rListenPort = 7\r`);
    assert.equal(config.interface.listenPort, 7);
  });

  await t.step("ListenPort", () => {
    assert.equal(iface("ListenPort = 0").listenPort, 0);
    assert.equal(iface("ListenPort = 65535").listenPort, 65535);
  });

  await t.step("FwMark: off, decimal, hex", () => {
    assert.equal(iface("FwMark = off").fwMark, 0);
    assert.equal(iface("FwMark = OFF").fwMark, 0);
    assert.equal(iface("FwMark = 51820").fwMark, 51820);
    assert.equal(iface("FwMark = 0xCA6C").fwMark, 0xca6c);
    assert.equal(iface("FwMark = 0xffffffff").fwMark, 0xffffffff);
    assert.equal(iface("FwMark = 4294967295").fwMark, 0xffffffff);
  });

  await t.step("Address keeps host bits; DNS splits servers and search domains", () => {
    const i = iface("Address = 10.1.2.3/8,fd00::7/64\nDNS = 10.0.0.1,home.arpa,::1");
    assert.deepEqual(i.addresses, [
      { address: ip("10.1.2.3"), prefix: 8 },
      { address: ip("fd00::7"), prefix: 64 },
    ]);
    assert.deepEqual(i.dns, [ip("10.0.0.1"), ip("::1")]);
    assert.deepEqual(i.dnsSearch, ["home.arpa"]);
    assert.equal(iface("Address =").addresses, undefined);
  });

  await t.step("SaveConfig, MTU, Table", () => {
    assert.equal(iface("SaveConfig = true").saveConfig, true);
    assert.equal(iface("MTU = 1280").mtu, 1280);
    assert.equal(iface("Table = 1234").table, "1234");
    assert.equal(iface("Table = auto").table, "auto");
  });

  await t.step("AllowedIPs: lists, repeats, host bits cleared, duplicates dropped", () => {
    const { config, warnings } = peer(
      "AllowedIPs = 10.0.0.7/24 , 0.0.0.0/0\nAllowedIPs = 10.0.0.0/24, ::/0\nAllowedIPs =",
    );
    assert.deepEqual(config.peers[0].allowedIps.map(formatCidr), [
      "10.0.0.0/24",
      "0.0.0.0/0",
      "::/0",
    ]);
    assert.deepEqual(warnings, []);
  });

  await t.step("Endpoint forms", () => {
    const endpoint = (text: string) => peer(`Endpoint = ${text}`).config.peers[0].endpoint;
    assert.deepEqual(endpoint("192.0.2.1:51820"), { host: "192.0.2.1", port: 51820 });
    assert.deepEqual(endpoint("[::1]:1"), { host: "::1", port: 1 });
    assert.deepEqual(endpoint("[fe80::1%eth0]:51820"), { host: "fe80::1%eth0", port: 51820 });
    assert.deepEqual(endpoint("[::ffff:192.0.2.1]:5"), { host: "::ffff:192.0.2.1", port: 5 });
    assert.deepEqual(endpoint("wg.example.com:443"), { host: "wg.example.com", port: 443 });
    assert.deepEqual(endpoint("localhost:65535"), { host: "localhost", port: 65535 });
    assert.deepEqual(endpoint("my_host-1:9"), { host: "my_host-1", port: 9 });
  });

  await t.step("PersistentKeepalive", () => {
    const keepalive = (text: string) =>
      peer(`PersistentKeepalive = ${text}`).config.peers[0].persistentKeepalive;
    assert.equal(keepalive("25"), 25);
    assert.equal(keepalive("0"), 0);
    assert.equal(keepalive("off"), 0);
    assert.equal(keepalive("65535"), 65535);
  });
});

Deno.test("parseConfig: errors name the file and line", async (t) => {
  const head = `[Interface]\nPrivateKey = ${PRIVATE}\n`;
  const withPeer = (lines: string) => `${head}[Peer]\nPublicKey = ${PEER_A}\n${lines}\n`;

  await t.step("missing [Interface] or PrivateKey", () => {
    assertConfigError("", "wg0.conf: missing [Interface] section", undefined);
    assertConfigError(
      `[Peer]\nPublicKey = ${PEER_A}\n`,
      "wg0.conf: missing [Interface] section",
      undefined,
    );
    assertConfigError("", "Missing [Interface] section", undefined, null);
    assertConfigError(
      "# comment\n[Interface]\nListenPort = 1\n",
      "wg0.conf:2: [Interface] has no PrivateKey",
      2,
    );
    assertConfigError("\n[Interface]\n", "line 2: [Interface] has no PrivateKey", 2, null);
  });

  await t.step("bad keys", () => {
    // The reason comes from keyFromBase64 (keys.ts); the key text is never repeated.
    const expectation = "expected a 32-byte key in base64 \\(44 characters\\), got";
    assertConfigError(
      "[Interface]\nPrivateKey = abc\n",
      new RegExp(`^wg0\\.conf:2: invalid PrivateKey: ${expectation} 3 characters$`),
      2,
    );
    assertConfigError(
      withPeer(`PresharedKey = ${PSK.slice(0, -1)}`),
      new RegExp(`^wg0\\.conf:5: invalid PresharedKey: ${expectation} 43 characters$`),
      5,
    );
    // 44 characters, but the padding bits are not zero: not a canonical key.
    const nonCanonical = PEER_B.slice(0, 42) + "B=";
    assert.notEqual(nonCanonical, PEER_B);
    for (
      const bad of [
        nonCanonical,
        PEER_B.slice(0, 43) + "A",
        "!" + PEER_B.slice(1),
        PEER_B + "=",
        "",
      ]
    ) {
      assertConfigError(
        `${head}\n\n[Peer]\nPublicKey = ${bad}\n`,
        new RegExp(`^wg0\\.conf:6: invalid PublicKey: ${expectation} [^!]*$`),
        6,
      );
    }
  });

  await t.step("bad numbers", () => {
    for (const bad of ["65536", "-1", "0x10", "1.5", "", "port", "051820", " 1 2"]) {
      assertConfigError(
        `${head}ListenPort = ${bad}\n`,
        "wg0.conf:3: invalid ListenPort: expected a port number from 0 to 65535",
        3,
      );
    }
    for (const bad of ["0x100000000", "4294967296", "-1", "on", "010", "0x"]) {
      assertConfigError(
        `${head}FwMark = ${bad}\n`,
        `wg0.conf:3: invalid FwMark: expected "off" or a number from 0 to 0xffffffff (decimal or 0x hex)`,
        3,
      );
    }
    for (const bad of ["67", "65536", "auto", ""]) {
      assertConfigError(
        `${head}MTU = ${bad}\n`,
        "wg0.conf:3: invalid MTU: expected a number from 68 to 65535",
        3,
      );
    }
    for (const bad of ["65536", "-5", "never", ""]) {
      assertConfigError(
        withPeer(`PersistentKeepalive = ${bad}`),
        `wg0.conf:5: invalid PersistentKeepalive: expected "off" or seconds from 0 to 65535`,
        5,
      );
    }
    assertConfigError(
      `${head}SaveConfig = yes\n`,
      `wg0.conf:3: invalid SaveConfig: expected "true" or "false"`,
      3,
    );
    assertConfigError(
      `${head}Table = main table\n`,
      `wg0.conf:3: invalid Table: expected "off", "auto", or a routing table number or name`,
      3,
    );
  });

  await t.step("bad CIDRs and addresses name the item", () => {
    for (const bad of ["10.0.0.1/33", "10.0.0/24", "fd00::/129", "10.0.0.1/", "any"]) {
      assertConfigError(
        withPeer(`AllowedIPs = 10.0.0.0/8, ${bad}`),
        `wg0.conf:5: invalid AllowedIPs "${bad}": expected an IP address with an optional /prefix`,
        5,
      );
    }
    assertConfigError(
      `${head}Address = 10.0.0.1/24, 10.0.0.300/24\n`,
      `wg0.conf:3: invalid Address "10.0.0.300/24": expected an IP address with an optional /prefix`,
      3,
    );
    assertConfigError(
      `${head}DNS = 1.1.1.1, 1.1.1.256\n`,
      `wg0.conf:3: invalid DNS "1.1.1.256": expected an IP address or a search domain`,
      3,
    );
    assertConfigError(
      `${head}DNS = bad domain!\n`,
      `wg0.conf:3: invalid DNS "bad domain!": expected an IP address or a search domain`,
      3,
    );
  });

  await t.step("bad endpoints", () => {
    for (
      const bad of [
        "192.0.2.1",
        "192.0.2.1:0",
        "192.0.2.1:65536",
        "192.0.2.1:",
        ":51820",
        "2001:db8::1:51820",
        "[2001:db8::1]51820",
        "[2001:db8::1]",
        "[192.0.2.1]:1",
        "[::1:1",
        "bad_host!:1",
        "192.0.2.300:1",
        "host:port",
        "-host:1",
      ]
    ) {
      assertConfigError(
        withPeer(`Endpoint = ${bad}`),
        `wg0.conf:5: invalid Endpoint "${bad}": expected host:port or [IPv6]:port with a port from 1 to 65535`,
        5,
      );
    }
  });

  await t.step("structure", () => {
    assertConfigError(
      `ListenPort = 1\n${head}`,
      "wg0.conf:1: ListenPort outside a section: expected [Interface] or [Peer] first",
      1,
    );
    assertConfigError(
      `${head}[Peers]\n`,
      `wg0.conf:3: unknown section "[Peers]": expected [Interface] or [Peer]`,
      3,
    );
    assertConfigError(`${head}[Peer\n`, `wg0.conf:3: invalid section header "[Peer"`, 3);
    assertConfigError(
      `${head}\n[interface]\nListenPort = 2\n`,
      "wg0.conf:4: duplicate [Interface] section (the first is on line 1)",
      4,
    );
    assertConfigError(
      `${head}ListenPort 51820\n`,
      `wg0.conf:3: expected "Key = Value", got "ListenPort 51820"`,
      3,
    );
    assertConfigError(`${head} = 5\n`, `wg0.conf:3: expected "Key = Value", got "= 5"`, 3);
    assertConfigError(
      `${head}\n[Peer]\nAllowedIPs = 10.0.0.0/8\n`,
      "wg0.conf:4: [Peer] has no PublicKey",
      4,
    );
  });

  await t.step("duplicate peer public key", () => {
    assertConfigError(
      `${head}\n[Peer]\nPublicKey = ${PEER_A}\n\n[Peer]\nPublicKey = ${PEER_B}\n\n[Peer]\n# same as the first\nPublicKey = ${PEER_A}\n`,
      "wg0.conf:12: duplicate peer PublicKey (also used by the peer on line 4)",
      12,
    );
  });

  await t.step("without a file name the message says line N", () => {
    assertConfigError(
      `${head}ListenPort = x\n`,
      "line 3: invalid ListenPort: expected a port number from 0 to 65535",
      3,
      null,
    );
  });

  await t.step("ConfigError keeps the reason apart", () => {
    const error = new ConfigError("invalid MTU: expected a number", 4, "a.conf");
    assert.equal(error.reason, "invalid MTU: expected a number");
    assert.equal(error.message, "a.conf:4: invalid MTU: expected a number");
  });
});

Deno.test("parseConfig: warnings", async (t) => {
  const head = `[Interface]\nPrivateKey = ${PRIVATE}\n`;

  await t.step("unknown keys are skipped with a warning", () => {
    const { config, warnings } = parseConfig(
      `${head}Foo = bar\nPublicKey = ${PEER_A}\n[Peer]\nPublicKey = ${PEER_A}\nListenPort = 3\nJc = 4\n`,
      { filename: "wg0.conf" },
    );
    assert.deepEqual(warnings, [
      { filename: "wg0.conf", line: 3, message: `unknown key "Foo" in [Interface] ignored` },
      {
        filename: "wg0.conf",
        line: 4,
        message: "PublicKey belongs in [Peer], not [Interface]; ignored",
      },
      {
        filename: "wg0.conf",
        line: 7,
        message: "ListenPort belongs in [Interface], not [Peer]; ignored",
      },
      { filename: "wg0.conf", line: 8, message: `unknown key "Jc" in [Peer] ignored` },
    ]);
    // Names of Object.prototype members are unknown keys too.
    const odd = parseConfig(`${head}constructor = 1\n__proto__ = 2\ntoString = 3\n`);
    assert.deepEqual(odd.warnings.map((w) => w.line), [3, 4, 5]);
    assert.equal(config.interface.listenPort, undefined);
    assert.equal(config.peers.length, 1);
  });

  await t.step("a key set twice: the last wins", () => {
    const { config, warnings } = parseConfig(`${head}ListenPort = 1\nlistenport = 2\n`);
    assert.equal(config.interface.listenPort, 2);
    assert.deepEqual(warnings, [
      { line: 4, message: "ListenPort is set again (first on line 3); the last value wins" },
    ]);
  });

  await t.step("a prefix given to two peers goes to the later one, as in wg", () => {
    const { config, warnings } = parseConfig(
      `${head}[Peer]\nPublicKey = ${PEER_A}\nAllowedIPs = 10.0.0.0/24\n[Peer]\nPublicKey = ${PEER_B}\nAllowedIPs = 10.0.0.9/24\n`,
    );
    assert.equal(config.peers[1].allowedIps.length, 1);
    assert.deepEqual(warnings, [{
      line: 8,
      message: "AllowedIPs 10.0.0.0/24 is also given to the peer on line 3; the later peer gets it",
    }]);
  });

  await t.step("an empty command is skipped", () => {
    const { config, warnings } = parseConfig(`${head}PostUp =\n`);
    assert.equal(config.interface.postUp, undefined);
    assert.deepEqual(warnings, [{ line: 3, message: "empty PostUp command ignored" }]);
  });
});

// ---------------------------------------------------------------------------
// Realistic files

const PHONE_CLIENT = `[Interface]
# Phone
PrivateKey = ${b64(key(11))}
Address = 10.8.0.5/32, fd86:ea04:1115::5/128
DNS = 10.8.0.1, fd86:ea04:1115::1

[Peer]
PublicKey = ${b64(key(12))}
PresharedKey = ${b64(key(13))}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = vpn.example.org:51820
PersistentKeepalive = 25
`;

const SERVER_THREE_PEERS = `[Interface]
Address = 10.8.0.1/24
Address = fd86:ea04:1115::1/64
ListenPort = 51820
PrivateKey = ${b64(key(21))}
PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
PostDown = iptables -D FORWARD -i %i -j ACCEPT; iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE
SaveConfig = true

# laptop
[Peer]
PublicKey = ${b64(key(22))}
AllowedIPs = 10.8.0.2/32, fd86:ea04:1115::2/128

# phone
[Peer]
PublicKey = ${b64(key(23))}
PresharedKey = ${b64(key(24))}
AllowedIPs = 10.8.0.3/32, fd86:ea04:1115::3/128

# home router, with the LAN behind it
[Peer]
PublicKey = ${b64(key(25))}
AllowedIPs = 10.8.0.4/32, 192.168.1.0/24
Endpoint = 198.51.100.20:51820
PersistentKeepalive = 15
`;

const IPV6_ONLY = `[Interface]
PrivateKey = ${b64(key(31))}
ListenPort = 4500
FwMark = 0xca6c
Address = 2001:db8:100::1/64
MTU = 1280
Table = 51820

[Peer]
PublicKey = ${b64(key(32))}
AllowedIPs = 2001:db8:100::2/128, 2001:db8:200::/48
Endpoint = [2001:db8::1]:4500

[Peer]
PublicKey = ${b64(key(33))}
AllowedIPs = 2001:db8:100::3/128
Endpoint = [fe80::1%eth0]:51820
PersistentKeepalive = off
`;

Deno.test("formatConfig", async (t) => {
  await t.step("realistic files round-trip", () => {
    for (const text of [PHONE_CLIENT, SERVER_THREE_PEERS, IPV6_ONLY]) {
      const { config, warnings } = parseConfig(text);
      assert.deepEqual(warnings, []);
      roundTrip(config);
    }
  });

  await t.step("writes keys in a stable order", () => {
    const { config } = parseConfig(SERVER_THREE_PEERS);
    assert.equal(
      formatConfig(config),
      `[Interface]
PrivateKey = ${b64(key(21))}
ListenPort = 51820
Address = 10.8.0.1/24, fd86:ea04:1115::1/64
PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
PostDown = iptables -D FORWARD -i %i -j ACCEPT; iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE
SaveConfig = true

[Peer]
PublicKey = ${b64(key(22))}
AllowedIPs = 10.8.0.2/32, fd86:ea04:1115::2/128

[Peer]
PublicKey = ${b64(key(23))}
PresharedKey = ${b64(key(24))}
AllowedIPs = 10.8.0.3/32, fd86:ea04:1115::3/128

[Peer]
PublicKey = ${b64(key(25))}
AllowedIPs = 10.8.0.4/32, 192.168.1.0/24
Endpoint = 198.51.100.20:51820
PersistentKeepalive = 15
`,
    );
  });

  await t.step("wgQuick: false leaves out the wg-quick keys", () => {
    const { config } = parseConfig(IPV6_ONLY);
    const text = formatConfig(config, { wgQuick: false });
    assert.equal(
      text,
      `[Interface]
PrivateKey = ${b64(key(31))}
ListenPort = 4500
FwMark = 0xca6c

[Peer]
PublicKey = ${b64(key(32))}
AllowedIPs = 2001:db8:100::2/128, 2001:db8:200::/48
Endpoint = [2001:db8::1]:4500

[Peer]
PublicKey = ${b64(key(33))}
AllowedIPs = 2001:db8:100::3/128
Endpoint = [fe80::1%eth0]:51820
PersistentKeepalive = off
`,
    );
    for (const text of [PHONE_CLIENT, SERVER_THREE_PEERS, IPV6_ONLY]) {
      const stripped = formatConfig(parseConfig(text).config, { wgQuick: false });
      assert.doesNotMatch(
        stripped,
        /^(Address|DNS|MTU|Table|PreUp|PostUp|PreDown|PostDown|SaveConfig) /m,
      );
      const { config, warnings } = parseConfig(stripped);
      assert.deepEqual(warnings, []);
      const {
        addresses: _a,
        dns: _d,
        dnsSearch: _s,
        mtu: _m,
        table: _t,
        postUp: _u,
        postDown: _w,
        saveConfig: _c,
        ...core
      } = parseConfig(text).config.interface;
      assert.deepEqual(config.interface, core);
    }
  });

  await t.step("a hand-built config: host bits cleared, FwMark 0 is off", () => {
    const config: WgConfig = {
      interface: { privateKey: key(1), fwMark: 0 },
      peers: [{ publicKey: key(2), allowedIps: [{ address: ip("10.1.2.3"), prefix: 16 }] }],
    };
    const text = formatConfig(config);
    assert.match(text, /^FwMark = off$/m);
    assert.match(text, /^AllowedIPs = 10\.1\.0\.0\/16$/m);
  });

  await t.step("rejects values it cannot write", () => {
    const good = (): WgConfig => ({
      interface: { privateKey: key(1) },
      peers: [{ publicKey: key(2), allowedIps: [] }],
    });
    const bad = (change: (c: WgConfig) => void) => {
      const c = good();
      change(c);
      return () => formatConfig(c);
    };
    assert.throws(bad((c) => c.interface.privateKey = new Uint8Array(31)), {
      name: "TypeError",
      message: "PrivateKey must be a Uint8Array of 32 bytes",
    });
    assert.throws(bad((c) => c.peers[0].presharedKey = new Uint8Array(0)), {
      name: "TypeError",
      message: "PresharedKey must be a Uint8Array of 32 bytes",
    });
    assert.throws(bad((c) => c.interface.listenPort = 70000), {
      name: "RangeError",
      message: "ListenPort must be an integer from 0 to 65535, not 70000",
    });
    assert.throws(bad((c) => c.peers[0].persistentKeepalive = -1), RangeError);
    assert.throws(bad((c) => c.interface.mtu = 10), RangeError);
    assert.throws(bad((c) => c.peers[0].endpoint = { host: "a b", port: 1 }), {
      name: "TypeError",
      message: `Endpoint host "a b" is not a host name or IP address`,
    });
    assert.throws(bad((c) => c.peers[0].endpoint = { host: "::1", port: 0 }), {
      name: "RangeError",
      message: "Endpoint port must be an integer from 1 to 65535, not 0",
    });
    assert.throws(bad((c) => c.interface.postUp = ["echo a\necho b"]), {
      name: "RangeError",
      message: `PostUp command "echo a\\necho b" must be one non-empty line without "#"`,
    });
    assert.throws(bad((c) => c.interface.preDown = ["echo # x"]), RangeError);
    assert.throws(bad((c) => c.interface.dnsSearch = ["not a domain"]), RangeError);
    assert.throws(bad((c) => c.interface.table = "x y"), RangeError);
    assert.throws(
      bad((c) => c.peers[0].allowedIps = [{ address: new Uint8Array(4), prefix: 40 }]),
      {
        name: "RangeError",
        message: "An AllowedIPs prefix must be an integer from 0 to 32, not 40",
      },
    );
    assert.throws(bad((c) => c.interface.dns = [new Uint8Array(3)]), TypeError);
    // wg-quick fields are not checked when they are not written.
    const c = good();
    c.interface.postUp = ["echo a\necho b"];
    assert.doesNotThrow(() => formatConfig(c, { wgQuick: false }));
  });
});

// ---------------------------------------------------------------------------
// Compatibility with the real `wg` tool.
//
// `wg setconf` and `wg showconf` need an interface. For a userspace interface
// they talk the cross-platform UAPI protocol over /var/run/wireguard/NAME.sock,
// so a small fake of that socket lets the real tool read a file we wrote (and
// tell us what it understood) and write a file for us to read, with no kernel
// module and no network.

async function wgUsable(): Promise<string | null> {
  try {
    const { success } = await new Deno.Command("wg", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    if (!success) return "wg --version failed";
  } catch {
    return "the wg tool (wireguard-tools) is not installed or may not be run";
  }
  try {
    await Deno.mkdir("/var/run/wireguard", { recursive: true });
    const probe = `/var/run/wireguard/.wgstack-probe-${Deno.pid}`;
    await Deno.writeTextFile(probe, "");
    await Deno.remove(probe);
  } catch {
    return "/var/run/wireguard is not writable (needs root)";
  }
  return null;
}

const needsWg = requirement("wg compatibility", await wgUsable());

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function unhex(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g)!, (h) => parseInt(h, 16));
}

/** A fake userspace WireGuard interface: records `set` requests, answers `get` with `state`. */
async function withFakeInterface(
  state: string,
  run: (name: string, sets: string[]) => Promise<void>,
): Promise<void> {
  const name = `wgst${Deno.pid % 1_000_000}`;
  const path = `/var/run/wireguard/${name}.sock`;
  await Deno.remove(path).catch(() => {});
  const listener = Deno.listen({ transport: "unix", path });
  const sets: string[] = [];
  const errors: unknown[] = [];
  const serve = (async () => {
    for await (const conn of listener) {
      try {
        let request = "";
        const buffer = new Uint8Array(4096);
        const decoder = new TextDecoder();
        while (!request.endsWith("\n\n")) {
          const n = await conn.read(buffer);
          if (n === null) break;
          request += decoder.decode(buffer.subarray(0, n));
        }
        // `wg` first connects and hangs up to see whether the interface exists.
        if (request === "") continue;
        let reply = "errno=0\n\n";
        if (request.startsWith("set=1\n")) sets.push(request);
        else if (request.startsWith("get=1\n")) reply = state + "errno=0\n\n";
        else reply = "errno=22\n\n";
        const bytes = new TextEncoder().encode(reply);
        for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
      } catch (error) {
        errors.push(error);
      } finally {
        conn.close();
      }
    }
  })();
  try {
    await run(name, sets);
  } finally {
    listener.close();
    await serve.catch(() => {});
    await Deno.remove(path).catch(() => {});
  }
  assert.deepEqual(errors, []);
}

async function wg(args: string[]): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command("wg", {
    args,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const decoder = new TextDecoder();
  assert.ok(success, `wg ${args.join(" ")} failed: ${decoder.decode(stderr)}`);
  return decoder.decode(stdout);
}

/** Reads a UAPI `set` request back into a config (core fields only). */
function configFromUapiSet(request: string): WgConfig {
  const iface: Partial<WgInterface> = {};
  const peers: WgPeer[] = [];
  for (const line of request.split("\n")) {
    if (line === "" || line === "set=1") continue;
    const [k, v] = [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)];
    const peer = peers[peers.length - 1];
    switch (k) {
      case "private_key":
        iface.privateKey = unhex(v);
        break;
      case "listen_port":
        iface.listenPort = Number(v);
        break;
      case "fwmark":
        iface.fwMark = Number(v);
        break;
      case "replace_peers":
      case "replace_allowed_ips":
        assert.equal(v, "true");
        break;
      case "public_key":
        peers.push({ publicKey: unhex(v), allowedIps: [] });
        break;
      case "preshared_key":
        peer.presharedKey = unhex(v);
        break;
      case "endpoint": {
        const colon = v.lastIndexOf(":");
        peer.endpoint = {
          host: v.slice(0, colon).replace(/^\[(.*)\]$/, "$1"),
          port: Number(v.slice(colon + 1)),
        };
        break;
      }
      case "persistent_keepalive_interval":
        peer.persistentKeepalive = Number(v);
        break;
      case "allowed_ip":
        peer.allowedIps.push(parseCidr(v));
        break;
      default:
        assert.fail(`unexpected UAPI line ${line}`);
    }
  }
  return { interface: iface as WgInterface, peers };
}

/** The UAPI `get` answer for a config, as a userspace WireGuard would give it. */
function uapiGetState(config: WgConfig): string {
  const lines = [`private_key=${hex(config.interface.privateKey)}`];
  lines.push(`listen_port=${config.interface.listenPort ?? 0}`);
  if (config.interface.fwMark) lines.push(`fwmark=${config.interface.fwMark}`);
  for (const peer of config.peers) {
    lines.push(`public_key=${hex(peer.publicKey)}`);
    lines.push(`preshared_key=${hex(peer.presharedKey ?? new Uint8Array(32))}`);
    lines.push("protocol_version=1");
    if (peer.endpoint) {
      const { host, port } = peer.endpoint;
      lines.push(`endpoint=${host.includes(":") ? `[${host}]` : host}:${port}`);
    }
    lines.push(
      "last_handshake_time_sec=0",
      "last_handshake_time_nsec=0",
      "tx_bytes=0",
      "rx_bytes=0",
    );
    lines.push(`persistent_keepalive_interval=${peer.persistentKeepalive ?? 0}`);
    for (const cidr of peer.allowedIps) lines.push(`allowed_ip=${formatCidr(cidr)}`);
  }
  return lines.join("\n") + "\n";
}

/**
 * The core of a config as `wg` sees it, without the wg-quick keys. `setconf`
 * replaces the whole device, so it always sends a listen port and a mark (0
 * when the file has none); `showconf` leaves out zero ports, marks and
 * keepalives.
 */
function coreOf(config: WgConfig, as: "setconf" | "showconf"): WgConfig {
  const zeros = as === "showconf";
  const { privateKey, listenPort = 0, fwMark = 0 } = config.interface;
  const iface: WgInterface = { privateKey };
  if (!(zeros && listenPort === 0)) iface.listenPort = listenPort;
  if (!(zeros && fwMark === 0)) iface.fwMark = fwMark;
  const peers = config.peers.map((p) => {
    const peer: WgPeer = { publicKey: p.publicKey, allowedIps: p.allowedIps };
    if (p.presharedKey) peer.presharedKey = p.presharedKey;
    if (p.endpoint) peer.endpoint = p.endpoint;
    if (p.persistentKeepalive !== undefined && !(zeros && p.persistentKeepalive === 0)) {
      peer.persistentKeepalive = p.persistentKeepalive;
    }
    return peer;
  });
  return { interface: iface, peers };
}

// Configs with numeric endpoints only: `wg` resolves host names, and a test
// must not depend on DNS. Scoped IPv6 endpoints need the interface to exist.
const WG_COMPAT_CONFIGS = [
  PHONE_CLIENT.replace("vpn.example.org", "192.0.2.44"),
  SERVER_THREE_PEERS,
  IPV6_ONLY.replace("[fe80::1%eth0]", "[2001:db8:ffff::99]"),
  `[Interface]\nPrivateKey = ${b64(key(41))}\nFwMark = off\nListenPort = 0\n\n[Peer]\nPublicKey = ${
    b64(key(42))
  }\nAllowedIPs = 10.0.0.0/8, 0.0.0.0/0\nPersistentKeepalive = 0\n`,
];

Deno.test({
  name: "wg compatibility via a fake UAPI socket",
  ignore: needsWg.ignore,
  fn: async (t) => {
    needsWg.assert();
    await t.step(
      "wg setconf accepts our wgQuick: false output and reads the same values",
      async () => {
        await withFakeInterface("", async (name, sets) => {
          for (const [index, text] of WG_COMPAT_CONFIGS.entries()) {
            const { config } = parseConfig(text);
            const file = await Deno.makeTempFile({ suffix: ".conf" });
            try {
              await Deno.writeTextFile(file, formatConfig(config, { wgQuick: false }));
              await wg(["setconf", name, file]);
            } finally {
              await Deno.remove(file);
            }
            assert.equal(sets.length, index + 1);
            assert.deepEqual(configFromUapiSet(sets[index]), coreOf(config, "setconf"));
          }
        });
      },
    );

    await t.step("wg setconf rejects our wg-quick output (so the option matters)", async () => {
      await withFakeInterface("", async (name) => {
        const file = await Deno.makeTempFile({ suffix: ".conf" });
        try {
          await Deno.writeTextFile(file, formatConfig(parseConfig(PHONE_CLIENT).config));
          const { success, stderr } = await new Deno.Command("wg", {
            args: ["setconf", name, file],
            stdout: "null",
            stderr: "piped",
          })
            .output();
          assert.equal(success, false);
          assert.match(new TextDecoder().decode(stderr), /Line unrecognized: `Address=/);
        } finally {
          await Deno.remove(file);
        }
      });
    });

    await t.step("we parse what wg showconf writes", async () => {
      for (const text of WG_COMPAT_CONFIGS) {
        const { config } = parseConfig(text);
        await withFakeInterface(uapiGetState(config), async (name) => {
          const shown = await wg(["showconf", name]);
          const parsed = parseConfig(shown, { filename: "showconf" });
          assert.deepEqual(parsed.warnings, []);
          assert.deepEqual(parsed.config, coreOf(config, "showconf"));
        });
      }
    });
  },
});

Deno.test("ip helpers used by the config agree", () => {
  // Formatting of parsed DNS addresses is canonical.
  const { config } = parseConfig(
    `[Interface]\nPrivateKey = ${PRIVATE}\nDNS = 2606:4700:4700:0:0:0:0:1111\n`,
  );
  assert.equal(formatIp(config.interface.dns![0]), "2606:4700:4700::1111");
});

Deno.test("formatConfig then parseConfig is the identity on random configs", () => {
  const next = xorshift32(20261124);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => next() & 0xff);
  const address = () => {
    const a = next() % 2 === 0 ? bytes(4) : bytes(16);
    // Zero runs make IPv6 compression cases common.
    if (a.length === 16) { for (let i = 2; i < 14; i++) if (next() % 2 === 0) a[i] = 0; }
    return a;
  };
  const pick = <T>(items: readonly T[]): T => items[next() % items.length];
  const some = <T>(make: () => T, max: number): T[] =>
    Array.from({ length: next() % (max + 1) }, make);
  const maybe = <T>(make: () => T): T | undefined => next() % 2 === 0 ? make() : undefined;
  const hosts = ["vpn.example.com", "localhost", "a-b.c_d.example.", "wg1"];

  for (let n = 0; n < 500; n++) {
    const iface: WgInterface = { privateKey: bytes(32) };
    const set = <K extends keyof WgInterface>(k: K, v: WgInterface[K] | undefined) => {
      if (v !== undefined && !(Array.isArray(v) && v.length === 0)) iface[k] = v;
    };
    set("listenPort", maybe(() => next() % 65536));
    set("fwMark", maybe(() => next() >>> (next() % 32)));
    set(
      "addresses",
      some(() => {
        const a = address();
        return { address: a, prefix: next() % (a.length * 8 + 1) };
      }, 3),
    );
    set("dns", some(address, 3));
    set("dnsSearch", some(() => pick(hosts), 2));
    set("mtu", maybe(() => 68 + (next() % (65536 - 68))));
    set("table", maybe(() => pick(["off", "auto", "1234", "vpn"])));
    set("preUp", some(() => "echo pre-up", 2));
    set("postUp", some(() => "iptables -A FORWARD -i %i -j ACCEPT; echo a=b", 2));
    set("preDown", some(() => "true", 1));
    set("postDown", some(() => "ip rule del fwmark 0x1", 2));
    set("saveConfig", maybe(() => next() % 2 === 0));

    const peers: WgPeer[] = some(() => {
      // Distinct prefixes with host bits cleared, as the parser returns them.
      const byText = new Map<string, Cidr>();
      for (let k = next() % 6; k > 0; k--) {
        const a = address();
        const cidr = parseCidr(`${formatIp(a)}/${next() % (a.length * 8 + 1)}`);
        if (!byText.has(formatCidr(cidr))) byText.set(formatCidr(cidr), cidr);
      }
      const allowedIps = [...byText.values()];
      const peer: WgPeer = { publicKey: bytes(32), allowedIps };
      const psk = maybe(() => bytes(32));
      if (psk) peer.presharedKey = psk;
      const endpoint = maybe(() => ({
        host: next() % 3 === 0 ? pick(hosts) : formatIp(address()),
        port: 1 + (next() % 65535),
      }));
      if (endpoint) peer.endpoint = endpoint;
      const keepalive = maybe(() => next() % 65536);
      if (keepalive !== undefined) peer.persistentKeepalive = keepalive;
      return peer;
    }, 4);

    const config: WgConfig = { interface: iface, peers };
    const text = formatConfig(config);
    const parsed = parseConfig(text);
    assert.deepEqual(parsed.config, config, text);
    assert.equal(formatConfig(parsed.config), text);
    // The wg-only form parses to the same core.
    const core = parseConfig(formatConfig(config, { wgQuick: false })).config;
    assert.deepEqual(core.peers, config.peers);
    assert.deepEqual(core.interface.privateKey, config.interface.privateKey);
  }
});
