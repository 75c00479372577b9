/**
 * A test-only WireGuard client made of our own cores: a `Device` (initiator)
 * and a `NetStack`, over a UDP socket on loopback. It lets end-to-end tests of
 * `serve()` run without root, namespaces or wireguard-go.
 *
 * @module
 */

import { Device, generatePrivateKey, type Peer, publicKey } from "@wgstack/wireguard";
import { NetStack, type TcpConnection, type UdpFlow } from "@wgstack/netstack";
import { openDenoUdpSocket, type UdpSocket } from "../server/udp.ts";
import { serve, type ServeOptions, type Server } from "../server/serve.ts";

/** Options of {@linkcode startTestClient}. */
export interface TestClientOptions {
  /** The server's public key. */
  serverPublicKey: Uint8Array;
  /** The server's UDP port. */
  serverPort: number;
  /** The server's address (default 127.0.0.1). */
  serverAddress?: string;
  /** The client's socket (default: a new UDP socket on 127.0.0.1). */
  socket?: UdpSocket;
  /** Our tunnel addresses (used as sources). */
  address4?: string;
  /** Our IPv6 tunnel address. */
  address6?: string;
  /** Our private key (default: a fresh one). */
  privateKey?: Uint8Array;
  /** Called with every decrypted inner packet the client receives. */
  onPacket?: (packet: Uint8Array) => void;
}

/** A running test client. */
export interface TestClient {
  /** Our public key (to register with the server). */
  readonly publicKey: Uint8Array;
  /** The client device. */
  readonly device: Device;
  /** The client netstack. */
  readonly stack: NetStack;
  /** The server as a peer of the client device. */
  readonly peer: Peer;
  /** The local UDP port of the client socket. */
  readonly port: number;
  /** UDP flows the client received (replies to datagrams it sent). */
  readonly flows: UdpFlow[];
  /** Opens a TCP connection through the tunnel. */
  connect(address: string, port: number): TcpConnection;
  /** Sends an inner IP packet as is (e.g. a hand-built ICMP echo). */
  sendPacket(packet: Uint8Array): void;
  /** Sends a UDP datagram through the tunnel. */
  sendUdp(from: { address: string; port: number }, to: {
    address: string;
    port: number;
  }, payload: Uint8Array): void;
  /** Resolves once a handshake completed. */
  handshake(): Promise<void>;
  /** Stops the client. */
  close(): void;
}

/** Starts a client; `registerWithServer` must add its public key on the server first. */
export function startTestClient(options: TestClientOptions): TestClient {
  const address4 = options.address4 ?? "10.7.0.2";
  const address6 = options.address6 ?? "fd00:7::2";
  const privateKey = options.privateKey ?? generatePrivateKey();
  const socket = options.socket ?? openDenoUdpSocket({ hostname: "127.0.0.1", port: 0 });
  const now = () => performance.now();
  const flows: UdpFlow[] = [];
  let closed = false;
  let handshakeDone: () => void = () => {};
  const handshaken = new Promise<void>((resolve) => handshakeDone = resolve);

  const device: Device = new Device({
    privateKey,
    wallClock: () => Date.now(),
    sendDatagram: (datagram, to) => {
      if (!closed) socket.send(datagram, to);
    },
    deliverPacket: (packet) => {
      options.onPacket?.(packet);
      stack.input(packet, now());
    },
    onEvent: (event) => {
      if (event.type === "handshake") handshakeDone();
    },
  });
  const stack: NetStack = new NetStack({
    output: (packet) => {
      device.send(packet, now());
    },
    wake: () => queueMicrotask(tick),
    onUdpFlow: (flow) => flows.push(flow),
  });
  const peer = device.addPeer({
    publicKey: options.serverPublicKey,
    allowedIps: ["0.0.0.0/0", "::/0"],
    endpoint: { address: options.serverAddress ?? "127.0.0.1", port: options.serverPort },
  });

  let timer: ReturnType<typeof setTimeout> | undefined;
  function tick(): void {
    if (closed) return;
    const t = now();
    device.poll(t);
    stack.poll(t);
    if (timer !== undefined) clearTimeout(timer);
    const deadline = Math.min(device.nextDeadline(), stack.nextDeadline());
    timer = deadline === Infinity
      ? undefined
      : setTimeout(tick, Math.max(0, Math.ceil(deadline - now())));
  }
  socket.listen((data, from) => {
    device.receive(data, from, now());
    tick();
  }).catch(() => {});
  device.initiate(peer, now());
  tick();

  return {
    publicKey: publicKey(privateKey),
    device,
    stack,
    peer,
    port: socket.addr.port,
    flows,
    connect(address, port) {
      const v6 = address.includes(":");
      const conn = stack.connect({
        localAddress: v6 ? address6 : address4,
        remoteAddress: address,
        remotePort: port,
      }, now());
      tick();
      return conn;
    },
    sendPacket(packet) {
      device.send(packet, now());
      tick();
    },
    sendUdp(from, to, payload) {
      stack.sendUdp(from, to, payload, now());
      tick();
    },
    handshake: () => handshaken,
    close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      try {
        socket.close();
      } catch {
        // already closed
      }
    },
  };
}

/** Options of {@linkcode startServerWithClient}. */
export interface ServerWithClientOptions {
  /** What `serve()` gets besides its key and the one peer (default: 127.0.0.1, any port). */
  serve?: Partial<ServeOptions>;
  /** The client's tunnel addresses; they are the peer's AllowedIPs (default 10.7.0.2). */
  address4?: string;
  /** The client's IPv6 tunnel address, also allowed when given. */
  address6?: string;
  /** The peer's name on the server. */
  name?: string;
}

/** A `serve()` with one peer, and our test client as that peer (no handshake yet). */
export interface ServerWithClient {
  /** The server. */
  readonly server: Server;
  /** The client. */
  readonly client: TestClient;
  /** Closes the client, then shuts the server down. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts `serve()` on loopback with fresh keys and a test client registered as its peer. */
export async function startServerWithClient(
  options: ServerWithClientOptions = {},
): Promise<ServerWithClient> {
  const serverKey = generatePrivateKey();
  const clientKey = generatePrivateKey();
  const address4 = options.address4 ?? "10.7.0.2";
  const allowedIps = [`${address4}/32`];
  if (options.address6) allowedIps.push(`${options.address6}/128`);
  const server = await serve({
    privateKey: serverKey,
    hostname: "127.0.0.1",
    port: 0,
    peers: [{ publicKey: publicKey(clientKey), allowedIps, name: options.name }],
    ...options.serve,
  });
  const client = startTestClient({
    serverPublicKey: publicKey(serverKey),
    serverPort: server.addr.port,
    privateKey: clientKey,
    address4,
    address6: options.address6,
  });
  return {
    server,
    client,
    async [Symbol.asyncDispose]() {
      client.close();
      await server.shutdown();
    },
  };
}
