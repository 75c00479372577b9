/**
 * The text of WireGuard's cross-platform userspace API (UAPI), the protocol
 * `wg` speaks to userspace implementations over `/var/run/wireguard/NAME.sock`
 * (https://www.wireguard.com/xplatform/#configuration-protocol). Sans-I/O:
 * {@linkcode UapiSetParser} turns the lines of a `set=1` request into
 * operations in the order they must be applied, {@linkcode formatUapiGet}
 * writes the body of a `get=1` answer. The socket lives in `@wgstack/server`.
 *
 * Errors carry the negative errno value the reply's `errno=` line reports,
 * as wireguard-go writes them.
 *
 * @module
 */

import { type Cidr, formatCidr, parseCidr } from "./allowed_ips.ts";
import { formatIp, parseIp } from "./ip.ts";
import type { Endpoint } from "./endpoint.ts";
import { isZero } from "./_util.ts";

/** `-EIO`: an I/O error (reply of a request that could not be read). */
export const UAPI_EIO: number = -5;
/** `-EINVAL`: an unknown key or a bad value. */
export const UAPI_EINVAL: number = -22;
/** `-EPROTO`: a line that is not `key=value`. */
export const UAPI_EPROTO: number = -71;
/** `-EMSGSIZE`: a line or request over the size limit. */
export const UAPI_EMSGSIZE: number = -90;
/** `-EOPNOTSUPP`: a change this implementation cannot make. */
export const UAPI_EOPNOTSUPP: number = -95;
/** `-EADDRINUSE`: the new listen port could not be bound. */
export const UAPI_EADDRINUSE: number = -98;

/** A failed UAPI request: `errno` (negative) goes into the reply's `errno=` line. */
export class UapiError extends Error {
  /**
   * Creates the error.
   *
   * @param errno Negative errno value, e.g. {@linkcode UAPI_EINVAL}.
   * @param message What was wrong, in sentence case.
   */
  constructor(readonly errno: number, message: string) {
    super(message);
    this.name = "UapiError";
  }
}

/** A change of an allowed IP, in request order. */
export type UapiAllowedIpChange =
  | { readonly kind: "replace" }
  | { readonly kind: "add"; readonly cidr: Cidr }
  | { readonly kind: "remove"; readonly cidr: Cidr };

/** The changes one `public_key=` block of a `set` request makes to that peer. */
export interface UapiPeerChange {
  /** The peer's public key. */
  readonly publicKey: Uint8Array;
  /** `update_only=true`: change the peer only if it exists already. */
  updateOnly: boolean;
  /** `remove=true`: remove the peer (other lines of the block do not matter). */
  remove: boolean;
  /** `preshared_key=`: the new key, `null` for none (all zeros). */
  presharedKey?: Uint8Array | null;
  /** `endpoint=`. */
  endpoint?: Endpoint;
  /** `persistent_keepalive_interval=` in seconds (0: off). */
  persistentKeepalive?: number;
  /** `replace_allowed_ips=true` and `allowed_ip=` lines, in order. */
  readonly allowedIps: UapiAllowedIpChange[];
}

/** One operation of a `set` request, in the order it is to be applied. */
export type UapiSetOperation =
  | { readonly kind: "private_key"; readonly key: Uint8Array | null }
  | { readonly kind: "listen_port"; readonly port: number }
  | { readonly kind: "fwmark"; readonly fwmark: number }
  | { readonly kind: "replace_peers" }
  | { readonly kind: "peer"; readonly peer: UapiPeerChange };

/**
 * Reads the `key=value` lines of a `set=1` request, one at a time, and
 * returns each operation as soon as it is complete: device keys at once, a
 * peer's block when the next `public_key=` line or the end comes. Apply the
 * operations in the order returned (the protocol is not atomic: what came
 * before a bad line stays applied).
 *
 * @example
 * ```ts
 * import { UapiSetParser } from "./uapi.ts";
 * const parser = new UapiSetParser();
 * parser.line("listen_port=51820"); // [{ kind: "listen_port", port: 51820 }]
 * parser.line("public_key=" + "ab".repeat(32)); // []
 * parser.line("allowed_ip=10.0.0.2/32"); // []
 * parser.end()[0].kind; // "peer"
 * ```
 */
