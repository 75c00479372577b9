/**
 * `@wgstack/wireguard`: a sans-I/O WireGuard implementation (Noise_IKpsk2,
 * cookies, timers, cryptokey routing, wg-quick config files).
 *
 * @module
 */

export * from "./crypto/mod.ts";
export * from "./keys.ts";
export * from "./ip.ts";
export * from "./replay.ts";
export * from "./allowed_ips.ts";
export * from "./config.ts";
