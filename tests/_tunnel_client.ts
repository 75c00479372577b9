/**
 * Shared by the interop tests: one run of `fixtures/tunnel_client.py` (the Linux kernel's TCP/UDP/ICMP as the
 * client behind a wireguard-go tunnel) inside a namespace.
 */

import type { Netns } from "./netns.ts";

/** The client script's path. */
export const TUNNEL_CLIENT = new URL("./fixtures/tunnel_client.py", import.meta.url).pathname;

/** Runs the client script in `ns` and returns its last JSON line (throws when it failed). */
export async function tunnelClient(
  ns: Netns,
  args: (string | number)[],
): Promise<Record<string, unknown>> {
  const r = await ns.run(["python3", TUNNEL_CLIENT, ...args.map(String)], { check: false });
  const lines = r.stdout.trim().split("\n").filter((l) => l.startsWith("{"));
  if (r.code !== 0 || lines.length === 0) {
    throw new Error(`tunnel_client ${args.join(" ")} exited with ${r.code}:\n${r.stderr}`);
  }
  return JSON.parse(lines[lines.length - 1]);
}
