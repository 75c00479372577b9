/**
 * `serve()`: a WireGuard endpoint whose clients' TCP connections and UDP flows
 * come out as web stream pairs. This is the only layer with sockets and timers.
 *
 * @module
 */

import type { DeviceLimits, DeviceStats } from "@wgstack/wireguard";
import type {
  NetStackLimits,
  NetStackSourceUsage,
  NetStackStats,
  TcpKeepAliveOptions,
  TcpOptions,
} from "@wgstack/netstack";
import type { UdpEndpoint, UdpSocket, UdpSocketStats } from "./udp.ts";
import type { ForwarderStats, ForwardOptions } from "./forward.ts";
import type { UapiOptions } from "./uapi.ts";
import type { FlowPage, FlowQuery } from "./flows.ts";
import { startServer } from "./_server.ts";

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
  /**
   * Without streams: resolves once `chunk` is copied into the connection's
   * send buffer, so the caller may reuse `chunk` from then on (the relay
   * reads into it again). Either this or `writable`.
   */
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
     * Netstack limits: connections, half-open SYNs, UDP flows, reassembly,
     * ICMP rate, and the quotas of each peer in `perSource` (e.g.
     * `perSource.udpFlows`: when the table is full, a new flow closes a flow
     * of the peer holding the most, so one peer's flood never evicts the
     * flows of a peer holding fewer).
     */
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
   * Give memory back to the system after connection churn. Default `true`:
   * on Linux with glibc and `--allow-ffi`, glibc's mmap threshold is fixed
   * at 128 KiB for the whole process (blocks that large are mapped on their
   * own and unmapped when freed; upstream UDP receive buffers are made that
   * size, so only the pages datagrams wrote are resident), and once at least
   * `minClosed` (256) connections and flows have closed and nothing opened
   * or closed for `quietMs` (60 000 ms), pooled receive buffers are dropped
   * and `malloc_trim(0)` runs off the JavaScript thread, then again after
   * each of the next 3 GCs while the server stays quiet. The JavaScript
   * thread may wait on the allocator during a trim (milliseconds: it runs
   * only when quiet). Elsewhere nothing changes; the debug log record
   * `memory` says which. `false`: leave the allocator alone.
   */
  releaseMemory?: boolean | { quietMs?: number; minClosed?: number };
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
  wireguard: DeviceStats;
  /** Netstack counters. */
  netstack: NetStackStats;
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
  /**
   * UDP flows closed to make room for another (by a peer's quota, or from the
   * peer holding the most); the same as `netstack.udp.evicted`.
   */
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
export function serve(options: ServeOptions): Promise<Server> {
  return startServer(options);
}
