/**
 * `@wgstack/server`: sockets, timers and `serve()`, joining `@wgstack/wireguard`
 * and `@wgstack/netstack`. Not implemented yet (see the server issue); this
 * package currently exports only its version.
 *
 * @module
 */

/** The version of this package. */
export const VERSION = "0.1.0";
