/**
 * DNS messages through the `dns-packet` npm package, typed here for the few
 * fields wgstack reads: `@types/dns-packet` pulls in an unpinned
 * `@types/node` whose globals clash with Deno's own Node types.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import dnsPacket from "dns-packet";

/** A question of a DNS message. */
export interface DnsQuestion {
  /** Record type, e.g. `"A"`. */
  type: string;
  /** The name asked for. */
  name: string;
  /** Class, `"IN"` by default. */
  class?: string;
}

/** A resource record of a DNS message. */
export interface DnsRecord {
  /** Record type, e.g. `"AAAA"`. */
  type: string;
  /** Owner name. */
  name: string;
  /** Seconds. */
  ttl?: number;
  /** Address text for A/AAAA, a name for CNAME. */
  data?: unknown;
}

/** A DNS message as `dns-packet` reads and writes it. */
export interface DnsMessage {
  /** Message id. */
  id?: number;
  /** `"query"` or `"response"` (the QR bit). */
  type?: "query" | "response";
  /** The header flags below QR, the response code in the low 4 bits. */
  flags?: number;
  /** Questions. */
  questions?: DnsQuestion[];
  /** Answer records. */
  answers?: DnsRecord[];
}

const lib = dnsPacket as unknown as {
  decode(bytes: Buffer): DnsMessage;
  encode(message: DnsMessage): Buffer;
};

/** Reads a DNS message; `undefined` when it does not parse. Never throws. */
export function decodeDns(bytes: Uint8Array): DnsMessage | undefined {
  try {
    return lib.decode(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch {
    return undefined;
  }
}

/** Writes a DNS message. */
export function encodeDns(message: DnsMessage): Uint8Array {
  const out = lib.encode(message);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}
