/**
 * The `wgstack` command as a person meets it: run as a subprocess, with bad
 * configs and flags giving one clear line and exit code 2.
 */
import assert from "node:assert/strict";

import { uapiGet } from "@wgstack/server";

const MAIN = new URL("./main.ts", import.meta.url).pathname;
const KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PUB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const PUB2 = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function wgstack(args: string[], options: { cwd: string; stdin?: string }): Promise<Result> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    cwd: options.cwd,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    // A running server of another test must never hear our add-peer.
    env: { NO_COLOR: "1", WGSTACK_UAPI_DIR: `${options.cwd}/run` },
  }).spawn();
  if (options.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(options.stdin));
    await w.close();
  }
  const out = await child.output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

function iface(extra = ""): string {
  return `[Interface]\nPrivateKey = ${KEY}\nListenPort = 51820\nAddress = 198.18.0.1/24\n${extra}`;
}

/** [name, config text or null (no file written), args, expected stderr] */
const CASES: [string, string | null, string[], RegExp][] = [
  ["unknown flag", null, ["--bogus"], /^wgstack: Unknown flag --bogus \(see --help\)$/],
  ["missing flag value", null, ["--log-level"], /^wgstack: Flag --log-level needs a value$/],
  [
    "flag as a value",
    null,
    ["--mode", "--pcap"],
    /^wgstack: Flag --mode needs a value; for one starting with "-", write --mode=VALUE$/,
  ],
  [
    "bad --listen",
    null,
    ["--listen", "0.0.0.0:99999"],
    /--listen "0.0.0.0:99999": the port must be/,
  ],
  ["config is a directory", null, ["."], /^wgstack: \. is a directory$|^wgstack: \.: /],
  [
    "config directory missing",
    null,
    ["nodir/wg.conf"],
    /^wgstack: Cannot create nodir\/wg.conf: its directory does not exist$/,
  ],
  [
    "bad private key",
    "[Interface]\nPrivateKey = abc\n",
    [],
    /^wgstack: wg.conf:2: invalid PrivateKey/,
  ],
  [
    "no private key",
    "[Interface]\nListenPort = 51820\n",
    [],
    /^wgstack: wg.conf(:\d+)?: .*PrivateKey/,
  ],
  [
    "bad peer key",
    iface(`[Peer]\nPublicKey = ${PUB.slice(1)}\nAllowedIPs = 198.18.0.2/32\n`),
    [],
    /^wgstack: wg.conf:6: invalid PublicKey/,
  ],
  [
    "bad address",
    iface().replace("198.18.0.1/24", "198.18.0.300/24"),
    [],
    /^wgstack: wg.conf:4: invalid Address/,
  ],
  [
    "bad allowed IPs",
    iface(`[Peer]\nPublicKey = ${PUB}\nAllowedIPs = 198.18.0.2/33\n`),
    [],
    /^wgstack: wg.conf:7: invalid AllowedIPs/,
  ],
  [
    "duplicate peer",
    iface(`[Peer]\nPublicKey = ${PUB}\n[Peer]\nPublicKey = ${PUB}\n`),
    [],
    /^wgstack: wg.conf:\d+: .*(duplicate|same|twice).*/i,
  ],
  [
    "duplicate peer name",
    iface(
      `[Peer]\n# Name = phone\nPublicKey = ${PUB}\n[Peer]\n# Name = phone\nPublicKey = ${PUB2}\n`,
    ),
    [],
    /^wgstack: wg.conf:8: duplicate peer name "phone" \(also on line 5\)$/,
  ],
  [
    "bad listen port",
    iface().replace("51820", "65536"),
    [],
    /^wgstack: wg.conf:3: invalid ListenPort/,
  ],
  ["unknown section", iface("[Peers]\n"), [], /^wgstack: wg.conf:5: unknown section/],
  [
    "key outside a section",
    `PrivateKey = ${KEY}\n`,
    [],
    /^wgstack: wg.conf:1: PrivateKey outside a section/,
  ],
  [
    "pcap file in a missing directory",
    iface(),
    ["--pcap", "nodir/x.pcap"],
    /^wgstack: --pcap nodir\/x.pcap: /,
  ],
  [
    "--interface naming a real network interface (wg would ask us instead of it)",
    iface(),
    ["--interface", "lo", "--listen", "127.0.0.1:0", "--mode", "echo"],
    /^wgstack: UAPI socket .*\/lo\.sock: a network interface lo exists; choose another/,
  ],
];

