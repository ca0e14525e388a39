"""The chunk map page of the Dask dashboard: one HTML document with its script (no CDN, nothing to fetch).

The script asks ``chunks/meta.json`` once (lattice size, state colours),
``chunks/outlines.json`` once (province outlines in lattice cells), then every
``REFRESH_MS`` the state bytes ``chunks/state.bin`` (one byte per lattice cell,
gzip) and ``chunks/summary.json`` (counts, ETA, provinces); on hover,
``chunks/chunk.json?id=c/r/c``.  After each drawing it sets, on the canvas,
``data-rendered`` (the number of drawings so far) and ``data-drawn`` (per
state, the chunks whose centre pixel shows that state's colour, read back from
the canvas before the outlines are drawn over it): what the browser test checks.
"""

from __future__ import annotations

REFRESH_MS = 3000

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sinolc-dist: chunks</title>
<style>
body{font-family:sans-serif;margin:0;color:#222}
nav{background:#eee;padding:6px 12px}nav a{margin-right:14px;color:#333}
main{display:flex;gap:16px;padding:12px}
#map{border:1px solid #999;image-rendering:pixelated;background:#fafafa}
#bar{height:18px;background:#ddd;position:relative;margin:6px 0}
#bar div{position:absolute;top:0;bottom:0}
#tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #666;padding:4px 6px;
font-size:12px;display:none;white-space:pre}
table{border-collapse:collapse;font-size:12px}td,th{padding:2px 6px;border-bottom:1px solid #ddd}
.key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;vertical-align:middle}
</style></head><body>
<nav><a href="status">Status</a><a href="workers">Workers</a><a href="tasks">Tasks</a>
<a href="chunks"><b>Chunks</b></a></nav>
<div style="padding:0 12px"><div id="run"></div><div id="bar"></div><div class="key" id="key"></div></div>
<main><canvas id="map" width="10" height="10"></canvas>
<div><table id="prov"><thead><tr><th>province</th><th>done %</th><th>done</th><th>failed</th>
<th>left</th><th>chunks/h</th><th>ETA</th></tr></thead><tbody></tbody></table></div></main>
<div id="tip"></div>
<script>
"use strict";
const REFRESH = __REFRESH__;
let meta = null, outlines = [], codes = null, scale = 1, hovered = -1, drawings = 0;
const canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
const tip = document.getElementById("tip");
function rgb(hex) { return [1, 3, 5].map(i => parseInt(hex.substr(i, 2), 16)); }
async function json(url) { const r = await fetch(url, {cache: "no-store"}); return r.json(); }
async function start() {
  meta = await json("chunks/meta.json");
  const avail = Math.max(300, window.innerWidth - 480), high = Math.max(300, window.innerHeight - 120);
  scale = Math.min(avail / meta.cols, high / meta.rows);
  scale = scale >= 1 ? Math.floor(scale) : scale;
  canvas.width = Math.max(1, Math.round(meta.cols * scale));
  canvas.height = Math.max(1, Math.round(meta.rows * scale));
  document.getElementById("key").innerHTML = meta.states.map(
    s => `<span style="background:${s.colour}"></span>${s.name}`).join("");
  json("chunks/outlines.json").then(o => { outlines = o.lines; draw(); });
  await refresh();
  setInterval(refresh, REFRESH);
}
async function refresh() {
  const r = await fetch("chunks/state.bin", {cache: "no-store"});
  codes = new Uint8Array(await r.arrayBuffer());
  summary(await json("chunks/summary.json"));
  draw();
}
function draw() {
  if (!codes) return;
  const img = new ImageData(meta.cols, meta.rows), lut = meta.states.map(s => rgb(s.colour));
  for (let k = 0; k < codes.length; k++) {
    const v = codes[k];
    if (!v) continue;
    const c = lut[v - 1];
    img.data[4 * k] = c[0]; img.data[4 * k + 1] = c[1]; img.data[4 * k + 2] = c[2]; img.data[4 * k + 3] = 255;
  }
  const off = document.createElement("canvas");
  off.width = meta.cols; off.height = meta.rows;
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
  check(lut);
  if (scale >= 6) {  // each chunk's edge, once a chunk is large enough to show one
    ctx.strokeStyle = "rgba(255,255,255,0.7)"; ctx.lineWidth = 1;
    ctx.beginPath();
    for (let j = 1; j < meta.cols; j++) { ctx.moveTo(j * scale, 0); ctx.lineTo(j * scale, canvas.height); }
    for (let i = 1; i < meta.rows; i++) { ctx.moveTo(0, i * scale); ctx.lineTo(canvas.width, i * scale); }
    ctx.stroke();
  }
  ctx.strokeStyle = "#303030"; ctx.lineWidth = 1;
  for (const line of outlines) {
    ctx.beginPath();
    line.forEach(([x, y], i) => i ? ctx.lineTo(x * scale, y * scale) : ctx.moveTo(x * scale, y * scale));
    ctx.stroke();
  }
  drawings += 1;
  canvas.dataset.rendered = String(drawings);
}
function check(lut) {  // what the canvas shows at each chunk's centre, per state
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data, drawn = {};
  for (let k = 0; k < codes.length; k++) {
    const v = codes[k];
    if (!v) continue;
    const i = Math.floor(k / meta.cols), j = k % meta.cols;
    const x = Math.min(canvas.width - 1, Math.floor((j + 0.5) * scale));
    const y = Math.min(canvas.height - 1, Math.floor((i + 0.5) * scale));
    const o = 4 * (y * canvas.width + x), c = lut[v - 1];
    if (px[o] === c[0] && px[o + 1] === c[1] && px[o + 2] === c[2]) {
      const name = meta.states[v - 1].name;
      drawn[name] = (drawn[name] || 0) + 1;
    }
  }
  canvas.dataset.drawn = JSON.stringify(drawn);
}
function summary(s) {
  const n = s.counts, total = Object.values(n).reduce((a, b) => a + b, 0) || 1;
  document.getElementById("run").textContent =
    `${s.stage} ${s.run}: ${n.done} done, ${n.failed} failed, ${n.pending + n.running + n.retried} left ` +
    `(${n.running} running, ${n.retried} retrying) of ${total} | ` +
    `${s.px_per_s.toLocaleString("en")} px/s | ETA ${s.eta}`;
  let left = 0;
  const order = ["done", "failed", "retried", "running", "pending", "no-imagery"];
  const byName = Object.fromEntries(meta.states.map(st => [st.name, st]));
  document.getElementById("bar").innerHTML = order.map(name => byName[name]).map(st => {
    const w = 100 * (n[st.name] || 0) / total, html =
      `<div style="left:${left}%;width:${w}%;background:${st.colour}"></div>`;
    left += w; return html;
  }).join("");
  document.querySelector("#prov tbody").innerHTML = s.provinces.map(p =>
    `<tr><td>${p.name}</td><td>${p.done_pct}</td><td>${p.done}</td><td>${p.failed}</td>` +
    `<td>${p.left}</td><td>${p.chunks_per_h}</td><td>${p.eta}</td></tr>`).join("");
}
canvas.addEventListener("mousemove", async ev => {
  if (!meta || !codes) return;
  const b = canvas.getBoundingClientRect();
  const j = Math.floor((ev.clientX - b.left) / scale), i = Math.floor((ev.clientY - b.top) / scale);
  const k = i * meta.cols + j;
  tip.style.left = (ev.clientX + 14) + "px"; tip.style.top = (ev.clientY + 14) + "px";
  if (k === hovered) return;
  hovered = k;
  if (i < 0 || j < 0 || i >= meta.rows || j >= meta.cols || !codes[k]) { tip.style.display = "none"; return; }
  const d = await json(`chunks/chunk.json?id=c/${meta.row0 + i}/${meta.col0 + j}`);
  if (hovered !== k) return;
  tip.textContent = [`chunk ${d.id}: ${d.state}`, `provinces: ${d.provinces.join(", ")}`,
    `attempts: ${d.attempts}`, `worker: ${d.worker || "-"}`, `seconds: ${d.seconds || "-"}`,
    `last error: ${d.error || "-"}`].join("\\n");
  tip.style.display = "block";
});
canvas.addEventListener("mouseleave", () => { hovered = -1; tip.style.display = "none"; });
start();
</script></body></html>
""".replace("__REFRESH__", str(REFRESH_MS))
