/**
 * The `wgstack` command: `deno run -A cli/main.ts [CONFIG] [flags]`. See
 * `--help`, or {@linkcode runCli} to run it from code.
 *
 * @module
 */

import { runCli } from "./run.ts";

export { runCli };

if (import.meta.main) Deno.exit(await runCli(Deno.args));
