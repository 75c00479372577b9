/**
 * The order of work on `serve()`'s latency-critical paths, on loopback with
 * our own client (no root): what the client waits for leaves before work
 * the client does not wait for. Ordering only, no clock.
 */

import assert from "node:assert/strict";
import { openUdpSocket, type ServeOptions, type UdpSocket } from "@wgstack/server";
import type { UpstreamConn } from "../server/forward.ts";
import { startServerWithClient } from "./_client.ts";

const CLIENT4 = "10.7.0.2";

/**
 * A real loopback socket behind a send queue that is flushed some microtask
 * turns later, as the batching FFI adapter does within a receive batch, or
 * at once by `flush()`: `sent()` counts datagrams that left.
 */
async function countingSocket(): Promise<{ socket: UdpSocket; sent: () => number }> {
  const inner = await openUdpSocket({ hostname: "127.0.0.1", port: 0, adapter: "deno" });
  const queue: [Uint8Array, { address: string; port: number }][] = [];
  let sent = 0;
  // The FFI adapter's receive loop waits 16 microtask turns before its flush.
  const settled = async () => {
    for (let i = 0; i < 16; i++) await null;
  };
  const flush = () => {
    for (const [data, to] of queue.splice(0)) {
      sent++;
      inner.send(data, to);
    }
  };
  const socket: UdpSocket = {
    addr: inner.addr,
    listen: (onDatagram) => inner.listen(onDatagram),
    send: (data, to) => {
      if (queue.push([data.slice(), to]) === 1) void settled().then(flush);
    },
    flush,
    stats: () => inner.stats(),
    close: () => inner.close(),
  };
  return { socket, sent: () => sent };
}

/** An upstream that records the first read and then waits until closed. */
function waitingUpstream(onFirstRead: () => void): UpstreamConn {
  let fail!: (e: Error) => void;
  const ended = new Promise<never>((_, reject) => fail = reject);
  ended.catch(() => {});
  let reads = 0;
  return {
    read: () => {
      if (reads++ === 0) onFirstRead();
      return ended;
    },
    write: (b: Uint8Array) => Promise.resolve(b.length),
    closeWrite: () => Promise.resolve(),
    close: () => fail(new Deno.errors.BadResource("closed")),
  };
}

async function withServer(
  options: (sent: () => number) => Partial<ServeOptions>,
  run: (connect: () => Promise<void>) => Promise<void>,
): Promise<void> {
  const { socket, sent } = await countingSocket();
  await using pair = await startServerWithClient({
    serve: { socket, shutdownTimeout: 100, ...options(sent) },
    address4: CLIENT4,
  });
  const { client } = pair;
  await client.handshake();
  await run(async () => {
    const conn = client.connect("198.18.0.77", 80);
    const reader = conn.readable.getReader();
    // Established once the writable is usable; nothing more is needed here.
    const writer = conn.writable.getWriter();
    await writer.ready;
    reader.releaseLock();
    writer.releaseLock();
    conn.reset();
  });
}

Deno.test("serve(): the SYN-ACK leaves before the connection is set up", async (t) => {
  await t.step("forward: the SYN-ACK is flushed before the relay starts", async () => {
    let sentAtDial = -1;
    let sentAtRelay = -1;
    const relayStarted = Promise.withResolvers<void>();
    let sentCount = () => 0;
    await withServer((sent) => {
      sentCount = sent;
      return {
        forward: {
          localAddresses: ["10.7.0.1"],
          connect: () => {
            sentAtDial = sent();
            return Promise.resolve(waitingUpstream(() => {
              sentAtRelay = sentCount();
              relayStarted.resolve();
            }));
          },
        },
      };
    }, async (connect) => {
      await connect();
      await relayStarted.promise;
    });
    assert.ok(sentAtDial >= 0, "the forwarder dialled");
    // Between the dial and the relay's first upstream read: the SYN-ACK.
    assert.equal(sentAtRelay, sentAtDial + 1);
  });

  await t.step("accept policy: the SYN-ACK is flushed before the handler runs", async () => {
    let sentAtDecision = -1;
    let sentAtHandler = -1;
    const handled = Promise.withResolvers<void>();
    await withServer((sent) => ({
      accept: () => {
        sentAtDecision = sent();
        return Promise.resolve(true);
      },
      onTcp: (stream) => {
        sentAtHandler = sent();
        handled.resolve();
        stream.reset();
      },
    }), async (connect) => {
      await connect().catch(() => {});
      await handled.promise;
    });
    assert.ok(sentAtDecision >= 0, "the accept policy ran");
    assert.equal(sentAtHandler, sentAtDecision + 1);
  });

  await t.step("forward, synAck immediate: the SYN-ACK leaves before the dial starts", async () => {
    let sentAtSyn = -1;
    let sentAtDial = -1;
    const dialled = Promise.withResolvers<void>();
    await withServer((sent) => ({
      forward: {
        localAddresses: ["10.7.0.1"],
        synAck: "immediate",
        connect: () => {
          sentAtDial = sent();
          dialled.resolve();
          return Promise.resolve(waitingUpstream(() => {}));
        },
      },
      onPacket: (packet, direction) => {
        // The client's SYN (TCP, flags SYN only) as it is decrypted.
        const ihl = (packet[0] & 15) * 4;
        if (direction === "in" && packet[9] === 6 && (packet[ihl + 13] & 0x12) === 0x02) {
          sentAtSyn = sent();
        }
      },
    }), async (connect) => {
      await connect();
      await dialled.promise;
    });
    assert.ok(sentAtSyn >= 0, "the SYN was seen");
    // Answered within the SYN's receive and flushed: out before the dial's first step.
    assert.equal(sentAtDial, sentAtSyn + 1);
  });
});
