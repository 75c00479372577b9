/**
 * The dashboard's cost: JSON API latency with 5,000 live flows against the
 * same request on an empty table (ratios, same run), the page's own files,
 * and, printed once at start, the memory a FlowTable and a running
 * dashboard take and (when Chromium is installed) the page's load time in a
 * real browser with 0 and with 5,000 flows.
 *
 * ```sh
 * deno bench -A bench/web_bench.ts
 * ```
 *
 * The flows are synthetic entries in a real FlowTable behind a real
 * `serve()` on loopback (5,000 real forwarded connections would measure the
 * forwarder, not the dashboard).
 */

import { type FlowInfo, serve, ServerMetrics } from "@wgstack/server";
import { type FlowEntry, FlowTable } from "../server/flows.ts";
import { startWeb } from "../cli/web/server.ts";

// The functions handed to page.evaluate() run in Chromium: its globals, untyped here (a
// `lib="dom"` reference would change the types of the whole program under `deno check .`).
// deno-lint-ignore no-explicit-any
declare const document: any;

const FLOWS = 5000;

function entries(n: number): FlowEntry[] {
  const out: FlowEntry[] = [];
  const peers = Array.from({ length: 20 }, (_, i) => ({
    publicKey: btoa(String.fromCharCode(...new Uint8Array(32).fill(i + 1))),
    name: `peer-${i}`,
    endpoint: { address: "192.0.2.1", port: 40000 + i },
  }));
  for (let i = 0; i < n; i++) {
    const info: FlowInfo = {
      peer: peers[i % peers.length],
      ipVersion: 4,
      source: { address: `10.44.0.${2 + (i % peers.length)}`, port: 10000 + (i % 50000) },
      destination: { address: `198.18.${(i >> 8) & 255}.${i & 255}`, port: i % 7 ? 443 : 53 },
    };
    out.push({
      id: 0,
      protocol: i % 7 ? "tcp" : "udp",
      info,
      bytesUp: (i * 7919) % 100000,
      bytesDown: (i * 104729) % 10000000,
      host: i % 3 ? `host${i}.example.com` : undefined,
      hostSource: i % 3 ? "sni" : undefined,
      started: performance.now() - i * 10,
      state: "open",
    });
  }
  return out;
}

async function dashboard(flows: number) {
  const server = await serve({
    privateKey: new Uint8Array(32).fill(7),
    hostname: "127.0.0.1",
    port: 0,
  });
  const table = new FlowTable();
  for (const e of entries(flows)) table.add(e);
  // The dashboard reads flows through Server.flows(): answer from the synthetic table.
  (server as { flows: typeof server.flows }).flows = (q) => table.query(q);
  const web = await startWeb(server, { port: 0, metrics: new ServerMetrics(server) });
  const base = `http://127.0.0.1:${web.addr.port}`;
  const headers = { authorization: `Bearer ${web.token}` };
  const get = async (path: string) => {
    const r = await fetch(base + path, { headers });
    if (!r.ok) throw new Error(`${path}: ${r.status}`);
    return await r.text();
  };
  return { server, web, base, get, table };
}

function heap(): number {
  // deno-lint-ignore no-explicit-any
  (globalThis as any).gc?.();
  return Deno.memoryUsage().heapUsed;
}

/** Heap taken by FlowTable membership of 5,000 entries (the entries themselves exist anyway). */
function tableMemory(): number {
  const list = entries(FLOWS);
  const before = heap();
  const table = new FlowTable();
  for (const e of list) table.add(e);
  const after = heap();
  if (table.size !== FLOWS) throw new Error("size");
  return (after - before) / FLOWS;
}

async function browserLoad(url: string): Promise<number | undefined> {
  if (!(await Deno.stat("/usr/bin/chromium").then(() => true, () => false))) return undefined;
  const { default: puppeteer } = await import("puppeteer-core");
  const browser = await puppeteer.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--headless=new", "--disable-gpu"],
  });
  try {
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const page = await browser.newPage();
      const t0 = performance.now();
      await page.goto(url);
      await page.waitForFunction(
        () =>
          document.querySelectorAll("#flows tbody tr").length > 0 ||
          document.getElementById("flow-count")?.textContent === "0–0 of 0",
        { polling: 5 },
      );
      times.push(performance.now() - t0);
      await page.close();
    }
    return times.sort((a, b) => a - b)[2];
  } finally {
    await browser.close();
  }
}

