/**
 * The `--web` dashboard in a real browser (headless Chromium driven by
 * puppeteer-core) against the `wgstack` command with a real wireguard-go
 * client in network namespaces:
 *
 * ```
 *  client ns (wireguard-go from wg-client-1.conf)   client2 ns (wireguard-go, added on the page)
 *            │ veth                                        │ veth
 *  server ns (wgstack forward mode --web 127.0.0.1:PORT; Chromium runs here too)
 *            │ veth
 *  services ns (HTTP :8080, keep-alive)
 * ```
 *
 * Without the token the page is refused; with it the page loads; a
 * connection the client opens shows with its host name and bytes within
 * 2 s; a host name holding HTML shows as text; the QR code on the page
 * decodes (jsQR) to a config `wg setconf` accepts after `wg-quick strip`;
 * "Add client" makes a peer a second wireguard-go client connects with.
 * Screenshots go to $WGSTACK_SCREENSHOTS (default /tmp/wgstack-web-shots).
 *
 * Skips with a printed reason when not root or tools are missing; fails
 * under `CI=true`.
 */

import assert from "node:assert/strict";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import jsQR from "jsqr";
import { missingAny, requirement } from "./_skip.ts";
import {
  Background,
  canRunNetns,
  createVeth,
  missingOnPath,
  Netns,
  run,
  waitFor,
  WireGuardGo,
} from "./netns.ts";

const capability = await canRunNetns();
const need = requirement(
  "web dashboard in Chromium",
  missingAny(
    capability.ok ? undefined : capability.reason,
    missingOnPath("chromium", "wireguard-go", "wg", "wg-quick", "python3", "curl"),
  ),
);

// The functions handed to page.evaluate() run in Chromium: its globals, untyped here (a
// `lib="dom"` reference would change the types of the whole program under `deno check .`).
// deno-lint-ignore no-explicit-any
declare const document: any;
// deno-lint-ignore no-explicit-any
type HTMLImageElement = any;

const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;
const SHOTS = Deno.env.get("WGSTACK_SCREENSHOTS") ?? "/tmp/wgstack-web-shots";
const TOKEN = "d14-test-token-" + crypto.randomUUID().replaceAll("-", "");
const WEB_PORT = 18000 + (Deno.pid % 1000);
const HTML_HOST = '<img src=x onerror="window.__xss=1">.evil';

/** An HTTP/1.1 keep-alive service answering a small body to every GET. */
const SERVICE_PY = String.raw`
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        body = b"x" * 5000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H)
s.daemon_threads = True
print("ready", flush=True)
s.serve_forever()
`;

/** Opens a connection with a Host header, reads the answer, says "got", holds it open. */
const HOLD_PY = String.raw`
import socket, sys, time
host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=10)
s.sendall(("GET / HTTP/1.1\r\nHost: " + name + "\r\n\r\n").encode("latin-1"))
data = b""
while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 5000:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print("got", len(data), flush=True)
time.sleep(float(sys.argv[4]))
`;

/** wg-quick's own `strip`, on a file named like an interface. */
async function wgQuickStrip(dir: string, text: string): Promise<string> {
  const path = `${dir}/wgq0.conf`;
  await Deno.writeTextFile(path, text, { mode: 0o600 });
  const out = (await run(["wg-quick", "strip", path])).stdout;
  await Deno.remove(path);
  return out;
}

