/**
 * When the cores run: one timer for the nearest deadline of the WireGuard
 * device and the netstack, and wake-ups coalesced into one microtask
 * (internal to `serve()`).
 *
 * @module
 */

/** A core the poller runs: the time in, when it next needs to run out. */
export interface PolledCore {
  /** Runs what is due at `now`. */
  poll(now: number): void;
  /** When `poll` is next needed (`-Infinity`: now, `Infinity`: never on its own). */
  nextDeadline(): number;
}

/** Timer functions (injectable for tests). */
export interface PollerTimers {
  /** Like `setTimeout`. */
  set(fn: () => void, ms: number): unknown;
  /** Like `clearTimeout`. */
  clear(timer: unknown): void;
}

/** Least time between two turns that work on queued handshakes (ms). */
export const HANDSHAKE_TURN_MS = 1;

const defaultTimers: PollerTimers = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (timer) => clearTimeout(timer as ReturnType<typeof setTimeout>),
};

/**
 * Runs the device and the stack when they need it. The device's
 * `-Infinity` (queued handshakes) gets a turn at most every
 * {@linkcode HANDSHAKE_TURN_MS}, so a flood of handshakes takes a bounded
 * share of the thread.
 */
export class Poller {
  /** Times the cores ran. */
  polls = 0;
  #device: PolledCore;
  #stack: PolledCore;
  #now: () => number;
  #timers: PollerTimers;
  #timer: unknown = undefined;
  #timerAt = Infinity;
  #pollQueued = false;
  #stackQueued = false;
  #armQueued = false;
  #lastPollAt = -Infinity;
  #stopped = false;

  /** A poller of `device` and `stack`, reading the clock with `now`. */
  constructor(
    cores: { device: PolledCore; stack: PolledCore },
    now: () => number,
    timers: PollerTimers = defaultTimers,
  ) {
    this.#device = cores.device;
    this.#stack = cores.stack;
    this.#now = now;
    this.#timers = timers;
  }

  /** Runs both cores now and re-arms the timer. */
  pollNow(): void {
    this.#pollQueued = false;
    this.polls++;
    const t = this.#now();
    this.#lastPollAt = t;
    this.#device.poll(t);
    this.#stack.poll(t);
    this.arm();
  }

  /** Runs both cores in a microtask (once however often it is asked). */
  pollSoon(): void {
    if (this.#pollQueued || this.#stopped) return;
    this.#pollQueued = true;
    queueMicrotask(() => this.pollNow());
  }

  /**
   * Runs the stack alone in a microtask (once however often it is asked,
   * and not when both cores are queued to run), then re-arms: what the
   * stack asks for with its `wake` (work queued by stream callbacks, the end
   * of a batch of input: one ACK per connection) needs no turn of the
   * device, whose `poll` walks every peer.
   */
  pollStackSoon(): void {
    if (this.#stackQueued || this.#pollQueued || this.#stopped) return;
    this.#stackQueued = true;
    queueMicrotask(this.#stackTask);
  }

  readonly #stackTask = (): void => {
    this.#stackQueued = false;
    if (this.#stopped) return;
    this.#stack.poll(this.#now());
    this.arm();
  };

  /**
   * Re-arms in a microtask: after a batch of received datagrams, once
   * (`nextDeadline()` scans every peer; socket adapters deliver a batch
   * synchronously, so the microtask runs after its last datagram).
   */
  armSoon(): void {
    // A queued poll re-arms when it has run.
    if (this.#armQueued || this.#pollQueued || this.#stackQueued) return;
    this.#armQueued = true;
    queueMicrotask(() => {
      this.#armQueued = false;
      this.arm();
    });
  }

  /** Arms the timer for the nearest deadline, unless one as early is armed. */
  arm(): void {
    if (this.#stopped) return;
    const deviceAt = this.#device.nextDeadline();
    const deadline = Math.min(
      deviceAt === -Infinity ? this.#lastPollAt + HANDSHAKE_TURN_MS : deviceAt,
      this.#stack.nextDeadline(),
    );
    // Keep the armed timer unless the deadline moved earlier: re-arming per
    // packet costs more than an early wake-up (which just re-arms).
    if (this.#timer !== undefined && this.#timerAt <= deadline) return;
    if (this.#timer !== undefined) this.#timers.clear(this.#timer);
    this.#timer = undefined;
    this.#timerAt = deadline;
    if (deadline === Infinity) return;
    this.#timer = this.#timers.set(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      this.pollNow();
    }, Math.max(0, Math.ceil(deadline - this.#now())));
  }

  /** Clears the timer; nothing is armed or queued afterwards. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#timers.clear(this.#timer);
    this.#timer = undefined;
  }
}
