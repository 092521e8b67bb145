"""The fleet page: HTML, CSS and script served by the dashboard itself (no CDN)."""

from __future__ import annotations

PAGE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-agent fleet</title><link rel="stylesheet" href="/app.css"></head>
<body>
<header><h1>edge-agent fleet</h1><span id="link" class="pill">connecting</span></header>
<section id="summary" aria-live="polite">
  <span id="s-devices">0</span> devices,
  <span id="s-online">0</span> online,
  <span id="s-degraded">0</span> degraded,
  <span id="s-offline">0</span> offline,
  <span id="s-overdue">0</span> overdue,
  <span id="s-audio">0</span> audio outside audio rooms
</section>
<nav>
  <label>state <select id="f-state">
    <option value="">all</option><option>online</option><option>degraded</option>
    <option>offline</option><option>unknown</option></select></label>
  <label>site <input id="f-site" placeholder="any" size="12"></label>
  <span id="shown"></span>
</nav>
<table><thead><tr>
  <th>device</th><th>state</th><th>site</th><th>clock</th><th>overdue</th><th>audio out</th>
  <th>storage free</th><th>failing sources</th><th>outbox</th><th>last seen</th>
</tr></thead><tbody id="rows"></tbody></table>
<section id="device" hidden>
  <h2 id="d-title"></h2><a href="#" id="d-close">back to the fleet</a>
  <pre id="d-row"></pre><h3>recent events</h3>
  <table><thead><tr><th>seq</th><th>type</th><th>ts</th></tr></thead>
  <tbody id="d-events"></tbody></table>
</section>
<script src="/app.js"></script>
</body></html>
"""

PAGE_CSS = """
body { font: 14px system-ui, sans-serif; margin: 1em; color: #222; }
header { display: flex; gap: 1em; align-items: center; }
h1 { font-size: 1.3em; margin: 0; }
.pill { padding: 2px 8px; border-radius: 8px; background: #ddd; }
.pill.up { background: #c8f0c8; } .pill.down { background: #f6c6c6; }
#summary { margin: .8em 0; font-size: 1.1em; }
#summary span { font-weight: bold; }
nav { margin-bottom: .5em; display: flex; gap: 1em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eee; }
tr.online td.st { color: #176317; } tr.degraded td.st { color: #a06000; }
tr.offline td.st { color: #b00020; font-weight: bold; }
td.bad { color: #b00020; font-weight: bold; }
a { color: #0645ad; cursor: pointer; }
"""

PAGE_JS = r"""
"use strict";
const rows = new Map();  // id -> row document
const LIMIT = 1000;
let openDevice = null;
const $ = (id) => document.getElementById(id);
const text = (v) => (v === null || v === undefined ? "" : String(v));

function ago(epoch) {
  if (!epoch) return "";
  const s = Math.max(0, Math.round(Date.now() / 1000 - epoch));
  return s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago";
}

function cell(tr, value, cls) {
  const td = document.createElement("td");
  td.textContent = text(value);
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function visible(r) {
  const st = $("f-state").value, site = $("f-site").value.trim();
  return (!st || r.state === st) && (!site || r.site === site);
}

function render() {
  const body = $("rows");
  const out = [];
  let n = 0;
  for (const r of [...rows.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    if (!visible(r)) continue;
    if (++n > LIMIT) continue;
    const tr = document.createElement("tr");
    tr.className = r.state;
    tr.dataset.id = r.id;
    const a = document.createElement("a");
    a.textContent = r.id;
    a.href = "#device=" + encodeURIComponent(r.id);
    const td = document.createElement("td");
    td.appendChild(a);
    tr.appendChild(td);
    cell(tr, r.state, "st");
    cell(tr, r.site);
    cell(tr, r.clock, r.clock === "untrusted" ? "bad" : "");
    cell(tr, r.overdue, r.overdue ? "bad" : "");
    cell(tr, r.audio_outside, r.audio_outside ? "bad" : "");
    cell(tr, r.storage_free_pct === null ? "" : r.storage_free_pct + " %");
    cell(tr, (r.failing_sources || []).join(", "), (r.failing_sources || []).length ? "bad" : "");
    cell(tr, r.outbox_depth);
    cell(tr, ago(r.last_seen));
    out.push(tr);
  }
  body.replaceChildren(...out);
  $("shown").textContent = n > LIMIT ? "showing " + LIMIT + " of " + n : n + " shown";
}

function summary(s) {
  $("s-devices").textContent = s.devices;
  $("s-online").textContent = s.states.online;
  $("s-degraded").textContent = s.states.degraded;
  $("s-offline").textContent = s.states.offline;
  $("s-overdue").textContent = s.overdue;
  $("s-audio").textContent = s.audio_outside;
}

function link(up) {
  $("link").textContent = up ? "broker connected" : "broker not connected";
  $("link").className = "pill " + (up ? "up" : "down");
}

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}

async function load() {
  const res = await fetch("/api/fleet?limit=10000", { credentials: "same-origin" });
  if (!res.ok) { $("link").textContent = "not authorised (open /?token=...)"; return; }
  const doc = await res.json();
  rows.clear();
  for (const r of doc.rows) rows.set(r.id, r);
  summary(doc.summary);
  link(doc.mqtt);
  render();
}

async function showDevice() {
  const m = location.hash.match(/^#device=(.+)$/);
  openDevice = m ? decodeURIComponent(m[1]) : null;
  $("device").hidden = !openDevice;
  if (!openDevice) return;
  const res = await fetch("/api/device/" + encodeURIComponent(openDevice));
  if (!res.ok) { $("d-title").textContent = openDevice + ": not known"; return; }
  const d = await res.json();
  $("d-title").textContent = d.id + " (" + d.state + ")";
  const { events, ...row } = d;
  $("d-row").textContent = JSON.stringify(row, null, 2);
  $("d-events").replaceChildren(...events.slice().reverse().map((e) => {
    const tr = document.createElement("tr");
    cell(tr, e.seq); cell(tr, e.type); cell(tr, e.ts);
    return tr;
  }));
}

function stream() {
  const es = new EventSource("/api/stream");
  es.addEventListener("hello", () => load());
  es.addEventListener("delta", (ev) => {
    const doc = JSON.parse(ev.data);
    for (const r of doc.rows) rows.set(r.id, r);
    summary(doc.summary);
    link(doc.mqtt);
    schedule();
    if (openDevice && doc.rows.some((r) => r.id === openDevice)) showDevice();
  });
  es.onerror = () => link(false);
}

$("f-state").addEventListener("change", render);
$("f-site").addEventListener("input", render);
$("d-close").addEventListener("click", () => { location.hash = ""; });
window.addEventListener("hashchange", showDevice);
setInterval(render, 10000);  // "last seen" ages
stream();
showDevice();
"""
