/**
 * Test helpers in the manner of smoltcp's socket tests: build the segment the
 * peer sends and the segment we expect back, at a stated time, so a failure
 * reads as a protocol trace.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { TcpConnectionLike, TcpLayerHost, TcpSynRequest } from "./api.ts";
import {
  emitTcp,
  parseTcp,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  TcpPacket,
  TcpRepr,
} from "../wire/tcp.ts";
import { TcpLayer } from "./layer.ts";
import type { TcpOptions } from "./connection.ts";

/** Our address in tests. */
export const LOCAL = new Uint8Array([10, 0, 0, 1]);
/** The peer's address in tests. */
export const REMOTE = new Uint8Array([10, 0, 0, 2]);
/** Our port. */
export const LPORT = 80;
/** The peer's port. */
export const RPORT = 40000;
/** The peer's initial sequence number. */
export const PEER_ISS = 1000;

/** A segment described by its fields; absent fields are not checked (expect) or default (send). */
export interface Seg {
  /** Flags as letters: S, A, F, R, P (e.g. "SA", "FA"). */
  flags: string;
  /** Sequence number. */
  seq: number;
  /** Acknowledgment number. */
  ack?: number;
  /** Window field. */
  win?: number;
  /** MSS option. */
  mss?: number;
  /** Window scale option. */
  ws?: number;
  /** SACK-permitted option. */
  sackPerm?: boolean;
  /** Timestamps [TSval, TSecr]. */
  ts?: [number, number];
  /** SACK blocks. */
  sack?: [number, number][];
  /** Payload (string as ASCII, or bytes). */
  data?: string | Uint8Array;
}

function flagBits(s: string): number {
  let f = 0;
  for (const c of s) {
    f |= { S: TCP_SYN, A: TCP_ACK, F: TCP_FIN, R: TCP_RST, P: TCP_PSH }[c] ?? 0;
    if (!"SAFRP".includes(c)) throw new TypeError(`Unknown flag ${c}`);
  }
  return f;
}

function flagLetters(f: number): string {
  let s = "";
  if (f & TCP_SYN) s += "S";
  if (f & TCP_FIN) s += "F";
  if (f & TCP_RST) s += "R";
  if (f & TCP_PSH) s += "P";
  if (f & TCP_ACK) s += "A";
  return s;
}

/** One line describing a segment, for traces. */
export function describe(r: TcpRepr): string {
  let s = `[${flagLetters(r.flags)}] seq=${r.seq}`;
  if (r.flags & TCP_ACK) s += ` ack=${r.ack}`;
  s += ` win=${r.window} len=${r.payload.length}`;
  if (r.mss >= 0) s += ` mss=${r.mss}`;
  if (r.windowScale >= 0) s += ` ws=${r.windowScale}`;
  if (r.sackPermitted) s += " sackOK";
  if (r.hasTimestamp) s += ` ts=${r.tsVal}/${r.tsEcr}`;
  if (r.sackCount) {
    const b = [];
    for (let i = 0; i < r.sackCount; i++) {
      b.push(`${r.sackBlocks[2 * i]}-${r.sackBlocks[2 * i + 1]}`);
    }
    s += ` sack=${b.join(",")}`;
  }
  return s;
}

function bytesOf(d: string | Uint8Array | undefined): Uint8Array {
  if (d === undefined) return new Uint8Array(0);
  return typeof d === "string" ? new TextEncoder().encode(d) : d;
}

/** A TCP layer with a recording host and a fake clock. */
export class Harness {
  /** The layer under test. */
  readonly layer: TcpLayer;
  /** Segments we sent, oldest first, not yet checked. */
  readonly out: TcpRepr[] = [];
  /** SYN requests handed to the owner. */
  readonly syns: TcpSynRequest[] = [];
  /** Number of wake() calls. */
  wakes = 0;
  /** The fake clock (ms). */
  now = 0;
  /** What onSyn does: accept (default), reset, drop, or keep pending. */
  onSyn: "accept" | "reset" | "drop" | "keep" = "accept";
  /** Connections accepted by the default onSyn. */
  readonly accepted: TcpConnectionLike[] = [];
  /** A trace of everything in and out. */
  readonly trace: string[] = [];
  #inBatch = false;

  /** Segments the layer built in place in {@linkcode Harness.room}. */
  inPlace = 0;
  /** With `host.inPlace`: the host's segment buffer (refilled with 0xaa before each segment). */
  readonly room: Uint8Array | undefined;

  /**
   * Creates a layer with a fixed secret and `options`; with `host.inPlace`
   * the host offers a segment buffer (`segmentBuffer`) holding stale bytes.
   */
  constructor(options: TcpOptions = {}, host: { inPlace?: boolean } = {}) {
    const room = this.room = host.inPlace ? new Uint8Array(65536) : undefined;
    const layerHost: TcpLayerHost = {
      segmentBuffer: room ? () => room.fill(0xaa) : undefined,
      sendSegment: (src, dst, segment) => {
        if (room && segment.buffer === room.buffer) {
          assert.equal(segment.byteOffset, 0, "a segment built in place starts the buffer");
          this.inPlace++;
        }
        assert.ok(TcpPacket.parse(segment)!.verifyChecksum(src, dst), "bad checksum on output");
        const r = parseTcp(segment)!;
        r.payload = r.payload.slice();
        this.out.push(r);
        this.trace.push(`${this.now} < ${describe(r)}`);
      },
      wake: () => {
        this.wakes++;
      },
      onSyn: (req) => {
        this.syns.push(req);
        if (this.onSyn === "accept") this.accepted.push(req.accept());
        else if (this.onSyn === "reset") req.reset();
        else if (this.onSyn === "drop") req.drop();
      },
    };
    // The packet-level tests script ACK-clocked exchanges: an unpaced
    // loss-based controller unless a test asks for another.
    this.layer = new TcpLayer(layerHost, {
      secret: new Uint8Array(16).fill(7),
      congestionControl: "cubic",
      ...options,
    });
  }

