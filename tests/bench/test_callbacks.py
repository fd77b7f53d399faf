from __future__ import annotations

import itertools

import orjson
from callbacks import DUPLICATES, Callbacks


def test_each_task_sends_text_first_complete_and_about_a_tenth_are_repeats() -> None:
    bodies = list(itertools.islice(Callbacks(stream=7), 3000))
    fresh = [b for previous, b in zip([b"", *bodies], bodies, strict=False) if b != previous]
    stages = [orjson.loads(b)["data"]["callbackType"] for b in fresh]
    assert stages[:6] == ["text", "first", "complete"] * 2
    assert {orjson.loads(b)["data"]["task_id"] for b in fresh[:3]} == {"07" + "0" * 14}
    assert abs((len(bodies) - len(fresh)) / len(bodies) - DUPLICATES) < 0.03


def test_streams_name_different_tasks() -> None:
    assert next(Callbacks(stream=1)) != next(Callbacks(stream=2))
