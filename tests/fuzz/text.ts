/**
 * Fuzz targets of the text parsers: wg-quick configuration files (and their
 * round trip through `formatConfig`), IP addresses and prefixes, base64
 * keys, destination policy rules and the command line. Each may reject its
 * input only with its documented error.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ConfigError, formatConfig, parseConfig } from "../../wireguard/config.ts";
import { formatIp, parseIp, parseIpPrefix } from "../../wireguard/ip.ts";
import { keyFromBase64 } from "../../wireguard/keys.ts";
import { parsePolicyRule } from "../../server/policy.ts";
import { parseCliArgs, parseHostPort, UsageError } from "../../cli/args.ts";
import { parseResolvConf } from "../../cli/_dns.ts";
import {
  formatUapiEndpoint,
  parseUapiEndpoint,
  UapiError,
  UapiSetParser,
} from "../../wireguard/uapi.ts";
import { expectOnly, type FuzzTarget, mutateText, type Rng } from "./harness.ts";

const KEY_A = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const KEY_B = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const KEY_C = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

/** Real-looking configuration files: a server, a client, every key once. */
export const CONFIGS: readonly string[] = [
  `[Interface]
PrivateKey = ${KEY_A}
ListenPort = 51820
Address = 10.0.0.1/24, fd00::1/64

[Peer]
PublicKey = ${KEY_B}
AllowedIPs = 10.0.0.2/32, fd00::2/128

[Peer]
# laptop
PublicKey = ${KEY_C}
PresharedKey = ${KEY_A}
AllowedIPs = 10.0.0.3/32
PersistentKeepalive = 25
`,
  `[Interface]
PrivateKey = ${KEY_B}
Address = 10.0.0.2/32
DNS = 10.0.0.1, 2001:db8::53, example.com
MTU = 1380
Table = off
FwMark = 0x1234
PreUp = echo pre
PostUp = iptables -A FORWARD -i %i -j ACCEPT
PreDown = true
PostDown = iptables -D FORWARD -i %i -j ACCEPT
SaveConfig = false

[Peer]
PublicKey = ${KEY_A}
Endpoint = [2001:db8::1%eth0]:51820
AllowedIPs = 0.0.0.0/0, ::/0
`,
  `[Interface]\r\nPrivateKey=${KEY_C}\r\n[Peer]\r\nPublicKey=${KEY_B}\r\nEndpoint=vpn.example.com:443\r\nAllowedIPs=192.0.2.0/24,198.51.100.7\r\n`,
];

/** wg-quick files: parse, and whatever parses formats and parses back to the same. */
export const configTarget: FuzzTarget<string> = {
  name: "wg-quick-config",
  covers: "parseConfig (ConfigError only) and formatConfig → parseConfig round trip",
  setup: () => ({
    generate: (rng) => {
      let text = rng.pick(CONFIGS);
      for (let n = rng.int(3); n >= 0; n--) text = mutateText(rng, text);
      return text;
    },
    feed(text) {
      let parsed;
      try {
        parsed = parseConfig(text, { filename: "fuzz.conf" });
      } catch (e) {
        if (e instanceof ConfigError) return;
        throw e;
      }
      const again = parseConfig(formatConfig(parsed.config)).config;
      assert.deepEqual(again, parsed.config, "the formatted config parses back to the same");
    },
    show: (text) => JSON.stringify(text),
  }),
};

const ADDRESSES = [
  "10.0.0.1",
  "255.255.255.255",
  "0.0.0.0",
  "::",
  "::1",
  "fd00::2",
  "2001:db8::1:0:0:1",
  "::ffff:192.0.2.1",
  "1:2:3:4:5:6:7:8",
  "fe80::1%eth0",
];

function addressLike(rng: Rng): string {
  const base = rng.pick(ADDRESSES) + (rng.chance(0.5) ? `/${rng.int(140)}` : "");
  return mutateText(rng, base, [".", ":", "::", "/", "%", "0", "00", "256", "ffff", "1", " ", ""]);
}

/** IP addresses and prefixes: `null` or a value that formats back to an equal address. */
export const ipTarget: FuzzTarget<string> = {
  name: "ip-text",
  covers: "parseIp, parseIpPrefix, formatIp round trip",
  setup: () => ({
    generate: addressLike,
    feed(text) {
      const ip = parseIp(text);
      if (ip !== null) assert.deepEqual(parseIp(formatIp(ip)), ip);
      const prefix = parseIpPrefix(text);
      if (prefix !== null) assert.ok(prefix.prefix <= prefix.address.length * 8);
    },
    show: (text) => JSON.stringify(text),
  }),
};

/** Base64 keys: a 32-byte key or a `RangeError`. */
export const keyTarget: FuzzTarget<string> = {
  name: "base64-key",
  covers: "keyFromBase64",
  setup: () => ({
    generate: (rng) =>
      mutateText(rng, rng.pick([KEY_A, KEY_B, KEY_C]), ["=", "+", "/", "-", "_", " ", "\n", "A"]),
    feed: (text) =>
      expectOnly(
        (e) => e instanceof RangeError,
        () => assert.equal(keyFromBase64(text).length, 32),
      ),
    show: (text) => JSON.stringify(text),
  }),
};

