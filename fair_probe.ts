import { downloads } from "./tests/sim/transfer.ts";
for (const lr of ["1", "0"]) {
  Deno.env.set("BBR_LR", lr);
  for (const queue of [10_000, 50_000, 200_000]) {
    const { results, link } = await downloads({
      seed: 1,
      link: { delay: 10, bandwidth: 5000, queueLimit: queue },
      flows: [{ bytes: 30e6, cc: "bbr" }, { bytes: 30e6, cc: "cubic" }],
      sampleEvery: 1000,
    });
    const end = Math.min(results[0].progress.length, results[1].progress.length) - 1;
    const a = results[0].progress[end] - results[0].progress[2];
    const b = results[1].progress[end] - results[1].progress[2];
    console.log(
      `lossResponse=${lr} queue=${queue} (BDP 100000): bbr ${
        (a / (a + b) * 100).toFixed(0)
      }% cubic ${
        (b / (a + b) * 100).toFixed(0)
      }% over s 2..${end}; drops ${link.queueDrops}/${link.sent} (${
        (link.queueDrops / link.sent * 100).toFixed(1)
      }%)`,
    );
  }
}
