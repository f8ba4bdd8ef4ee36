// The operator page's alarm panel (section#alarms, at the top): the open alarms — active ones, and
// cleared ones nobody acknowledged yet — highest priority and newest first, each acknowledged here
// with a comment (POST api/alarms/{id}/ack). Polled every 2 s. Everything the server sends is shown
// as text: elements are built here, never parsed from HTML. Rows are kept by alarm id, so a comment
// being typed survives the refresh.
"use strict";

(() => {
  const POLL_MS = 2000;
  const RANK = {high: 0, medium: 1, low: 2};
  const STATE_TEXT = {
    active_unacked: "active, not acknowledged", active_acked: "active, acknowledged",
    cleared_unacked: "cleared, not acknowledged", cleared: "cleared",
  };
  const rows = new Map();   // alarm id -> {row, state, ...}

  const style = document.createElement("style");
  style.textContent = `
#alarms { padding: 8px 16px; background: #141a21; border-bottom: 2px solid #26313c; }
#alarms .al-head { display: flex; align-items: baseline; gap: 16px; font-size: 20px; font-weight: 600; }
#alarms .al-head small { font-size: 15px; font-weight: normal; color: #9fb3c3; }
#alarms .al-none { color: #9fb3c3; font-size: 16px; padding: 4px 0; }
#alarms .al-error { color: #ff8a80; font-size: 15px; }
#alarms ul { list-style: none; margin: 6px 0 0; padding: 0; display: grid; gap: 6px; }
#alarms li { display: grid; grid-template-columns: auto minmax(0, 1fr) auto; gap: 6px 14px; align-items: center;
  padding: 8px 12px; border-radius: 6px; background: #26313c; border-left: 10px solid #6b7785; font-size: 18px; }
#alarms li.p-high { border-left-color: #ff3b3b; } #alarms li.p-medium { border-left-color: #ffb300; }
#alarms li.p-low { border-left-color: #40a8ff; }
#alarms li.s-active_unacked { background: #3a1f22; }
#alarms li.s-cleared_unacked, #alarms li.s-active_acked { background: #26313c; }
#alarms .al-prio { font-weight: 700; text-transform: uppercase; font-size: 15px; min-width: 70px; }
#alarms .al-msg { overflow-wrap: anywhere; min-width: 0; }
#alarms .al-meta { font-size: 14px; color: #9fb3c3; display: block; }
#alarms .al-act { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; justify-content: flex-end; }
#alarms .al-comment { font-size: 16px; padding: 6px 8px; width: 260px; max-width: 40vw; border-radius: 4px;
  border: 1px solid #4a5663; background: #101418; color: #e8eef2; }
#alarms .al-ack { font-size: 16px; padding: 6px 14px; border-radius: 4px; border: 0; background: #40a8ff;
  color: #0b1016; font-weight: 700; cursor: pointer; }
#alarms .al-acked { font-size: 14px; color: #9fb3c3; max-width: 360px; overflow-wrap: anywhere; }
#alarms .al-fail { color: #ff8a80; font-size: 14px; width: 100%; text-align: right; }
@media (max-width: 1300px) { #alarms li { grid-template-columns: auto minmax(0, 1fr); }
  #alarms .al-act { grid-column: 1 / -1; justify-content: flex-start; } }
`;
  document.head.append(style);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString([], {hour12: false}) : "";
  }

  function section() {
    let s = document.getElementById("alarms");
    if (!s) {   // the page should have it; keep the panel on top anyway
      s = el("section");
      s.id = "alarms";
      document.body.prepend(s);
    }
    return s;
  }

  const root = section();
  const head = el("div", "al-head", "Alarms");
  const count = el("small");
  head.append(count);
  const error = el("div", "al-error");
  const none = el("div", "al-none", "No active alarms");
  const list = el("ul");
  root.replaceChildren(head, error, none, list);

  function actions(a, item) {
    const box = el("div", "al-act");
    if (a.state === "active_unacked" || a.state === "cleared_unacked") {
      const input = el("input", "al-comment");
      input.type = "text";
      input.placeholder = "comment (required)";
      input.maxLength = 2000;
      input.setAttribute("aria-label", `comment acknowledging alarm ${a.id}`);
      const button = el("button", "al-ack", "Acknowledge");
      button.type = "button";
      const fail = el("div", "al-fail");
      const send = async () => {
        const comment = input.value.trim();
        if (!comment) { fail.textContent = "a comment is required"; input.focus(); return; }
        button.disabled = true;
        fail.textContent = "";
        try {
          const r = await fetch(`api/alarms/${a.id}/ack`, {
            method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({comment}),
          });
          if (!r.ok) {
            let detail = `HTTP ${r.status}`;
            try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
            fail.textContent = String(detail);
          } else {
            show(await r.json());
          }
        } catch (e) {
          fail.textContent = "cannot reach the service";
        } finally {
          button.disabled = false;
        }
      };
      button.addEventListener("click", send);
      input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") send(); });
      box.append(input, button, fail);
    } else {
      box.append(el("span", "al-acked", `acknowledged by ${a.acked_by} ${when(a.acked_at)}: ${a.ack_comment}`));
    }
    return box;
  }

  function show(a) {   // add or update one alarm's row (a closed alarm leaves the panel)
    const known = rows.get(a.id);
    if (a.state === "cleared") {
      if (known) { known.row.remove(); rows.delete(a.id); }
      return;
    }
    if (known && known.state === a.state) return;
    const row = el("li", `p-${a.priority} s-${a.state}`);
    row.dataset.alarmId = String(a.id);
    row.dataset.state = a.state;
    row.dataset.priority = a.priority;
    const msg = el("div", "al-msg", a.message);
    const where = a.rig ? `${a.rig} · ` : "";
    msg.append(el("span", "al-meta", `${where}${a.source} · raised ${when(a.raised_at)}`
      + (a.cleared_at ? ` · cleared ${when(a.cleared_at)}` : "") + ` · ${STATE_TEXT[a.state] || a.state}`));
    row.append(el("span", "al-prio", a.priority), msg, actions(a, row));
    if (known) known.row.replaceWith(row);
    rows.set(a.id, {row, state: a.state, priority: a.priority, raised_ns: a.raised_ns});
    order();
  }

  function order() {
    const sorted = [...rows.values()].sort((x, y) =>
      (RANK[x.priority] ?? 9) - (RANK[y.priority] ?? 9) || y.raised_ns - x.raised_ns);
    for (const r of sorted) list.append(r.row);
    const active = sorted.filter((r) => r.state.startsWith("active")).length;
    const unacked = sorted.filter((r) => r.state.endsWith("unacked")).length;
    count.textContent = sorted.length ? `${active} active, ${unacked} to acknowledge` : "";
    none.hidden = sorted.length > 0;
  }

  async function get(query) {
    const r = await fetch(`api/alarms?${query}`);
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    return (await r.json()).alarms;
  }

  async function poll() {
    try {
      const open = [...await get("active=true&limit=200"), ...await get("state=cleared_unacked&limit=200")];
      const ids = new Set(open.map((a) => a.id));
      for (const [id, r] of rows) {
        if (!ids.has(id)) { r.row.remove(); rows.delete(id); }
      }
      open.forEach(show);
      order();
      error.textContent = "";
    } catch (e) {
      error.textContent = `alarms cannot be read: ${e.message}`;
    }
    setTimeout(poll, POLL_MS);
  }

  poll();
})();
