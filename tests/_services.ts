/**
 * Small services that tests and benchmarks run inside their namespaces.
 *
 * @module
 */

import { waitFor } from "./netns.ts";

/**
 * Python: listens on `argv[1]`:9000 (or `argv[2]`), accepts every connection
 * and holds it open, silent, until the other side closes; prints `ready`.
 */
export const HOLD_TCP_PY = String.raw`
import selectors, socket, sys
sel = selectors.DefaultSelector()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 9000))
s.listen(4096)
sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is s:
            c, _ = s.accept()
            sel.register(c, selectors.EVENT_READ)
        elif not key.fileobj.recv(4096):
            sel.unregister(key.fileobj)
            key.fileobj.close()
`;

/** Waits until a TCP connection to `hostname:port` succeeds (then closes it). */
export function waitForTcp(what: string, hostname: string, port: number): Promise<boolean> {
  return waitFor(what, async () => {
    try {
      (await Deno.connect({ hostname, port })).close();
      return true;
    } catch {
      return undefined;
    }
  });
}
