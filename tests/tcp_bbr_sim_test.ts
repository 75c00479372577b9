/**
 * BBR through the real TCP connection on the simulated link: random loss,
 * shallow and deep buffers, and sharing a bottleneck with CUBIC. Simulated
 * time only (no wall clock).
 */

import assert from "node:assert/strict";
import { downloads } from "./sim/transfer.ts";

Deno.test("BBR on the simulated link", async (t) => {
  for (const loss of [0.005, 0.02, 0.05]) {
    await t.step(`random loss ${loss * 100} %: no collapse, far ahead of CUBIC`, async () => {
      const link = { delay: 5, loss, bandwidth: 25_000, queueLimit: 250_000 };
      const bytes = 4e6;
      const bbr = await downloads({ seed: 3, link, flows: [{ bytes, cc: "bbr" }] });
      const cubic = await downloads({ seed: 3, link, flows: [{ bytes, cc: "cubic" }] });
      const ideal = bytes / link.bandwidth; // 160 ms
      const tb = bbr.results[0].time, tc = cubic.results[0].time;
      // The handshake and startup take a few RTTs; then the link's rate.
      assert.ok(tb < 3 * ideal, `BBR took ${tb} ms (ideal ${ideal} ms)`);
      if (loss >= 0.02) assert.ok(tb * 4 < tc, `BBR ${tb} ms vs CUBIC ${tc} ms`);
    });
  }

  await t.step("shallow buffer: BBR does not cause sustained loss", async () => {
    // BDP 500 KB, queue 10 KB (2 % of BDP); no random loss. Long enough (40 MB,
    // ~5 s) that Startup's overshoot does not dominate.
    const { link } = await downloads({
      seed: 3,
      link: { delay: 10, bandwidth: 25_000, queueLimit: 10_000 },
      flows: [{ bytes: 40e6, cc: "bbr" }],
    });
    const rate = link.queueDrops / link.sent;
    assert.ok(rate < 0.03, `${(rate * 100).toFixed(2)} % of segments dropped at the queue`);
  });

  await t.step("deep buffer: no standing queue beyond ~1 BDP", async () => {
    // Base RTT 20 ms, queue 4 BDP: a loss-based sender would fill it (RTT 100 ms).
    const { results } = await downloads({
      seed: 3,
      link: { delay: 10, bandwidth: 25_000, queueLimit: 2_000_000 },
      flows: [{ bytes: 20e6, cc: "bbr" }],
    });
    const { srtt, minRtt } = results[0].sender;
    assert.ok(srtt < 2 * minRtt, `srtt ${srtt} ms, min RTT ${minRtt} ms`);
  });

  for (const queue of [10_000, 200_000]) {
    await t.step(`sharing a bottleneck with CUBIC (queue ${queue / 1000} KB)`, async () => {
      // 40 Mbit/s, 20 ms RTT (BDP 100 KB); both flows run together from t = 0.
      const { results } = await downloads({
        seed: 1,
        link: { delay: 10, bandwidth: 5_000, queueLimit: queue },
        flows: [{ bytes: 30e6, cc: "bbr" }, { bytes: 30e6, cc: "cubic" }],
        sampleEvery: 1000,
      });
      const end = Math.min(results[0].progress.length, results[1].progress.length) - 1;
      assert.ok(end >= 5, "both flows overlap for several seconds");
      const bbr = results[0].progress[end] - results[0].progress[2];
      const cubic = results[1].progress[end] - results[1].progress[2];
      const share = cubic / (bbr + cubic);
      assert.ok(share > 0.3, `CUBIC got ${(share * 100).toFixed(0)} % of the bottleneck`);
    });
  }
});
