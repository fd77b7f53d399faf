// One task: its status and timeline follow the event stream; actions post with the CSRF token.
"use strict";
(() => {
  const badge = document.getElementById("status");
  const task = badge.dataset.task;
  async function reload() {
    const t = await Tapedeck.json(`/tasks/${encodeURIComponent(task)}`);
    badge.textContent = t.status; badge.className = `status ${t.status}`;
    document.getElementById("archive").textContent = t.archive;
  }
  Tapedeck.stream((event) => {
    if (event.data.task_id !== task) return;
    const item = document.createElement("li");
    item.innerHTML = `<time>${Tapedeck.esc(event.timestamp)}</time> <b>${Tapedeck.esc(event.type)}</b> <span>event</span>`;
    document.getElementById("timeline").append(item);
    reload().catch(console.warn);
  });
  Tapedeck.actions(() => reload().catch(console.warn));
})();
