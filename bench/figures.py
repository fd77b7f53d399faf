"""The soak's figures: what Tapedeck holds, against the sandbox's own record of the same tasks.

A `Snapshot` reads both sides (the sandbox's tasks, callbacks and transfer log; Tapedeck's task
views, stored files and event log; what each subscriber received); `measure` turns the last one
into `Figures`, and `table` prints them with each goal.
"""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from fault_plan import is_as_planned
from subscribers import Subscriber

from sandbox.media import expected_sha256

FINAL = ("complete", "failed")
# A music track's "Original…" files (source_audio_url and the like) are the input's, not what
# was generated: Tapedeck archives a track's audio, stream and image (TRACK_FILE_FIELDS).
# A transfer begun this long before a worker's SIGKILL may have been under way in it (the
# soak's DOWNLOAD_TIMEOUT_S): sent whole, its bytes died with the process.
KILLED_WITHIN_S = 3.0
REDIS_AWAY = ("ConnectionError", "BusyLoadingError", "TimeoutError")
NOT_ARCHIVED = ("_source.mp3", "_source_stream", "_source.png")
SETTLED_FILES = ("stored", "failed", "expired")


class Submission(Protocol):
    task_id: str
    faults: dict[str, Any]

    @property
    def planned(self) -> Any: ...


def is_quiet(record: dict[str, Any]) -> bool:
    """The sandbox has nothing more to send for the task."""
    outlook = record["outlook"]
    return record["stage"] in FINAL and not outlook["scheduled"] and not outlook["inFlight"]


