import assert from "node:assert/strict";
import { clientHelloName, sniffFirstBytes, sniffHostname, sniffStream } from "./sniff.ts";
import { xorshift32 } from "../tests/_prng.ts";
import { realClientHello } from "./test_helpers.ts";

const text = new TextEncoder();

async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of stream) parts.push(c);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.length;
  return out;
}

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    pull(c) {
      const next = chunks.shift();
      if (next) c.enqueue(next);
      else c.close();
    },
  });
}

Deno.test("sniffHostname", async (t) => {
  const hello = await realClientHello("Www.Example.COM");

  await t.step("SNI from a real ClientHello, at every split point", () => {
    assert.deepEqual(sniffHostname(hello), {
      done: true,
      hostname: "www.example.com",
      source: "sni",
    });
    for (let i = 1; i < hello.length; i++) {
      assert.deepEqual(sniffHostname(hello.subarray(0, i)), { done: false }, `prefix ${i}`);
    }
  });

  await t.step("a ClientHello split over two TLS records", () => {
    const body = hello.subarray(5);
    const cut = 40;
    const rec = (b: Uint8Array) => Uint8Array.of(0x16, 3, 1, b.length >> 8, b.length & 255, ...b);
    const two = Uint8Array.from([...rec(body.subarray(0, cut)), ...rec(body.subarray(cut))]);
    assert.equal((sniffHostname(two) as { hostname?: string }).hostname, "www.example.com");
  });

  await t.step("Encrypted Client Hello: the outer name is not the flow's name", () => {
    // The real ClientHello with one more extension (0xfe0d) at the end of its list.
    const body = hello.subarray(9); // record header (5) and handshake header (4)
    let at = 2 + 32;
    at += 1 + body[at];
    at += 2 + ((body[at] << 8) | body[at + 1]);
    at += 1 + body[at];
    const extLen = (body[at] << 8) | body[at + 1];
    const ech = Uint8Array.of(0xfe, 0x0d, 0, 1, 0);
    const b = Uint8Array.from([
      ...body.subarray(0, at),
      (extLen + 5) >> 8,
      (extLen + 5) & 255,
      ...body.subarray(at + 2),
      ...ech,
    ]);
    const hs = Uint8Array.of(1, 0, b.length >> 8, b.length & 255, ...b);
    const rec = Uint8Array.of(0x16, 3, 1, hs.length >> 8, hs.length & 255, ...hs);
    assert.deepEqual(sniffHostname(rec), { done: true });
    assert.equal(clientHelloName(hello.subarray(9)).done, true);
    assert.equal(
      (clientHelloName(hello.subarray(9)) as { hostname?: string }).hostname,
      "www.example.com",
    );
  });

  await t.step("HTTP Host, with port, IPv6 literal, any case", () => {
    const h = (s: string) => sniffHostname(text.encode(s));
    assert.deepEqual(h("GET / HTTP/1.1\r\nUser-Agent: x\r\nhOsT:  Site.Test:8080 \r\n\r\n"), {
      done: true,
      hostname: "site.test",
      source: "http",
    });
    assert.equal(
      (h("GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n") as { hostname: string })
        .hostname,
      "2001:db8::1",
    );
    assert.deepEqual(h("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), { done: true });
    assert.deepEqual(h("GET / HTTP/1.1\r\nAcc"), { done: false });
    assert.deepEqual(h("GE"), { done: false });
  });

  await t.step("other protocols finish at once without a name", () => {
    assert.deepEqual(sniffHostname(text.encode("SSH-2.0-OpenSSH_9.2\r\n")), { done: true });
    assert.deepEqual(sniffHostname(Uint8Array.of(0, 1, 2)), { done: true });
    assert.deepEqual(sniffHostname(Uint8Array.of(0x16, 3, 1, 0, 0)), { done: true });
  });

  await t.step("a command that only looks like a request line finishes at its end", () => {
    // Without this, such a client's first bytes waited out the time budget.
    const h = (s: string) => sniffHostname(text.encode(s));
    assert.deepEqual(h("EHLO client.test\r\n"), { done: true });
    assert.deepEqual(h("GET key\r\n"), { done: true });
    assert.deepEqual(h("GET 20000000 t2\n"), { done: true });
    assert.deepEqual(h("GET / HTTP/1\r\n"), { done: true });
    assert.deepEqual(h("GET / HTTP/1.0\n"), { done: false });
    assert.deepEqual(h("GET / HTTP/2.0\r\nHost: a.test\r\n\r\n"), {
      done: true,
      hostname: "a.test",
      source: "http",
    });
  });

  await t.step("a hostile name is kept as bytes (the logs escape it)", () => {
    const s = sniffHostname(text.encode("GET / HTTP/1.1\r\nHost: <b>x\x1b[2J</b>\r\n\r\n"));
    assert.equal((s as { hostname: string }).hostname, "<b>x\x1b[2j</b>");
  });

  await t.step("never more than maxBytes", () => {
    const long = text.encode("GET / HTTP/1.1\r\n" + "X: y\r\n".repeat(100));
    assert.deepEqual(sniffHostname(long, 200), { done: true });
  });

  await t.step("fuzz: mutated, truncated and random inputs never throw (seeded)", () => {
    const seeds = [hello, text.encode("GET /x HTTP/1.1\r\nHost: a.example\r\nA: b\r\n\r\n")];
    const rand = xorshift32(0x5eed13);
    let named = 0;
    for (let i = 0; i < 30_000; i++) {
      const base = seeds[i % 2];
      let input: Uint8Array;
      const kind = rand() % 4;
      if (kind === 0) {
        input = base.slice(0, rand() % (base.length + 1));
      } else if (kind === 3) {
        input = new Uint8Array(rand() % 600).map(() => rand() & 255);
        if (input.length > 0) input[0] = rand() & 1 ? 0x16 : 0x47;
      } else {
        input = base.slice();
        const flips = 1 + rand() % 8;
        for (let f = 0; f < flips; f++) {
          const at = rand() % input.length;
          input[at] = kind === 1 ? input[at] ^ (1 << (rand() % 8)) : rand() & 255;
        }
      }
      const s = sniffHostname(input, 1 + rand() % 4096);
      assert.equal(typeof s.done, "boolean");
      if (s.done && s.hostname !== undefined) {
        named++;
        assert.ok(s.hostname.length > 0 && s.hostname.length <= 255);
        assert.ok(s.source === "sni" || s.source === "http");
      }
    }
    assert.ok(named > 1000, `some mutated inputs still name a host (${named})`);
  });
});

Deno.test("sniffStream", async (t) => {
  const hello = await realClientHello("a.example");

  await t.step("passes every byte on unchanged and reports the name", async () => {
    const rest = new Uint8Array(100_000).map((_, i) => i * 7);
    const chunks = [hello.slice(0, 10), hello.slice(10), rest.slice(0, 50_000), rest.slice(50_000)];
    const s = sniffStream(streamOf(chunks));
    const out = await collect(s.readable);
    assert.deepEqual(out, Uint8Array.from([...hello, ...rest]));
    assert.deepEqual(await s.result, { hostname: "a.example", source: "sni", allowed: true });
  });

  await t.step("decide() false: no held byte is passed on, the stream errors", async () => {
    const seen: (string | undefined)[] = [];
    const s = sniffStream(streamOf([hello.slice()]), {
      decide: (name) => (seen.push(name), false),
    });
    const reader = s.readable.getReader();
    await assert.rejects(reader.read());
    assert.deepEqual(seen, ["a.example"]);
    assert.equal((await s.result).allowed, false);
  });

  await t.step(
    "a client that sends nothing: the budget ends sniffing, later bytes pass",
    async () => {
      const t0 = new TransformStream<Uint8Array, Uint8Array>();
      const s = sniffStream(t0.readable, { timeoutMs: 20 });
      const reader = s.readable.getReader();
      const first = reader.read();
      assert.deepEqual(await s.result, { hostname: undefined, source: undefined, allowed: true });
      const w = t0.writable.getWriter();
      await w.write(text.encode("late"));
      assert.deepEqual((await first).value, text.encode("late"));
      await w.close();
      assert.equal((await reader.read()).done, true);
    },
  );

  await t.step(
    "silent clients: each wait ends at its own time, in order; answered ones never time out",
    async () => {
      // All waits share one timer: one per timeout, whatever their order.
      const ended: string[] = [];
      const silent = (name: string, timeoutMs: number) =>
        sniffFirstBytes(() => new Promise<Uint8Array | null>(() => {}), { timeoutMs }).then((r) => {
          ended.push(name);
          assert.ok(r.pending, `${name} ended by its timeout`);
        });
      let answer!: (chunk: Uint8Array) => void;
      const answered = sniffFirstBytes(() => new Promise<Uint8Array | null>((r) => answer = r), {
        timeoutMs: 5,
      }).then((r) => {
        ended.push("answered");
        assert.equal(r.pending, undefined, "an answered read does not time out");
        assert.equal(r.hostname, "a.example");
      });
      const waits = [silent("late", 60), silent("early", 20), silent("middle", 40)];
      answer(text.encode("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"));
      await Promise.all([...waits, answered]);
      assert.deepEqual(ended, ["answered", "early", "middle", "late"]);
    },
  );

  await t.step("fuzz: random chunkings of random prefixes keep the bytes (seeded)", async () => {
    const rand = xorshift32(13);
    for (let i = 0; i < 300; i++) {
      const base = i % 3 === 0
        ? new Uint8Array(rand() % 3000).map(() => rand() & 255)
        : Uint8Array.from([...hello.subarray(0, rand() % (hello.length + 1)), 1, 2, 3]);
      const chunks: Uint8Array[] = [];
      for (let at = 0; at < base.length;) {
        const n = 1 + rand() % 700;
        chunks.push(base.slice(at, at + n));
        at += n;
      }
      const s = sniffStream(streamOf(chunks), { maxBytes: 64 + rand() % 4000 });
      assert.deepEqual(await collect(s.readable), base);
      await s.result;
    }
  });
});
