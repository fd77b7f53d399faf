// Shared by every page: the live event stream, a JSON fetch that sends the session, and actions.
"use strict";
const Tapedeck = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const text = (value) => (value === null || value === undefined ? "—" : String(value));
  const esc = (value) => text(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  async function json(url, options = {}) {
    const response = await fetch(url, { credentials: "same-origin", ...options });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }
  function stream(onEvent) {
    const live = document.getElementById("live");
    const source = new EventSource("/events/stream");
    source.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
    source.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
    source.onmessage = (message) => onEvent(JSON.parse(message.data));
    for (const type of ["task.submitted", "task.text", "task.first", "task.completed", "task.failed", "task.lost",
      "task.revived", "task.files_stored", "task.files_failed", "task.files_expiring", "subscription.disabled"]) {
      source.addEventListener(type, (message) => onEvent(JSON.parse(message.data)));
    }
    return source;
  }
  // Buttons with data-action (a URL), data-method (POST unless said) and data-body (JSON), even
  // ones drawn after the page loaded: one listener on the document.
  function actions(onDone) {
    document.addEventListener("click", async (click) => {
        const button = click.target.closest("button[data-action]");
        if (!button) return;
        button.disabled = true;
        const notice = document.getElementById("notice");
        const headers = { "X-CSRF-Token": csrf };
        const options = { method: button.dataset.method || "POST", headers };
        if (button.dataset.body) { headers["Content-Type"] = "application/json"; options.body = button.dataset.body; }
        try {
          const answer = await json(button.dataset.action, options);
          if (notice) notice.textContent = answer.message || "done";
          if (onDone) onDone(answer);
        } catch (error) {
          if (notice) notice.textContent = String(error);
        } finally {
          button.disabled = false;
        }
    });
  }
  const canAct = document.querySelector('meta[name="can-act"]')?.content === "yes";
  return { json, stream, actions, esc, text, canAct };
})();