Deno.test("bad configs and flags: one line on stderr, exit code 2", async (t) => {
  for (const [name, text, args, expected] of CASES) {
    await t.step(name, async () => {
      const cwd = await Deno.makeTempDir({ prefix: "wgstack-main-" });
      try {
        if (text !== null) await Deno.writeTextFile(`${cwd}/wg.conf`, text);
        const before = text === null ? [] : [...Deno.readDirSync(cwd)].map((e) => e.name);
        const r = await wgstack(["--no-qr", ...args], { cwd });
        assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
        const lines = r.stderr.trimEnd().split("\n");
        assert.equal(lines.length, 1, `one line: ${r.stderr}`);
        assert.match(lines[0], expected);
        if (text !== null) {
          assert.deepEqual(
            [...Deno.readDirSync(cwd)].map((e) => e.name),
            before,
            "no files created",
          );
          assert.equal(await Deno.readTextFile(`${cwd}/wg.conf`), text, "config unchanged");
        }
      } finally {
        await Deno.remove(cwd, { recursive: true });
      }
    });
  }
});

Deno.test("a UDP port already in use: one line, exit code 2", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "wgstack-main-" });
  const taken = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    const port = (taken.addr as Deno.NetAddr).port;
    await Deno.writeTextFile(`${cwd}/wg.conf`, iface());
    const r = await wgstack(["--no-qr", "--listen", `127.0.0.1:${port}`], { cwd });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^wgstack: UDP 127\\.0\\.0\\.1:${port} is already in use .* --listen\\n$`),
    );
  } finally {
    taken.close();
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("--metrics on a TCP port in use: one line, exit code 2", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "wgstack-main-" });
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = taken.addr.port;
    await Deno.writeTextFile(`${cwd}/wg.conf`, iface());
    const r = await wgstack([
      "--no-qr",
      "--no-uapi",
      "--mode",
      "echo",
      "--listen",
      "127.0.0.1:0",
      "--metrics",
      `127.0.0.1:${port}`,
    ], { cwd });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^wgstack: --metrics 127\\.0\\.0\\.1:${port}: .*\\n$`));
  } finally {
    taken.close();
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("a specific --listen address is the client's endpoint", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "wgstack-main-" });
  try {
    // The port is taken on purpose: the command stops after writing the files.
    const taken = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const port = (taken.addr as Deno.NetAddr).port;
    const r = await wgstack(["--no-qr", "--listen", `127.0.0.1:${port}`], { cwd });
    taken.close();
    assert.equal(r.code, 2);
    const client = await Deno.readTextFile(`${cwd}/wg-client-1.conf`);
    assert.match(client, new RegExp(`^Endpoint = 127\\.0\\.0\\.1:${port}$`, "m"));
    assert.match(
      await Deno.readTextFile(`${cwd}/wg.conf`),
      new RegExp(`^ListenPort = ${port}$`, "m"),
    );
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("subcommands", async (t) => {
  const cwd = await Deno.makeTempDir({ prefix: "wgstack-main-" });
  try {
    await t.step("--help and --version", async () => {
      const help = await wgstack(["--help"], { cwd });
      assert.equal(help.code, 0);
      assert.match(help.stdout, /Usage:/);
      const version = await wgstack(["--version"], { cwd });
      assert.match(version.stdout, /^wgstack \d+\.\d+\.\d+\n$/);
    });
    await t.step("genkey | pubkey", async () => {
      const key = await wgstack(["genkey"], { cwd });
      assert.equal(key.code, 0);
      assert.match(key.stdout, /^[A-Za-z0-9+/]{43}=\n$/);
      const pub = await wgstack(["pubkey"], { cwd, stdin: KEY + "\n" });
      assert.equal(pub.code, 0);
      assert.equal(
        pub.stdout,
        "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\n",
        "as wg pubkey says",
      );
      const bad = await wgstack(["pubkey"], { cwd, stdin: "not a key\n" });
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /^wgstack: pubkey: standard input is not a private key/);
    });
    await t.step("add-peer needs an existing config", async () => {
      const r = await wgstack(["add-peer", "phone"], { cwd });
      assert.equal(r.code, 2);
      assert.match(
        r.stderr,
        /^wgstack: wg.conf: no such file \(run "wgstack wg.conf" once to create it\)\n$/,
      );
    });
    await t.step("add-peer writes the client file and prints it", async () => {
      await Deno.writeTextFile(`${cwd}/wg.conf`, iface());
      const r = await wgstack(["add-peer", "phone", "--endpoint", "192.0.2.10"], { cwd });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /Added peer "phone"/);
      assert.match(r.stderr, /Endpoint = 192\.0\.2\.10:51820/);
      assert.match(r.stderr, /[█▀▄]/, "QR code drawn");
      assert.equal((await Deno.stat(`${cwd}/wg-phone.conf`)).mode! & 0o777, 0o600);
      assert.match(await Deno.readTextFile(`${cwd}/wg.conf`), /# Name = phone\nPublicKey = /);
      const again = await wgstack(["add-peer", "phone", "--no-qr"], { cwd });
      assert.equal(again.code, 2);
      assert.match(again.stderr, /^wgstack: wg.conf:\d+: a peer named "phone" already exists\n$/);
    });
    await t.step(
      "remove-peer takes the peer and its client file out; unknown names are errors",
      async () => {
        await Deno.writeTextFile(
          `${cwd}/wg.conf`,
          (await Deno.readTextFile(`${cwd}/wg.conf`)) +
            `\n[Peer]\nPublicKey = ${PUB2}\nAllowedIPs = 10.44.0.9/32\n`,
        );
        const r = await wgstack(["remove-peer", "phone"], { cwd });
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr, /Removed peer "phone"/);
        assert.match(r.stderr, /No running server answered/);
        const text = await Deno.readTextFile(`${cwd}/wg.conf`);
        assert.doesNotMatch(text, /phone/);
        assert.ok(text.endsWith(`\n\n[Peer]\nPublicKey = ${PUB2}\nAllowedIPs = 10.44.0.9/32\n`));
        assert.doesNotMatch(text, /\n\n\n/);
        await assert.rejects(Deno.stat(`${cwd}/wg-phone.conf`), Deno.errors.NotFound);
        const missing = await wgstack(["remove-peer", "phone"], { cwd });
        assert.equal(missing.code, 2);
        assert.match(missing.stderr, /^wgstack: wg.conf: no peer named "phone"\n$/);
      },
    );
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test({
  name: "a running server: SIGHUP reloads wg.conf, add-peer and remove-peer reach it",
  ignore: Deno.build.os === "windows",
  async fn() {
    const cwd = await Deno.makeTempDir({ prefix: "wgstack-main-" });
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "--no-qr", "--mode", "echo", "--listen", "127.0.0.1:0"],
      cwd,
      stdin: "null",
      stdout: "null",
      stderr: "null",
      env: { NO_COLOR: "1", WGSTACK_UAPI_DIR: `${cwd}/run` },
    }).spawn();
    /** The public keys the running server has, read from its UAPI socket. */
    const peers = async (): Promise<string[] | undefined> => {
      try {
        const lines = await uapiGet(`${cwd}/run/wg.sock`);
        return lines.filter((l) => l.startsWith("public_key="));
      } catch {
        return undefined;
      }
    };
    const until = async <T>(what: string, check: () => Promise<T | undefined>) => {
      for (let i = 0; i < 400; i++) {
        const v = await check();
        if (v !== undefined) return v;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`Timed out waiting for ${what}`);
    };
    try {
      const first = await until("the server's socket", async () => (await peers())?.length);
      assert.equal(first, 1, "client-1");
      const added = await wgstack(["add-peer", "phone", "--no-qr"], { cwd });
      assert.equal(added.code, 0, added.stderr);
      assert.match(added.stderr, /lets the new client in now/);
      assert.equal((await peers())?.length, 2);
      // A peer added by editing the file is let in by SIGHUP.
      await Deno.writeTextFile(
        `${cwd}/wg.conf`,
        `\n[Peer]\nPublicKey = ${PUB2}\nAllowedIPs = 10.44.0.99/32\n`,
        { append: true },
      );
      child.kill("SIGHUP");
      await until("the reload", async () => (await peers())?.length === 3 || undefined);
      const removed = await wgstack(["remove-peer", "phone"], { cwd });
      assert.equal(removed.code, 0, removed.stderr);
      assert.equal((await peers())?.length, 2);
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(cwd, { recursive: true });
    }
  },
});
