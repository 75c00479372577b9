import assert from "node:assert/strict";
import { RateLimiter, sourceKey } from "./ratelimiter.ts";

Deno.test("rate limiter", async (t) => {
  await t.step("burst of 5, then 20 per second per source", () => {
    const limiter = new RateLimiter();
    let allowed = 0;
    for (let i = 0; i < 10; i++) if (limiter.allow("192.0.2.1", 0)) allowed++;
    assert.equal(allowed, 5);
    assert.ok(limiter.allow("192.0.2.2", 0), "other sources are independent");
    assert.ok(!limiter.allow("192.0.2.1", 10));
    assert.ok(limiter.allow("192.0.2.1", 50), "one token per 50 ms");
    allowed = 0;
    for (let ms = 100; ms < 1100; ms += 5) if (limiter.allow("192.0.2.1", ms)) allowed++;
    assert.ok(allowed >= 19 && allowed <= 21, `${allowed}`);
  });

  await t.step("IPv6 sources share a bucket per /64", () => {
    assert.equal(sourceKey("2001:db8:1:2::1"), sourceKey("2001:db8:1:2:ffff::9"));
    assert.notEqual(sourceKey("2001:db8:1:2::1"), sourceKey("2001:db8:1:3::1"));
    assert.equal(sourceKey("::ffff:192.0.2.7"), sourceKey("192.0.2.7"), "IPv4-mapped");
    assert.notEqual(sourceKey("::ffff:192.0.2.7"), sourceKey("::ffff:192.0.2.8"));
    const limiter = new RateLimiter();
    for (let i = 0; i < 5; i++) assert.ok(limiter.allow(`2001:db8::${i + 1}`, 0));
    assert.ok(!limiter.allow("2001:db8::99", 0));
  });

  await t.step("the table is bounded; idle entries are swept", () => {
    const limiter = new RateLimiter({ maxEntries: 4 });
    for (let i = 0; i < 4; i++) assert.ok(limiter.allow(`10.0.0.${i}`, 0));
    assert.ok(!limiter.allow("10.0.0.9", 500), "full and nothing idle: refused");
    assert.equal(limiter.size, 4);
    assert.ok(limiter.allow("10.0.0.9", 2000), "idle entries swept");
    assert.ok(limiter.size <= 4);
    assert.throws(() => new RateLimiter({ maxEntries: 0 }), RangeError);
  });
});
