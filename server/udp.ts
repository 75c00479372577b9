/**
 * UDP socket adapters: one interface, with Deno implementations (batching
 * `recvmmsg`/`sendmmsg` through FFI on Linux, see `_udp_ffi.ts`, and
 * `Deno.listenDatagram`) and a Node implementation (`node:dgram`). The server
 * picks the fast one for the runtime it runs on.
 *
 * @module
 */

import type { UdpAdapter, UdpSocket, UdpSocketOptions, UdpSocketStats } from "./socket.ts";
import { unmapAddress } from "./socket.ts";
import { openFfiUdpSocket } from "./_udp_ffi.ts";

export {
  type UdpAdapter,
  type UdpEndpoint,
  type UdpSocket,
  type UdpSocketOptions,
  type UdpSocketStats,
  unmapAddress,
} from "./socket.ts";

/**
 * Opens a UDP socket with the fastest adapter for the current runtime: under
 * Deno on Linux the batching FFI adapter, falling back to
 * `Deno.listenDatagram` (other systems, no FFI permission); `node:dgram`
 * elsewhere. `options.adapter` (or, when it is `"auto"`, the `WGSTACK_UDP`
 * environment variable) forces one; a forced adapter that is unavailable
 * throws.
 *
 * @example
 * ```ts ignore
 * const socket = await openUdpSocket({ port: 51820 });
 * socket.listen((data, from) => console.log(data.length, from));
 * ```
 */
export function openUdpSocket(options: UdpSocketOptions): Promise<UdpSocket> {
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  const hasDeno = typeof deno?.listenDatagram === "function";
  let adapter = options.adapter ?? "auto";
  if (adapter === "auto" && deno !== undefined) {
    try {
      // Query first: a bare env read would prompt on a terminal without --allow-env.
      const query = { name: "env", variable: "WGSTACK_UDP" } as const;
      if (deno.permissions.querySync(query).state === "granted") {
        const chosen = deno.env.get("WGSTACK_UDP");
        if (chosen !== undefined && chosen !== "") adapter = chosen as UdpAdapter;
      }
    } catch {
      // no env permission: auto
    }
  }
  switch (adapter) {
    case "auto":
      if (!hasDeno) return openNodeUdpSocket(options);
      try {
        const socket = openFfiUdpSocket(options);
        if (socket !== null) return Promise.resolve(socket);
        return Promise.resolve(openDenoUdpSocket(options));
      } catch (err) {
        return Promise.reject(err);
      }
    case "ffi": {
      try {
        const socket = openFfiUdpSocket(options);
        if (socket !== null) return Promise.resolve(socket);
      } catch (err) {
        return Promise.reject(err);
      }
      return Promise.reject(
        new Error(
          "The FFI UDP adapter is not available here (needs Deno on Linux x86_64/aarch64, " +
            "--allow-ffi and an IP address hostname)",
        ),
      );
    }
    case "deno":
      if (!hasDeno) {
        return Promise.reject(new Error("The Deno UDP adapter needs Deno.listenDatagram"));
      }
      try {
        return Promise.resolve(openDenoUdpSocket(options));
      } catch (err) {
        return Promise.reject(err);
      }
    case "node":
      return openNodeUdpSocket(options);
    default:
      return Promise.reject(
        new TypeError(`Unknown UDP adapter "${adapter}": use auto, ffi, deno or node`),
      );
  }
}

/**
 * The counters of an adapter whose sends complete asynchronously, and the
 * bound on sends handed to the OS and not yet done.
 */
function sendAccounting(maxPending: number) {
  const counters: UdpSocketStats = { received: 0, sent: 0, sendDropped: 0, sendErrors: 0 };
  let pending = 0;
  return {
    counters,
    /** Counts a send; false (counted as dropped) when too many are pending. */
    admit(): boolean {
      if (pending >= maxPending) {
        counters.sendDropped++;
        return false;
      }
      pending++;
      counters.sent++;
      return true;
    },
    /** A send completed, with an error or not. */
    done(error?: unknown): void {
      pending--;
      if (error) counters.sendErrors++;
    },
  };
}

/** A socket on `Deno.listenDatagram` (needs `"unstable": ["net"]`). */
export function openDenoUdpSocket(options: UdpSocketOptions): UdpSocket {
  const hostname = options.hostname ?? "::";
  const conn = Deno.listenDatagram({ transport: "udp", hostname, port: options.port });
  const local = conn.addr as Deno.NetAddr;
  const sends = sendAccounting(options.maxPendingSends ?? 4096);
  const counters = sends.counters;
  let closed = false;
  const onSent = () => sends.done();
  const onError = (error: unknown) => sends.done(error ?? true);
  return {
    addr: { address: unmapAddress(local.hostname), port: local.port },
    async listen(onDatagram) {
      // One buffer for every datagram: `data` is valid only during the call,
      // and without it Deno allocates a fresh 64 KiB array per datagram.
      const buffer = new Uint8Array(65536);
      while (!closed) {
        let result: [Uint8Array, Deno.Addr];
        try {
          result = await conn.receive(buffer);
        } catch (err) {
          if (closed || err instanceof Deno.errors.BadResource) return;
          // ICMP errors surface as receive errors on some systems: keep going.
          continue;
        }
        const from = result[1] as Deno.NetAddr;
        counters.received++;
        onDatagram(result[0], { address: unmapAddress(from.hostname), port: from.port });
      }
    },
    send(data, to) {
      if (closed || !sends.admit()) return;
      // Deno reads the buffer asynchronously: hand it a copy it owns.
      conn.send(data.slice(), { transport: "udp", hostname: to.address, port: to.port })
        .then(onSent, onError);
    },
    stats: () => ({ ...counters }),
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed
      }
    },
  };
}

/** A socket on `node:dgram` (for Node, Bun and other runtimes). */
export async function openNodeUdpSocket(options: UdpSocketOptions): Promise<UdpSocket> {
  const dgram = await import("node:dgram");
  const hostname = options.hostname ?? "::";
  const type = hostname.includes(":") ? "udp6" : "udp4";
  const socket = dgram.createSocket({ type, ipv6Only: false });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(options.port, hostname, () => {
      socket.off("error", reject);
      resolve();
    });
  });
  const local = socket.address();
  const sends = sendAccounting(options.maxPendingSends ?? 4096);
  const counters = sends.counters;
  let closed = false;
  let finish: () => void = () => {};
  const done = new Promise<void>((resolve) => finish = resolve);
  socket.on("close", () => finish());
  socket.on("error", () => counters.sendErrors++);
  const afterSend = (err: Error | null) => sends.done(err);
  return {
    addr: { address: unmapAddress(local.address), port: local.port },
    listen(onDatagram) {
      socket.on("message", (msg: Uint8Array, rinfo: { address: string; port: number }) => {
        counters.received++;
        onDatagram(msg, { address: unmapAddress(rinfo.address), port: rinfo.port });
      });
      return done;
    },
    send(data, to) {
      if (closed || !sends.admit()) return;
      const address = type === "udp6" && !to.address.includes(":")
        ? `::ffff:${to.address}`
        : to.address;
      socket.send(data.slice(), to.port, address, afterSend);
    },
    stats: () => ({ ...counters }),
    close() {
      if (closed) return;
      closed = true;
      socket.close();
    },
  };
}