def is_settled(view: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    """Tapedeck holds the task in the sandbox's final stage, with every file settled."""
    return (
        view is not None
        and is_quiet(record)
        and view["status"] == record["stage"]
        and all(a["state"] in SETTLED_FILES for a in view["artifacts"])
    )


def is_redis_away(error: str) -> bool:
    """Whether an error line ("redis.exceptions.ConnectionError: Error 111 ...") is Redis away."""
    return error.split(":", 1)[0].endswith(REDIS_AWAY)


def file_name(url: str) -> str:
    return url.split("?", 1)[0].rsplit("/", 1)[-1]


def all_events(http: httpx.Client) -> list[dict[str, Any]]:
    """The whole event log, oldest first (task events only: the others go to nobody)."""
    events: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = http.get("/events", params={"limit": 200} | ({"after": after} if after else {}))
        page.raise_for_status()
        found = page.json()
        events += [e for e in found["events"] if e["type"].startswith("task.")]
        if not found.get("next_after") or not found["events"]:
            return events
        after = found["next_after"]


@dataclass
class Snapshot:
    records: dict[str, dict[str, Any]]  # the sandbox's, by task id
    views: dict[str, dict[str, Any] | None]  # Tapedeck's, by task id (None: it could not be read)
    events: list[dict[str, Any]]
    received: dict[str, list[Any]]  # subscriber name → deliveries in arrival order
    counters: dict[str, int]
    transfers: dict[str, Any] | None  # the sandbox's transfer log, when it keeps one

    @classmethod
    def take(
        cls,
        web: str,
        sandbox: str,
        task_ids: Sequence[str],
        subscribers: Iterable[Subscriber],
        previous: Snapshot | None = None,
    ) -> Snapshot:
        """Both sides now; a task settled in `previous` is not read again (nothing more happens to it)."""
        with httpx.Client(base_url=sandbox, timeout=60) as kie:
            records = {t["taskId"]: t for t in kie.get("/_sandbox/tasks").json()["tasks"]}
            counters = kie.get("/_sandbox/counters").json()["counters"]
            log = kie.get("/_sandbox/files/log")
            transfers = log.json() if log.status_code == 200 else None
        views: dict[str, dict[str, Any] | None] = {}
        with httpx.Client(base_url=web, timeout=30) as http:
            for task_id in task_ids:
                kept = previous.views.get(task_id) if previous else None
                if previous and kept is not None and is_settled(kept, previous.records[task_id]):
                    views[task_id] = kept
                    continue
                try:
                    answer = http.get(f"/tasks/{task_id}")
                    views[task_id] = answer.json() if answer.status_code == 200 else None
                except httpx.HTTPError:
                    views[task_id] = None
            try:
                events = all_events(http)
            except httpx.HTTPError:
                events = previous.events if previous else []
        received = {s.name: s.deliveries() for s in subscribers}
        return cls(records, views, events, received, counters, transfers)

    def is_drained(self) -> bool:
        if not all(is_settled(view, self.records[task_id]) for task_id, view in self.views.items()):
            return False
        wanted = {e["data"]["id"] for e in self.events}
        return all(wanted <= {d.event_id for d in got} for got in self.received.values())


@dataclass
class Figures:
    tasks: int
    kinds: Counter[str]
    faults: Counter[str]  # as planned, by kind of fault
    injected: dict[str, int]  # as the sandbox counted them
    actions: Counter[str]
    in_final_state: int
    files_expected: int
    files_right: int
    duplicate_transfers: int
    duplicates_at_kills: int  # of those, repeats of a transfer under way when its worker was killed
    transfer_log: bool  # whether the duplicates come from the sandbox's transfer log
    transfers_dropped: int
    acked_missing: int
    events: int
    events_missing: dict[str, int]
    events_out_of_order: dict[str, int]
    stuck: list[str]
    submitted_in: float
    drained_in: float | None
    misplaced_faults: int = 0  # tasks whose faults at the sandbox are not the ones queued for them
    unknown_upstream: list[str] = field(default_factory=list)  # sandbox tasks no submission returned
    failed_jobs: list[tuple[str, str]] = field(default_factory=list)  # RQ's, with each last error line
    chaos_errors: list[str] = field(default_factory=list)
    died: dict[str, int] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)  # a line per task or file found wrong

    @property
    def failed_jobs_unexpected(self) -> list[tuple[str, str]]:
        """A download job cut off by Redis going away fails by design (its lease brings it back)."""
        return [(job, error) for job, error in self.failed_jobs if not is_redis_away(error)]

    def short_of_goal(self) -> list[str]:
        short = []
        if self.in_final_state < self.tasks:
            short.append(f"tasks in the true final state: {self.in_final_state}/{self.tasks}")
        if self.files_right < self.files_expected:
            short.append(f"files stored with the sandbox's sha256: {self.files_right}/{self.files_expected}")
        if self.duplicate_transfers > self.duplicates_at_kills:
            unexplained = self.duplicate_transfers - self.duplicates_at_kills
            short.append(f"duplicate transfers (not of a transfer cut by a worker's SIGKILL): {unexplained}")
        if self.transfers_dropped:
            short.append(f"transfer log entries dropped (duplicates unverifiable): {self.transfers_dropped}")
        if self.acked_missing:
            short.append(f"acked callbacks missing from history: {self.acked_missing}")
        for name, count in self.events_missing.items():
            if count:
                short.append(f"events missing from subscriber {name}'s deliveries: {count}")
        for name, count in self.events_out_of_order.items():
            if count:
                short.append(f"tasks whose events reached subscriber {name} out of order: {count}")
        if self.unknown_upstream:
            short.append(f"tasks created upstream that no submission returned: {len(self.unknown_upstream)}")
        if self.misplaced_faults:
            short.append(f"tasks that did not get the faults queued for them: {self.misplaced_faults}")
        if self.failed_jobs_unexpected:
            short.append(f"RQ jobs failed other than by Redis going away: {len(self.failed_jobs_unexpected)}")
        if self.stuck:
            short.append(f"stuck tasks: {len(self.stuck)}")
        if self.drained_in is None:
            short.append("the system did not drain within --drain-s")
        if self.died:
            short.append(f"processes that died on their own: {self.died}")
        if self.chaos_errors:
            short.append(f"kills or outages that failed: {len(self.chaos_errors)}")
        return short


def check_files(
    view: dict[str, Any], record: dict[str, Any], files: Path, file_bytes: int
) -> tuple[int, int, list[str]]:
    """(files the sandbox published, those Tapedeck stored with their sha256, what is wrong)."""
    published = {
        name: url
        for name, url in (record["files"] if record["stage"] == "complete" else {}).items()
        if not name.endswith(NOT_ARCHIVED)
    }
    stored = {file_name(a["url"]): a for a in view["artifacts"]}
    right, wrong = 0, []
    for name, url in sorted(published.items()):
        artifact = stored.get(name)
        want = expected_sha256(url, file_bytes)
        if artifact is None or artifact["state"] != "stored":
            state = artifact["state"] if artifact else "unknown to Tapedeck"
            error = artifact.get("last_error") if artifact else None
            wrong.append(f"{record['taskId']} {name}: {state} ({error})")
            continue
        path = files / artifact["path"]
        got = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "no such file"
        if got == want and artifact["sha256"] == want:
            right += 1
        else:
            wrong.append(f"{record['taskId']} {name}: stored {got[:12]}, recorded {artifact['sha256']}")
    return len(published), right, wrong


