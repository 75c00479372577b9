/**
 * `serve()`: a WireGuard endpoint whose clients' TCP connections and UDP flows
 * come out as web stream pairs. This is the only layer with sockets and timers.
 *
 * @module
 */

import {
  defaultBackend,
  Device,
  type DeviceEvent,
  type DeviceLimits,
  formatCidr,
  keyFromBase64,
  keyToBase64,
  type Peer,
  publicKey as derivePublicKey,
} from "@wgstack/wireguard";
import {
  formatAddress,
  NetStack,
  type NetStackLimits,
  type NetStackSourceUsage,
  type TcpConnection,
  type TcpKeepAliveOptions,
  type TcpOptions,
  type TcpRequest,
  type UdpDatagramIn,
  type UdpFlow,
} from "@wgstack/netstack";
import { openUdpSocket, type UdpEndpoint, type UdpSocket, type UdpSocketStats } from "./udp.ts";
import { Forwarder, type ForwarderStats, type ForwardOptions } from "./forward.ts";
import { DestinationPolicy } from "./policy.ts";
import { positiveInteger } from "./_util.ts";
import { listenUapi, type UapiListener, type UapiOptions } from "./uapi.ts";
import { type FlowPage, type FlowQuery, normalizeFlowQuery } from "./flows.ts";

/** A peer (client) the server accepts. */
export interface ServePeer {
  /** The peer's public key, base64 or 32 bytes. */
  publicKey: string | Uint8Array;
  /** Optional preshared key, base64 or 32 bytes. */
  presharedKey?: string | Uint8Array;
  /** Inner addresses the peer may use as source, e.g. `["10.0.0.2/32", "fd00::2/128"]`. */
  allowedIps: string[];
  /** Where to reach the peer before it contacts us (an IP address and port). */
  endpoint?: UdpEndpoint;
  /** Persistent keepalive interval in seconds (0 or absent: off). */
  persistentKeepalive?: number;
  /** A name for logs. */
  name?: string;
}

/** Changes to a running peer ({@linkcode Server.updatePeer}); absent fields stay. */
export interface ServePeerUpdate {
  /** The new preshared key, base64 or 32 bytes; `null` removes it. */
  presharedKey?: string | Uint8Array | null;
  /** Replaces all allowed IPs. */
  allowedIps?: string[];
  /** Where to send until the peer roams. */
  endpoint?: UdpEndpoint;
  /** Persistent keepalive interval in seconds (0: off). */
  persistentKeepalive?: number;
  /** A new name for logs (`""` clears it). */
  name?: string;
}

/** A peer of a running server and its counters ({@linkcode Server.peers}). */
export interface ServePeerState {
  /** The peer's public key, base64. */
  readonly publicKey: string;
  /** The name given in {@linkcode ServePeer.name}, if any. */
  readonly name?: string;
  /** The preshared key, base64, if there is one. */
  readonly presharedKey?: string;
  /** The peer's current outer endpoint. */
  readonly endpoint?: UdpEndpoint;
  /** Unix time of the last completed handshake in ms, 0 for none. */
  readonly lastHandshake: number;
  /** Bytes of authenticated datagrams received from the peer. */
  readonly rxBytes: number;
  /** Bytes of datagrams sent to the peer. */
  readonly txBytes: number;
  /** Persistent keepalive interval in seconds, 0 when off. */
  readonly persistentKeepalive: number;
  /** The allowed IPs, e.g. `["10.0.0.2/32"]`. */
  readonly allowedIps: string[];
  /** Handshakes completed with the peer. */
  readonly handshakes: number;
  /** Open TCP connections of the peer. */
  readonly tcpOpen: number;
  /** Open UDP flows of the peer. */
  readonly udpOpen: number;
}

/** Who sent a connection or flow and where it was going. */
export interface FlowInfo {
  /** The WireGuard peer it came through. */
  readonly peer: PeerInfo;
  /** 4 or 6. */
  readonly ipVersion: 4 | 6;
  /** The original source (the client's inner address and port). */
  readonly source: UdpEndpoint;
  /** The original destination the client dialled. */
  readonly destination: UdpEndpoint;
}

/** A peer as seen by handlers. */
export interface PeerInfo {
  /** The peer's public key, base64. */
  readonly publicKey: string;
  /** The name given in {@linkcode ServePeer.name}, if any. */
  readonly name?: string;
  /** The peer's current outer endpoint (roaming updates it). */
  readonly endpoint: UdpEndpoint | undefined;
}

