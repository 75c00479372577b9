/**
 * Terminal QR codes of client configs, for the WireGuard mobile apps'
 * "scan from QR code".
 *
 * @module
 */

import QRCode from "qrcode";

interface QrCodeModule {
  toString(
    text: string,
    options: { type: "terminal" | "utf8"; small?: boolean; errorCorrectionLevel?: string },
  ): Promise<string>;
}

/** Options of {@linkcode renderQr}. */
export interface RenderQrOptions {
  /**
   * `"terminal"`: ANSI colours force black on white, right on any terminal
   * theme. `"utf8"`: plain half blocks (for files and pipes; reads right on
   * light backgrounds). Default `"utf8"`.
   */
  type?: "terminal" | "utf8";
}

/**
 * Renders `text` as a QR code drawn with half-block characters (two modules
 * per character row). Error correction level L keeps a client config (about
 * 300 characters) at a size a phone reads off a terminal.
 *
 * @example
 * ```ts
 * import { renderQr } from "./_qr.ts";
 * const art = await renderQr("[Interface]\nPrivateKey = …\n");
 * ```
 */
export function renderQr(text: string, options: RenderQrOptions = {}): Promise<string> {
  return (QRCode as unknown as QrCodeModule).toString(text, {
    type: options.type ?? "utf8",
    small: true,
    errorCorrectionLevel: "L",
  });
}

/** The text a QR code should carry: the config without comment and blank lines. */
export function qrPayload(config: string): string {
  return config
    .split("\n")
    .map((line) => line.trimEnd())
    .filter((line) => line !== "" && !line.trimStart().startsWith("#"))
    .join("\n")
    .replace(/\n\[/g, "\n\n[") + "\n";
}
