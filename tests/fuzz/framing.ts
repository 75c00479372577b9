/**
 * Fuzz targets for byte streams the server reads from a peer it does not
 * control: an upstream proxy's replies (SOCKS5 greeting, auth and CONNECT
 * replies; HTTP CONNECT responses) through a fake proxy connection, and the
 * UAPI socket's request framing through a real Unix socket of a running
 * server. Both are asynchronous: `feed` queues an input and `tick` runs the
 * queue (a failed check throws there, naming the input).
 *
 * @module
 */

import {
  dialThrough,
  ProxyError,
  type ProxyTarget,
  type UpstreamProxy,
} from "../../server/upstream.ts";
import type { UpstreamConn } from "../../server/forward.ts";
import { serve, type Server } from "../../server/serve.ts";
import { parseUapiEndpoint } from "../../wireguard/uapi.ts";
import { generatePrivateKey, keyToBase64, publicKey } from "../../wireguard/mod.ts";
import { concat, type FuzzTarget, hex, mutateBytes, mutateText, type Rng } from "./harness.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One proxy reply to fuzz: which proxy, what it sends, how it is cut, how it ends. */
interface ProxyInput {
  proxy: UpstreamProxy;
  target: ProxyTarget;
  /** Everything the proxy sends: its replies, then the destination's first bytes. */
  reply: Uint8Array;
  /** Sizes of the reads the proxy's bytes arrive in (cycled). */
  cuts: number[];
  /** After the bytes: `eof` (the proxy closes) or `stall` (silence, then the dial is aborted). */
  end: "eof" | "stall";
  /** Bytes the handshake takes, for unmutated corpus entries (the rest is the destination's). */
  consumed?: number;
}

const SOCKS: UpstreamProxy = {
  kind: "socks5",
  hostname: "proxy.invalid",
  port: 1080,
  label: "socks5://proxy.invalid:1080",
};
const SOCKS_AUTH: UpstreamProxy = {
  ...SOCKS,
  kind: "socks5h",
  username: "user",
  password: "secret",
  label: "socks5h://user@proxy.invalid:1080",
};
const HTTP: UpstreamProxy = {
  kind: "http",
  hostname: "proxy.invalid",
  port: 8080,
  label: "http://proxy.invalid:8080",
};
const HTTP_AUTH: UpstreamProxy = { ...HTTP, username: "user", password: "secret" };
const TARGETS: ProxyTarget[] = [
  { address: "198.18.0.20", port: 443 },
  { address: "2001:db8::20", port: 80, hostname: "example.test" },
];
const PAYLOAD = encoder.encode("SSH-2.0-destination-speaks-first\r\n");

function socksReply(rep: number, bound: Uint8Array): Uint8Array {
  return concat(Uint8Array.of(5, rep, 0), bound, Uint8Array.of(0x04, 0x38));
}

