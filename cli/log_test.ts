import assert from "node:assert/strict";
import {
  createLogger,
  formatBytes,
  formatDuration,
  formatJson,
  formatText,
  LineSink,
} from "./log.ts";

const time = new Date("2026-01-02T03:04:05.678Z");

Deno.test("log", async (t) => {
  await t.step("json: one object per line, endpoints as text", () => {
    const line = formatJson({
      level: "info",
      event: "tcp-close",
      peer: "phone",
      source: { address: "10.44.0.2", port: 50000 },
      destination: { address: "2001:db8::1", port: 443 },
      bytesUp: 10,
      skipped: undefined,
    }, time);
    assert.ok(!line.includes("\n"));
    assert.deepEqual(JSON.parse(line), {
      time: "2026-01-02T03:04:05.678Z",
      level: "info",
      event: "tcp-close",
      peer: "phone",
      source: "10.44.0.2:50000",
      destination: "[2001:db8::1]:443",
      bytesUp: 10,
    });
  });

  await t.step("text: readable fields", () => {
    const line = formatText({
      level: "warn",
      event: "tcp-close",
      peer: "phone",
      source: { address: "10.44.0.2", port: 50000 },
      destination: { address: "192.0.2.1", port: 80 },
      bytesUp: 1234,
      bytesDown: 5_600_000,
      durationMs: 1500,
      end: "upstream reset",
    }, time);
    assert.equal(
      line,
      '2026-01-02T03:04:05.678Z WARN  tcp-close phone 10.44.0.2:50000 → 192.0.2.1:80 bytesUp=1.2 kB bytesDown=5.6 MB durationMs=1.50s end="upstream reset"',
    );
  });

  await t.step("levels filter", () => {
    const lines: string[] = [];
    const log = createLogger({ level: "warn", write: (l) => lines.push(l), now: () => time });
    log.log({ level: "info", event: "a" });
    log.log({ level: "error", event: "b" });
    log.log({ level: "debug", event: "c" });
    assert.equal(lines.length, 1);
    assert.match(lines[0], /ERROR b$/);
    assert.equal(log.enabled("warn"), true);
    assert.equal(log.enabled("info"), false);
  });

  await t.step("units", () => {
    assert.equal(formatBytes(999), "999 B");
    assert.equal(formatBytes(52_428_800), "52 MB");
    assert.equal(formatDuration(12), "12ms");
    assert.equal(formatDuration(61_000), "1m01s");
  });
});

Deno.test("LineSink", async (t) => {
  await t.step("writes lines in order, in the background, and flushes", async () => {
    const out: string[] = [];
    const sink = new LineSink({
      write: async (b) => {
        await new Promise((r) => setTimeout(r, 1));
        const n = Math.min(b.length, 7); // partial writes
        out.push(new TextDecoder().decode(b.subarray(0, n)));
        return n;
      },
    });
    for (let i = 0; i < 20; i++) sink.line(`line ${i}`);
    assert.equal(out.length, 0, "nothing written synchronously");
    await sink.flush();
    assert.equal(out.join(""), Array.from({ length: 20 }, (_, i) => `line ${i}\n`).join(""));
  });

  await t.step("a slow output: lines beyond maxPending are dropped, then reported", async () => {
    const out: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => release = r);
    const sink = new LineSink({
      maxPending: 100,
      write: async (b) => {
        await gate;
        out.push(new TextDecoder().decode(b));
        return b.length;
      },
    });
    for (let i = 0; i < 50; i++) sink.line(`event ${String(i).padStart(2, "0")}`);
    release();
    await sink.flush();
    const text = out.join("");
    assert.ok(sink.dropped > 0);
    assert.match(
      text,
      new RegExp(`\\(${sink.dropped} log lines dropped: the output was too slow\\)`),
    );
    assert.ok(text.startsWith("event 00\n"));
  });

  await t.step("a failed output ends quietly", async () => {
    let writes = 0;
    const sink = new LineSink({
      write: () => {
        writes++;
        return Promise.reject(new Error("closed"));
      },
    });
    sink.line("x");
    sink.line("y");
    await sink.flush(); // resolves: the failure is not thrown at the logger's user
    assert.equal(writes, 1, "both lines went in one write, which failed");
    sink.line("z"); // a later line tries again
    await sink.flush();
    assert.equal(writes, 2);
    assert.equal(sink.dropped, 0);
  });
});
