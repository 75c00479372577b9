/**
 * Helpers of the server's unit tests (not published).
 *
 * @module
 */

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
