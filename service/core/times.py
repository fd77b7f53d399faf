"""Time in the three forms Tapedeck uses: epoch seconds (clocks), epoch ms (Redis), ISO 8601 (the API)."""

from __future__ import annotations

from datetime import UTC, datetime


def to_ms(seconds: float) -> int:
    """Epoch seconds (or a duration in seconds) as whole milliseconds."""
    return int(seconds * 1000)


def iso(epoch_ms: str | int | float | None) -> str | None:
    """Epoch ms (as stored in Redis, often a string) as ISO 8601 UTC; None for nothing.

    Never raises: a value that is no time any view can show is given back as its text, so one odd
    value kept can never make a task unreadable.
    """
    if epoch_ms is None or epoch_ms == "" or not isinstance(epoch_ms, str | int | float):
        return None
    try:
        moment = datetime.fromtimestamp(int(float(epoch_ms)) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return str(epoch_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
