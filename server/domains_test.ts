import assert from "node:assert/strict";
import { DomainRules, parseDomainPattern } from "./domains.ts";

Deno.test("DomainRules", async (t) => {
  await t.step("exact and suffix, most specific wins", () => {
    const r = new DomainRules({
      deny: ["*.ads.example", "tracker.test", "*"],
      allow: ["ok.ads.example", "*.corp.example"],
    });
    assert.equal(r.match("x.ads.example"), "deny");
    assert.equal(r.match("ads.example"), "deny", "*.suffix matches the suffix itself");
    assert.equal(r.match("OK.Ads.Example."), "allow");
    assert.equal(r.match("deep.a.corp.example"), "allow");
    assert.equal(r.match("tracker.test"), "deny");
    assert.equal(r.match("news.example"), "deny", "* denies the rest");
    assert.equal(r.denies(undefined), false, "no name: allowed");
  });
  await t.step("no match is allowed; deny beats allow on the same pattern", () => {
    const r = new DomainRules({ deny: ["a.example"], allow: ["a.example"] });
    assert.equal(r.denies("a.example"), true);
    assert.equal(r.denies("b.example"), false);
    assert.equal(new DomainRules().empty, true);
  });
  await t.step("malformed patterns", () => {
    for (const bad of ["", "a..b", "*x.example", "a b", "http://x", "*.", "x.*"]) {
      assert.throws(() => parseDomainPattern(bad), TypeError, bad);
    }
  });
});