export class UapiSetParser {
  #peer: UapiPeerChange | undefined;

  /**
   * Parses one line (without its `\n`).
   *
   * @throws {UapiError} `EPROTO` for a line without `=`, `EINVAL` for an
   * unknown key, a device key after a peer's, or a bad value.
   */
  line(text: string): UapiSetOperation[] {
    const eq = text.indexOf("=");
    if (eq < 0) throw new UapiError(UAPI_EPROTO, `Line ${JSON.stringify(text)} is not key=value`);
    const key = text.slice(0, eq);
    const value = text.slice(eq + 1);
    if (key === "public_key") {
      const done = this.end();
      this.#peer = {
        publicKey: parseKey(value, key),
        updateOnly: false,
        remove: false,
        allowedIps: [],
      };
      return done;
    }
    const peer = this.#peer;
    if (peer === undefined) return [deviceLine(key, value)];
    peerLine(peer, key, value);
    return [];
  }

  /** Ends the request: returns the last peer's block, if any. */
  end(): UapiSetOperation[] {
    const peer = this.#peer;
    this.#peer = undefined;
    return peer === undefined ? [] : [{ kind: "peer", peer }];
  }
}

function deviceLine(key: string, value: string): UapiSetOperation {
  switch (key) {
    case "private_key": {
      const k = parseKey(value, key);
      return { kind: "private_key", key: isZero(k) ? null : k };
    }
    case "listen_port":
      return { kind: "listen_port", port: parseNumber(value, 0xffff, key) };
    case "fwmark":
      return { kind: "fwmark", fwmark: parseNumber(value, 0xffffffff, key) };
    case "replace_peers":
      parseTrue(value, key);
      return { kind: "replace_peers" };
    default:
      throw new UapiError(UAPI_EINVAL, `Invalid device key ${JSON.stringify(key)}`);
  }
}

function peerLine(peer: UapiPeerChange, key: string, value: string): void {
  switch (key) {
    case "update_only":
      parseTrue(value, key);
      peer.updateOnly = true;
      return;
    case "remove":
      parseTrue(value, key);
      peer.remove = true;
      return;
    case "preshared_key": {
      const k = parseKey(value, key);
      peer.presharedKey = isZero(k) ? null : k;
      return;
    }
    case "endpoint":
      peer.endpoint = parseUapiEndpoint(value);
      return;
    case "persistent_keepalive_interval":
      peer.persistentKeepalive = parseNumber(value, 0xffff, key);
      return;
    case "replace_allowed_ips":
      parseTrue(value, key);
      peer.allowedIps.push({ kind: "replace" });
      return;
    case "allowed_ip": {
      const remove = value.startsWith("-");
      let cidr: Cidr;
      try {
        // A prefix length is required here (wg always sends one).
        if (!value.includes("/")) throw new RangeError("no prefix length");
        cidr = parseCidr(remove ? value.slice(1) : value);
      } catch {
        throw new UapiError(UAPI_EINVAL, `Invalid allowed_ip ${JSON.stringify(value)}`);
      }
      peer.allowedIps.push({ kind: remove ? "remove" : "add", cidr });
      return;
    }
    case "protocol_version":
      if (value !== "1") {
        throw new UapiError(UAPI_EINVAL, `Unsupported protocol_version ${JSON.stringify(value)}`);
      }
      return;
    default:
      throw new UapiError(UAPI_EINVAL, `Invalid peer key ${JSON.stringify(key)}`);
  }
}

/**
 * Parses a UAPI endpoint, `IPV4:PORT` or `[IPV6]:PORT` (numeric only).
 *
 * @throws {UapiError} `EINVAL` when it is not one.
 */
export function parseUapiEndpoint(text: string): Endpoint {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  const ip = host === undefined ? null : parseIp(host);
  if (ip === null || (m![1] !== undefined) !== (ip.length === 16) || port > 0xffff) {
    throw new UapiError(UAPI_EINVAL, `Invalid endpoint ${JSON.stringify(text)}`);
  }
  return { address: formatIp(ip), port };
}

