/**
 * Cryptokey routing (WireGuard whitepaper §2): a table from IP prefixes to
 * peers, with longest-prefix match. It picks the peer to encrypt an outgoing
 * packet to, and checks that a decrypted packet came from a source address
 * its peer is allowed to use.
 *
 * @module
 */

import { formatIp, parseIpPrefix } from "./ip.ts";

/** An IP prefix: 4 or 16 address bytes with the host bits zeroed, and a prefix length. */
export interface Cidr {
  /** 4 (IPv4) or 16 (IPv6) bytes in network order; bits past `prefix` are zero. */
  readonly address: Uint8Array;
  /** Prefix length: 0–32 for IPv4, 0–128 for IPv6. */
  readonly prefix: number;
}

/**
 * Parses `address/prefix` (`10.0.0.0/8`, `fd00::/64`); a bare address is a
 * /32 or /128. Host bits are cleared, as `wg` does: `10.1.2.3/8` is
 * `10.0.0.0/8`.
 *
 * @throws {RangeError} When `text` is not an IPv4 or IPv6 prefix.
 *
 * @example
 * ```ts
 * import { formatCidr, parseCidr } from "./allowed_ips.ts";
 * formatCidr(parseCidr("10.1.2.3/8")); // "10.0.0.0/8"
 * parseCidr("fd00::1").prefix; // 128
 * ```
 */
export function parseCidr(text: string): Cidr {
  const parsed = parseIpPrefix(text);
  if (parsed === null) {
    throw new RangeError(
      `Invalid CIDR ${
        JSON.stringify(text)
      }: expected an IPv4 or IPv6 address with an optional /prefix`,
    );
  }
  return { address: maskedCopy(parsed.address, parsed.prefix), prefix: parsed.prefix };
}

/**
 * Formats a prefix as `address/prefix` (IPv6 in RFC 5952 form).
 *
 * @example
 * ```ts
 * import { formatCidr } from "./allowed_ips.ts";
 * formatCidr({ address: new Uint8Array([10, 0, 0, 0]), prefix: 8 }); // "10.0.0.0/8"
 * ```
 */
export function formatCidr(cidr: Cidr): string {
  return `${formatIp(cidr.address)}/${cidr.prefix}`;
}

/** A copy of `address` with every bit past `prefix` cleared. */
function maskedCopy(address: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(address.length);
  const whole = prefix >> 3;
  out.set(address.subarray(0, whole));
  if ((prefix & 7) !== 0) out[whole] = address[whole] & (0xff00 >> (prefix & 7));
  return out;
}

/** Validates a caller's CIDR and returns its masked address. */
function checkedAddress(cidr: Cidr): Uint8Array {
  const { address, prefix } = cidr;
  if (!(address instanceof Uint8Array) || (address.length !== 4 && address.length !== 16)) {
    throw new TypeError("A CIDR address must be a Uint8Array of 4 or 16 bytes");
  }
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > address.length * 8) {
    throw new RangeError(
      `A CIDR prefix must be an integer in 0..${address.length * 8}, not ${prefix}`,
    );
  }
  return maskedCopy(address, prefix);
}

/** Bit `index` of `bytes`, most significant first. */
function bitAt(bytes: Uint8Array, index: number): 0 | 1 {
  return ((bytes[index >> 3] >> (7 - (index & 7))) & 1) as 0 | 1;
}

/** True when the first `bits` bits of `a` and `b` are equal. */
function samePrefix(a: Uint8Array, b: Uint8Array, bits: number): boolean {
  const whole = bits >> 3;
  for (let i = 0; i < whole; i++) if (a[i] !== b[i]) return false;
  const rest = bits & 7;
  return rest === 0 || ((a[whole] ^ b[whole]) & (0xff00 >> rest) & 0xff) === 0;
}

/** How many leading bits `a` and `b` share, up to `limit`. */
function commonBits(a: Uint8Array, b: Uint8Array, limit: number): number {
  for (let i = 0; i * 8 < limit; i++) {
    const diff = a[i] ^ b[i];
    if (diff !== 0) return Math.min(limit, i * 8 + Math.clz32(diff) - 24);
  }
  return limit;
}

