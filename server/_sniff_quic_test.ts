import assert from "node:assert/strict";
import { clientInitialKeys, QuicSniffer } from "./_sniff_quic.ts";
import { xorshift32 } from "../tests/_prng.ts";
import { realQuicInitials as realInitials } from "./test_helpers.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("QUIC Initial hostname", async (t) => {
  await t.step("Initial keys of RFC 9001 Appendix A.1", () => {
    const keys = clientInitialKeys(Uint8Array.of(0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08));
    assert.equal(hex(keys.key), "1f369613dd76d5467730efcbe3b1a22d");
    assert.equal(hex(keys.iv), "fa044b2f42a3fd3b46fb255c");
    assert.equal(hex(keys.hp), "9f50449e04a0e810283a1e9933adedd2");
  });

  const initials = await realInitials("Quic.Example");

  await t.step("the SNI of a real client's Initial(s)", () => {
    assert.ok(initials.length >= 1, "the client sent an Initial");
    const sniffer = new QuicSniffer();
    let state = sniffer.push(initials[0]);
    for (let i = 1; !state.done && i < initials.length; i++) state = sniffer.push(initials[i]);
    assert.deepEqual(state, { done: true, hostname: "quic.example", source: "quic" });
  });

  await t.step("not QUIC, or a short header: done at once without a name", () => {
    assert.deepEqual(new QuicSniffer().push(new TextEncoder().encode("hello")), { done: true });
    assert.deepEqual(new QuicSniffer().push(Uint8Array.of(0x40, 1, 2, 3)), { done: true });
  });

  await t.step("a damaged Initial (bad tag) names nothing", () => {
    const d = initials[0].slice();
    d[d.length - 1] ^= 1;
    const state = new QuicSniffer({ maxDatagrams: 1 }).push(d);
    assert.equal(state.done, true);
    assert.equal((state as { hostname?: string }).hostname, undefined);
  });

  await t.step("fuzz: mutated and random datagrams never throw (seeded)", () => {
    const rand = xorshift32(0x9001);
    for (let i = 0; i < 3000; i++) {
      const base = initials[i % initials.length];
      let d: Uint8Array;
      if (i % 5 === 0) {
        d = new Uint8Array(rand() % 1400).map(() => rand() & 255);
        if (d.length > 5) d.set([0xc0, 0, 0, 0, 1], 0);
      } else {
        d = base.slice(0, 1 + rand() % base.length);
        for (let f = rand() % 6; f > 0; f--) d[rand() % Math.min(d.length, 64)] = rand() & 255;
      }
      const sniffer = new QuicSniffer({ maxBytes: 256 + rand() % 8192, maxDatagrams: 2 });
      const a = sniffer.push(d);
      const b = sniffer.push(d);
      assert.equal(typeof a.done, "boolean");
      assert.equal(b.done, true);
    }
  });
});
