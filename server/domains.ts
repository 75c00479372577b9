/**
 * Domain rules of forwarding: `allow`/`deny` by hostname, exact
 * (`example.com`) or by suffix (`*.example.com`, which also matches
 * `example.com` itself; `*` matches every name). The most specific pattern
 * wins (an exact name before any suffix, a longer suffix before a shorter
 * one; `deny` when the same pattern is given both ways), so
 * `deny *` with `allow *.corp.example` leaves only that domain. A name no
 * rule matches is allowed, and so is a flow with no known name.
 *
 * @module
 */

import { normalizeHostname } from "./sniff.ts";

/** Allowed and denied name patterns. */
export interface DomainRulesOptions {
  /** Patterns allowed even where a less specific `deny` matches. */
  allow?: string[];
  /** Patterns denied. */
  deny?: string[];
}

/**
 * Checks a pattern (`name`, `*.suffix` or `*`) and returns it in the form
 * matched (lower case, no trailing dot). Throws `TypeError` when malformed.
 *
 * @example
 * ```ts
 * import { parseDomainPattern } from "./domains.ts";
 * parseDomainPattern("*.Ads.Example."); // "*.ads.example"
 * ```
 */
export function parseDomainPattern(pattern: string): string {
  const t = pattern.trim().toLowerCase();
  const p = t === "*." ? t : t.replace(/\.$/, "");
  const name = p === "*" ? "" : p.startsWith("*.") ? p.slice(2) : p;
  if (p !== "*" && !/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(name)) {
    throw new TypeError(
      `Domain pattern "${pattern}" must be a name, "*.suffix" or "*" (letters, digits, "-", "_" and dots)`,
    );
  }
  return p;
}

/**
 * Allow/deny rules by hostname.
 *
 * @example
 * ```ts
 * import { DomainRules } from "./domains.ts";
 * const rules = new DomainRules({ deny: ["*.ads.example"], allow: ["ok.ads.example"] });
 * rules.denies("x.ads.example"); // true
 * rules.denies("ok.ads.example"); // false
 * rules.denies("news.example"); // false
 * ```
 */
export class DomainRules {
  #exact = new Map<string, "allow" | "deny">();
  #suffix = new Map<string, "allow" | "deny">();

  /** Parses the patterns (throws `TypeError` on a malformed one). */
  constructor(options: DomainRulesOptions = {}) {
    for (const [action, list] of [["allow", options.allow], ["deny", options.deny]] as const) {
      for (const raw of list ?? []) {
        const p = parseDomainPattern(raw);
        const [map, key] = p === "*"
          ? [this.#suffix, ""]
          : p.startsWith("*.")
          ? [this.#suffix, p.slice(2)]
          : [this.#exact, p];
        if (map.get(key) !== "deny") map.set(key, action);
      }
    }
  }

  /** True when no rule is set. */
  get empty(): boolean {
    return this.#exact.size === 0 && this.#suffix.size === 0;
  }

  /** The action of the most specific matching pattern, or `undefined`. */
  match(hostname: string): "allow" | "deny" | undefined {
    const name = normalizeHostname(hostname);
    if (name === undefined) return this.#suffix.get("");
    const exact = this.#exact.get(name);
    if (exact) return exact;
    for (let at = 0; at >= 0; at = name.indexOf(".", at) + 1 || -1) {
      const hit = this.#suffix.get(name.slice(at));
      if (hit) return hit;
      if (at === name.length) break;
    }
    return this.#suffix.get("");
  }

  /** True when `hostname` is denied. */
  denies(hostname: string | undefined): boolean {
    return hostname !== undefined && this.match(hostname) === "deny";
  }
}
