/**
 * The `wgstack` command end to end, the way a person uses it: the CLI
 * generates its config on first run, a real `wireguard-go` client is set up
 * from the generated client file, and the client's kernel talks through the
 * tunnel to services on a third namespace.
 *
 * Topology (all addresses from test ranges):
 *
 * ```
 *  client ns (wireguard-go wg0: 198.18.0.2, fd00:44::2)
 *     │ veth (outer WireGuard UDP)
 *  server ns (wgstack forward mode; tunnel address 198.18.0.1, fd00:44::1)
 *     │ veth (forwarded connections)
 *  services ns (HTTP :8080, UDP echo :7, DNS :5353 UDP+TCP; port 9 closed)
 * ```
 *
 * The client routes the services' subnets and the tunnel subnets through
 * wg0. Skips with a printed reason when not root or tools are missing;
 * fails under `CI=true`.
 */

import assert from "node:assert/strict";
import { createVeth, Netns, requireOrSkip, run, waitFor, WireGuardGo } from "./netns.ts";

const netns = await requireOrSkip("wgstack CLI interop");

const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;
// The servers this file starts (child processes inherit it) keep their UAPI
// sockets out of the machine-wide /var/run/wireguard.
const UAPI_DIR = Deno.makeTempDirSync({ prefix: "wgstack-uapi-" });
Deno.env.set("WGSTACK_UAPI_DIR", UAPI_DIR);
globalThis.addEventListener("unload", () => Deno.removeSync(UAPI_DIR, { recursive: true }));
const TUNNEL = ["198.18.0.1/24", "fd00:44::1/64"];
const SERVER_V4 = "198.18.0.1";
const SERVER_V6 = "fd00:44::1";
const BIG = 50 * 1024 * 1024;
const MID = 1024 * 1024;

/** Services: HTTP GET /big, /mid (files), POST (answers the body's sha256), UDP echo, DNS. */
const SERVICES_PY = String.raw`
import hashlib, os, socket, socketserver, struct, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

root, http_port, udp_port, dns_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        path = os.path.join(root, self.path.strip("/"))
        if not self.path.strip("/") or not os.path.isfile(path):
            body = ("hello " + self.client_address[0] + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.end_headers()
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                self.wfile.write(chunk)
    def do_POST(self):
        left = int(self.headers["Content-Length"])
        h = hashlib.sha256()
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        body = (h.hexdigest() + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class Http6(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 128

def dual(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s

def answer(query):
    # Header: same id, response + recursion available, 1 question, 1 answer.
    qid = query[:2]
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12:end + 5]
    header = qid + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + bytes([192, 0, 2, 55])
    return header + question + record

def udp_echo():
    s = dual(socket.SOCK_DGRAM)
    s.bind(("::", udp_port))
    while True:
        data, addr = s.recvfrom(65535)
        s.sendto(data, addr)

def dns_udp():
    s = dual(socket.SOCK_DGRAM)
    s.bind(("::", dns_port))
    while True:
        data, addr = s.recvfrom(65535)
        s.sendto(answer(data), addr)

def dns_tcp():
    s = dual(socket.SOCK_STREAM)
    s.bind(("::", dns_port))
    s.listen(16)
    while True:
        conn, _ = s.accept()
        with conn:
            n = struct.unpack("!H", conn.recv(2))[0]
            data = b""
            while len(data) < n:
                data += conn.recv(n - len(data))
            reply = answer(data)
            conn.sendall(struct.pack("!H", len(reply)) + reply)

for target in (udp_echo, dns_udp, dns_tcp):
    threading.Thread(target=target, daemon=True).start()
server = Http6(("::", http_port), Handler)
print("ready", flush=True)
server.serve_forever()
`;

