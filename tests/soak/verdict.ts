/**
 * Judging a soak's samples: a table is flat when its largest value in the
 * second half of the run is no larger than in the first half (after the
 * warm-up sample), and within its bound.
 *
 * @module
 */

/** Tables of `samples` (numeric fields) that grew in the second half or exceeded `bounds`. */
export function growth<T extends object>(
  samples: readonly T[],
  fields: readonly (keyof T & string)[],
  bounds: Partial<Record<keyof T & string, number>> = {},
): string[] {
  const problems: string[] = [];
  const warm = samples.slice(1);
  const half = Math.floor(warm.length / 2);
  const first = warm.slice(0, half), second = warm.slice(half);
  for (const f of fields) {
    const max = (xs: readonly T[]) => Math.max(...xs.map((x) => x[f] as number));
    if (second.length > 0 && first.length > 0 && max(second) > max(first)) {
      problems.push(`${f} grew: ${max(first)} in the first half, ${max(second)} in the second`);
    }
    const bound = bounds[f];
    if (bound !== undefined && max(warm) > bound) problems.push(`${f} ${max(warm)} > ${bound}`);
  }
  return problems;
}
