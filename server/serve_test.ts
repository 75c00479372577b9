/**
 * Unit tests of `serve()` over an in-memory socket pair (the `socket`
 * option): our own client (Device + NetStack, tests/_client.ts) on one end,
 * the server on the other, no network at all.
 */

import assert from "node:assert/strict";
import { generatePrivateKey, keyFromBase64, publicKey } from "@wgstack/wireguard";
import type { TcpError } from "@wgstack/netstack";
import {
  serve,
  type ServeLogRecord,
  type ServeOptions,
  type Server,
  type TcpStream,
  type UdpStream,
} from "./serve.ts";
import { startTestClient, type TestClient } from "../tests/_client.ts";
import { MemorySocket } from "../tests/_memory_socket.ts";

const CLIENT4 = "10.7.0.2";
const CLIENT6 = "fd00:7::2";

interface Env {
  server: Server;
  client: TestClient;
  serverSocket: MemorySocket;
  logs: ServeLogRecord[];
  [Symbol.asyncDispose](): Promise<void>;
}

/** A server on one end of a memory link and our client, handshaken, on the other. */
async function setup(extra: Partial<ServeOptions> = {}): Promise<Env> {
  const serverSocket = new MemorySocket({ address: "192.0.2.1", port: 51820 });
  const clientSocket = new MemorySocket({ address: "192.0.2.2", port: 40000 });
  serverSocket.link(clientSocket);
  const serverKey = generatePrivateKey();
  const clientKey = generatePrivateKey();
  const logs: ServeLogRecord[] = [];
  const server = await serve({
    privateKey: serverKey,
    socket: serverSocket,
    peers: [{
      publicKey: publicKey(clientKey),
      allowedIps: [`${CLIENT4}/32`, `${CLIENT6}/128`],
      name: "client",
    }],
    logger: (record) => logs.push(record),
    shutdownTimeout: 500,
    ...extra,
  });
  const client = startTestClient({
    serverPublicKey: publicKey(serverKey),
    serverAddress: serverSocket.addr.address,
    serverPort: serverSocket.addr.port,
    privateKey: clientKey,
    socket: clientSocket,
    address4: CLIENT4,
    address6: CLIENT6,
  });
  await client.handshake();
  return {
    server,
    client,
    serverSocket,
    logs,
    async [Symbol.asyncDispose]() {
      client.close();
      await server.shutdown();
    },
  };
}

/**
 * Resolves with `promise`, or fails the test when it does not settle within
 * a generous bound (turns a hang into a failure; no duration is asserted).
 */
