/**
 * `@wgstack/wireguard`: a sans-I/O WireGuard implementation (Noise_IKpsk2,
 * cookies, timers, cryptokey routing, wg-quick config files).
 *
 * @module
 */

export * from "./crypto/backend.ts";
