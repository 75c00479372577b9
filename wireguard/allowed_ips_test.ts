import assert from "node:assert/strict";
import { AllowedIps, type Cidr, formatCidr, parseCidr } from "./allowed_ips.ts";
import { parseIp } from "./ip.ts";
import { xorshift32 } from "../tests/_prng.ts";

function ip(text: string): Uint8Array {
  const address = parseIp(text);
  assert.ok(address, text);
  return address;
}

function texts(cidrs: Cidr[]): string[] {
  return cidrs.map(formatCidr);
}

/** The obvious model: a list of prefixes, scanned in full for each lookup. */
class NaiveTable<T> {
  readonly entries = new Map<string, { cidr: Cidr; value: T }>();
  insert(cidr: Cidr, value: T): void {
    const masked = parseCidr(formatCidr(cidr));
    this.entries.set(formatCidr(masked), { cidr: masked, value });
  }
  remove(cidr: Cidr): boolean {
    return this.entries.delete(formatCidr(parseCidr(formatCidr(cidr))));
  }
  removeValue(value: T): number {
    let count = 0;
    for (const [key, entry] of this.entries) {
      if (entry.value === value) {
        this.entries.delete(key);
        count++;
      }
    }
    return count;
  }
  lookup(address: Uint8Array): T | undefined {
    let best: { cidr: Cidr; value: T } | undefined;
    for (const entry of this.entries.values()) {
      const { cidr } = entry;
      if (cidr.address.length !== address.length) continue;
      if (best !== undefined && best.cidr.prefix >= cidr.prefix) continue;
      let match = true;
      for (let bit = 0; bit < cidr.prefix; bit++) {
        const mask = 0x80 >> (bit & 7);
        if ((cidr.address[bit >> 3] & mask) !== (address[bit >> 3] & mask)) {
          match = false;
          break;
        }
      }
      if (match) best = entry;
    }
    return best?.value;
  }
  entriesOf(value: T): string[] {
    return [...this.entries.values()].filter((e) => e.value === value).map((e) =>
      formatCidr(e.cidr)
    );
  }
}

Deno.test("parseCidr and formatCidr", async (t) => {
  await t.step("parses prefixes and clears host bits", () => {
    assert.deepEqual(parseCidr("10.0.0.1/32"), {
      address: new Uint8Array([10, 0, 0, 1]),
      prefix: 32,
    });
    assert.deepEqual(parseCidr("10.1.2.3/8"), {
      address: new Uint8Array([10, 0, 0, 0]),
      prefix: 8,
    });
    assert.deepEqual(parseCidr("10.255.255.255/9"), {
      address: new Uint8Array([10, 128, 0, 0]),
      prefix: 9,
    });
    assert.equal(formatCidr(parseCidr("0.0.0.0/0")), "0.0.0.0/0");
    assert.equal(formatCidr(parseCidr("1.2.3.4/0")), "0.0.0.0/0");
    assert.equal(formatCidr(parseCidr("fd00::1/64")), "fd00::/64");
    assert.equal(
      formatCidr(parseCidr("fd00:1234:5678:9abc:def0::1/61")),
      "fd00:1234:5678:9ab8::/61",
    );
    assert.equal(formatCidr(parseCidr("::/0")), "::/0");
    assert.equal(formatCidr(parseCidr("FD00::1")), "fd00::1/128");
    assert.equal(formatCidr(parseCidr("192.168.1.7")), "192.168.1.7/32");
  });

  await t.step("rejects malformed text naming it", () => {
    for (
      const text of ["", "10.0.0.1/33", "fd00::/129", "10.0.0/8", "10.0.0.1/", "x/8", " 10.0.0.0/8"]
    ) {
      assert.throws(() => parseCidr(text), {
        name: "RangeError",
        message: `Invalid CIDR ${
          JSON.stringify(text)
        }: expected an IPv4 or IPv6 address with an optional /prefix`,
      });
    }
  });
});