async function settles<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending (hangs)`)), 10_000);
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves once `condition()` holds (checked every few ms; fails when it never does). */
function until(condition: () => boolean, what: string): Promise<void> {
  return settles(
    new Promise<void>((resolve) => {
      const check = () => condition() ? resolve() : setTimeout(check, 2);
      check();
    }),
    what,
  );
}

/** A UDP handler that reads its flow to the end; `ended` resolves with the datagrams read. */
function udpReader() {
  const flows: UdpStream[] = [];
  const ends: Promise<number>[] = [];
  return {
    flows,
    ends,
    onUdp(flow: UdpStream): Promise<void> {
      flows.push(flow);
      const reading = (async () => {
        let n = 0;
        for await (const _ of flow.readable) n++;
        return n;
      })();
      ends.push(reading);
      return reading.then(() => {});
    },
  };
}

const payload = new TextEncoder().encode("ping");

/** The client sends one datagram from `CLIENT4:port` to 192.0.2.53:53. */
function sendUdp(client: TestClient, port = 5000): void {
  client.sendUdp({ address: CLIENT4, port }, { address: "192.0.2.53", port: 53 }, payload);
}

Deno.test("serve() lifecycle over a memory socket", async (t) => {
  await t.step("shutdown ends every UDP flow: handlers' reads end, udpOpen is 0", async () => {
    const udp = udpReader();
    await using env = await setup({ onUdp: udp.onUdp });
    sendUdp(env.client);
    env.client.sendUdp(
      { address: CLIENT6, port: 5001 },
      { address: "2001:db8::53", port: 53 },
      payload,
    );
    await until(() => udp.flows.length === 2, "two flows");
    assert.equal(env.server.stats().udpOpen, 2);
    await settles(env.server.shutdown(), "shutdown");
    assert.equal(env.server.stats().udpOpen, 0);
    assert.deepEqual(await settles(Promise.all(udp.ends), "the handlers' reads"), [1, 1]);
    assert.ok(env.serverSocket.closed);
  });

  await t.step(
    "removePeer resets the peer's TCP connections and closes its UDP flows",
    async () => {
      const udp = udpReader();
      const tcp: TcpStream[] = [];
      await using env = await setup({ onUdp: udp.onUdp, onTcp: (s) => void tcp.push(s) });
      const conn = env.client.connect("192.0.2.80", 80);
      const clientRead = conn.readable.getReader().read();
      sendUdp(env.client);
      await until(() => tcp.length === 1 && udp.flows.length === 1, "a connection and a flow");
      const serverRead = tcp[0].readable.getReader().read();
      assert.equal(env.server.removePeer(env.client.publicKey), true);
      assert.equal(env.server.stats().tcpOpen, 0, "at once");
      assert.equal(env.server.stats().udpOpen, 0, "at once");
      await assert.rejects(serverRead, (e: TcpError) => e.code === "ECONNABORTED");
      assert.equal(await settles(udp.ends[0], "the UDP handler's read"), 1);
      // The RST went out through the tunnel before the peer's keys went away.
      await assert.rejects(
        settles(clientRead, "the client's read"),
        (e: TcpError) => e.code === "ECONNRESET",
      );
      const removed = env.logs.find((r) => r.event === "peer-removed");
      assert.deepEqual(removed && { ...removed }, {
        level: "info",
        event: "peer-removed",
        peer: "client",
        tcpReset: 1,
        udpClosed: 1,
      });
      assert.equal(env.server.stats().wireguard.drops.noRoute, 0);
      assert.equal(env.server.removePeer(env.client.publicKey), false);
    },
  );

  await t.step("a connection accepted after its peer was removed is refused", async () => {
    let decide!: (d: boolean) => void;
    const accepted: TcpStream[] = [];
    await using env = await setup({
      accept: () => new Promise<boolean>((resolve) => decide = resolve),
      onTcp: (s) => void accepted.push(s),
    });
    env.client.connect("192.0.2.80", 80);
    await until(() => decide !== undefined, "the accept decision is asked for");
    env.server.removePeer(env.client.publicKey);
    decide(true);
    await until(() => env.server.stats().netstack.tcp.layer!.halfOpen === 0, "the SYN is answered");
    assert.equal(accepted.length, 0);
    assert.equal(env.server.stats().tcpOpen, 0);
  });

  await t.step("shutdown: FIN on open TCP, RST after the timeout for what stays open", async () => {
    const tcp: TcpStream[] = [];
    const udp = udpReader();
    // Long enough for the polite client's close to arrive even on a loaded machine.
    await using env = await setup({
      onTcp: (s) => void tcp.push(s),
      onUdp: udp.onUdp,
      shutdownTimeout: 2000,
    });
    // One client closes when the server's FIN arrives; the other never does.
    const polite = env.client.connect("192.0.2.80", 80);
    const stubborn = env.client.connect("192.0.2.81", 81);
    const politeEnd = polite.readable.pipeTo(new WritableStream()).then(() => polite.close());
    const stubbornRead = stubborn.readable.getReader().read();
    sendUdp(env.client);
    await until(() => tcp.length === 2 && udp.flows.length === 1, "two connections, a flow");
    let finished = false;
    env.server.finished.then(() => finished = true);
    await settles(env.server.shutdown(), "shutdown");
    assert.ok(finished);
    await settles(politeEnd, "the polite client's read ends with the FIN");
    assert.equal((await settles(stubbornRead, "the stubborn client's read")).done, true, "FIN");
    const record = env.logs.find((r) => r.event === "shutdown");
    assert.equal(record?.tcpReset, 1, "only the connection that stayed open was reset");
    const stats = env.server.stats();
    assert.deepEqual([stats.tcpOpen, stats.udpOpen], [0, 0]);
    assert.ok(env.serverSocket.closed);
    assert.deepEqual(await env.server[Symbol.asyncIterator]().next(), {
      value: undefined,
      done: true,
    });
  });

  await t.step("the signal option: aborting shuts the server down", async () => {
    const controller = new AbortController();
    const udp = udpReader();
    await using env = await setup({ signal: controller.signal, onUdp: udp.onUdp });
    sendUdp(env.client);
    await until(() => udp.flows.length === 1, "a flow");
    assert.equal(env.serverSocket.closed, false);
    controller.abort();
    await settles(env.server.finished, "finished");
    assert.ok(env.serverSocket.closed);
    assert.equal(env.server.stats().udpOpen, 0);
    assert.ok(env.logs.some((r) => r.event === "shutdown"));
  });

  await t.step("the signal option: an aborted signal shuts down at once", async () => {
    const socket = new MemorySocket({ address: "192.0.2.1", port: 51820 });
    const server = await serve({
      privateKey: generatePrivateKey(),
      socket,
      signal: AbortSignal.abort(),
    });
    await settles(server.finished, "finished");
    assert.ok(socket.closed);
  });

  await t.step(
    "pendingStreams: beyond the limit, connections are reset and flows closed",
    async () => {
      await using env = await setup({ limits: { pendingStreams: 2 } });
      const conns = [80, 81, 82].map((port) => env.client.connect("192.0.2.80", port));
      const third = conns[2].readable.getReader().read();
      await assert.rejects(
        settles(third, "the third read"),
        (e: TcpError) => e.code === "ECONNRESET",
      );
      sendUdp(env.client);
      await until(() => env.server.stats().netstack.udp.opened === 1, "the flow is seen");
      await until(() => env.server.stats().udpOpen === 0, "the flow is closed");
      assert.equal(env.server.stats().netstack.udp.flows, 0);
      // The two that fit wait in the iterator, oldest first.
      const iterator = env.server[Symbol.asyncIterator]();
      const ports: number[] = [];
      for (let i = 0; i < 2; i++) {
        const { value } = await iterator.next();
        assert.equal(value?.protocol, "tcp");
        ports.push(value!.destination.port);
      }
      assert.deepEqual(ports, [80, 81]);
      assert.equal(env.server.stats().tcpOpen, 2);
    },
  );
});

/** A second client on the server of `env`, added as peer `name` with `address4`, handshaken. */
async function addClient(env: Env, name: string, address4: string, port: number) {
  const socket = new MemorySocket({ address: "192.0.2.3", port });
  env.serverSocket.link(socket);
  const privateKey = generatePrivateKey();
  env.server.addPeer({ publicKey: publicKey(privateKey), allowedIps: [`${address4}/32`], name });
  const client = startTestClient({
    serverPublicKey: keyFromBase64(env.server.publicKey),
    serverAddress: env.serverSocket.addr.address,
    serverPort: env.serverSocket.addr.port,
    privateKey,
    socket,
    address4,
  });
  await client.handshake();
  return client;
}

Deno.test("serve() gives each connection and flow the peer whose packet opened it", async () => {
  const B4 = "10.7.0.3";
  const seen: string[] = [];
  const asked: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  const udp = udpReader();
  await using env = await setup({
    // Each decision waits until the other peer's packets have gone through
    // the stack, so a peer read at decision time would be the wrong one.
    accept: async (info) => {
      asked.push(`${info.peer.name} ${info.source.address}`);
      await gate;
      return true;
    },
    onTcp: (s) => void seen.push(`tcp ${s.peer.name} ${s.source.address} → :${s.destination.port}`),
    onUdp: (f) => {
      seen.push(`udp ${f.peer.name} ${f.source.address}:${f.source.port}`);
      return udp.onUdp(f);
    },
  });
  const b = await addClient(env, "b", B4, 40001);
  try {
    env.client.connect("192.0.2.80", 80);
    await until(() => asked.length === 1, "a's decision is asked for");
    b.sendUdp({ address: B4, port: 6000 }, { address: "192.0.2.53", port: 53 }, payload);
    b.connect("192.0.2.80", 81);
    sendUdp(env.client, 5000);
    await until(() => asked.length === 2 && udp.flows.length === 2, "b's SYN and both flows");
    release();
    await until(() => seen.length === 4, "both connections delivered");
    assert.deepEqual(asked, [`client ${CLIENT4}`, `b ${B4}`]);
    assert.deepEqual(seen.toSorted(), [
      `tcp b ${B4} → :81`,
      `tcp client ${CLIENT4} → :80`,
      `udp b ${B4}:6000`,
      `udp client ${CLIENT4}:5000`,
    ]);
    for (const key of [env.client.publicKey, b.publicKey]) {
      const state = env.server.peer(key)!;
      assert.deepEqual([state.tcpOpen, state.udpOpen], [1, 1], state.name);
      assert.equal(env.server.peerUsage(key)!.tcpConnections, 1, state.name);
    }
  } finally {
    b.close();
  }
});