/** One TCP connection from a client. */
export interface TcpStream extends FlowInfo {
  /** Always `"tcp"`. */
  readonly protocol: "tcp";
  /** Bytes from the client; ends on FIN, errors on RST. Made on first use. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the client; `close()` sends FIN, `abort()` sends RST. Made on first use. */
  readonly writable: WritableStream<Uint8Array>;
  /**
   * Without streams: the next bytes from the client, `null` after its FIN
   * (rejects on RST). Use either this or `readable`, not both; a relay that
   * holds many idle connections stays smaller this way.
   */
  read(): Promise<Uint8Array | null>;
  /** Without streams: resolves once `chunk` is buffered for the client. Either this or `writable`. */
  write(chunk: Uint8Array): Promise<void>;
  /** Sends FIN after what was written (also while the writable is locked). */
  close(): void;
  /** Resolves when the connection is fully closed. */
  readonly closed: Promise<void>;
  /** Sends RST now. */
  reset(): void;
}

/** One UDP flow (4-tuple) from a client. */
export interface UdpStream extends FlowInfo {
  /** Always `"udp"`. */
  readonly protocol: "udp";
  /** Datagrams from the client, one `Uint8Array` each. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Datagrams back to the client's source address and port. */
  readonly writable: WritableStream<Uint8Array>;
}

/** What {@linkcode ServeOptions.accept} decides for a new TCP connection. */
export type AcceptDecision = boolean | "accept" | "rst" | "icmp" | "drop";

/** A log record handed to {@linkcode ServeOptions.logger}. */
export interface ServeLogRecord {
  /** Severity. */
  level: "debug" | "info" | "warn" | "error";
  /** What happened, e.g. `"handshake"`, `"tcp-open"`, `"handler-error"`. */
  event: string;
  /** Details. */
  [field: string]: unknown;
}

/** Options of {@linkcode serve}. */
export interface ServeOptions {
  /** The server's private key, base64 or 32 bytes. */
  privateKey: string | Uint8Array;
  /** Address to listen on. Default `"::"` (IPv4 and IPv6). */
  hostname?: string;
  /** UDP port. Default 51820; `0` picks a free port. */
  port?: number;
  /** Peers allowed to connect. More can be added with {@linkcode Server.addPeer}. */
  peers?: ServePeer[];
  /**
   * Called for each accepted TCP connection. Without it, connections are
   * yielded by the server's async iterator.
   */
  onTcp?: (stream: TcpStream) => void | Promise<void>;
  /** Called for each new UDP flow. Without it, flows are yielded by the iterator. */
  onUdp?: (flow: UdpStream) => void | Promise<void>;
  /**
   * Decides, before the SYN-ACK, whether to accept a TCP connection: e.g. dial
   * the real destination first and accept only if that worked. Default: accept.
   */
  accept?: (info: FlowInfo) => AcceptDecision | Promise<AcceptDecision>;
  /**
   * Forward every TCP connection and UDP flow to its real destination
   * (dial first, then relay), applying the destination policy, caps and
   * per-peer quotas of {@linkcode ForwardOptions}. Takes the place of
   * `accept`, `onTcp` and `onUdp`. Deno only.
   */
  forward?: ForwardOptions;
  /**
   * TCP keepalive towards clients, so connections of clients that vanished
   * are reaped. Default with `forward`: probe after 15 min idle, every 60 s,
   * give up after 5 (about 20 min); without `forward`: off. `false`: off.
   */
  tcpKeepAlive?: TcpKeepAliveOptions | false;
  /** Inner MTU. Default 1420. */
  mtu?: number;
  /**
   * TCP options of the netstack, e.g. `{ congestionControl: "bbr" }` (the
   * controller of every connection the server terminates; default BBR).
   */
  tcp?: TcpOptions;
  /** Limits. */
  limits?: {
    /** Connections and flows waiting in the iterator before new ones are refused. Default 256. */
    pendingStreams?: number;
    /**
     * UDP flows one peer may hold (default: the stack's `udpFlows`, 1024).
     * When the table is full, a new flow closes the oldest flow of the peer
     * holding the most flows, so one peer never evicts another's flow while
     * it holds more than them.
     */
    peerUdpFlows?: number;
    /** Netstack limits: connections, half-open SYNs, UDP flows, reassembly, ICMP rate. */
    netstack?: NetStackLimits;
    /** WireGuard device limits: handshake load threshold, per-peer queue, peers. */
    wireguard?: DeviceLimits;
  };
  /**
   * Serve WireGuard's userspace API (UAPI) at `/var/run/wireguard/NAME.sock`
   * so `wg show`, `wg set` and `wg syncconf` work on this server (see
   * {@linkcode listenUapi}). Default: off.
   */
  uapi?: UapiOptions;
  /** Aborting it shuts the server down. */
  signal?: AbortSignal;
  /** Receives log records (default: none). */
  logger?: (record: ServeLogRecord) => void;
  /** How long `shutdown()` waits for open connections before RST. Default 5000 ms. */
  shutdownTimeout?: number;
  /** Bring your own socket (tests, custom transports). */
  socket?: UdpSocket;
  /**
   * A tap on every inner IP packet: `"in"` right after decryption (before the
   * netstack), `"out"` right before encryption. `packet` is valid only during
   * the call (copy it to keep it); `peer` is the sender for `"in"` and
   * `undefined` for `"out"`. Must not throw.
   */
  onPacket?: (packet: Uint8Array, direction: "in" | "out", peer: PeerInfo | undefined) => void;
}

