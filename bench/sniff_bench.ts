/**
 * The per-flow cost of reading a hostname, in the same run: an HTTP `Host`
 * header (the baseline), a TLS ClientHello's SNI, and a QUIC Initial (which
 * needs HKDF, AES header protection and AES-GCM), each from a real client's
 * bytes captured on loopback at start. The ratios say how many times the
 * baseline each costs; the absolute times (µs per flow) compare with a
 * dial (about 0.6 ms through the tunnel, bench/upstream_bench.ts).
 *
 * ```sh
 * deno bench -A bench/sniff_bench.ts
 * ```
 *
 * @module
 */

import { sniffHostname } from "../server/sniff.ts";
import { QuicSniffer } from "../server/_sniff_quic.ts";
import { realClientHello, realQuicInitials } from "../server/test_helpers.ts";

const http = new TextEncoder().encode(
  "GET /index.html HTTP/1.1\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nHost: www.example.com\r\n\r\n",
);
const hello = await realClientHello("www.example.com");
const initials = await realQuicInitials("www.example.com");

Deno.bench({ name: "HTTP Host", group: "hostname per flow", baseline: true }, () => {
  if (sniffHostname(http).done !== true) throw new Error("no name");
});
Deno.bench({ name: "TLS ClientHello SNI", group: "hostname per flow" }, () => {
  if (sniffHostname(hello).done !== true) throw new Error("no name");
});
Deno.bench({ name: "QUIC Initial SNI", group: "hostname per flow" }, () => {
  const sniffer = new QuicSniffer();
  let state = sniffer.push(initials[0]);
  for (let i = 1; !state.done && i < initials.length; i++) state = sniffer.push(initials[i]);
  if (!state.done) throw new Error("no name");
});
