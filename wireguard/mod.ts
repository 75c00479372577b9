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
export * from "./messages.ts";
export * from "./noise.ts";
export * from "./cookie.ts";
export * from "./ratelimiter.ts";
export * from "./timers.ts";
export * from "./peer.ts";
export * from "./device.ts";
