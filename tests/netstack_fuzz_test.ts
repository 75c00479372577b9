/**
 * Fuzzing the IP layer of `NetStack`: ≥100 000 random and mutated IPv4/IPv6
 * packets (TCP, UDP, ICMP, fragments, extension header chains; bit flips,
 * truncation, length fields, chain tampering, checksums fixed up half of the
 * time so deeper layers are reached) from a seeded PRNG. Nothing may throw,
 * every packet the stack emits must be well-formed, the tables must stay
 * within their limits, and an established TCP connection (to a second
 * NetStack, both with the built-in TCP layer) and an established UDP flow
 * must keep working.
 *
 * `FUZZ_SEED=n` picks the seed, `FUZZ_PACKETS=n` the number of packets.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  NetStack,
  type NetStackOptions,
  type TcpConnection,
  type TcpRequest,
} from "../netstack/stack.ts";
import type { UdpFlow } from "../netstack/udp.ts";
import { parseAddress } from "../netstack/addr.ts";
import { env, Rng } from "./fuzz/harness.ts";
import { FUZZ_LIMITS as LIMITS } from "./fuzz/netstack.ts";
import { checkOutput, corpus, ipv4, mutate, udpBytes } from "./fuzz/packets.ts";

const SEED = Number(env("FUZZ_SEED") ?? 0x5eed);
const PACKETS = Number(env("FUZZ_PACKETS") ?? 100_000);

const PROBE_CLIENT = parseAddress("10.9.9.9")!;
const PROBE_SERVER = parseAddress("198.51.100.7")!;
const PROBE_PORTS = [7777, 8888] as const;

Deno.test(`NetStack survives ${PACKETS} fuzzed packets (seed ${SEED})`, async (t) => {
  const rng = new Rng(SEED);
  let outputs = 0;
  const toClient: Uint8Array[] = [];
  const toServer: Uint8Array[] = [];
  const flows: UdpFlow[] = [];
  const accepted: TcpConnection[] = [];
  let requests = 0;
  const isProbeClient = (p: Uint8Array) =>
    p[0] >> 4 === 4 && p[16] === PROBE_CLIENT[0] && p[17] === PROBE_CLIENT[1] &&
    p[18] === PROBE_CLIENT[2] && p[19] === PROBE_CLIENT[3];
  let probeTcp: TcpConnection | undefined;
  const options: NetStackOptions = {
    output: (p) => {
      checkOutput(p);
      outputs++;
      if (isProbeClient(p)) toClient.push(p.slice());
    },
    onUdpFlow: (flow) => {
      flows.push(flow);
      // Fuzz flows: nobody reads; cancel some readables to cover that path.
      if (flows.length > 1 && rng.chance(0.3)) void flow.readable.cancel();
    },
    onTcpConnection: (request: TcpRequest) => {
      requests++;
      if (request.remoteAddress === "10.9.9.9") {
        probeTcp = request.accept();
        return;
      }
      const how = rng.pick(["rst", "icmp", "icmp-prohibited", "drop", "accept", "later"] as const);
      if (how === "accept") accepted.push(request.accept());
      else if (how !== "later") request.reject(how);
    },
    limits: LIMITS,
    random: (b) => {
      for (let i = 0; i < b.length; i++) b[i] = rng.int(256);
    },
    tcp: { secret: rng.bytes(16) },
  };
  const stack = new NetStack(options);
  const client = new NetStack({
    output: (p) => toServer.push(p.slice()),
    tcp: { secret: rng.bytes(16) },
  });
  let now = 1000;

  /** Runs the link between the two stacks until `done()` (or fails after 30 s simulated). */
  async function pump(done: () => boolean): Promise<void> {
    const end = now + 30_000;
    while (!done()) {
      assert.ok(now < end, "the probe connection stalled");
      await new Promise((r) => setTimeout(r, 0));
      stack.poll(now);
      client.poll(now);
      while (toClient.length + toServer.length > 0) {
        for (const p of toClient.splice(0)) client.input(p, now);
        for (const p of toServer.splice(0)) stack.input(p, now);
      }
      now += 5;
    }
  }

  // An established TCP connection and an established UDP flow that must
  // survive the fuzzing.
  const tcpClient = client.connect(
    { localAddress: PROBE_CLIENT, localPort: 5555, remoteAddress: PROBE_SERVER, remotePort: 443 },
    now,
  );
  await pump(() => probeTcp !== undefined);
  const serverConn = probeTcp!;
  const tcpClientReader = tcpClient.readable.getReader();
  const tcpClientWriter = tcpClient.writable.getWriter();
  const tcpServerReader = serverConn.readable.getReader();
  const tcpServerWriter = serverConn.writable.getWriter();
  const text = (b: Uint8Array | undefined) => new TextDecoder().decode(b);

  async function tcpRoundTrip(n: number): Promise<void> {
    const message = `tcp probe ${n};`;
    await tcpClientWriter.write(new TextEncoder().encode(message));
    let got = "";
    let reading = true;
    const read = (async () => {
      while (got.length < message.length) got += text((await tcpServerReader.read()).value);
      reading = false;
    })();
    await pump(() => !reading);
    await read;
    assert.equal(got, message);
    const reply = `tcp reply ${n};`;
    await tcpServerWriter.write(new TextEncoder().encode(reply));
    got = "";
    reading = true;
    const back = (async () => {
      while (got.length < reply.length) got += text((await tcpClientReader.read()).value);
      reading = false;
    })();
    await pump(() => !reading);
    await back;
    assert.equal(got, reply);
  }

  const probe = (n: number) =>
    ipv4(
      rng,
      PROBE_CLIENT,
      PROBE_SERVER,
      17,
      udpBytes(
        PROBE_CLIENT,
        PROBE_SERVER,
        PROBE_PORTS[0],
        PROBE_PORTS[1],
        new TextEncoder().encode(`probe ${n}`),
      ),
    );
  async function udpRoundTrip(n: number): Promise<void> {
    stack.input(probe(n), now);
    assert.equal(text((await udpReader.read()).value), `probe ${n}`);
    await udpWriter.write(new TextEncoder().encode(`reply ${n}`));
    stack.poll(now);
    const at = toClient.findIndex((p) => p[9] === 17);
    assert.ok(at >= 0, "the UDP reply went out");
    const [reply] = toClient.splice(at, 1);
    assert.equal(text(reply.subarray(28)), `reply ${n}`);
  }

  stack.input(probe(0), now);
  assert.equal(flows.length, 1);
  const flow = flows[0];
  const udpReader = flow.readable.getReader();
  const udpWriter = flow.writable.getWriter();
  assert.equal(text((await udpReader.read()).value), "probe 0");
  await tcpRoundTrip(0);

  await t.step(
    "nothing throws, limits hold, the connection and the flow keep working",
    async () => {
      let sent = 0;
      let probes = 0;
      while (sent < PACKETS) {
        for (const packet of corpus(rng)) {
          const p = rng.chance(0.8) ? mutate(rng, packet) : packet;
          stack.input(p, now);
          sent++;
          now += rng.int(20);
          if (sent % 64 === 0) stack.poll(now);
        }
        if (sent >= (probes + 1) * 2000) {
          probes++;
          await udpRoundTrip(probes);
          await tcpRoundTrip(probes);
          const s = stack.stats();
          assert.ok(s.fragments.bytes <= LIMITS.reassemblyBytes, `reassembly ${s.fragments.bytes}`);
          assert.ok(s.fragments.datagrams <= LIMITS.reassemblyDatagrams);
          assert.ok(s.udp.flows <= LIMITS.udpFlows);
          assert.ok(s.tcp.layer!.connections <= LIMITS.tcpConnections);
          assert.ok(s.tcp.layer!.halfOpen <= LIMITS.tcpHalfOpen);
        }
      }
      const s = stack.stats();
      assert.ok(s.packetsIn >= sent + probes);
      // The fuzzing reached every layer.
      const k = PACKETS / 100_000;
      assert.ok(s.tcp.segmentsIn > 1000 * k, `tcp ${s.tcp.segmentsIn}`);
      assert.ok(s.udp.opened > 1000 * k, `udp ${s.udp.opened}`);
      assert.ok(s.fragments.reassembled > 100 * k, `reassembled ${s.fragments.reassembled}`);
      assert.ok(s.icmp.echoReplies > 100 * k);
      assert.ok(s.icmp.errorsToTcp > 100 * k, `icmp to tcp ${s.icmp.errorsToTcp}`);
      assert.ok(s.icmp.errorsSent > 100 * k);
      assert.ok(requests > 100 * k);
      assert.ok(accepted.length > 0);
      assert.ok(outputs > 1000 * k);
      assert.ok(Object.keys(s.drops).length > 20, Object.keys(s.drops).join(" "));
      if (env("FUZZ_VERBOSE")) console.log(s);
    },
  );

  await t.step("the probe connection closes cleanly", async () => {
    await tcpClientWriter.close();
    await tcpServerWriter.close();
    let clientDone = false, serverDone = false;
    tcpClientReader.read().then((r) => clientDone = r.done);
    tcpServerReader.read().then((r) => serverDone = r.done);
    await pump(() => clientDone && serverDone);
  });

  await t.step("tables drain after the timeouts", () => {
    for (const c of accepted) c.reset();
    for (let i = 0; i < 50; i++) {
      now += 10_000;
      stack.poll(now);
    }
    const s = stack.stats();
    assert.equal(s.fragments.datagrams, 0);
    assert.equal(s.fragments.bytes, 0);
    assert.equal(s.udp.flows, 0);
    assert.ok(s.tcp.layer!.halfOpen <= LIMITS.tcpHalfOpen);
  });
});
