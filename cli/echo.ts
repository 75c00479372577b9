/**
 * Echo mode: every TCP connection and UDP datagram a client sends through
 * the tunnel, to any address and port, comes back unchanged. A quick way to
 * check a client setup and measure the tunnel without touching any network.
 *
 * @module
 */

import type { TcpStream, UdpStream } from "@wgstack/server";

/** What {@linkcode Echo.onTcp} uses of a server's `TcpStream`. */
export type EchoTcp =
  & Pick<
    TcpStream,
    "ipVersion" | "source" | "destination" | "readable" | "writable" | "reset"
  >
  & { readonly peer: { readonly publicKey: string; readonly name?: string } };

/** What {@linkcode Echo.onUdp} uses of a server's `UdpStream`. */
export type EchoUdp =
  & Pick<UdpStream, "ipVersion" | "source" | "destination" | "readable" | "writable">
  & {
    readonly peer: { readonly publicKey: string; readonly name?: string };
  };
import type { Logger } from "./log.ts";

/** Counters of {@linkcode Echo}. */
export interface EchoStats {
  /** TCP connections echoed. */
  tcpConnections: number;
  /** UDP flows echoed. */
  udpFlows: number;
  /** Bytes echoed (TCP and UDP payload). */
  bytes: number;
}

/**
 * The echo mode handlers, for `serve()`'s `onTcp` and `onUdp`.
 *
 * @example Echo everything a client sends, logging each connection
 * ```ts ignore
 * import { createLogger, Echo } from "@wgstack/cli";
 * import { serve } from "@wgstack/server";
 * const echo = new Echo(createLogger());
 * await serve({
 *   privateKey: Deno.env.get("WG_PRIVATE_KEY")!,
 *   peers: [{ publicKey: "…", allowedIps: ["10.0.0.2/32"] }],
 *   onTcp: (conn) => echo.onTcp(conn),
 *   onUdp: (flow) => echo.onUdp(flow),
 * });
 * ```
 */
export class Echo {
  #log: Logger;
  #stats: EchoStats = { tcpConnections: 0, udpFlows: 0, bytes: 0 };
  #open = new Set<ReadableStreamDefaultReader<Uint8Array>>();
  #closed = false;

  /**
   * Creates the handlers.
   *
   * @param logger Receives one record per connection/flow open and close.
   */
  constructor(logger: Logger) {
    this.#log = logger;
  }

  /** Counters so far. */
  stats(): EchoStats {
    return { ...this.#stats };
  }

  /** Sends every byte back; the client's FIN is answered with a FIN. */
  async onTcp(stream: EchoTcp): Promise<void> {
    this.#stats.tcpConnections++;
    const label = labelOf(stream);
    this.#log.log({ level: "info", event: "tcp-open", ...label });
    const started = performance.now();
    const echoed = { bytes: 0, chunks: 0 };
    let end = "closed";
    let error: string | undefined;
    const reader = stream.readable.getReader();
    const writer = stream.writable.getWriter();
    this.#open.add(reader);
    try {
      await this.#echo(reader, writer, echoed);
      if (this.#closed) end = "shutdown";
      await writer.close();
    } catch (e) {
      end = "client reset";
      error = e instanceof Error ? e.message : String(e);
      writer.abort().catch(() => {});
      reader.cancel().catch(() => {});
    } finally {
      this.#open.delete(reader);
    }
    this.#log.log({
      level: "info",
      event: "tcp-close",
      ...label,
      bytesUp: echoed.bytes,
      bytesDown: echoed.bytes,
      durationMs: Math.round(performance.now() - started),
      end,
      error,
    });
  }

  /** Sends every datagram back to its sender until the flow expires. */
  async onUdp(flow: EchoUdp): Promise<void> {
    this.#stats.udpFlows++;
    const label = labelOf(flow);
    this.#log.log({ level: "info", event: "udp-open", ...label });
    const started = performance.now();
    const echoed = { bytes: 0, chunks: 0 };
    const reader = flow.readable.getReader();
    const writer = flow.writable.getWriter();
    this.#open.add(reader);
    try {
      await this.#echo(reader, writer, echoed);
    } catch {
      // the flow was closed under us (shutdown)
    } finally {
      this.#open.delete(reader);
      writer.close().catch(() => {});
    }
    this.#log.log({
      level: "info",
      event: "udp-close",
      ...label,
      bytesUp: echoed.bytes,
      bytesDown: echoed.bytes,
      datagrams: echoed.chunks,
      durationMs: Math.round(performance.now() - started),
    });
  }

  /** Writes back every chunk read until the end, counting as it goes; throws what the streams throw. */
  async #echo(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    writer: WritableStreamDefaultWriter<Uint8Array>,
    echoed: { bytes: number; chunks: number },
  ): Promise<void> {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      await writer.write(value);
      echoed.bytes += value.length;
      echoed.chunks++;
      this.#stats.bytes += value.length;
    }
  }

  /**
   * Stops reading from every open connection and flow: each TCP connection
   * gets its FIN after what was already read is echoed. For shutdown.
   */
  close(): void {
    this.#closed = true;
    for (const reader of this.#open) reader.cancel().catch(() => {});
    this.#open.clear();
  }
}

/** Who and where, for the log records of one connection or flow. */
function labelOf(s: EchoTcp | EchoUdp) {
  return { peer: s.peer.name ?? s.peer.publicKey, source: s.source, destination: s.destination };
}
