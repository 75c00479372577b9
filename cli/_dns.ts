/**
 * Where DNS queries sent to the server's tunnel address go: the machine's
 * own resolver (the first `nameserver` of `/etc/resolv.conf`) or the one
 * given with `--dns-upstream`.
 *
 * @module
 */

/** A resolver address. */
export interface DnsUpstream {
  /** IP address of the resolver. */
  hostname: string;
  /** Port, normally 53. */
  port: number;
}

/**
 * The first `nameserver` line of a resolv.conf text, or `undefined`. A zone
 * suffix (`fe80::1%eth0`) is kept; comments (`#`, `;`) are skipped.
 *
 * @example
 * ```ts
 * import { parseResolvConf } from "./_dns.ts";
 * parseResolvConf("# generated\nnameserver 192.0.2.53\n"); // "192.0.2.53"
 * ```
 */
export function parseResolvConf(text: string): string | undefined {
  for (const raw of text.split("\n")) {
    const line = raw.replace(/[#;].*$/, "").trim();
    const m = /^nameserver\s+(\S+)/.exec(line);
    if (m) return m[1];
  }
  return undefined;
}

/**
 * The machine's resolver from `path` (default `/etc/resolv.conf`), port 53,
 * or `undefined` when the file is missing or names none.
 */
export async function systemResolver(path = "/etc/resolv.conf"): Promise<DnsUpstream | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
  const hostname = parseResolvConf(text);
  return hostname === undefined ? undefined : { hostname, port: 53 };
}
