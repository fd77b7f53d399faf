"""Where Redis's time in `transition.lua` goes, section by section.

Redis has no profiler for scripts and gives them no clock but the TIME command, so this bench
renders the transition script with a TIME tick at each section boundary of `apply` (the anchors
below are lines of store/lua/transition.lua: a change there that moves one fails loudly here),
runs the bench mix (bench/callbacks.txt: text, first, complete, ~10 % duplicates) through it on a
real Redis (AOF on) `--batch` events per call, and prints microseconds per event per section
with Redis's own time per event in the script beside it. Each tick costs one TIME call (its
cost is printed too and is inside each figure); the script is the real one otherwise, so what
it writes is what `TaskStore.apply_event` writes.

    python bench/transition_sections.py [--events 6000] [--batch 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from callback_steps import SCOPE  # noqa: E402
from callbacks import Callbacks  # noqa: E402

from service.cli.redis_server import RedisServer  # noqa: E402
from service.core.callbacks import parse_callback  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import scripts  # noqa: E402
from service.store.connection import connect  # noqa: E402
from service.store.tasks import TaskStore  # noqa: E402
from service.web.callbacks import raw_entry  # noqa: E402

PROFILE_KEY = "bench:transition:sections"
TICK = """
local tick_last, tick_spent = nil, {}
local function tick(section)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if tick_last and section then tick_spent[section] = (tick_spent[section] or 0) + (now - tick_last) end
  tick_last = now
end
"""
# (line of transition.lua, the section that ends there): the tick goes after the line.
SECTIONS = (
    ("  local task_id, stage, now = e.task_id, e.stage, e.now", "reading the event"),
    (
        "    if not seen then redis.call('SET', signature_key, e.body_sha256, 'EX', "
        "tonumber(e.signature_ttl_s)) end\n  end",
        "signature",
    ),
    (
        "  local status, member, created, last_id, last_reply = "
        "ensure_task(task_key, task_id, now, e.family)",
        "ensure_task",
    ),
    ("  local reply = {outcome, status, new_status, created}", "the decision (and the submission link)"),
    ("  if outcome == 'applied' then count_transition(e.source, stage, now) end", "metrics"),
    (
        "        redis.call('HSETNX', task_key, 'stage:' .. earlier, '{\"skipped\":true}')"
        "\n      end\n    end",
        "status indexes and stage records",
    ),
    ("    merge_tracks(key_tracks(prefix, task_id), e.tracks_from, e.artifacts_from - 1, true)", "tracks"),
    (
        "    local added = add_artifacts(task_id, key_artifacts(prefix, task_id), e.artifacts_from, "
        "e.raw_from - 1,\n      reply, now)",
        "artifacts and the downloads outbox",
    ),
    (
        "    if #added > 0 then reindex_archive(task_id) end  -- files already known keep their states",
        "archive summary",
    ),
    ("    append_event(task_key, task_id, told, A.events_max)", "the event log"),
    ("      'last_event_id', e.event_id, 'last_reply', short_reply(reply))", "the task's status fields"),
    (
        "    if TERMINAL[new_status] and #added == 0 then tell_archive(task_id, now, A.events_max) end",
        "files settled (a final stage)",
    ),
    ("      redis.call('ZREM', key_polls_due(prefix), task_id)\n    end", "the next poll"),
    ("  if #e.msg > HISTORY_MSG_BYTES then entry.msg_bytes = #e.msg end", "the history entry, built"),
    (
        "      'outcome', outcome, 'task_status', new_status, "
        "unpack(ARGV, e.raw_from, e.next_at - 1))\n  end",
        "the raw log",
    ),
    ("  append_history(task_id, entry, history_max)", "the history entry, written"),
)
OUTSIDE = (
    ("local at, index = ARG_COUNT + 1, 1\nwhile at <= #ARGV do", "tick(nil)\n", "before"),
    ("local replies = {}\nat = ARG_COUNT + 1", "tick('the checks of every event')\n", "before"),
    ("  reply, at = apply(read_event(at))", "  tick(nil)\n", "before"),
    (
        "return replies",
        f"for k, v in pairs(tick_spent) do redis.call('HINCRBY', '{PROFILE_KEY}', k, v) end\n",
        "before",
    ),
)


def instrumented() -> str:
    """The transition script with its ticks; raises AssertionError naming an anchor not found once."""
    source = scripts.TRANSITION.source
    body_at = source.index(scripts.lua_source("transition"))
    head, body = source[:body_at], source[body_at:]
    for line, section in SECTIONS:
        assert body.count(line) == 1, f"transition.lua no longer has, once: {line!r}"
        body = body.replace(line, f"{line}\n  tick({json.dumps(section)})")
    for anchor, added, _ in OUTSIDE:
        assert body.count(anchor) == 1, f"transition.lua no longer has, once: {anchor!r}"
        body = body.replace(anchor, added + anchor)
    return head + TICK + body


async def measure(redis_url: str, events: int, batch: int) -> tuple[dict[str, float], float, float]:
    """µs per event by section, Redis's own µs per event in the script, and one TIME call's µs."""
    from starlette.requests import Request

    settings = Settings.from_env({"REDIS_URL": redis_url, "STORAGE_DIR": tempfile.mkdtemp()})
    client = connect(redis_url)
    store = TaskStore.from_settings(client, settings)
    try:
        sha = await client.script_load(instrumented())
        timer = "local t0 = redis.call('TIME') for i = 1, 999 do redis.call('TIME') end "
        timer += (
            "local t1 = redis.call('TIME') return tostring(((t1[1] - t0[1]) * 1e6 + (t1[2] - t0[2])) / 1000)"
        )
        tick_us = float(await client.eval(timer, 0))
        bodies = list(islice(Callbacks(stream=5), events))
        parsed = [parse_callback(orjson.loads(body)) for body in bodies]
        kept = raw_entry(Request(SCOPE), bodies[0], time.time(), "t", {"http_status": 200})
        await client.delete(PROFILE_KEY)
        await client.config_resetstat()
        for start in range(0, len(parsed), batch):
            args = store_head(store)
            for event in parsed[start : start + batch]:
                args += scripts.encode_event(event, "callback", int(time.time() * 1000), kept)
            await client.evalsha(sha, 0, *args)
        evalsha = (await client.info("commandstats"))["cmdstat_evalsha"]
        spent = await client.hgetall(PROFILE_KEY)
    finally:
        await client.aclose()
    sections = {str(k): int(v) / events for k, v in spent.items()}
    return sections, float(evalsha["usec"]) / events, tick_us


def store_head(store: TaskStore) -> list[scripts.Arg]:
    """The named arguments the store's own batcher sends ahead of its events."""
    return list(store._transition.head)  # the same head as every batch the store sends


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=1, help="events per script call")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp), appendonly=True) as server:
        sections, total, tick_us = asyncio.run(measure(server.url, options.events, options.batch))
    print(f"transition.lua, {options.events} events of the bench mix, {options.batch} per call: µs per event")
    for section, spent in sorted(sections.items(), key=lambda item: -item[1]):
        print(f"  {section:42} {spent:6.1f}  {spent / total:4.0%}")
    inside = sum(sections.values())
    rest = total - inside
    print(f"  {'the rest (the prelude, ARGV, the reply)':42} {rest:6.1f}  {rest / total:4.0%}")
    print(f"Redis's own time in the script per event: {total:.1f} µs (each section includes one TIME "
          f"call, {tick_us:.2f} µs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
