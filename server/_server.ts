/**
 * The running server behind {@linkcode serve} (internal): it owns the UDP
 * socket, the WireGuard device, the netstack and the poller, and wires them
 * together. The parts:
 *
 * - `_poller.ts`: when the cores run (one timer, coalesced wake-ups);
 * - `_connections.ts`: each new connection or flow, from decision to handler, and
 *   ending them per peer or at shutdown;
 * - `_peers.ts`: the {@linkcode PeerInfo} of each peer.
 *
 * The data path: socket datagram → `Device.receive` → decrypted packet and
 * its peer → `NetStack.input(packet, now, peer)` → a `TcpRequest`/`UdpFlow`
 * that carries the peer as its `source` → `Connections`.
 *
 * @module
 */

import {
  type CryptoBackend,
  defaultBackend,
  Device,
  type DeviceEvent,
  formatCidr,
  keyFromBase64,
  keyToBase64,
  type Peer,
  publicKey as derivePublicKey,
} from "@wgstack/wireguard";
import { NetStack, type NetStackSourceUsage } from "@wgstack/netstack";
import { openUdpSocket, type UdpEndpoint, type UdpSocket } from "./udp.ts";
import { Forwarder } from "./forward.ts";
import { DestinationPolicy } from "./policy.ts";
import { listenUapi, type UapiListener } from "./uapi.ts";
import { type FlowPage, type FlowQuery, normalizeFlowQuery } from "./flows.ts";
import type {
  ServeLogRecord,
  ServeOptions,
  ServePeer,
  ServePeerState,
  ServePeerUpdate,
  Server,
  ServerStats,
  TcpStream,
  UdpStream,
} from "./serve.ts";
import { Connections } from "./_connections.ts";
import { PeerDirectory } from "./_peers.ts";
import { Poller } from "./_poller.ts";
import { MemoryRelease } from "./_allocator.ts";
import { releaseUdpBuffers } from "./upstream.ts";

/** A key as bytes, from base64 text or bytes. */
function toKey(key: string | Uint8Array): Uint8Array {
  return typeof key === "string" ? keyFromBase64(key) : key;
}

/** Opens the socket (unless given), starts the server and its UAPI socket. */
export function startServer(options: ServeOptions): Promise<Server> {
  return RunningServer.start(options);
}

/** What {@linkcode RunningServer.start} prepared. */
interface Prepared {
  privateKey: Uint8Array;
  socket: UdpSocket;
  forwarder: Forwarder | undefined;
}

/** Methods of {@linkcode Server} that also work detached (`const { stats } = server`). */
const BOUND = [
  "shutdown",
  "sendDatagram",
  "addPeer",
  "removePeer",
  "updatePeer",
  "peer",
  "peers",
  "setListenPort",
  "setPrivateKey",
  "stats",
  "peerUsage",
  "flows",
] as const satisfies readonly (keyof Server)[];

/** A running server: the {@linkcode Server} API over the wired parts. */
class RunningServer implements Server {
  readonly finished: Promise<void>;
  #options: ServeOptions;
  #log: (record: ServeLogRecord) => void;
  /**
   * The clock, read once per synchronous run: the datagrams of a received
   * batch and the packets their processing sends share one reading (a
   * `performance.now()` is an op: 1.2 % of the download profile, 3+ per packet).
   */
  #now = (): number => {
    if (this.#clockAt < 0) {
      this.#clockAt = performance.now();
      queueMicrotask(this.#clockTick);
    }
    return this.#clockAt;
  };
  #clockAt = -1;
  #clockTick = () => this.#clockAt = -1;
  #backend: CryptoBackend;
  #publicKey: string;
  #socket: UdpSocket;
  #listening: Promise<void>;
  #forwarder: Forwarder | undefined;
  /** Our own addresses, without a forwarder (which knows its sockets). */
  #ownPolicy: DestinationPolicy | undefined;
  #selfDatagrams = 0;
  #peers = new PeerDirectory();
  #device: Device;
  #stack: NetStack;
  #poller: Poller;
  #conns: Connections;
  #uapi: UapiListener | undefined;
  #memory: MemoryRelease | undefined;
  #shutdown: Promise<void> | undefined;
  #finished!: () => void;