def acked_missing(view: dict[str, Any], record: dict[str, Any]) -> tuple[int, list[str]]:
    """Callbacks the sandbox saw answered 200 that the task's history does not hold, with a line
    for each kind short (the sandbox's attempts of that kind, Tapedeck's callback history)."""
    acked = Counter(c["kind"] for c in record["callbacks"] if c["status"] == 200)
    held = Counter(h["stage"] for h in view["history"] if h.get("source") == "callback")
    missing, lines = 0, []
    for kind, n in sorted(acked.items()):
        if n > held[kind]:
            missing += n - held[kind]
            sent = [c for c in record["callbacks"] if c["kind"] == kind]
            history = [h for h in view["history"] if h["stage"] == kind]
            lines.append(f"{record['taskId']} {kind}: acked {n}, in history {held[kind]}: {sent} / {history}")
    return missing, lines


def duplicate_transfers(
    snapshot: Snapshot, task_ids: set[str], files_expected: int, kills: Sequence[float]
) -> tuple[int, int, list[str]]:
    """Complete GETs of a file beyond its first, from the sandbox's transfer log: how many, how
    many of them repeat a transfer that was under way (begun within KILLED_WITHIN_S) when a worker
    was SIGKILLed at one of `kills` (its bytes died with it), and a line for each file. Without a
    log, from the sandbox's count of complete transfers (exact when every file was stored: nothing
    else is fetched from the sandbox, and each stored file was sent whole once, or cut and finished)."""
    transfers = snapshot.transfers
    if transfers is None:
        return max(0, snapshot.counters.get("files.completed", 0) - files_expected), 0, []
    of_file: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for t in transfers["transfers"]:
        if t["task_id"] in task_ids:
            of_file[(t["task_id"], t["name"])].append(t)
    count, killed, lines = 0, 0, []
    for (task_id, name), seen in sorted(of_file.items()):
        complete = [t for t in seen if t["method"] == "GET" and t["complete"]]
        if len(complete) < 2:
            continue
        count += len(complete) - 1
        cut = sum(1 for t in complete[:-1] if any(0 <= k - t["at"] <= KILLED_WITHIN_S for k in kills))
        killed += cut
        shown = "; ".join(
            f"{t['at']:.3f} {t['method']} {t['range']} {t['status']} {t['bytes']} B"
            + (" complete" if t["complete"] else "")
            + (f" {t['fault']}" if t["fault"] else "")
            for t in seen
        )
        why = f", {cut} under way at a worker's SIGKILL" if cut else ""
        lines.append(f"{task_id} {name} sent whole {len(complete)} times{why}: {shown}")
    return count, killed, lines


def deliveries_figures(snapshot: Snapshot) -> tuple[dict[str, int], dict[str, int]]:
    """Per subscriber: events never delivered, and tasks whose events came out of log order."""
    order: dict[str, list[str]] = defaultdict(list)
    for event in snapshot.events:
        order[event["data"]["task_id"]].append(event["data"]["id"])
    missing, out_of_order = {}, {}
    for name, got in snapshot.received.items():
        first_seen: dict[str, list[str]] = defaultdict(list)
        seen: set[str] = set()
        for delivery in got:
            if delivery.event_id not in seen:
                seen.add(delivery.event_id)
                first_seen[delivery.task_id].append(delivery.event_id)
        missing[name] = sum(1 for e in snapshot.events if e["data"]["id"] not in seen)
        out_of_order[name] = sum(
            1
            for task_id, ids in order.items()
            if [i for i in first_seen[task_id] if i in ids] != [i for i in ids if i in seen]
        )
    return missing, out_of_order


