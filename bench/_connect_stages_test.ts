import assert from "node:assert/strict";
import { splitStages } from "./_connect_stages.ts";

Deno.test("connect stages from a trace and three captures", async (t) => {
  // Wall clock in seconds; the client's veth address is 10.0.0.2.
  const base = 1_000;
  const us = (x: number) => String(base + x / 1e6);
  const C = "10.0.0.2";
  const S = "10.0.0.1";
  // Connect 1 starts at 0 µs, port 40001: SYN in the tunnel at 20, its
  // datagram at 40 (client veth) and 41 (server veth), the answer leaves the
  // server at 141 and reaches the client at 142, SYN-ACK in the tunnel at
  // 200, connect() returned at 230.
  // Connect 2 starts at 1000 µs, port 40002; a datagram answering the
  // previous connection's FIN leaves the server at 1050 (before its
  // SYN-ACK, which leaves at 1150) and must not count as the answer.
  const tunnel = [
    [us(20), "40001", "7000", "0x0002"],
    [us(200), "7000", "40001", "0x0012"],
    [us(1020), "40002", "7000", "0x0002"],
    [us(1900), "7000", "40002", "0x0012"],
  ];
  const clientLink = [
    [us(40), C],
    [us(142), S],
    [us(1030), C],
    [us(1051), S],
    [us(1151), S],
  ];
  const serverLink = [
    [us(41), C],
    [us(141), S],
    [us(1031), C],
    [us(1050), S],
    [us(1150), S],
  ];
  const wall = (x: number) => String(Math.round((base + x / 1e6) * 1e9));
  const trace = [
    `1 ${230 * 1000} ${400 * 1000} ${wall(0)}`,
    `2 ${1000 * 1000} ${1200 * 1000} ${wall(1000)}`,
    // A connect with no packets captured (dropped by dumpcap) is left out.
    `3 ${100 * 1000} ${200 * 1000} ${wall(5000)}`,
  ].join("\n");
  const report = splitStages(trace, tunnel, clientLink, serverLink);

  await t.step("each connect is matched to its own packets", () => {
    assert.equal(report.connects, 3);
    assert.equal(report.matched, 2);
  });

  await t.step("stages of the fast connect", () => {
    const fast = splitStages(trace.split("\n")[0], tunnel, clientLink, serverLink).median;
    assert.equal(Math.round(fast.clientOut), 20);
    assert.equal(Math.round(fast.wgClientSend), 20);
    assert.equal(Math.round(fast.server), 100);
    assert.equal(Math.round(fast.wgClientReceive), 58);
    assert.equal(Math.round(fast.clientIn), 30);
    assert.equal(Math.round(fast.total), 230);
  });

  await t.step("the answer to the FIN is not the SYN-ACK; the slow stage is named", () => {
    const slow = splitStages(trace.split("\n")[1], tunnel, clientLink, serverLink);
    assert.equal(Math.round(slow.median.server), 1150 - 1031);
    assert.equal(Math.round(slow.median.wgClientReceive), 1900 - 1151);
    assert.equal(slow.slowestBy.wgClientReceive, 1);
  });
});
