/**
 * The dashboard page: HTML, CSS and a small vanilla script, served by the
 * wgstack process itself (strings here, so they ship in the package). The
 * script reads the JSON API and its event stream, and puts every value on
 * the page as text (never as HTML).
 *
 * @module
 */

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The page, with the token the script sends in its `Authorization` header. */
export function indexHtml(token: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="wgstack-token" content="${escapeHtml(token)}">
<title>wgstack</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <h1>wgstack</h1>
  <span id="server"></span>
  <span id="status" class="status">connecting…</span>
</header>
<main>
<section>
  <h2>Totals</h2>
  <div id="cards" class="cards"></div>
  <details id="drops-box"><summary>Drops by reason</summary><table id="drops"><thead><tr>
    <th>layer</th><th>reason</th><th class="n">packets</th></tr></thead><tbody></tbody></table>
  </details>
</section>
<section>
  <h2>Peers</h2>
  <table id="peers">
    <thead><tr><th>name</th><th>endpoint</th><th>last handshake</th><th class="n">received</th>
    <th class="n">sent</th><th>throughput (2 min)</th><th class="n">open</th><th></th></tr></thead>
    <tbody></tbody>
  </table>
  <form id="add-client">
    <input id="client-name" name="name" placeholder="new client name, e.g. phone" maxlength="32"
      pattern="[A-Za-z0-9_][A-Za-z0-9._-]{0,31}" required>
    <button type="submit">Add client</button>
    <span id="add-result" class="msg"></span>
  </form>
</section>
<section>
  <h2>Flows</h2>
  <div class="filters">
    <label>show <select id="f-closed"><option value="0">live</option>
      <option value="1">recently closed</option></select></label>
    <label>peer <select id="f-peer"><option value="">all</option></select></label>
    <label>host <input id="f-host" placeholder="name or address"></label>
    <label>port <input id="f-port" inputmode="numeric" size="6"></label>
    <label>protocol <select id="f-protocol"><option value="">all</option>
      <option>tcp</option><option>udp</option></select></label>
    <label>sort <select id="f-sort"><option value="age">newest</option>
      <option value="bytes">bytes</option></select></label>
    <span id="flow-count"></span>
    <button id="prev" type="button">◀</button><button id="next" type="button">▶</button>
  </div>
  <table id="flows">
    <thead><tr><th>peer</th><th>proto</th><th>source</th><th>destination</th><th>host</th>
    <th class="n">up</th><th class="n">down</th><th class="n" id="age-head">age</th><th>state</th></tr></thead>
    <tbody></tbody>
  </table>
</section>
</main>
<dialog id="qr-dialog">
  <h3 id="qr-title"></h3>
  <img id="qr-img" alt="client config QR code" width="320" height="320">
  <p>Scan with the WireGuard app (“Scan from QR code”). It holds the client's private key.</p>
  <p><a id="qr-download" href="#">Download .conf</a> <button id="qr-close" type="button">Close</button></p>
</dialog>
</body>
</html>
`;
}

/** The page's style sheet. */
export const APP_CSS = `
:root { color-scheme: light dark; --fg: #1b1f23; --bg: #fff; --muted: #6a737d; --line: #e1e4e8;
  --accent: #0969da; --card: #f6f8fa; --rx: #1a7f37; --tx: #0969da; --bad: #cf222e; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --bg: #0d1117; --muted: #8b949e;
  --line: #30363d; --card: #161b22; --accent: #58a6ff; --rx: #3fb950; --tx: #58a6ff; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1em; align-items: baseline; padding: .6em 1.2em;
  border-bottom: 1px solid var(--line); flex-wrap: wrap; }
header h1 { margin: 0; font-size: 1.3em; }
#server { color: var(--muted); font-family: ui-monospace, monospace; font-size: .85em; }
.status { margin-left: auto; font-size: .85em; color: var(--muted); }
.status.bad { color: var(--bad); }
main { padding: 0 1.2em 2em; }
h2 { font-size: 1.05em; margin: 1.2em 0 .5em; }
.cards { display: flex; flex-wrap: wrap; gap: .6em; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: .4em .8em; min-width: 9em; }
.card b { display: block; font-size: 1.25em; font-variant-numeric: tabular-nums; }
.card span { color: var(--muted); font-size: .8em; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
td.host { max-width: 22em; overflow: hidden; text-overflow: ellipsis; }
th { color: var(--muted); font-weight: 600; font-size: .85em; }
.n { text-align: right; }
.mono { font-family: ui-monospace, monospace; font-size: .9em; }
tr.disabled td { color: var(--muted); }
canvas.spark { width: 160px; height: 28px; display: block; }
button { font: inherit; padding: .15em .6em; cursor: pointer; }
td button { margin-right: .3em; }
.filters { display: flex; flex-wrap: wrap; gap: .8em; align-items: center; margin-bottom: .5em; }
#flow-count { color: var(--muted); margin-left: auto; }
form { margin-top: .6em; display: flex; gap: .5em; align-items: center; }
.msg { color: var(--muted); }
.msg.bad { color: var(--bad); }
dialog { border: 1px solid var(--line); border-radius: 8px; background: var(--bg); color: var(--fg); }
dialog img { background: #fff; display: block; margin: 0 auto; }
dialog p { max-width: 320px; }
`;

/** The page's script (no framework: a few hundred lines of DOM calls). */
export const APP_JS = `"use strict";
const TOKEN = document.querySelector('meta[name="wgstack-token"]').content;
const $ = (id) => document.getElementById(id);
const auth = { authorization: "Bearer " + TOKEN };

async function api(method, path, body) {
  const init = { method, headers: { ...auth } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function bytes(n) {
  if (n < 1024) return n + " B";
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return n.toFixed(n < 10 ? 1 : 0) + " " + units[i];
}
function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}
const ep = (e) => !e ? "" : (e.address.includes(":") ? "[" + e.address + "]" : e.address) + ":" + e.port;
const shortKey = (k) => k.slice(0, 8) + "…";
const peerLabel = (name, key) => name || shortKey(key);

// ---- totals -------------------------------------------------------------
const CARDS = [
  ["wgstack_handshakes_total", "handshakes"],
  ["wgstack_tcp_connections_opened_total", "TCP forwarded"],
  ["wgstack_tcp_connections_refused_total", "TCP refused"],
  ["wgstack_udp_flows_opened_total", "UDP flows"],
  ["wgstack_relayed_bytes_total", "relayed up", { direction: "up" }, bytes],
  ["wgstack_relayed_bytes_total", "relayed down", { direction: "down" }, bytes],
  ["wgstack_flows_named_total", "flows named"],
  ["wgstack_destinations_refused_total", "destinations refused"],
  ["wgstack_domain_refusals_total", "domain refusals"],
  ["wgstack_drops_total", "packets dropped"],
];
function total(totals, name, labels) {
  const m = totals.find((t) => t.name === name);
  if (!m) return undefined;
  return m.values.filter((v) => Object.entries(labels || {}).every(([k, x]) => v.labels[k] === x))
    .reduce((a, v) => a + v.value, 0);
}
function renderSummary(s) {
  const srv = s.server;
  $("server").textContent = srv.publicKey + " · UDP " + ep(srv.listen) + " · " +
    (srv.mode || "") + " · up " + duration(srv.uptimeMs);
  const cards = [
    el("div", { class: "card", "data-metric": "live" }, el("b", {}, s.live.tcpOpen + " / " + s.live.udpOpen),
      el("span", {}, "open TCP / UDP")),
  ];
  for (const [name, label, labels, fmt] of CARDS) {
    const v = total(s.totals, name, labels);
    if (v === undefined) continue;
    cards.push(el("div", { class: "card", "data-metric": name, "data-value": v },
      el("b", {}, fmt ? fmt(v) : v.toLocaleString()), el("span", {}, label)));
  }
  $("cards").replaceChildren(...cards);
  const drops = s.totals.find((t) => t.name === "wgstack_drops_total");
  const rows = (drops ? drops.values : []).filter((v) => v.value > 0)
    .map((v) => el("tr", {}, el("td", {}, v.labels.layer), el("td", {}, v.labels.reason),
      el("td", { class: "n" }, v.value.toLocaleString())));
  $("drops").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 3 }, "none"))]));
}