/** Counters of a running server. */
export interface ServerStats {
  /** WireGuard device counters. */
  wireguard: ReturnType<Device["stats"]>;
  /** Netstack counters. */
  netstack: ReturnType<NetStack["stats"]>;
  /** Socket counters. */
  socket: UdpSocketStats;
  /** Open TCP connections. */
  tcpOpen: number;
  /** Open UDP flows. */
  udpOpen: number;
  /** Times the cores' timers and queued work ran (stays still while idle). */
  polls: number;
  /** The crypto backend in use (`"libcrypto"`, `"native"` or `"noble"`). */
  cryptoBackend: string;
  /** Datagrams dropped because they came from one of this server's own sockets. */
  selfDatagrams: number;
  /** UDP flows closed to make room for another (taken from the peer holding the most). */
  udpFlowsEvicted: number;
  /** Forwarding counters, with `forward`. */
  forward?: ForwarderStats;
}

/** A running server. Async-iterate it to get connections when no handler is set. */
export interface Server extends AsyncIterable<TcpStream | UdpStream> {
  /** The bound UDP address. */
  readonly addr: UdpEndpoint;
  /** The server's public key, base64. */
  readonly publicKey: string;
  /** Resolves when the server has shut down. */
  readonly finished: Promise<void>;
  /**
   * Stops accepting, sends FIN on open connections, RSTs what is still open
   * after the shutdown timeout, and closes the socket.
   */
  shutdown(): Promise<void>;
  /** Same as {@linkcode Server.shutdown}. */
  [Symbol.asyncDispose](): Promise<void>;
  /** Sends a UDP datagram from any inner source to a client's inner address. */
  sendDatagram(from: UdpEndpoint, to: UdpEndpoint, payload: Uint8Array): void;
  /** Adds a peer at runtime. Throws `RangeError` for a duplicate key. */
  addPeer(peer: ServePeer): void;
  /**
   * Removes a peer at runtime; true when it existed. Its TCP connections are
   * reset and its UDP flows closed at once (logged as `"peer-removed"`).
   */
  removePeer(publicKey: string | Uint8Array): boolean;
  /**
   * Changes a running peer; its sessions and connections stay.
   * @throws {RangeError} When there is no such peer or a value is invalid.
   */
  updatePeer(publicKey: string | Uint8Array, update: ServePeerUpdate): void;
  /** The peer with this public key and its counters, if any. */
  peer(publicKey: string | Uint8Array): ServePeerState | undefined;
  /** All peers and their counters. */
  peers(): ServePeerState[];
  /**
   * Binds the UDP socket to another port (0: any free port) on the same
   * address; sessions stay. Rejects (keeping the old socket) when the port
   * cannot be bound, or with `TypeError` for a socket given in the options.
   */
  setListenPort(port: number): Promise<void>;
  /**
   * Replaces the server's private key: every peer's sessions end (clients
   * must know the new public key to handshake again) and a peer with the new
   * public key is removed. `null` clears it (as an all-zero UAPI
   * `private_key` does): sessions end and no handshake is made or answered
   * until a key is set again.
   * @throws {RangeError} When the key is not 32 bytes.
   */
  setPrivateKey(privateKey: string | Uint8Array | null): void;
  /** Counters. */
  stats(): ServerStats;
  /**
   * What one peer holds in the netstack now (TCP connections, half-open
   * SYNs, TIME_WAIT entries, send-buffer bytes, fragments in reassembly;
   * quotas in `limits.netstack.perSource`), or `undefined` for an unknown key.
   */
  peerUsage(publicKey: string | Uint8Array): NetStackSourceUsage | undefined;
  /**
   * With `forward`: the connections and flows being forwarded now (peer,
   * 4-tuple, host name, bytes each way, age, state), or the recently closed
   * ones, filtered and paged (see {@linkcode FlowTable}). Without
   * `forward`: always empty.
   * @throws {RangeError} For an invalid query.
   */
  flows(query?: FlowQuery): FlowPage;
}

/** Least time between two turns that work on queued handshakes (ms). */
const HANDSHAKE_TURN_MS = 1;

function toKey(key: string | Uint8Array): Uint8Array {
  return typeof key === "string" ? keyFromBase64(key) : key;
}

