/**
 * `NetStack`: the IP layer of the userspace stack. IP packets and the time go
 * in ({@linkcode NetStack.input}, {@linkcode NetStack.poll}); IP packets come
 * out through `options.output`, and connections/flows come out through
 * `onTcpConnection`/`onUdpFlow` as web stream pairs.
 *
 * The stack is a transparent endpoint: it accepts packets to ANY destination
 * address and answers as that address.
 *
 * Path of a packet: version nibble → IPv4 header checks / IPv6 extension
 * header walk → fragment reassembly → TCP (checksum verified here, then the
 * TCP layer) | UDP (checksum, then the flow table) | ICMP/ICMPv6 (echo,
 * errors routed to TCP) | unknown protocol (ICMP protocol unreachable /
 * ICMPv6 parameter problem, rate-limited).
 *
 * `output` must not call back into the stack synchronously (queue the packet
 * instead): the packet it gets is a view of a buffer the stack reuses.
 *
 * @module
 */

import { formatAddress, type IpAddress, parseAddress } from "./addr.ts";
import { foldChecksum, pseudoHeaderSum, sumWords } from "./wire/checksum.ts";
import {
  emitIpv4Header,
  IP_PROTOCOL_ICMP,
  IP_PROTOCOL_ICMPV6,
  IP_PROTOCOL_TCP,
  IP_PROTOCOL_UDP,
  IPV4_FIELD,
  IPV4_HEADER_LEN,
  Ipv4Packet,
  type Ipv4Repr,
  isIpv4MulticastOrBroadcast,
  isIpv4Unspecified,
} from "./wire/ipv4.ts";
import {
  emitIpv6FragmentHeader,
  emitIpv6Header,
  IPV6_FIELD,
  IPV6_FRAGMENT,
  IPV6_FRAGMENT_HEADER_LEN,
  IPV6_HEADER_LEN,
  IPV6_MIN_MTU,
  IPV6_NO_NEXT_HEADER,
  type Ipv6FragmentRepr,
  Ipv6HeaderChain,
  Ipv6Packet,
  type Ipv6Repr,
  isIpv6Multicast,
  isIpv6Unspecified,
  walkIpv6Headers,
} from "./wire/ipv6.ts";
import {
  emitIcmp,
  IcmpPacket,
  type IcmpRepr,
  ICMPV4_CODE_ADMIN_PROHIBITED,
  ICMPV4_CODE_FRAG_NEEDED,
  ICMPV4_CODE_PORT_UNREACHABLE,
  ICMPV4_CODE_PROTOCOL_UNREACHABLE,
  ICMPV4_CODE_REASSEMBLY_TIMEOUT,
  ICMPV4_DEST_UNREACHABLE,
  ICMPV4_ECHO_REPLY,
  ICMPV4_ECHO_REQUEST,
  ICMPV4_MAX_QUOTE,
  ICMPV4_PARAMETER_PROBLEM,
  ICMPV4_TIME_EXCEEDED,
  ICMPV6_CODE_ADMIN_PROHIBITED,
  ICMPV6_CODE_PORT_UNREACHABLE,
  ICMPV6_CODE_REASSEMBLY_TIMEOUT,
  ICMPV6_CODE_UNRECOGNIZED_NEXT_HEADER,
  ICMPV6_DEST_UNREACHABLE,
  ICMPV6_ECHO_REPLY,
  ICMPV6_ECHO_REQUEST,
  ICMPV6_MAX_QUOTE,
  ICMPV6_PACKET_TOO_BIG,
  ICMPV6_PARAMETER_PROBLEM,
  ICMPV6_TIME_EXCEEDED,
} from "./wire/icmp.ts";
import { emitUdp, UdpPacket, type UdpRepr } from "./wire/udp.ts";
import { type FragmentInput, FragmentReassembler, type FragmentStats } from "./fragments.ts";
import { type UdpDatagramIn, type UdpFlow, type UdpFlowStats, UdpFlowTable } from "./udp.ts";
import type {
  TcpConnectionLike,
  TcpConnectOptions,
  TcpLayerConstructor,
  TcpLayerHost,
  TcpLayerLike,
  TcpSynRequest,
  TcpTuple,
} from "./tcp/api.ts";
import type { TcpOptions } from "./tcp/connection.ts";
import { TcpLayer, type TcpLayerStats } from "./tcp/layer.ts";

export type { UdpFlow } from "./udp.ts";
export type { IpAddress } from "./addr.ts";
export type * from "./tcp/api.ts";
export type { TcpCongestionControl, TcpKeepAliveOptions, TcpOptions } from "./tcp/connection.ts";
export { TCP_CONGESTION_CONTROLS } from "./tcp/connection.ts";
export type { TcpLayerStats } from "./tcp/layer.ts";

/** A TCP connection: a byte stream pair plus its tuple. */
export type TcpConnection = TcpConnectionLike;

/** How {@linkcode TcpRequest.reject} refuses a connection. */
export type TcpRejectHow = "rst" | "icmp" | "icmp-prohibited" | "drop";

/**
 * A client's connection attempt (a SYN) to any address and port, waiting for
 * the owner's decision. The owner may decide later (e.g. after dialling the
 * real destination); retransmitted SYNs do not create a second request.
 */
export interface TcpRequest {
  /** The address the client dialled (ours), as text. */
  readonly localAddress: string;
  /** The port the client dialled. */
  readonly localPort: number;
  /** The client's address, as text. */
  readonly remoteAddress: string;
  /** The client's port. */
  readonly remotePort: number;
  /** The same four values with the addresses as bytes. */
  readonly tuple: TcpTuple;
  /** 4 or 6. */
  readonly ipVersion: 4 | 6;
  /**
   * Who sent the SYN: the `source` of the {@linkcode NetStack.input} call
   * that carried it (e.g. the WireGuard peer), `undefined` without one.
   */
  readonly source: unknown;
  /**
   * Accepts: sends SYN-ACK and returns the connection (`options` may choose
   * its congestion controller). Throws a `TypeError` once answered.
   */
  accept(options?: TcpConnectOptions): TcpConnection;
  /**
   * Refuses: `"rst"` (default) sends a RST; `"icmp"` sends ICMP/ICMPv6
   * destination unreachable, port unreachable; `"icmp-prohibited"` sends
   * destination unreachable, administratively prohibited; `"drop"` sends
   * nothing. The ICMP messages quote the SYN and go out on the next
   * `poll`. Throws a `TypeError` once answered.
   */
  reject(how?: TcpRejectHow): void;
}