// ---- peers --------------------------------------------------------------
function spark(history) {
  const c = el("canvas", { class: "spark", width: 320, height: 56 });
  const g = c.getContext("2d");
  const max = Math.max(1, ...history.rx, ...history.tx);
  for (const [series, color] of [[history.rx, "--rx"], [history.tx, "--tx"]]) {
    g.strokeStyle = getComputedStyle(document.body).getPropertyValue(color);
    g.lineWidth = 2;
    g.beginPath();
    series.forEach((v, i) => {
      const x = 320 - (series.length - 1 - i) * (320 / 119);
      const y = 54 - (v / max) * 50;
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
  }
  const last = (a) => a.length ? a[a.length - 1] : 0;
  c.title = "received " + bytes(last(history.rx)) + "/s, sent " + bytes(last(history.tx)) + "/s";
  return c;
}
let peerShape = "";
/** Each peer's throughput samples: the first update brings them all, later ones the latest. */
const rates = new Map();
function keepHistory(peers) {
  for (const peer of peers) {
    if (peer.history) rates.set(peer.publicKey, { rx: [...peer.history.rx], tx: [...peer.history.tx] });
    else if (peer.rate) {
      let r = rates.get(peer.publicKey);
      if (!r) rates.set(peer.publicKey, r = { rx: [], tx: [] });
      r.rx.push(peer.rate.rx);
      r.tx.push(peer.rate.tx);
      if (r.rx.length > 120) { r.rx.shift(); r.tx.shift(); }
    }
    peer.history = rates.get(peer.publicKey) || { rx: [], tx: [] };
  }
}
function renderPeers(p) {
  keepHistory(p.peers);
  // Same peers as before: update the cells in place (a click on a button is never lost).
  const shape = JSON.stringify(p.peers.map((x) => [x.publicKey, x.name, x.disabled, x.hasConfig]));
  const body = $("peers").tBodies[0];
  if (shape === peerShape) {
    p.peers.forEach((peer, i) => {
      const td = body.rows[i].cells;
      td[1].textContent = ep(peer.endpoint);
      td[2].textContent = peer.disabled ? "" : handshake(peer);
      td[3].textContent = bytes(peer.rxBytes);
      td[4].textContent = bytes(peer.txBytes);
      td[5].replaceChildren(spark(peer.history));
      td[6].firstChild.textContent = peer.tcpOpen + " TCP, " + peer.udpOpen + " UDP";
    });
    return;
  }
  peerShape = shape;
  const rows = p.peers.map((peer) => {
    const actions = el("td", {});
    if (peer.name && peer.hasConfig) actions.append(el("button", { onclick: () => showQr(peer.name) }, "QR"));
    if (peer.name) {
      actions.append(el("button", { onclick: () => act("PATCH", peer.name, { disabled: !peer.disabled }) },
        peer.disabled ? "enable" : "disable"));
      actions.append(el("button", { onclick: () => {
        if (confirm("Remove client " + peer.name + "? Its keys are deleted.")) act("DELETE", peer.name);
      } }, "remove"));
    }
    return el("tr", { class: peer.disabled ? "disabled" : "", "data-key": peer.publicKey },
      el("td", { title: peer.publicKey }, peerLabel(peer.name, peer.publicKey), peer.disabled ? " (disabled)" : ""),
      el("td", { class: "mono" }, ep(peer.endpoint)),
      el("td", {}, peer.disabled ? "" : handshake(peer)),
      el("td", { class: "n" }, bytes(peer.rxBytes)),
      el("td", { class: "n" }, bytes(peer.txBytes)),
      el("td", {}, spark(peer.history)),
      el("td", { class: "n" }, el("a", { href: "#flows", title: "show its flows", onclick: () => {
        $("f-peer").value = peer.publicKey;
        offset = 0;
        connect();
      } }, peer.tcpOpen + " TCP, " + peer.udpOpen + " UDP")),
      actions);
  });
  $("peers").tBodies[0].replaceChildren(...rows);
  const sel = $("f-peer");
  const chosen = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "all"),
    ...p.peers.map((x) => el("option", { value: x.publicKey }, peerLabel(x.name, x.publicKey))));
  sel.value = chosen;
}
function handshake(peer) {
  return peer.lastHandshake ? duration(Math.max(0, Date.now() - peer.lastHandshake)) + " ago" : "never";
}
async function act(method, name, body) {
  try {
    await api(method, "/api/clients/" + encodeURIComponent(name), body);
    refreshPeers();
  } catch (e) {
    alert(e.message);
  }
}
async function refreshPeers() {
  renderPeers(await api("GET", "/api/peers"));
}
function showQr(name) {
  const q = "?token=" + encodeURIComponent(TOKEN);
  const base = "/api/clients/" + encodeURIComponent(name);
  $("qr-title").textContent = "Client " + name;
  $("qr-img").src = base + "/qr.svg" + q;
  $("qr-download").href = base + "/conf" + q;
  $("qr-download").setAttribute("download", name + ".conf");
  $("qr-dialog").showModal();
}
$("qr-close").addEventListener("click", () => $("qr-dialog").close());
$("add-client").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("client-name").value.trim();
  const msg = $("add-result");
  try {
    const r = await api("POST", "/api/clients", { name });
    msg.className = "msg";
    msg.textContent = "Added " + r.client.name + " (" + r.client.allowedIps.join(", ") + ")";
    $("client-name").value = "";
    await refreshPeers();
    showQr(r.client.name);
  } catch (e) {
    msg.className = "msg bad";
    msg.textContent = e.message;
  }
});

