/**
 * `runCli` in-process on loopback, no root needed: the command generates its
 * config, and a WireGuard client made from our own `Device` and the
 * generated client file sends inner UDP through the tunnel to echo mode.
 */
import assert from "node:assert/strict";
import { Device, type Endpoint, parseConfig } from "@wgstack/wireguard";
import { buildUdpPacket, parseUdpPacket } from "../tests/netns.ts";
import { requirement } from "../tests/_skip.ts";
import { type ListeningServer, runCli } from "./run.ts";
import { uapiGet } from "@wgstack/server";

/** A WireGuard client: our Device on a loopback UDP socket (replaceable, to roam), with a timer. */
class LoopbackClient {
  socket!: Deno.DatagramConn;
  readonly device: Device;
  readonly delivered: Uint8Array[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #loops: Promise<void>[] = [];
  #closed = false;

  constructor(clientText: string, serverPort: number) {
    const { config } = parseConfig(clientText);
    this.device = new Device({
      privateKey: config.interface.privateKey,
      wallClock: () => Date.now(),
      sendDatagram: (d, to: Endpoint) => {
        this.socket.send(d.slice(), { transport: "udp", hostname: to.address, port: to.port })
          .catch(() => {});
      },
      deliverPacket: (p) => void this.delivered.push(p.slice()),
    });
    const peer = config.peers[0];
    this.device.addPeer({
      publicKey: peer.publicKey,
      presharedKey: peer.presharedKey,
      allowedIps: ["0.0.0.0/0", "::/0"],
      endpoint: { address: "127.0.0.1", port: serverPort },
    });
    this.roam();
  }

  /** Moves to a new socket (a new outer port), as a phone changing networks does. */
  roam(): void {
    const old = this.socket;
    const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    this.socket = socket;
    old?.close();
    this.#loops.push((async () => {
      try {
        for await (const [data, addr] of socket) {
          const a = addr as Deno.NetAddr;
          this.device.receive(data, { address: a.hostname, port: a.port }, performance.now());
          this.#arm();
        }
      } catch {
        // closed
      }
    })());
  }

  get port(): number {
    return (this.socket.addr as Deno.NetAddr).port;
  }

  #arm(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    const deadline = this.device.nextDeadline();
    if (deadline === Infinity) return;
    this.#timer = setTimeout(() => {
      this.device.poll(performance.now());
      this.#arm();
    }, Math.max(0, Math.ceil(deadline - performance.now())));
  }

  send(packet: Uint8Array): void {
    this.device.send(packet, performance.now());
    this.#arm();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.socket.close();
    await Promise.all(this.#loops);
  }
}

/** The packets of a pcap file, after checking its header (LE, LINKTYPE_RAW). */
function pcapRecords(file: Uint8Array): Uint8Array[] {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  assert.equal(view.getUint32(0, true), 0xa1b2c3d4);
  assert.equal(view.getUint32(20, true), 101);
  const out: Uint8Array[] = [];
  for (let o = 24; o < file.length;) {
    const captured = view.getUint32(o + 8, true);
    out.push(file.subarray(o + 16, o + 16 + captured));
    o += 16 + captured;
  }
  return out;
}

