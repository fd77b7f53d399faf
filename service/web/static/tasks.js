// The task list: a task that changes while the page is open shows its new status at once.
"use strict";
(() => {
  const STATUS = { "task.submitted": "pending", "task.text": "text", "task.first": "first", "task.completed": "complete",
    "task.failed": "failed", "task.lost": "lost" };
  Tapedeck.stream((event) => {
    const row = document.querySelector(`tr[data-task="${CSS.escape(event.data.task_id || "")}"]`);
    const status = STATUS[event.type];
    if (row && status) {
      const badge = row.querySelector(".status");
      badge.textContent = status; badge.className = `status ${status}`;
    }
  });
})();
