/**
 * The connections and flows of a running server (internal to `serve()`):
 * deciding on each new TCP connection (accept option, forwarder or
 * default), handing connections and flows to the handlers or the server's
 * iterator, and ending them per peer or all at once.
 *
 * Each {@linkcode TcpRequest} and {@linkcode UdpFlow} carries its `source`,
 * the WireGuard peer whose packet made it (`serve()` passes the peer to
 * `NetStack.input`), so nothing here depends on which packet is being
 * processed.
 *
 * @module
 */

import {
  formatAddress,
  type TcpConnection,
  type TcpRequest,
  type UdpDatagramIn,
  type UdpFlow,
} from "@wgstack/netstack";
import type { Peer } from "@wgstack/wireguard";
import type { Forwarder, TcpDial } from "./forward.ts";
import type { AcceptDecision, FlowInfo, ServeLogRecord, TcpStream, UdpStream } from "./serve.ts";
import type { UdpEndpoint } from "./udp.ts";
import type { PeerDirectory } from "./_peers.ts";
import type { Poller } from "./_poller.ts";
import { ServerTcpStream, StreamQueue } from "./_streams.ts";

type TcpHandler = (stream: TcpStream) => void | Promise<void>;

/** What {@linkcode Connections} needs from the server. */
export interface ConnectionsOptions {
  /** The peers' infos. */
  peers: PeerDirectory;
  /** Runs the cores (a decision made later must go out). */
  poller: Poller;
  /** Hands what the socket queued to the OS now (a SYN-ACK before what follows it). */
  flush?: () => void;
  /** Log sink. */
  log: (record: ServeLogRecord) => void;
  /** Connections and flows waiting in the iterator before new ones are refused. */
  pendingStreams: number;
  /** Handlers and the accept decision ({@linkcode ServeOptions}); `forward` replaces them. */
  onTcp?: TcpHandler;
  onUdp?: (flow: UdpStream) => void | Promise<void>;
  accept?: (info: FlowInfo) => AcceptDecision | Promise<AcceptDecision>;
  forwarder?: Forwarder;
}

/** Open TCP streams and UDP flows, by peer. */
export class Connections {
  #o: ConnectionsOptions;
  #stopping = false;
  #queue: StreamQueue<TcpStream | UdpStream>;
  #tcp = new Map<TcpStream, TcpConnection>();
  #udp = new Map<UdpStream, { flow: UdpFlow; peer: Peer }>();
  /** Each peer's UDP flows (to count and end them per peer). */
  #udpByPeer = new Map<Peer, Set<UdpStream>>();
  #closed = 0;

  /** Empty tables. */
  constructor(options: ConnectionsOptions) {
    this.#o = options;
    this.#queue = new StreamQueue(options.pendingStreams);
  }

  /** True once {@linkcode Connections.stop} was called. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /** Open TCP connections. */
  get tcpOpen(): number {
    return this.#tcp.size;
  }

  /** Open UDP flows. */
  get udpOpen(): number {
    return this.#udp.size;
  }

  /** TCP connections and UDP flows closed so far. */
  get closed(): number {
    return this.#closed;
  }

  /** The next connection or flow for the server's iterator. */
  next(): Promise<IteratorResult<TcpStream | UdpStream>> {
    return this.#queue.next();
  }

  /** Open TCP connections per peer. */
  tcpCounts(): Map<FlowInfo["peer"], number> {
    const counts = new Map<FlowInfo["peer"], number>();
    for (const stream of this.#tcp.keys()) {
      counts.set(stream.peer, (counts.get(stream.peer) ?? 0) + 1);
    }
    return counts;
  }

  /** Open UDP flows of `peer`. */
  udpCount(peer: Peer): number {
    return this.#udpByPeer.get(peer)?.size ?? 0;
  }

  // ------------------------------------------------------------------ TCP

