/**
 * The socket face the server uses (implemented in `udp.ts` and
 * `_udp_ffi.ts`, or brought by the caller), and the endpoint type.
 *
 * @module
 */

import type { Endpoint } from "@wgstack/wireguard";

/**
 * An `{ address, port }` endpoint: the WireGuard package's `Endpoint` (the
 * one endpoint type). Addresses from sockets are text, IPv4-mapped IPv6
 * addresses unmapped.
 */
export type UdpEndpoint = Endpoint;

/** Options for {@linkcode openUdpSocket}. */
export interface UdpSocketOptions {
  /** Address to bind; `"::"` (the default) is dual-stack on Linux. */
  hostname?: string;
  /** Port to bind; `0` picks a free one. */
  port: number;
  /** Most datagrams handed to the OS and not yet sent; more are dropped and counted. Default 4096. */
  maxPendingSends?: number;
  /**
   * Which adapter {@linkcode openUdpSocket} uses: `"auto"` (the default; the
   * `WGSTACK_UDP` environment variable, `ffi`, `deno` or `node`, can choose
   * instead), `"ffi"` (Deno on Linux: batching through libc), `"deno"`
   * (`Deno.listenDatagram`) or `"node"` (`node:dgram`).
   */
  adapter?: UdpAdapter;
}

/** The UDP socket implementations {@linkcode openUdpSocket} can pick. */
export type UdpAdapter = "auto" | "ffi" | "deno" | "node";

/** Counters of one socket. */
export interface UdpSocketStats {
  /** Datagrams received. */
  received: number;
  /** Datagrams handed to the OS. */
  sent: number;
  /** Datagrams dropped because too many sends were pending. */
  sendDropped: number;
  /** Sends the OS failed (e.g. unreachable). */
  sendErrors: number;
}

/** The socket face the server uses; implemented for Deno and Node. */
export interface UdpSocket {
  /** The bound address. */
  readonly addr: UdpEndpoint;
  /**
   * Starts delivering datagrams to `onDatagram`. `data` is valid only during
   * the call. Resolves when the socket is closed.
   */
  listen(onDatagram: (data: Uint8Array, from: UdpEndpoint) => void): Promise<void>;
  /** Sends `data` (copied) to `to`; never throws for network errors. */
  send(data: Uint8Array, to: UdpEndpoint): void;
  /**
   * Hands what `send` queued to the OS now (optional: for sockets that
   * batch their sends; the server calls it where latency matters more than
   * batching, e.g. after a SYN-ACK).
   */
  flush?(): void;
  /** Counters. */
  stats(): UdpSocketStats;
  /** Closes the socket; `listen` resolves. */
  close(): void;
}

/** Removes the `::ffff:` prefix of IPv4-mapped IPv6 addresses. */
export function unmapAddress(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}