/**
 * A node of the path-compressed binary trie. `key` holds the first `prefix`
 * bits (the rest zero). Children continue with bit `prefix` equal to 0 or 1
 * and have strictly longer prefixes; a node between them may be skipped
 * (path compression), so a walk checks the whole prefix at each node. A node
 * without a value only exists to join two subtrees.
 */
class Node<T> {
  zero: Node<T> | null = null;
  one: Node<T> | null = null;
  value: T | undefined = undefined;
  hasValue = false;
  constructor(public parent: Node<T> | null, readonly key: Uint8Array, readonly prefix: number) {}
}

/**
 * The cryptokey routing table: prefixes map to values (peers), and a lookup
 * returns the value of the longest prefix that contains an address. IPv4 and
 * IPv6 are separate tries.
 *
 * Each prefix belongs to one value: inserting a prefix again moves it to the
 * new value, like `wg set ... allowed-ips` moving a range between peers.
 *
 * Lookups walk a path-compressed binary trie: at most one node per branching
 * point on the way to the answer, comparing bytes, with no allocation.
 *
 * @example
 * ```ts
 * import { AllowedIps, parseCidr } from "./allowed_ips.ts";
 * const table = new AllowedIps<string>();
 * table.insert(parseCidr("0.0.0.0/0"), "gateway");
 * table.insert(parseCidr("10.0.0.0/8"), "office");
 * table.insert(parseCidr("10.0.0.7/32"), "laptop");
 * table.lookup(new Uint8Array([10, 0, 0, 7])); // "laptop"
 * table.lookup(new Uint8Array([10, 9, 9, 9])); // "office"
 * table.lookup(new Uint8Array([8, 8, 8, 8])); // "gateway"
 * ```
 */
export class AllowedIps<T> {
  #root4: Node<T> | null = null;
  #root6: Node<T> | null = null;
  /** The valued nodes of each value, for `removeValue` and `entriesOf`. */
  #byValue = new Map<T, Set<Node<T>>>();
  #size = 0;

  /** How many prefixes the table holds. */
  get size(): number {
    return this.#size;
  }

  /**
   * Routes `cidr` to `value`. Host bits are ignored. When the exact prefix is
   * present already, it now belongs to `value` instead.
   *
   * @throws {TypeError} When the address is not 4 or 16 bytes.
   * @throws {RangeError} When the prefix length is out of range.
   */
  insert(cidr: Cidr, value: T): void {
    const key = checkedAddress(cidr);
    const prefix = cidr.prefix;
    const v4 = key.length === 4;
    let parent: Node<T> | null = null;
    let node = v4 ? this.#root4 : this.#root6;
    while (node !== null) {
      const common = commonBits(node.key, key, Math.min(node.prefix, prefix));
      if (common === node.prefix) {
        if (node.prefix === prefix) {
          this.#assign(node, value);
          return;
        }
        // `node` covers the new prefix: go down.
        parent = node;
        node = bitAt(key, node.prefix) === 0 ? node.zero : node.one;
        continue;
      }
      // `node` does not cover the new prefix: a new node goes in its place,
      // either above it (the new prefix covers it) or as a branch point.
      const leaf = new Node<T>(null, key, prefix);
      this.#assign(leaf, value);
      let top: Node<T>;
      if (common === prefix) {
        top = leaf;
      } else {
        top = new Node<T>(null, maskedCopy(key, common), common);
        this.#attach(top, leaf);
      }
      this.#attach(top, node);
      this.#replaceChild(parent, node, top, v4);
      return;
    }
    const leaf = new Node<T>(parent, key, prefix);
    this.#assign(leaf, value);
    if (parent === null) {
      if (v4) this.#root4 = leaf;
      else this.#root6 = leaf;
    } else {
      this.#attach(parent, leaf);
    }
  }

  /**
   * Removes exactly `cidr` (host bits ignored); less specific prefixes stay.
   * Returns whether it was present.
   *
   * @throws {TypeError} When the address is not 4 or 16 bytes.
   * @throws {RangeError} When the prefix length is out of range.
   */
  remove(cidr: Cidr): boolean {
    const node = this.#find(checkedAddress(cidr), cidr.prefix);
    if (node === null) return false;
    this.#delete(node);
    return true;
  }

