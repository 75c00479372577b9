/**
 * `syncPeers()`: make a running server's peers those of a list, as
 * `wg syncconf` does, without disturbing the peers that did not change:
 * their sessions, connections and flows stay.
 *
 * @module
 */

import { formatCidr, keyFromBase64, keyToBase64, parseCidr } from "@wgstack/wireguard";
import type { ServePeer, ServePeerUpdate, Server } from "./serve.ts";

/** What {@linkcode syncPeers} changed, by base64 public key. */
export interface SyncResult {
  /** Peers added. */
  added: string[];
  /** Peers removed (their connections and flows ended). */
  removed: string[];
  /** Peers whose preshared key, allowed IPs, keepalive or name changed (sessions kept). */
  updated: string[];
}

/**
 * Applies the difference between the server's peers and `peers`: adds the
 * new ones, removes the missing ones, updates changed preshared keys,
 * allowed IPs, persistent keepalives and names. An endpoint is set for new
 * peers and for peers without one (a roamed peer keeps where it is).
 *
 * @throws {RangeError} When `peers` has an invalid key or prefix (checked
 * before anything changes) or two peers with one key.
 *
 * @example
 * ```ts ignore
 * import { syncPeers } from "@wgstack/server";
 * const { added, removed, updated } = syncPeers(server, peersFromConfigFile);
 * ```
 */
export function syncPeers(server: Server, peers: ServePeer[]): SyncResult {
  const desired = new Map<string, ServePeer & { allowed: string[]; psk?: string }>();
  for (const p of peers) {
    const key = base64(p.publicKey);
    if (desired.has(key)) throw new RangeError(`Peer ${key} is listed twice`);
    const allowed = [...new Set(p.allowedIps.map((ip) => formatCidr(parseCidr(ip))))].sort();
    const psk = p.presharedKey === undefined ? undefined : base64(p.presharedKey);
    desired.set(key, { ...p, allowed, psk });
  }
  const result: SyncResult = { added: [], removed: [], updated: [] };
  for (const peer of server.peers()) {
    if (!desired.has(peer.publicKey) && server.removePeer(peer.publicKey)) {
      result.removed.push(peer.publicKey);
    }
  }
  for (const [key, want] of desired) {
    const have = server.peer(key);
    if (!have) {
      server.addPeer({ ...want, publicKey: key });
      result.added.push(key);
      continue;
    }
    const update: ServePeerUpdate = {};
    if (want.psk !== have.presharedKey) update.presharedKey = want.psk ?? null;
    if (want.allowed.join() !== [...have.allowedIps].sort().join()) {
      update.allowedIps = want.allowed;
    }
    const keepalive = want.persistentKeepalive ?? 0;
    if (keepalive !== have.persistentKeepalive) update.persistentKeepalive = keepalive;
    if (want.endpoint && !have.endpoint) update.endpoint = want.endpoint;
    if ((want.name ?? "") !== (have.name ?? "")) update.name = want.name ?? "";
    if (Object.keys(update).length > 0) {
      server.updatePeer(key, update);
      result.updated.push(key);
    }
  }
  return result;
}

/** Base64 text of a key given as text or bytes (checked). */
function base64(key: string | Uint8Array): string {
  return keyToBase64(typeof key === "string" ? keyFromBase64(key) : key);
}