/** Client-side probes: udp echo, dns over udp/tcp, icmp echo (raw socket). */
const CLIENT_PY = String.raw`
import os, socket, struct, sys, time

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF

def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET

def query():
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00" + struct.pack("!HH", 1, 1)

def parse_a(reply):
    assert reply[:2] == b"\x12\x34", "dns id"
    return ".".join(str(b) for b in reply[-4:])

cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if cmd == "udp-echo":
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(5)
    for size in (1, 100, 1200):
        payload = os.urandom(size)
        s.sendto(payload, (host, port))
        data, _ = s.recvfrom(65535)
        assert data == payload, "echo mismatch"
    print("ok")
elif cmd == "dns-udp":
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(query(), (host, port))
    print(parse_a(s.recvfrom(65535)[0]))
elif cmd == "dns-tcp":
    s = socket.create_connection((host, port), timeout=5)
    q = query()
    s.sendall(struct.pack("!H", len(q)) + q)
    n = struct.unpack("!H", s.recv(2))[0]
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    print(parse_a(data))
elif cmd == "ping":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(3)
    ident = os.getpid() & 0xFFFF
    got = 0
    for seq in range(port):
        body = struct.pack("!d", time.time()) + b"wgstack-ping"
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        packet = struct.pack("!BBHHH", 8, 0, checksum(header + body), ident, seq) + body
        s.sendto(packet, (host, 0))
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                data, addr = s.recvfrom(65535)
            except socket.timeout:
                break
            icmp = data[(data[0] & 15) * 4:]
            t, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
            if t == 0 and rid == ident and rseq == seq and addr[0] == host and icmp[8:] == body:
                got += 1
                break
    print(got)
`;

async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(data)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** A background process in a namespace whose output lines are collected. */
class Proc {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  readonly #pumps: Promise<void>[];
  constructor(ns: Netns, argv: string[]) {
    this.child = new Deno.Command("ip", {
      args: ["netns", "exec", ns.name, ...argv],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.#pumps = [
      this.#pump(this.child.stdout, (t) => this.stdout += t),
      this.#pump(this.child.stderr, (t) => this.stderr += t),
    ];
  }
  async #pump(stream: ReadableStream<Uint8Array>, add: (t: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) add(decoder.decode(chunk, { stream: true }));
  }
  /** Sends `signal` and waits for the exit (SIGKILL after 10 s). */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      this.child.kill(signal);
    } catch {
      // already exited
    }
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // already exited
      }
    }, 10_000);
    const status = await this.child.status;
    clearTimeout(timer);
    await Promise.all(this.#pumps);
    return status;
  }
}