/** A {@linkcode TcpStream}: the connection's streams are made only when used. */
class ServerTcpStream implements TcpStream {
  readonly protocol = "tcp";
  readonly peer: PeerInfo;
  readonly ipVersion: 4 | 6;
  readonly source: UdpEndpoint;
  readonly destination: UdpEndpoint;
  readonly closed: Promise<void>;
  #conn: TcpConnection;
  constructor(info: FlowInfo, conn: TcpConnection) {
    this.peer = info.peer;
    this.ipVersion = info.ipVersion;
    this.source = info.source;
    this.destination = info.destination;
    this.closed = conn.closed;
    this.#conn = conn;
  }
  get readable(): ReadableStream<Uint8Array> {
    return this.#conn.readable;
  }
  get writable(): WritableStream<Uint8Array> {
    return this.#conn.writable;
  }
  read(): Promise<Uint8Array | null> {
    return this.#conn.read();
  }
  write(chunk: Uint8Array): Promise<void> {
    return this.#conn.write(chunk);
  }
  close(): void {
    this.#conn.close();
  }
  reset(): void {
    this.#conn.reset();
  }
}

/** A bounded queue with async take, for the server's async iterator. */
class StreamQueue<T> {
  #items: T[] = [];
  #waiters: ((r: IteratorResult<T>) => void)[] = [];
  #closed = false;
  constructor(readonly limit: number) {}
  push(item: T): boolean {
    if (this.#closed) return false;
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter({ value: item, done: false });
      return true;
    }
    if (this.#items.length >= this.limit) return false;
    this.#items.push(item);
    return true;
  }
  next(): Promise<IteratorResult<T>> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.#closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
  close(): T[] {
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) w({ value: undefined, done: true });
    return this.#items.splice(0);
  }
}

/**
 * Starts a WireGuard server. Every TCP connection and UDP flow a peer opens
 * through the tunnel, to any address, is terminated here and handed over as a
 * `ReadableStream`/`WritableStream` pair with its origin and destination.
 *
 * @example Echo every TCP connection back
 * ```ts ignore
 * import { serve } from "@wgstack/server";
 * const server = await serve({
 *   privateKey: "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
 *   peers: [{ publicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", allowedIps: ["10.0.0.2/32"] }],
 *   onTcp: (conn) => conn.readable.pipeTo(conn.writable),
 * });
 * ```
 */
