/**
 * Prometheus metrics of a forwarding server on loopback (no root needed):
 * our test client opens a TCP connection to a local echo service the policy
 * allows, one to a loopback port it refuses, and sends UDP; the scraped
 * values must match what happened. `promtool check metrics` lints the
 * exposition, and a real Prometheus server (Debian package `prometheus`)
 * scrapes it and answers a query for the peer's byte counter. Without
 * promtool/prometheus those steps skip locally and fail under `CI=true`.
 */

import assert from "node:assert/strict";
import { serveMetrics } from "@wgstack/server";
import { startServerWithClient } from "./_client.ts";
import { missingOnPath, run, waitFor } from "./netns.ts";
import { requirement } from "./_skip.ts";

/** Skip locally, fail under CI=true (see tests/_skip.ts). */
const promtool = requirement("metrics: promtool check", missingOnPath("promtool"));
const prometheus = requirement("metrics: a real Prometheus", missingOnPath("prometheus"));

/** The value of the sample `name{labels…}` whose labels include `labels`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  throw new Error(`No sample ${name} ${JSON.stringify(labels)} in:\n${text}`);
}

async function readAll(readable: ReadableStream<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const chunk of readable) n += chunk.length;
  return n;
}

Deno.test({
  name: "metrics: wireguard_exporter names, wgstack counters, promtool and a real Prometheus",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using stack = new AsyncDisposableStack();
    // A local service the policy lets clients reach (one host, one port).
    const echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    stack.defer(() => echo.close());
    const echoPort = (echo.addr as Deno.NetAddr).port;
    (async () => {
      for await (const conn of echo) conn.readable.pipeTo(conn.writable).catch(() => {});
    })().catch(() => {});

    const { server, client } = stack.use(
      await startServerWithClient({
        serve: {
          forward: {
            // Every allowed dial reaches the local echo service.
            connect: (_host, _port, signal) => {
              signal.throwIfAborted();
              return Deno.connect({ hostname: "127.0.0.1", port: echoPort });
            },
          },
          shutdownTimeout: 500,
        },
        address6: "fd00:7::2",
        name: "phone",
      }),
    );
    const http = await serveMetrics(server, { hostname: "127.0.0.1", port: 0, device: "ua0" });
    stack.defer(() => http.shutdown());
    const base = `http://127.0.0.1:${http.addr.port}`;
    const scrape = async () => {
      const r = await fetch(`${base}/metrics`);
      assert.equal(r.status, 200);
      assert.match(r.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
      return await r.text();
    };
    const pub = server.publicKey;
    const peerKey = server.peers()[0].publicKey;

    await t.step("what happened: handshake, a forwarded and a refused connection", async () => {
      await client.handshake();
      const conn = client.connect("192.0.2.80", 7);
      const writer = conn.writable.getWriter();
      const reading = readAll(conn.readable);
      await writer.write(new Uint8Array(3000).fill(7));
      await waitFor("the connection", () => server.peer(peerKey)!.tcpOpen === 1 || undefined);
      const open = await scrape();
      assert.equal(sample(open, "wgstack_peer_tcp_connections", { public_key: peerKey }), 1);
      await writer.close();
      assert.equal(await reading, 3000);
      // Relayed bytes are counted when the relay ends.
      await waitFor("the relay's end", () => server.stats().forward!.bytesDown > 0 || undefined);
      const refused = client.connect("127.0.0.1", 7);
      readAll(refused.readable).catch(() => {});
      await waitFor("the refusal", () => server.stats().forward!.tcpRefused === 1 || undefined);
      await waitFor("closed", () => server.stats().tcpOpen === 0 || undefined);

      const text = await scrape();
      const state = server.peer(peerKey)!;
      const peer = { device: "ua0", public_key: peerKey };
      assert.equal(sample(text, "wireguard_device_info", { device: "ua0", public_key: pub }), 1);
      assert.equal(sample(text, "wireguard_peer_info", { ...peer, name: "phone" }), 1);
      assert.equal(
        sample(text, "wireguard_peer_info", { endpoint: `127.0.0.1:${client.port}` }),
        1,
      );
      assert.equal(
        sample(text, "wireguard_peer_allowed_ips_info", {
          ...peer,
          allowed_ips: "fd00:7::2/128",
          family: "IPv6",
        }),
        1,
      );
      const rx = sample(text, "wireguard_peer_receive_bytes_total", peer);
      const tx = sample(text, "wireguard_peer_transmit_bytes_total", peer);
      assert.ok(rx > 3000 && rx <= server.peer(peerKey)!.rxBytes && rx >= state.rxBytes - 1000);
      assert.ok(tx > 3000 && tx <= server.peer(peerKey)!.txBytes);
      assert.equal(
        sample(text, "wireguard_peer_last_handshake_seconds", peer),
        Math.floor(state.lastHandshake / 1000),
      );
      assert.equal(sample(text, "wgstack_peer_handshakes_total", peer), 1);
      assert.equal(sample(text, "wgstack_handshakes_total"), 1);
      assert.equal(sample(text, "wgstack_peer_tcp_connections", peer), 0);
      assert.equal(sample(text, "wgstack_tcp_connections_opened_total"), 1);
      assert.equal(sample(text, "wgstack_tcp_connections_refused_total", { reason: "refused" }), 1);
      assert.equal(sample(text, "wgstack_tcp_connections_reset_after_accept_total"), 0);
      assert.equal(
        sample(text, "wgstack_destinations_refused_total", { reason: "own-address" }),
        1,
      );
      assert.equal(sample(text, "wgstack_relayed_bytes_total", { direction: "up" }), 3000);
      assert.equal(sample(text, "wgstack_relayed_bytes_total", { direction: "down" }), 3000);
      assert.equal(sample(text, "wgstack_dial_duration_seconds_count"), 1);
      assert.equal(sample(text, "wgstack_dial_duration_seconds_bucket", { le: "+Inf" }), 1);
      assert.equal(sample(text, "wgstack_dial_duration_seconds_bucket", { le: "10" }), 1);
      assert.ok(sample(text, "wgstack_dial_duration_seconds_sum") > 0);
      assert.equal(sample(text, "wgstack_drops_total", { layer: "wireguard", reason: "mac1" }), 0);
    });

    await t.step("one scrape reads the peers and the counters once", async () => {
      const { peers, stats } = server;
      let reads = 0;
      server.peers = () => (reads++, peers());
      server.stats = () => (reads++, stats());
      try {
        await scrape();
        assert.equal(reads, 2);
      } finally {
        Object.assign(server, { peers, stats });
      }
    });

    await t.step("/healthz, and other paths and methods", async () => {
      const ok = await fetch(`${base}/healthz`);
      assert.equal(ok.status, 200);
      assert.equal(await ok.text(), "ok\n");
      const missing = await fetch(`${base}/nope`);
      assert.equal(missing.status, 404);
      await missing.body?.cancel();
      const post = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
      assert.equal(post.status, 405);
      await post.body?.cancel();
    });

    await t.step({
      name: "promtool check metrics passes the exposition",
      ignore: promtool.ignore,
      fn: async () => {
        promtool.assert();
        const r = await run(["promtool", "check", "metrics"], {
          stdin: await scrape(),
          check: false,
        });
        assert.equal(r.code, 0, r.stdout + r.stderr);
      },
    });

    await t.step({
      name: "a real Prometheus scrapes it; a query returns the peer's byte counter",
      ignore: prometheus.ignore,
      fn: async () => {
        prometheus.assert();
        const dir = await Deno.makeTempDir({ prefix: "ua-prom-" });
        stack.defer(() => Deno.remove(dir, { recursive: true }));
        await Deno.writeTextFile(
          `${dir}/prometheus.yml`,
          [
            "global:",
            "  scrape_interval: 1s",
            "scrape_configs:",
            "  - job_name: wgstack",
            "    static_configs:",
            `      - targets: ["127.0.0.1:${http.addr.port}"]`,
            "",
          ].join("\n"),
        );
        const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const promPort = (probe.addr as Deno.NetAddr).port;
        probe.close();
        const prom = new Deno.Command("prometheus", {
          args: [
            `--config.file=${dir}/prometheus.yml`,
            `--storage.tsdb.path=${dir}/data`,
            `--web.listen-address=127.0.0.1:${promPort}`,
          ],
          stdout: "null",
          stderr: "piped",
        }).spawn();
        const log = new Response(prom.stderr).text();
        stack.defer(async () => {
          try {
            prom.kill("SIGTERM");
          } catch { /* exited */ }
          await prom.status;
          await log;
        });
        const query = encodeURIComponent(
          `wireguard_peer_receive_bytes_total{public_key="${peerKey}"}`,
        );
        // The tunnel is quiet now: Prometheus's value must come to equal the server's.
        const value = await waitFor("Prometheus to scrape wgstack", async () => {
          const r = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${query}`);
          const body = await r.json();
          const v = body.data?.result?.[0]?.value?.[1] as string | undefined;
          return v === String(server.peer(peerKey)!.rxBytes) ? v : undefined;
        }, { timeoutMs: 60_000, intervalMs: 250 });
        assert.ok(Number(value) > 3000);
      },
    });
  },
});