/** The JSON log records the CLI printed so far. */
function records(proc: Proc): Record<string, unknown>[] {
  return proc.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

/** A wg-quick file made `wg setconf`-ready: the wg-quick-only keys removed. */
function stripWgQuick(text: string): { conf: string; addresses: string[] } {
  const addresses: string[] = [];
  const lines = text.split("\n").filter((line) => {
    const m = /^\s*(\w+)\s*=\s*(.*)$/.exec(line);
    if (!m) return true;
    const key = m[1].toLowerCase();
    if (key === "address") addresses.push(...m[2].split(",").map((s) => s.trim()));
    return ![
      "address",
      "dns",
      "mtu",
      "table",
      "preup",
      "postup",
      "predown",
      "postdown",
      "saveconfig",
    ]
      .includes(key);
  });
  return { conf: lines.join("\n"), addresses };
}

Deno.test({
  name: "wgstack CLI: a wireguard-go client set up from the generated file, forward mode",
  ignore: netns.ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    netns.assert();
    await using stack = new AsyncDisposableStack();
    const dir = await Deno.makeTempDir({ prefix: "wgstack-cli-" });
    stack.defer(() => Deno.remove(dir, { recursive: true }));

    const server = stack.use(await Netns.create("wgcs"));
    const client = stack.use(await Netns.create("wgcc"));
    const services = stack.use(await Netns.create("wgcd"));
    const outer = stack.use(await createVeth(server, client)); // a: server, b: client
    const inner = stack.use(await createVeth(server, services)); // a: server, b: services
    const target4 = inner.b.v4;
    const target6 = inner.b.v6;

    // Services.
    const big = randomBytes(BIG);
    const mid = randomBytes(MID);
    await Deno.writeFile(`${dir}/big`, big);
    await Deno.writeFile(`${dir}/mid`, mid);
    await Deno.writeTextFile(`${dir}/services.py`, SERVICES_PY);
    await Deno.writeTextFile(`${dir}/client.py`, CLIENT_PY);
    const svc = new Proc(services, ["python3", `${dir}/services.py`, dir, "8080", "7", "5353"]);
    stack.defer(async () => void await svc.stop());
    await waitFor("services to start", () => svc.stdout.includes("ready") || undefined);

    // The CLI, first run: generates wg.conf and wg-client-1.conf.
    const pcapPath = `${dir}/tunnel.pcap`;
    const cli = new Proc(server, [
      Deno.execPath(),
      "run",
      "-A",
      MAIN,
      `${dir}/wg.conf`,
      "--address",
      TUNNEL.join(","),
      "--endpoint",
      outer.a.v4,
      "--dns-upstream",
      `${target4}:5353`,
      "--connect-timeout",
      "3",
      "--log-format",
      "json",
      "--pcap",
      pcapPath,
      "--pcap-max-size",
      "0",
    ]);
    let cliStopped = false;
    stack.defer(async () => {
      if (!cliStopped) await cli.stop("SIGKILL");
    });
    await waitFor("the CLI to listen", () => {
      if (/internal error|wgstack: /.test(cli.stderr)) throw new Error(cli.stderr);
      return cli.stderr.includes("listening on UDP") || undefined;
    }, { timeoutMs: 30_000 });

    let clientText = "";
    await t.step(
      "first run wrote both files (0600) and printed the client config + QR",
      async () => {
        for (const f of ["wg.conf", "wg-client-1.conf"]) {
          assert.equal((await Deno.stat(`${dir}/${f}`)).mode! & 0o777, 0o600, f);
        }
        clientText = await Deno.readTextFile(`${dir}/wg-client-1.conf`);
        assert.match(
          clientText,
          new RegExp(`^Endpoint = ${outer.a.v4.replaceAll(".", "\\.")}:51820$`, "m"),
        );
        assert.match(clientText, /^DNS = 198\.18\.0\.1, fd00:44::1$/m);
        assert.match(clientText, /^AllowedIPs = 0\.0\.0\.0\/0, ::\/0$/m);
        assert.ok(cli.stderr.includes("PrivateKey = "), "client config printed");
        assert.match(cli.stderr, /[█▀▄]{10}/, "QR code printed");
      },
    );

    // The client: wireguard-go configured from the generated file.
    const wg = stack.use(await WireGuardGo.start(client));
    await t.step("the generated client config is accepted by wg setconf", async () => {
      const { conf, addresses } = stripWgQuick(clientText);
      assert.deepEqual(addresses, ["198.18.0.2/32", "fd00:44::2/128"]);
      await Deno.writeTextFile(`${dir}/client-setconf.conf`, conf, { mode: 0o600 });
      await wg.wg(["setconf", "wg0", `${dir}/client-setconf.conf`]);
      const shown = await wg.wg(["show", "wg0", "dump"]);
      assert.ok(shown.includes(`${outer.a.v4}:51820`), shown);
      await wg.up({
        addresses,
        routes: ["198.18.0.0/24", "fd00:44::/64", `${target4}/32`, `${target6}/128`],
      });
    });

    await t.step("the server file (peer names in comments) is accepted by wg setconf", async () => {
      const { conf } = stripWgQuick(await Deno.readTextFile(`${dir}/wg.conf`));
      assert.match(conf, /^# Name = client-1$/m);
      await Deno.writeTextFile(`${dir}/server-setconf.conf`, conf, { mode: 0o600 });
      const other = await WireGuardGo.start(client, "wg1");
      try {
        await other.wg(["setconf", "wg1", `${dir}/server-setconf.conf`]);
        const dump = await other.wg(["show", "wg1", "allowed-ips"]);
        assert.match(dump, /198\.18\.0\.2\/32/);
        assert.match(dump, /fd00:44::2\/128/);
      } finally {
        await other.stop();
      }
    });

    const inClient = (argv: string[], check = true) => client.run(argv, { check });
    const http4 = `http://${target4}:8080`;

    await t.step("HTTP download of 50 MB, sha256 matches", async () => {
      const out = `${dir}/big.down`;
      await inClient(["curl", "-sS", "--fail", "-m", "120", "-o", out, `${http4}/big`]);
      assert.equal(await sha256Hex(await Deno.readFile(out)), await sha256Hex(big));
      await Deno.remove(out);
      const close = await waitFor(
        "the download's tcp-close log",
        () =>
          records(cli).find((r) =>
            r.event === "tcp-close" && r.destination === `${target4}:8080` &&
            (r.bytesDown as number) >= BIG
          ),
      );
      assert.equal(close.peer, "client-1");
      assert.equal(close.end, "closed");
      assert.equal(close.source, `198.18.0.2:${String(close.source).split(":")[1]}`);
    });

    await t.step("HTTP upload of 8 MB, sha256 echoed by the server", async () => {
      const body = randomBytes(8 * 1024 * 1024);
      await Deno.writeFile(`${dir}/up`, body);
      const r = await inClient([
        "curl",
        "-sS",
        "--fail",
        "-m",
        "60",
        "--data-binary",
        `@${dir}/up`,
        `${http4}/upload`,
      ]);
      assert.equal(r.stdout.trim(), await sha256Hex(body));
    });

    await t.step("IPv6 through the tunnel", async () => {
      const r = await inClient([
        "curl",
        "-sS",
        "--fail",
        "-m",
        "20",
        "-g",
        `http://[${target6}]:8080/`,
      ]);
      // The service sees the server's own address: the connection was dialled anew.
      assert.match(
        r.stdout,
        new RegExp(`^hello (::ffff:)?${inner.a.v6.replaceAll(".", "\\.")}\\n$`),
      );
      const mid6 = `${dir}/mid6.down`;
      await inClient([
        "curl",
        "-sS",
        "--fail",
        "-m",
        "60",
        "-g",
        "-o",
        mid6,
        `http://[${target6}]:8080/mid`,
      ]);
      assert.equal(await sha256Hex(await Deno.readFile(mid6)), await sha256Hex(mid));
    });

    await t.step("UDP echo, IPv4 and IPv6", async () => {
      for (const host of [target4, target6]) {
        const r = await inClient(["python3", `${dir}/client.py`, "udp-echo", host, "7"]);
        assert.equal(r.stdout.trim(), "ok", host);
      }
    });

    await t.step("DNS to the tunnel address (UDP and TCP, v4 and v6)", async () => {
      for (const mode of ["dns-udp", "dns-tcp"]) {
        for (const host of [SERVER_V4, SERVER_V6]) {
          const r = await inClient(["python3", `${dir}/client.py`, mode, host, "53"]);
          assert.equal(r.stdout.trim(), "192.0.2.55", `${mode} ${host}`);
        }
      }
    });

    await t.step("50 parallel downloads", async () => {
      const args = ["curl", "-sS", "--fail", "-m", "120", "-Z", "--parallel-max", "50"];
      for (let i = 0; i < 50; i++) args.push("-o", `${dir}/par${i}`, `${http4}/mid`);
      await inClient(args);
      const want = await sha256Hex(mid);
      for (let i = 0; i < 50; i++) {
        assert.equal(await sha256Hex(await Deno.readFile(`${dir}/par${i}`)), want, `download ${i}`);
        await Deno.remove(`${dir}/par${i}`);
      }
    });

    await t.step("a closed port is refused with RST", async () => {
      const r = await inClient(["curl", "-sS", "-m", "10", `http://${target4}:9/`], false);
      // 7 is "connection refused"; a timeout would be 28.
      assert.equal(r.code, 7, `curl exit code 7 (connection refused): ${r.stderr}`);
      const refused = records(cli).find((x) =>
        x.event === "tcp-refused" && x.destination === `${target4}:9`
      );
      assert.equal(refused?.answer, "rst");
      assert.match(String(refused?.reason), /^ConnectionRefused/);
    });

    await t.step(
      "a dial that times out is answered (ICMP) after --connect-timeout",
      async () => {
        await services.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "81", "-j", "DROP"]);
        const r = await inClient([
          "python3",
          "-c",
          "import errno, socket, sys\n" +
          "try:\n" +
          "    socket.create_connection((sys.argv[1], 81), timeout=15)\n" +
          "    print('connected')\n" +
          "except OSError as e:\n" +
          "    print(errno.errorcode.get(e.errno, e))\n",
          target4,
        ]);
        // The netstack's "icmp" answer is destination unreachable (port unreachable), which
        // the client's kernel reports as ECONNREFUSED: before its own connect timeout.
        assert.match(r.stdout.trim(), /^(ECONNREFUSED|EHOSTUNREACH|ENETUNREACH)$/);
        const refused = records(cli).find((x) =>
          x.event === "tcp-refused" && x.destination === `${target4}:81`
        );
        assert.equal(refused?.answer, "icmp", "logged as refused with icmp");
        assert.match(String(refused?.reason), /^timed out after \d+ ms$/, "by --connect-timeout");
      },
    );

    await t.step("ping through the tunnel is answered", async () => {
      const r = await inClient(["python3", `${dir}/client.py`, "ping", target4, "3"]);
      assert.equal(r.stdout.trim(), "3");
    });

    /** Connects from `ns` and prints what the service sent, or the errno name. */
    const probe = async (ns: Netns, host: string, port: number) =>
      (await ns.run([
        "python3",
        "-c",
        "import errno, socket, sys\n" +
        "try:\n" +
        "    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n" +
        "    print(s.recv(100).decode().strip() or 'connected')\n" +
        "except OSError as e:\n" +
        "    print(errno.errorcode.get(e.errno, e))\n",
        host,
        String(port),
      ])).stdout.trim();

    await t.step(
      "a service on the server's own address is unreachable through the tunnel",
      async () => {
        const own = inner.a.v4;
        const host = new Proc(server, [
          "python3",
          "-c",
          "import socket\n" +
          "s = socket.socket()\n" +
          "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n" +
          "s.bind(('0.0.0.0', 8081))\n" +
          "s.listen(16)\n" +
          "print('ready', flush=True)\n" +
          "while True:\n" +
          "    c, _ = s.accept()\n" +
          "    c.sendall(b'host-only\\n')\n" +
          "    c.close()\n",
        ]);
        stack.defer(async () => void await host.stop("SIGKILL"));
        await waitFor("the host-only service", () => host.stdout.includes("ready") || undefined);
        assert.equal(await probe(server, own, 8081), "host-only", "the host itself reaches it");
        await client.run(["ip", "route", "add", `${own}/32`, "dev", "wg0"]);
        assert.equal(await probe(client, own, 8081), "ECONNREFUSED");
        assert.equal(await probe(client, SERVER_V4, 8081), "ECONNREFUSED");
      },
    );

    await t.step("a metadata address in the target namespace is refused, others work", async () => {
      const metadata = "169.254.169.254";
      await services.run(["ip", "addr", "add", `${metadata}/32`, "dev", "lo"]);
      await server.run(["ip", "route", "add", `${metadata}/32`, "via", target4]);
      await client.run(["ip", "route", "add", `${metadata}/32`, "dev", "wg0"]);
      const direct = await server.run(["curl", "-sS", "-m", "5", `http://${metadata}:8080/`]);
      assert.match(direct.stdout, /^hello /, "the server's namespace reaches it");
      const r = await inClient(["curl", "-sS", "-m", "5", `http://${metadata}:8080/`], false);
      assert.equal(r.code, 7, `curl exit code 7 (connection refused): ${r.stderr}`);
      const ok = await inClient(["curl", "-sS", "-m", "5", `${http4}/`]);
      assert.match(ok.stdout, /^hello /);
    });

    await t.step("SIGTERM: quick graceful shutdown with a summary, even mid-download", async () => {
      // A slow download still running when the signal comes.
      const slow = new Proc(client, [
        "curl",
        "-sS",
        "--limit-rate",
        "200K",
        "-o",
        "/dev/null",
        `${http4}/big`,
      ]);
      stack.defer(async () => void await slow.stop("SIGKILL"));
      const opened = records(cli).filter((r) => r.event === "tcp-open").length;
      await waitFor(
        "the slow download to start",
        () => records(cli).filter((r) => r.event === "tcp-open").length > opened || undefined,
      );
      await new Promise((r) => setTimeout(r, 300));
      const status = await cli.stop("SIGTERM");
      cliStopped = true;
      assert.equal(status.code, 0, cli.stderr);
      // Quick: the relay ended the download itself, nothing waited for the
      // shutdown timeout to be reset.
      const shutdown = records(cli).find((r) => r.event === "shutdown");
      assert.equal(shutdown?.tcpReset, 0, JSON.stringify(shutdown));
      assert.ok(
        records(cli).some((r) => r.event === "tcp-close" && r.end === "shutdown"),
        "the open download ended by the shutdown",
      );
      const summary = records(cli).find((r) => r.event === "summary");
      assert.ok(summary, "summary logged");
      assert.ok((summary.tcpAccepted as number) >= 55);
      assert.ok((summary.bytesDown as number) >= BIG + 51 * MID);
      assert.ok(records(cli).some((r) => r.event === "handshake"), "handshake logged");
      const refused = summary.refused as Record<string, number>;
      assert.ok(refused["own-address"] >= 1, JSON.stringify(refused));
      assert.ok(refused.metadata >= 1, JSON.stringify(refused));
    });

    await t.step("a normal start prints no key; show-client prints the client's", async () => {
      const secrets: string[] = [];
      for (const f of ["wg.conf", "wg-client-1.conf"]) {
        const text = await Deno.readTextFile(`${dir}/${f}`);
        for (const m of text.matchAll(/^\s*(?:PrivateKey|PresharedKey)\s*=\s*(\S+)/gm)) {
          secrets.push(m[1]);
        }
      }
      assert.ok(secrets.length >= 3, "keys found in the files");
      const again = new Proc(server, [Deno.execPath(), "run", "-A", MAIN, `${dir}/wg.conf`]);
      stack.defer(async () => void await again.stop("SIGKILL"));
      await waitFor(
        "the second start",
        () => again.stderr.includes("listening on UDP") || undefined,
        {
          timeoutMs: 30_000,
        },
      );
      assert.equal((await again.stop("SIGTERM")).code, 0, again.stderr);
      const output = again.stdout + again.stderr;
      assert.match(output, /show-client/, "says how to print a client");
      for (const secret of secrets) assert.ok(!output.includes(secret), "a key was printed");
      const shown = await server.run([
        Deno.execPath(),
        "run",
        "-A",
        MAIN,
        "show-client",
        "client-1",
        `${dir}/wg.conf`,
        "--no-qr",
      ]);
      assert.ok(shown.stderr.includes(secrets.find((k) => clientText.includes(k))!));
    });

    await t.step("the pcap file is read by tshark", async () => {
      // One pass over the file: protocol hierarchy and UDP conversations.
      const r = await run(["tshark", "-r", pcapPath, "-q", "-z", "io,phs", "-z", "conv,udp"]);
      for (const proto of ["ip", "ipv6", "tcp", "udp", "icmp", "dns", "http"]) {
        assert.match(r.stdout, new RegExp(`^\\s+${proto}\\s+frames:\\d+`, "m"), proto);
      }
      assert.match(r.stdout, /198\.18\.0\.1:53\b/, "DNS with the tunnel address");
      assert.match(r.stdout, new RegExp(`${target4.replaceAll(".", "\\.")}:7\\b`), "UDP echo");
    });
  },
});

