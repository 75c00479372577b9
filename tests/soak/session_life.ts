/**
 * Session life in simulated time: a responder `Device` (the server) and
 * client `Device`s over an in-memory network with seeded loss, for hours of
 * simulated time in 250 ms steps. Clients send traffic (so sessions rekey
 * every 2 minutes, REKEY_AFTER_TIME), some with persistent keepalives, some
 * roam to a new outer address every few minutes, and transient peers are
 * added, used and removed on the server all along. Sampled every simulated
 * hour: the server's index table, keypairs, armed timers, queued packets,
 * rate limiter and peers, and the heap.
 *
 * @module
 */

import { Device, type Endpoint, type Peer } from "../../wireguard/device.ts";
import type { PeerState } from "../../wireguard/peer.ts";
import { defaultBackend } from "../../wireguard/crypto/mod.ts";
import { Rng } from "../fuzz/harness.ts";
import { bareIpv4 } from "../fuzz/wireguard.ts";

/** Options of {@linkcode sessionLife}. */
export interface SessionLifeOptions {
  /** Simulated hours. */
  hours: number;
  /** Seed of loss, roaming and traffic. */
  seed?: number;
  /** Long-lived clients (default 4). */
  clients?: number;
  /** Datagram loss, 0 to 1 (default 0.01). */
  loss?: number;
  /** Add and remove a transient peer every 5 minutes (default true). */
  transientPeers?: boolean;
  /** Roaming clients change their outer address every 7 minutes (default true). */
  roaming?: boolean;
  /** Called after each sample (progress). */
  onSample?: (sample: SessionSample) => void;
}

/** The server's tables at one moment of simulated time. */
export interface SessionSample {
  /** Simulated hours since the start. */
  hour: number;
  /** Peers configured on the server. */
  peers: number;
  /** Entries of the server's receiver-index table. */
  indices: number;
  /** Keypairs held by the server (current, previous, next of every peer). */
  keypairs: number;
  /** Handshakes in flight on the server (initiator state). */
  handshakes: number;
  /** Armed timers of the server's peers. */
  timers: number;
  /** Packets queued for a session on the server. */
  queued: number;
  /** Rate limiter entries. */
  rateLimiter: number;
  /** Handshake messages waiting in the server's queue. */
  handshakesPending: number;
  /** Handshakes the server completed so far. */
  handshakesCompleted: number;
  /** Packets the server delivered so far. */
  delivered: number;
  /** Index table entries of all clients together. */
  clientIndices: number;
  /** The heap after a GC (`--expose-gc`), else as it is. */
  heapUsed: number;
}

/** What {@linkcode sessionLife} returns. */
export interface SessionLifeResult {
  /** One sample a simulated hour, the first at hour 0 after the first handshakes. */
  samples: SessionSample[];
  /** Transient peers added and removed. */
  transientPeers: number;
  /** Times a client changed its outer address. */
  roams: number;
  /** Packets clients sent. */
  sent: number;
}

interface Client {
  device: Device;
  peer: Peer;
  endpoint: Endpoint;
  address: string;
  keepalive: boolean;
  roams: boolean;
  /** Send a packet every this many steps. */
  every: number;
}

const WALL_BASE = 1_700_000_000_000;
const STEP_MS = 250;
const SERVER: Endpoint = { address: "198.51.100.1", port: 51820 };

function armedTimers(peer: PeerState): number {
  const t = peer.timers;
  let n = 0;
  for (const at of [t.retransmitAt, t.keepaliveAt, t.newHandshakeAt, t.zeroKeysAt]) {
    if (at !== Infinity) n++;
  }
  return n + (t.persistentKeepaliveAt !== Infinity ? 1 : 0);
}

function heapNow(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return Deno.memoryUsage().heapUsed;
}

