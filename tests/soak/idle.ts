/**
 * Idle soak: a server (child process) with `peers` configured peers, each
 * with a live session made by {@linkcode clientCrowd}, then no traffic at all
 * for `idleMs`. Measured: the server's CPU time and timer wake-ups (`polls`)
 * over the idle period, sampled every `sampleMs`.
 *
 * @module
 */

import { generatePrivateKey, keyToBase64, publicKey } from "../../wireguard/mod.ts";
import { clientCrowd } from "./clients.ts";
import { ServerProcess, type ServerSample } from "./server_proc.ts";

/** What {@linkcode idleSoak} measured. */
export interface IdleResult {
  /** Peers with a live session. */
  peers: number;
  /** Samples over the idle period, the first right after the handshakes settled. */
  samples: { atMs: number; sample: ServerSample }[];
  /** Server CPU over the idle period, % of one core. */
  cpuPercent: number;
  /** Timer wake-ups of the server over the idle period. */
  polls: number;
}

/** Runs the idle soak. */
export async function idleSoak(
  options: {
    peers: number;
    idleMs: number;
    sampleMs?: number;
    onSample?: (s: ServerSample) => void;
  },
): Promise<IdleResult> {
  const serverKey = generatePrivateKey();
  const serverPublic = keyToBase64(publicKey(serverKey));
  // The crowd needs the server's port and the server the crowd's keys: keys first.
  const keys = Array.from({ length: options.peers }, () => generatePrivateKey());
  await using server = await ServerProcess.start({
    privateKey: keyToBase64(serverKey),
    peers: keys.map((k, i) => ({
      publicKey: keyToBase64(publicKey(k)),
      allowedIps: [`10.${(i >> 8) & 255}.${i & 255}.2/32`],
    })),
    echo: true,
  });
  const crowd = clientCrowd(options.peers, serverPublic, server.port, keys);
  try {
    await crowd.connect();
  } finally {
    crowd.close();
  }
  await new Promise((r) => setTimeout(r, 1000)); // the last keepalives land
  const samples: { atMs: number; sample: ServerSample }[] = [];
  const start = performance.now();
  const take = async (gc = false) => {
    const sample = await server.sample(gc);
    samples.push({ atMs: performance.now() - start, sample });
    options.onSample?.(sample);
  };
  await take(true);
  const step = options.sampleMs ?? options.idleMs;
  while (performance.now() - start < options.idleMs) {
    await new Promise((r) =>
      setTimeout(r, Math.min(step, options.idleMs - (performance.now() - start)))
    );
    await take(performance.now() - start >= options.idleMs);
  }
  const first = samples[0], last = samples.at(-1)!;
  return {
    peers: options.peers,
    samples,
    cpuPercent: (last.sample.cpuMs - first.sample.cpuMs) / (last.atMs - first.atMs) * 100,
    polls: last.sample.polls - first.sample.polls,
  };
}
