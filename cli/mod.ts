/**
 * `@wgstack/cli`: the `wgstack` command line. Not implemented yet (see the CLI
 * issue); this package currently exports only its version.
 *
 * @module
 */

/** The version of this package. */
export const VERSION = "0.1.0";