/** Runs the simulation; see the module doc. */
export function sessionLife(options: SessionLifeOptions): SessionLifeResult {
  const rng = new Rng(options.seed ?? 1);
  const loss = options.loss ?? 0.01;
  const backend = defaultBackend();
  let now = 1000;
  let delivered = 0;
  /** Datagrams in flight: delivered at the next step. */
  let inFlight: { d: Uint8Array; from: Endpoint; to: Endpoint }[] = [];
  const key = (e: Endpoint) => `${e.address}:${e.port}`;
  const byEndpoint = new Map<string, Client>();
  const send = (from: () => Endpoint) => (d: Uint8Array, to: Endpoint) => {
    if (!rng.chance(loss)) inFlight.push({ d: d.slice(), from: from(), to });
  };
  const server = new Device({
    privateKey: new Uint8Array(32).fill(200),
    backend,
    random: rng.fill,
    wallClock: () => WALL_BASE + now,
    sendDatagram: send(() => SERVER),
    deliverPacket: () => delivered++,
  });

  let nextClient = 0;
  function newClient(keepalive: boolean, roams: boolean, every: number): Client {
    const n = nextClient++;
    const address = `10.${(n >> 8) & 255}.${n & 255}.2`;
    const endpoint = { address: `192.0.2.${n % 250}`, port: 10_000 + n };
    const client: Client = {
      device: undefined as unknown as Device,
      peer: undefined as unknown as Peer,
      endpoint,
      address,
      keepalive,
      roams,
      every,
    };
    const privateKey = rng.bytes(32);
    client.device = new Device({
      privateKey,
      backend,
      random: rng.fill,
      wallClock: () => WALL_BASE + now,
      sendDatagram: send(() => client.endpoint),
      deliverPacket: () => {},
    });
    client.peer = client.device.addPeer({
      publicKey: server.publicKey,
      allowedIps: ["0.0.0.0/0"],
      endpoint: SERVER,
      persistentKeepalive: keepalive ? 25 : 0,
    });
    server.addPeer({ publicKey: client.device.publicKey, allowedIps: [`${address}/32`] });
    byEndpoint.set(key(endpoint), client);
    return client;
  }

  const clients: Client[] = [];
  const count = options.clients ?? 4;
  for (let i = 0; i < count; i++) clients.push(newClient(i % 2 === 0, i % 3 !== 2, 1 + i * 3));
  let transient: Client | undefined;
  let transientPeers = 0, roams = 0, sent = 0;

  const deliver = () => {
    const batch = inFlight;
    inFlight = [];
    for (const { d, from, to } of batch) {
      if (to.address === SERVER.address && to.port === SERVER.port) server.receive(d, from, now);
      else byEndpoint.get(key(to))?.device.receive(d, SERVER, now);
    }
  };
  const sample = (hour: number): SessionSample => {
    const s = server.stats();
    let keypairs = 0, handshakes = 0, timers = 0;
    for (const peer of server.peers() as IterableIterator<PeerState>) {
      keypairs += (peer.current ? 1 : 0) + (peer.previous ? 1 : 0) + (peer.next ? 1 : 0);
      handshakes += peer.handshake ? 1 : 0;
      timers += armedTimers(peer);
    }
    const out: SessionSample = {
      hour,
      peers: s.peers,
      indices: s.indexTableSize,
      keypairs,
      handshakes,
      timers,
      queued: s.queuedPackets,
      rateLimiter: s.rateLimiterSize,
      handshakesPending: s.handshakesPending,
      handshakesCompleted: s.handshakesCompleted,
      delivered,
      clientIndices: clients.reduce((n, c) => n + c.device.stats().indexTableSize, 0),
      heapUsed: heapNow(),
    };
    options.onSample?.(out);
    return out;
  };

  const samples: SessionSample[] = [];
  const steps = Math.round(options.hours * 3_600_000 / STEP_MS);
  const stepsPerHour = 3_600_000 / STEP_MS;
  for (let step = 0; step <= steps; step++) {
    now += STEP_MS;
    const active = transient ? [...clients, transient] : clients;
    for (const c of active) {
      if (step % c.every === 0) {
        c.device.send(bareIpv4(c.address, "10.99.0.1", 40 + rng.int(1000)), now);
        sent++;
      }
      // Replies from the server to the clients that send.
      if (step % (c.every * 4) === 1) server.send(bareIpv4("10.99.0.1", c.address, 40), now);
    }
    // Roaming: every 7 simulated minutes one roaming client takes a new address.
    if (options.roaming !== false && step % (7 * 240) === 0 && step > 0) {
      const c = rng.pick(clients.filter((x) => x.roams));
      if (c !== undefined) {
        byEndpoint.delete(key(c.endpoint));
        c.endpoint = { address: `203.0.113.${rng.int(250)}`, port: 1024 + rng.int(60_000) };
        byEndpoint.set(key(c.endpoint), c);
        roams++;
      }
    }
    // A transient peer: added every 5 simulated minutes, removed 3 minutes later.
    if (options.transientPeers !== false && step % (5 * 240) === 0) {
      transient = newClient(rng.chance(0.5), false, 2);
    }
    if (transient && step % (5 * 240) === 3 * 240) {
      server.removePeer(transient.device.publicKey);
      byEndpoint.delete(key(transient.endpoint));
      transient = undefined;
      transientPeers++;
    }
    deliver();
    server.poll(now);
    for (const c of active) c.device.poll(now);
    deliver();
    if (step % stepsPerHour === 0) samples.push(sample(step / stepsPerHour));
  }
  return { samples, transientPeers, roams, sent };
}

/** The tables a sample holds, and the bound each must stay within for `clients` clients. */
export function sessionBounds(clients: number): {
  fields: (keyof SessionSample & string)[];
  bounds: Partial<Record<keyof SessionSample & string, number>>;
} {
  const peers = clients + 1; // and the transient one
  return {
    fields: ["peers", "indices", "keypairs", "handshakes", "timers", "queued", "clientIndices"],
    bounds: {
      peers,
      indices: 4 * peers,
      keypairs: 3 * peers,
      handshakes: peers,
      timers: 5 * peers,
      queued: 0,
      clientIndices: 4 * clients,
    },
  };
}
