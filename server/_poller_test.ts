import assert from "node:assert/strict";
import { HANDSHAKE_TURN_MS, type PolledCore, Poller, type PollerTimers } from "./_poller.ts";

/** A core whose next deadline the test sets; records the times it ran. */
class FakeCore implements PolledCore {
  deadline = Infinity;
  polls: number[] = [];
  poll(now: number): void {
    this.polls.push(now);
  }
  nextDeadline(): number {
    return this.deadline;
  }
}

/** Timers the test fires by hand. */
class FakeTimers implements PollerTimers {
  armed = new Map<number, { fn: () => void; ms: number }>();
  #next = 1;
  set(fn: () => void, ms: number): number {
    const id = this.#next++;
    this.armed.set(id, { fn, ms });
    return id;
  }
  clear(timer: unknown): void {
    this.armed.delete(timer as number);
  }
  /** The delays of the armed timers. */
  delays(): number[] {
    return [...this.armed.values()].map((t) => t.ms);
  }
  /** Fires every armed timer. */
  fire(): void {
    const due = [...this.armed.values()];
    this.armed.clear();
    for (const t of due) t.fn();
  }
}

function setup() {
  const device = new FakeCore();
  const stack = new FakeCore();
  const timers = new FakeTimers();
  const clock = { now: 1000 };
  const poller = new Poller({ device, stack }, () => clock.now, timers);
  return { device, stack, timers, clock, poller };
}

Deno.test("Poller", async (t) => {
  await t.step("pollSoon: one run of both cores per microtask, however often asked", async () => {
    const { device, stack, poller } = setup();
    poller.pollSoon();
    poller.pollSoon();
    poller.pollSoon();
    assert.deepEqual(device.polls, []);
    await Promise.resolve();
    assert.deepEqual([device.polls, stack.polls, poller.polls], [[1000], [1000], 1]);
  });

  await t.step("arm: one timer for the nearest deadline; an earlier one re-arms", () => {
    const { device, stack, timers, clock, poller } = setup();
    stack.deadline = 1050;
    device.deadline = 1200;
    poller.arm();
    assert.deepEqual(timers.delays(), [50]);
    // A later deadline keeps the armed timer (an early wake-up re-arms).
    stack.deadline = 1100;
    poller.arm();
    assert.deepEqual(timers.delays(), [50]);
    device.deadline = 1010;
    poller.arm();
    assert.deepEqual(timers.delays(), [10]);
    clock.now = 1010;
    device.deadline = Infinity;
    stack.deadline = Infinity;
    timers.fire();
    assert.deepEqual([device.polls, stack.polls], [[1010], [1010]]);
    assert.deepEqual(timers.delays(), [], "nothing due: no timer");
  });

  await t.step("queued handshakes (-Infinity) get a turn at most every turn interval", () => {
    const { device, timers, poller } = setup();
    device.deadline = -Infinity;
    poller.pollNow();
    assert.deepEqual(timers.delays(), [HANDSHAKE_TURN_MS]);
  });

  await t.step("stop: the timer is cleared and nothing is armed or queued after", async () => {
    const { device, stack, timers, poller } = setup();
    stack.deadline = 2000;
    poller.arm();
    assert.equal(timers.armed.size, 1);
    poller.stop();
    assert.equal(timers.armed.size, 0);
    poller.arm();
    poller.pollSoon();
    await Promise.resolve();
    assert.deepEqual([timers.armed.size, device.polls.length], [0, 0]);
  });

  await t.step(
    "pollStackSoon: one run of the stack alone per microtask, then a re-arm",
    async () => {
      const { device, stack, timers, poller } = setup();
      stack.deadline = 1040;
      poller.pollStackSoon();
      poller.pollStackSoon();
      poller.armSoon(); // the stack's turn re-arms
      assert.deepEqual(stack.polls, []);
      await Promise.resolve();
      assert.deepEqual([device.polls, stack.polls], [[], [1000]]);
      assert.deepEqual(timers.delays(), [40]);
      // Both cores queued: the stack is not run a second time on its own.
      poller.pollSoon();
      poller.pollStackSoon();
      await Promise.resolve();
      assert.deepEqual([device.polls, stack.polls], [[1000], [1000, 1000]]);
    },
  );

  await t.step("armSoon: one re-arm after a batch", async () => {
    const { stack, timers, poller } = setup();
    stack.deadline = 1005;
    poller.armSoon();
    poller.armSoon();
    assert.equal(timers.armed.size, 0);
    await Promise.resolve();
    assert.deepEqual(timers.delays(), [5]);
  });
});
