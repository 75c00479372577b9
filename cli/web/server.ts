/**
 * `--web`: the live dashboard and the JSON API behind it, served with
 * `Deno.serve` by the wgstack process itself (no file or script from
 * anywhere else).
 *
 * Access needs the token: `Authorization: Bearer TOKEN`, `?token=TOKEN`, or
 * the cookie the page sets after it was opened with `?token=`. Requests that
 * change something (POST, PATCH, DELETE) need it in the `Authorization`
 * header (a link or a form from another site cannot send it) and a JSON
 * body; a cross-origin `Origin` is refused, and so is a `Host` that is no IP
 * address, `localhost` or the `--web` host (DNS rebinding).
 *
 * API (every response JSON unless said; errors are `{"error": "…"}`):
 *
 * | request | answer |
 * |---|---|
 * | `GET /api` | this list |
 * | `GET /api/summary` | server, live counts, totals (the metrics' numbers) |
 * | `GET /api/peers` | peers (running and disabled) with counters and throughput history |
 * | `GET /api/flows?closed&peer&host&port&protocol&sort&offset&limit` | one page of flows |
 * | `GET /api/events?…flows query…` | Server-Sent Events: `update` each second with summary, peers, flows |
 * | `POST /api/clients` `{"name"}` | adds a client (201) |
 * | `GET /api/clients/NAME/conf` | its client config (text, download) |
 * | `GET /api/clients/NAME/qr.svg` | its config as a QR code (SVG) |
 * | `PATCH /api/clients/NAME` `{"disabled": bool}` | disables or enables it |
 * | `DELETE /api/clients/NAME` | removes it |
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import type { FlowQuery, MetricValues, Server, ServerMetrics } from "@wgstack/server";
import QRCode from "qrcode";
import { UsageError } from "../args.ts";
import { qrPayload } from "../_qr.ts";
import { ClientNotFound, type WebClients } from "./clients.ts";
import { APP_CSS, APP_JS, indexHtml } from "./assets.ts";

/** Options of {@linkcode startWeb}. */
export interface WebOptions {
  /** Address to bind. Default `"127.0.0.1"`. */
  hostname?: string;
  /** TCP port (0: any free one). */
  port: number;
  /** The access token (random when absent). */
  token?: string;
  /** Client operations on the config file; without it the client endpoints answer 404. */
  clients?: WebClients;
  /** The metrics the totals come from. */
  metrics: ServerMetrics;
  /** Shown in the page's header. */
  info?: { mode?: string; version?: string; config?: string };
  /** Samples per peer kept for the throughput charts (one a second). Default 120. */
  historyLength?: number;
  /** Most Server-Sent-Events streams at once. Default 16. */
  maxStreams?: number;
}

/** A running dashboard. */
export interface WebServer {
  /** The bound address. */
  readonly addr: { hostname: string; port: number };
  /** The URL to open, token included. */
  readonly url: string;
  /** The token. */
  readonly token: string;
  /** Stops the HTTP server and the sampler. */
  shutdown(): Promise<void>;
}

/** Largest request body accepted. */
const MAX_BODY = 4096;
const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
  "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
const encoder = new TextEncoder();

/** A new random token: 32 bytes, base64url. */
export function newToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
}

function digest(text: string): Uint8Array {
  return createHash("sha256").update(text).digest();
}

/** Constant-time comparison (of SHA-256 digests, so lengths do not show either). */
export function tokenMatches(given: string | null | undefined, token: string): boolean {
  if (given === null || given === undefined) return false;
  return timingSafeEqual(digest(given), digest(token));
}

/** A JSON error answer. */
class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