Deno.test("AllowedIps", async (t) => {
  await t.step("longest prefix wins across overlapping prefixes", () => {
    const table = new AllowedIps<string>();
    table.insert(parseCidr("10.0.0.0/8"), "a");
    table.insert(parseCidr("10.1.0.0/16"), "b");
    table.insert(parseCidr("10.1.2.0/24"), "c");
    table.insert(parseCidr("10.1.2.3/32"), "d");
    table.insert(parseCidr("10.1.2.128/25"), "e");
    assert.equal(table.lookup(ip("10.1.2.3")), "d");
    assert.equal(table.lookup(ip("10.1.2.4")), "c");
    assert.equal(table.lookup(ip("10.1.2.200")), "e");
    assert.equal(table.lookup(ip("10.1.3.0")), "b");
    assert.equal(table.lookup(ip("10.200.0.0")), "a");
    assert.equal(table.lookup(ip("11.0.0.0")), undefined);
    assert.equal(table.lookup(ip("9.255.255.255")), undefined);
    assert.equal(table.size, 5);
  });

  await t.step("insertion order does not matter", () => {
    const prefixes = ["10.1.2.3/32", "10.1.2.0/24", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.128/25"];
    const table = new AllowedIps<string>();
    prefixes.forEach((p) => table.insert(parseCidr(p), p));
    assert.equal(table.lookup(ip("10.1.2.3")), "10.1.2.3/32");
    assert.equal(table.lookup(ip("10.1.2.4")), "10.1.2.0/24");
    assert.equal(table.lookup(ip("10.1.2.129")), "10.1.2.128/25");
    assert.equal(table.lookup(ip("10.1.3.0")), "10.1.0.0/16");
    assert.equal(table.lookup(ip("10.3.0.0")), "10.0.0.0/8");
  });

  await t.step("default routes /0 for each family", () => {
    const table = new AllowedIps<string>();
    table.insert(parseCidr("0.0.0.0/0"), "v4 default");
    assert.equal(table.lookup(ip("1.2.3.4")), "v4 default");
    assert.equal(table.lookup(ip("255.255.255.255")), "v4 default");
    assert.equal(table.lookup(ip("::1")), undefined);
    table.insert(parseCidr("::/0"), "v6 default");
    table.insert(parseCidr("128.0.0.0/1"), "upper half");
    assert.equal(table.lookup(ip("::1")), "v6 default");
    assert.equal(table.lookup(ip("ffff::")), "v6 default");
    assert.equal(table.lookup(ip("127.255.255.255")), "v4 default");
    assert.equal(table.lookup(ip("128.0.0.0")), "upper half");
  });

  await t.step("IPv4 and IPv6 are separate", () => {
    const table = new AllowedIps<string>();
    table.insert(parseCidr("10.0.0.0/8"), "v4");
    table.insert(parseCidr("::/96"), "v6 zeros");
    table.insert(parseCidr("::ffff:0:0/96"), "v6 mapped");
    assert.equal(table.lookup(ip("10.0.0.1")), "v4");
    assert.equal(table.lookup(ip("::10.0.0.1")), "v6 zeros");
    assert.equal(table.lookup(ip("::ffff:10.0.0.1")), "v6 mapped");
    assert.equal(table.lookup(ip("11.0.0.1")), undefined);
  });

  await t.step("host bits of an inserted prefix are ignored", () => {
    const table = new AllowedIps<string>();
    table.insert({ address: ip("10.9.8.7"), prefix: 16 }, "x");
    assert.equal(table.lookup(ip("10.9.0.1")), "x");
    assert.deepEqual(texts(table.entriesOf("x")), ["10.9.0.0/16"]);
    assert.equal(table.remove({ address: ip("10.9.255.255"), prefix: 16 }), true);
    assert.equal(table.size, 0);
  });

  await t.step("insert copies the address", () => {
    const table = new AllowedIps<string>();
    const address = ip("10.0.0.1");
    table.insert({ address, prefix: 32 }, "x");
    address[0] = 11;
    assert.equal(table.lookup(ip("10.0.0.1")), "x");
    table.entriesOf("x")[0].address[0] = 12;
    assert.deepEqual(texts(table.entriesOf("x")), ["10.0.0.1/32"]);
  });

  await t.step("inserting an existing prefix moves it to the new value", () => {
    const table = new AllowedIps<string>();
    table.insert(parseCidr("10.0.0.0/24"), "alice");
    table.insert(parseCidr("10.0.1.0/24"), "alice");
    table.insert(parseCidr("10.0.0.0/24"), "bob");
    assert.equal(table.size, 2);
    assert.equal(table.lookup(ip("10.0.0.5")), "bob");
    assert.deepEqual(texts(table.entriesOf("alice")), ["10.0.1.0/24"]);
    assert.deepEqual(texts(table.entriesOf("bob")), ["10.0.0.0/24"]);
    table.insert(parseCidr("10.0.0.0/24"), "bob");
    assert.equal(table.size, 2);
  });

  await t.step("remove takes out one exact prefix", () => {
    const table = new AllowedIps<string>();
    table.insert(parseCidr("10.0.0.0/8"), "a");
    table.insert(parseCidr("10.1.0.0/16"), "b");
    table.insert(parseCidr("10.1.1.0/24"), "c");
    assert.equal(table.remove(parseCidr("10.1.0.0/17")), false);
    assert.equal(table.remove(parseCidr("10.0.0.0/7")), false);
    assert.equal(table.remove(parseCidr("fd00::/8")), false);
    assert.equal(table.remove(parseCidr("10.1.0.0/16")), true);
    assert.equal(table.remove(parseCidr("10.1.0.0/16")), false);
    assert.equal(table.size, 2);
    assert.equal(table.lookup(ip("10.1.0.1")), "a");
    assert.equal(table.lookup(ip("10.1.1.1")), "c");
    assert.equal(table.remove(parseCidr("10.0.0.0/8")), true);
    assert.equal(table.lookup(ip("10.1.0.1")), undefined);
    assert.equal(table.lookup(ip("10.1.1.1")), "c");
    assert.equal(table.remove(parseCidr("10.1.1.0/24")), true);
    assert.equal(table.lookup(ip("10.1.1.1")), undefined);
    assert.equal(table.size, 0);
    assert.deepEqual(table.entriesOf("a"), []);
  });

  await t.step("a branch point without a value is not a removable prefix", () => {
    const table = new AllowedIps<string>();
    table.insert(parseCidr("10.0.0.0/24"), "a");
    table.insert(parseCidr("10.0.1.0/24"), "b");
    // The two meet at an internal node for 10.0.0.0/23.
    assert.equal(table.remove(parseCidr("10.0.0.0/23")), false);
    assert.equal(table.size, 2);
    table.insert(parseCidr("10.0.0.0/23"), "c");
    assert.equal(table.lookup(ip("10.0.0.1")), "a");
    assert.equal(table.remove(parseCidr("10.0.0.0/23")), true);
    assert.equal(table.lookup(ip("10.0.1.1")), "b");
  });

  await t.step("removeValue drops every prefix of a peer", () => {
    const table = new AllowedIps<string>();
    table.insert(parseCidr("10.0.0.2/32"), "phone");
    table.insert(parseCidr("fd00::2/128"), "phone");
    table.insert(parseCidr("10.0.0.0/24"), "server");
    table.insert(parseCidr("192.168.0.0/16"), "phone");
    assert.deepEqual(texts(table.entriesOf("phone")), [
      "10.0.0.2/32",
      "192.168.0.0/16",
      "fd00::2/128",
    ]);
    assert.equal(table.removeValue("phone"), 3);
    assert.equal(table.removeValue("phone"), 0);
    assert.equal(table.removeValue("nobody"), 0);
    assert.equal(table.size, 1);
    assert.equal(table.lookup(ip("10.0.0.2")), "server");
    assert.equal(table.lookup(ip("fd00::2")), undefined);
    assert.equal(table.lookup(ip("192.168.1.1")), undefined);
  });

  await t.step("values are compared by identity", () => {
    const alice = { name: "peer" };
    const bob = { name: "peer" };
    const table = new AllowedIps<{ name: string }>();
    table.insert(parseCidr("10.0.0.1"), alice);
    table.insert(parseCidr("10.0.0.2"), bob);
    assert.equal(table.lookup(ip("10.0.0.1")), alice);
    assert.equal(table.removeValue(alice), 1);
    assert.equal(table.lookup(ip("10.0.0.2")), bob);
  });

  await t.step("rejects misuse", () => {
    const table = new AllowedIps<string>();
    assert.throws(() => table.lookup(new Uint8Array(5)), {
      name: "TypeError",
      message: "A lookup address must have 4 or 16 bytes, not 5",
    });
    assert.throws(() => table.insert({ address: new Uint8Array(6), prefix: 8 }, "x"), {
      name: "TypeError",
      message: "A CIDR address must be a Uint8Array of 4 or 16 bytes",
    });
    assert.throws(() => table.insert({ address: new Uint8Array(4), prefix: 33 }, "x"), {
      name: "RangeError",
      message: "A CIDR prefix must be an integer in 0..32, not 33",
    });
    assert.throws(() => table.remove({ address: new Uint8Array(16), prefix: -1 }), {
      name: "RangeError",
      message: "A CIDR prefix must be an integer in 0..128, not -1",
    });
    assert.throws(() => table.insert({ address: new Uint8Array(4), prefix: 1.5 }, "x"), RangeError);
    assert.equal(table.size, 0);
  });

  await t.step("matches a linear-scan model on random prefixes", () => {
    for (const seed of [1, 2, 3, 4]) {
      const next = xorshift32(0xa5a5a5a5 ^ seed);
      const table = new AllowedIps<number>();
      const model = new NaiveTable<number>();
      // Addresses drawn from a few clustered bases make prefixes overlap and
      // share long paths, which is where a trie goes wrong.
      const bases = [
        ip("10.0.0.0"),
        ip("10.0.128.0"),
        ip("192.168.1.0"),
        ip("fd00::"),
        ip("fd00::8000:0:0"),
        ip("2001:db8::"),
      ];
      const randomAddress = (): Uint8Array => {
        const base = bases[next() % bases.length];
        const out = base.slice();
        const varying = next() % 3 === 0 ? out.length : 2;
        for (let i = out.length - varying; i < out.length; i++) {
          if (next() % 2 === 0) out[i] = next() & 0xff;
        }
        return out;
      };
      const randomCidr = (): Cidr => {
        const address = randomAddress();
        const bits = address.length * 8;
        const r = next() % 10;
        const prefix = r === 0 ? next() % (bits + 1) : bits - (next() % 20);
        return { address, prefix };
      };
      const inserted: Cidr[] = [];
      let hits = 0;
      let lookups = 0;
      for (let op = 0; op < 10_000; op++) {
        const r = next() % 100;
        if (r < 45) {
          const cidr = randomCidr();
          const value = next() % 12;
          table.insert(cidr, value);
          model.insert(cidr, value);
          inserted.push(cidr);
        } else if (r < 55 && inserted.length > 0) {
          const cidr = next() % 4 === 0 ? randomCidr() : inserted[next() % inserted.length];
          assert.equal(table.remove(cidr), model.remove(cidr), formatCidr(cidr));
        } else if (r < 56) {
          const value = next() % 12;
          assert.equal(table.removeValue(value), model.removeValue(value));
        } else {
          const address = randomAddress();
          const found = table.lookup(address);
          assert.equal(found, model.lookup(address), `seed ${seed} op ${op}`);
          lookups++;
          if (found !== undefined) hits++;
        }
        assert.equal(table.size, model.entries.size);
      }
      for (let value = 0; value < 12; value++) {
        assert.deepEqual(texts(table.entriesOf(value)).sort(), model.entriesOf(value).sort());
      }
      // Lookups of every inserted address and its neighbours, at the end.
      for (const cidr of inserted) {
        const address = cidr.address.slice();
        assert.equal(table.lookup(address), model.lookup(address));
        address[address.length - 1] ^= 1;
        assert.equal(table.lookup(address), model.lookup(address));
      }
      // Enough state and enough matching lookups for the comparison to mean something.
      assert.ok(table.size > 150, `size ${table.size}`);
      assert.ok(hits > lookups / 5 && hits < lookups, `${hits} of ${lookups} lookups matched`);
    }
  });
});
