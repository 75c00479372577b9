/**
 * Every fuzz target, with the share of inputs CI runs of each (the bench runs
 * a million of each). Adding a parser: write its `FuzzTarget` (see
 * `./harness.ts`) and add one line here.
 *
 * Still to add: the dashboard's JSON API bodies.
 *
 * @module
 */

import type { FuzzTarget } from "./harness.ts";
import { wireguardDevice, wireguardLoaded, wireguardMessages } from "./wireguard.ts";
import { fragmentsTarget, netstackTarget, wireTarget } from "./netstack.ts";
import { serverTarget } from "./server.ts";
import { proxyRepliesTarget, uapiSocketTarget } from "./framing.ts";
import { dnsTarget, proxyTextTarget, quicTarget, sniffTarget } from "./sniff.ts";
import {
  cliArgsTarget,
  configTarget,
  ipTarget,
  keyTarget,
  policyRuleTarget,
  resolvConfTarget,
  uapiSetTarget,
} from "./text.ts";

/** A target and the number of inputs CI feeds it. */
export interface TargetEntry {
  /** The target. */
  target: FuzzTarget<never>;
  /** Inputs per CI run (cheap targets get more). */
  ci: number;
}

/** All targets, in report order. */
export const TARGETS: readonly TargetEntry[] = [
  { target: wireguardDevice as FuzzTarget<never>, ci: 20_000 },
  { target: wireguardLoaded as FuzzTarget<never>, ci: 20_000 },
  { target: wireguardMessages as FuzzTarget<never>, ci: 50_000 },
  { target: netstackTarget as FuzzTarget<never>, ci: 20_000 },
  { target: serverTarget as FuzzTarget<never>, ci: 10_000 },
  { target: fragmentsTarget as FuzzTarget<never>, ci: 50_000 },
  { target: wireTarget as FuzzTarget<never>, ci: 50_000 },
  { target: configTarget as FuzzTarget<never>, ci: 20_000 },
  { target: ipTarget as FuzzTarget<never>, ci: 50_000 },
  { target: keyTarget as FuzzTarget<never>, ci: 50_000 },
  { target: policyRuleTarget as FuzzTarget<never>, ci: 50_000 },
  { target: cliArgsTarget as FuzzTarget<never>, ci: 20_000 },
  { target: resolvConfTarget as FuzzTarget<never>, ci: 20_000 },
  { target: uapiSetTarget as FuzzTarget<never>, ci: 20_000 },
  { target: sniffTarget as FuzzTarget<never>, ci: 20_000 },
  { target: quicTarget as FuzzTarget<never>, ci: 5_000 },
  { target: dnsTarget as FuzzTarget<never>, ci: 20_000 },
  { target: proxyTextTarget as FuzzTarget<never>, ci: 20_000 },
  { target: proxyRepliesTarget as FuzzTarget<never>, ci: 20_000 },
  { target: uapiSocketTarget as FuzzTarget<never>, ci: 2_000 },
];
