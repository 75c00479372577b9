/**
 * The one skip rule of the test suite: a test that needs something this
 * machine may lack (root, a tool, an OS) is skipped locally with a printed
 * reason, and FAILS under `CI=true`, where nothing may be skipped.
 *
 * ```ts
 * const wg = requirement("wg interop", await wgMissing());
 * Deno.test({ name: "…", ignore: wg.ignore, fn() { wg.assert(); … } });
 * ```
 *
 * @module
 */

/** True when the environment says we run under CI (`CI=true`): nothing may be skipped. */
export const isCI: boolean = (() => {
  // Query first: a bare env read would prompt on a terminal without --allow-env.
  const query = { name: "env", variable: "CI" } as const;
  return Deno.permissions.querySync(query).state === "granted" && Deno.env.get("CI") === "true";
})();

/** What {@linkcode requirement} returns: spread `ignore` into `Deno.test`, call `assert` first. */
export interface Requirement {
  /** `true` when the test must be skipped (locally, something missing). */
  readonly ignore: boolean;
  /** Throws when something is missing (only reached under `CI=true`). */
  assert(): void;
}

/**
 * Skip-or-fail for a test named `what` that cannot run when `missing` (the
 * reason) is a string: locally it prints `SKIP what: reason` and the test is
 * ignored; under `CI=true` the test runs and fails at `assert()`.
 */
export function requirement(what: string, missing: string | null | undefined): Requirement {
  if (missing === null || missing === undefined) return { ignore: false, assert() {} };
  if (!isCI) console.log(`SKIP ${what}: ${missing}`);
  return {
    ignore: !isCI,
    assert() {
      throw new Error(`${what} cannot run (and CI=true forbids skipping): ${missing}`);
    },
  };
}

/** Every reason given, joined, or `undefined` when none is (several needs of one test). */
export function missingAny(...reasons: (string | null | undefined)[]): string | undefined {
  const given = reasons.filter((r): r is string => typeof r === "string");
  return given.length > 0 ? given.join("; ") : undefined;
}
