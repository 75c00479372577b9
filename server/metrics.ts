/**
 * Prometheus metrics of a running server, with `prom-client`. The
 * `wireguard_*` metrics have the names and labels of mdlayher's
 * wireguard_exporter, so dashboards made for it work; wgstack's own are
 * under `wgstack_*`. Every value is read from the server when scraped.
 *
 * @module
 */

import { Counter, Gauge, type Metric, Registry } from "prom-client";

/**
 * What {@linkcode ServerMetrics.registry} offers: it is a `prom-client`
 * `Registry` (merge it with your own with `Registry.merge`).
 */
export interface MetricsRegistry {
  /** The metrics in Prometheus text format. */
  metrics(): Promise<string>;
  /** The content type of that text. */
  readonly contentType: string;
}
import type { ServePeerState, Server } from "./serve.ts";
import type { ForwarderStats } from "./forward.ts";

/** One metric with its current values, as {@linkcode ServerMetrics.json} returns it. */
export interface MetricValues {
  /** The metric's name, e.g. `"wgstack_drops_total"`. */
  name: string;
  /** Its help text. */
  help: string;
  /** `"counter"`, `"gauge"` or `"histogram"`. */
  type: string;
  /** One value per label set (histograms: `metricName` tells bucket, sum and count apart). */
  values: { labels: Record<string, string | number>; value: number; metricName?: string }[];
}

/** Options of {@linkcode ServerMetrics}. */
export interface MetricsOptions {
  /** The `device` label (the interface name `wg` knows the server by). Default `"wgstack"`. */
  device?: string;
}

/**
 * The metrics of one server in a `prom-client` registry.
 *
 * @example
 * ```ts ignore
 * import { serve, ServerMetrics } from "@wgstack/server";
 * const server = await serve({ privateKey: "…" });
 * const metrics = new ServerMetrics(server, { device: "wg0" });
 * console.log(await metrics.text());
 * ```
 */
export class ServerMetrics {
  /** The `prom-client` registry holding the metrics. */
  readonly registry: MetricsRegistry;
  readonly #registry: Registry;
  readonly #server: Server;
  readonly #device: string;

  /** Registers the server's metrics in a new registry. */
  constructor(server: Server, options: MetricsOptions = {}) {
    this.#server = server;
    this.#device = options.device ?? "wgstack";
    this.registry = this.#registry = new Registry();
    this.#register();
  }

