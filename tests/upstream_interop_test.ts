/**
 * Upstream proxies and flow hostnames against real programs (issue 13).
 *
 * Topology, all namespaces created here:
 *
 *     client ns: wireguard-go + curl + python ──veth── root: serve({ forward }) (this process)
 *                                                       │ veth
 *                                        proxy ns: danted :1080 (user/pass, UDP ASSOCIATE),
 *                                                  microsocks :1081 (user/pass),
 *                                                  tinyproxy :8888 (BasicAuth)
 *                                                       │ veth
 *                                        target ns: HTTP :8080 (a 2 MiB file), UDP echo :7,
 *                                                   openssl s_server :443
 *
 * The root namespace has an `unreachable` route to the target (and to a
 * decoy address), so a direct dial fails at once: whatever reaches the target
 * went through a proxy. DNS at the tunnel address goes to a small resolver in
 * this process (dns-packet). `decoy.test` resolves to the decoy address for
 * the client but to the target inside the proxy namespace (its own
 * /etc/hosts), so only a proxy that got the *name* (socks5h) reaches it.
 *
 * Needs root, namespaces, wireguard-go, curl, openssl, danted, microsocks,
 * tinyproxy: skips with a printed reason locally, fails under `CI=true`.
 */

import assert from "node:assert/strict";
import { decodeDns, type DnsRecord, encodeDns } from "../server/_dns_message.ts";
import { serve, type ServeLogRecord, type Server, ServerMetrics } from "@wgstack/server";
import type { ForwardFlowInfo, ForwardOptions } from "../server/forward.ts";
import { formatJson, formatText } from "../cli/log.ts";
import {
  Background,
  createVeth,
  missingOnPath,
  Netns,
  requireOrSkip,
  run,
  waitFor,
  wgGenKeyPair,
  WireGuardGo,
} from "./netns.ts";
import { waitForTcp } from "./_services.ts";

/** Skip locally, fail under CI=true (see tests/_skip.ts). */
const netns = await requireOrSkip(
  "upstream proxies (dante, microsocks, tinyproxy)",
  missingOnPath("curl", "openssl", "danted", "microsocks", "tinyproxy", "python3", "sha256sum"),
);

const SERVER_V4 = "192.0.2.1";
const CLIENT_V4 = "192.0.2.2";
const DECOY = "198.18.77.77";
const USER = "pxuser";
const PASS = "pxpass-7";
const BLOB_SIZE = 2 * 1024 * 1024;

const UDP_ECHO_PY = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7))
while True:
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
`;

/** Resolves names from `zone` (A records), NXDOMAIN for the rest; on 127.0.0.1. */
function startResolver(zone: Record<string, string>) {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    try {
      for (;;) {
        const [data, from] = await socket.receive();
        const q = decodeDns(data);
        if (!q) continue;
        const question = q.questions?.[0];
        if (!question) continue;
        const address = zone[question.name.toLowerCase()];
        const answers: DnsRecord[] = address && question.type === "A"
          ? [{ type: "A", name: question.name, ttl: 5, data: address }]
          : [];
        const response = encodeDns({
          type: "response",
          id: q.id,
          flags: 0x0180 | (address ? 0 : 3),
          questions: [question],
          answers,
        });
        await socket.send(response, from);
      }
    } catch {
      // closed
    }
  })();
  return {
    port: (socket.addr as Deno.NetAddr).port,
    async [Symbol.asyncDispose]() {
      socket.close();
      await done;
    },
  };
}

/** Writes files that `ip netns exec NAME` bind-mounts over /etc inside that namespace. */
async function etcOverlay(ns: Netns, files: Record<string, string>) {
  const dir = `/etc/netns/${ns.name}`;
  await Deno.mkdir(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/${name}`, content);
  }
  return { [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }).catch(() => {}) };
}

function spawnIn(ns: Netns, argv: string[]): Background {
  return Background.spawn(["ip", "netns", "exec", ns.name, ...argv]);
}

async function waitListening(ns: Netns, what: string, proto: "t" | "u", port: number) {
  await waitFor(what, async () => {
    const r = await ns.run(["ss", `-ln${proto}`], { check: false });
    return new RegExp(`:${port}\\s`).test(r.stdout) || undefined;
  });
}

