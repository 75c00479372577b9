import assert from "node:assert/strict";
import { serve, ServerMetrics } from "@wgstack/server";
import { ensureServerConfig, loadServerConfig } from "../setup.ts";
import { servePeers } from "../_control.ts";
import { WebClients } from "./clients.ts";
import { newToken, startWeb, tokenMatches } from "./server.ts";

/** A forward-mode server on loopback with a dashboard over a fresh config. */
async function setup() {
  const dir = await Deno.makeTempDir({ prefix: "wgstack-web-" });
  const { setup } = await ensureServerConfig(`${dir}/wg.conf`, {
    endpointHost: "192.0.2.1",
    addresses: ["10.44.0.1/24"],
  });
  const server = await serve({
    privateKey: setup.privateKey,
    hostname: "127.0.0.1",
    port: 0,
    peers: servePeers(setup),
    forward: { localAddresses: ["10.44.0.1"], tunnelSubnets: ["10.44.0.1/24"] },
  });
  const metrics = new ServerMetrics(server);
  const web = await startWeb(server, {
    port: 0,
    metrics,
    clients: new WebClients(server, {
      config: setup.path,
      generate: { endpointHost: "192.0.2.1" },
    }),
    info: { mode: "forward" },
  });
  const base = `http://127.0.0.1:${web.addr.port}`;
  return {
    dir,
    server,
    metrics,
    web,
    base,
    async [Symbol.asyncDispose]() {
      await web.shutdown();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function call(
  url: string,
  init: RequestInit & { token?: string } = {},
): Promise<{ status: number; body: string; headers: Headers }> {
  const headers = new Headers(init.headers);
  if (init.token) headers.set("authorization", `Bearer ${init.token}`);
  const r = await fetch(url, { ...init, headers, redirect: "manual" });
  return { status: r.status, body: await r.text(), headers: r.headers };
}

async function waitFor(ok: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200 && !(await ok()); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(await ok());
}

const jsonBody = (body: unknown, token?: string) => ({
  token,
  headers: { "content-type": "application/json" },
  body: typeof body === "string" ? body : JSON.stringify(body),
});

Deno.test("tokens: random, compared in constant time", () => {
  const a = newToken();
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, newToken());
  assert.ok(tokenMatches(a, a));
  assert.ok(!tokenMatches(a.slice(1), a));
  assert.ok(!tokenMatches(undefined, a));
  assert.ok(!tokenMatches("", a));
});

Deno.test({
  name: "dashboard JSON API: every endpoint with and without the token, bad input",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using s = await setup();
    const { base, web } = s;
    const token = web.token;
    assert.equal(web.url, `${base}/?token=${token}`);

    const reads = [
      "/",
      "/app.js",
      "/app.css",
      "/api",
      "/api/summary",
      "/api/peers",
      "/api/flows",
      "/api/clients",
      "/api/clients/client-1/conf",
      "/api/clients/client-1/qr.svg",
    ];
    await t.step("without the token: 401 everywhere", async () => {
      for (const path of [...reads, "/api/events", "/nothing"]) {
        const r = await call(base + path);
        assert.equal(r.status, 401, path);
        assert.doesNotMatch(r.body, /PrivateKey|wgstack-token/, path);
      }
      const wrong = await call(`${base}/api/summary`, { token: token.slice(0, -1) + "x" });
      assert.equal(wrong.status, 401);
      const post = await call(`${base}/api/clients`, {
        method: "POST",
        ...jsonBody({ name: "x1" }),
      });
      assert.equal(post.status, 401);
      for (const method of ["PATCH", "DELETE"]) {
        const r = await call(`${base}/api/clients/client-1`, {
          method,
          ...jsonBody({ disabled: true }),
        });
        assert.equal(r.status, 401, method);
      }
    });

    await t.step("with the token: every read answers", async () => {
      for (const path of reads) {
        const r = await call(base + path, { token });
        assert.equal(r.status, 200, `${path}: ${r.body}`);
      }
      const page = await call(base + "/", { token });
      assert.match(page.headers.get("content-security-policy")!, /script-src 'self'/);
      assert.match(page.body, /<script src="\/app.js"/);
      const conf = await call(`${base}/api/clients/client-1/conf`, { token });
      assert.match(conf.body, /^PrivateKey = /m);
      assert.match(
        conf.headers.get("content-disposition")!,
        /attachment; filename="client-1.conf"/,
      );
      const svg = await call(`${base}/api/clients/client-1/qr.svg`, { token });
      assert.equal(svg.headers.get("content-type"), "image/svg+xml");
      assert.match(svg.body, /^<svg /);
      const peers = JSON.parse((await call(`${base}/api/peers`, { token })).body).peers;
      assert.equal(peers.length, 1);
      assert.equal(peers[0].name, "client-1");
      assert.equal(peers[0].presharedKey, undefined, "no secret in the peer list");
      assert.equal(peers[0].hasConfig, true);
      const flows = JSON.parse(
        (await call(`${base}/api/flows?limit=5&sort=bytes`, { token })).body,
      );
      assert.deepEqual(flows, { total: 0, matched: 0, offset: 0, flows: [] });
      const api = JSON.parse((await call(`${base}/api`, { token })).body);
      assert.ok(api.endpoints.length >= 9);
    });

    await t.step("?token= sets a cookie and redirects; the cookie then works", async () => {
      const r = await call(web.url);
      assert.equal(r.status, 303);
      assert.equal(r.headers.get("location"), "/");
      const cookie = r.headers.get("set-cookie")!;
      assert.match(cookie, /HttpOnly; SameSite=Strict/);
      const pair = cookie.split(";")[0];
      const page = await call(base + "/", { headers: { cookie: pair } });
      assert.equal(page.status, 200);
      const api = await call(base + "/api/summary?token=" + token);
      assert.equal(api.status, 200);
      // The cookie is not enough to change anything.
      const post = await call(`${base}/api/clients`, {
        method: "POST",
        ...jsonBody({ name: "viacookie" }),
        headers: { cookie: pair, "content-type": "application/json" },
      });
      assert.equal(post.status, 401);
      const viaQuery = await call(`${base}/api/clients?token=${token}`, {
        method: "POST",
        ...jsonBody({ name: "viaquery" }),
      });
      assert.equal(viaQuery.status, 401);
    });

    await t.step("cross-origin and foreign Host are refused", async () => {
      const post = await call(`${base}/api/clients`, {
        method: "POST",
        ...jsonBody({ name: "evil" }, token),
        headers: { origin: "http://evil.example", "content-type": "application/json" },
      });
      assert.equal(post.status, 403);
      assert.match(JSON.parse(post.body).error, /Cross-origin/);
      // fetch() keeps its own Host header: a raw request, as a DNS-rebound page would send.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: web.addr.port });
      await conn.write(new TextEncoder().encode(
        `GET /api/summary HTTP/1.1\r\nHost: evil.example:8080\r\n` +
          `Authorization: Bearer ${token}\r\nConnection: close\r\n\r\n`,
      ));
      const answer = await new Response(conn.readable).text();
      assert.match(answer, /^HTTP\/1\.1 403/);
      assert.match(answer, /Unknown Host/);
    });

    await t.step("bad input: 400 (or 404/405/413/415) with a message", async () => {
      const cases: [string, RequestInit & { token?: string }, number, RegExp][] = [
        ["/api/flows?limit=0", { token }, 400, /limit/],
        ["/api/flows?limit=abc", { token }, 400, /limit/],
        ["/api/flows?port=70000", { token }, 400, /port/],
        ["/api/flows?protocol=icmp", { token }, 400, /protocol/],
        ["/api/flows?sort=name", { token }, 400, /sort/],
        ["/api/flows?closed=maybe", { token }, 400, /closed/],
        ["/api/flows?bogus=1", { token }, 400, /Unknown parameter/],
        ["/api/events?limit=5000", { token }, 400, /limit/],
        [
          "/api/clients",
          { method: "POST", ...jsonBody("{not json", token) },
          400,
          /not valid JSON/,
        ],
        ["/api/clients", { method: "POST", ...jsonBody("[1]", token) }, 400, /object/],
        ["/api/clients", { method: "POST", ...jsonBody({ nom: "x" }, token) }, 400, /"name"/],
        [
          "/api/clients",
          { method: "POST", ...jsonBody({ name: "../x" }, token) },
          400,
          /not allowed/,
        ],
        [
          "/api/clients",
          { method: "POST", ...jsonBody({ name: "client-1" }, token) },
          400,
          /already/,
        ],
        [
          "/api/clients",
          { method: "POST", token, headers: { "content-type": "text/plain" }, body: "{}" },
          415,
          /JSON/,
        ],
        [
          "/api/clients",
          { method: "POST", ...jsonBody({ name: "x".repeat(5000) }, token) },
          413,
          /larger/,
        ],
        [
          "/api/clients/client-1",
          { method: "PATCH", ...jsonBody({ disabled: "yes" }, token) },
          400,
          /disabled/,
        ],
        [
          "/api/clients/nobody",
          { method: "PATCH", ...jsonBody({ disabled: true }, token) },
          404,
          /nobody/,
        ],
        ["/api/clients/nobody", { method: "DELETE", token }, 404, /nobody/],
        ["/api/clients/nobody/conf", { token }, 404, /nobody/],
        ["/api/clients/%E0%A4%A/conf", { token }, 400, /escaped/],
        ["/api/summary", { method: "POST", ...jsonBody({}, token) }, 405, /GET/],
        ["/api/nothing", { token }, 404, /No API/],
      ];
      for (const [path, init, status, message] of cases) {
        const r = await call(base + path, init);
        assert.equal(r.status, status, `${init.method ?? "GET"} ${path}: ${r.body}`);
        assert.match(JSON.parse(r.body).error, message, path);
      }
    });

    await t.step("add, disable, enable, remove a client: file and running server", async () => {
      const add = await call(`${base}/api/clients`, {
        method: "POST",
        ...jsonBody({ name: "phone" }, token),
      });
      assert.equal(add.status, 201, add.body);
      const client = JSON.parse(add.body).client;
      assert.deepEqual(client.allowedIps, ["10.44.0.3/32"]);
      assert.ok(s.server.peer(client.publicKey), "applied live");
      let file = await loadServerConfig(`${s.dir}/wg.conf`);
      assert.ok(file.peers.some((p) => p.name === "phone" && p.publicKey === client.publicKey));
      assert.match(await Deno.readTextFile(`${s.dir}/wg-phone.conf`), /Endpoint = 192\.0\.2\.1:/);

      const off = await call(`${base}/api/clients/phone`, {
        method: "PATCH",
        ...jsonBody({ disabled: true }, token),
      });
      assert.equal(off.status, 200, off.body);
      assert.equal(s.server.peer(client.publicKey), undefined, "removed from the server");
      file = await loadServerConfig(`${s.dir}/wg.conf`);
      assert.equal(file.peers.find((p) => p.name === "phone")?.disabled, true);
      const peers = JSON.parse((await call(`${base}/api/peers`, { token })).body).peers;
      assert.equal(peers.find((p: { name?: string }) => p.name === "phone").disabled, true);

      const on = await call(`${base}/api/clients/phone`, {
        method: "PATCH",
        ...jsonBody({ disabled: false }, token),
      });
      assert.equal(on.status, 200, on.body);
      assert.ok(s.server.peer(client.publicKey), "back on the server");
      file = await loadServerConfig(`${s.dir}/wg.conf`);
      assert.equal(file.peers.find((p) => p.name === "phone")?.disabled, undefined);

      const del = await call(`${base}/api/clients/phone`, { method: "DELETE", token });
      assert.equal(del.status, 200, del.body);
      assert.equal(s.server.peer(client.publicKey), undefined);
      file = await loadServerConfig(`${s.dir}/wg.conf`);
      assert.ok(!file.peers.some((p) => p.name === "phone"));
      await assert.rejects(Deno.stat(`${s.dir}/wg-phone.conf`), Deno.errors.NotFound);
    });

    await t.step("totals are the metrics' numbers", async () => {
      const summary = JSON.parse((await call(`${base}/api/summary`, { token })).body);
      const text = await s.metrics.text();
      let compared = 0;
      for (const m of summary.totals) {
        for (const v of m.values) {
          const labels = Object.entries({ device: "wgstack", ...v.labels })
            .map(([k, x]) => `${k}="${x}"`).join(",");
          const line = text.split("\n").find((l) => l.startsWith(`${m.name}{${labels}} `));
          assert.ok(line, `${m.name}{${labels}} in the metrics`);
          assert.equal(Number(line!.split(" ").pop()), v.value, line);
          compared++;
        }
      }
      assert.ok(compared > 20, `${compared} values compared`);
      assert.ok(summary.totals.some((m: { name: string }) => m.name === "wgstack_drops_total"));
    });

    await t.step("events: an update at once, then each second", async () => {
      const controller = new AbortController();
      const r = await fetch(`${base}/api/events?limit=3`, {
        headers: { authorization: `Bearer ${token}` },
        signal: controller.signal,
      });
      assert.equal(r.headers.get("content-type"), "text/event-stream; charset=utf-8");
      const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      while ((text.match(/event: update/g) ?? []).length < 2) text += (await reader.read()).value;
      controller.abort();
      await reader.cancel().catch(() => {});
      const [first, second] = text.split("event: update\ndata: ").slice(1, 3)
        .map((part) => JSON.parse(part.split("\n")[0]));
      assert.deepEqual(Object.keys(first).sort(), ["flows", "peers", "summary"]);
      assert.equal(first.flows.total, 0);
      assert.equal(first.flows.flows.length, 0);
      // The first update brings each peer's history, later ones only the latest sample.
      assert.ok(Array.isArray(first.peers.peers[0].history?.rx), JSON.stringify(first.peers));
      assert.equal(second.peers.peers[0].history, undefined);
      assert.equal(typeof second.peers.peers[0].rate.rx, "number");

      // At most 16 streams at once; closed ones free their place.
      const open = await Promise.all(Array.from({ length: 16 }, async () => {
        const abort = new AbortController();
        const r = await fetch(`${base}/api/events`, {
          headers: { authorization: `Bearer ${token}` },
          signal: abort.signal,
        });
        assert.equal(r.status, 200);
        return { abort, body: r.body! };
      }));
      const refused = await call(`${base}/api/events`, { token });
      assert.equal(refused.status, 503);
      assert.match(JSON.parse(refused.body).error, /Too many event streams/);
      for (const o of open) {
        o.abort.abort();
        await o.body.cancel().catch(() => {});
      }
      await waitFor(async () => {
        const r = await fetch(`${base}/api/events`, {
          headers: { authorization: `Bearer ${token}` },
        });
        await r.body?.cancel();
        return r.status === 200;
      });
    });
  },
});