/** Limits of a {@linkcode NetStack} (more TCP limits in `options.tcp`). */
export interface NetStackLimits {
  /** Most TCP connections in any state (default 65 536; `tcp.maxConnections`). */
  tcpConnections?: number;
  /** Most half-open TCP connections, SYNs awaiting a decision included (default 1024; `tcp.maxHalfOpen`). */
  tcpHalfOpen?: number;
  /**
   * Most UDP flows (default 1024). A new flow when the table is full evicts
   * a flow of the source holding the most: the least recently used of its 8
   * oldest (see {@linkcode NetStackSourceLimits.udpFlows}).
   */
  udpFlows?: number;
  /** UDP flow idle timeout in ms (default 60 000). */
  udpIdleTimeout?: number;
  /** Datagrams queued per UDP flow reader (default 64; drop-oldest). */
  udpQueueLength?: number;
  /** Payload bytes queued per UDP flow reader (default 256 KiB; drop-oldest). */
  udpQueueBytes?: number;
  /** Bytes held in fragment reassembly (default 4 MiB). */
  reassemblyBytes?: number;
  /** Datagrams in fragment reassembly (default 256). */
  reassemblyDatagrams?: number;
  /** IPv4 reassembly timeout in ms (default 30 000). */
  reassemblyTimeoutV4?: number;
  /** IPv6 reassembly timeout in ms (default 60 000). */
  reassemblyTimeoutV6?: number;
  /** ICMP errors we send per second, token bucket rate (default 100). */
  icmpErrorsPerSecond?: number;
  /** ICMP error token bucket size (default 50). */
  icmpErrorBurst?: number;
  /** ICMP rejects queued by {@linkcode TcpRequest.reject} until the next poll (default 64). */
  pendingRejects?: number;
  /** Most TCP connections in TIME_WAIT (default 4096; `tcp.maxTimeWait`). */
  tcpTimeWait?: number;
  /**
   * Quotas of one source (the `source` of {@linkcode NetStack.input}, e.g. a
   * WireGuard peer). A source over a quota gives up its own oldest entry (a
   * SYN over its connection quota is dropped); a full table gives up the
   * oldest entry of the source holding the most. Counted in
   * {@linkcode NetStackStats}.
   */
  perSource?: NetStackSourceLimits;
}

/** Per-source quotas of a {@linkcode NetStack}, see {@linkcode NetStackLimits.perSource}. */
export interface NetStackSourceLimits {
  /** TCP connections in any state (default half of `tcpConnections`). */
  tcpConnections?: number;
  /** Half-open TCP connections, SYNs awaiting a decision included (default half of `tcpHalfOpen`). */
  tcpHalfOpen?: number;
  /** TCP connections in TIME_WAIT (default half of `tcpTimeWait`). */
  tcpTimeWait?: number;
  /**
   * UDP flows (default `udpFlows`: one source may fill the table while
   * nobody else needs it). A source at its quota gives up one of its own
   * flows for a new one (the least recently used of its 8 oldest); a full
   * table gives up one of the source holding the most, so one source's flood
   * never evicts the flows of a source that holds fewer.
   */
  udpFlows?: number;
  /**
   * Bytes in the send buffers of the source's TCP connections (default
   * 32 MiB): when reached, writes wait, so clients that stop reading hold
   * at most this much.
   */
  tcpSendBytes?: number;
  /**
   * Bytes received on the source's TCP connections and not yet read, plus
   * the windows offered to it and not yet filled (default 32 MiB): when
   * reached, their receive windows close until the consumers read (a
   * connection holding no unread byte may still be offered one segment).
   */
  tcpReceiveBytes?: number;
  /** Bytes held in fragment reassembly (default half of `reassemblyBytes`). */
  reassemblyBytes?: number;
  /** Datagrams in fragment reassembly (default half of `reassemblyDatagrams`). */
  reassemblyDatagrams?: number;
}

/** What one source holds, from {@linkcode NetStack.sourceUsage}. */
export interface NetStackSourceUsage {
  /** TCP connections in any state. */
  tcpConnections: number;
  /** Half-open TCP connections and SYNs awaiting a decision. */
  tcpHalfOpen: number;
  /** TCP connections in TIME_WAIT. */
  tcpTimeWait: number;
  /** UDP flows. */
  udpFlows: number;
  /** Bytes in the send buffers of its TCP connections. */
  tcpSendBytes: number;
  /** Bytes received on its TCP connections and not yet read, plus the windows still offered. */
  tcpReceiveBytes: number;
  /** Datagrams in fragment reassembly. */
  reassemblyDatagrams: number;
  /** Bytes held in fragment reassembly. */
  reassemblyBytes: number;
}

/** Settings of a {@linkcode NetStack}. */
export interface NetStackOptions {
  /** Sends one outgoing IP packet. The bytes are valid only during the call. */
  output(packet: Uint8Array): void;
  /**
   * State changed outside `input`/`poll` (a stream write, a decision), or an
   * `input` left work for the end of the batch (the ACK that in-order TCP
   * data owes, bytes for a reader): call `poll` soon. A host that delivers
   * packets in batches polls once after each batch, which then draws one
   * ACK per connection however many segments it brought. Called after the
   * `input` returns, never during one.
   */
  wake?(): void;
  /** A SYN to any address/port arrived. Without this handler SYNs are answered with RST. */
  onTcpConnection?(request: TcpRequest): void;
  /**
   * The first datagram of a new UDP flow (to any address/port) arrived; it is
   * already queued on the flow's readable. Without this handler datagrams
   * are answered with ICMP port unreachable (rate-limited).
   */
  onUdpFlow?(flow: UdpFlow): void;
  /**
   * Asked before a datagram opens a new UDP flow (not for datagrams of open
   * flows): `false` refuses it with ICMP/ICMPv6 destination unreachable,
   * administratively prohibited (rate-limited), and opens nothing. `datagram`
   * is valid only during the call.
   */
  acceptUdpFlow?(datagram: UdpDatagramIn, ipVersion: 4 | 6): boolean;
  /** Link MTU, 1280 to 65535 (default 1420). TCP MSS is mtu − 40 (IPv4) / mtu − 60 (IPv6). */
  mtu?: number;
  /** Answer ICMP/ICMPv6 echo requests to any unicast address (default true). */
  icmpEcho?: boolean;
  /**
   * Verify the checksum of TCP segments (default true). A host whose packets
   * arrive authenticated end to end may turn it off: a WireGuard tunnel's
   * AEAD covers the whole inner packet, so a checksum there can only be
   * wrong because the peer made it so, and wrongs only its own connection
   * (Linux's WireGuard likewise marks decrypted packets CHECKSUM_UNNECESSARY).
   */
  verifyTcpChecksums?: boolean;
  /**
   * Verify the checksum of UDP datagrams (default true), for the same
   * reason as {@linkcode verifyTcpChecksums}. IPv6 datagrams without a
   * checksum (zero) are dropped either way (RFC 8200 §8.1).
   */
  verifyUdpChecksums?: boolean;
  /** Table and rate limits. */
  limits?: NetStackLimits;
  /**
   * Fills `bytes` with random bytes (default `crypto.getRandomValues`): the
   * stack's only source of randomness (IP ids, ephemeral ports, the TCP
   * layer's ISN secret unless `tcp.secret` is given).
   */
  random?: (bytes: Uint8Array) => void;
  /** Options passed to the TCP layer (its `mtu` defaults to the stack's). */
  tcp?: TcpOptions;
  /** The TCP layer implementation (default: the built-in `TcpLayer`); for tests or alternatives. */
  tcpLayer?: TcpLayerConstructor<unknown>;
}

