/**
 * Timer helpers that work under Deno and Node.
 *
 * @module
 */

/** Lets the process exit while `timer` is pending (Deno and Node). */
export function unrefTimer(timer: ReturnType<typeof setTimeout>): void {
  const deno = (globalThis as { Deno?: { unrefTimer(id: number): void } }).Deno;
  if (deno) deno.unrefTimer(timer as unknown as number);
  else (timer as unknown as { unref?: () => void }).unref?.();
}
