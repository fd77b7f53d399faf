// The overview: numbers from /ops/summary (again each few seconds and on every event), the
// hour's chart drawn here, and the live events as they arrive.
"use strict";
(() => {
  const COLORS = { callback: "#2f7de1", poll: "#e07b24", submit: "#5aa55a", replay: "#9a5bd1" };
  const { esc } = Tapedeck;
  const at = (object, path) => path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), object);
  const num = (value, round) => (value === null || value === undefined ? "—" : round ? Number(value).toFixed(round) : String(value));
  const rows = (id, items, cells) => {
    const body = document.getElementById(id);
    const columns = body.closest("table").querySelectorAll("thead th").length;
    body.innerHTML = items.length ? items.map((i) => `<tr>${cells(i).join("")}</tr>`).join("")
      : `<tr><td colspan="${columns}" class="none">none</td></tr>`;
  };
  const td = (value, cls) => `<td${cls ? ` class="${cls}"` : ""}>${esc(value)}</td>`;

  function render(s) {
    for (const cell of document.querySelectorAll("[data-k]")) {
      const value = at(s, cell.dataset.k);
      cell.textContent = num(value, cell.dataset.round ? Number(cell.dataset.round) : 0);
    }
    rows("queues", Object.entries(s.queues), ([name, q]) => [td(name), td(q.due, "num"), td(q.oldest_due_age_s.toFixed(1), "num")]);
    rows("loss", Object.entries(s.callback_loss), ([stage, l]) => [td(stage), td(l.callback, "num"), td(l.poll, "num"), td((l.loss * 100).toFixed(1), "num")]);
    rows("budgets", Object.entries(s.budgets), ([name, b]) => [td(name), td(b.used, "num"), td(b.limit, "num"), td(b.paused_s.toFixed(1), "num")]);
    rows("workers", s.workers, (w) => [td(w.name), td(w.state), td(w.job)]);
    rows("subscriptions", s.subscriptions, (x) => [td(x.description || x.id), td(x.url, "url"), td(x.attempts, "num"),
      td(x.success_rate === null ? "—" : (x.success_rate * 100).toFixed(1), "num"),
      td(x.oldest_undelivered_age_s === null ? "—" : x.oldest_undelivered_age_s.toFixed(1), "num"),
      x.enabled ? td("enabled") : `<td>disabled ${Tapedeck.canAct ? `<button data-action="/subscriptions/${encodeURIComponent(x.id)}" data-method="PATCH" data-body='{"enabled": true}'>Re-enable</button>` : ""}</td>`]);
    rows("at-risk", s.files_at_risk_soonest, (r) => [`<td><a href="/ui/tasks/${encodeURIComponent(r.task_id)}">${esc(r.task_id)}</a></td>`,
      td(r.expires_at), `<td class="num" data-expires="${esc(r.expires_at)}"></td>`]);
    countdown();
    rows("rejected", s.rejected_callbacks, (r) => [td(r.at), td(r.task_id || "—"), td(r.http_status, "num"), td(r.reason),
      // A callback refused for who sent it (401, 403) is replayed only by the CLI, after a look.
      Tapedeck.canAct && r.replayable ? `<td><button data-action="/ops/raw/${encodeURIComponent(r.id)}/replay">Replay</button></td>` : "<td></td>"]);
    chart(s.transitions_per_minute);
  }

  function chart(minutes) {
    const canvas = document.getElementById("chart");
    const ctx = canvas.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = width * ratio; canvas.height = height * ratio; ctx.scale(ratio, ratio);
    ctx.clearRect(0, 0, width, height);
    const sources = Object.keys(COLORS);
    const top = Math.max(1, ...minutes.map((m) => sources.reduce((sum, k) => sum + (m[k] || 0), 0)));
    const style = getComputedStyle(document.body);
    ctx.fillStyle = style.color; ctx.font = "11px system-ui";
    ctx.fillText(`${top} / min`, 2, 10);
    const bar = (width - 40) / minutes.length, base = height - 14;
    minutes.forEach((m, i) => {
      let y = base;
      for (const k of sources) {
        const h = ((m[k] || 0) / top) * (base - 14);
        if (h > 0) { ctx.fillStyle = COLORS[k]; ctx.fillRect(40 + i * bar, y - h, Math.max(1, bar - 1), h); y -= h; }
      }
    });
    ctx.fillStyle = style.color; ctx.fillText("−60 min", 40, height - 2); ctx.fillText("now", width - 22, height - 2);
    document.getElementById("legend").innerHTML = sources.map((k) => `<span><i style="background:${COLORS[k]}"></i>${k}</span>`).join("");
  }

  // Each file at risk counts down to its deletion, every second, between summaries.
  function countdown() {
    for (const cell of document.querySelectorAll("[data-expires]")) {
      const left = Math.max(0, (Date.parse(cell.dataset.expires) - Date.now()) / 1000);
      const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), sec = Math.floor(left % 60);
      cell.textContent = `${h} h ${String(m).padStart(2, "0")} min ${String(sec).padStart(2, "0")} s`;
    }
  }
  setInterval(countdown, 1000);

  let pending = null;
  async function refresh() {
    try { render(await Tapedeck.json("/ops/summary")); } catch (error) { console.warn(error); }
  }
  function soon() { if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 300); }

  const events = document.getElementById("events");
  Tapedeck.stream((event) => {
    const item = document.createElement("li");
    const task = event.data.task_id;
    item.innerHTML = `<time>${esc(event.timestamp)}</time> <b>${esc(event.type)}</b> ` +
      (task ? `<a href="/ui/tasks/${encodeURIComponent(task)}">${esc(task)}</a>` : esc(event.data.subscription_id));
    events.prepend(item);
    while (events.children.length > 30) events.lastChild.remove();
    soon();
  });
  Tapedeck.actions(() => refresh());
  render(JSON.parse(document.getElementById("summary").textContent));
  setInterval(refresh, 5000);
  window.addEventListener("resize", soon);
})();