  /** Removes every prefix routed to `value` (a peer going away); returns how many. */
  removeValue(value: T): number {
    const nodes = this.#byValue.get(value);
    if (nodes === undefined) return 0;
    const count = nodes.size;
    for (const node of [...nodes]) this.#delete(node);
    return count;
  }

  /**
   * The value of the longest prefix containing `address` (4 or 16 bytes), or
   * `undefined` when none does. IPv4 addresses only match IPv4 prefixes.
   *
   * @throws {TypeError} When `address` is not 4 or 16 bytes.
   */
  lookup(address: Uint8Array): T | undefined {
    let node: Node<T> | null;
    if (address.length === 4) node = this.#root4;
    else if (address.length === 16) node = this.#root6;
    else throw new TypeError(`A lookup address must have 4 or 16 bytes, not ${address.length}`);
    const bits = address.length * 8;
    let found: T | undefined = undefined;
    while (node !== null && samePrefix(node.key, address, node.prefix)) {
      if (node.hasValue) found = node.value;
      if (node.prefix === bits) break;
      node = bitAt(address, node.prefix) === 0 ? node.zero : node.one;
    }
    return found;
  }

  /** The prefixes routed to `value`, IPv4 first, then by address and prefix length. */
  entriesOf(value: T): Cidr[] {
    const nodes = this.#byValue.get(value);
    if (nodes === undefined) return [];
    const out: Cidr[] = [];
    for (const node of nodes) out.push({ address: node.key.slice(), prefix: node.prefix });
    return out.sort(compareCidrs);
  }

  #find(key: Uint8Array, prefix: number): Node<T> | null {
    let node = key.length === 4 ? this.#root4 : this.#root6;
    while (node !== null && node.prefix <= prefix && samePrefix(node.key, key, node.prefix)) {
      if (node.prefix === prefix) return node.hasValue ? node : null;
      node = bitAt(key, node.prefix) === 0 ? node.zero : node.one;
    }
    return null;
  }

  #assign(node: Node<T>, value: T): void {
    if (node.hasValue) {
      if (node.value === value) return;
      this.#unindex(node);
    } else {
      node.hasValue = true;
      this.#size++;
    }
    node.value = value;
    let nodes = this.#byValue.get(value);
    if (nodes === undefined) this.#byValue.set(value, nodes = new Set());
    nodes.add(node);
  }

  #unindex(node: Node<T>): void {
    const nodes = this.#byValue.get(node.value as T)!;
    nodes.delete(node);
    if (nodes.size === 0) this.#byValue.delete(node.value as T);
  }

  /** Hangs `child` under `parent` on the side of its next bit. */
  #attach(parent: Node<T>, child: Node<T>): void {
    child.parent = parent;
    if (bitAt(child.key, parent.prefix) === 0) parent.zero = child;
    else parent.one = child;
  }

  /** Puts `next` where `old` hangs (under `parent`, or as the root). */
  #replaceChild(parent: Node<T> | null, old: Node<T>, next: Node<T> | null, v4: boolean): void {
    if (next !== null) next.parent = parent;
    if (parent === null) {
      if (v4) this.#root4 = next;
      else this.#root6 = next;
    } else if (parent.zero === old) {
      parent.zero = next;
    } else {
      parent.one = next;
    }
  }

  /** Drops the value of `node` and prunes nodes left without a purpose. */
  #delete(node: Node<T>): void {
    this.#unindex(node);
    node.hasValue = false;
    node.value = undefined;
    this.#size--;
    const v4 = node.key.length === 4;
    // A node without a value needs two children to stay; with one it is
    // replaced by that child, with none it goes, and its parent may then be
    // left with a single child itself.
    let current: Node<T> | null = node;
    while (current !== null && !current.hasValue) {
      const parent: Node<T> | null = current.parent;
      if (current.zero !== null && current.one !== null) break;
      this.#replaceChild(parent, current, current.zero ?? current.one, v4);
      current.parent = current.zero = current.one = null;
      current = parent;
    }
  }
}

function compareCidrs(a: Cidr, b: Cidr): number {
  if (a.address.length !== b.address.length) return a.address.length - b.address.length;
  for (let i = 0; i < a.address.length; i++) {
    if (a.address[i] !== b.address[i]) return a.address[i] - b.address[i];
  }
  return a.prefix - b.prefix;
}
