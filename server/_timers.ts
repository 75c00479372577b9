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

/** Undoes {@linkcode unrefTimer}: `timer` keeps the process alive again. */
export function refTimer(timer: ReturnType<typeof setTimeout>): void {
  const deno = (globalThis as { Deno?: { refTimer(id: number): void } }).Deno;
  if (deno) deno.refTimer(timer as unknown as number);
  else (timer as unknown as { ref?: () => void }).ref?.();
}