Deno.test({
  name:
    "upstream proxies: dante, microsocks and tinyproxy carry the tunnel's flows; names and domain rules",
  ignore: netns.ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    netns.assert();
    await using stack = new AsyncDisposableStack();
    const tmp = await Deno.makeTempDir({ prefix: "px-upstream-" });
    stack.defer(() => Deno.remove(tmp, { recursive: true }));

    // --- namespaces and links ---
    const clientNs = stack.use(await Netns.create("pxc"));
    const proxyNs = stack.use(await Netns.create("pxp"));
    const targetNs = stack.use(await Netns.create("pxt"));
    const toClient = stack.use(await createVeth(null, clientNs, { prefix: "px" }));
    const toProxy = stack.use(await createVeth(null, proxyNs, { prefix: "px" }));
    const proxyTarget = stack.use(await createVeth(proxyNs, targetNs, { prefix: "px" }));
    const TARGET = proxyTarget.b.v4;
    const PROXY = toProxy.b.v4;
    // The server's namespace cannot reach the target (nor the decoy): no packet leaves.
    for (const addr of [TARGET, DECOY]) {
      await run(["ip", "route", "add", "unreachable", `${addr}/32`]);
      stack.defer(async () => {
        await run(["ip", "route", "del", "unreachable", `${addr}/32`], { check: false });
      });
    }

    // --- target services ---
    const blob = crypto.getRandomValues(new Uint8Array(65536));
    const file = new Uint8Array(BLOB_SIZE);
    for (let i = 0; i < BLOB_SIZE; i += blob.length) file.set(blob, i);
    file[12345] ^= 1;
    await Deno.mkdir(`${tmp}/www`);
    await Deno.writeFile(`${tmp}/www/blob`, file);
    const blobSha = (await run(["sha256sum", `${tmp}/www/blob`])).stdout.split(" ")[0];
    await run([
      "openssl",
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      `${tmp}/key.pem`,
      "-out",
      `${tmp}/cert.pem`,
      "-subj",
      "/CN=sni.test",
      "-days",
      "1",
    ]);
    const services = [
      spawnIn(targetNs, [
        "python3",
        "-m",
        "http.server",
        "8080",
        "--bind",
        TARGET,
        "-d",
        `${tmp}/www`,
      ]),
      spawnIn(targetNs, ["python3", "-c", UDP_ECHO_PY, TARGET]),
      spawnIn(targetNs, [
        "openssl",
        "s_server",
        "-accept",
        `${TARGET}:443`,
        "-cert",
        `${tmp}/cert.pem`,
        "-key",
        `${tmp}/key.pem`,
        "-www",
        "-quiet",
      ]),
    ];

    // --- proxies, with their own users and hosts file ---
    const hash = (await run(["openssl", "passwd", "-6", PASS])).stdout.trim();
    stack.use(
      await etcOverlay(proxyNs, {
        passwd:
          `root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n` +
          `${USER}:x:4242:4242::/nonexistent:/usr/sbin/nologin\n`,
        shadow:
          `root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n${USER}:${hash}:19000:0:99999:7:::\n`,
        group: "root:x:0:\nnogroup:x:65534:\n",
        hosts: `127.0.0.1 localhost\n${TARGET} decoy.test\n`,
      }),
    );
    stack.use(await etcOverlay(clientNs, { "resolv.conf": `nameserver ${SERVER_V4}\n` }));
    await Deno.writeTextFile(
      `${tmp}/danted.conf`,
      `logoutput: stderr
internal: ${PROXY} port = 1080
external: ${proxyTarget.a.v4}
socksmethod: username
user.privileged: root
user.unprivileged: nobody
client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }
socks block { from: 0.0.0.0/0 to: 0.0.0.0/0 port = 9999 }
socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect udpassociate udpreply }
`,
    );
    await Deno.writeTextFile(
      `${tmp}/tinyproxy.conf`,
      `Port 8888
Listen ${PROXY}
User nobody
Group nogroup
Timeout 60
MaxClients 20
BasicAuth ${USER} ${PASS}
ConnectPort 8080
ConnectPort 443
LogLevel Warning
`,
    );
    services.push(
      spawnIn(proxyNs, ["danted", "-f", `${tmp}/danted.conf`]),
      spawnIn(proxyNs, ["microsocks", "-i", PROXY, "-p", "1081", "-u", USER, "-P", PASS]),
      spawnIn(proxyNs, ["tinyproxy", "-d", "-c", `${tmp}/tinyproxy.conf`]),
    );
    stack.defer(async () => {
      for (const s of services) await s.stop(500);
    });
    await waitListening(targetNs, "the web server", "t", 8080);
    await waitListening(targetNs, "the UDP echo", "u", 7);
    await waitListening(targetNs, "openssl s_server", "t", 443);
    for (const port of [1080, 1081, 8888]) await waitForTcp(`proxy :${port}`, PROXY, port);

    // --- DNS and the server ---
    const resolver = stack.use(startResolver({
      "web.test": TARGET,
      "decoy.test": DECOY,
      "dial.deny.test": TARGET,
      "x.deny.test": TARGET,
    }));
    const serverKeys = await wgGenKeyPair();
    const clientKeys = await wgGenKeyPair();
    const logs: ServeLogRecord[] = [];
    let upstream: string | undefined;
    const asked: ForwardFlowInfo[] = [];
    let server: Server | undefined;
    let serverPort = 0;
    const start = async (extra: Partial<ForwardOptions> = {}) => {
      await server?.shutdown();
      server = await serve({
        privateKey: serverKeys.privateKey,
        hostname: toClient.a.v4,
        port: serverPort,
        peers: [{
          publicKey: clientKeys.publicKey,
          allowedIps: [`${CLIENT_V4}/32`],
          name: "phone",
        }],
        shutdownTimeout: 500,
        logger: (r) => logs.push(r),
        forward: {
          localAddresses: [SERVER_V4],
          tunnelSubnets: ["192.0.2.0/24"],
          dns: { hostname: "127.0.0.1", port: resolver.port },
          connectTimeoutMs: 5000,
          upstream: (info) => (asked.push(info), upstream),
          denyDomains: ["*.deny.test"],
          ...extra,
        },
      });
      serverPort = server.addr.port;
    };
    await start();
    stack.defer(() => server?.shutdown());
    const wg = await WireGuardGo.start(clientNs, "wg0");
    stack.defer(() => wg.stop());
    await wg.configure({
      privateKey: clientKeys.privateKey,
      listenPort: 51820,
      peers: [{
        publicKey: serverKeys.publicKey,
        endpoint: `${toClient.a.v4}:${serverPort}`,
        allowedIps: ["192.0.2.0/24", `${TARGET}/32`, `${DECOY}/32`],
      }],
    });
    await wg.up({
      addresses: [`${CLIENT_V4}/32`],
      routes: ["192.0.2.0/24", `${TARGET}/32`, `${DECOY}/32`],
      mtu: 1420,
    });

    const sh = (script: string) => clientNs.run(["bash", "-c", script], { check: false });
    const download = async (extra = "", url = `http://${TARGET}:8080/blob`) => {
      const r = await sh(`curl -sS --max-time 30 ${extra} ${url} | sha256sum`);
      return r.stdout.split(" ")[0];
    };
    const udpEcho = async (host = TARGET) => {
      const r = await clientNs.run([
        "python3",
        new URL("./fixtures/tunnel_client.py", import.meta.url).pathname,
        "udp-echo",
        host,
        "7",
        "1200",
        "20",
      ], { check: false });
      return JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}") as { ok?: number };
    };
    /** One connect attempt from the client: ok / refused / error (ICMP) / timeout, and how long. */
    const connectOnce = async (host: string, port: number) => {
      const r = await clientNs.run([
        "python3",
        "-c",
        `import socket,sys,time,json
t=time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4).close(); r="ok"
except ConnectionRefusedError: r="refused"
except (socket.timeout, TimeoutError): r="timeout"
except OSError as e: r="error"
print(json.dumps({"result": r, "ms": round((time.monotonic()-t)*1000)}))`,
        host,
        String(port),
      ], { check: false });
      return JSON.parse(r.stdout.trim()) as { result: string; ms: number };
    };
    const lastLog = (event: string, pred: (r: ServeLogRecord) => boolean = () => true) =>
      logs.findLast((r) => r.event === event && pred(r));
    /** The latest record of `event` matching `pred`, once there is one (a close is logged after the client's exit). */
    const logged = (event: string, pred: (r: ServeLogRecord) => boolean = () => true) =>
      waitFor(`a ${event} record`, () => lastLog(event, pred));

    /** How the server answered one SYN, from its counters: "rst" or "icmp". */
    const answerOf = async (host: string, port: number) => {
      const before = server!.stats().forward!;
      const r = await connectOnce(host, port);
      const after = server!.stats().forward!;
      const answer = after.tcpUnreachable > before.tcpUnreachable
        ? "icmp"
        : after.tcpRefused > before.tcpRefused
        ? "rst"
        : "none";
      return { ...r, answer };
    };

    await t.step("direct: the target is unreachable without a proxy (ICMP at once)", async () => {
      upstream = undefined;
      const r = await answerOf(TARGET, 8080);
      console.log(
        `  direct dial to the target: ${r.answer}, client saw ${r.result} after ${r.ms} ms`,
      );
      assert.equal(r.answer, "icmp", JSON.stringify(r));
      assert.notEqual(r.result, "ok");
      assert.notEqual(r.result, "timeout");
    });

    await t.step("dante (socks5, username/password): HTTP download and UDP echo", async () => {
      upstream = `socks5://${USER}:${PASS}@${PROXY}:1080`;
      assert.equal(await download(), blobSha);
      const open = lastLog("tcp-open");
      assert.equal(open?.via, `socks5://${USER}@${PROXY}:1080`, "logged without the password");
      const echo = await udpEcho();
      assert.equal(echo.ok, 20, JSON.stringify(echo));
      assert.ok(server!.stats().forward!.proxied >= 2);
    });

    await t.step("microsocks (socks5): HTTP download", async () => {
      upstream = `socks5://${USER}:${PASS}@${PROXY}:1081`;
      assert.equal(await download(), blobSha);
    });

    await t.step("tinyproxy (HTTP CONNECT, Basic auth): HTTP download", async () => {
      upstream = `http://${USER}:${PASS}@${PROXY}:8888`;
      assert.equal(await download(), blobSha);
    });

    await t.step(
      "socks5h sends the DNS-derived name: only the proxy's resolver knows the target",
      async () => {
        upstream = `socks5h://${USER}:${PASS}@${PROXY}:1081`;
        asked.length = 0;
        assert.equal(await download("", "http://decoy.test:8080/blob"), blobSha);
        const info = asked.find((i) => i.destination.address === DECOY);
        assert.equal(info?.hostname, "decoy.test", "the upstream chooser saw the name");
        assert.equal(info?.hostnameSource, "dns");
        // UDP too: dante gets the name in each datagram's header (RFC 1928 §7, ATYP 3).
        upstream = `socks5h://${USER}:${PASS}@${PROXY}:1080`;
        const echo = await udpEcho(DECOY);
        assert.equal(echo.ok, 20, JSON.stringify(echo));
        // socks5 (addresses) cannot reach the decoy address.
        upstream = `socks5://${USER}:${PASS}@${PROXY}:1081`;
        const r = await connectOnce(DECOY, 8080);
        assert.notEqual(r.result, "ok");
      },
    );

    await t.step("proxy failures answer quickly; the server keeps serving", async () => {
      const cases: [string, string, number, string][] = [
        ["wrong password (microsocks)", `socks5://${USER}:nope@${PROXY}:1081`, 8080, "rst"],
        ["wrong password (tinyproxy)", `http://${USER}:nope@${PROXY}:8888`, 8080, "rst"],
        ["wrong password (dante)", `socks5://${USER}:nope@${PROXY}:1080`, 8080, "rst"],
        ["proxy down", `socks5://${PROXY}:1099`, 8080, "icmp"],
        [
          "proxy refuses the destination (dante rule)",
          `socks5://${USER}:${PASS}@${PROXY}:1080`,
          9999,
          "rst",
        ],
        [
          "proxy refuses the destination (tinyproxy ConnectPort)",
          `http://${USER}:${PASS}@${PROXY}:8888`,
          9999,
          "rst",
        ],
        ["destination refuses (dante)", `socks5://${USER}:${PASS}@${PROXY}:1080`, 8081, "rst"],
      ];
      for (const [what, url, port, want] of cases) {
        upstream = url;
        const r = await answerOf(TARGET, port);
        console.log(`  ${what}: ${r.answer}, client saw ${r.result} after ${r.ms} ms`);
        assert.equal(r.answer, want, `${what}: ${JSON.stringify(r)}`);
        assert.ok(r.result === "refused" || r.result === "error", `${what}: ${JSON.stringify(r)}`);
      }
      upstream = `socks5://${USER}:${PASS}@${PROXY}:1080`;
      assert.equal(await download(), blobSha, "still serving");
    });

    await t.step(
      "SNI from curl over TLS, Host from plain HTTP, the DNS name when the bytes name none",
      async () => {
        upstream = `socks5://${USER}:${PASS}@${PROXY}:1080`;
        const tls = await sh(
          `curl -sk --max-time 10 https://sni.test/ --resolve sni.test:443:${TARGET}`,
        );
        assert.equal(tls.code, 0, tls.stderr);
        assert.equal((await logged("tcp-close", (r) => r.host === "sni.test")).hostSource, "sni");
        const http = await sh(`curl -s --max-time 10 -H 'Host: plain.test' http://${TARGET}:8080/`);
        assert.equal(http.code, 0, http.stderr);
        assert.equal(
          (await logged("tcp-close", (r) => r.host === "plain.test")).hostSource,
          "http",
        );
        const raw = await clientNs.run([
          "python3",
          "-c",
          `import socket
s=socket.create_connection(("web.test", 8080), timeout=5); s.sendall(b"\\x00\\x01binary\\r\\n\\r\\n"); s.recv(100); s.close()`,
        ], { check: false });
        assert.equal(raw.code, 0, raw.stderr);
        await waitFor(
          "the raw connection's close",
          () => lastLog("tcp-close", (r) => r.host === "web.test") ? true : undefined,
        );
        assert.equal(lastLog("tcp-close", (r) => r.host === "web.test")?.hostSource, "dns");
        const stats = server!.stats().forward!;
        assert.ok(
          stats.hostnames.sni >= 1 && stats.hostnames.http >= 1 && stats.hostnames.dns >= 1,
        );
        // The same counts as Prometheus metrics, labelled by source only (bounded).
        const text = await new ServerMetrics(server!).text();
        for (const source of ["sni", "http", "dns"] as const) {
          const line = text.split("\n").find((l) =>
            l.startsWith(`wgstack_flows_named_total{device="wgstack",source="${source}"}`)
          );
          assert.equal(Number(line?.split(" ")[1]), stats.hostnames[source], source);
        }
      },
    );

    await t.step("a hostile name is escaped in the text and JSON logs", async () => {
      upstream = `socks5://${USER}:${PASS}@${PROXY}:1080`;
      await sh(
        `curl -s --max-time 10 -H $'Host: <script>x\\x1b[2J\\x07</script>' http://${TARGET}:8080/`,
      );
      const record = await logged("tcp-close", (r) => String(r.host).includes("<script>"));
      assert.ok(record, "the hostile name was logged");
      const when = new Date(0);
      for (const line of [formatText(record as never, when), formatJson(record as never, when)]) {
        // deno-lint-ignore no-control-regex
        assert.doesNotMatch(line, /[\x00-\x1f\x7f]/, line);
        assert.match(line, /\\u001b\[2j/, line);
      }
    });

    await t.step("domain rules: SNI name refused, DNS-forwarder answer blocked", async () => {
      const refusedBefore = server!.stats().forward!.domainRefused;
      const tls = await sh(
        `curl -sk --max-time 10 https://a.deny.test/ --resolve a.deny.test:443:${TARGET}`,
      );
      assert.notEqual(tls.code, 0, "the TLS connection was reset");
      assert.equal(
        (await logged("domain-refused", (r) => r.host === "a.deny.test")).hostSource,
        "sni",
      );
      assert.equal(
        (await logged("tcp-close", (r) => r.host === "a.deny.test")).end,
        "domain refused",
      );
      assert.equal(server!.stats().forward!.domainRefused, refusedBefore + 1);
      const dns = await sh("getent hosts x.deny.test");
      assert.notEqual(dns.code, 0, "the blocked name does not resolve");
      assert.equal((await logged("dns-blocked")).host, "x.deny.test");
      assert.ok(server!.stats().forward!.dnsBlocked >= 1);
      assert.equal((await sh("getent hosts web.test")).stdout.trim().split(/\s+/)[0], TARGET);
    });

    await t.step("domain rules: a DNS-derived name is refused at dial time (RST)", async () => {
      await start({ dnsBlock: "off" });
      // A new server has no session: re-adding the peer makes the client handshake at once.
      await wg.wg(["set", "wg0", "peer", serverKeys.publicKey, "remove"]);
      await wg.wg([
        "set",
        "wg0",
        "peer",
        serverKeys.publicKey,
        "endpoint",
        `${toClient.a.v4}:${serverPort}`,
        "allowed-ips",
        `192.0.2.0/24,${TARGET}/32,${DECOY}/32`,
      ]);
      upstream = `socks5://${USER}:${PASS}@${PROXY}:1080`;
      const r = await clientNs.run([
        "python3",
        "-c",
        `import socket,json
try:
    socket.create_connection(("dial.deny.test", 8080), timeout=4).close(); print("ok")
except ConnectionRefusedError: print("refused")`,
      ], { check: false });
      assert.equal(r.stdout.trim(), "refused", r.stderr);
      const refused = await logged("domain-refused", (x) => x.host === "dial.deny.test");
      assert.equal(refused?.protocol, "tcp");
      assert.equal(refused?.hostSource, "dns");
    });
  },
});
