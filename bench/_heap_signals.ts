/**
 * Heap diagnostics for a benchmark's server process, on signals, through
 * `node:inspector` (what was used to find what survives young-generation
 * GCs in `server_bench.ts`'s latency test):
 *
 * - `WGSTACK_BENCH_HEAPSNAP=FILE`: SIGUSR2 writes a heap snapshot (after a
 *   full GC: what is reachable) to FILE, for Chrome's DevTools.
 * - `WGSTACK_BENCH_HEAPPROF=FILE`: the first SIGUSR1 starts V8's sampling
 *   heap profiler, the second writes its profile to FILE. Samples of objects
 *   that die in a young-generation GC are dropped unless
 *   `WGSTACK_BENCH_HEAPPROF_ALL=1`: so by default the profile shows where
 *   the objects that survive scavenges were allocated.
 *
 * @module
 */

/** Installs the signal handlers the environment asks for (nothing otherwise). */
export async function installHeapSignals(): Promise<void> {
  const snapshotPath = Deno.env.get("WGSTACK_BENCH_HEAPSNAP");
  const profilePath = Deno.env.get("WGSTACK_BENCH_HEAPPROF");
  if (!snapshotPath && !profilePath) return;
  const { Session } = await import("node:inspector");
  if (snapshotPath) {
    Deno.addSignalListener("SIGUSR2", () => {
      const session = new Session();
      session.connect();
      const chunks: string[] = [];
      session.on("HeapProfiler.addHeapSnapshotChunk", (m: { params: { chunk: string } }) => {
        chunks.push(m.params.chunk);
      });
      session.post("HeapProfiler.takeHeapSnapshot", undefined, () => {
        Deno.writeTextFileSync(snapshotPath, chunks.join(""));
        session.disconnect();
      });
    });
  }
  if (profilePath) {
    const session = new Session();
    session.connect();
    let sampling = false;
    Deno.addSignalListener("SIGUSR1", () => {
      if (!sampling) {
        sampling = true;
        session.post("HeapProfiler.startSampling", {
          samplingInterval: 4096,
          includeObjectsCollectedByMajorGC: true,
          includeObjectsCollectedByMinorGC: Deno.env.get("WGSTACK_BENCH_HEAPPROF_ALL") === "1",
        });
        return;
      }
      sampling = false;
      session.post("HeapProfiler.stopSampling", (error: unknown, r: { profile: unknown }) => {
        Deno.writeTextFileSync(profilePath, JSON.stringify(error ?? r.profile));
      });
    });
  }
}