export async function serve(options: ServeOptions): Promise<Server> {
  const privateKey = toKey(options.privateKey);
  const backend = defaultBackend();
  const log = options.logger ?? (() => {});
  const shutdownTimeout = options.shutdownTimeout ?? 5000;
  const queue = new StreamQueue<TcpStream | UdpStream>(options.limits?.pendingStreams ?? 256);
  // One PeerInfo per peer, made when the peer is added (handlers and the
  // packet tap see the same object; it follows the peer's endpoint).
  const peerInfos = new Map<Peer, PeerInfo>();
  const openTcp = new Map<TcpStream, TcpConnection>();
  const openUdp = new Map<UdpStream, { flow: UdpFlow; peer: Peer }>();
  /** Each peer's UDP flows, oldest first (for fair eviction). */
  const udpByPeer = new Map<Peer, Set<UdpStream>>();
  // The clock, read once per synchronous run: the datagrams of a received
  // batch and the packets their processing sends share one reading (a
  // `performance.now()` is an op: 1.2 % of the download profile, 3+ per packet).
  let clockAt = -1;
  const clockTick = () => clockAt = -1;
  const now = () => {
    if (clockAt < 0) {
      clockAt = performance.now();
      queueMicrotask(clockTick);
    }
    return clockAt;
  };
  if (options.forward && (options.accept || options.onTcp || options.onUdp)) {
    throw new TypeError("forward replaces accept, onTcp and onUdp: pass one or the other");
  }
  const udpCap = options.limits?.netstack?.udpFlows ?? 1024;
  const peerUdpCap = positiveInteger(options.limits?.peerUdpFlows ?? udpCap, "limits.peerUdpFlows");
  const keepAlive = options.tcpKeepAlive === false ? undefined : options.tcpKeepAlive ??
    (options.forward ? { idle: 900_000, interval: 60_000, count: 5 } : undefined);

  let socket = options.socket ??
    await openUdpSocket({ hostname: options.hostname, port: options.port ?? 51820 });
  let forwarder: Forwarder | undefined;
  try {
    forwarder = options.forward ? new Forwarder(options.forward, log) : undefined;
  } catch (error) {
    socket.close();
    throw error;
  }
  // Datagrams from our own sockets are never a client's (no peer may roam
  // to one of them): a client asking the forwarder to send to our port
  // would otherwise make the server talk to itself.
  let ownPolicy: DestinationPolicy | undefined;
  const fromOwnSocket = forwarder
    ? (from: UdpEndpoint) => forwarder!.isOwnSocket(from, socket.addr.port)
    : (from: UdpEndpoint) =>
      from.port === socket.addr.port &&
      (ownPolicy ??= new DestinationPolicy()).isOwnAddress(from.address);
  let selfDatagrams = 0;
  let udpFlowsEvicted = 0;

  // The peer whose packet is being handed to the netstack right now: new
  // connections and flows are attributed to it (set only during input).
  let currentPeer: Peer | undefined;
  let stopping = false;
  let uapi: UapiListener | undefined;
  let closedSocket = false;

  const describePeer = (peer: Peer, name?: string): PeerInfo => ({
    publicKey: keyToBase64(peer.publicKey),
    name,
    get endpoint() {
      return peer.endpoint;
    },
  });
  // A removed peer can still be named by a late event: describe it afresh.
  const peerInfo = (peer: Peer): PeerInfo => peerInfos.get(peer) ?? describePeer(peer);
  // Peers removed while one of their connections waited for its accept decision.
  const removedPeers = new WeakSet<PeerInfo>();

  const device = new Device({
    privateKey,
    backend,
    // Handshakes wait in a bounded queue, worked through per poll (off the data path).
    limits: {
      mtu: options.mtu ?? 1420,
      handshakeQueue: 1024,
      handshakeBudget: 16,
      ...options.limits?.wireguard,
    },
    wallClock: () => Date.now(),
    sendDatagram: (datagram, to) => socket.send(datagram, to),
    deliverPacket: (packet, peer) => {
      if (options.onPacket) options.onPacket(packet, "in", peerInfo(peer));
      currentPeer = peer;
      try {
        stack.input(packet, now(), peer);
      } finally {
        currentPeer = undefined;
      }
    },
    onEvent: (event: DeviceEvent) => {
      const peer = "peer" in event ? event.peer as Peer : undefined;
      log({
        level: "info",
        ...event,
        event: event.type,
        peer: peer ? (peerInfo(peer).name ?? peerInfo(peer).publicKey) : undefined,
      });
    },
  });

  const stack: NetStack = new NetStack({
    mtu: options.mtu,
    limits: {
      // With forwarding, the fair dial table (per-peer quotas) decides which
      // SYN waits; the stack's global half-open table must not fill first.
      tcpHalfOpen: forwarder ? 4 * forwarder.stats().limits.pendingDials : undefined,
      ...options.limits?.netstack,
      udpFlows: udpCap + 1,
    },
    tcp: keepAlive ? { keepAlive, ...options.tcp } : options.tcp,
    acceptUdpFlow: forwarder ? (d, version) => acceptUdp(d, version) : undefined,
    output: (packet) => {
      if (options.onPacket) options.onPacket(packet, "out", undefined);
      device.send(packet, now());
    },
    wake: () => pollSoon(),
    onTcpConnection: (request) => onTcpRequest(request),
    onUdpFlow: (flow) => onUdpFlow(flow),
  });

  function infoOf(
    peer: Peer | undefined,
    ipVersion: 4 | 6,
    source: UdpEndpoint,
    destination: UdpEndpoint,
  ): FlowInfo | undefined {
    if (!peer) return undefined;
    return { peer: peerInfo(peer), ipVersion, source, destination };
  }

  function onTcpRequest(request: TcpRequest): void {
    const info = infoOf(
      currentPeer,
      request.ipVersion,
      { address: request.remoteAddress, port: request.remotePort },
      { address: request.localAddress, port: request.localPort },
    );
    if (stopping || !info) {
      request.reject("rst");
      return;
    }
    if (forwarder) {
      const fwd = forwarder;
      fwd.accept(info).then((dial) => {
        const upstream = dial.upstream;
        if (dial.decision !== "accept" || !upstream) {
          request.reject(dial.decision === "accept" ? "rst" : dial.decision);
        } else if (stopping || removedPeers.has(info.peer)) {
          upstream.close();
          request.reject("rst");
        } else {
          // The dialled upstream goes straight to this connection's relay,
          // set up after the SYN-ACK has left (the client waits for it).
          const conn = answerNow(request);
          deliverSoon(info, conn, fwd.relayTo(upstream), () => upstream.close());
        }
        pollSoon();
      }, (err) => {
        log({ level: "error", event: "accept-error", error: String(err) });
        request.reject("rst");
        pollSoon();
      });
      return;
    }
    if (!options.accept) {
      deliverTcp(info, request.accept());
      return;
    }
    let decision: AcceptDecision | Promise<AcceptDecision>;
    try {
      decision = options.accept(info);
    } catch (err) {
      log({ level: "error", event: "accept-error", error: String(err) });
      request.reject("rst");
      return;
    }
    Promise.resolve(decision).then((d) => {
      if (stopping || removedPeers.has(info.peer)) d = "rst";
      if (d === true || d === "accept") {
        const conn = answerNow(request);
        deliverSoon(info, conn);
      } else request.reject(d === false ? "rst" : d);
      pollSoon();
    }, (err) => {
      log({ level: "error", event: "accept-error", error: String(err) });
      request.reject("rst");
      pollSoon();
    });
  }

  /**
   * Accepts a SYN that waited for a decision and sends the SYN-ACK at once:
   * the socket's flush is queued before whatever the caller queues next
   * (the relay or handler setup), so the client's wait does not include it.
   */
  function answerNow(request: TcpRequest): TcpConnection {
    const conn = request.accept();
    if (!closedSocket) pollNow();
    return conn;
  }

  /**
   * {@linkcode deliverTcp} in a microtask (after the socket's flush), unless
   * the server began to stop or the peer was removed meanwhile: then RST
   * (and `drop` frees what the handler would have taken).
   */
  function deliverSoon(
    info: FlowInfo,
    conn: TcpConnection,
    handler: ((stream: TcpStream) => void | Promise<void>) | undefined = options.onTcp,
    drop?: () => void,
  ): void {
    queueMicrotask(() => {
      if (stopping || removedPeers.has(info.peer)) {
        drop?.();
        conn.reset();
        pollSoon();
        return;
      }
      deliverTcp(info, conn, handler);
    });
  }

  function deliverTcp(
    info: FlowInfo,
    conn: TcpConnection,
    handler: ((stream: TcpStream) => void | Promise<void>) | undefined = options.onTcp,
  ): void {
    const stream = new ServerTcpStream(info, conn);
    openTcp.set(stream, conn);
    log({
      level: "debug",
      event: "tcp-open",
      peer: info.peer.name ?? info.peer.publicKey,
      source: info.source,
      destination: info.destination,
    });
    conn.closed.finally(() => {
      openTcp.delete(stream);
      log({
        level: "debug",
        event: "tcp-close",
        source: info.source,
        destination: info.destination,
        // Retransmissions, timeouts, RTT and cwnd of the connection, for debugging a slow one.
        tcp: conn.stats,
      });
    });
    if (handler) runHandler(() => handler(stream), () => conn.reset());
    else if (!queue.push(stream)) conn.reset();
  }

  function onUdpFlow(flow: UdpFlow): void {
    const info = infoOf(
      currentPeer,
      flow.ipVersion,
      { address: flow.remoteAddress, port: flow.remotePort },
      { address: flow.localAddress, port: flow.localPort },
    );
    if (stopping || !info) {
      flow.close();
      return;
    }
    const stream: UdpStream = {
      ...info,
      protocol: "udp",
      readable: flow.readable,
      writable: flow.writable,
    };
    const peer = currentPeer!;
    openUdp.set(stream, { flow, peer });
    let mine = udpByPeer.get(peer);
    if (!mine) udpByPeer.set(peer, mine = new Set());
    mine.add(stream);
    flow.closed.finally(() => forgetUdp(stream));
    // Over a quota: the oldest flow of this peer, or of the peer holding the most.
    if (mine.size > peerUdpCap) evictUdp(mine);
    else if (openUdp.size > udpCap) {
      let heaviest = mine;
      for (const set of udpByPeer.values()) if (set.size > heaviest.size) heaviest = set;
      evictUdp(heaviest);
    }
    const handler = forwarder ? (s: UdpStream) => forwarder!.onUdp(s) : options.onUdp;
    if (handler) runHandler(() => handler(stream), () => flow.close());
    else if (!queue.push(stream)) flow.close();
  }

  function forgetUdp(stream: UdpStream): void {
    const entry = openUdp.get(stream);
    if (!entry) return;
    openUdp.delete(stream);
    const set = udpByPeer.get(entry.peer);
    set?.delete(stream);
    if (set?.size === 0) udpByPeer.delete(entry.peer);
  }

  function evictUdp(set: Set<UdpStream>): void {
    const oldest = set.values().next().value;
    if (!oldest) return;
    udpFlowsEvicted++;
    closeUdp(oldest);
  }

  function closeUdp(stream: UdpStream): void {
    const entry = openUdp.get(stream);
    if (!entry) return;
    forgetUdp(stream);
    entry.flow.close();
  }

  function acceptUdp(d: UdpDatagramIn, ipVersion: 4 | 6): boolean {
    const info = infoOf(
      currentPeer,
      ipVersion,
      { address: formatAddress(d.remoteAddress), port: d.remotePort },
      { address: formatAddress(d.localAddress), port: d.localPort },
    );
    return !stopping && info !== undefined && forwarder!.acceptUdp(info);
  }

  function runHandler(fn: () => void | Promise<void>, onError: () => void): void {
    const fail = (err: unknown) => {
      // During shutdown, handlers see their streams closed under them.
      if (stopping) return log({ level: "debug", event: "handler-end", error: String(err) });
      log({ level: "error", event: "handler-error", error: String(err) });
      onError();
    };
    try {
      const r = fn();
      if (r instanceof Promise) r.catch(fail);
    } catch (err) {
      fail(err);
    }
  }

  // One timer for the nearest deadline of both cores; wakes coalesce into one
  // microtask.
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timerAt = Infinity;
  let pollQueued = false;
  let lastPollAt = -Infinity;
  let polls = 0;
  function pollNow(): void {
    pollQueued = false;
    polls++;
    const t = now();
    lastPollAt = t;
    device.poll(t);
    stack.poll(t);
    arm();
  }
  // After a batch of received datagrams, re-arm once (nextDeadline() scans
  // every peer): adapters deliver a batch synchronously, so a microtask runs
  // after its last datagram.
  let armQueued = false;
  function armSoon(): void {
    if (armQueued) return;
    armQueued = true;
    queueMicrotask(() => {
      armQueued = false;
      arm();
    });
  }
  function pollSoon(): void {
    if (pollQueued || closedSocket) return;
    pollQueued = true;
    queueMicrotask(pollNow);
  }
  function arm(): void {
    if (closedSocket) return;
    // Queued handshakes (-Infinity) get a turn at most every HANDSHAKE_TURN_MS:
    // a flood of them takes a bounded share of the thread.
    const deviceAt = device.nextDeadline();
    const deadline = Math.min(
      deviceAt === -Infinity ? lastPollAt + HANDSHAKE_TURN_MS : deviceAt,
      stack.nextDeadline(),
    );
    // Keep the armed timer unless the deadline moved earlier: re-arming per
    // packet costs more than an early wake-up (which just re-arms).
    if (timer !== undefined && timerAt <= deadline) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    timerAt = deadline;
    if (deadline === Infinity) return;
    timer = setTimeout(() => {
      timer = undefined;
      timerAt = Infinity;
      pollNow();
    }, Math.max(0, Math.ceil(deadline - now())));
  }

  for (const peer of options.peers ?? []) addPeer(peer);

  function addPeer(p: ServePeer): void {
    const peer = device.addPeer({
      publicKey: toKey(p.publicKey),
      presharedKey: p.presharedKey === undefined ? undefined : toKey(p.presharedKey),
      allowedIps: p.allowedIps,
      endpoint: p.endpoint,
      persistentKeepalive: p.persistentKeepalive,
    });
    peerInfos.set(peer, describePeer(peer, p.name));
    arm();
  }

  const listen = (udp: UdpSocket) =>
    udp.listen((data, from) => {
      if (fromOwnSocket(from)) {
        selfDatagrams++;
        return;
      }
      try {
        device.receive(data, from, now());
      } catch (err) {
        // The cores drop bad input without throwing: this is a bug or a
        // throwing user callback (a handler's tap). Keep serving.
        log({ level: "error", event: "receive-error", error: String(err) });
      }
      armSoon();
    }).catch((err) => {
      log({ level: "error", event: "socket-error", error: String(err) });
      void shutdown();
    });
  let listening = listen(socket);

  async function setListenPort(port: number): Promise<void> {
    if (options.socket) throw new TypeError("A socket given in the options cannot be rebound");
    if (stopping) throw new TypeError("The server is shutting down");
    if (port !== 0 && port === socket.addr.port) return;
    const next = await openUdpSocket({ hostname: options.hostname, port });
    const [old, oldListening] = [socket, listening];
    socket = next;
    listening = listen(next);
    old.close();
    await oldListening;
    log({ level: "info", event: "listening", address: next.addr });
  }

  function peerState(peer: Peer, tcpOpen: number): ServePeerState {
    const psk = peer.presharedKey;
    return {
      publicKey: keyToBase64(peer.publicKey),
      name: peerInfos.get(peer)?.name,
      presharedKey: psk && keyToBase64(psk),
      endpoint: peer.endpoint,
      lastHandshake: peer.lastHandshake,
      rxBytes: peer.stats.rxBytes,
      txBytes: peer.stats.txBytes,
      persistentKeepalive: peer.persistentKeepalive,
      allowedIps: peer.allowedIps.map(formatCidr),
      handshakes: peer.stats.handshakesCompleted,
      tcpOpen,
      udpOpen: udpByPeer.get(peer)?.size ?? 0,
    };
  }

  function tcpCounts(): Map<PeerInfo, number> {
    const counts = new Map<PeerInfo, number>();
    for (const stream of openTcp.keys()) {
      counts.set(stream.peer, (counts.get(stream.peer) ?? 0) + 1);
    }
    return counts;
  }

  function removePeer(key: string | Uint8Array): boolean {
    const publicKey = toKey(key);
    const peer = device.getPeer(publicKey);
    if (!peer) return false;
    // Its connections and flows end now; the RSTs still go out through
    // the tunnel, before the peer's keys go away.
    const info = peerInfo(peer);
    removedPeers.add(info);
    let tcpReset = 0;
    for (const [stream, conn] of openTcp) {
      if (stream.peer !== info) continue;
      openTcp.delete(stream);
      conn.reset();
      tcpReset++;
    }
    const flows = [...udpByPeer.get(peer) ?? []];
    for (const stream of flows) closeUdp(stream);
    device.removePeer(publicKey);
    peerInfos.delete(peer);
    log({
      level: "info",
      event: "peer-removed",
      peer: info.name ?? info.publicKey,
      tcpReset,
      udpClosed: flows.length,
    });
    arm();
    return true;
  }

  let finishedResolve!: () => void;
  const finished = new Promise<void>((resolve) => finishedResolve = resolve);
  let shutdownPromise: Promise<void> | undefined;

  function shutdown(): Promise<void> {
    if (shutdownPromise) return shutdownPromise;
    stopping = true;
    const closingUapi = uapi?.close();
    // Our forwarding relays hold their streams: end them so shutdown need not wait.
    forwarder?.close();
    ownPolicy?.close();
    shutdownPromise = (async () => {
      for (const s of queue.close()) {
        if (s.protocol === "tcp") s.reset();
      }
      // UDP has no graceful end: every flow closes now (handlers' reads end).
      for (const stream of [...openUdp.keys()]) closeUdp(stream);
      // FIN after what was already written, whoever holds the writable.
      for (const conn of openTcp.values()) conn.close();
      pollSoon();
      const all = Promise.all([...openTcp.values()].map((c) => c.closed.catch(() => {})));
      let deadline: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        all,
        new Promise<void>((r) => deadline = setTimeout(r, shutdownTimeout)),
      ]);
      clearTimeout(deadline);
      // Whatever did not close within the shutdown timeout is reset.
      const tcpReset = openTcp.size;
      for (const conn of openTcp.values()) conn.reset();
      pollNow();
      closedSocket = true;
      if (timer !== undefined) clearTimeout(timer);
      socket.close();
      await listening;
      await closingUapi;
      log({ level: "info", event: "shutdown", tcpReset });
      finishedResolve();
    })();
    return shutdownPromise;
  }

  options.signal?.addEventListener("abort", () => void shutdown(), { once: true });
  if (options.signal?.aborted) void shutdown();

  let publicKeyText = keyToBase64(derivePublicKey(privateKey, backend));
  log({
    level: "info",
    event: "listening",
    address: socket.addr,
    publicKey: publicKeyText,
    crypto: backend.name,
  });

  const server: Server = {
    get addr() {
      return socket.addr;
    },
    get publicKey() {
      return publicKeyText;
    },
    finished,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
    [Symbol.asyncIterator]: () => ({ next: () => queue.next() }),
    sendDatagram(from, to, payload) {
      stack.sendUdp(from, to, payload, now());
      arm();
    },
    addPeer,
    removePeer,
    updatePeer(key, update) {
      const peer = device.getPeer(toKey(key));
      if (!peer) throw new RangeError("No peer has this public key");
      const { presharedKey, name, ...rest } = update;
      // Handlers hold the peer's PeerInfo: it takes the new name too.
      const info = peerInfos.get(peer) as { name?: string } | undefined;
      if (name !== undefined && info) info.name = name || undefined;
      peer.update({
        ...rest,
        ...(presharedKey === undefined
          ? {}
          : { presharedKey: presharedKey === null ? undefined : toKey(presharedKey) }),
      });
      arm();
    },
    peer(key) {
      const peer = device.getPeer(toKey(key));
      if (!peer) return undefined;
      const info = peerInfos.get(peer);
      let tcp = 0;
      for (const stream of openTcp.keys()) if (stream.peer === info) tcp++;
      return peerState(peer, tcp);
    },
    peers() {
      const counts = tcpCounts();
      return [...device.peers()].map((p) => peerState(p, counts.get(peerInfos.get(p)!) ?? 0));
    },
    setListenPort,
    setPrivateKey(key) {
      if (key === null) {
        if (!device.hasPrivateKey) return;
        device.clearPrivateKey();
        log({ level: "info", event: "private-key-cleared" });
        return;
      }
      const bytes = toKey(key);
      const text = keyToBase64(derivePublicKey(bytes, backend));
      if (text === publicKeyText && device.hasPrivateKey) return;
      // A peer with our new key goes (its connections and flows with it).
      removePeer(text);
      device.setPrivateKey(bytes);
      publicKeyText = text;
      log({ level: "info", event: "private-key", publicKey: text });
      arm();
    },
    peerUsage(key) {
      const peer = device.getPeer(toKey(key));
      return peer ? stack.sourceUsage(peer) : undefined;
    },
    stats: () => ({
      wireguard: device.stats(),
      netstack: stack.stats(),
      socket: socket.stats(),
      tcpOpen: openTcp.size,
      udpOpen: openUdp.size,
      polls,
      cryptoBackend: backend.name,
      selfDatagrams,
      udpFlowsEvicted,
      forward: forwarder?.stats(),
    }),
    flows: (query) =>
      forwarder?.flows(query) ??
        { total: 0, matched: 0, offset: normalizeFlowQuery(query).offset, flows: [] },
  };
  if (options.uapi && !stopping) {
    try {
      uapi = await listenUapi({
        server,
        privateKey,
        log,
        onDeleted: () => void shutdown(),
      }, options.uapi);
    } catch (error) {
      await shutdown();
      throw error;
    }
  }
  return server;
}