  /** The content type of {@linkcode ServerMetrics.text}. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The metrics in Prometheus text format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** The same metrics as data: the numbers of {@linkcode ServerMetrics.text}, read now. */
  async json(): Promise<MetricValues[]> {
    return (await this.#registry.getMetricsAsJSON()).map((m) => ({
      name: m.name,
      help: m.help,
      type: String(m.type),
      values: m.values.map((v) => ({
        labels: { ...v.labels } as Record<string, string | number>,
        value: v.value,
        ...("metricName" in v && v.metricName ? { metricName: v.metricName as string } : {}),
      })),
    }));
  }

  #register(): void {
    const server = this.#server;
    const device = this.#device;
    const registers = [this.#registry];
    const peerLabels = ["device", "public_key"] as const;
    // A scrape collects every metric in one turn: read the peers and stats once per turn.
    const perTurn = <T>(read: () => T) => {
      let cached: { value: T } | undefined;
      return () => {
        if (!cached) {
          cached = { value: read() };
          queueMicrotask(() => cached = undefined);
        }
        return cached.value;
      };
    };
    const peers = perTurn(() => server.peers());
    const stats = perTurn(() => server.stats());
    const forward = () => stats().forward;

    type Read = (set: (labels: Record<string, string>, value: number) => void) => void;
    /** A gauge, or a counter mirroring a total the server keeps, read at each scrape. */
    const metric = (
      kind: "gauge" | "counter",
      name: string,
      help: string,
      labelNames: readonly string[],
      read: Read,
    ) => {
      const config = { name, help, labelNames, registers };
      if (kind === "gauge") {
        new Gauge({
          ...config,
          collect() {
            this.reset();
            read((l, v) => this.set(l, v));
          },
        });
      } else {
        new Counter({
          ...config,
          collect() {
            this.reset();
            read((l, v) => this.inc(l, v));
          },
        });
      }
    };
    const gauge = (name: string, help: string, labels: readonly string[], read: Read) =>
      metric("gauge", name, help, labels, read);
    const counter = (name: string, help: string, labels: readonly string[], read: Read) =>
      metric("counter", name, help, labels, read);
    const perPeer = (value: (p: ServePeerState) => number): Read => (set) => {
      for (const p of peers()) set({ device, public_key: p.publicKey }, value(p));
    };

    // wireguard_exporter's metrics.
    gauge("wireguard_device_info", "Metadata about a device.", peerLabels, (set) => {
      set({ device, public_key: server.publicKey }, 1);
    });
    gauge(
      "wireguard_peer_info",
      "Metadata about a peer. The public_key label on peer metrics refers to the peer's " +
        "public key; not the device's public key.",
      [...peerLabels, "endpoint", "name"],
      (set) => {
        for (const p of peers()) {
          const e = p.endpoint;
          const endpoint = !e
            ? ""
            : e.address.includes(":")
            ? `[${e.address}]:${e.port}`
            : `${e.address}:${e.port}`;
          set({ device, public_key: p.publicKey, endpoint, name: p.name ?? "" }, 1);
        }
      },
    );
    gauge(
      "wireguard_peer_allowed_ips_info",
      "Metadata about each of a peer's allowed IP subnets for a given device.",
      [...peerLabels, "allowed_ips", "family"],
      (set) => {
        for (const p of peers()) {
          for (const ip of p.allowedIps) {
            const family = ip.includes(":") ? "IPv6" : "IPv4";
            set({ device, public_key: p.publicKey, allowed_ips: ip, family }, 1);
          }
        }
      },
    );
    // One value per peer: [kind, name, help, value].
    const perPeerMetrics: ["counter" | "gauge", string, string, (p: ServePeerState) => number][] = [
      [
        "counter",
        "wireguard_peer_receive_bytes_total",
        "Number of bytes received from a given peer.",
        (p) => p.rxBytes,
      ],
      [
        "counter",
        "wireguard_peer_transmit_bytes_total",
        "Number of bytes transmitted to a given peer.",
        (p) => p.txBytes,
      ],
      [
        "gauge",
        "wireguard_peer_last_handshake_seconds",
        "UNIX timestamp for the last handshake with a given peer.",
        (p) => Math.floor(p.lastHandshake / 1000),
      ],
      // wgstack's own.
      [
        "gauge",
        "wgstack_peer_tcp_connections",
        "TCP connections of a peer open now.",
        (p) => p.tcpOpen,
      ],
      ["gauge", "wgstack_peer_udp_flows", "UDP flows of a peer open now.", (p) => p.udpOpen],
      [
        "counter",
        "wgstack_peer_handshakes_total",
        "Handshakes completed with a peer.",
        (p) => p.handshakes,
      ],
    ];
    for (const [kind, name, help, value] of perPeerMetrics) {
      metric(kind, name, help, peerLabels, perPeer(value));
    }
    counter(
      "wgstack_handshakes_total",
      "Handshakes completed, removed peers included.",
      ["device"],
      (set) => set({ device }, stats().wireguard.handshakesCompleted),
    );
    // Forwarding counters: [name, help, label, values by label value].
    const forwarding: [string, string, string, (f: ForwarderStats) => [string, number][]][] = [
      [
        "wgstack_tcp_connections_opened_total",
        "TCP connections forwarded to their destination.",
        "",
        (f) => [["", f.tcpAccepted]],
      ],
      [
        "wgstack_tcp_connections_refused_total",
        "TCP connections not forwarded, by reason: refused (by the destination policy or the " +
        "destination), unreachable (timeout, no route), limit (socket caps and quotas).",
        "reason",
        (f) => [["refused", f.tcpRefused], ["unreachable", f.tcpUnreachable], [
          "limit",
          f.limitRefused,
        ]],
      ],
      [
        "wgstack_tcp_connections_reset_after_accept_total",
        "TCP connections answered before their dial (synAck immediate) and reset because the " +
        "dial failed or was cancelled.",
        "",
        (f) => [["", f.resetAfterAccept]],
      ],
      [
        "wgstack_destinations_refused_total",
        "Destinations (TCP and UDP) the destination policy refused, by reason.",
        "reason",
        (f) => Object.entries(f.policy.refused).map(([reason, n]) => [reason, n ?? 0]),
      ],
      [
        "wgstack_udp_flows_opened_total",
        "UDP flows forwarded to their destination (DNS included).",
        "",
        (f) => [["", f.udpFlows]],
      ],
      [
        "wgstack_relayed_bytes_total",
        "Payload bytes relayed: up (clients to destinations) and down.",
        "direction",
        (f) => [["up", f.bytesUp], ["down", f.bytesDown]],
      ],
      [
        "wgstack_flows_named_total",
        "Forwarded flows whose host name was known, by where it came from: sni (TLS), http " +
        "(Host), quic (Initial), dns (the forwarder's answers).",
        "source",
        (f) => Object.entries(f.hostnames),
      ],
      [
        "wgstack_domain_refusals_total",
        "Refusals by the domain rules: flows (TCP and UDP) and DNS queries answered as blocked.",
        "kind",
        (f) => [["flow", f.domainRefused], ["dns", f.dnsBlocked]],
      ],
      [
        "wgstack_proxied_flows_total",
        "Flows dialled through an upstream proxy.",
        "",
        (f) => [["", f.proxied]],
      ],
    ];
    for (const [name, help, label, values] of forwarding) {
      counter(name, help, label ? ["device", label] : ["device"], (set) => {
        const f = forward();
        for (const [value, n] of f ? values(f) : []) {
          set(label ? { device, [label]: value } : { device }, n);
        }
      });
    }
    counter(
      "wgstack_drops_total",
      "Packets dropped, by layer (wireguard, netstack, socket) and reason.",
      ["device", "layer", "reason"],
      (set) => {
        const s = stats();
        for (const [reason, n] of Object.entries(s.wireguard.drops)) {
          set({ device, layer: "wireguard", reason }, n);
        }
        for (const [reason, n] of Object.entries(s.netstack.drops)) {
          set({ device, layer: "netstack", reason }, n);
        }
        set({ device, layer: "socket", reason: "send-queue-full" }, s.socket.sendDropped);
        set({ device, layer: "socket", reason: "send-error" }, s.socket.sendErrors);
        set({ device, layer: "server", reason: "udp-flow-evicted" }, s.udpFlowsEvicted);
      },
    );
    this.#registry.registerMetric(dialHistogram(forward, device) as unknown as Metric);
  }
}