  /**
   * Sends `seg` from the peer to us at time `at` (default: now), from
   * `port`, counted against `source` (see `NetStack.input`).
   */
  send(seg: Seg, at = this.now, port = RPORT, source?: unknown): void {
    this.now = at;
    const r = new TcpRepr();
    r.srcPort = port;
    r.dstPort = LPORT;
    r.seq = seg.seq >>> 0;
    r.ack = (seg.ack ?? 0) >>> 0;
    r.flags = flagBits(seg.flags);
    r.window = seg.win ?? 65535;
    if (seg.mss !== undefined) r.mss = seg.mss;
    if (seg.ws !== undefined) r.windowScale = seg.ws;
    r.sackPermitted = seg.sackPerm ?? false;
    if (seg.ts) {
      r.hasTimestamp = true;
      r.tsVal = seg.ts[0] >>> 0;
      r.tsEcr = seg.ts[1] >>> 0;
    }
    if (seg.sack) {
      r.sackCount = seg.sack.length;
      seg.sack.forEach(([a, b], i) => r.sackBlocks.set([a >>> 0, b >>> 0], 2 * i));
    }
    r.payload = bytesOf(seg.data);
    this.trace.push(`${at} > ${describe(r)}`);
    this.layer.input(REMOTE, LOCAL, emitTcp(r, REMOTE, LOCAL), at, source);
    if (!this.#inBatch) this.layer.endBatch(at);
  }

  /**
   * Runs `fn`, whose `send` calls form one batch of input (as a host that
   * receives datagrams in batches delivers them): the batch ends after it.
   */
  batch(fn: () => void): void {
    this.#inBatch = true;
    try {
      fn();
    } finally {
      this.#inBatch = false;
    }
    this.layer.endBatch(this.now);
  }

  /** Runs `poll` at time `at`. */
  poll(at: number): void {
    this.now = at;
    this.layer.poll(at);
  }

  /** Takes the next segment we sent and checks the given fields. */
  expect(seg: Seg): TcpRepr {
    const got = this.out.shift();
    const ctx = () => `\ntrace:\n  ${this.trace.join("\n  ")}`;
    assert.ok(got, `expected ${JSON.stringify(seg)} but nothing was sent${ctx()}`);
    const msg = (what: string) => `${what}: got ${describe(got)}${ctx()}`;
    assert.equal(flagLetters(got.flags), flagLetters(flagBits(seg.flags)), msg("flags"));
    assert.equal(got.seq, seg.seq >>> 0, msg("seq"));
    if (seg.ack !== undefined) assert.equal(got.ack, seg.ack >>> 0, msg("ack"));
    if (seg.win !== undefined) assert.equal(got.window, seg.win, msg("window"));
    if (seg.mss !== undefined) assert.equal(got.mss, seg.mss, msg("mss"));
    if (seg.ws !== undefined) assert.equal(got.windowScale, seg.ws, msg("wscale"));
    if (seg.sackPerm !== undefined) assert.equal(got.sackPermitted, seg.sackPerm, msg("sackOK"));
    if (seg.ts !== undefined) {
      assert.ok(got.hasTimestamp, msg("timestamp present"));
      if (seg.ts[0] >= 0) assert.equal(got.tsVal, seg.ts[0] >>> 0, msg("TSval"));
      assert.equal(got.tsEcr, seg.ts[1] >>> 0, msg("TSecr"));
    }
    if (seg.sack !== undefined) {
      const blocks: [number, number][] = [];
      for (let i = 0; i < got.sackCount; i++) {
        blocks.push([got.sackBlocks[2 * i], got.sackBlocks[2 * i + 1]]);
      }
      assert.deepEqual(blocks, seg.sack.map(([a, b]) => [a >>> 0, b >>> 0]), msg("SACK"));
    }
    if (seg.data !== undefined) assert.deepEqual(got.payload, bytesOf(seg.data), msg("payload"));
    return got;
  }

  /** Checks that nothing more was sent. */
  expectNothing(): void {
    assert.equal(
      this.out.length,
      0,
      `expected no segment, got ${this.out.map(describe).join("; ")}\ntrace:\n  ${
        this.trace.join("\n  ")
      }`,
    );
  }

  /**
   * Runs a passive open: peer SYN (with `syn` options), our SYN-ACK, peer
   * ACK. Returns the connection and our ISS.
   */
  open(
    syn: Partial<Seg> = {},
    ackTs?: [number, number],
  ): { conn: TcpConnectionLike; iss: number; synAck: TcpRepr } {
    this.send({ flags: "S", seq: PEER_ISS, win: 65535, ...syn });
    const synAck = this.out.shift()!;
    assert.ok(synAck && synAck.flags === (TCP_SYN | TCP_ACK), "no SYN-ACK");
    const iss = synAck.seq;
    const conn = this.accepted[this.accepted.length - 1];
    this.send({ flags: "A", seq: PEER_ISS + 1, ack: iss + 1, win: syn.win ?? 65535, ts: ackTs });
    this.expectNothing();
    return { conn, iss, synAck };
  }
}

/** Reads exactly `n` bytes from `reader` (or fewer if it ends). */
export async function readBytes(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  n: number,
): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const { value, done } = await reader.read();
    if (done) return out.subarray(0, at);
    out.set(value.subarray(0, n - at), at);
    at += value.length;
  }
  return out;
}

/** Lets pending promise callbacks (stream plumbing) run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setTimeout(r, 0));
}

/** ASCII bytes of `s` repeated to `n` bytes. */
export function filler(n: number, seed = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}