/** Counters of a {@linkcode NetStack}. */
export interface NetStackStats {
  /** IP packets handed to `input`. */
  packetsIn: number;
  /** IP packets passed to `output` (each fragment counts). */
  packetsOut: number;
  /** Bytes handed to `input`. */
  bytesIn: number;
  /** Bytes passed to `output`. */
  bytesOut: number;
  /** IPv4 packets accepted by the header checks. */
  ipv4In: number;
  /** IPv6 packets accepted by the header checks. */
  ipv6In: number;
  /** TCP segments handed to the TCP layer / sent by it, and the built-in layer's counters. */
  tcp: { segmentsIn: number; segmentsOut: number; layer?: TcpLayerStats };
  /** UDP flow table counters plus datagrams sent with `sendUdp`. */
  udp: UdpFlowStats & { sent: number; unhandled: number };
  /** ICMP counters (v4 and v6 together). */
  icmp: {
    echoRequests: number;
    echoReplies: number;
    errorsIn: number;
    errorsToTcp: number;
    errorsSent: number;
    errorsRateLimited: number;
  };
  /** Reassembly counters plus what is held now. */
  fragments: FragmentStats & { datagrams: number; bytes: number; fragmentsSent: number };
  /** Dropped input by reason, e.g. `"ipv4.bad-checksum"`, `"tcp.bad-checksum"`. */
  drops: Record<string, number>;
}

/** Longest SYN prefix kept per pending request to quote in an ICMP reject. */
const SYN_QUOTE_MAX = 256;
const MAX_PACKET = 65535;

interface PendingReject {
  version: 4 | 6;
  packet: Uint8Array;
  code: number;
}

/**
 * The userspace TCP/IP stack: sans-I/O, one instance per tunnel.
 *
 * @example UDP flows to any address, answered
 * ```ts
 * import { NetStack } from "@wgstack/netstack";
 * const stack = new NetStack({
 *   output: (packet) => console.log("send", packet.length, "bytes"),
 *   onUdpFlow: async (flow) => {
 *     const writer = flow.writable.getWriter();
 *     for await (const datagram of flow.readable) await writer.write(datagram);
 *   },
 * });
 * // stack.input(packet, now) for each IP packet; stack.poll(now) when
 * // now >= stack.nextDeadline().
 * ```
 */