function addressesOf(text: string): string[] {
  const line = /^Address\s*=\s*(.*)$/m.exec(text)?.[1] ?? "";
  return line.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/** The QR code in the page's dialog, drawn at 10 px per module and decoded with jsQR. */
async function decodeDialogQr(page: Page): Promise<string> {
  await page.waitForFunction(() => {
    const img = document.getElementById("qr-img") as HTMLImageElement;
    return img.complete && img.naturalWidth > 0 && document.querySelector("dialog[open]");
  }, { timeout: 5000 });
  const { width, height, data } = await page.evaluate(async () => {
    const img = document.getElementById("qr-img") as HTMLImageElement;
    await img.decode();
    const size = 800;
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = size;
    const g = canvas.getContext("2d")!;
    g.imageSmoothingEnabled = false;
    g.fillStyle = "#fff";
    g.fillRect(0, 0, size, size);
    g.drawImage(img, 0, 0, size, size);
    const d = g.getImageData(0, 0, size, size);
    return { width: size, height: size, data: Array.from(d.data) as number[] };
  });
  const decode = jsQR as unknown as (
    data: Uint8ClampedArray,
    width: number,
    height: number,
  ) => { data: string } | null;
  const code = decode(new Uint8ClampedArray(data), width, height);
  assert.ok(code, "the QR code on the page decodes");
  return code.data;
}

async function shot(page: Page, name: string): Promise<void> {
  await Deno.mkdir(SHOTS, { recursive: true });
  await page.screenshot({ path: `${SHOTS}/${name}.png` as `${string}.png`, fullPage: true });
}

Deno.test({
  name: "web dashboard: token, live flows with host names, QR onboarding, add client (Chromium)",
  ignore: need.ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    need.assert();
    await using stack = new AsyncDisposableStack();
    const dir = await Deno.makeTempDir({ prefix: "wgstack-web-" });
    stack.defer(() => Deno.remove(dir, { recursive: true }));
    const uapiDir = `${dir}/uapi`;
    await Deno.mkdir(uapiDir);

    const server = stack.use(await Netns.create("wbs"));
    const client = stack.use(await Netns.create("wbc"));
    const client2 = stack.use(await Netns.create("wbd"));
    const services = stack.use(await Netns.create("wbv"));
    const outer = stack.use(await createVeth(server, client));
    const outer2 = stack.use(await createVeth(server, client2));
    const inner = stack.use(await createVeth(server, services));
    const target = inner.b.v4;

    await Deno.writeTextFile(`${dir}/service.py`, SERVICE_PY);
    await Deno.writeTextFile(`${dir}/hold.py`, HOLD_PY);
    const svc = Background.spawn([
      "ip",
      "netns",
      "exec",
      services.name,
      "python3",
      `${dir}/service.py`,
      "8080",
    ]);
    stack.defer(() => svc.stop());
    await waitFor("the service", () => svc.log.includes("ready") || undefined);

    const cli = Background.spawn([
      "ip",
      "netns",
      "exec",
      server.name,
      Deno.execPath(),
      "run",
      "-A",
      MAIN,
      `${dir}/wg.conf`,
      "--address",
      "198.18.0.1/24",
      "--endpoint",
      outer.a.v4,
      "--web",
      `127.0.0.1:${WEB_PORT}`,
      "--web-token",
      TOKEN,
      "--no-qr",
      "--log-format",
      "json",
    ], { WGSTACK_UAPI_DIR: uapiDir, NO_COLOR: "1" });
    stack.defer(() => cli.stop(10_000));
    const url = await waitFor("the dashboard URL", () => {
      if (cli.exited) throw new Error(cli.log);
      return /Dashboard: (http:\S+)/.exec(cli.log)?.[1];
    }, { timeoutMs: 30_000 });
    assert.equal(url, `http://127.0.0.1:${WEB_PORT}/?token=${TOKEN}`);
    assert.ok(
      !/"token"|d14-test-token/.test(cli.log.replace(`Dashboard: ${url}`, "")),
      "token only in the URL line",
    );

    // Chromium in the server's namespace (the dashboard listens on its loopback), over a pipe.
    const wrapper = `${dir}/chromium-ns.sh`;
    await Deno.writeTextFile(
      wrapper,
      `#!/bin/sh\nexec ip netns exec ${server.name} chromium "$@"\n`,
    );
    await Deno.chmod(wrapper, 0o755);
    const browser: Browser = await puppeteer.launch({
      executablePath: wrapper,
      pipe: true,
      args: ["--no-sandbox", "--headless=new", "--disable-gpu", `--user-data-dir=${dir}/chrome`],
    });
    stack.defer(() => browser.close());
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 900 });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));

    await t.step("without the token: refused", async () => {
      const r = await page.goto(`http://127.0.0.1:${WEB_PORT}/`);
      assert.equal(r?.status(), 401);
      assert.equal(await page.$("#peers"), null);
      await shot(page, "1-no-token");
    });

    await t.step("with the token: the page loads and goes live", async () => {
      const r = await page.goto(url);
      assert.equal(r?.status(), 200);
      assert.equal(new URL(page.url()).search, "", "the token left the address bar");
      await page.waitForFunction(() => document.getElementById("status")?.textContent === "live", {
        timeout: 10_000,
      });
      const names = await page.$$eval(
        "#peers tbody td:first-child",
        (tds) => tds.map((td) => td.textContent),
      );
      assert.deepEqual(names, ["client-1"]);
    });

    // The client, from its generated file.
    const clientText = await Deno.readTextFile(`${dir}/wg-client-1.conf`);
    const wg = stack.use(await WireGuardGo.start(client));
    await Deno.writeTextFile(`${dir}/c1.conf`, await wgQuickStrip(dir, clientText), {
      mode: 0o600,
    });
    await wg.wg(["setconf", "wg0", `${dir}/c1.conf`]);
    await wg.up({ addresses: addressesOf(clientText), routes: ["198.18.0.0/24", `${target}/32`] });

    const holders: Background[] = [];
    stack.defer(async () => {
      for (const h of holders) await h.stop();
    });
    const hold = (ns: Netns, name: string) => {
      const h = Background.spawn([
        "ip",
        "netns",
        "exec",
        ns.name,
        "python3",
        `${dir}/hold.py`,
        target,
        "8080",
        name,
        "30",
      ]);
      holders.push(h);
      return h;
    };

    await t.step(
      "a connection the client opens shows with its host name and bytes within 2 s",
      async () => {
        const h = hold(client, "shop.example");
        await waitFor("the client's answer", () => {
          if (h.exited) throw new Error(h.log);
          return h.log.includes("got") || undefined;
        }, { timeoutMs: 15_000 });
        // From here the flow is open with bytes both ways: the page must show it within 2 s.
        await page.waitForFunction(() => {
          for (const tr of document.querySelectorAll("#flows tbody tr")) {
            const td = tr.querySelectorAll("td");
            if (td[4]?.textContent === "shop.example" && td[6]?.textContent !== "0 B") return true;
          }
          return false;
        }, { timeout: 2000, polling: 50 });
        const row = await page.$$eval(
          "#flows tbody tr",
          (trs) =>
            trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent))
              .find((cells) => cells[4] === "shop.example"),
        );
        assert.ok(row);
        assert.equal(row[0], "client-1");
        assert.equal(row[1], "tcp");
        assert.equal(row[3], `${target}:8080`);
        assert.match(row[5]!, /^\d+ B$/); // the request
        assert.match(row[6]!, /^[\d.]+ KiB$/); // 5000 bytes + headers
        assert.equal(row[8], "open");
        await shot(page, "2-flow");
      },
    );

    await t.step("a host name holding HTML shows as text", async () => {
      const h = hold(client, HTML_HOST);
      await waitFor("the client's answer", () => h.log.includes("got") || undefined, {
        timeoutMs: 15_000,
      });
      const shown = await page.waitForFunction(
        (name: string) =>
          [...document.querySelectorAll("#flows tbody td")].some((td) => td.textContent === name),
        {
          timeout: 5000,
        },
        HTML_HOST.toLowerCase(),
      );
      assert.ok(shown);
      assert.equal(await page.$("#flows img"), null, "no element made from the name");
      assert.equal(await page.evaluate(() => (globalThis as { __xss?: number }).__xss), undefined);
      await shot(page, "3-html-host");
    });

    await t.step(
      "the page's QR code decodes to a config wg setconf accepts after wg-quick strip",
      async () => {
        await page.evaluate(() => {
          const row = [...document.querySelectorAll("#peers tbody tr")].find((tr) =>
            tr.querySelector("td")?.textContent === "client-1"
          )!;
          [...row.querySelectorAll("button")].find((b) => b.textContent === "QR")!.click();
        });
        const decoded = await decodeDialogQr(page);
        await shot(page, "4-qr");
        const key = /^PrivateKey = (.*)$/m.exec(clientText)![1];
        assert.ok(decoded.includes(`PrivateKey = ${key}`));
        const stripped = await wgQuickStrip(dir, decoded);
        await Deno.writeTextFile(`${dir}/qr.conf`, stripped, { mode: 0o600 });
        const other = await WireGuardGo.start(client, "wg1");
        try {
          await other.wg(["setconf", "wg1", `${dir}/qr.conf`]);
          const dump = await other.wg(["show", "wg1", "endpoints"]);
          assert.match(dump, new RegExp(`${outer.a.v4.replaceAll(".", "\\.")}:51820`));
        } finally {
          await other.stop();
        }
        await page.click("#qr-close");
      },
    );

    await t.step("Add client: a new peer a second wireguard-go client connects with", async () => {
      await page.type("#client-name", "laptop");
      await page.click("#add-client button");
      const decoded = await decodeDialogQr(page);
      await shot(page, "5-added");
      await page.click("#qr-close");
      assert.match(await Deno.readTextFile(`${dir}/wg.conf`), /^# Name = laptop$/m);
      const wg2 = stack.use(await WireGuardGo.start(client2));
      await Deno.writeTextFile(`${dir}/c2.conf`, await wgQuickStrip(dir, decoded), { mode: 0o600 });
      await wg2.wg(["setconf", "wg0", `${dir}/c2.conf`]);
      // The config names the server's first address: reach it through this client's link.
      await client2.run(["ip", "route", "add", `${outer.a.v4}/32`, "via", outer2.a.v4]);
      await wg2.up({ addresses: addressesOf(decoded), routes: ["198.18.0.0/24", `${target}/32`] });
      const r = await client2.run([
        "curl",
        "-sS",
        "--fail",
        "-m",
        "10",
        "-H",
        "Host: laptop.example",
        `http://${target}:8080/`,
      ]);
      assert.equal(r.stdout.length, 5000);
      await page.waitForFunction(() => {
        const row = [...document.querySelectorAll("#peers tbody tr")].find((tr) =>
          tr.querySelector("td")?.textContent === "laptop"
        );
        return row && row.querySelectorAll("td")[2].textContent !== "never";
      }, { timeout: 5000 });
      await page.select("#f-closed", "1");
      await page.waitForFunction(
        () =>
          [...document.querySelectorAll("#flows tbody td")].some((td) =>
            td.textContent === "laptop.example"
          ),
        {
          timeout: 5000,
        },
      );
      await shot(page, "6-closed");
    });

    await t.step("disable, enable and remove a client with the page's buttons", async () => {
      const press = (name: string, label: string) =>
        page.evaluate(
          (name: string, label: string) => {
            const row = [...document.querySelectorAll("#peers tbody tr")].find((tr) =>
              tr.querySelector("td")?.textContent.startsWith(name)
            );
            [...row.querySelectorAll("button")].find((b) => b.textContent === label).click();
          },
          name,
          label,
        );
      const rowText = () =>
        page.evaluate(() =>
          [...document.querySelectorAll("#peers tbody tr")].map((tr) =>
            tr.querySelector("td").textContent
          )
        );
      await press("laptop", "disable");
      await page.waitForFunction(
        () =>
          [...document.querySelectorAll("#peers tbody td")].some((td) =>
            td.textContent === "laptop (disabled)"
          ),
        { timeout: 5000 },
      );
      assert.match(await Deno.readTextFile(`${dir}/wg.conf`), /^# Disabled = true$/m);
      await shot(page, "7-disabled");
      const refused = await client2.run(
        ["curl", "-sS", "-m", "3", `http://${target}:8080/`],
        { check: false },
      );
      assert.notEqual(refused.code, 0, "a disabled client gets nowhere");
      await press("laptop", "enable");
      await page.waitForFunction(
        () =>
          [...document.querySelectorAll("#peers tbody td")].some((td) =>
            td.textContent === "laptop"
          ),
        {
          timeout: 5000,
        },
      );
      assert.doesNotMatch(await Deno.readTextFile(`${dir}/wg.conf`), /# Disabled/);
      page.once("dialog", (d) => void d.accept());
      await press("laptop", "remove");
      await page.waitForFunction(() => document.querySelectorAll("#peers tbody tr").length === 1, {
        timeout: 5000,
      });
      assert.deepEqual(await rowText(), ["client-1"]);
      assert.doesNotMatch(await Deno.readTextFile(`${dir}/wg.conf`), /laptop/);
    });

    assert.deepEqual(errors, [], "no script errors on the page");
  },
});
