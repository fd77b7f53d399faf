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
  function actions(onDone) {
    for (const button of document.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", async () => {
        button.disabled = true;
        const notice = document.getElementById("notice");
        try {
          const answer = await json(button.dataset.action, { method: "POST", headers: { "X-CSRF-Token": csrf } });
          if (notice) notice.textContent = answer.message || "done";
          if (onDone) onDone(answer);
        } catch (error) {
          if (notice) notice.textContent = String(error);
        } finally {
          button.disabled = false;
        }
      });
    }
  }
  return { json, stream, actions, esc, text };
})();