/** Real-shaped replies: every success and failure path of both proxies. */
function proxyCorpus(): ProxyInput[] {
  const v4 = Uint8Array.of(1, 198, 18, 0, 1);
  const v6 = concat(Uint8Array.of(4), new Uint8Array(16).fill(0x20));
  const name = concat(Uint8Array.of(3, 11), encoder.encode("proxy.local"));
  const out: ProxyInput[] = [];
  const add = (proxy: UpstreamProxy, handshake: Uint8Array, ok: boolean) => {
    for (const target of TARGETS) {
      const reply = ok ? concat(handshake, PAYLOAD) : handshake;
      out.push({
        proxy,
        target,
        reply,
        cuts: [reply.length],
        end: "eof",
        consumed: handshake.length,
      });
    }
  };
  for (const bound of [v4, v6, name]) {
    add(SOCKS, concat(Uint8Array.of(5, 0), socksReply(0, bound)), true);
    add(SOCKS_AUTH, concat(Uint8Array.of(5, 2, 1, 0), socksReply(0, bound)), true);
  }
  for (let rep = 1; rep <= 9; rep++) {
    add(SOCKS, concat(Uint8Array.of(5, 0), socksReply(rep, v4)), false);
  }
  add(SOCKS, Uint8Array.of(5, 0xff), false);
  add(SOCKS_AUTH, Uint8Array.of(5, 2, 1, 1), false);
  add(SOCKS, Uint8Array.of(4, 90), false);
  const head = (text: string) => encoder.encode(text);
  add(HTTP, head("HTTP/1.1 200 Connection established\r\n\r\n"), true);
  add(HTTP_AUTH, head("HTTP/1.0 200 OK\r\nVia: 1.1 proxy\r\nX-A: b\r\n\r\n"), true);
  for (
    const status of [
      "407 Proxy Authentication Required",
      "403 Forbidden",
      "502 Bad Gateway",
      "504 Gateway Timeout",
    ]
  ) {
    add(HTTP, head(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\n\r\n`), false);
  }
  add(HTTP, head("SSH-2.0-not-a-proxy\r\n\r\n"), false);
  return out;
}

/**
 * A proxy connection that answers with `input.reply`, in reads of the
 * sizes `input.cuts`; afterwards EOF, or silence until closed. Records
 * whether it was closed and what was written to it.
 */
class FakeProxyConn implements UpstreamConn {
  closed = false;
  written = 0;
  #at = 0;
  #cut = 0;
  #stalled: { resolve: (n: null) => void; reject: (error: Error) => void } | null = null;
  #eof: boolean;
  constructor(readonly input: ProxyInput) {
    this.#eof = input.end === "eof";
  }
  /** Ends a stall with EOF (to read what a handed-back connection still holds). */
  endNow(): void {
    this.#eof = true;
    this.#stalled?.resolve(null);
    this.#stalled = null;
  }
  read(p: Uint8Array): Promise<number | null> {
    if (this.closed) return Promise.reject(new Deno.errors.BadResource("closed"));
    const { reply, cuts } = this.input;
    if (this.#at >= reply.length) {
      if (this.#eof) return Promise.resolve(null);
      return new Promise((resolve, reject) => this.#stalled = { resolve, reject });
    }
    const size = Math.max(1, cuts[this.#cut++ % cuts.length]);
    const n = Math.min(p.length, size, reply.length - this.#at);
    p.set(reply.subarray(this.#at, this.#at + n));
    this.#at += n;
    return Promise.resolve(n);
  }
  write(p: Uint8Array): Promise<number> {
    if (this.closed) return Promise.reject(new Deno.errors.BadResource("closed"));
    this.written += p.length;
    return Promise.resolve(p.length);
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {
    this.closed = true;
    this.#stalled?.reject(new Deno.errors.BadResource("closed"));
    this.#stalled = null;
  }
}

/** Reads `conn` to its end (EOF or an error). */
async function drain(conn: UpstreamConn): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(7);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      break;
    }
    if (n === null) break;
    parts.push(buf.slice(0, n));
  }
  return concat(...parts);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Proxy replies through a fake proxy connection: `dialThrough` resolves, or
 * rejects with a `ProxyError` (or the abort reason) and closes the
 * connection; a connection it hands back yields exactly the bytes after the
 * handshake, in order.
 */
export const proxyRepliesTarget: FuzzTarget<ProxyInput> = {
  name: "proxy-replies",
  covers:
    "dialThrough: SOCKS5 greeting/auth/CONNECT replies, HTTP CONNECT responses (server/upstream.ts)",
  setup: () => {
    const corpus = proxyCorpus();
    let queue: ProxyInput[] = [];
    const reached = { connected: 0, refused: 0, aborted: 0, exact: 0 };
    const one = async (input: ProxyInput) => {
      const conn = new FakeProxyConn(input);
      const abort = new AbortController();
      const dial = dialThrough(input.proxy, input.target, {
        signal: abort.signal,
        connect: () => Promise.resolve(conn),
      });
      if (input.end === "stall") setTimeout(() => abort.abort(new Error("fuzz abort")), 0);
      let got: UpstreamConn;
      try {
        got = await dial;
      } catch (e) {
        if (e instanceof ProxyError) reached.refused++;
        else if (abort.signal.aborted && e === abort.signal.reason) reached.aborted++;
        else throw new Error(`${String(e)} for ${showProxy(input)}`);
        if (!conn.closed) throw new Error(`the proxy connection stayed open: ${showProxy(input)}`);
        return;
      }
      reached.connected++;
      conn.endNow();
      const rest = await drain(got);
      const tail = input.reply.subarray(input.reply.length - rest.length);
      if (!equalBytes(rest, tail)) {
        throw new Error(`bytes after the handshake lost or changed: ${showProxy(input)}`);
      }
      if (input.consumed !== undefined) {
        if (input.reply.length - rest.length !== input.consumed) {
          throw new Error(`the handshake took the wrong bytes: ${showProxy(input)}`);
        }
        reached.exact++;
      }
      got.close();
    };
    const tick = async () => {
      const batch = queue;
      queue = [];
      await Promise.all(batch.map(one));
    };
    return {
      generate(rng: Rng): ProxyInput {
        const base = rng.pick(corpus);
        const mutated = rng.chance(0.1) ? base : {
          ...base,
          reply: mutateBytes(rng, base.reply, rng.pick(corpus).reply),
          consumed: undefined,
        };
        const cuts = rng.chance(0.5)
          ? [mutated.reply.length]
          : Array.from({ length: 1 + rng.int(4) }, () => 1 + rng.int(12));
        return { ...mutated, cuts, end: rng.chance(0.8) ? "eof" : "stall" };
      },
      feed(input) {
        queue.push(input);
      },
      tick,
      async finish() {
        await tick();
        if (reached.connected === 0 || reached.refused === 0) {
          throw new Error(`the inputs missed a path: ${JSON.stringify(reached)}`);
        }
      },
      show: showProxy,
      tables: () => ({ queued: queue.length }),
      bounds: { queued: 256 },
      reached: () => reached,
    };
  },
};

function showProxy(input: ProxyInput): string {
  return `${input.proxy.kind}${input.proxy.username ? "+auth" : ""} ${input.end} cuts ${
    input.cuts.join(",")
  } ${hex(input.reply)}`;
}

// --- UAPI socket framing ---

const HEX_PEER_A = "a".repeat(64);
const HEX_PEER_B = "0123456789abcdef".repeat(4);
const UAPI_REQUESTS = [
  "get=1\n\n",
  `set=1\npublic_key=${HEX_PEER_A}\nallowed_ip=10.9.0.2/32\nallowed_ip=fd00::2/128\npersistent_keepalive_interval=25\n\n`,
  `set=1\nreplace_peers=true\npublic_key=${HEX_PEER_B}\npreshared_key=${"0".repeat(64)}\n` +
  `endpoint=127.0.0.1:9\nreplace_allowed_ips=true\nallowed_ip=10.9.0.3/32\nprotocol_version=1\n\n`,
  `set=1\npublic_key=${HEX_PEER_A}\nupdate_only=true\nallowed_ip=-10.9.0.2/32\n\n`,
  `set=1\npublic_key=${HEX_PEER_B}\nremove=true\n\n`,
  "set=1\nfwmark=0\n\n",
  "get=1\n\nget=1\n\n",
  `set=1\npublic_key=${HEX_PEER_A}\n\nget=1\n\n`,
];
const UAPI_TOKENS = [
  "=",
  "\n",
  "\n\n",
  "get=1",
  "set=1",
  "true",
  "-",
  "/",
  ":",
  "0",
  "a".repeat(5000),
  "\0",
];

/** One connection's worth of bytes to the UAPI socket, and how they are cut into writes. */
interface UapiInput {
  bytes: Uint8Array;
  cuts: number[];
}

/**
 * Keeps the server talking to loopback only: an `endpoint=` line that is not
 * a loopback address becomes `endpoint=127.0.0.1:9` (the uapi-set target
 * fuzzes endpoint parsing itself), and `listen_port=` lines go (rebinding
 * the server's socket per input would take ports others on this machine
 * may use).
 */
function loopbackOnly(text: string): string {
  return text.split("\n").filter((line) => !line.startsWith("listen_port")).map((line) => {
    if (!line.startsWith("endpoint=")) return line;
    try {
      const e = parseUapiEndpoint(line.slice(9));
      if (e.address === "::1" || /^127\./.test(e.address)) return line;
    } catch {
      return line; // refused by the parser: never used
    }
    return "endpoint=127.0.0.1:9";
  }).join("\n");
}

/** A reply is nothing (closed) or blocks of `key=value` lines, each ending `errno=N` and a blank line. */
const UAPI_REPLY = /^(?:(?:[a-z_]+=[^\n]*\n)*errno=-?\d+\n\n)*$/;

/**
 * The UAPI socket's request framing through a real Unix socket of a running
 * server (loopback only): chunked, pipelined, truncated, overlong and
 * malformed requests; every reply is well-formed, the server keeps
 * answering and its peer table stays bounded (reset after each batch).
 */
export const uapiSocketTarget: FuzzTarget<UapiInput> = {
  name: "uapi-socket",
  covers: "listenUapi request framing, limits and replies through a Unix socket (server/uapi.ts)",
  setup: async () => {
    const dir = await Deno.makeTempDir({ prefix: "wgstack-fuzz-uapi-" });
    const server: Server = await serve({
      privateKey: generatePrivateKey(),
      hostname: "127.0.0.1",
      port: 0,
      peers: [{
        publicKey: keyToBase64(publicKey(generatePrivateKey())),
        allowedIps: ["10.9.0.9/32"],
      }],
      uapi: {
        name: "fz0",
        directory: dir,
        maxRequestBytes: 64 * 1024,
        idleTimeoutMs: 5000,
        maxConnections: 64,
      },
    });
    const path = `${dir}/fz0.sock`;
    const corpus = UAPI_REQUESTS.map((r) => encoder.encode(r));
    let queue: UapiInput[] = [];
    const reached = { replies: 0, closedSilently: 0, errnoNonZero: 0, peersMax: 0 };
    const exchange = async (bytes: Uint8Array, cuts: number[]): Promise<string> => {
      const conn = await Deno.connect({ transport: "unix", path });
      try {
        const reading = drain(conn as unknown as UpstreamConn);
        try {
          for (let at = 0, i = 0; at < bytes.length; i++) {
            const n = Math.max(1, cuts[i % cuts.length]);
            const part = bytes.subarray(at, at + n);
            for (let off = 0; off < part.length;) off += await conn.write(part.subarray(off));
            at += n;
          }
          await conn.closeWrite();
        } catch {
          // the server closed first (a limit or an unknown operation): its reply tells
        }
        return decoder.decode(await reading);
      } finally {
        try {
          conn.close();
        } catch {
          // closed
        }
      }
    };
    const one = async (input: UapiInput) => {
      const reply = await exchange(input.bytes, input.cuts);
      if (!UAPI_REPLY.test(reply)) {
        throw new Error(
          `malformed reply ${JSON.stringify(reply.slice(0, 200))} to ${showUapi(input)}`,
        );
      }
      if (reply === "") reached.closedSilently++;
      else reached.replies++;
      if (/errno=-?[1-9]/.test(reply)) reached.errnoNonZero++;
    };
    const tick = async () => {
      const batch = queue;
      queue = [];
      for (let i = 0; i < batch.length; i += 16) {
        await Promise.all(batch.slice(i, i + 16).map(one));
      }
      reached.peersMax = Math.max(reached.peersMax, server.peers().length);
      // The peers the batch added go: the table stays bounded across batches.
      const reset = await exchange(encoder.encode("set=1\nreplace_peers=true\n\n"), [64]);
      if (reset !== "errno=0\n\n") throw new Error(`reset answered ${JSON.stringify(reset)}`);
    };
    return {
      generate(r: Rng): UapiInput {
        const base = r.pick(corpus);
        let bytes: Uint8Array;
        const kind = r.int(10);
        if (kind < 5) {
          bytes = encoder.encode(loopbackOnly(mutateText(r, decoder.decode(base), UAPI_TOKENS)));
        } else if (kind < 8) {
          bytes = encoder.encode(
            loopbackOnly(decoder.decode(mutateBytes(r, base, r.pick(corpus)))),
          );
        } else if (kind < 9) {
          bytes = concat(...Array.from({ length: 2 + r.int(4) }, () => r.pick(corpus)));
        } else {
          // Over the limits: one long line, or a request past maxRequestBytes.
          bytes = r.chance(0.5)
            ? encoder.encode(`set=1\npublic_key=${"a".repeat(5000 + r.int(5000))}\n\n`)
            : encoder.encode(
              "set=1\n" + `allowed_ip=10.9.0.2/32\n`.repeat(3000 + r.int(1000)) + "\n",
            );
        }
        // Small writes for small requests (a long one in 1-byte writes would take most of the run).
        const cuts = bytes.length > 2048 || r.chance(0.5)
          ? [bytes.length]
          : Array.from({ length: 1 + r.int(3) }, () => 1 + r.int(64));
        return { bytes, cuts };
      },
      feed(input) {
        queue.push(input);
      },
      tick,
      async finish() {
        await tick();
        const get = await exchange(encoder.encode("get=1\n\n"), [7]);
        if (!get.includes("private_key=") || !get.endsWith("errno=0\n\n")) {
          throw new Error(`the server stopped answering get: ${JSON.stringify(get)}`);
        }
        await server.shutdown();
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      },
      show: showUapi,
      tables: () => ({ queued: queue.length, peers: server.peers().length }),
      // A batch of 256 inputs, each at most a few peers (a request is capped at 64 KiB).
      bounds: { queued: 256, peers: 256 * 64 },
      reached: () => reached,
    };
  },
};

function showUapi(input: UapiInput): string {
  return `cuts ${input.cuts.join(",")} ${
    JSON.stringify(decoder.decode(input.bytes).slice(0, 400))
  }`;
}
