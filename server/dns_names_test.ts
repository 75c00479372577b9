import assert from "node:assert/strict";
import { decodeDns, encodeDns } from "./_dns_message.ts";
import { blockedAnswer, DnsNames, queryName } from "./dns_names.ts";
import { xorshift32 } from "../tests/_prng.ts";

function answer(name: string, records: [string, string, number][], id = 7): Uint8Array {
  return encodeDns({
    type: "response",
    id,
    flags: 0x8180,
    questions: [{ type: "A", name }],
    answers: [
      { type: "CNAME", name, ttl: 30, data: "edge.cdn.example" },
      ...records.map(([type, data, ttl]) => ({
        type: type as "A",
        name: "edge.cdn.example",
        ttl,
        data,
      })),
    ],
  });
}

Deno.test("DnsNames", async (t) => {
  await t.step("learns the asked name for A and AAAA, per peer, until TTL + grace", () => {
    const n = new DnsNames({ graceMs: 1000 });
    const msg = answer("www.example.com", [["A", "192.0.2.7", 10], ["AAAA", "2001:db8::7", 10]]);
    assert.equal(n.learn("p1", msg, 0), 2);
    assert.equal(n.lookup("p1", "192.0.2.7", 5000), "www.example.com");
    assert.equal(n.lookup("p1", "::ffff:192.0.2.7", 5000), "www.example.com");
    assert.equal(n.lookup("p1", "2001:0db8::7", 10_999), "www.example.com");
    assert.equal(n.lookup("p2", "192.0.2.7", 5000), undefined, "other peers' answers are theirs");
    assert.equal(n.lookup("p1", "192.0.2.7", 11_000), undefined);
    assert.equal(n.stats().entries, 1);
  });
  await t.step(
    "bounded: a peer over its quota loses its oldest; a full table takes from the biggest",
    () => {
      const n = new DnsNames({ maxPerPeer: 3, maxTotal: 4 });
      for (let i = 1; i <= 5; i++) {
        n.learn(
          "big",
          answer(`n${i}.example`, [["A", `192.0.2.${i}`, 60]]),
          0,
        );
      }
      assert.equal(n.lookup("big", "192.0.2.1", 0), undefined);
      assert.equal(n.lookup("big", "192.0.2.5", 0), "n5.example");
      n.learn("small", answer("s.example", [["A", "198.18.0.1", 60]]), 0);
      n.learn("small", answer("t.example", [["A", "198.18.0.2", 60]]), 0);
      assert.equal(n.stats().entries, 4);
      assert.equal(n.lookup("small", "198.18.0.1", 0), "s.example");
      assert.equal(n.lookup("small", "198.18.0.2", 0), "t.example");
    },
  );
  await t.step("queries, errors and garbage teach nothing; fuzz never throws (seeded)", () => {
    const n = new DnsNames();
    const q = new Uint8Array(
      encodeDns({ type: "query", id: 1, questions: [{ type: "A", name: "q.example" }] }),
    );
    assert.equal(n.learn("p", q, 0), 0);
    const base = answer("f.example", [["A", "192.0.2.9", 60]]);
    const rand = xorshift32(53);
    for (let i = 0; i < 5000; i++) {
      const m = base.slice(0, rand() % (base.length + 1));
      for (let f = rand() % 4; f > 0 && m.length; f--) m[rand() % m.length] = rand() & 255;
      n.learn("p", m, 0);
      queryName(m);
      blockedAnswer(m, "zero");
    }
    assert.ok(n.stats().malformed > 0);
  });
  await t.step("blocked answers: NXDOMAIN or 0.0.0.0 for the query's id and question", () => {
    const q = encodeDns({
      type: "query",
      id: 4242,
      flags: 0x0100,
      questions: [{ type: "A", name: "bad.example" }],
    });
    assert.equal(queryName(q), "bad.example");
    const nx = decodeDns(blockedAnswer(q, "nxdomain")!)!;
    assert.equal(nx.id, 4242);
    assert.equal(nx.flags! & 0xf, 3, "NXDOMAIN");
    assert.equal(nx.questions![0].name, "bad.example");
    const zero = decodeDns(blockedAnswer(q, "zero")!)!;
    assert.equal(zero.flags! & 0xf, 0, "NOERROR");
    assert.equal((zero.answers![0] as { data: string }).data, "0.0.0.0");
  });
});