def measure(
    snapshot: Snapshot,
    submitted: Sequence[Submission],
    actions: Counter[str],
    chaos_errors: list[str],
    died: dict[str, int],
    submitted_in: float,
    drained_in: float | None,
    files: Path,
    file_bytes: int,
    failed_jobs: list[tuple[str, str]],
    kills: Sequence[float],
) -> Figures:
    final = expected = right = missing_acks = 0
    wrong: list[str] = []
    stuck = []
    misplaced = 0
    for task in submitted:
        view, record = snapshot.views[task.task_id], snapshot.records[task.task_id]
        if not is_as_planned(task.faults, record["faults"]):
            misplaced += 1
            wrong.append(f"{task.task_id}: faults {record['faults']}, queued {task.faults}")
        if not is_settled(view, record):
            stuck.append(task.task_id)
        if view is None:
            wrong.append(f"{task.task_id}: Tapedeck could not show it")
            continue
        if view["status"] == record["stage"] and record["stage"] in FINAL:
            final += 1
        else:
            wrong.append(f"{task.task_id}: Tapedeck {view['status']}, the sandbox {record['stage']}")
        published, stored, bad = check_files(view, record, files, file_bytes)
        expected, right, wrong = expected + published, right + stored, wrong + bad
        unheld, lines = acked_missing(view, record)
        missing_acks, wrong = missing_acks + unheld, wrong + lines
    missing, out_of_order = deliveries_figures(snapshot)
    duplicates, killed, sent_twice = duplicate_transfers(
        snapshot, {t.task_id for t in submitted}, expected, kills
    )
    faults = Counter(label for task in submitted for label in task.planned.labels)
    kept = ("callbacks.duplicates", "callbacks.failed", "callbacks.abandoned", "creates.answer_lost")
    injected = {k: v for k, v in snapshot.counters.items() if ".fault." in k or k in kept}
    return Figures(
        tasks=len(submitted),
        kinds=Counter(task.planned.kind for task in submitted),
        faults=faults,
        injected=injected,
        actions=actions,
        in_final_state=final,
        files_expected=expected,
        files_right=right,
        duplicate_transfers=duplicates,
        duplicates_at_kills=killed,
        transfer_log=snapshot.transfers is not None,
        transfers_dropped=int((snapshot.transfers or {}).get("dropped", 0)),
        acked_missing=missing_acks,
        events=len(snapshot.events),
        events_missing=missing,
        events_out_of_order=out_of_order,
        stuck=stuck,
        submitted_in=submitted_in,
        drained_in=drained_in,
        chaos_errors=chaos_errors,
        died=died,
        failed_jobs=failed_jobs,
        wrong=wrong + sent_twice,
        misplaced_faults=misplaced,
        unknown_upstream=sorted(set(snapshot.records) - {t.task_id for t in submitted}),
    )


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} % ({part:,}/{whole:,})" if whole else "n/a (none)"


def listed(counts: Any) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))


def table(f: Figures, options: argparse.Namespace) -> str:
    drained = "not drained" if f.drained_in is None else f"{f.drained_in:.0f} s"
    rows: list[tuple[str, str, str]] = [
        ("tasks", f"{f.tasks:,} (seed {options.seed}): {listed(f.kinds)}", ""),
        ("faults planned (tasks)", listed(f.faults), ""),
        ("faults the sandbox counted", listed(f.injected), ""),
        ("tasks given other faults than queued for them", str(f.misplaced_faults), "0"),
        ("kills and restarts", listed(f.actions), ""),
        ("in the true final state", percent(f.in_final_state, f.tasks), "100 %"),
        ("files stored with the sandbox's sha256", percent(f.files_right, f.files_expected), "100 %"),
        (
            "duplicate transfers",
            f"{f.duplicate_transfers - f.duplicates_at_kills}"
            + f" (and {f.duplicates_at_kills} of a transfer under way when its worker was SIGKILLed)"
            + ("" if f.transfer_log else " (from the sandbox's counters)"),
            "0",
        ),
        ("acked callbacks missing from history", str(f.acked_missing), "0"),
        (
            "events missing from webhook deliveries",
            ", ".join(f"{k}: {n} of {f.events:,}" for k, n in f.events_missing.items()),
            "0",
        ),
        ("tasks with events out of order", listed(f.events_out_of_order), "0"),
        ("stuck tasks", str(len(f.stuck)), "0"),
        ("tasks created upstream that no submission returned", str(len(f.unknown_upstream)), "0"),
        (
            "RQ jobs failed, other than by Redis going away",
            f"{len(f.failed_jobs_unexpected)} (of {len(f.failed_jobs)} failed)",
            "0",
        ),
        ("time to submit", f"{f.submitted_in:.0f} s", ""),
        ("time to drain (after the last submission)", drained, f"<= {options.drain_s:.0f} s"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'goal':>8}  figure"]
    lines += [f"{name:{width}}  {goal:>8}  {value}" for name, value, goal in rows]
    lines += [f"wrong: {line}" for line in f.wrong[:40]]
    lines += [f"stuck: {task_id}" for task_id in f.stuck[:20]]
    lines += [f"unknown upstream task: {task_id}" for task_id in f.unknown_upstream[:20]]
    lines += [f"chaos error: {line}" for line in f.chaos_errors]
    lines += [f"failed job: {job}: {error}" for job, error in f.failed_jobs[:20]]
    return "\n".join(lines)
