"""The time formats Kie mixes (kie-api.md §6.2, §8.2): "YYYY-MM-DD HH:MM:SS", epoch ms and ISO 8601."""

from __future__ import annotations

from datetime import UTC, datetime


def plain(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S")


def epoch_ms(epoch_s: float) -> int:
    return int(epoch_s * 1000)


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
