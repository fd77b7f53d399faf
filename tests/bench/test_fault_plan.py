"""The soak's fault plan against the sandbox's own parsers: every body it queues is one the
sandbox accepts, with the faults the plan says, so the soak's table counts faults that happened."""

from __future__ import annotations

from collections import Counter

import pytest
from fault_plan import body, is_as_planned, plan

from sandbox import file_faults
from sandbox.control import parse_faults
from sandbox.timeline import TaskFaults

KINDS = ("generate", "extend", "wav", "vocal-removal", "cover-image", "lyrics")


@pytest.mark.parametrize("seed", [1, 14, 99])
def test_every_planned_body_is_accepted_by_the_sandbox(seed: int) -> None:
    for planned in plan(600, seed):
        kind = planned.kind if planned.kind in KINDS else "generate"
        sent = body(planned, kind)
        faults = parse_faults(sent, TaskFaults())
        files = file_faults.parse(sent["file"]) if "file" in sent else []
        held = {
            "drop": sorted(faults.drop),
            "duplicate": sorted(faults.duplicate),
            "reorder": faults.reorder,
            "fail": faults.fail,
            "record_info": sent.get("record_info"),
            "file": [{"mode": fault.mode} for fault in files],
        }
        assert is_as_planned(sent, held), (planned, sent)
        assert "lost_answer" not in sent  # a fault of the create, queued on its own


def test_the_plan_stacks_file_faults_and_loses_create_answers_only_where_callbacks_can_join() -> None:
    planned = plan(2000, 14)
    labels = Counter(label for task in planned for label in task.labels)
    assert labels["file_stacked"] > 0 and labels["lost_create_answer"] > 0, labels
    for task in planned:
        if task.lost_answer:
            assert "drop" not in task.faults and "fail" not in task.faults, task
        stacked = task.faults.get("file", [])
        assert len({fault["mode"] for fault in stacked}) == len(stacked), task  # two different faults
