/**
 * The dashboard's client operations on the server config file: add a
 * client (keys, addresses, written to the file, applied live), remove,
 * disable or enable one, and read its client config. One change at a time.
 *
 * @module
 */

import type { Server } from "@wgstack/server";
import { validatePeerName } from "../args.ts";
import { servePeer } from "../_control.ts";
import {
  addPeer,
  clientFilePath,
  type GenerateOptions,
  loadServerConfig,
  removePeer,
  setPeerDisabled,
  type SetupPeer,
  withEndpoint,
} from "../setup.ts";

/** There is no client of that name in the config. */
export class ClientNotFound extends Error {
  /** Names the client. */
  constructor(name: string) {
    super(`No client named "${name}"`);
    this.name = "ClientNotFound";
  }
}

/** A peer of the config file as the dashboard lists it. */
export interface WebClient {
  /** The `# Name =` of its section, if any. */
  name?: string;
  /** Public key, base64. */
  publicKey: string;
  /** AllowedIPs. */
  allowedIps: string[];
  /** `# Disabled = true`: not loaded. */
  disabled: boolean;
  /** A client file exists beside the config (QR code and download available). */
  hasConfig: boolean;
}

/** Options of {@linkcode WebClients}. */
export interface WebClientsOptions {
  /** Path of the server config file. */
  config: string;
  /** How new client files name the endpoint (as `add-peer` does). */
  generate: GenerateOptions;
  /** `--endpoint` given at start: client configs are shown with it. */
  endpoint?: string;
}

/** Client operations: file first, then the running server. */
export class WebClients {
  #server: Server;
  #options: WebClientsOptions;
  #queue: Promise<unknown> = Promise.resolve();
  /** The last list, kept while the config file's mtime stays and for at most 10 s. */
  #cache?: { mtime: number; at: number; list: Promise<WebClient[]> };

  /** Operates on `options.config` and `server`. */
  constructor(server: Server, options: WebClientsOptions) {
    this.#server = server;
    this.#options = options;
  }

  /** Runs `fn` after every change queued before it. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    this.#cache = undefined;
    const next = this.#queue.then(fn, fn).finally(() => this.#cache = undefined);
    this.#queue = next.catch(() => {});
    return next;
  }

  /** The peers of the config file (read again when it changed, or after 10 s). */
  async list(): Promise<WebClient[]> {
    const mtime = (await Deno.stat(this.#options.config)).mtime?.getTime() ?? 0;
    const now = performance.now();
    const cached = this.#cache;
    if (cached && cached.mtime === mtime && now - cached.at < 10_000) return await cached.list;
    const list = this.#read();
    this.#cache = { mtime, at: now, list };
    list.catch(() => this.#cache = undefined);
    return await list;
  }

  async #read(): Promise<WebClient[]> {
    const setup = await loadServerConfig(this.#options.config);
    return await Promise.all(setup.peers.map(async (p) => ({
      ...(p.name !== undefined ? { name: p.name } : {}),
      publicKey: p.publicKey,
      allowedIps: p.allowedIps,
      disabled: p.disabled === true,
      hasConfig: p.name !== undefined &&
        await Deno.lstat(clientFilePath(setup.path, p.name)).then(() => true, () => false),
    })));
  }

  /**
   * Adds a client: new keys and the next free addresses, its `[Peer]`
   * appended to the config, its client file written beside it, and the peer
   * added to the running server.
   *
   * @throws {UsageError} For a bad or taken name.
   */
  add(name: string): Promise<WebClient> {
    validatePeerName(name);
    return this.#serial(async () => {
      await addPeer(this.#options.config, name, this.#options.generate);
      const peer = await this.#peer(name);
      if (!this.#server.peer(peer.publicKey)) this.#server.addPeer(servePeer(peer));
      return {
        name,
        publicKey: peer.publicKey,
        allowedIps: peer.allowedIps,
        disabled: false,
        hasConfig: true,
      };
    });
  }

  /**
   * Removes a client from the config (and its client file) and from the
   * running server (its connections are reset).
   *
   * @throws {ClientNotFound} When there is no such client.
   */
  remove(name: string): Promise<void> {
    validatePeerName(name);
    return this.#serial(async () => {
      await this.#peer(name);
      const peer = await removePeer(this.#options.config, name);
      this.#server.removePeer(peer.publicKey);
    });
  }

  /**
   * Disables a client (kept in the config with `# Disabled = true`, removed
   * from the running server) or enables it again.
   *
   * @throws {ClientNotFound} When there is no such client.
   */
  setDisabled(name: string, disabled: boolean): Promise<void> {
    validatePeerName(name);
    return this.#serial(async () => {
      await this.#peer(name);
      const peer = await setPeerDisabled(this.#options.config, name, disabled);
      if (disabled) this.#server.removePeer(peer.publicKey);
      else if (!this.#server.peer(peer.publicKey)) this.#server.addPeer(servePeer(peer));
    });
  }

  /**
   * The client config of `name` (with `--endpoint` applied), or `undefined`
   * when it has no client file.
   *
   * @throws {UsageError} For a bad name.
   */
  async config(name: string): Promise<string | undefined> {
    validatePeerName(name);
    const path = clientFilePath(this.#options.config, name);
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch {
      return undefined;
    }
    return this.#options.endpoint ? withEndpoint(text, this.#options.endpoint) : text;
  }

  async #peer(name: string): Promise<SetupPeer> {
    const setup = await loadServerConfig(this.#options.config);
    const peer = setup.peers.find((p) => p.name === name);
    if (!peer) throw new ClientNotFound(name);
    return peer;
  }
}
