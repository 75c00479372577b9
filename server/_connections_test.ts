/**
 * Unit tests of the decisions in `_connections.ts` with hand-made requests and
 * flows (no stack, no socket): what each way of deciding answers the SYN.
 */

import assert from "node:assert/strict";
import type { TcpConnection, TcpRejectHow, TcpRequest, UdpFlow } from "@wgstack/netstack";
import { generatePrivateKey, type Peer, publicKey } from "@wgstack/wireguard";
import { Connections, type ConnectionsOptions } from "./_connections.ts";
import { PeerDirectory } from "./_peers.ts";
import type { Poller } from "./_poller.ts";
import type { ServeLogRecord, TcpStream, UdpStream } from "./serve.ts";

/** A peer as the directory sees it (only its key and endpoint are read). */
function fakePeer(): Peer {
  return { publicKey: publicKey(generatePrivateKey()), endpoint: undefined } as unknown as Peer;
}

/** A connection whose reset and close are counted. */
function fakeConnection() {
  const calls: string[] = [];
  let closed!: () => void;
  const conn = {
    closed: new Promise<void>((resolve) => closed = resolve),
    stats: {},
    reset: () => (calls.push("reset"), closed()),
    close: () => void calls.push("close"),
  } as unknown as TcpConnection;
  return { conn, calls, end: () => closed() };
}

/** A SYN from `source` that records how it was answered. */
function fakeRequest(source: unknown, port = 80) {
  const answers: string[] = [];
  const { conn, calls } = fakeConnection();
  const request = {
    localAddress: "192.0.2.80",
    localPort: port,
    remoteAddress: "10.7.0.2",
    remotePort: 40000,
    ipVersion: 4,
    source,
    accept: () => (answers.push("accept"), conn),
    reject: (how: TcpRejectHow = "rst") => void answers.push(how),
  } as unknown as TcpRequest;
  return { request, answers, calls };
}

function fakeFlow(source: unknown) {
  let closed = 0;
  const flow = {
    localAddress: "192.0.2.53",
    localPort: 53,
    remoteAddress: "10.7.0.2",
    remotePort: 5000,
    ipVersion: 4,
    source,
    readable: new ReadableStream(),
    writable: new WritableStream(),
    closed: new Promise<void>(() => {}),
    close: () => void closed++,
  } as unknown as UdpFlow;
  return { flow, closed: () => closed };
}

function setup(options: Partial<ConnectionsOptions> = {}) {
  const peers = new PeerDirectory();
  const peer = fakePeer();
  const info = peers.add(peer, "a");
  const logs: ServeLogRecord[] = [];
  const polls = { now: 0, soon: 0 };
  const poller = {
    pollNow: () => void polls.now++,
    pollSoon: () => void polls.soon++,
  } as unknown as Poller;
  const tcp: TcpStream[] = [];
  const udp: UdpStream[] = [];
  const flows = new Connections({
    peers,
    poller,
    log: (r) => logs.push(r),
    pendingStreams: 4,
    onTcp: (s) => void tcp.push(s),
    onUdp: (f) => void udp.push(f),
    ...options,
  });
  return { flows, peers, peer, info, logs, polls, tcp, udp };
}

/** Lets promise callbacks and microtasks run. */
const turn = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("Connections: deciding on a SYN", async (t) => {
  await t.step("no accept option: accepted at once and handed to onTcp with its peer", () => {
    const { flows, peer, info, tcp } = setup();
    const { request, answers } = fakeRequest(peer);
    flows.onTcpRequest(request);
    assert.deepEqual(answers, ["accept"]);
    assert.equal(tcp.length, 1);
    assert.equal(tcp[0].peer, info);
    assert.deepEqual(tcp[0].destination, { address: "192.0.2.80", port: 80 });
    assert.equal(flows.tcpOpen, 1);
    assert.equal(flows.tcpCounts().get(info), 1);
  });

  await t.step("a SYN without a source (not from a peer) gets a RST", () => {
    const { flows, tcp } = setup();
    const { request, answers } = fakeRequest(undefined);
    flows.onTcpRequest(request);
    assert.deepEqual(answers, ["rst"]);
    assert.equal(tcp.length, 0);
  });

  await t.step("the accept option's answers: icmp, false, a throw; then accept", async () => {
    const decisions: unknown[] = ["icmp", false, new Error("boom"), "accept"];
    const { flows, peer, logs, polls, tcp } = setup({
      accept: () => {
        const d = decisions.shift();
        if (d instanceof Error) throw d;
        return Promise.resolve(d as "icmp" | false | "accept");
      },
    });
    const answers: string[][] = [];
    for (let i = 0; i < 4; i++) {
      const r = fakeRequest(peer, 80 + i);
      answers.push(r.answers);
      flows.onTcpRequest(r.request);
    }
    await turn();
    assert.deepEqual(answers, [["icmp"], ["rst"], ["rst"], ["accept"]]);
    assert.equal(logs.filter((r) => r.event === "accept-error").length, 1);
    // The accepted SYN-ACK went out at once; the handler got it after.
    assert.equal(polls.now, 1);
    assert.deepEqual(tcp.map((s) => s.destination.port), [83]);
  });

  await t.step("a decision that arrives after the peer was removed is a RST", async () => {
    let decide!: (d: boolean) => void;
    const { flows, peers, peer, tcp } = setup({
      accept: () => new Promise<boolean>((resolve) => decide = resolve),
    });
    const { request, answers } = fakeRequest(peer);
    flows.onTcpRequest(request);
    peers.remove(peer);
    decide(true);
    await turn();
    assert.deepEqual(answers, ["rst"]);
    assert.equal(tcp.length, 0);
  });

  await t.step("stop: no new SYN is accepted; open connections get a FIN", async () => {
    const { flows, peer } = setup();
    const open = fakeRequest(peer);
    flows.onTcpRequest(open.request);
    const stopped = flows.stop();
    assert.deepEqual(open.calls, ["close"]);
    const late = fakeRequest(peer, 81);
    flows.onTcpRequest(late.request);
    assert.deepEqual(late.answers, ["rst"]);
    assert.equal(flows.resetAll(), 1);
    await stopped;
    await turn();
    assert.equal(flows.tcpOpen, 0);
  });
});

Deno.test("Connections: UDP flows and peers", async (t) => {
  await t.step("a flow goes to onUdp with its peer; closePeer ends that peer's only", () => {
    const { flows, peers, peer, info, udp } = setup();
    const other = fakePeer();
    peers.add(other, "b");
    const mine = fakeFlow(peer);
    const theirs = fakeFlow(other);
    flows.onUdpFlow(mine.flow);
    flows.onUdpFlow(theirs.flow);
    assert.deepEqual(udp.map((f) => f.peer.name), ["a", "b"]);
    assert.equal(udp[0].peer, info);
    assert.deepEqual(flows.closePeer(peer, info), { tcpReset: 0, udpClosed: 1 });
    assert.deepEqual([mine.closed(), theirs.closed()], [1, 0]);
    assert.deepEqual([flows.udpCount(peer), flows.udpCount(other), flows.udpOpen], [0, 1, 1]);
  });

  await t.step("a flow without a source, or after stop, is closed at once", async () => {
    const { flows, peer, udp } = setup();
    const orphan = fakeFlow(undefined);
    flows.onUdpFlow(orphan.flow);
    await flows.stop();
    const late = fakeFlow(peer);
    flows.onUdpFlow(late.flow);
    assert.deepEqual([orphan.closed(), late.closed(), udp.length], [1, 1, 0]);
  });
});
