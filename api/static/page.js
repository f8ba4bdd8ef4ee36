// The operator page: per rig, what its kind declares (GET api/rigs/{rig}/layout) fed by the live
// WebSocket. Nothing here names a rig kind or a channel: a new kind needs no change to this file.
// Everything the server sends is shown as text: elements are built here, never parsed from HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#ff9e80", "#4fc3f7", "#aed581", "#ffd54f", "#ce93d8", "#80cbc4", "#f48fb1", "#bcaaa4", "#90caf9"];
const rigs = {};   // rig name -> {card, layout, hist, latest, now_ns, ...}
// a value whose newest sample is older than this is dimmed: its device stopped answering
const STALE_S = 3;

function h(tag, cls, ...children) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const c of children) {
    if (c !== null && c !== undefined && c !== false) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function s(tag, attrs, text) {   // an SVG element; text as a text node
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

// the verdict box's figures, as the service sends them
function fmt(v) {
  if (typeof v === "number") {
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 1000 ? v.toFixed(0) : v.toPrecision(4);
  }
  return String(v);
}

// a key value: steady width (decimals by magnitude), thousands in thin-spaced groups
function fmtKey(v) {
  if (typeof v === "boolean") return v ? "on" : "off";
  if (typeof v !== "number") return v === null || v === undefined ? "—" : String(v);
  const a = Math.abs(v);
  const text = Number.isInteger(v) ? String(v)
    : a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
  const [int, dec] = text.split(".");
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, "\u2009");
  return dec === undefined ? grouped : grouped + "." + dec;
}

function clock(ms) {   // 24-hour clock time
  return new Date(ms).toLocaleTimeString([], {hour12: false});
}

function reasonsBox(reasons) {   // one line per reason
  const box = h("div", "reasons");
  reasons.forEach((r, i) => { if (i) box.append(h("br")); box.append(String(r)); });
  return box;
}

// -- building a rig's card from its layout ---------------------------------------------------

function keyTile(cls, name, unit) {
  const t = h("div", "key " + cls, h("div", "name", name),
              h("div", "reading", h("span", "val", "—"), unit ? h("span", "unit", unit) : null),
              h("div", "lim"));
  t.title = name;
  return t;
}

function limitText(m) {
  const parts = [];
  if (m.min !== null && m.min !== undefined) parts.push(`min ${fmtKey(m.min)}`);
  if (m.max !== null && m.max !== undefined) parts.push(`max ${fmtKey(m.max)}`);
  return parts.join(" · ");
}

function lampItem(state) {
  const item = h("div", "lamp-item", h("span", "lamp off"), h("span", "label", state.label), h("span", "state-text"));
  item.dataset.state = state.channel;
  item.title = state.channel;
  return item;
}

function rigCard(rig) {
  let st = rigs[rig.name];
  if (!st) {
    const el = h("section", "rig");
    el.id = "rig-" + rig.name;
    const left = h("div", "left", h("div", "verdict", "no cycle yet"), h("div", "lamps"), h("div", "keys"));
    const right = h("div", "right", h("div", "trends"));
    const diag = h("details", "diagnostics", h("summary", null, "Diagnostics"), h("div", "grid diag"), h("ul", "devices"));
    el.append(h("h2"), h("div", "body", left, right, h("div", "grid secondary")), diag, h("div", "events"));
    document.getElementById("rigs").appendChild(el);
    st = rigs[rig.name] = {card: el, layout: null, hist: {}, latest: {}, now_ns: 0, lamps: {}, tiles: {},
                           metricTiles: {}, live: false, drawPending: false};
  }
  const small = h("small", null, rig.description, rig.active_run ? ` — run ${rig.active_run}` : null);
  st.card.querySelector("h2").replaceChildren(rig.name, " ", h("span", "state " + rig.state, rig.state), " ", small);
  st.card.querySelector(".devices").replaceChildren(...rig.devices.map(d =>
    h("li", null, `${d.name}: ${d.state}`, d.last_error ? ` — ${d.last_error}` : null)));
  return st;
}

function applyLayout(st, layout) {
  st.layout = layout;
  const card = st.card;
  card.querySelector(".verdict").hidden = !layout.cycle_noun;   // a kind without cycles has no verdicts
  st.keySet = new Set(layout.key.map(k => k.channel));
  st.diagSet = new Set(layout.diagnostics);
  st.stateSet = new Set(layout.states.map(x => x.channel));
  const keys = card.querySelector(".keys");
  for (const k of layout.key) {
    const t = keyTile("chan", k.label, k.unit);
    t.dataset.channel = k.channel;
    st.tiles[k.channel] = t;
    keys.append(t);
  }
  for (const m of layout.metrics) {
    const t = keyTile("metric", m.label, m.unit);
    t.dataset.metric = m.metric;
    t.querySelector(".lim").textContent = limitText(m);
    st.metricTiles[m.metric] = {tile: t, spec: m};
    keys.append(t);
  }
  const lamps = card.querySelector(".lamps");
  for (const x of layout.states) {
    const item = lampItem(x);
    st.lamps[x.channel] = {item, spec: x};
    lamps.append(item);
  }
  const trends = card.querySelector(".trends");
  st.trendFigs = layout.trends.map(tr => {
    const fig = h("figure", "trend");
    fig.dataset.channels = tr.channels.join(" ");
    fig.append(s("svg", {role: "img", "aria-label": `${tr.title} [${tr.unit}]`}));
    trends.append(fig);
    return {fig, spec: tr};
  });
  st.histChannels = new Set(layout.trends.flatMap(tr => [...tr.channels,
    ...tr.lines.filter(l => l.channel).map(l => l.channel)]));
  st.span_s = Math.max(20, ...layout.trends.map(tr => tr.span_s));
}

// -- live values -----------------------------------------------------------------------------

function setLamp(st, name, value) {
  let lamp = st.lamps[name];
  if (!lamp) {   // a state the kind does not declare: a lamp under its channel's name
    lamp = st.lamps[name] = {item: lampItem({channel: name, label: name.replace(/_/g, " ")}),
                             spec: {channel: name, label: name, tone: "active", values: []}};
    st.card.querySelector(".lamps").append(lamp.item);
  }
  const spec = lamp.spec, dot = lamp.item.querySelector(".lamp"), text = lamp.item.querySelector(".state-text");
  let tone = spec.tone, on = Boolean(value), label = "";
  if (spec.values.length) {
    const v = spec.values.find(x => x.value === Number(value));
    tone = v ? v.tone : "warn"; on = true; label = v ? v.label : String(value);
  }
  dot.className = `lamp ${on ? "on" : "off"} tone-${tone}`;
  lamp.item.dataset.on = on ? "1" : "0";
  text.textContent = label;
}

function smallTile(grid, name, r) {
  const tile = h("div", "ch", h("div", "name", name), h("span", "val"), h("span", "unit", r.unit));
  tile.dataset.channel = name;
  tile.title = name;
  grid.append(tile);
  return tile;
}

function showReadings(st, msg) {
  if (!st.layout) return;
  const card = st.card;
  st.now_ns = msg.t_ns;
  for (const [name, r] of Object.entries(msg.channels)) {
    st.latest[name] = r;
    const age_s = (msg.t_ns - r.t_ns) / 1e9, stale = age_s > STALE_S;
    const note = stale ? `${name}: no new value for ${age_s.toFixed(0)} s` : name;
    if (st.stateSet.has(name) || (typeof r.value === "boolean" && !st.diagSet.has(name))) {
      if (st.tiles[name]) { st.tiles[name].remove(); delete st.tiles[name]; }   // a bit among the key values: a lamp
      setLamp(st, name, r.value);
      st.lamps[name].item.classList.toggle("stale", stale);
      st.lamps[name].item.title = note;
      continue;
    }
    let tile = st.tiles[name];
    if (!tile) {
      const grid = card.querySelector(st.diagSet.has(name) ? ".diag" : ".secondary");
      tile = st.tiles[name] = smallTile(grid, name, r);
    }
    const text = tile.classList.contains("key") ? fmtKey(r.value) : fmt(r.value);
    const val = tile.querySelector(".val");
    if (val.textContent !== text) val.textContent = text;
    tile.classList.toggle("bad", r.quality !== 0);
    tile.classList.toggle("stale", stale);
    tile.title = note;
    if (st.histChannels.has(name) && typeof r.value === "number") {
      const pts = st.hist[name] ||= [];
      const t = r.t_ns / 1e9;
      if (!pts.length || pts[pts.length - 1][0] !== t) pts.push([t, r.value]);
    }
  }
  const oldest = st.now_ns / 1e9 - st.span_s;
  for (const pts of Object.values(st.hist)) {
    let i = 0;
    while (i < pts.length - 1 && pts[i + 1][0] < oldest) i++;
    if (i) pts.splice(0, i);   // keep one point left of the window: the line enters from the edge
  }
  if (!st.drawPending) {
    st.drawPending = true;
    requestAnimationFrame(() => { st.drawPending = false; drawTrends(st); });
  }
}

function showMetrics(st, metrics) {
  for (const [name, {tile, spec}] of Object.entries(st.metricTiles)) {
    const v = metrics ? metrics[name] : undefined;
    if (v === undefined) continue;
    tile.querySelector(".val").textContent = fmtKey(v);
    const out = typeof v === "number" && ((spec.min !== null && v < spec.min) || (spec.max !== null && v > spec.max));
    tile.classList.toggle("out", out);
    tile.classList.toggle("in", typeof v === "number" && !out && (spec.min !== null || spec.max !== null));
  }
}

function verdictBox(st, c, live = true) {
  const box = st.card.querySelector(".verdict");
  const m = c.metrics || {};
  const keys = Object.keys(m).filter(k => m[k] !== null).slice(0, 6);
  box.className = "verdict " + (c.verdict === "ok" ? "v-ok" : "v-nok");
  box.replaceChildren(
    h("b", null, `${c.noun || "cycle"} ${c.cycle_no}: ${String(c.verdict).toUpperCase()}`),
    ...(c.run ? [" ", h("small", null, `run ${c.run}`)] : []),
    h("div", "metrics", ...keys.map(k => h("span", null, `${k} `, h("b", null, fmt(m[k]))))));
  if (c.reasons && c.reasons.length) box.append(reasonsBox(c.reasons));
  showMetrics(st, m);
  if (live) st.live = true;
}

// -- trends ----------------------------------------------------------------------------------

function niceTicks(lo, hi, n) {
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(f => f * mag).find(x => x >= raw) || 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return ticks;
}

function decimalsFor(step) {   // decimals that tell ticks ``step`` apart (0.25 → 2, 0.5 → 1, 2.5 → 1, 50 → 0)
  const e = Math.floor(Math.log10(step) + 1e-9), m = step / Math.pow(10, e);
  return Math.min(6, Math.max(0, -e) + (Math.abs(m - 2.5) < 1e-6 ? 1 : 0));
}

function tickText(v, step) {   // thousands as k from 10 000
  if (Math.abs(v) >= 1e4 && step >= 1000) return (v / 1000).toFixed(decimalsFor(step / 1000)) + "k";
  return v.toFixed(decimalsFor(step));
}

let clipCount = 0;

function drawTrends(st) {
  const now = st.now_ns / 1e9;
  for (const {fig, spec} of st.trendFigs) drawTrend(fig, spec, st, now);
}

function drawTrend(fig, spec, st, now) {
  const svg = fig.querySelector("svg");
  const W = Math.max(200, Math.round(svg.clientWidth || fig.clientWidth || 600)), H = 210;
  const L = 64, R = 12, T = 28, B = 26, pw = W - L - R, ph = H - T - B, span = spec.span_s;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const series = spec.channels.map(c => st.hist[c] || []);
  const lines = spec.lines.map(l => {
    const live = l.channel ? st.latest[l.channel] : null;
    return {...l, at: l.channel ? (live && typeof live.value === "number" ? live.value : null) : l.value};
  });
  const vals = series.flatMap(p => p.map(x => x[1])).concat(lines.filter(l => l.at !== null).map(l => l.at));
  for (const l of lines) if (l.channel) vals.push(...(st.hist[l.channel] || []).map(x => x[1]));
  let lo = vals.length ? Math.min(...vals) : 0, hi = vals.length ? Math.max(...vals) : 1;
  if (hi - lo < 1e-9 * Math.max(1, Math.abs(hi))) { lo -= Math.max(1, Math.abs(lo) * 0.05); hi += Math.max(1, Math.abs(hi) * 0.05); }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const X = t => L + pw - (now - t) / span * pw, Y = v => T + ph - (v - lo) / (hi - lo) * ph;
  const kids = [];
  // title, unit and the clock time of "now"
  kids.push(s("text", {x: L, y: 17, class: "title"}, spec.title));
  kids.push(s("text", {x: 6, y: 17, class: "axis-unit"}, spec.unit ? `[${spec.unit}]` : ""));
  kids.push(s("text", {x: W - R, y: 17, "text-anchor": "end", class: "clock"},
              now ? clock(now * 1000) : ""));
  // y axis: ticks and grid
  const grid = s("g", {class: "grid"}), yticks = s("g", {class: "y-ticks"});
  const ticks = niceTicks(lo, hi, 4), tstep = ticks.length > 1 ? ticks[1] - ticks[0] : 1;
  for (const v of ticks) {
    grid.append(s("line", {x1: L, x2: L + pw, y1: Y(v), y2: Y(v)}));
    yticks.append(s("text", {x: L - 6, y: Y(v) + 4, "text-anchor": "end"}, tickText(v, tstep)));
  }
  // x axis: seconds ago
  const xticks = s("g", {class: "x-ticks"}), step = span / 4;
  for (let k = 0; k <= 4; k++) {
    const ago = span - k * step, x = L + k * step / span * pw;
    grid.append(s("line", {x1: x, x2: x, y1: T, y2: T + ph}));
    xticks.append(s("text", {x, y: H - 8, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle"},
                    ago ? `−${+ago.toFixed(1)} s` : "now"));
  }
  kids.push(grid, yticks, xticks, s("path", {class: "axis", d: `M${L},${T}V${T + ph}H${L + pw}`, fill: "none"}));
  // the data, clipped to the plot
  const clipId = fig.dataset.clip ||= `trend-clip-${++clipCount}`;
  const clip = s("clipPath", {id: clipId}); clip.append(s("rect", {x: L, y: T, width: pw, height: ph}));
  kids.push(s("defs")); kids[kids.length - 1].append(clip);
  const path = pts => pts.map(([t, v], i) => `${i ? "L" : "M"}${X(t).toFixed(1)},${Y(v).toFixed(1)}`).join("");
  const data = s("g", {"clip-path": `url(#${clipId})`});
  series.forEach((pts, k) => {
    if (pts.length < 2) return;
    const p = s("path", {class: "series", d: path(pts), stroke: COLORS[k % COLORS.length]});
    p.dataset.channel = spec.channels[k];
    data.append(p);
  });
  kids.push(data);
  // limits, set-points and references
  const refs = s("g", {class: "refs"});
  for (const l of lines) {
    if (l.at === null) continue;
    const hist = l.channel ? st.hist[l.channel] || [] : [];
    const el = hist.length >= 2
      ? s("path", {class: `ref ${l.kind}`, d: path(hist), fill: "none", "clip-path": `url(#${clipId})`})
      : s("line", {class: `ref ${l.kind}`, x1: L, x2: L + pw, y1: Y(l.at), y2: Y(l.at)});
    el.dataset.kind = l.kind; el.dataset.value = String(l.at); el.dataset.label = l.label;
    refs.append(el, s("text", {x: L + pw - 4, y: Y(l.at) - 5, "text-anchor": "end", class: l.kind},
                       `${l.label} ${fmtKey(l.at)}`));
  }
  kids.push(refs);
  if (spec.channels.length > 1) {   // a legend for grouped channels
    const legend = s("g", {class: "legend"});
    let x = L + 8;
    spec.channels.forEach((c, k) => {
      const t = s("text", {x, y: T + 14, style: `fill:${COLORS[k % COLORS.length]}`}, c);
      legend.append(t); x += 8 + 7.5 * c.length;
    });
    kids.push(legend);
  }
  svg.replaceChildren(...kids);
}

// -- the feed ----------------------------------------------------------------------------------

const sockets = {};   // rig -> WebSocket

function connect(name, st) {
  if (sockets[name] && sockets[name].readyState <= 1) return;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}${location.pathname.replace(/\/$/, "")}/api/rigs/${encodeURIComponent(name)}/live`);
  sockets[name] = ws;
  ws.onmessage = ev => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "readings") showReadings(st, msg);
    else if (msg.type === "cycle") verdictBox(st, msg);
    else if (msg.type === "event") {
      const log = st.card.querySelector(".events");
      log.prepend(h("div", msg.level, `${clock(msg.t_ns / 1e6)} ${msg.kind}: ${msg.message}`));
      while (log.children.length > 6) log.lastElementChild.remove();   // the newest six
    }
  };
  ws.onclose = ev => { if (ev.code === 4401) location.reload(); };
}

async function loadLayout(name, st) {
  if (st.layout || st.layoutLoading) return;
  st.layoutLoading = true;
  let problem = "";
  try {
    const r = await fetch(`api/rigs/${encodeURIComponent(name)}/layout`);
    if (r.status === 401) { location.reload(); return; }
    if (r.ok) applyLayout(st, await r.json());
    else problem = `HTTP ${r.status}`;
  } catch (e) {   // one rig's trouble never stops the others' cards
    problem = String(e);
  } finally {
    st.layoutLoading = false;
  }
  let note = st.card.querySelector(".layout-problem");
  if (!note) { note = h("div", "layout-problem"); st.card.append(note); }
  note.textContent = problem ? `cannot show this rig's values yet (layout: ${problem}); retrying` : "";
  note.hidden = !problem;
}

async function refreshRigs() {
  try {
    const r = await fetch("api/rigs");
    if (r.status === 401) { location.reload(); return; }
    const list = await r.json();
    for (const rig of list) {
      const st = rigCard(rig);
      await loadLayout(rig.name, st);
      if (!st.layout) continue;
      if (rig.last_verdict && !st.live) {   // before the first live cycle event
        verdictBox(st, {verdict: rig.last_verdict, cycle_no: rig.last_cycle, noun: st.layout.cycle_noun,
                        reasons: rig.last_reasons, metrics: rig.last_metrics}, false);
      }
      connect(rig.name, st);
    }
    document.getElementById("status").textContent = "live · " + clock(Date.now());
  } catch (e) {
    document.getElementById("status").textContent = "no connection to the service (" + e + ")";
  }
}

addEventListener("resize", () => { for (const st of Object.values(rigs)) if (st.layout) drawTrends(st); });
setInterval(refreshRigs, 2000);
refreshRigs();