Deno.test({
  name: "wgstack CLI: echo mode and a port already in use",
  ignore: netns.ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    netns.assert();
    await using stack = new AsyncDisposableStack();
    const dir = await Deno.makeTempDir({ prefix: "wgstack-cli-" });
    stack.defer(() => Deno.remove(dir, { recursive: true }));
    const server = stack.use(await Netns.create("wgcs"));
    const client = stack.use(await Netns.create("wgcc"));
    const outer = stack.use(await createVeth(server, client));

    const cli = new Proc(server, [
      Deno.execPath(),
      "run",
      "-A",
      MAIN,
      `${dir}/wg.conf`,
      "--mode",
      "echo",
      "--address",
      TUNNEL.join(","),
      "--endpoint",
      outer.a.v4,
      "--no-qr",
      "--listen",
      "0.0.0.0:51820",
    ]);
    let stopped = false;
    stack.defer(async () => {
      if (!stopped) await cli.stop("SIGKILL");
    });
    await waitFor("the CLI to listen", () => {
      if (/wgstack: /.test(cli.stderr)) throw new Error(cli.stderr);
      return cli.stderr.includes("listening on UDP") || undefined;
    }, { timeoutMs: 30_000 });
    assert.match(cli.stderr, /Echo mode: .*\n.*nc 198\.18\.0\.1 7/);

    await t.step("a second server on the same port: one line, exit code 2", async () => {
      const r = await server.run([
        Deno.execPath(),
        "run",
        "-A",
        MAIN,
        `${dir}/wg.conf`,
        "--no-qr",
        "--listen",
        "0.0.0.0:51820",
      ], { check: false });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^wgstack: UDP 0\.0\.0\.0:51820 is already in use .*\n$/);
    });

    await t.step("TCP and UDP to any address are echoed", async () => {
      const wg = stack.use(await WireGuardGo.start(client));
      const { conf, addresses } = stripWgQuick(await Deno.readTextFile(`${dir}/wg-client-1.conf`));
      await Deno.writeTextFile(`${dir}/c.conf`, conf, { mode: 0o600 });
      await wg.wg(["setconf", "wg0", `${dir}/c.conf`]);
      await wg.up({ addresses, routes: ["198.18.0.0/24", "192.0.2.0/24", "fd00:44::/64"] });
      await Deno.writeTextFile(`${dir}/client.py`, CLIENT_PY);
      const udp = await client.run(["python3", `${dir}/client.py`, "udp-echo", "192.0.2.7", "9"]);
      assert.equal(udp.stdout.trim(), "ok");
      const body = randomBytes(2 * 1024 * 1024);
      await Deno.writeFile(`${dir}/body`, body);
      // Read while writing: an echo peer that is not read from stops reading too.
      const tcp = await client.run([
        "python3",
        "-c",
        "import hashlib, socket, sys, threading\n" +
        "data = open(sys.argv[1], 'rb').read()\n" +
        "s = socket.create_connection(('198.18.0.1', 7), timeout=20)\n" +
        "h = hashlib.sha256()\n" +
        "def read():\n" +
        "    while True:\n" +
        "        c = s.recv(1 << 16)\n" +
        "        if not c:\n" +
        "            break\n" +
        "        h.update(c)\n" +
        "t = threading.Thread(target=read)\n" +
        "t.start()\n" +
        "s.sendall(data)\n" +
        "s.shutdown(socket.SHUT_WR)\n" +
        "t.join()\n" +
        "print(h.hexdigest())\n",
        `${dir}/body`,
      ]);
      assert.equal(tcp.stdout.trim(), await sha256Hex(body));
    });

    await t.step("SIGINT stops it with exit code 0", async () => {
      const status = await cli.stop("SIGINT");
      stopped = true;
      assert.equal(status.code, 0, cli.stderr);
      assert.match(cli.stdout, /summary/);
    });
  },
});