const empty = await dashboard(0);
const full = await dashboard(FLOWS);

// Printed once: memory and page load.
{
  const perFlow = tableMemory();
  const server = await serve({
    privateKey: new Uint8Array(32).fill(8),
    hostname: "127.0.0.1",
    port: 0,
  });
  const rssBefore = Deno.memoryUsage().rss;
  const heapBefore = heap();
  const web = await startWeb(server, { port: 0, metrics: new ServerMetrics(server) });
  const sse = await fetch(`http://127.0.0.1:${web.addr.port}/api/events`, {
    headers: { authorization: `Bearer ${web.token}` },
  });
  const reader = sse.body!.getReader();
  await reader.read();
  await reader.read();
  const heapAfter = heap();
  const rssAfter = Deno.memoryUsage().rss;
  await reader.cancel();
  await web.shutdown();
  await server.shutdown();
  const sizes = {
    page: (await full.get("/")).length,
    js: (await full.get("/app.js")).length,
    css: (await full.get("/app.css")).length,
    flowsPage: (await full.get("/api/flows?limit=100")).length,
  };
  const loadEmpty = await browserLoad(empty.web.url);
  const loadFull = await browserLoad(full.web.url);
  console.log(
    `memory: FlowTable ${perFlow.toFixed(0)} B per live flow (Set membership); ` +
      `the dashboard (HTTP server, sampler, 1 event stream): heap +${
        ((heapAfter - heapBefore) / 1024).toFixed(0)
      } KiB, ` +
      `RSS +${((rssAfter - rssBefore) / 1024 / 1024).toFixed(1)} MiB`,
  );
  console.log(
    `bytes: page ${sizes.page}, app.js ${sizes.js}, app.css ${sizes.css}, ` +
      `/api/flows?limit=100 with ${FLOWS} flows ${sizes.flowsPage}`,
  );
  if (loadEmpty !== undefined && loadFull !== undefined) {
    console.log(
      `Chromium page load until the flows table is drawn (median of 5): 0 flows ${
        loadEmpty.toFixed(0)
      } ms, ${FLOWS} flows ${loadFull.toFixed(0)} ms (ratio ${(loadFull / loadEmpty).toFixed(2)})`,
    );
  } else console.log("Chromium not found: page load not measured");
}

Deno.bench(
  "GET /api/flows?limit=100, empty table",
  { group: "flows", baseline: true },
  async () => {
    await empty.get("/api/flows?limit=100");
  },
);
Deno.bench(
  `GET /api/flows?limit=100, ${FLOWS} flows (newest first)`,
  { group: "flows" },
  async () => {
    await full.get("/api/flows?limit=100");
  },
);
Deno.bench(`GET /api/flows?sort=bytes&limit=100, ${FLOWS} flows`, { group: "flows" }, async () => {
  await full.get("/api/flows?sort=bytes&limit=100");
});
Deno.bench(`GET /api/flows?host=host42, ${FLOWS} flows`, { group: "flows" }, async () => {
  await full.get("/api/flows?host=host42");
});
Deno.bench(`GET /api/flows?offset=4900&limit=100, ${FLOWS} flows`, { group: "flows" }, async () => {
  await full.get("/api/flows?offset=4900&limit=100");
});
Deno.bench(
  "GET /api/summary (the metrics' numbers)",
  { group: "other", baseline: true },
  async () => {
    await full.get("/api/summary");
  },
);
Deno.bench("GET /api/peers", { group: "other" }, async () => {
  await full.get("/api/peers");
});
Deno.bench("GET / + /app.js + /app.css (the page's files)", { group: "other" }, async () => {
  await Promise.all([full.get("/"), full.get("/app.js"), full.get("/app.css")]);
});
Deno.bench(`FlowTable.query({limit: 100}), ${FLOWS} flows, no HTTP`, { group: "table" }, () => {
  full.table.query({ limit: 100 });
});
