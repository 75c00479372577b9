/**
 * Crypto backends for `@wgstack/wireguard`: the {@linkcode CryptoBackend}
 * interface, the libcrypto backend (OpenSSL 3 through Deno FFI), the native
 * backend (`node:crypto`), the portable backend (`@noble/*`) and
 * {@linkcode defaultBackend}, which picks the fastest one the runtime has.
 *
 * @module
 */

import type { CryptoBackend } from "./backend.ts";
import { libcryptoBackend } from "./libcrypto.ts";
import { nativeBackend } from "./native.ts";
import { nobleBackend } from "./noble.ts";

export * from "./backend.ts";
export { libcryptoBackend } from "./libcrypto.ts";
export { nativeBackend } from "./native.ts";
export { nobleBackend } from "./noble.ts";

/**
 * The backend to use when the caller did not choose one, fastest first: the
 * libcrypto backend (Deno with `--allow-ffi` and OpenSSL 3's
 * `libcrypto.so.3`), the native backend (`node:crypto`: Deno, Node ≥ 20.16),
 * otherwise the portable `@noble/*` backend. Always returns the same object
 * for a given runtime and permission set.
 *
 * @example
 * ```ts
 * import { defaultBackend } from "@wgstack/wireguard";
 *
 * console.log(defaultBackend().name); // "libcrypto" in Deno with --allow-ffi
 * ```
 */
export function defaultBackend(): CryptoBackend {
  return libcryptoBackend() ?? nativeBackend() ?? nobleBackend;
}