function json(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

function isIpLiteral(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || /^\[[0-9a-fA-F:.]+\]$/.test(host);
}

/** The host part of a `Host` header (IPv6 in brackets kept). */
function hostOnly(host: string): string {
  if (host.startsWith("[")) return host.slice(0, host.indexOf("]") + 1);
  const colon = host.lastIndexOf(":");
  return colon < 0 ? host : host.slice(0, colon);
}

async function readJson(request: Request): Promise<Record<string, unknown>> {
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/json\b/i.test(type)) {
    throw new HttpError(415, "The body must be JSON (Content-Type: application/json)");
  }
  const length = Number(request.headers.get("content-length") ?? "0");
  if (length > MAX_BODY) throw new HttpError(413, `The body is larger than ${MAX_BODY} bytes`);
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body) {
    for await (const chunk of request.body) {
      size += chunk.length;
      if (size > MAX_BODY) throw new HttpError(413, `The body is larger than ${MAX_BODY} bytes`);
      chunks.push(chunk);
    }
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (error) {
    throw new HttpError(400, `The body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new HttpError(400, "The body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/**
 * The flow query of a URL's search parameters.
 *
 * @throws {HttpError} 400 for a value that is not a number where one is needed, or unknown.
 */
function flowQuery(params: URLSearchParams): FlowQuery {
  const known = new Set([
    "closed",
    "peer",
    "host",
    "port",
    "protocol",
    "sort",
    "offset",
    "limit",
    "token",
  ]);
  for (const key of params.keys()) {
    if (!known.has(key)) throw new HttpError(400, `Unknown parameter "${key}"`);
  }
  const number = (key: string) => {
    const v = params.get(key);
    if (v === null || v === "") return undefined;
    if (!/^\d{1,9}$/.test(v)) throw new HttpError(400, `${key} must be a whole number, not "${v}"`);
    return Number(v);
  };
  const text = (key: string) => {
    const v = params.get(key);
    if (v === null || v === "") return undefined;
    if (v.length > 256) throw new HttpError(400, `${key} is longer than 256 characters`);
    return v;
  };
  const closed = params.get("closed");
  if (closed !== null && !["", "0", "1", "true", "false"].includes(closed)) {
    throw new HttpError(400, `closed must be 1 or 0, not "${closed}"`);
  }
  return {
    closed: closed === "" || closed === "1" || closed === "true",
    peer: text("peer"),
    host: text("host"),
    port: number("port"),
    protocol: text("protocol") as FlowQuery["protocol"],
    sort: text("sort") as FlowQuery["sort"],
    offset: number("offset"),
    limit: number("limit"),
  };
}

/** Per-peer throughput history, sampled once a second. */
class History {
  #last = new Map<string, { rx: number; tx: number; at: number }>();
  readonly rates = new Map<string, { rx: number[]; tx: number[] }>();
  constructor(readonly length: number) {}
  sample(server: Server, now: number): void {
    const seen = new Set<string>();
    for (const p of server.peers()) {
      seen.add(p.publicKey);
      const last = this.#last.get(p.publicKey);
      this.#last.set(p.publicKey, { rx: p.rxBytes, tx: p.txBytes, at: now });
      if (!last) continue;
      const seconds = Math.max(0.001, (now - last.at) / 1000);
      let r = this.rates.get(p.publicKey);
      if (!r) this.rates.set(p.publicKey, r = { rx: [], tx: [] });
      r.rx.push(Math.max(0, Math.round((p.rxBytes - last.rx) / seconds)));
      r.tx.push(Math.max(0, Math.round((p.txBytes - last.tx) / seconds)));
      if (r.rx.length > this.length) {
        r.rx.shift();
        r.tx.shift();
      }
    }
    for (const key of this.#last.keys()) {
      if (!seen.has(key)) {
        this.#last.delete(key);
        this.rates.delete(key);
      }
    }
  }
}

/**
 * Starts the dashboard for `server`. Resolves once it listens.
 *
 * @example
 * ```ts ignore
 * import { serve, ServerMetrics } from "@wgstack/server";
 * import { startWeb } from "./server.ts";
 * const server = await serve({ privateKey: "…", forward: {} });
 * const web = await startWeb(server, { port: 8080, metrics: new ServerMetrics(server) });
 * console.log(`Open ${web.url}`);
 * ```
 */
export async function startWeb(server: Server, options: WebOptions): Promise<WebServer> {
  const token = options.token ?? newToken();
  const hostname = options.hostname ?? "127.0.0.1";
  const started = Date.now();
  const history = new History(options.historyLength ?? 120);
  const maxStreams = options.maxStreams ?? 16;
  /** Open event streams: what sends them an update, what closes them. */
  const streams = new Map<(tick: Tick) => void, () => void>();
  const abort = new AbortController();

  interface Tick {
    summary: unknown;
    peers: unknown;
  }

  async function summary() {
    const stats = server.stats();
    const metrics: MetricValues[] = await options.metrics.json();
    // Totals: the server-wide metrics (not per peer, not the info gauges).
    const totals = metrics.filter((m) =>
      !m.name.endsWith("_info") && m.type !== "histogram" &&
      !m.values.some((v) => "public_key" in v.labels)
    ).map((m) => ({
      name: m.name,
      help: m.help,
      type: m.type,
      values: m.values.map((v) => {
        const { device: _device, ...labels } = v.labels;
        return { labels, value: v.value };
      }),
    }));
    return {
      server: {
        publicKey: server.publicKey,
        listen: server.addr,
        uptimeMs: Date.now() - started,
        ...options.info,
      },
      live: { peers: server.peers().length, tcpOpen: stats.tcpOpen, udpOpen: stats.udpOpen },
      totals,
    };
  }

  /**
   * The peers; `full`: with the throughput history, else with the latest
   * sample only (`rate`, for pages that keep the history themselves).
   */
  async function peers(full = true) {
    const running = server.peers();
    const clients = options.clients ? await options.clients.list().catch(() => []) : [];
    const byKey = new Map(clients.map((c) => [c.publicKey, c]));
    // No preshared key here: the page needs no secret but its token.
    const out: Record<string, unknown>[] = running.map(({ presharedKey: _psk, ...p }) => ({
      ...p,
      disabled: false,
      hasConfig: byKey.get(p.publicKey)?.hasConfig ?? false,
      ...rateOf(p.publicKey, full),
    }));
    for (const c of clients) {
      if (c.disabled) {
        out.push({
          ...c,
          lastHandshake: 0,
          rxBytes: 0,
          txBytes: 0,
          tcpOpen: 0,
          udpOpen: 0,
          handshakes: 0,
          ...rateOf(c.publicKey, full),
        });
      }
    }
    return { peers: out };
  }

  function rateOf(key: string, full: boolean) {
    const r = history.rates.get(key) ?? { rx: [], tx: [] };
    if (full) return { history: r };
    return { rate: { rx: r.rx.at(-1) ?? 0, tx: r.tx.at(-1) ?? 0 } };
  }

  async function tick(full: boolean): Promise<Tick> {
    return { summary: await summary(), peers: await peers(full) };
  }

  // One sampler for everyone: history, and one summary per second for the streams.
  history.sample(server, performance.now());
  const sampler = setInterval(async () => {
    history.sample(server, performance.now());
    if (streams.size === 0) return;
    try {
      const t = await tick(false);
      for (const send of streams.keys()) send(t);
    } catch {
      // the server is stopping
    }
  }, 1000);

  function events(url: URL, first: Tick): Response {
    if (streams.size >= maxStreams) {
      throw new HttpError(503, `Too many event streams open (${maxStreams})`);
    }
    const query = flowQuery(url.searchParams);
    server.flows(query); // a bad query fails now, as a 400
    let send: ((t: Tick) => void) | undefined;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        const close = () => {
          if (send) streams.delete(send);
          try {
            controller.close();
          } catch {
            // already closed
          }
        };
        const update = (t: Tick) =>
          `event: update\ndata: ${JSON.stringify({ ...t, flows: server.flows(query) })}\n\n`;
        send = (t) => {
          // A reader that has not taken the last update misses this one (nothing piles up).
          if ((controller.desiredSize ?? 1) <= 0) return;
          try {
            controller.enqueue(encoder.encode(update(t)));
          } catch {
            close();
          }
        };
        controller.enqueue(encoder.encode(`retry: 2000\n\n${update(first)}`));
        streams.set(send, close);
      },
      cancel() {
        if (send) streams.delete(send);
      },
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
      },
    });
  }

  const allowedHost = (host: string | null) => {
    if (host === null) return false;
    const h = hostOnly(host).toLowerCase();
    return isIpLiteral(h) || h === "localhost" || h === hostname.toLowerCase() ||
      h === `[${hostname.toLowerCase()}]`;
  };

  async function handle(request: Request, cookieName: string): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    const method = request.method;
    const unsafe = method !== "GET" && method !== "HEAD";
    const host = request.headers.get("host");
    if (!allowedHost(host)) {
      throw new HttpError(403, "Unknown Host header: use the address the server printed");
    }
    const bearer = /^Bearer\s+(\S+)$/i.exec(request.headers.get("authorization") ?? "")?.[1];
    const cookie = (request.headers.get("cookie") ?? "").split(/;\s*/)
      .find((c) => c.startsWith(`${cookieName}=`))?.slice(cookieName.length + 1);
    const query = url.searchParams.get("token");
    if (unsafe) {
      // The header only: a cross-site form or link cannot set it.
      if (!tokenMatches(bearer, token)) {
        throw new HttpError(401, "This needs the token in an Authorization: Bearer header");
      }
      const origin = request.headers.get("origin");
      if (origin !== null && origin !== `http://${host}`) {
        throw new HttpError(403, `Cross-origin request from ${origin} refused`);
      }
    } else if (
      !tokenMatches(bearer, token) && !tokenMatches(cookie, token) &&
      !tokenMatches(query, token)
    ) {
      throw new HttpError(401, "Open the URL wgstack printed at start (it carries ?token=…)");
    }

    if (path === "/" && !unsafe) {
      if (query !== null) {
        // Keep the token out of the address bar and history: a cookie from now on.
        return new Response(null, {
          status: 303,
          headers: {
            location: "/",
            "set-cookie": `${cookieName}=${token}; Path=/; HttpOnly; SameSite=Strict`,
          },
        });
      }
      return new Response(indexHtml(token), {
        headers: {
          "content-type": "text/html; charset=utf-8",
          "content-security-policy": PAGE_CSP,
          "cache-control": "no-store",
        },
      });
    }
    if (path === "/app.js" && !unsafe) {
      return new Response(APP_JS, {
        headers: { "content-type": "text/javascript; charset=utf-8" },
      });
    }
    if (path === "/app.css" && !unsafe) {
      return new Response(APP_CSS, { headers: { "content-type": "text/css; charset=utf-8" } });
    }
    if (!path.startsWith("/api")) throw new HttpError(404, `No page at ${path}`);

    const route = `${method} ${path}`;
    if (route === "GET /api") return json(API_INDEX);
    if (route === "GET /api/summary") return json(await summary());
    if (route === "GET /api/peers") return json(await peers());
    if (route === "GET /api/flows") {
      try {
        return json(server.flows(flowQuery(url.searchParams)));
      } catch (error) {
        if (error instanceof RangeError) throw new HttpError(400, error.message);
        throw error;
      }
    }
    if (route === "GET /api/events") {
      try {
        return events(url, await tick(true));
      } catch (error) {
        if (error instanceof RangeError) throw new HttpError(400, error.message);
        throw error;
      }
    }
    const clients = options.clients;
    if (path === "/api/clients" || path.startsWith("/api/clients/")) {
      if (!clients) throw new HttpError(404, "Client management is off");
      return await clientRoute(clients, request, path);
    }
    if (["/api", "/api/summary", "/api/peers", "/api/flows", "/api/events"].includes(path)) {
      throw new HttpError(405, `Use GET on ${path}`);
    }
    throw new HttpError(404, `No API at ${method} ${path}`);
  }

  async function clientRoute(
    clients: WebClients,
    request: Request,
    path: string,
  ): Promise<Response> {
    const method = request.method;
    if (path === "/api/clients") {
      if (method === "GET") return json({ clients: await clients.list() });
      if (method !== "POST") throw new HttpError(405, "Use GET or POST on /api/clients");
      const body = await readJson(request);
      if (typeof body.name !== "string") {
        throw new HttpError(400, 'The body needs "name": a string');
      }
      return json({ client: await clients.add(body.name) }, 201);
    }
    const m = /^\/api\/clients\/([^/]+)(\/conf|\/qr\.svg)?$/.exec(path);
    if (!m) throw new HttpError(404, `No API at ${path}`);
    let name: string;
    try {
      name = decodeURIComponent(m[1]);
    } catch {
      throw new HttpError(400, "The client name is badly %-escaped");
    }
    if (m[2] !== undefined) {
      if (method !== "GET") throw new HttpError(405, `Use GET on ${path}`);
      const text = await clients.config(name);
      if (text === undefined) throw new HttpError(404, `No client file for "${name}"`);
      if (m[2] === "/conf") {
        return new Response(text, {
          headers: {
            "content-type": "text/plain; charset=utf-8",
            "content-disposition": `attachment; filename="${name}.conf"`,
            "cache-control": "no-store",
          },
        });
      }
      const svg = await (QRCode as unknown as {
        toString(t: string, o: Record<string, unknown>): Promise<string>;
      }).toString(qrPayload(text), { type: "svg", errorCorrectionLevel: "L", margin: 2 });
      return new Response(svg, {
        headers: { "content-type": "image/svg+xml", "cache-control": "no-store" },
      });
    }
    if (method === "DELETE") {
      await clients.remove(name);
      return json({ removed: name });
    }
    if (method === "PATCH") {
      const body = await readJson(request);
      if (typeof body.disabled !== "boolean") {
        throw new HttpError(400, 'The body needs "disabled": true or false');
      }
      await clients.setDisabled(name, body.disabled);
      return json({ name, disabled: body.disabled });
    }
    throw new HttpError(405, `Use PATCH or DELETE on ${path}`);
  }

  const { promise, resolve, reject } = Promise.withResolvers<WebServer>();
  let cookieName = "wgstack";
  let http: Deno.HttpServer;
  try {
    http = Deno.serve({
      hostname,
      port: options.port,
      signal: abort.signal,
      onListen: (addr) => {
        const shown = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
        const urlHost = shown === "0.0.0.0" || shown === "[::]" ? "127.0.0.1" : shown;
        cookieName = `wgstack_${addr.port}`;
        resolve({
          addr: { hostname: addr.hostname, port: addr.port },
          url: `http://${urlHost}:${addr.port}/?token=${token}`,
          token,
          shutdown: async () => {
            stop();
            await http.finished;
          },
        });
      },
      onError: () => json({ error: "Internal error" }, 500),
    }, async (request) => {
      try {
        const response = await handle(request, cookieName);
        response.headers.set("x-content-type-options", "nosniff");
        response.headers.set("referrer-policy", "no-referrer");
        return response;
      } catch (error) {
        if (error instanceof HttpError) {
          // A person at the page's address reads a sentence, a program at /api JSON.
          if (!new URL(request.url).pathname.startsWith("/api")) {
            return new Response(`${error.status}: ${error.message}\n`, {
              status: error.status,
              headers: { "content-type": "text/plain; charset=utf-8" },
            });
          }
          return json({ error: error.message }, error.status);
        }
        if (error instanceof UsageError) return json({ error: error.message }, 400);
        if (error instanceof ClientNotFound) return json({ error: error.message }, 404);
        return json({ error: `Internal error: ${(error as Error).message}` }, 500);
      }
    });
  } catch (error) {
    clearInterval(sampler);
    reject(error);
  }
  function stop(): void {
    clearInterval(sampler);
    for (const close of [...streams.values()]) close();
    abort.abort();
  }
  server.finished.then(stop);
  return await promise;
}

