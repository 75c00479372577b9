/**
 * Helpers of the server's unit tests (not published).
 *
 * @module
 */

import { connect as connectTls } from "node:tls";

/** The ClientHello Node's TLS client sends for `serverName` (a real one, captured on loopback). */
export async function realClientHello(serverName: string): Promise<Uint8Array> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const got = (async () => {
    const conn = await listener.accept();
    const buf = new Uint8Array(65536);
    let n = 0;
    // Until the record and the handshake message it announces are all here.
    while (n < 5 || n < 5 + ((buf[3] << 8) | buf[4])) {
      const r = await conn.read(buf.subarray(n));
      if (r === null) break;
      n += r;
    }
    conn.close();
    return buf.slice(0, n);
  })();
  const socket = connectTls({
    host: "127.0.0.1",
    port: listener.addr.port,
    servername: serverName,
  });
  socket.on("error", () => {});
  const hello = await got;
  socket.destroy();
  listener.close();
  return hello;
}

/** The first datagrams Deno's own QUIC client sends for `serverName` (real Initials, on loopback). */
export async function realQuicInitials(serverName: string, count = 3): Promise<Uint8Array[]> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (socket.addr as Deno.NetAddr).port;
  const endpoint = new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 });
  const dial = Promise.resolve(Deno.connectQuic({
    hostname: "127.0.0.1",
    port,
    serverName,
    alpnProtocols: ["h3"],
    endpoint,
    maxIdleTimeout: 1000,
  })).catch(() => undefined);
  const got: Uint8Array[] = [];
  // Nobody answers: the client sends its Initial(s), then retransmits them.
  const deadline = setTimeout(() => socket.close(), 1500);
  try {
    while (got.length < count) got.push((await socket.receive())[0]);
  } catch {
    // closed by the deadline: what came is what there is
  }
  clearTimeout(deadline);
  endpoint.close();
  try {
    socket.close();
  } catch {
    // closed
  }
  await dial;
  return got;
}
