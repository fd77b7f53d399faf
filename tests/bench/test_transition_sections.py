"""bench/transition_sections.py against the suite's Redis: its anchors still find transition.lua's
lines, and its sections account for part of, never more than, Redis's time in the script."""

from __future__ import annotations

import asyncio

from transition_sections import SECTIONS, instrumented, measure


def test_every_section_boundary_is_still_a_line_of_the_script() -> None:
    rendered = instrumented()  # raises naming an anchor the script no longer has
    assert rendered.count("tick(") >= len(SECTIONS) + 3


def test_the_sections_of_a_small_run_add_up_to_less_than_the_scripts_time(redis_url: str) -> None:
    sections, total, tick_us = asyncio.run(measure(redis_url, events=60, batch=4))
    assert {name for _, name in SECTIONS} <= set(sections), sections
    assert 0 < sum(sections.values()) < total
    assert tick_us > 0