export class NetStack {
  #output: (packet: Uint8Array) => void;
  #wake: () => void;
  #onTcp?: (request: TcpRequest) => void;
  #onUdp?: (flow: UdpFlow) => void;
  #acceptUdp?: (datagram: UdpDatagramIn, ipVersion: 4 | 6) => boolean;
  #mtu: number;
  #icmpEcho: boolean;
  #verifyTcp: boolean;
  #verifyUdp: boolean;
  #random: (bytes: Uint8Array) => void;
  #tcp: TcpLayerLike;
  #udp: UdpFlowTable;
  #reasm: FragmentReassembler;
  /** Packets are built here: payload at offset 40, headers in front. */
  readonly #out = new Uint8Array(IPV6_HEADER_LEN + MAX_PACKET);
  readonly #payload4 = this.#out.subarray(IPV4_HEADER_LEN);
  readonly #payload6 = this.#out.subarray(IPV6_HEADER_LEN);
  #frag: Uint8Array;
  #ipId: number;
  #ipv6FragId: number;
  #inCore = 0;
  /**
   * A wake asked for inside `input` (e.g. TCP work left for the end of the
   * batch), given to the owner once the input returns.
   */
  #wakeAfterInput = false;
  /** The `now` of the latest call that passed one (`input`, `poll`, `connect`, `sendUdp`). */
  #now = 0;
  /** The `source` of the current `input` call. */
  #source: unknown = undefined;
  /** The IP packet being processed (for quoting a SYN in a later reject). */
  #current: Uint8Array | null = null;
  #tokens: number;
  #tokensAt = -Infinity;
  #rate: number;
  #burst: number;
  #pending: PendingReject[] = [];
  #pendingMax: number;
  // Reused per packet.
  #chain = new Ipv6HeaderChain();
  #quotedChain = new Ipv6HeaderChain();
  #fragIn: FragmentInput = {
    version: 4,
    src: new Uint8Array(4),
    dst: new Uint8Array(4),
    protocol: 0,
    id: 0,
    offset: 0,
    more: false,
    data: new Uint8Array(0),
  };
  #udpIn: UdpDatagramIn = {
    localAddress: new Uint8Array(4),
    localPort: 0,
    remoteAddress: new Uint8Array(4),
    remotePort: 0,
    payload: new Uint8Array(0),
  };
  #v4: Ipv4Repr = { src: new Uint8Array(4), dst: new Uint8Array(4), protocol: 0, payloadLength: 0 };
  #v6: Ipv6Repr = {
    src: new Uint8Array(16),
    dst: new Uint8Array(16),
    nextHeader: 0,
    payloadLength: 0,
  };
  #v6frag: Ipv6FragmentRepr = { nextHeader: 0, offset: 0, more: false, id: 0 };
  #icmp: IcmpRepr = { type: 0, code: 0, restOfHeader: 0, data: new Uint8Array(0) };
  #pseudo: { src: Uint8Array; dst: Uint8Array } = {
    src: new Uint8Array(4),
    dst: new Uint8Array(4),
  };
  #udpOut: UdpRepr = {
    src: new Uint8Array(4),
    dst: new Uint8Array(4),
    srcPort: 0,
    dstPort: 0,
    payload: new Uint8Array(0),
  };
  #stats = {
    packetsIn: 0,
    packetsOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    ipv4In: 0,
    ipv6In: 0,
    tcpIn: 0,
    tcpOut: 0,
    udpSent: 0,
    udpUnhandled: 0,
    echoRequests: 0,
    echoReplies: 0,
    icmpErrorsIn: 0,
    icmpErrorsToTcp: 0,
    icmpErrorsSent: 0,
    icmpRateLimited: 0,
    fragmentsSent: 0,
  };
  #drops: Record<string, number> = {};

  /** Creates a stack. Throws a `TypeError`/`RangeError` on bad options. */
  constructor(options: NetStackOptions) {
    if (!options || typeof options.output !== "function") {
      throw new TypeError("NetStack needs an output(packet) function");
    }
    this.#output = options.output;
    this.#wake = options.wake ?? (() => {});
    this.#onTcp = options.onTcpConnection;
    this.#onUdp = options.onUdpFlow;
    this.#acceptUdp = options.acceptUdpFlow;
    const mtu = options.mtu ?? 1420;
    if (!Number.isInteger(mtu) || mtu < IPV6_MIN_MTU || mtu > MAX_PACKET) {
      throw new RangeError(`The MTU must be an integer from 1280 to 65535, not ${mtu}`);
    }
    this.#mtu = mtu;
    this.#frag = new Uint8Array(mtu);
    this.#icmpEcho = options.icmpEcho ?? true;
    this.#verifyTcp = options.verifyTcpChecksums ?? true;
    this.#verifyUdp = options.verifyUdpChecksums ?? true;
    this.#random = options.random ?? ((b) => crypto.getRandomValues(b));
    const limits = options.limits ?? {};
    this.#rate = limits.icmpErrorsPerSecond ?? 100;
    this.#burst = limits.icmpErrorBurst ?? 50;
    if (!(this.#rate >= 0) || !(this.#burst >= 0)) {
      throw new RangeError("ICMP error rate limits must be non-negative");
    }
    this.#tokens = this.#burst;
    this.#pendingMax = limits.pendingRejects ?? 64;
    const seed = new Uint8Array(6);
    this.#random(seed);
    this.#ipId = (seed[0] << 8) | seed[1];
    this.#ipv6FragId = ((seed[2] << 24) | (seed[3] << 16) | (seed[4] << 8) | seed[5]) >>> 0;
    const perSource = limits.perSource ?? {};
    this.#reasm = new FragmentReassembler({
      maxBytes: limits.reassemblyBytes,
      maxDatagrams: limits.reassemblyDatagrams,
      maxBytesPerSource: perSource.reassemblyBytes,
      maxDatagramsPerSource: perSource.reassemblyDatagrams,
      timeoutV4: limits.reassemblyTimeoutV4,
      timeoutV6: limits.reassemblyTimeoutV6,
      headroom: IPV6_HEADER_LEN,
      onTimeout: (version, first) => this.#reassemblyTimeout(version, first),
    });
    this.#udp = new UdpFlowTable({
      send: (flow, payload) => this.#sendUdpPayload(flow, payload),
      wake: () => this.#wakeOwner(),
      maxFlows: limits.udpFlows,
      maxFlowsPerSource: perSource.udpFlows,
      idleTimeout: limits.udpIdleTimeout,
      queueLength: limits.udpQueueLength,
      queueBytes: limits.udpQueueBytes,
    });
    const host: TcpLayerHost = {
      sendSegment: (src, dst, segment) => this.#sendSegment(src, dst, segment),
      segmentBuffer: (src) => this.#payloadBuf(src.length === 4 ? 4 : 6),
      wake: () => this.#wakeOwner(),
      onSyn: (request) => this.#onSyn(request),
    };
    const Layer = options.tcpLayer ?? TcpLayer;
    const tcpOptions: TcpOptions = {
      mtu,
      maxConnections: limits.tcpConnections,
      maxHalfOpen: limits.tcpHalfOpen,
      maxTimeWait: limits.tcpTimeWait,
      maxConnectionsPerSource: perSource.tcpConnections,
      maxHalfOpenPerSource: perSource.tcpHalfOpen,
      maxTimeWaitPerSource: perSource.tcpTimeWait,
      sendBytesPerSource: perSource.tcpSendBytes,
      receiveBytesPerSource: perSource.tcpReceiveBytes,
      ...options.tcp,
    };
    // The ISN secret comes from our randomness too (all of it is injectable).
    if (tcpOptions.secret === undefined) this.#random(tcpOptions.secret = new Uint8Array(16));
    this.#tcp = new Layer(host, tcpOptions);
  }

  /** The link MTU. */
  get mtu(): number {
    return this.#mtu;
  }

  /**
   * Processes one incoming IP packet (IPv4 or IPv6, by the version nibble).
   * Malformed packets are dropped and counted in {@linkcode NetStack.stats}.
   * `packet` is not kept after the call.
   *
   * `source` says who sent the packet (e.g. the WireGuard peer it came
   * through; compared with `===`, never looked into). The per-source quotas
   * of {@linkcode NetStackLimits.perSource} count TCP connections, half-open
   * SYNs, TIME_WAIT entries, send-buffer bytes, UDP flows and fragments in
   * reassembly against it, so one source cannot take another's place in a full table.
   * Packets without a source share one that has no quota of its own.
   */
  input(packet: Uint8Array, now: number, source?: unknown): void {
    this.#inCore++;
    this.#now = now;
    this.#source = source;
    try {
      const s = this.#stats;
      s.packetsIn++;
      s.bytesIn += packet.length;
      const version = packet.length > 0 ? packet[0] >> 4 : 0;
      if (version === 4) this.#inputV4(packet, now, false);
      else if (version === 6) this.#inputV6(packet, now, false);
      else this.#drop("ip.bad-version");
      this.#current = null;
      if (this.#pending.length > 0) this.#flushRejects(now);
    } finally {
      this.#inCore--;
      this.#source = undefined;
    }
    if (this.#wakeAfterInput && this.#inCore === 0) {
      this.#wakeAfterInput = false;
      this.#wake();
    }
  }

  /** Runs due timers (TCP, reassembly, UDP idle) and sends queued packets. */
  poll(now: number): void {
    this.#inCore++;
    this.#now = now;
    try {
      this.#udp.flush(now);
      this.#tcp.poll(now);
      this.#reasm.poll(now);
      this.#udp.poll(now);
      if (this.#pending.length > 0) this.#flushRejects(now);
    } finally {
      this.#inCore--;
      // What asked for a wake during the poll was done by it.
      if (this.#inCore === 0) this.#wakeAfterInput = false;
    }
  }

  /**
   * When `poll` should next run (monotonic ms; `-Infinity` means now,
   * `Infinity` means only after the next input or wake).
   */
  nextDeadline(): number {
    if (this.#pending.length > 0) return -Infinity;
    return Math.min(this.#tcp.nextDeadline(), this.#reasm.nextDeadline(), this.#udp.nextDeadline());
  }

  /**
   * Active open from any local address (default port: a random ephemeral
   * port) to a client address. Throws a `TypeError` on a bad address or
   * mixed IP versions and a `RangeError` on a bad port.
   */
  connect(
    opts: {
      localAddress: string | IpAddress;
      localPort?: number;
      remoteAddress: string | IpAddress;
      remotePort: number;
    },
    now: number,
  ): TcpConnection {
    const localAddress = toAddress(opts.localAddress, "localAddress");
    const remoteAddress = toAddress(opts.remoteAddress, "remoteAddress");
    if (localAddress.length !== remoteAddress.length) {
      throw new TypeError("localAddress and remoteAddress must be the same IP version");
    }
    checkPort(opts.remotePort, "remotePort", false);
    const remotePort = opts.remotePort;
    this.#inCore++;
    this.#now = now;
    try {
      if (opts.localPort !== undefined) {
        checkPort(opts.localPort, "localPort", false);
        const tuple = { localAddress, localPort: opts.localPort, remoteAddress, remotePort };
        return this.#tcp.connect(tuple, now);
      }
      // An ephemeral port (RFC 6056 §3.3.1: random in 49152–65535); a few
      // tries when the 4-tuple is taken.
      const b = new Uint8Array(2);
      for (let attempt = 0;; attempt++) {
        this.#random(b);
        const localPort = 49152 + (((b[0] << 8) | b[1]) % 16384);
        try {
          return this.#tcp.connect({ localAddress, localPort, remoteAddress, remotePort }, now);
        } catch (err) {
          if (!(err instanceof TypeError) || attempt >= 7) throw err;
        }
      }
    } finally {
      this.#inCore--;
    }
  }

  /**
   * Sends one UDP datagram from any address/port to a client (fragmented
   * when it does not fit the MTU). Throws a `TypeError` on a bad address,
   * mixed versions or a non-`Uint8Array` payload, and a `RangeError` on a bad
   * port or a payload over 65507 (IPv4) / 65527 (IPv6) bytes.
   */
  sendUdp(
    from: { address: string | IpAddress; port: number },
    to: { address: string | IpAddress; port: number },
    payload: Uint8Array,
    now: number,
  ): void {
    const src = toAddress(from.address, "from.address");
    const dst = toAddress(to.address, "to.address");
    if (src.length !== dst.length) throw new TypeError("from and to must be the same IP version");
    checkPort(from.port, "from.port", true);
    checkPort(to.port, "to.port", true);
    if (!(payload instanceof Uint8Array)) throw new TypeError("The payload must be a Uint8Array");
    const max = src.length === 4 ? 65507 : 65527;
    if (payload.length > max) {
      throw new RangeError(`A UDP datagram carries at most ${max} bytes, not ${payload.length}`);
    }
    this.#now = now;
    this.#stats.udpSent++;
    this.#emitUdp(src, from.port, dst, to.port, payload);
  }

  /**
   * What one source (see {@linkcode NetStack.input}) holds now: TCP
   * connections, half-open entries, TIME_WAIT entries and send-buffer bytes
   * (with the built-in TCP layer), UDP flows, and fragments in reassembly.
   */
  sourceUsage(source: unknown): NetStackSourceUsage {
    const tcp = this.#tcp instanceof TcpLayer ? this.#tcp.sourceUsage(source) : undefined;
    const frag = this.#reasm.sourceUsage(source);
    return {
      tcpConnections: tcp?.connections ?? 0,
      tcpHalfOpen: tcp?.halfOpen ?? 0,
      tcpTimeWait: tcp?.timeWait ?? 0,
      udpFlows: this.#udp.sourceCount(source),
      tcpSendBytes: tcp?.sendBytes ?? 0,
      tcpReceiveBytes: tcp?.receiveBytes ?? 0,
      reassemblyDatagrams: frag.datagrams,
      reassemblyBytes: frag.bytes,
    };
  }

  /** A snapshot of the counters and of what the tables hold. */
  stats(): NetStackStats {
    const s = this.#stats;
    return {
      packetsIn: s.packetsIn,
      packetsOut: s.packetsOut,
      bytesIn: s.bytesIn,
      bytesOut: s.bytesOut,
      ipv4In: s.ipv4In,
      ipv6In: s.ipv6In,
      tcp: {
        segmentsIn: s.tcpIn,
        segmentsOut: s.tcpOut,
        layer: this.#tcp instanceof TcpLayer ? this.#tcp.stats : undefined,
      },
      udp: { ...this.#udp.stats(), sent: s.udpSent, unhandled: s.udpUnhandled },
      icmp: {
        echoRequests: s.echoRequests,
        echoReplies: s.echoReplies,
        errorsIn: s.icmpErrorsIn,
        errorsToTcp: s.icmpErrorsToTcp,
        errorsSent: s.icmpErrorsSent,
        errorsRateLimited: s.icmpRateLimited,
      },
      fragments: {
        ...this.#reasm.stats(),
        datagrams: this.#reasm.size,
        bytes: this.#reasm.bytes,
        fragmentsSent: s.fragmentsSent,
      },
      drops: { ...this.#drops },
    };
  }

  // ---------------------------------------------------------------- input

  #drop(reason: string): void {
    this.#drops[reason] = (this.#drops[reason] ?? 0) + 1;
  }

  #inputV4(packet: Uint8Array, now: number, reassembled: boolean): void {
    const ip = Ipv4Packet.parse(packet);
    if (typeof ip === "string") return this.#drop(`ipv4.${ip}`);
    // RFC 1122 §3.2.1.3: a source that is "this network", loopback,
    // multicast or broadcast is never valid; discard silently.
    const b0 = ip.bytes[IPV4_FIELD.SRC];
    if (b0 === 0 || b0 === 127 || b0 >= 224) return this.#drop("ipv4.bad-source");
    this.#stats.ipv4In++;
    if (ip.isFragment) {
      if (reassembled) return this.#drop("ipv4.nested-fragment");
      const f = this.#fragIn;
      f.version = 4;
      f.src = ip.src;
      f.dst = ip.dst;
      f.protocol = ip.protocol;
      f.id = ip.identification;
      f.offset = ip.fragmentOffset;
      f.more = ip.moreFragments;
      f.data = ip.payload;
      f.packet = ip.bytes;
      f.source = this.#source;
      const whole = this.#reasm.add(f, now);
      if (!whole) return;
      // Rebuild an unfragmented packet in the headroom and process it.
      const v4 = this.#v4;
      v4.src = ip.src;
      v4.dst = ip.dst;
      v4.protocol = ip.protocol;
      v4.payloadLength = whole.length - IPV6_HEADER_LEN;
      v4.ttl = ip.ttl;
      v4.identification = ip.identification;
      v4.dontFragment = false;
      v4.moreFragments = false;
      v4.fragmentOffset = 0;
      const rebuilt = whole.subarray(IPV6_HEADER_LEN - IPV4_HEADER_LEN);
      emitIpv4Header(rebuilt, v4);
      return this.#inputV4(rebuilt, now, true);
    }
    this.#dispatch(4, ip.bytes, ip.src, ip.dst, ip.protocol, ip.payload, IPV4_FIELD.PROTOCOL, now);
  }

  #inputV6(packet: Uint8Array, now: number, reassembled: boolean): void {
    const ip = Ipv6Packet.parse(packet);
    if (typeof ip === "string") return this.#drop(`ipv6.${ip}`);
    const bytes = ip.bytes;
    // RFC 4291 §2.7, §2.5.2, §2.5.3: multicast, unspecified and loopback are
    // never a valid source here.
    if (bytes[IPV6_FIELD.SRC] === 0xff || isIpv6UnspecifiedOrLoopback(bytes)) {
      return this.#drop("ipv6.bad-source");
    }
    const chain = this.#chain;
    const err = walkIpv6Headers(bytes, chain);
    if (err) return this.#drop(`ipv6.${err}`);
    this.#stats.ipv6In++;
    if (chain.isFragment) {
      if (reassembled) return this.#drop("ipv6.nested-fragment");
      const f = this.#fragIn;
      f.version = 6;
      f.src = ip.src;
      f.dst = ip.dst;
      f.protocol = chain.protocol;
      f.id = chain.fragmentId;
      f.offset = chain.fragmentOffset;
      f.more = chain.moreFragments;
      f.data = bytes.subarray(chain.offset);
      f.packet = bytes;
      f.source = this.#source;
      const whole = this.#reasm.add(f, now);
      if (!whole) return;
      // The unfragmentable extension headers were checked on each fragment;
      // the rebuilt packet carries the fragmentable part right after the
      // fixed header.
      const v6 = this.#v6;
      v6.src = ip.src;
      v6.dst = ip.dst;
      v6.nextHeader = chain.protocol;
      v6.payloadLength = whole.length - IPV6_HEADER_LEN;
      v6.hopLimit = ip.hopLimit;
      emitIpv6Header(whole, v6);
      return this.#inputV6(whole, now, true);
    }
    if (chain.protocol === IPV6_NO_NEXT_HEADER) return this.#drop("ipv6.no-next-header");
    this.#dispatch(
      6,
      bytes,
      ip.src,
      ip.dst,
      chain.protocol,
      bytes.subarray(chain.offset),
      chain.protocolFieldOffset,
      now,
    );
  }

  #dispatch(
    version: 4 | 6,
    packet: Uint8Array,
    src: Uint8Array,
    dst: Uint8Array,
    protocol: number,
    payload: Uint8Array,
    protocolField: number,
    now: number,
  ): void {
    if (protocol === IP_PROTOCOL_TCP) {
      if (payload.length < 20) return this.#drop("tcp.truncated");
      // RFC 1122 §4.2.3.10: no TCP to a broadcast or multicast address.
      if (isMulticastOrBroadcast(dst)) return this.#drop("tcp.multicast-destination");
      if (
        this.#verifyTcp &&
        foldChecksum(sumWords(payload, pseudoHeaderSum(src, dst, 6, payload.length))) !== 0
      ) {
        return this.#drop("tcp.bad-checksum");
      }
      this.#stats.tcpIn++;
      this.#current = packet;
      this.#tcp.input(src, dst, payload, now, this.#source);
      this.#current = null;
      return;
    }
    if (protocol === IP_PROTOCOL_UDP) {
      return this.#inputUdp(version, packet, src, dst, payload, now);
    }
    if (version === 4 && protocol === IP_PROTOCOL_ICMP) {
      return this.#inputIcmpV4(src, dst, payload, now);
    }
    if (version === 6 && protocol === IP_PROTOCOL_ICMPV6) {
      return this.#inputIcmpV6(src, dst, payload, now);
    }
    this.#drop(version === 4 ? "ipv4.unknown-protocol" : "ipv6.unknown-next-header");
    if (version === 4) {
      this.#sendIcmpError(
        4,
        packet,
        ICMPV4_DEST_UNREACHABLE,
        ICMPV4_CODE_PROTOCOL_UNREACHABLE,
        0,
        now,
      );
    } else {
      this.#sendIcmpError(
        6,
        packet,
        ICMPV6_PARAMETER_PROBLEM,
        ICMPV6_CODE_UNRECOGNIZED_NEXT_HEADER,
        protocolField,
        now,
      );
    }
  }

  #inputUdp(
    version: 4 | 6,
    packet: Uint8Array,
    src: Uint8Array,
    dst: Uint8Array,
    payload: Uint8Array,
    now: number,
  ): void {
    const udp = UdpPacket.parse(payload, src, dst, this.#verifyUdp);
    if (typeof udp === "string") return this.#drop(`udp.${udp}`);
    if (udp.srcPort === 0 || udp.dstPort === 0) return this.#drop("udp.zero-port");
    // A flow answers from its local address, which must be unicast.
    if (isMulticastOrBroadcast(dst)) return this.#drop("udp.multicast-destination");
    const d = this.#udpIn;
    d.localAddress = dst;
    d.localPort = udp.dstPort;
    d.remoteAddress = src;
    d.remotePort = udp.srcPort;
    d.payload = udp.payload;
    d.source = this.#source;
    if (this.#udp.deliver(d, now)) return;
    if (!this.#onUdp) {
      this.#stats.udpUnhandled++;
      this.#drop("udp.no-handler");
      const code = version === 4 ? ICMPV4_CODE_PORT_UNREACHABLE : ICMPV6_CODE_PORT_UNREACHABLE;
      const type = version === 4 ? ICMPV4_DEST_UNREACHABLE : ICMPV6_DEST_UNREACHABLE;
      this.#sendIcmpError(version, packet, type, code, 0, now);
      return;
    }
    if (this.#acceptUdp && !this.#acceptUdp(d, version)) {
      this.#drop("udp.refused");
      const code = version === 4 ? ICMPV4_CODE_ADMIN_PROHIBITED : ICMPV6_CODE_ADMIN_PROHIBITED;
      const type = version === 4 ? ICMPV4_DEST_UNREACHABLE : ICMPV6_DEST_UNREACHABLE;
      this.#sendIcmpError(version, packet, type, code, 0, now);
      return;
    }
    const flow = this.#udp.open(d, now);
    this.#onUdp(flow);
  }

  #inputIcmpV4(
    src: Uint8Array,
    dst: Uint8Array,
    payload: Uint8Array,
    now: number,
  ): void {
    const msg = IcmpPacket.parse(payload);
    if (typeof msg === "string") return this.#drop(`icmp.${msg}`);
    const type = msg.type;
    if (type === ICMPV4_ECHO_REQUEST) {
      this.#stats.echoRequests++;
      if (!this.#icmpEcho) return this.#drop("icmp.echo-disabled");
      if (isIpv4MulticastOrBroadcast(dst) || !isUnicastV4(src)) {
        return this.#drop("icmp.echo-not-unicast");
      }
      const icmp = this.#icmp;
      icmp.type = ICMPV4_ECHO_REPLY;
      icmp.code = 0;
      icmp.restOfHeader = msg.restOfHeader;
      icmp.data = msg.data;
      icmp.pseudo = undefined;
      const len = emitIcmp(this.#payloadBuf(4), icmp);
      this.#stats.echoReplies++;
      this.#sendIp(4, dst, src, IP_PROTOCOL_ICMP, len, false);
      return;
    }
    if (type === ICMPV4_DEST_UNREACHABLE || type === ICMPV4_TIME_EXCEEDED) {
      this.#stats.icmpErrorsIn++;
      if (type === ICMPV4_TIME_EXCEEDED) return this.#drop("icmp.time-exceeded-ignored");
      const q = msg.data;
      if (q.length < IPV4_HEADER_LEN || q[0] >> 4 !== 4) return this.#drop("icmp.bad-quote");
      const ihl = (q[0] & 0x0f) * 4;
      if (ihl < IPV4_HEADER_LEN || q.length < ihl + 8) return this.#drop("icmp.bad-quote");
      if (q[IPV4_FIELD.PROTOCOL] !== IP_PROTOCOL_TCP) return this.#drop("icmp.error-not-tcp");
      const fragment = IPV4_FIELD.FLAGS_FRAGMENT;
      if (((q[fragment] & 0x1f) | q[fragment + 1]) !== 0) return this.#drop("icmp.bad-quote");
      let mtu: number | undefined;
      if (msg.code === ICMPV4_CODE_FRAG_NEEDED) {
        mtu = msg.v4NextHopMtu;
        if (mtu < 68) return this.#drop("icmp.bad-mtu");
      }
      this.#stats.icmpErrorsToTcp++;
      this.#tcp.icmpError(
        q.subarray(IPV4_FIELD.SRC, IPV4_FIELD.SRC + 4),
        q.subarray(IPV4_FIELD.DST, IPV4_FIELD.DST + 4),
        q.subarray(ihl),
        mtu === undefined ? { kind: "unreachable" } : { kind: "packet-too-big", mtu },
        now,
      );
      return;
    }
    if (type === ICMPV4_PARAMETER_PROBLEM) {
      this.#stats.icmpErrorsIn++;
      return this.#drop("icmp.parameter-problem-ignored");
    }
    this.#drop(type === ICMPV4_ECHO_REPLY ? "icmp.echo-reply-ignored" : "icmp.unknown-type");
  }

  #inputIcmpV6(
    src: Uint8Array,
    dst: Uint8Array,
    payload: Uint8Array,
    now: number,
  ): void {
    const pseudo = this.#pseudo;
    pseudo.src = src;
    pseudo.dst = dst;
    const msg = IcmpPacket.parse(payload, pseudo);
    if (typeof msg === "string") return this.#drop(`icmpv6.${msg}`);
    const type = msg.type;
    if (type === ICMPV6_ECHO_REQUEST) {
      this.#stats.echoRequests++;
      if (!this.#icmpEcho) return this.#drop("icmpv6.echo-disabled");
      if (isIpv6Multicast(dst) || isIpv6Multicast(src) || isIpv6Unspecified(src)) {
        return this.#drop("icmpv6.echo-not-unicast");
      }
      const icmp = this.#icmp;
      icmp.type = ICMPV6_ECHO_REPLY;
      icmp.code = 0;
      icmp.restOfHeader = msg.restOfHeader;
      icmp.data = msg.data;
      pseudo.src = dst;
      pseudo.dst = src;
      icmp.pseudo = pseudo;
      const len = emitIcmp(this.#payloadBuf(6), icmp);
      this.#stats.echoReplies++;
      this.#sendIp(6, dst, src, IP_PROTOCOL_ICMPV6, len, false);
      return;
    }
    if (type === ICMPV6_DEST_UNREACHABLE || type === ICMPV6_PACKET_TOO_BIG) {
      this.#stats.icmpErrorsIn++;
      const q = msg.data;
      if (q.length < IPV6_HEADER_LEN || q[0] >> 4 !== 6) return this.#drop("icmpv6.bad-quote");
      const chain = this.#quotedChain;
      if (walkIpv6Headers(q, chain) !== null) return this.#drop("icmpv6.bad-quote");
      if (chain.isFragment && chain.fragmentOffset !== 0) return this.#drop("icmpv6.bad-quote");
      if (chain.protocol !== IP_PROTOCOL_TCP) return this.#drop("icmpv6.error-not-tcp");
      if (q.length < chain.offset + 8) return this.#drop("icmpv6.bad-quote");
      let mtu: number | undefined;
      if (type === ICMPV6_PACKET_TOO_BIG) mtu = Math.max(msg.v6Mtu, IPV6_MIN_MTU);
      this.#stats.icmpErrorsToTcp++;
      this.#tcp.icmpError(
        q.subarray(IPV6_FIELD.SRC, IPV6_FIELD.SRC + 16),
        q.subarray(IPV6_FIELD.DST, IPV6_FIELD.DST + 16),
        q.subarray(chain.offset),
        mtu === undefined ? { kind: "unreachable" } : { kind: "packet-too-big", mtu },
        now,
      );
      return;
    }
    if (type === ICMPV6_TIME_EXCEEDED || type === ICMPV6_PARAMETER_PROBLEM) {
      this.#stats.icmpErrorsIn++;
      return this.#drop("icmpv6.error-ignored");
    }
    if (type === ICMPV6_ECHO_REPLY) return this.#drop("icmpv6.echo-reply-ignored");
    if (type >= 133 && type <= 137) return this.#drop("icmpv6.ndp-ignored");
    this.#drop("icmpv6.unknown-type");
  }

  // ---------------------------------------------------------------- TCP glue

  #onSyn(request: TcpSynRequest): void {
    const packet = this.#current;
    const quote = packet ? packet.slice(0, Math.min(packet.length, SYN_QUOTE_MAX)) : null;
    if (!this.#onTcp) {
      request.reset();
      return;
    }
    const t = request.tuple;
    let answered = false;
    const answer = () => {
      if (answered) throw new TypeError("The connection request was already answered");
      answered = true;
    };
    const req: TcpRequest = {
      localAddress: formatAddress(t.localAddress),
      localPort: t.localPort,
      remoteAddress: formatAddress(t.remoteAddress),
      remotePort: t.remotePort,
      tuple: t,
      ipVersion: request.ipVersion,
      source: request.source,
      accept: (options?: TcpConnectOptions) => {
        answer();
        return request.accept(options);
      },
      reject: (how: TcpRejectHow = "rst") => {
        if (how !== "rst" && how !== "icmp" && how !== "icmp-prohibited" && how !== "drop") {
          throw new TypeError(`Unknown reject kind ${String(how)}`);
        }
        answer();
        if (how === "rst") return request.reset();
        request.drop();
        if (how === "drop" || !quote) return;
        const v4 = request.ipVersion === 4;
        const code = how === "icmp"
          ? (v4 ? ICMPV4_CODE_PORT_UNREACHABLE : ICMPV6_CODE_PORT_UNREACHABLE)
          : (v4 ? ICMPV4_CODE_ADMIN_PROHIBITED : ICMPV6_CODE_ADMIN_PROHIBITED);
        if (this.#pending.length >= this.#pendingMax) return this.#drop("tcp.reject-queue-full");
        this.#pending.push({ version: request.ipVersion, packet: quote, code });
        if (this.#pending.length === 1) this.#wakeOwner();
      },
    };
    this.#onTcp(req);
  }

  #reassemblyTimeout(version: 4 | 6, first: Uint8Array): void {
    if (version === 4) {
      this.#sendIcmpError(
        4,
        first,
        ICMPV4_TIME_EXCEEDED,
        ICMPV4_CODE_REASSEMBLY_TIMEOUT,
        0,
        this.#now,
      );
    } else {
      this.#sendIcmpError(
        6,
        first,
        ICMPV6_TIME_EXCEEDED,
        ICMPV6_CODE_REASSEMBLY_TIMEOUT,
        0,
        this.#now,
      );
    }
  }

  #flushRejects(now: number): void {
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) {
      const type = p.version === 4 ? ICMPV4_DEST_UNREACHABLE : ICMPV6_DEST_UNREACHABLE;
      this.#sendIcmpError(p.version, p.packet, type, p.code, 0, now, true);
    }
  }

  #sendSegment(src: IpAddress, dst: IpAddress, segment: Uint8Array): void {
    const version = src.length === 4 ? 4 : 6;
    const buf = this.#payloadBuf(version);
    if (segment.length > buf.length) throw new RangeError("The TCP segment is too long");
    // A segment built in place (segmentBuffer) is already there.
    if (segment.buffer !== buf.buffer || segment.byteOffset !== buf.byteOffset) buf.set(segment);
    this.#stats.tcpOut++;
    this.#sendIp(version, src, dst, IP_PROTOCOL_TCP, segment.length, version === 4);
  }

  /**
   * Asks the owner to poll: at once outside the cores, after the input
   * inside `input`, never inside `poll` (which does the work itself).
   */
  #wakeOwner(): void {
    if (this.#inCore === 0) this.#wake();
    else this.#wakeAfterInput = true;
  }

  // ---------------------------------------------------------------- output

  /** The region of `#out` where the payload of a packet of `version` starts. */
  #payloadBuf(version: 4 | 6): Uint8Array {
    return version === 4 ? this.#payload4 : this.#payload6;
  }

  #sendUdpPayload(flow: UdpFlow, payload: Uint8Array): void {
    this.#emitUdp(
      flow.localAddressBytes,
      flow.localPort,
      flow.remoteAddressBytes,
      flow.remotePort,
      payload,
    );
  }

  #emitUdp(
    src: IpAddress,
    srcPort: number,
    dst: IpAddress,
    dstPort: number,
    payload: Uint8Array,
  ): void {
    const version = src.length === 4 ? 4 : 6;
    const u = this.#udpOut;
    u.src = src;
    u.dst = dst;
    u.srcPort = srcPort;
    u.dstPort = dstPort;
    u.payload = payload;
    const len = emitUdp(this.#payloadBuf(version), u);
    this.#sendIp(version, src, dst, IP_PROTOCOL_UDP, len, false);
  }

  /**
   * Sends an ICMP/ICMPv6 error quoting `invoking` (an IP packet we got),
   * unless RFC 1122 §3.2.2 / RFC 4443 §2.4(e) forbid it or the rate limit
   * is spent.
   */
  #sendIcmpError(
    version: 4 | 6,
    invoking: Uint8Array,
    type: number,
    code: number,
    rest: number,
    now: number,
    force = false,
  ): void {
    let src: Uint8Array, dst: Uint8Array;
    if (version === 4) {
      src = invoking.subarray(IPV4_FIELD.SRC, IPV4_FIELD.SRC + 4);
      dst = invoking.subarray(IPV4_FIELD.DST, IPV4_FIELD.DST + 4);
      if (!isUnicastV4(src) || isIpv4MulticastOrBroadcast(dst)) return;
      const ihl = (invoking[0] & 0x0f) * 4;
      if (
        invoking[IPV4_FIELD.PROTOCOL] === IP_PROTOCOL_ICMP && invoking.length > ihl &&
        !isIcmpV4Query(invoking[ihl])
      ) {
        return;
      }
    } else {
      src = invoking.subarray(IPV6_FIELD.SRC, IPV6_FIELD.SRC + 16);
      dst = invoking.subarray(IPV6_FIELD.DST, IPV6_FIELD.DST + 16);
      if (isIpv6Multicast(src) || isIpv6Unspecified(src) || isIpv6Multicast(dst)) return;
      // An ICMPv6 error (types below 128) is never answered with one (RFC 4443 §2.4).
      if (
        invoking[IPV6_FIELD.NEXT_HEADER] === IP_PROTOCOL_ICMPV6 &&
        invoking.length > IPV6_HEADER_LEN && invoking[IPV6_HEADER_LEN] < 128
      ) return;
    }
    if (!force && !this.#takeToken(now)) {
      this.#stats.icmpRateLimited++;
      return;
    }
    const max = version === 4 ? ICMPV4_MAX_QUOTE : ICMPV6_MAX_QUOTE;
    const icmp = this.#icmp;
    icmp.type = type;
    icmp.code = code;
    icmp.restOfHeader = rest;
    icmp.data = invoking.subarray(0, Math.min(invoking.length, max));
    if (version === 6) {
      const pseudo = this.#pseudo;
      pseudo.src = dst;
      pseudo.dst = src;
      icmp.pseudo = pseudo;
    } else {
      icmp.pseudo = undefined;
    }
    // `invoking` may be a view of #out only if we quoted our own packet, which
    // never happens: it is always an input packet or a kept SYN copy.
    const len = emitIcmp(this.#payloadBuf(version), icmp);
    this.#stats.icmpErrorsSent++;
    this.#sendIp(
      version,
      dst,
      src,
      version === 4 ? IP_PROTOCOL_ICMP : IP_PROTOCOL_ICMPV6,
      len,
      false,
    );
  }

  #takeToken(now: number): boolean {
    if (this.#tokensAt === -Infinity) this.#tokensAt = now;
    const elapsed = now - this.#tokensAt;
    if (elapsed > 0) {
      this.#tokens = Math.min(this.#burst, this.#tokens + (elapsed * this.#rate) / 1000);
      this.#tokensAt = now;
    }
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }

  /**
   * Wraps the payload already written at `#payloadBuf(version)` in an IP
   * header and outputs it, fragmenting when it does not fit the MTU.
   */
  #sendIp(
    version: 4 | 6,
    src: Uint8Array,
    dst: Uint8Array,
    protocol: number,
    length: number,
    dontFragment: boolean,
  ): void {
    const out = this.#out;
    const s = this.#stats;
    if (version === 4) {
      const v4 = this.#v4;
      v4.src = src;
      v4.dst = dst;
      v4.protocol = protocol;
      v4.ttl = 64;
      v4.identification = this.#ipId = (this.#ipId + 1) & 0xffff;
      v4.moreFragments = false;
      v4.fragmentOffset = 0;
      if (IPV4_HEADER_LEN + length <= this.#mtu) {
        v4.payloadLength = length;
        v4.dontFragment = dontFragment;
        emitIpv4Header(out, v4);
        return this.#emit(out.subarray(0, IPV4_HEADER_LEN + length));
      }
      const chunk = ((this.#mtu - IPV4_HEADER_LEN) >> 3) << 3;
      const frag = this.#frag;
      v4.dontFragment = false;
      for (let off = 0; off < length; off += chunk) {
        const n = Math.min(chunk, length - off);
        v4.payloadLength = n;
        v4.fragmentOffset = off;
        v4.moreFragments = off + n < length;
        emitIpv4Header(frag, v4);
        frag.set(out.subarray(IPV4_HEADER_LEN + off, IPV4_HEADER_LEN + off + n), IPV4_HEADER_LEN);
        s.fragmentsSent++;
        this.#emit(frag.subarray(0, IPV4_HEADER_LEN + n));
      }
      return;
    }
    const v6 = this.#v6;
    v6.src = src;
    v6.dst = dst;
    v6.hopLimit = 64;
    if (IPV6_HEADER_LEN + length <= this.#mtu) {
      v6.nextHeader = protocol;
      v6.payloadLength = length;
      emitIpv6Header(out, v6);
      return this.#emit(out.subarray(0, IPV6_HEADER_LEN + length));
    }
    const chunk = ((this.#mtu - IPV6_HEADER_LEN - IPV6_FRAGMENT_HEADER_LEN) >> 3) << 3;
    const frag = this.#frag;
    const fh = this.#v6frag;
    fh.nextHeader = protocol;
    fh.id = this.#ipv6FragId = (this.#ipv6FragId + 1) >>> 0;
    v6.nextHeader = IPV6_FRAGMENT;
    const dataAt = IPV6_HEADER_LEN + IPV6_FRAGMENT_HEADER_LEN;
    for (let off = 0; off < length; off += chunk) {
      const n = Math.min(chunk, length - off);
      v6.payloadLength = IPV6_FRAGMENT_HEADER_LEN + n;
      emitIpv6Header(frag, v6);
      fh.offset = off;
      fh.more = off + n < length;
      emitIpv6FragmentHeader(frag.subarray(IPV6_HEADER_LEN), fh);
      frag.set(out.subarray(IPV6_HEADER_LEN + off, IPV6_HEADER_LEN + off + n), dataAt);
      s.fragmentsSent++;
      this.#emit(frag.subarray(0, dataAt + n));
    }
  }

  #emit(packet: Uint8Array): void {
    this.#stats.packetsOut++;
    this.#stats.bytesOut += packet.length;
    this.#output(packet);
  }
}

/** True for IPv4 224.0.0.0/4 + 240.0.0.0/4 (broadcast included) and IPv6 ff00::/8. */
function isMulticastOrBroadcast(addr: Uint8Array): boolean {
  return addr.length === 4 ? addr[0] >= 224 : addr[0] === 0xff;
}

/** `::` or `::1`, looking at the source field of an IPv6 packet. */
function isIpv6UnspecifiedOrLoopback(packet: Uint8Array): boolean {
  const last = IPV6_FIELD.SRC + 15;
  for (let i = IPV6_FIELD.SRC; i < last; i++) if (packet[i] !== 0) return false;
  return packet[last] <= 1;
}

function isUnicastV4(addr: Uint8Array): boolean {
  return !isIpv4Unspecified(addr) && !isIpv4MulticastOrBroadcast(addr);
}

/** ICMPv4 types that are queries/replies, not errors (RFC 1122 §3.2.2). */
function isIcmpV4Query(type: number): boolean {
  return type === 0 || type === 8 || type === 13 || type === 14 || type === 15 || type === 16 ||
    type === 17 || type === 18;
}

function toAddress(value: string | IpAddress, name: string): IpAddress {
  if (typeof value === "string") {
    const addr = parseAddress(value);
    if (!addr) throw new TypeError(`${name} is not an IP address: ${JSON.stringify(value)}`);
    return addr;
  }
  if (value instanceof Uint8Array && (value.length === 4 || value.length === 16)) return value;
  throw new TypeError(`${name} must be an IP address string or 4/16 bytes`);
}

function checkPort(port: number, name: string, allowZero: boolean): void {
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new RangeError(`${name} must be an integer from ${allowZero ? 0 : 1} to 65535`);
  }
}
