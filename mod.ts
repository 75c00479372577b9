/**
 * wgstack: a userspace WireGuard server and TCP/IP stack. This module
 * re-exports the public API of `@wgstack/wireguard`, `@wgstack/netstack` and
 * `@wgstack/server`.
 *
 * @module
 */

export * from "./wireguard/mod.ts";
export * from "./netstack/mod.ts";
export * from "./server/mod.ts";
