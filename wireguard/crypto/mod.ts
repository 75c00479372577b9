/**
 * Crypto backends for `@wgstack/wireguard`: the {@linkcode CryptoBackend}
 * interface, the native backend (`node:crypto`), the portable backend
 * (`@noble/*`) and {@linkcode defaultBackend}, which picks the native one
 * when the runtime has it.
 *
 * @module
 */

import type { CryptoBackend } from "./backend.ts";
import { nativeBackend } from "./native.ts";
import { nobleBackend } from "./noble.ts";

export * from "./backend.ts";
export { nativeBackend } from "./native.ts";
export { nobleBackend } from "./noble.ts";

/**
 * The backend to use when the caller did not choose one: the native backend
 * when this runtime offers it (Deno, Node ≥ 20.16), otherwise the portable
 * `@noble/*` backend. Always returns the same object for a given runtime.
 *
 * @example
 * ```ts
 * import { defaultBackend } from "@wgstack/wireguard";
 *
 * console.log(defaultBackend().name); // "native" in Deno and Node
 * ```
 */
export function defaultBackend(): CryptoBackend {
  return nativeBackend() ?? nobleBackend;
}