/** Formats an endpoint as UAPI writes it: `IPV4:PORT` or `[IPV6]:PORT`. */
export function formatUapiEndpoint(endpoint: Endpoint): string {
  return endpoint.address.includes(":")
    ? `[${endpoint.address}]:${endpoint.port}`
    : `${endpoint.address}:${endpoint.port}`;
}

/** The state a `get=1` answer reports. */
export interface UapiDevice {
  /** Our private key, absent when there is none. */
  privateKey?: Uint8Array;
  /** The bound UDP port (omitted when 0). */
  listenPort: number;
  /** The firewall mark (omitted when 0). */
  fwmark: number;
  /** The peers. */
  peers: UapiPeer[];
}

/** One peer of a `get=1` answer. */
export interface UapiPeer {
  /** The peer's public key. */
  publicKey: Uint8Array;
  /** The preshared key, absent for none. */
  presharedKey?: Uint8Array;
  /** The current endpoint, if known. */
  endpoint?: Endpoint;
  /** Unix time of the last handshake in milliseconds, 0 for none. */
  lastHandshakeMs: number;
  /** Bytes sent to the peer. */
  txBytes: number;
  /** Bytes received from the peer. */
  rxBytes: number;
  /** Persistent keepalive interval in seconds, 0 for off. */
  persistentKeepalive: number;
  /** The allowed IPs: prefixes, or text written as given (e.g. from `formatCidr`). */
  allowedIps: (Cidr | string)[];
}

/**
 * Formats the body of a `get=1` answer (without the final `errno=0` line),
 * in wireguard-go's order.
 *
 * @example
 * ```ts
 * import { formatUapiGet } from "./uapi.ts";
 * formatUapiGet({ listenPort: 51820, fwmark: 0, peers: [] }); // "listen_port=51820\n"
 * ```
 */
export function formatUapiGet(device: UapiDevice): string {
  let out = "";
  if (device.privateKey !== undefined && !isZero(device.privateKey)) {
    out += `private_key=${toHex(device.privateKey)}\n`;
  }
  if (device.listenPort !== 0) out += `listen_port=${device.listenPort}\n`;
  if (device.fwmark !== 0) out += `fwmark=${device.fwmark}\n`;
  for (const peer of device.peers) {
    const ms = Math.max(0, Math.floor(peer.lastHandshakeMs));
    out += `public_key=${toHex(peer.publicKey)}\n` +
      `preshared_key=${peer.presharedKey ? toHex(peer.presharedKey) : ZERO_HEX}\n` +
      "protocol_version=1\n" +
      (peer.endpoint ? `endpoint=${formatUapiEndpoint(peer.endpoint)}\n` : "") +
      `last_handshake_time_sec=${Math.floor(ms / 1000)}\n` +
      `last_handshake_time_nsec=${(ms % 1000) * 1_000_000}\n` +
      `tx_bytes=${peer.txBytes}\nrx_bytes=${peer.rxBytes}\n` +
      `persistent_keepalive_interval=${peer.persistentKeepalive}\n`;
    for (const ip of peer.allowedIps) {
      out += `allowed_ip=${typeof ip === "string" ? ip : formatCidr(ip)}\n`;
    }
  }
  return out;
}

const ZERO_HEX = "0".repeat(64);

function parseKey(value: string, key: string): Uint8Array {
  if (!/^[0-9A-Fa-f]{64}$/.test(value)) {
    throw new UapiError(UAPI_EINVAL, `Invalid ${key}: expected 64 hex characters`);
  }
  const bytes = new Uint8Array(32);
  for (let i = 0; i < 32; i++) bytes[i] = parseInt(value.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

function parseNumber(value: string, max: number, key: string): number {
  const n = /^\d{1,10}$/.test(value) ? Number(value) : NaN;
  if (!(n <= max)) throw new UapiError(UAPI_EINVAL, `Invalid ${key} ${JSON.stringify(value)}`);
  return n;
}

function parseTrue(value: string, key: string): void {
  if (value !== "true") {
    throw new UapiError(UAPI_EINVAL, `Invalid ${key} ${JSON.stringify(value)}: only true`);
  }
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

function toHex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += HEX[bytes[i]];
  return s;
}
