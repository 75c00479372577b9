/**
 * The hostname of a QUIC connection: the `server_name` of the TLS
 * ClientHello carried in the client's Initial packets (RFC 9000 §17.2.2),
 * whose keys anyone can derive from the Destination Connection ID of the
 * client's first Initial (RFC 9001 §5.2; QUIC v2, RFC 9369 §3.3.1, too).
 *
 * The ClientHello may span several Initial packets and datagrams, its CRYPTO
 * frames in any order (browsers scatter them on purpose): fragments are
 * collected, bounded by `maxBytes`, until the ClientHello is whole. Only a
 * flow's first few datagrams are examined and nothing is held: the
 * datagrams go on as they are. Hostile input never throws.
 *
 * @module
 */

import { createCipheriv, createDecipheriv, createHmac } from "node:crypto";
import { clientHelloName, SNIFF_MAX_BYTES, type SniffState } from "./sniff.ts";

interface Version {
  salt: Uint8Array;
  initialType: number;
  prefix: string;
}

const hex = (h: string) => Uint8Array.from(h.match(/../g)!.map((b) => parseInt(b, 16)));

/** Initial salts and labels by version. */
const VERSIONS = new Map<number, Version>([
  // RFC 9001 §5.2
  [0x00000001, {
    salt: hex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    initialType: 0,
    prefix: "quic",
  }],
  // RFC 9369 §3.3.1, §3.3.2
  [0x6b3343cf, {
    salt: hex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
    initialType: 1,
    prefix: "quicv2",
  }],
]);

/** The client's Initial keys (RFC 9001 §5.2). */
export interface InitialKeys {
  /** AEAD_AES_128_GCM key. */
  key: Uint8Array;
  /** IV. */
  iv: Uint8Array;
  /** Header protection key (AES-128). */
  hp: Uint8Array;
}

function hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("sha256", key).update(data).digest());
}

/** HKDF-Expand-Label (RFC 8446 §7.1) with an empty context, at most 32 bytes. */
function expandLabel(secret: Uint8Array, label: string, length: number): Uint8Array {
  const l = new TextEncoder().encode("tls13 " + label);
  const info = Uint8Array.of(length >> 8, length & 255, l.length, ...l, 0, 1);
  return hmac(secret, info).subarray(0, length);
}

/** The client's Initial keys for a Destination Connection ID (`version` 1 or 2). */
export function clientInitialKeys(dcid: Uint8Array, version = 1): InitialKeys {
  const v = VERSIONS.get(version === 2 ? 0x6b3343cf : version);
  if (!v) throw new RangeError(`Unknown QUIC version ${version}`);
  const initial = hmac(v.salt, dcid); // HKDF-Extract
  const client = expandLabel(initial, "client in", 32);
  return {
    key: expandLabel(client, `${v.prefix} key`, 16),
    iv: expandLabel(client, `${v.prefix} iv`, 12),
    hp: expandLabel(client, `${v.prefix} hp`, 16),
  };
}

/** A QUIC variable-length integer at `at` (RFC 9000 §16): [value, next offset], or null. */
function varint(b: Uint8Array, at: number): [number, number] | null {
  if (at < 0 || at >= b.length) return null;
  const len = 1 << (b[at] >> 6);
  if (at + len > b.length) return null;
  let v = b[at] & 0x3f;
  for (let i = 1; i < len; i++) v = v * 256 + b[at + i];
  return [v, at + len];
}

/** The offset after `n` varints from `at`, or -1 when they do not fit. */
function skip(b: Uint8Array, at: number, n: number): number {
  for (let i = 0; i < n && at >= 0; i++) at = varint(b, at)?.[1] ?? -1;
  return at;
}

/** Options of {@linkcode QuicSniffer}. */
export interface QuicSnifferOptions {
  /** Most ClientHello bytes collected. Default {@linkcode SNIFF_MAX_BYTES}. */
  maxBytes?: number;
  /** Datagrams examined before giving up. Default 8. */
  maxDatagrams?: number;
}

/**
 * Reads the hostname from the first datagrams a client sends on one UDP
 * flow; feed each with {@linkcode QuicSniffer.push} until it is done.
 *
 * @example
 * ```ts ignore
 * const sniffer = new QuicSniffer();
 * const state = sniffer.push(firstDatagram); // { done: true, hostname: "example.com", source: "sni" }
 * ```
 */
export class QuicSniffer {
  #maxBytes: number;
  #left: number;
  #keys?: InitialKeys;
  #version = 0;
  #dcid?: Uint8Array;
  #fragments: [number, Uint8Array][] = [];
  #held = 0;
  #done = false;

  /** Creates a sniffer for one flow. */
  constructor(options: QuicSnifferOptions = {}) {
    this.#maxBytes = options.maxBytes ?? SNIFF_MAX_BYTES;
    this.#left = options.maxDatagrams ?? 8;
  }

