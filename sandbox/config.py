"""The sandbox's settings: one frozen object, built by the CLI or by a test, passed everywhere."""

from __future__ import annotations

from dataclasses import dataclass

# Callback types a fault can drop or duplicate. `error` is the failure callback of every family;
# the single callback of the non-music families counts as `complete` (the lyrics one literally says so).
CALLBACK_STAGES: tuple[str, ...] = ("text", "first", "complete", "error")
DAY_S = 86400.0
MAX_FILE_BYTES = 100 * 1024 * 1024


def parse_stages(spec: str) -> frozenset[str]:
    """`"text,first"` or `"all"` (every stage, error included) into a set.

    Raised ValueError names the unknown stage.
    """
    names = {part.strip() for part in spec.split(",") if part.strip()}
    if "all" in names:
        return frozenset(CALLBACK_STAGES)
    unknown = names - set(CALLBACK_STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s): {', '.join(sorted(unknown))}; expected {CALLBACK_STAGES} or all")
    return frozenset(names)


def parse_intervals(spec: str) -> tuple[float, ...]:
    """`"1,5,15"` into (1.0, 5.0, 15.0). Raised ValueError says what is wrong with `spec`."""
    try:
        values = tuple(float(part) for part in spec.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated seconds such as 1,5,15, got {spec!r}") from None
    if not all(value >= 0 for value in values):  # also refuses nan
        raise ValueError(f"every interval must be >= 0 seconds, got {spec!r}")
    return values


@dataclass(frozen=True)
class SandboxConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    api_key: str = "sandbox-key"
    hmac_key: str | None = None
    # Simulated seconds per real second: stage timelines and file retention run on the simulated
    # clock. Rate limits, HTTP timeouts and callback retry waits stay in real time, because the
    # client (or receiver) on the other side lives in real time.
    speed: float = 1.0
    drop: frozenset[str] = frozenset()
    duplicate_rate: float = 0.0
    reorder: bool = False
    fail_rate: float = 0.0
    retention_s: float = 14 * DAY_S
    seed: int | None = None
    file_bytes: int = 1024 * 1024
    # Send every callback due at creation before the create response goes out (kie-api.md §12.22).
    fast_callbacks: bool = False
    credits: float = 100_000.0
    create_limit: int = 20
    create_window_s: float = 10.0
    record_info_per_s: int = 3
    record_info_window_s: float = 1.0
    # Simulated seconds after creation during which record-info says "recordInfo is null".
    record_info_null_s: float = 0.0
    callback_timeout_s: float = 15.0
    callback_retries: int = 3
    # Real seconds before callback retry 1, 2, 3 (the last one repeats for further retries). Kie's
    # schedule is UNCONFIRMED (kie-api.md §6.1); these are the intervals its docs suggest.
    callback_retry_s: tuple[float, ...] = (1.0, 5.0, 15.0)
    # Real seconds a "stall" file fault holds the connection before giving up on it.
    stall_s: float = 30.0
    # File transfers the log keeps (GET /_sandbox/files/log); older ones are dropped and counted.
    transfer_log_size: int = 10_000
    download_url_ttl_s: float = 20 * 60.0
    tick_s: float = 0.002

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        if not 0 < self.file_bytes <= MAX_FILE_BYTES:
            raise ValueError(f"file_bytes must be in 1..{MAX_FILE_BYTES}")
        for name in ("duplicate_rate", "fail_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in 0..1")
        if not self.callback_retry_s or not all(value >= 0 for value in self.callback_retry_s):
            raise ValueError("callback_retry_s must be one or more intervals, each >= 0 seconds")
        if self.create_limit < 1 or self.record_info_per_s < 1:
            raise ValueError("create_limit and record_info_per_s must be >= 1")
        if self.transfer_log_size < 1:
            raise ValueError("transfer_log_size must be >= 1")
        if not self.stall_s >= 0:
            raise ValueError("stall_s must be >= 0")
        unknown = self.drop - set(CALLBACK_STAGES)
        if unknown:
            raise ValueError(f"unknown drop stage(s): {sorted(unknown)}")
