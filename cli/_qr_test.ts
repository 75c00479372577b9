import assert from "node:assert/strict";
import jsQR from "jsqr";
import { qrPayload, renderQr } from "./_qr.ts";

const CONFIG = `# wgstack client "phone". Import it into a WireGuard app
[Interface]
PrivateKey = gKoFeGQ49BixpjCmFvDJRYAZ8nhr60rLRLxwwL0JlX8=
Address = 10.44.0.3/32, fdeb:af39:8cbe::3/128
DNS = 10.44.0.1, fdeb:af39:8cbe::1

[Peer]
PublicKey = gIRNgnHEHQBhyz3XoEK3Oh4zq0jmWnvQ/XopM8mjGlo=
PresharedKey = vCbjkJUOzBXc46mIp1Ss96GSnz+8OTxy10++CixSbP4=
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = [2001:db8::5]:51820
PersistentKeepalive = 25
`;

type Pixel = "dark" | "light";

/**
 * Turns half-block text into rows of pixels, the way a terminal draws it:
 * a glyph's covered half takes the foreground colour, the rest the
 * background. ANSI SGR codes 30/37 (fg) and 40/47 (bg) and 0 (reset) are
 * followed; the terminal's own default colours are given.
 */
function rasterize(text: string, defaults: { fg: Pixel; bg: Pixel }): Pixel[][] {
  const rows: Pixel[][] = [];
  let fg = defaults.fg;
  let bg = defaults.bg;
  for (const line of text.split("\n")) {
    const top: Pixel[] = [];
    const bottom: Pixel[] = [];
    for (let i = 0; i < line.length; i++) {
      if (line[i] === "\x1b") {
        const end = line.indexOf("m", i);
        for (const code of line.slice(i + 2, end).split(";")) {
          if (code === "0") [fg, bg] = [defaults.fg, defaults.bg];
          if (code === "30") fg = "dark";
          if (code === "37") fg = "light";
          if (code === "40") bg = "dark";
          if (code === "47") bg = "light";
        }
        i = end;
        continue;
      }
      const ch = line[i];
      top.push(ch === "█" || ch === "▀" ? fg : bg);
      bottom.push(ch === "█" || ch === "▄" ? fg : bg);
    }
    if (top.length > 0) rows.push(top, bottom);
  }
  return rows;
}

/** Scales pixels into an RGBA image with a margin of `margin` pixels in `marginColor`, and decodes it. */
function decode(rows: Pixel[][], marginColor: Pixel): string | undefined {
  const scale = 4;
  const margin = 8;
  const width = Math.max(...rows.map((r) => r.length)) * scale + 2 * margin;
  const height = rows.length * scale + 2 * margin;
  const data = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const row = rows[Math.floor((y - margin) / scale)];
      const px = y < margin || x < margin ? undefined : row?.[Math.floor((x - margin) / scale)];
      const v = (px ?? marginColor) === "dark" ? 0 : 255;
      data.set([v, v, v, 255], (y * width + x) * 4);
    }
  }
  const decodeQr = jsQR as unknown as (
    d: Uint8ClampedArray,
    w: number,
    h: number,
    o: { inversionAttempts: string },
  ) => { data: string } | null;
  return decodeQr(data, width, height, { inversionAttempts: "dontInvert" })?.data;
}

Deno.test("QR codes decode back to the client config", async (t) => {
  const payload = qrPayload(CONFIG);

  await t.step("the payload drops comments and keeps the sections", () => {
    assert.ok(!payload.includes("#"));
    assert.match(payload, /^\[Interface\]\nPrivateKey = /);
    assert.match(payload, /\n\n\[Peer\]\n/);
    assert.ok(payload.endsWith("PersistentKeepalive = 25\n"));
  });

  await t.step("utf8 (files, pipes) on a light terminal", async () => {
    const art = await renderQr(payload, { type: "utf8" });
    assert.equal(decode(rasterize(art, { fg: "dark", bg: "light" }), "light"), payload);
    // …and why a terminal gets the ANSI kind: plain glyphs come out inverted on dark themes.
    assert.equal(decode(rasterize(art, { fg: "light", bg: "dark" }), "dark"), undefined);
  });

  await t.step("terminal (ANSI colours) reads right even on a dark terminal", async () => {
    const art = await renderQr(payload, { type: "terminal" });
    for (const theme of [{ fg: "light", bg: "dark" }, { fg: "dark", bg: "light" }] as const) {
      assert.equal(decode(rasterize(art, theme), theme.bg), payload, JSON.stringify(theme));
    }
  });

  await t.step("small enough for a terminal: at most 40 rows", async () => {
    const art = await renderQr(payload, { type: "utf8" });
    assert.ok(art.split("\n").length <= 40, `${art.split("\n").length} rows`);
  });
});
