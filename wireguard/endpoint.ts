/**
 * The outer UDP endpoint: where a WireGuard datagram came from or goes to.
 * The one `{ address, port }` type of the packages (the server's
 * `UdpEndpoint` is this type).
 *
 * @module
 */

/** An outer UDP endpoint: IPv4 or IPv6 address text and a port. */
export interface Endpoint {
  /** IPv4 or IPv6 address text. */
  readonly address: string;
  /** UDP port, 0–65535. */
  readonly port: number;
}

/**
 * A copy of `endpoint` after checking it.
 * @throws {TypeError} Without an address.
 * @throws {RangeError} When the port is not an integer from 0 to 65535.
 */
export function checkEndpoint(endpoint: Endpoint): Endpoint {
  if (typeof endpoint.address !== "string" || endpoint.address.length === 0) {
    throw new TypeError("An endpoint needs an address");
  }
  if (!Number.isInteger(endpoint.port) || endpoint.port < 0 || endpoint.port > 65535) {
    throw new RangeError(`An endpoint port is 0 to 65535, not ${endpoint.port}`);
  }
  return { address: endpoint.address, port: endpoint.port };
}

/** Whether `a` is set and names the same address text and port as `b`. */
export function sameEndpoint(a: Endpoint | undefined, b: Endpoint): boolean {
  return a !== undefined && a.port === b.port && a.address === b.address;
}