/** What `GET /api` answers: the endpoints. */
export const API_INDEX = {
  auth: "Authorization: Bearer TOKEN (or ?token=TOKEN / the page's cookie for GET); " +
    "POST, PATCH and DELETE need the header and a JSON body",
  endpoints: [
    { method: "GET", path: "/api/summary", returns: "server, live counts, totals (the metrics)" },
    { method: "GET", path: "/api/peers", returns: "peers with counters and throughput history" },
    {
      method: "GET",
      path: "/api/flows",
      query: "closed=1, peer=KEY|NAME, host=TEXT, port=N, protocol=tcp|udp, sort=age|bytes, " +
        "offset=N, limit=1..1000",
      returns: "{total, matched, offset, flows}",
    },
    {
      method: "GET",
      path: "/api/events",
      query: "as /api/flows",
      returns: "text/event-stream: an `update` event each second {summary, peers, flows}",
    },
    { method: "GET", path: "/api/clients", returns: "the peers of the config file" },
    { method: "POST", path: "/api/clients", body: '{"name": "phone"}', returns: "201 {client}" },
    { method: "GET", path: "/api/clients/NAME/conf", returns: "the client config (text)" },
    { method: "GET", path: "/api/clients/NAME/qr.svg", returns: "the client config as QR (SVG)" },
    { method: "PATCH", path: "/api/clients/NAME", body: '{"disabled": true}' },
    { method: "DELETE", path: "/api/clients/NAME" },
  ],
};