  /** A SYN from a peer: decide (now or after the accept option or a dial), then deliver. */
  onTcpRequest(request: TcpRequest): void {
    const info = this.#infoOf(
      request.source,
      request.ipVersion,
      { address: request.remoteAddress, port: request.remotePort },
      { address: request.localAddress, port: request.localPort },
    );
    if (this.#stopping || !info) return request.reject("rst");
    const { forwarder, accept } = this.#o;
    if (forwarder) return this.#forward(forwarder, request, info);
    if (!accept) return this.#deliverTcp(info, request.accept(), this.#o.onTcp);
    let decision: AcceptDecision | Promise<AcceptDecision>;
    try {
      decision = accept(info);
    } catch (err) {
      this.#o.log({ level: "error", event: "accept-error", error: String(err) });
      return request.reject("rst");
    }
    Promise.resolve(decision).then((d) => {
      if (this.#gone(info)) d = "rst";
      if (d === true || d === "accept") {
        this.#deliverSoon(info, this.#answerNow(request), this.#o.onTcp);
      } else request.reject(d === false ? "rst" : d);
      this.#o.poller.pollSoon();
    }, (err) => this.#acceptFailed(request, err));
  }

  #forward(forwarder: Forwarder, request: TcpRequest, info: FlowInfo): void {
    let dial: TcpDial | Promise<TcpDial>;
    try {
      dial = forwarder.decide(info);
    } catch (err) {
      return this.#acceptFailed(request, err);
    }
    // Known at once (refused, connected within the dial's call, or accepted
    // before the dial): answered here, inside the stack's input, so the
    // SYN-ACK leaves in this turn.
    if (!(dial instanceof Promise)) return this.#answerDial(forwarder, request, info, dial, true);
    dial.then((d) => {
      this.#answerDial(forwarder, request, info, d, false);
      this.#o.poller.pollSoon();
    }, (err) => this.#acceptFailed(request, err));
  }

  #answerDial(
    forwarder: Forwarder,
    request: TcpRequest,
    info: FlowInfo,
    dial: TcpDial,
    inStack: boolean,
  ): void {
    const upstream = dial.upstream;
    if (dial.decision !== "accept" || !upstream) {
      request.reject(dial.decision === "accept" ? "rst" : dial.decision);
    } else if (this.#gone(info)) {
      upstream.close();
      request.reject("rst");
    } else {
      // The dialled upstream goes straight to this connection's relay, set
      // up after the SYN-ACK has left (the client waits for it). Inside the
      // stack's input the SYN-ACK is sent by accept() itself.
      const conn = this.#answerNow(request, inStack);
      this.#deliverSoon(info, conn, forwarder.relayTo(upstream), () => upstream.close());
    }
  }

  #acceptFailed(request: TcpRequest, err: unknown): void {
    this.#o.log({ level: "error", event: "accept-error", error: String(err) });
    request.reject("rst");
    this.#o.poller.pollSoon();
  }