async function until<T>(what: string, f: () => T | undefined, ms = 10_000): Promise<T> {
  const end = performance.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (performance.now() > end) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test({
  name: "runCli: first run, a client through the tunnel, echo, pcap, shutdown",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "wgstack-run-" });
    const stderr: string[] = [];
    const logs: Record<string, unknown>[] = [];
    const controller = new AbortController();
    let server: ListeningServer | undefined;
    const exit = runCli([
      `${dir}/wg.conf`,
      "--mode",
      "echo",
      "--listen",
      "127.0.0.1:0",
      "--address",
      "198.18.0.1/24,fd00:44::1/64",
      "--endpoint",
      "127.0.0.1",
      "--log-format",
      "json",
      "--log-level",
      "debug",
      "--pcap",
      `${dir}/t.pcap`,
      "--metrics",
      "127.0.0.1:0",
    ], {
      stderr: (s) => void stderr.push(s),
      stdout: (s) => void stderr.push(s),
      logLine: (l) => void logs.push(JSON.parse(l)),
      isTerminal: false,
      signal: controller.signal,
      onListening: (s) => server = s,
      uapiDirectory: `${dir}/run`,
    });
    let client: LoopbackClient | undefined;
    try {
      const listening = await until("the server", () => server);
      await t.step("banner: client config with the real port, QR code", async () => {
        await until("the banner", () => stderr.join("").includes("Press Ctrl-C") || undefined);
        const text = stderr.join("");
        assert.match(text, /Created .*wg\.conf and .*wg-client-1\.conf \(mode 0600\)/);
        assert.match(text, new RegExp(`Endpoint = 127\\.0\\.0\\.1:${listening.addr.port}\\n`));
        assert.match(text, /[█▀▄]{10}/);
        assert.match(text, /echo mode, listening on UDP 127\.0\.0\.1:\d+/);
      });

      const clientText = await Deno.readTextFile(`${dir}/wg-client-1.conf`);
      client = new LoopbackClient(clientText, listening.addr.port);
      /** Sends a datagram through the tunnel to the echo service and checks the answer. */
      const echoed = async (text: string) => {
        const payload = new TextEncoder().encode(text);
        const before = client!.delivered.length;
        client!.send(buildUdpPacket({
          src: "198.18.0.2",
          dst: "192.0.2.9",
          srcPort: 40000,
          dstPort: 9,
          payload,
        }));
        const reply = parseUdpPacket(await until("the echo", () => client!.delivered[before]));
        assert.deepEqual(reply.payload, payload);
      };

      await t.step("inner UDP (v4 and v6) is echoed through the tunnel", async () => {
        const cases = [
          { src: "198.18.0.2", dst: "192.0.2.9" },
          { src: "fd00:44::2", dst: "2001:db8::9" },
        ];
        for (const { src, dst } of cases) {
          const payload = new TextEncoder().encode(`hello ${dst}`);
          const before = client!.delivered.length;
          client!.send(buildUdpPacket({ src, dst, srcPort: 40000, dstPort: 9, payload }));
          const reply = parseUdpPacket(
            await until(`the echo from ${dst}`, () => client!.delivered[before]),
          );
          assert.equal(reply.src, dst);
          assert.equal(reply.dst, src);
          assert.equal(reply.srcPort, 9);
          assert.equal(reply.dstPort, 40000);
          assert.ok(reply.udpChecksumOk);
          assert.deepEqual(reply.payload, payload);
        }
        assert.ok(logs.some((r) => r.event === "handshake" && r.peer === "client-1"), "handshake");
        assert.ok(logs.some((r) => r.event === "udp-open" && r.peer === "client-1"), "udp-open");
      });

      await t.step("the client roams: logged, and answers follow it", async () => {
        const from = client!.port;
        client!.roam();
        await echoed("after roaming");
        const roam = logs.findLast((r) => r.event === "roam");
        assert.ok(roam, "roam logged");
        assert.equal(roam.peer, "client-1");
        assert.equal(roam.from, `127.0.0.1:${from}`);
        assert.equal(roam.to, `127.0.0.1:${client!.port}`);
      });

      await t.step(
        "the UAPI socket (wg show) reports the client's handshake and bytes",
        async () => {
          assert.ok(logs.some((r) => r.event === "uapi" && r.path === `${dir}/run/wg.sock`));
          const reply = (await uapiGet(`${dir}/run/wg.sock`)).join("\n");
          const value = (key: string) => reply.match(new RegExp(`^${key}=(.*)$`, "m"))?.[1];
          assert.equal(value("listen_port"), String(listening.addr.port));
          assert.ok(Number(value("last_handshake_time_sec")) > 1_700_000_000);
          assert.ok(Number(value("rx_bytes")) > 0 && Number(value("tx_bytes")) > 0);
          assert.deepEqual(reply.match(/^allowed_ip=.*$/gm), [
            "allowed_ip=198.18.0.2/32",
            "allowed_ip=fd00:44::2/128",
          ]);
        },
      );

      await t.step(
        "add-peer, remove-peer and a reload reach the running server unnoticed",
        async () => {
          const io = {
            stderr: (text: string) => void stderr.push(text),
            stdout: (text: string) => void stderr.push(text),
            isTerminal: false,
            uapiDirectory: `${dir}/run`,
          };
          const handshakes = () => logs.filter((r) => r.event === "handshake").length;
          const before = handshakes();
          assert.equal(await runCli(["add-peer", "laptop", `${dir}/wg.conf`, "--no-qr"], io), 0);
          assert.match(
            stderr.join(""),
            /The running server \(.*wg\.sock\) lets the new client in now/,
          );
          assert.equal(listening.peers().length, 2);
          await until(
            "the new peer's name",
            () => listening.peers().find((p) => p.name === "laptop"),
          );
          await echoed("after add-peer");

          // An edit of wg.conf and a reload (SIGHUP): client-1 gets one more prefix.
          const conf = await Deno.readTextFile(`${dir}/wg.conf`);
          await Deno.writeTextFile(
            `${dir}/wg.conf`,
            conf.replace(
              "AllowedIPs = 198.18.0.2/32",
              "AllowedIPs = 198.18.0.2/32, 198.18.0.20/32",
            ),
          );
          await listening.reload();
          const reload = logs.findLast((r) => r.event === "reload")!;
          assert.equal(reload.updated, "client-1");
          assert.equal(reload.added, undefined);
          await echoed("after the reload");

          // A broken file is reported and changes nothing.
          const good = await Deno.readTextFile(`${dir}/wg.conf`);
          await Deno.writeTextFile(`${dir}/wg.conf`, good + "\n[Peer]\nPublicKey = nonsense\n");
          await listening.reload();
          const failed = logs.findLast((r) => r.event === "reload")!;
          assert.equal(failed.level, "warn");
          assert.match(String(failed.error), /PublicKey/);
          assert.equal(listening.peers().length, 2);
          await Deno.writeTextFile(`${dir}/wg.conf`, good);

          assert.equal(await runCli(["remove-peer", "laptop", `${dir}/wg.conf`], io), 0);
          assert.match(stderr.join(""), /dropped it and its connections/);
          assert.equal(listening.peers().length, 1);
          await echoed("after remove-peer");
          assert.equal(handshakes(), before, "client-1 kept its session throughout");
        },
      );

      await t.step("--metrics: Prometheus text with the client's counters", async () => {
        const url = logs.find((r) => r.event === "metrics")?.url as string;
        assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
        const text = await (await fetch(url)).text();
        assert.match(text, /^wireguard_device_info\{device="wg",public_key="[^"]+"\} 1$/m);
        const rx = /^wireguard_peer_receive_bytes_total\{device="wg",public_key="[^"]+"\} (\d+)$/m
          .exec(text);
        assert.ok(rx && Number(rx[1]) > 0, text);
      });

      await t.step("abort: exit code 0, summary logged, pcap has both directions", async () => {
        controller.abort();
        assert.equal(await exit, 0);
        const summary = logs.find((r) => r.event === "summary");
        assert.ok(summary);
        assert.equal(summary.udpFlows, 2);
        assert.equal(summary.handshakes, 1);
        assert.ok((summary.pcapPackets as number) >= 4);
        const packets = pcapRecords(await Deno.readFile(`${dir}/t.pcap`));
        // The client's v4 packet decrypted, then the echo before encryption.
        const first = parseUdpPacket(packets[0]);
        assert.equal(first.src, "198.18.0.2");
        assert.equal(first.dst, "192.0.2.9");
        const second = parseUdpPacket(packets[1]);
        assert.equal(second.src, "192.0.2.9", "the echo, before encryption");
        await assert.rejects(Deno.lstat(`${dir}/run/wg.sock`), Deno.errors.NotFound);
      });
    } finally {
      controller.abort();
      await exit;
      await client?.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const needsLinux = requirement(
  "runCli with a full disk",
  Deno.build.os === "linux" ? undefined : `needs /dev/full (Linux), not ${Deno.build.os}`,
);

Deno.test({
  name: "runCli: a capture that cannot be written (disk full) is logged once, the server goes on",
  ignore: needsLinux.ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    needsLinux.assert();
    const dir = await Deno.makeTempDir({ prefix: "wgstack-run-" });
    const logs: Record<string, unknown>[] = [];
    const controller = new AbortController();
    let server: ListeningServer | undefined;
    const exit = runCli([
      `${dir}/wg.conf`,
      "--mode=echo",
      "--listen=127.0.0.1:0",
      "--address=198.18.0.1/24",
      "--endpoint=127.0.0.1",
      "--log-format=json",
      "--no-qr",
      "--pcap=/dev/full",
    ], {
      stderr: () => {},
      stdout: () => {},
      logLine: (l) => void logs.push(JSON.parse(l)),
      signal: controller.signal,
      onListening: (s) => server = s,
      uapiDirectory: `${dir}/run`,
    });
    let client: LoopbackClient | undefined;
    try {
      const listening = await until("the server", () => server);
      client = new LoopbackClient(
        await Deno.readTextFile(`${dir}/wg-client-1.conf`),
        listening.addr.port,
      );
      for (let i = 0; i < 3; i++) {
        const payload = new Uint8Array(1000).fill(i);
        const before = client.delivered.length;
        client.send(
          buildUdpPacket({
            src: "198.18.0.2",
            dst: "192.0.2.9",
            srcPort: 4000,
            dstPort: 9,
            payload,
          }),
        );
        await until("the echo", () => client!.delivered[before]);
        if (i === 0) await until("the flush", () => logs.find((r) => r.event === "pcap"), 3000);
      }
      controller.abort();
      assert.equal(await exit, 0);
      const errors = logs.filter((r) => r.event === "pcap");
      assert.equal(errors.length, 1, JSON.stringify(errors));
      assert.equal(errors[0].level, "error");
    } finally {
      controller.abort();
      await exit;
      await client?.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("runCli: a bad --upstream, domain pattern or # Upstream line is a usage error", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "wgstack-run-" });
  const run = async (args: string[]) => {
    let err = "";
    const code = await runCli([`${dir}/wg.conf`, "--listen=127.0.0.1:0", "--no-qr", ...args], {
      stderr: (s) => void (err += s),
      stdout: () => {},
      logLine: () => {},
    });
    return { code, err };
  };
  try {
    await t.step("--upstream with a bad scheme; the password is not repeated", async () => {
      const r = await run(["--upstream", "ftp://me:s3cret@192.0.2.9:21"]);
      assert.equal(r.code, 2);
      assert.match(r.err, /--upstream: Upstream scheme must be socks5, socks5h or http/);
      assert.doesNotMatch(r.err, /s3cret/);
    });
    await t.step("--deny-domain with a malformed pattern", async () => {
      const r = await run(["--deny-domain", "a..b"]);
      assert.equal(r.code, 2);
      assert.match(r.err, /--allow-domain\/--deny-domain: Domain pattern "a\.\.b"/);
    });
    await t.step("a peer's # Upstream line names the file and line", async () => {
      const text = await Deno.readTextFile(`${dir}/wg.conf`);
      await Deno.writeTextFile(
        `${dir}/wg.conf`,
        text.replace(/\[Peer\]\n/, "[Peer]\n# Upstream = socks4://192.0.2.9:1080\n"),
      );
      const r = await run([]);
      assert.equal(r.code, 2);
      assert.match(r.err, /wg\.conf:\d+: Upstream: Upstream scheme must be/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