/**
 * `wgstack_dial_duration_seconds`: the forwarder keeps the bucket counts
 * (bounded, always on); this collector hands them to the registry as a
 * histogram at each scrape.
 */
function dialHistogram(forward: () => ForwarderStats | undefined, device: string) {
  const name = "wgstack_dial_duration_seconds";
  const help = "How long the TCP dials that connected took.";
  const get = () => {
    const h = forward()?.dialSeconds;
    const values = !h ? [] : [
      ...h.bounds.map((le, i) => ({
        metricName: `${name}_bucket`,
        labels: { device, le },
        value: h.counts[i],
      })),
      { metricName: `${name}_bucket`, labels: { device, le: "+Inf" }, value: h.count },
      { metricName: `${name}_sum`, labels: { device }, value: h.sum },
      { metricName: `${name}_count`, labels: { device }, value: h.count },
    ];
    return { name, help, type: "histogram", aggregator: "sum", values };
  };
  return { name, help, type: "histogram", aggregator: "sum", get, reset() {} };
}

/** Options of {@linkcode serveMetrics}. */
export interface ServeMetricsOptions extends MetricsOptions {
  /** Address to listen on. Default `"127.0.0.1"`. */
  hostname?: string;
  /** TCP port. */
  port: number;
  /** Aborting it stops the HTTP server. */
  signal?: AbortSignal;
}

/** The HTTP server of {@linkcode serveMetrics}. */
export interface MetricsServer {
  /** The bound address. */
  readonly addr: { hostname: string; port: number };
  /** The metrics it serves. */
  readonly metrics: ServerMetrics;
  /** Stops it. */
  shutdown(): Promise<void>;
}

/**
 * Serves the server's metrics over HTTP: `GET /metrics` (Prometheus text
 * format) and `GET /healthz` (`ok` while the server runs). Deno only.
 *
 * @example
 * ```ts ignore
 * import { serve, serveMetrics } from "@wgstack/server";
 * const server = await serve({ privateKey: "…" });
 * await serveMetrics(server, { hostname: "127.0.0.1", port: 9586, device: "wg0" });
 * ```
 */
export function serveMetrics(server: Server, options: ServeMetricsOptions): Promise<MetricsServer> {
  const metrics = new ServerMetrics(server, options);
  let running = true;
  server.finished.then(() => running = false);
  const { promise, resolve, reject } = Promise.withResolvers<MetricsServer>();
  try {
    const http = Deno.serve({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port,
      signal: options.signal,
      onListen: (addr) => {
        resolve({
          addr: { hostname: addr.hostname, port: addr.port },
          metrics,
          shutdown: () => http.shutdown(),
        });
      },
      onError: () => new Response("internal error\n", { status: 500 }),
    }, async (request) => {
      const path = new URL(request.url).pathname;
      if (request.method !== "GET" && request.method !== "HEAD") {
        return new Response("method not allowed\n", { status: 405, headers: { allow: "GET" } });
      }
      if (path === "/metrics") {
        return new Response(await metrics.text(), {
          headers: { "content-type": metrics.contentType },
        });
      }
      if (path === "/healthz") {
        return new Response(running ? "ok\n" : "stopped\n", { status: running ? 200 : 503 });
      }
      return new Response("not found\n", { status: 404 });
    });
  } catch (error) {
    reject(error);
  }
  return promise;
}