/** Policy rules: a rule or a `RangeError`. */
export const policyRuleTarget: FuzzTarget<string> = {
  name: "policy-rule",
  covers: "parsePolicyRule (prefix, brackets, port lists and ranges)",
  setup: () => ({
    generate: (rng) =>
      mutateText(
        rng,
        rng.pick(["10.0.0.0/8:22,8000-8999", "[2001:db8::/32]:443", "192.0.2.7", "::/0"]),
        [":", ",", "-", "[", "]", "/", "65535", "65536", "0", "-1", "*", " "],
      ),
    feed: (text) => expectOnly((e) => e instanceof RangeError, () => parsePolicyRule("deny", text)),
    show: (text) => JSON.stringify(text),
  }),
};

const ARGS = [
  "server.conf",
  "--mode",
  "forward",
  "echo",
  "-m",
  "--listen",
  "0.0.0.0:51820",
  "[::]:51820",
  "-l",
  "--endpoint",
  "vpn.example.com:51820",
  "--pcap",
  "out.pcap",
  "--log-level",
  "debug",
  "--log-format",
  "json",
  "--dns-upstream",
  "192.0.2.53:53",
  "--",
  "-",
  "--help",
  "--version",
  "--unknown",
  "",
];

/** The command line: parsed arguments or a `UsageError`. */
export const cliArgsTarget: FuzzTarget<string[]> = {
  name: "cli-args",
  covers: "parseCliArgs and parseHostPort (UsageError only)",
  setup: () => ({
    generate(rng) {
      const args: string[] = [];
      for (let n = rng.int(8); n > 0; n--) {
        const a = rng.pick(ARGS);
        args.push(rng.chance(0.2) ? mutateText(rng, a, [":", "=", "[", "]", "-", " "]) : a);
      }
      return args;
    },
    feed(args) {
      expectOnly((e) => e instanceof UsageError, () => parseCliArgs(args));
      for (const a of args) {
        expectOnly((e) => e instanceof UsageError, () => parseHostPort(a, "-l"));
      }
    },
    show: (args) => JSON.stringify(args),
  }),
};

/** resolv.conf: the first name server, a token without white space, or `undefined`. */
export const resolvConfTarget: FuzzTarget<string> = {
  name: "resolv-conf",
  covers: "parseResolvConf (cli/_dns.ts)",
  setup: () => ({
    generate: (rng) =>
      mutateText(
        rng,
        "# generated\nsearch example.com\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n",
        ["#", ";", " ", "\t", "nameserver", "\r", "::1", ""],
      ),
    feed(text) {
      const server = parseResolvConf(text);
      if (server !== undefined) assert.match(server, /^\S+$/);
    },
    show: (text) => JSON.stringify(text),
  }),
};

const HEX_A = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
const HEX_B = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";

/** A `set=1` request as wg sends it: device keys, then peer blocks. */
const UAPI_SET = `private_key=${HEX_A}
listen_port=51820
fwmark=0
replace_peers=true
public_key=${HEX_B}
preshared_key=${"0".repeat(64)}
endpoint=[2001:db8::1]:51820
persistent_keepalive_interval=25
replace_allowed_ips=true
allowed_ip=10.0.0.2/32
allowed_ip=fd00::2/128
protocol_version=1
public_key=${HEX_A}
update_only=true
endpoint=192.0.2.7:1234
allowed_ip=-10.0.0.9/32
remove=true`;

/** UAPI `set=1` lines: operations or a `UapiError`; endpoints format back to themselves. */
export const uapiSetTarget: FuzzTarget<string> = {
  name: "uapi-set",
  covers: "UapiSetParser.line/end, parseUapiEndpoint ↔ formatUapiEndpoint (wireguard/uapi.ts)",
  setup: () => ({
    generate: (rng) =>
      mutateText(rng, UAPI_SET, ["=", "-", "/", ":", "[", "]", "true", "false", "0", "65536", "f"]),
    feed(text) {
      const parser = new UapiSetParser();
      for (const line of text.split("\n")) {
        try {
          parser.line(line);
        } catch (e) {
          if (!(e instanceof UapiError)) throw e;
        }
      }
      parser.end();
      for (const line of text.split("\n")) {
        if (!line.startsWith("endpoint=")) continue;
        let endpoint;
        try {
          endpoint = parseUapiEndpoint(line.slice(9));
        } catch (e) {
          if (e instanceof UapiError) continue;
          throw e;
        }
        assert.deepEqual(parseUapiEndpoint(formatUapiEndpoint(endpoint)), endpoint);
      }
    },
    show: (text) => JSON.stringify(text),
  }),
};