  /** Examines one client datagram. */
  push(datagram: Uint8Array): SniffState {
    if (this.#done) return { done: true };
    try {
      const state = this.#push(datagram);
      if (state.done || --this.#left <= 0) return this.#finish(state);
      return state;
    } catch {
      return this.#finish({ done: true });
    }
  }

  #finish(state: SniffState): SniffState {
    this.#done = true;
    this.#fragments = [];
    return state.done ? state : { done: true };
  }

  #push(d: Uint8Array): SniffState {
    let at = 0;
    let sawInitial = false;
    // Coalesced packets (RFC 9000 §12.2): long headers one after another.
    while (at < d.length && (d[at] & 0x80) !== 0) {
      const next = this.#packet(d, at);
      if (next === null) break;
      if (next.initial) sawInitial = true;
      at = next.end;
    }
    if (!sawInitial && this.#keys === undefined) return { done: true }; // not QUIC Initial
    return this.#clientHello();
  }

  /** One long-header packet at `start`: decrypts it when it is an Initial. */
  #packet(d: Uint8Array, start: number): { end: number; initial: boolean } | null {
    if (start + 7 > d.length || (d[start] & 0x40) === 0) return null;
    const version =
      ((d[start + 1] << 24) | (d[start + 2] << 16) | (d[start + 3] << 8) | d[start + 4]) >>> 0;
    const v = VERSIONS.get(version);
    if (!v) return null;
    let at = start + 5;
    const dcidLen = d[at++];
    if (dcidLen > 20 || at + dcidLen >= d.length) return null;
    const dcid = d.subarray(at, at + dcidLen);
    at += dcidLen;
    const scidLen = d[at++];
    if (scidLen > 20 || at + scidLen > d.length) return null;
    at += scidLen;
    const isInitial = ((d[start] >> 4) & 3) === v.initialType;
    if (isInitial) {
      const token = varint(d, at);
      if (!token) return null;
      at = token[1] + token[0];
    }
    const length = varint(d, at);
    if (!length) return null;
    const pnOffset = length[1];
    const end = pnOffset + length[0];
    if (end > d.length || length[0] < 20) return null;
    if (!isInitial) return { end, initial: false };
    if (this.#keys === undefined) {
      this.#keys = clientInitialKeys(dcid, version);
      this.#version = version;
      this.#dcid = dcid.slice();
    } else if (version !== this.#version) {
      return { end, initial: false };
    }
    this.#decrypt(d.subarray(start, end), pnOffset - start);
    return { end, initial: true };
  }

  /** Removes header protection, opens the payload, collects its CRYPTO frames. */
  #decrypt(packet: Uint8Array, pnOffset: number): void {
    const keys = this.#keys!;
    const sample = packet.subarray(pnOffset + 4, pnOffset + 20);
    if (sample.length < 16) return;
    const ecb = createCipheriv("aes-128-ecb", keys.hp, null).setAutoPadding(false);
    const mask = new Uint8Array(ecb.update(sample));
    const header = packet.slice(0, pnOffset + 4);
    header[0] ^= mask[0] & 0x0f;
    const pnLen = (header[0] & 3) + 1;
    let pn = 0;
    for (let i = 0; i < pnLen; i++) {
      header[pnOffset + i] ^= mask[1 + i];
      pn = pn * 256 + header[pnOffset + i];
    }
    const aad = header.subarray(0, pnOffset + pnLen);
    const body = packet.subarray(pnOffset + pnLen);
    if (body.length < 16) return;
    const nonce = keys.iv.slice();
    for (let i = 0; i < 4; i++) nonce[11 - i] ^= (pn >>> (8 * i)) & 0xff;
    const gcm = createDecipheriv("aes-128-gcm", keys.key, nonce);
    gcm.setAAD(aad);
    gcm.setAuthTag(body.subarray(body.length - 16));
    const plain = new Uint8Array(gcm.update(body.subarray(0, body.length - 16)));
    gcm.final(); // throws when the tag does not match: not an Initial we can read
    this.#frames(plain);
  }

  /** CRYPTO frames of an Initial payload (RFC 9000 §19.6); other frames skipped. */
  #frames(p: Uint8Array): void {
    let at = 0;
    while (at < p.length) {
      const type = p[at++];
      if (type === 0x00 || type === 0x01) continue; // PADDING, PING
      if (type === 0x02 || type === 0x03) { // ACK: largest, delay, range count, first range
        const count = varint(p, skip(p, at, 2));
        const next = count && count[0] <= 256
          ? skip(p, count[1], 1 + 2 * count[0] + (type === 0x03 ? 3 : 0))
          : -1;
        if (next < 0) return;
        at = next;
        continue;
      }
      if (type !== 0x06) return; // CONNECTION_CLOSE or not allowed in an Initial
      const offset = varint(p, at);
      const len = offset && varint(p, offset[1]);
      if (!offset || !len || len[1] + len[0] > p.length) return;
      const data = p.subarray(len[1], len[1] + len[0]);
      at = len[1] + len[0];
      if (offset[0] + data.length > this.#maxBytes || this.#held + data.length > this.#maxBytes) {
        this.#held = this.#maxBytes + 1; // over budget: give up
        return;
      }
      this.#fragments.push([offset[0], data.slice()]);
      this.#held += data.length;
    }
  }

  /** The ClientHello once its bytes from offset 0 are all here. */
  #clientHello(): SniffState {
    if (this.#held > this.#maxBytes) return { done: true };
    const buf = new Uint8Array(this.#maxBytes);
    let have = 0;
    // Contiguous bytes from 0, whatever order the fragments came in.
    for (let grew = true; grew;) {
      grew = false;
      for (const [offset, data] of this.#fragments) {
        if (offset <= have && offset + data.length > have) {
          buf.set(data.subarray(have - offset), have);
          have = offset + data.length;
          grew = true;
        }
      }
    }
    if (have < 4) return { done: false };
    if (buf[0] !== 1) return { done: true }; // not a ClientHello
    const want = 4 + ((buf[1] << 16) | (buf[2] << 8) | buf[3]);
    if (want > this.#maxBytes) return { done: true };
    if (have < want) return { done: false };
    const named = clientHelloName(buf.subarray(4, want));
    return named.done && named.hostname ? { ...named, source: "quic" } : named;
  }
}
