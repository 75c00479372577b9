/**
 * The {@linkcode PeerInfo} of each peer of a running server (internal to
 * `serve()`).
 *
 * @module
 */

import { keyToBase64, type Peer } from "@wgstack/wireguard";
import type { PeerInfo } from "./serve.ts";

/**
 * One {@linkcode PeerInfo} per peer, made when the peer is added: handlers,
 * logs and the packet tap see the same object, which follows the peer's
 * endpoint and name.
 */
export class PeerDirectory {
  #infos = new Map<Peer, NamedPeerInfo>();
  /** Peers removed while one of their connections waited for its accept decision. */
  #removed = new WeakSet<PeerInfo>();

  /** Describes a newly added peer. */
  add(peer: Peer, name?: string): PeerInfo {
    const info = describe(peer, name);
    this.#infos.set(peer, info);
    return info;
  }

  /** The peer's info; a removed peer named by a late event is described afresh. */
  info(peer: Peer): PeerInfo {
    return this.#infos.get(peer) ?? describe(peer);
  }

  /** The name of a peer for logs: its name, else its public key. */
  label(peer: Peer): string {
    const info = this.info(peer);
    return info.name ?? info.publicKey;
  }

  /** Renames a peer (`""` clears the name); handlers holding its info see it. */
  rename(peer: Peer, name: string): void {
    const info = this.#infos.get(peer);
    if (info) info.name = name || undefined;
  }

  /** Forgets a peer; its info is marked removed. */
  remove(peer: Peer): PeerInfo {
    const info = this.info(peer);
    this.#infos.delete(peer);
    this.#removed.add(info);
    return info;
  }

  /** True once the peer of `info` was removed. */
  isRemoved(info: PeerInfo): boolean {
    return this.#removed.has(info);
  }
}

/** A {@linkcode PeerInfo} whose name the directory may change. */
interface NamedPeerInfo extends PeerInfo {
  name?: string;
}

function describe(peer: Peer, name?: string): NamedPeerInfo {
  return {
    publicKey: keyToBase64(peer.publicKey),
    name,
    get endpoint() {
      return peer.endpoint;
    },
  };
}
