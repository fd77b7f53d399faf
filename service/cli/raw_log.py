"""`tapedeck callbacks list|show|replay`: the raw callback log from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
import time

from service.core.views import raw_entry_view
from service.errors import TapedeckError
from service.replay import replay
from service.settings import Settings
from service.store.connection import connect
from service.store.tasks import TaskStore


async def run(settings: Settings, options: argparse.Namespace) -> int:
    client = connect(settings.redis)
    store = TaskStore.from_settings(client, settings)
    try:
        if options.action == "list":
            for entry in await store.raw_log(options.limit):
                view = raw_entry_view(entry)
                if options.rejected and view["outcome"] != "rejected":
                    continue
                reason = view.get("reason", "")
                print(
                    f"{view['id']}  {view['at']}  {view['http_status']}  {view['outcome']:9}  "
                    f"{view.get('task_id') or '-'}  {reason}".rstrip()
                )
        elif options.action == "show":
            found = await store.raw_entry(options.entry_id)
            if found is None:
                print(f"tapedeck: no raw-log entry {options.entry_id!r}", file=sys.stderr)
                return 1
            print(json.dumps(raw_entry_view(found), indent=2, ensure_ascii=False))
        else:
            applied = await replay(store, options.entry_id, time.time())
            print(
                f"replayed {options.entry_id}: {applied.outcome}, {applied.status_before} -> {applied.status}"
            )
        return 0
    except TapedeckError as exc:
        print(f"tapedeck: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
