// Two TCP layers over an in-memory link with seeded loss, duplication,
// reordering and delay: transfers in both directions must be byte-exact.
import assert from "node:assert/strict";
import type { TcpConnectionLike, TcpLayerHost } from "./api.ts";
import type { Connection, TcpOptions } from "./connection.ts";
import { TcpLayer } from "./layer.ts";
import { xorshift32 } from "../../tests/_prng.ts";

const A = new Uint8Array([10, 0, 0, 1]);
const B = new Uint8Array([10, 0, 0, 2]);

function rng(seed: number): () => number {
  const next = xorshift32(seed);
  return () => next() / 2 ** 32;
}

interface LinkOpts {
  loss: number;
  dup: number;
  reorder: number;
  delay: number;
  jitter: number;
}

async function ticks(n = 20) {
  for (let i = 0; i < n; i++) await Promise.resolve();
}

async function run(seed: number, size: number, link: LinkOpts, opts: TcpOptions = {}) {
  const rand = rng(seed);
  let now = 0;
  const queue: { at: number; to: "a" | "b"; src: Uint8Array; dst: Uint8Array; seg: Uint8Array }[] =
    [];
  const push = (to: "a" | "b", src: Uint8Array, dst: Uint8Array, seg: Uint8Array) => {
    if (rand() < link.loss) return;
    let at = now + link.delay + rand() * link.jitter;
    if (rand() < link.reorder) at += link.delay * 2;
    queue.push({ at, to, src, dst, seg });
    if (rand() < link.dup) queue.push({ at: at + 1, to, src, dst, seg: seg.slice() });
  };
  let accepted: TcpConnectionLike | null = null;
  const hostA: TcpLayerHost = {
    sendSegment: (s, d, seg) => push("b", s, d, seg),
    wake: () => {},
    onSyn: (r) => r.reset(),
  };
  const hostB: TcpLayerHost = {
    sendSegment: (s, d, seg) => push("a", s, d, seg),
    wake: () => {},
    onSyn: (r) => (accepted = r.accept()),
  };
  const a = new TcpLayer(hostA, opts);
  const b = new TcpLayer(hostB, opts);
  const client = a.connect(
    { localAddress: A, localPort: 5000, remoteAddress: B, remotePort: 80 },
    0,
  );
  const up = new Uint8Array(size), down = new Uint8Array(size >> 1);
  for (let i = 0; i < up.length; i++) up[i] = (i * 31 + seed) & 0xff;
  for (let i = 0; i < down.length; i++) down[i] = (i * 17 + 3) & 0xff;

  const readAll = async (c: TcpConnectionLike) => {
    const parts: Uint8Array[] = [];
    for await (const p of c.readable) parts.push(p);
    const n = parts.reduce((x, p) => x + p.length, 0);
    const out = new Uint8Array(n);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  };
  const writeAll = async (c: TcpConnectionLike, data: Uint8Array) => {
    const w = c.writable.getWriter();
    for (let i = 0; i < data.length; i += 7000) await w.write(data.subarray(i, i + 7000));
    await w.close();
  };
  let gotUp: Uint8Array | null = null, gotDown: Uint8Array | null = null;
  const clientDone = Promise.all([
    writeAll(client, up),
    readAll(client).then((d) => (gotDown = d)),
  ]);
  let serverDone: Promise<unknown> | null = null;
  for (let step = 0; step < 2_000_000; step++) {
    await ticks();
    if (!serverDone && accepted) {
      const s: TcpConnectionLike = accepted;
      serverDone = Promise.all([writeAll(s, down), readAll(s).then((d) => (gotUp = d))]);
    }
    a.poll(now);
    b.poll(now);
    if (gotUp && gotDown) break;
    queue.sort((x, y) => x.at - y.at);
    const next = Math.min(queue[0]?.at ?? Infinity, a.nextDeadline(), b.nextDeadline());
    if (next === Infinity) {
      await ticks();
      if (a.nextDeadline() === Infinity && b.nextDeadline() === Infinity && queue.length === 0) {
        break;
      }
      continue;
    }
    now = Math.max(now, next);
    while (queue.length > 0 && queue[0].at <= now) {
      const p = queue.shift()!;
      (p.to === "a" ? a : b).input(p.src, p.dst, p.seg, now);
    }
  }
  await clientDone;
  await serverDone;
  assert.ok(gotUp && gotDown, `transfer did not finish (seed ${seed})`);
  assert.deepEqual(gotUp, up, `upstream bytes differ (seed ${seed})`);
  assert.deepEqual(gotDown, down, `downstream bytes differ (seed ${seed})`);
  return { now, client: client as Connection, a, b };
}

Deno.test("two layers over a lossy link", async (t) => {
  await t.step("clean link, 1 MB each way", async () => {
    const r = await run(1, 1 << 20, { loss: 0, dup: 0, reorder: 0, delay: 5, jitter: 0 });
    assert.equal(r.client.stats.retransmits, 0);
  });
  for (const seed of [2, 3, 4, 5, 6, 7, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]) {
    await t.step(`seed ${seed}: 3% loss, dup, reordering (SACK, CUBIC)`, async () => {
      await run(seed, 200_000, { loss: 0.03, dup: 0.02, reorder: 0.05, delay: 5, jitter: 3 });
    });
  }
  for (const seed of [8, 9, 10]) {
    await t.step(`seed ${seed}: 5% loss, no SACK, no timestamps, NewReno`, async () => {
      await run(seed, 150_000, { loss: 0.05, dup: 0.01, reorder: 0.03, delay: 3, jitter: 2 }, {
        sack: false,
        timestamps: false,
        congestionControl: "newreno",
      });
    });
  }
  for (const seed of [30, 31, 32, 33]) {
    await t.step(`seed ${seed}: 15% loss, heavy reordering`, async () => {
      const r = await run(seed, 60_000, {
        loss: 0.15,
        dup: 0.05,
        reorder: 0.2,
        delay: 4,
        jitter: 6,
      });
      assert.ok(r.client.stats.retransmits > 0);
    });
  }
  await t.step("small buffers force zero windows and pending writes", async () => {
    await run(11, 100_000, { loss: 0.02, dup: 0, reorder: 0.02, delay: 2, jitter: 1 }, {
      receiveBuffer: 2048,
      maxReceiveBuffer: 4096,
      sendBuffer: 2048,
      maxSendBuffer: 2048,
    });
  });
});