  /** The server began to stop or the peer was removed while its SYN waited. */
  #gone(info: FlowInfo): boolean {
    return this.#stopping || this.#o.peers.isRemoved(info.peer);
  }

  /**
   * Accepts a SYN and hands the SYN-ACK to the OS at once (the socket's
   * flush), before whatever the caller queues next (the relay or handler
   * setup), so the client's wait does not include it. Inside the stack's
   * input (`inStack`) accept() sends the SYN-ACK itself; later the cores run.
   */
  #answerNow(request: TcpRequest, inStack = false): TcpConnection {
    const conn = request.accept();
    if (!inStack) this.#o.poller.pollNow();
    this.#o.flush?.();
    return conn;
  }

  /**
   * {@linkcode Connections.#deliverTcp} in a microtask (after the socket's
   * flush), unless the server began to stop or the peer was removed
   * meanwhile: then RST (and `drop` frees what the handler would have taken).
   */
  #deliverSoon(
    info: FlowInfo,
    conn: TcpConnection,
    handler: TcpHandler | undefined,
    drop?: () => void,
  ): void {
    queueMicrotask(() => {
      if (this.#gone(info)) {
        drop?.();
        conn.reset();
        this.#o.poller.pollSoon();
        return;
      }
      this.#deliverTcp(info, conn, handler);
    });
  }

  #deliverTcp(info: FlowInfo, conn: TcpConnection, handler: TcpHandler | undefined): void {
    const stream = new ServerTcpStream(info, conn);
    const log = this.#o.log;
    this.#tcp.set(stream, conn);
    log({
      level: "debug",
      event: "tcp-open",
      peer: info.peer.name ?? info.peer.publicKey,
      source: info.source,
      destination: info.destination,
    });
    conn.closed.finally(() => {
      if (this.#tcp.delete(stream)) this.#closed++;
      log({
        level: "debug",
        event: "tcp-close",
        source: info.source,
        destination: info.destination,
        // Retransmissions, timeouts, RTT and cwnd of the connection, for debugging a slow one.
        tcp: conn.stats,
      });
    });
    if (handler) this.#runHandler(() => handler(stream), () => conn.reset());
    else if (!this.#queue.push(stream)) conn.reset();
  }

  // ------------------------------------------------------------------ UDP

  /** Asked by the stack before a datagram opens a flow (with a forwarder: its policy). */
  acceptUdp(d: UdpDatagramIn, ipVersion: 4 | 6): boolean {
    const info = this.#infoOf(
      d.source,
      ipVersion,
      { address: formatAddress(d.remoteAddress), port: d.remotePort },
      { address: formatAddress(d.localAddress), port: d.localPort },
    );
    const forwarder = this.#o.forwarder;
    return !this.#stopping && info !== undefined && (!forwarder || forwarder.acceptUdp(info));
  }

  /**
   * A new UDP flow of a peer: deliver it. (The stack's per-source quotas
   * already made room for it fairly: `limits.netstack.perSource.udpFlows`.)
   */
  onUdpFlow(flow: UdpFlow): void {
    const peer = flow.source as Peer | undefined;
    const info = this.#infoOf(
      peer,
      flow.ipVersion,
      { address: flow.remoteAddress, port: flow.remotePort },
      { address: flow.localAddress, port: flow.localPort },
    );
    if (this.#stopping || !info || !peer) {
      flow.close();
      return;
    }
    const stream: UdpStream = {
      ...info,
      protocol: "udp",
      readable: flow.readable,
      writable: flow.writable,
    };
    this.#udp.set(stream, { flow, peer });
    let mine = this.#udpByPeer.get(peer);
    if (!mine) this.#udpByPeer.set(peer, mine = new Set());
    mine.add(stream);
    flow.closed.finally(() => this.#forgetUdp(stream));
    const forwarder = this.#o.forwarder;
    const handler = forwarder ? (s: UdpStream) => forwarder.onUdp(s) : this.#o.onUdp;
    if (handler) this.#runHandler(() => handler(stream), () => flow.close());
    else if (!this.#queue.push(stream)) flow.close();
  }

  #forgetUdp(stream: UdpStream): void {
    const entry = this.#udp.get(stream);
    if (!entry) return;
    this.#udp.delete(stream);
    this.#closed++;
    const set = this.#udpByPeer.get(entry.peer);
    set?.delete(stream);
    if (set?.size === 0) this.#udpByPeer.delete(entry.peer);
  }

  #closeUdp(stream: UdpStream): void {
    const entry = this.#udp.get(stream);
    if (!entry) return;
    this.#forgetUdp(stream);
    entry.flow.close();
  }

  // ------------------------------------------------------------ lifecycle

  /**
   * Ends a removed peer's connections and flows now: TCP is reset, UDP
   * closed (the RSTs still go out through the tunnel if the caller polls
   * before the peer's keys go away).
   */
  closePeer(peer: Peer, info: FlowInfo["peer"]): { tcpReset: number; udpClosed: number } {
    let tcpReset = 0;
    for (const [stream, conn] of this.#tcp) {
      if (stream.peer !== info) continue;
      this.#tcp.delete(stream);
      this.#closed++;
      conn.reset();
      tcpReset++;
    }
    const flows = [...this.#udpByPeer.get(peer) ?? []];
    for (const stream of flows) this.#closeUdp(stream);
    return { tcpReset, udpClosed: flows.length };
  }

  /**
   * Stops accepting: streams nobody took from the iterator are reset,
   * every UDP flow closes now (UDP has no graceful end; handlers' reads
   * end), and open TCP connections get a FIN after what was written.
   * Resolves when every TCP connection has closed.
   */
  stop(): Promise<void> {
    this.#stopping = true;
    for (const s of this.#queue.close()) {
      if (s.protocol === "tcp") s.reset();
    }
    for (const stream of [...this.#udp.keys()]) this.#closeUdp(stream);
    // FIN after what was already written, whoever holds the writable.
    for (const conn of this.#tcp.values()) conn.close();
    return Promise.all([...this.#tcp.values()].map((c) => c.closed.catch(() => {}))).then(
      () => {},
    );
  }

  /** Resets every TCP connection still open; returns how many. */
  resetAll(): number {
    const n = this.#tcp.size;
    for (const conn of this.#tcp.values()) conn.reset();
    return n;
  }

  // -------------------------------------------------------------- helpers

  #infoOf(
    source: unknown,
    ipVersion: 4 | 6,
    from: UdpEndpoint,
    to: UdpEndpoint,
  ): FlowInfo | undefined {
    if (source === undefined) return undefined;
    return { peer: this.#o.peers.info(source as Peer), ipVersion, source: from, destination: to };
  }

  #runHandler(fn: () => void | Promise<void>, onError: () => void): void {
    const fail = (err: unknown) => {
      // During shutdown, handlers see their streams closed under them.
      const log = this.#o.log;
      if (this.#stopping) return log({ level: "debug", event: "handler-end", error: String(err) });
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
}