// ---- flows --------------------------------------------------------------
const PAGE = 100;
let offset = 0;
function flowParams() {
  const p = new URLSearchParams();
  if ($("f-closed").value === "1") p.set("closed", "1");
  for (const k of ["peer", "host", "port", "protocol", "sort"]) {
    const v = $("f-" + k).value.trim();
    if (v) p.set(k, v);
  }
  p.set("offset", offset);
  p.set("limit", PAGE);
  return p;
}
let mode = "";
function renderFlows(page) {
  const closed = $("f-closed").value === "1";
  $("age-head").textContent = closed ? "lasted" : "age";
  const rows = page.flows.map((f) => el("tr", { "data-id": f.id },
    el("td", { title: f.peer }, peerLabel(f.peerName, f.peer)),
    el("td", {}, f.protocol),
    el("td", { class: "mono" }, ep(f.source)),
    el("td", { class: "mono" }, ep(f.destination)),
    el("td", { class: "host", title: f.hostname ? f.hostname + " (" + f.hostnameSource + ")" : "" }, f.hostname || ""),
    el("td", { class: "n" }, bytes(f.bytesUp)),
    el("td", { class: "n" }, bytes(f.bytesDown)),
    el("td", { class: "n" }, duration(f.durationMs)),
    el("td", {}, closed ? f.end : f.state)));
  $("flows").tBodies[0].replaceChildren(...rows);
  if (mode === "echo" && page.total === 0) {
    $("flows").tBodies[0].replaceChildren(el("tr", {}, el("td", { colspan: 9 },
      "Flows are listed in forward mode (this server echoes).")));
  }
  const last = Math.min(page.offset + page.flows.length, page.matched);
  $("flow-count").textContent = (page.matched ? page.offset + 1 : 0) + "–" + last + " of " + page.matched +
    (page.matched !== page.total ? " (" + page.total + " in all)" : "");
  $("prev").disabled = page.offset === 0;
  $("next").disabled = last >= page.matched;
}

// ---- live updates -------------------------------------------------------
let source;
function connect() {
  if (source) source.close();
  const p = flowParams();
  p.set("token", TOKEN);
  source = new EventSource("/api/events?" + p);
  source.addEventListener("update", (ev) => {
    const u = JSON.parse(ev.data);
    $("status").textContent = "live";
    $("status").className = "status";
    mode = u.summary.server.mode || "";
    renderSummary(u.summary);
    renderPeers(u.peers);
    renderFlows(u.flows);
  });
  source.addEventListener("error", () => {
    $("status").textContent = "disconnected, retrying…";
    $("status").className = "status bad";
  });
}
let typing;
for (const id of ["f-closed", "f-peer", "f-protocol", "f-sort"]) {
  $(id).addEventListener("change", () => { offset = 0; connect(); });
}
for (const id of ["f-host", "f-port"]) {
  $(id).addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { offset = 0; connect(); }, 300);
  });
}
$("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); connect(); });
$("next").addEventListener("click", () => { offset += PAGE; connect(); });
connect();
`;
