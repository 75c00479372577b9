/**
 * `@wgstack/netstack`: a sans-I/O userspace TCP/IP stack whose TCP connections
 * and UDP flows are web stream pairs.
 *
 * @module
 */

export * from "./addr.ts";
export * from "./wire/checksum.ts";
export type * from "./tcp/api.ts";