  constructor(options: ServeOptions, prepared: Prepared) {
    for (const key of BOUND) {
      const method = this[key] as (...args: unknown[]) => unknown;
      Object.defineProperty(this, key, { value: method.bind(this), writable: true });
    }
    this.#options = options;
    this.#log = options.logger ?? (() => {});
    this.#backend = defaultBackend();
    this.#socket = prepared.socket;
    this.#forwarder = prepared.forwarder;
    this.finished = new Promise<void>((resolve) => this.#finished = resolve);
    const forwarder = this.#forwarder;
    const onPacket = options.onPacket;
    this.#device = new Device({
      privateKey: prepared.privateKey,
      backend: this.#backend,
      // Handshakes wait in a bounded queue, worked through per poll (off the data path).
      limits: {
        mtu: options.mtu ?? 1420,
        handshakeQueue: 1024,
        handshakeBudget: 16,
        ...options.limits?.wireguard,
      },
      wallClock: () => Date.now(),
      sendDatagram: (datagram, to) => this.#socket.send(datagram, to),
      // The peer goes with the packet: connections and flows it opens carry it as their source.
      deliverPacket: onPacket
        ? (packet, peer) => {
          onPacket(packet, "in", this.#peers.info(peer));
          this.#stack.input(packet, this.#now(), peer);
        }
        : (packet, peer) => this.#stack.input(packet, this.#now(), peer),
      onEvent: (event) => this.#onDeviceEvent(event),
    });
    const keepAlive = options.tcpKeepAlive === false ? undefined : options.tcpKeepAlive ??
      (forwarder ? { idle: 900_000, interval: 60_000, count: 5 } : undefined);
    this.#stack = new NetStack({
      mtu: options.mtu,
      // Every packet came through the tunnel: the AEAD authenticated all of
      // it, so a TCP or UDP checksum can only be wrong if the peer made it so.
      verifyTcpChecksums: false,
      verifyUdpChecksums: false,
      limits: {
        // With forwarding, the fair dial table (per-peer quotas) decides which
        // SYN waits; the stack's global half-open table must not fill first.
        tcpHalfOpen: forwarder ? 4 * forwarder.stats().limits.pendingDials : undefined,
        ...options.limits?.netstack,
      },
      tcp: keepAlive ? { keepAlive, ...options.tcp } : options.tcp,
      acceptUdpFlow: forwarder ? (d, version) => this.#conns.acceptUdp(d, version) : undefined,
      output: onPacket
        ? (packet) => {
          onPacket(packet, "out", undefined);
          this.#device.send(packet, this.#now());
        }
        : (packet) => this.#device.send(packet, this.#now()),
      wake: () => this.#poller.pollStackSoon(),
      onTcpConnection: (request) => this.#conns.onTcpRequest(request),
      onUdpFlow: (flow) => this.#conns.onUdpFlow(flow),
    });
    this.#poller = new Poller({ device: this.#device, stack: this.#stack }, this.#now);
    this.#conns = new Connections({
      peers: this.#peers,
      poller: this.#poller,
      flush: () => this.#socket.flush?.(),
      log: this.#log,
      pendingStreams: options.limits?.pendingStreams ?? 256,
      onTcp: options.onTcp,
      onUdp: options.onUdp,
      accept: options.accept,
      forwarder,
    });
    for (const peer of options.peers ?? []) this.addPeer(peer);
    const release = options.releaseMemory ?? true;
    if (release !== false) {
      this.#memory = new MemoryRelease({
        counts: () => ({
          closed: this.#conns.closed,
          open: this.#conns.tcpOpen + this.#conns.udpOpen,
        }),
        log: this.#log,
        release: releaseUdpBuffers,
        policy: release === true ? undefined : release,
      }).start();
    }
    this.#listening = this.#listen(this.#socket);
    options.signal?.addEventListener("abort", () => void this.shutdown(), { once: true });
    if (options.signal?.aborted) void this.shutdown();
    this.#publicKey = keyToBase64(derivePublicKey(prepared.privateKey, this.#backend));
    this.#log({
      level: "info",
      event: "listening",
      address: this.#socket.addr,
      publicKey: this.#publicKey,
      crypto: this.#backend.name,
    });
  }

  /** Opens the socket (unless given), starts the server and its UAPI socket. */
  static async start(options: ServeOptions): Promise<RunningServer> {
    const privateKey = toKey(options.privateKey);
    if (options.forward && (options.accept || options.onTcp || options.onUdp)) {
      throw new TypeError("forward replaces accept, onTcp and onUdp: pass one or the other");
    }
    const socket = options.socket ??
      await openUdpSocket({ hostname: options.hostname, port: options.port ?? 51820 });
    let forwarder: Forwarder | undefined;
    try {
      forwarder = options.forward ? new Forwarder(options.forward, options.logger) : undefined;
    } catch (error) {
      socket.close();
      throw error;
    }
    const server = new RunningServer(options, { privateKey, socket, forwarder });
    if (options.uapi && !server.#conns.stopping) {
      try {
        server.#uapi = await listenUapi({
          server,
          privateKey,
          log: server.#log,
          onDeleted: () => void server.shutdown(),
        }, options.uapi);
      } catch (error) {
        await server.shutdown();
        throw error;
      }
    }
    return server;
  }

  get addr(): UdpEndpoint {
    return this.#socket.addr;
  }

  get publicKey(): string {
    return this.#publicKey;
  }

  [Symbol.asyncIterator](): AsyncIterator<TcpStream | UdpStream> {
    return { next: () => this.#conns.next() };
  }

  // --------------------------------------------------------------- socket

  #listen(udp: UdpSocket): Promise<void> {
    return udp.listen((data, from) => {
      if (this.#fromOwnSocket(from)) {
        this.#selfDatagrams++;
        return;
      }
      try {
        this.#device.receive(data, from, this.#now());
      } catch (err) {
        // The cores drop bad input without throwing: this is a bug or a
        // throwing user callback (a handler's tap). Keep serving.
        this.#log({ level: "error", event: "receive-error", error: String(err) });
      }
      this.#poller.armSoon();
    }).catch((err) => {
      this.#log({ level: "error", event: "socket-error", error: String(err) });
      void this.shutdown();
    });
  }

  /**
   * Datagrams from our own sockets are never a client's (no peer may roam
   * to one of them): a client asking the forwarder to send to our port
   * would otherwise make the server talk to itself.
   */
  #fromOwnSocket(from: UdpEndpoint): boolean {
    const port = this.#socket.addr.port;
    if (this.#forwarder) return this.#forwarder.isOwnSocket(from, port);
    return from.port === port &&
      (this.#ownPolicy ??= new DestinationPolicy()).isOwnAddress(from.address);
  }

  async setListenPort(port: number): Promise<void> {
    if (this.#options.socket) {
      throw new TypeError("A socket given in the options cannot be rebound");
    }
    if (this.#conns.stopping) throw new TypeError("The server is shutting down");
    if (port !== 0 && port === this.#socket.addr.port) return;
    const next = await openUdpSocket({ hostname: this.#options.hostname, port });
    const [old, oldListening] = [this.#socket, this.#listening];
    this.#socket = next;
    this.#listening = this.#listen(next);
    old.close();
    await oldListening;
    this.#log({ level: "info", event: "listening", address: next.addr });
  }

  sendDatagram(from: UdpEndpoint, to: UdpEndpoint, payload: Uint8Array): void {
    this.#stack.sendUdp(from, to, payload, this.#now());
    this.#poller.arm();
  }

  #onDeviceEvent(event: DeviceEvent): void {
    const peer = "peer" in event ? event.peer as Peer : undefined;
    this.#log({
      level: "info",
      ...event,
      event: event.type,
      peer: peer ? this.#peers.label(peer) : undefined,
    });
  }

  // ---------------------------------------------------------------- peers

  addPeer(p: ServePeer): void {
    const peer = this.#device.addPeer({
      publicKey: toKey(p.publicKey),
      presharedKey: p.presharedKey === undefined ? undefined : toKey(p.presharedKey),
      allowedIps: p.allowedIps,
      endpoint: p.endpoint,
      persistentKeepalive: p.persistentKeepalive,
    });
    this.#peers.add(peer, p.name);
    this.#poller.arm();
  }

  removePeer(key: string | Uint8Array): boolean {
    const publicKey = toKey(key);
    const peer = this.#device.getPeer(publicKey);
    if (!peer) return false;
    const info = this.#peers.remove(peer);
    // Its connections and flows end now; the RSTs still go out through
    // the tunnel, before the peer's keys go away.
    const { tcpReset, udpClosed } = this.#conns.closePeer(peer, info);
    this.#device.removePeer(publicKey);
    this.#log({
      level: "info",
      event: "peer-removed",
      peer: info.name ?? info.publicKey,
      tcpReset,
      udpClosed,
    });
    this.#poller.arm();
    return true;
  }

  updatePeer(key: string | Uint8Array, update: ServePeerUpdate): void {
    const peer = this.#device.getPeer(toKey(key));
    if (!peer) throw new RangeError("No peer has this public key");
    const { presharedKey, name, ...rest } = update;
    // Handlers hold the peer's PeerInfo: it takes the new name too.
    if (name !== undefined) this.#peers.rename(peer, name);
    peer.update({
      ...rest,
      ...(presharedKey === undefined
        ? {}
        : { presharedKey: presharedKey === null ? undefined : toKey(presharedKey) }),
    });
    this.#poller.arm();
  }

  peer(key: string | Uint8Array): ServePeerState | undefined {
    const peer = this.#device.getPeer(toKey(key));
    if (!peer) return undefined;
    return this.#peerState(peer, this.#conns.tcpCounts().get(this.#peers.info(peer)) ?? 0);
  }

  peers(): ServePeerState[] {
    const counts = this.#conns.tcpCounts();
    return [...this.#device.peers()].map((p) =>
      this.#peerState(p, counts.get(this.#peers.info(p)) ?? 0)
    );
  }

  #peerState(peer: Peer, tcpOpen: number): ServePeerState {
    const psk = peer.presharedKey;
    return {
      publicKey: keyToBase64(peer.publicKey),
      name: this.#peers.info(peer).name,
      presharedKey: psk && keyToBase64(psk),
      endpoint: peer.endpoint,
      lastHandshake: peer.lastHandshake,
      rxBytes: peer.stats.rxBytes,
      txBytes: peer.stats.txBytes,
      persistentKeepalive: peer.persistentKeepalive,
      allowedIps: peer.allowedIps.map(formatCidr),
      handshakes: peer.stats.handshakesCompleted,
      tcpOpen,
      udpOpen: this.#conns.udpCount(peer),
    };
  }

  flows(query?: FlowQuery): FlowPage {
    return this.#forwarder?.flows(query) ??
      { total: 0, matched: 0, offset: normalizeFlowQuery(query).offset, flows: [] };
  }

  peerUsage(key: string | Uint8Array): NetStackSourceUsage | undefined {
    const peer = this.#device.getPeer(toKey(key));
    return peer ? this.#stack.sourceUsage(peer) : undefined;
  }

  setPrivateKey(key: string | Uint8Array | null): void {
    const device = this.#device;
    if (key === null) {
      if (!device.hasPrivateKey) return;
      device.clearPrivateKey();
      this.#log({ level: "info", event: "private-key-cleared" });
      return;
    }
    const bytes = toKey(key);
    const text = keyToBase64(derivePublicKey(bytes, this.#backend));
    if (text === this.#publicKey && device.hasPrivateKey) return;
    // A peer with our new key goes (its connections and flows with it).
    this.removePeer(text);
    device.setPrivateKey(bytes);
    this.#publicKey = text;
    this.#log({ level: "info", event: "private-key", publicKey: text });
    this.#poller.arm();
  }

  stats(): ServerStats {
    const netstack = this.#stack.stats();
    return {
      wireguard: this.#device.stats(),
      netstack,
      socket: this.#socket.stats(),
      tcpOpen: this.#conns.tcpOpen,
      udpOpen: this.#conns.udpOpen,
      polls: this.#poller.polls,
      cryptoBackend: this.#backend.name,
      selfDatagrams: this.#selfDatagrams,
      udpFlowsEvicted: netstack.udp.evicted,
      forward: this.#forwarder?.stats(),
    };
  }

  // ------------------------------------------------------------- shutdown

  shutdown(): Promise<void> {
    return this.#shutdown ??= this.#stop();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }

  async #stop(): Promise<void> {
    const conns = this.#conns;
    const closingUapi = this.#uapi?.close();
    // Our forwarding relays hold their streams: end them so shutdown need not wait.
    this.#forwarder?.close();
    this.#ownPolicy?.close();
    const closed = conns.stop();
    this.#poller.pollSoon();
    let deadline: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      closed,
      new Promise<void>((r) => deadline = setTimeout(r, this.#options.shutdownTimeout ?? 5000)),
    ]);
    clearTimeout(deadline);
    // Whatever did not close within the shutdown timeout is reset.
    const tcpReset = conns.resetAll();
    this.#poller.pollNow();
    this.#poller.stop();
    await this.#memory?.stop();
    this.#socket.close();
    await this.#listening;
    await closingUapi;
    this.#log({ level: "info", event: "shutdown", tcpReset });
    this.#finished();
  }
}
