/**
 * Fuzz targets of the server's parsers of what clients send through the
 * tunnel: hostname sniffing (mutations of a real TLS ClientHello captured
 * from Node's TLS client on loopback, and of HTTP requests), DNS answers
 * learnt per peer, SOCKS5 UDP datagrams, upstream proxy URLs and domain
 * patterns.
 *
 * @module
 */

import assert from "node:assert/strict";
import { clientHelloName, normalizeHostname, sniffHostname } from "../../server/sniff.ts";
import { encodeDns } from "../../server/_dns_message.ts";
import { DnsNames, queryName } from "../../server/dns_names.ts";
import { parseUpstream, socksUdpPayload } from "../../server/upstream.ts";
import { parseDomainPattern } from "../../server/domains.ts";
import { QuicSniffer } from "../../server/_sniff_quic.ts";
import { realClientHello, realQuicInitials } from "../../server/test_helpers.ts";
import { concat, expectOnly, type FuzzTarget, hex, mutateBytes, mutateText } from "./harness.ts";

const text = new TextEncoder();

/** Hostname sniffing: a state, never a throw; a name found is already normalized. */
export const sniffTarget: FuzzTarget<Uint8Array> = {
  name: "sniff-hostname",
  covers: "sniffHostname, clientHelloName (TLS SNI, HTTP Host) on real ClientHellos mutated",
  async setup() {
    const seeds = [
      await realClientHello("www.example.com"),
      await realClientHello("a-very-long-label.sub.example.org"),
      text.encode("GET / HTTP/1.1\r\nHost: Example.ORG:8080\r\nAccept: */*\r\n\r\n"),
      text.encode("CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"),
    ];
    return {
      generate(rng) {
        const seed = rng.pick(seeds);
        const d = mutateBytes(rng, seed, rng.pick(seeds));
        return rng.chance(0.2) ? d.subarray(0, rng.int(d.length + 1)) : d;
      },
      feed(d) {
        const state = sniffHostname(d);
        if (state.done && state.hostname !== undefined) {
          assert.equal(normalizeHostname(state.hostname), state.hostname);
        }
        clientHelloName(d);
      },
      show: hex,
    };
  },
};

/** DNS answers learnt per peer: the table stays within its bound. */
export const dnsTarget: FuzzTarget<Uint8Array> = {
  name: "dns-answers",
  covers: "decodeDns (dns-packet), DnsNames.learn/lookup, queryName",
  setup(rng) {
    const names = new DnsNames({ maxPerPeer: 256, maxTotal: 1024 });
    const seeds = [
      encodeDns({
        type: "response",
        id: 7,
        flags: 0x8180,
        questions: [{ type: "A", name: "www.example.com" }],
        answers: [
          { type: "CNAME", name: "www.example.com", ttl: 30, data: "edge.cdn.example" },
          { type: "A", name: "edge.cdn.example", ttl: 60, data: "192.0.2.7" },
          { type: "AAAA", name: "edge.cdn.example", ttl: 60, data: "2001:db8::7" },
        ],
      }),
      encodeDns({
        type: "query",
        id: 9,
        flags: 0x0100,
        questions: [{ type: "AAAA", name: "a.b" }],
      }),
    ];
    const peers = ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"];
    return {
      generate(rng) {
        const d = mutateBytes(rng, rng.pick(seeds), rng.pick(seeds));
        // A fresh address in the answer now and then, so the table fills.
        if (rng.chance(0.3) && d.length >= 4) d.set(rng.bytes(4), d.length - 4);
        return d;
      },
      feed(d, now) {
        const peer = peers[d.length % peers.length];
        names.learn(peer, d, now);
        names.lookup(peer, "192.0.2.7", now);
        queryName(d);
      },
      show: hex,
      tables: () => ({ entries: names.stats().entries }),
      bounds: { entries: 1024 },
      reached: () => ({ learned: names.stats().learned, malformed: names.stats().malformed }),
      finish() {
        assert.ok(names.stats().learned > 0, "answers were learnt");
        void rng;
      },
    };
  },
};

/** SOCKS5 UDP datagrams, upstream proxy URLs and domain patterns. */
export const proxyTextTarget: FuzzTarget<{ d: Uint8Array; url: string; pattern: string }> = {
  name: "proxy-parsers",
  covers: "socksUdpPayload, parseUpstream (Type/RangeError only), parseDomainPattern (TypeError)",
  setup: () => ({
    generate(rng) {
      const socks = rng.pick([
        concat(Uint8Array.of(0, 0, 0, 1, 192, 0, 2, 7, 0, 53), text.encode("payload")),
        concat(Uint8Array.of(0, 0, 0, 3, 11), text.encode("example.com"), Uint8Array.of(1, 187)),
        concat(Uint8Array.of(0, 0, 0, 4), new Uint8Array(16), Uint8Array.of(0, 53, 1, 2)),
      ]);
      return {
        d: mutateBytes(rng, socks),
        url: mutateText(
          rng,
          rng.pick([
            "socks5h://me:secret@192.0.2.9:1080",
            "http://[2001:db8::9]:3128",
            "socks5://h:1",
          ]),
          [":", "@", "/", "[", "]", "%", "?", "#", "65536", "0", ""],
        ),
        pattern: mutateText(rng, rng.pick(["*.ads.example", "ok.ads.example", "*", "*."]), [
          "*",
          ".",
          "-",
          "_",
          " ",
          "É",
          "",
        ]),
      };
    },
    feed({ d, url, pattern }) {
      const payload = socksUdpPayload(d);
      if (payload !== null) assert.ok(payload.length <= d.length);
      // TypeError for a bad URL, RangeError for SOCKS credentials over 255 bytes.
      expectOnly(
        (e) => e instanceof TypeError || e instanceof RangeError,
        () => parseUpstream(url),
      );
      expectOnly((e) => e instanceof TypeError, () => parseDomainPattern(pattern));
    },
    show: ({ d, url, pattern }) => `${hex(d)} ${JSON.stringify(url)} ${JSON.stringify(pattern)}`,
  }),
};

/** QUIC Initial sniffing: real Initials from Deno's QUIC client, mutated; a state, never a throw. */
export const quicTarget: FuzzTarget<Uint8Array[]> = {
  name: "sniff-quic",
  covers: "QuicSniffer.push (header protection, AES-GCM, CRYPTO frames) on real Initials mutated",
  async setup() {
    const initials = await realQuicInitials("www.example.com");
    return {
      generate: (rng) =>
        initials.map((d) => rng.chance(0.5) ? mutateBytes(rng, d, rng.pick(initials)) : d),
      feed(datagrams) {
        const sniffer = new QuicSniffer();
        for (const d of datagrams) {
          const state = sniffer.push(d);
          if (state.done) {
            if (state.hostname !== undefined) {
              assert.equal(normalizeHostname(state.hostname), state.hostname);
            }
            break;
          }
        }
      },
      show: (datagrams) => datagrams.map(hex).join(" "),
    };
  },
};
