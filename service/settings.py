"""Settings, read once from the environment into a frozen object. The only module that reads it.

Every variable is documented in `deploy/env.example`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.datastructures import Secret

from service.errors import SettingsError
from service.safety import DEFAULT_ALLOWED_HOSTS, Policy

T = TypeVar("T")

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "td"
    env: str = "development"
    kie_webhook_hmac_key: Secret | None = field(default=None, repr=False)
    kie_webhook_tolerance_s: float = 300.0
    callback_token: Secret | None = field(default=None, repr=False)
    max_callback_bytes: int = MIB
    raw_log_max_entries: int = 10_000
    raw_log_rejected_body_bytes: int = 4 * 1024
    history_max_entries: int = 500
    public_base_url: str = "http://127.0.0.1:8000"
    api_token: Secret | None = field(default=None, repr=False)
    read_token: Secret | None = field(default=None, repr=False)
    kie_api_base: str = "https://api.kie.ai"
    kie_api_key: Secret | None = field(default=None, repr=False)
    sseedance_api_base: str = "https://sseedance.com"
    sseedance_api_key: Secret | None = field(default=None, repr=False)
    create_limit: int = 18
    create_window_s: float = 10.0
    create_max_queue_s: float = 60.0
    upstream_max_attempts: int = 5
    upstream_timeout_s: float = 30.0
    idempotency_ttl_s: int = 86_400
    tapedeck_url: str = "http://127.0.0.1:8000"
    storage_dir: str = ".data/files"
    download_allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    download_allowed_networks: tuple[str, ...] = ()
    max_download_bytes: int = 1024 * MIB
    artifact_ttl_s: float = 14 * 86_400.0
    urgent_within_s: float = 86_400.0
    download_retry_base_s: float = 5.0
    download_retry_max_s: float = 3_600.0
    download_lease_s: float = 60.0
    download_timeout_s: float = 30.0
    poll_after_submit_s: float = 90.0
    poll_after_text_s: float = 120.0
    poll_after_first_s: float = 180.0
    poll_backoff_min_s: float = 30.0
    poll_backoff_max_s: float = 600.0
    poll_give_up_s: float = 86_400.0
    poll_rate_per_s: int = 10
    poll_lease_s: float = 120.0
    sseedance_poll_s: float = 15.0

    @property
    def poll_deadlines_ms(self) -> tuple[int, int, int]:
        """How long a task may sit in pending, text and first before it is polled."""
        return (
            int(self.poll_after_submit_s * 1000),
            int(self.poll_after_text_s * 1000),
            int(self.poll_after_first_s * 1000),
        )

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Raises SettingsError naming the variable that is wrong."""
        env = os.environ if environ is None else environ
        settings = cls(
            redis_url=env.get("REDIS_URL", cls.redis_url),
            redis_prefix=env.get("TAPEDECK_REDIS_PREFIX", cls.redis_prefix),
            env=env.get("TAPEDECK_ENV", cls.env),
            kie_webhook_hmac_key=_secret(env, "KIE_WEBHOOK_HMAC_KEY"),
            kie_webhook_tolerance_s=_number(
                env, "KIE_WEBHOOK_TOLERANCE_S", float, cls.kie_webhook_tolerance_s
            ),
            callback_token=_secret(env, "CALLBACK_TOKEN"),
            max_callback_bytes=_number(env, "MAX_CALLBACK_BYTES", int, cls.max_callback_bytes),
            raw_log_max_entries=_number(env, "RAW_LOG_MAX_ENTRIES", int, cls.raw_log_max_entries),
            raw_log_rejected_body_bytes=_number(
                env, "RAW_LOG_REJECTED_BODY_BYTES", int, cls.raw_log_rejected_body_bytes
            ),
            history_max_entries=_number(env, "HISTORY_MAX_ENTRIES", int, cls.history_max_entries),
            public_base_url=env.get("PUBLIC_BASE_URL", cls.public_base_url).rstrip("/"),
            api_token=_secret(env, "TAPEDECK_API_TOKEN"),
            read_token=_secret(env, "TAPEDECK_READ_TOKEN"),
            kie_api_base=env.get("KIE_API_BASE", cls.kie_api_base).rstrip("/"),
            kie_api_key=_secret(env, "KIE_API_KEY"),
            sseedance_api_base=env.get("SSEEDANCE_API_BASE", cls.sseedance_api_base).rstrip("/"),
            sseedance_api_key=_secret(env, "SSEEDANCE_API_KEY"),
            create_limit=_number(env, "KIE_CREATE_LIMIT", int, cls.create_limit),
            create_window_s=_number(env, "KIE_CREATE_WINDOW_S", float, cls.create_window_s),
            create_max_queue_s=_number(env, "CREATE_MAX_QUEUE_S", float, cls.create_max_queue_s),
            upstream_max_attempts=_number(env, "UPSTREAM_MAX_ATTEMPTS", int, cls.upstream_max_attempts),
            upstream_timeout_s=_number(env, "UPSTREAM_TIMEOUT_S", float, cls.upstream_timeout_s),
            idempotency_ttl_s=_number(env, "IDEMPOTENCY_TTL_S", int, cls.idempotency_ttl_s),
            tapedeck_url=env.get("TAPEDECK_URL", cls.tapedeck_url).rstrip("/"),
            storage_dir=env.get("STORAGE_DIR", cls.storage_dir),
            download_allowed_hosts=_list(env, "DOWNLOAD_ALLOWED_HOSTS", cls.download_allowed_hosts),
            download_allowed_networks=_list(env, "DOWNLOAD_ALLOWED_NETWORKS", cls.download_allowed_networks),
            max_download_bytes=_number(env, "MAX_DOWNLOAD_BYTES", int, cls.max_download_bytes),
            artifact_ttl_s=_number(env, "ARTIFACT_TTL_S", float, cls.artifact_ttl_s),
            urgent_within_s=_number(env, "URGENT_WITHIN_S", float, cls.urgent_within_s),
            download_retry_base_s=_number(env, "DOWNLOAD_RETRY_BASE_S", float, cls.download_retry_base_s),
            download_retry_max_s=_number(env, "DOWNLOAD_RETRY_MAX_S", float, cls.download_retry_max_s),
            download_lease_s=_number(env, "DOWNLOAD_LEASE_S", float, cls.download_lease_s),
            download_timeout_s=_number(env, "DOWNLOAD_TIMEOUT_S", float, cls.download_timeout_s),
            poll_after_submit_s=_number(env, "POLL_AFTER_SUBMIT_S", float, cls.poll_after_submit_s),
            poll_after_text_s=_number(env, "POLL_AFTER_TEXT_S", float, cls.poll_after_text_s),
            poll_after_first_s=_number(env, "POLL_AFTER_FIRST_S", float, cls.poll_after_first_s),
            poll_backoff_min_s=_number(env, "POLL_BACKOFF_MIN_S", float, cls.poll_backoff_min_s),
            poll_backoff_max_s=_number(env, "POLL_BACKOFF_MAX_S", float, cls.poll_backoff_max_s),
            poll_give_up_s=_number(env, "POLL_GIVE_UP_S", float, cls.poll_give_up_s),
            poll_rate_per_s=_number(env, "POLL_RATE_PER_S", int, cls.poll_rate_per_s),
            poll_lease_s=_number(env, "POLL_LEASE_S", float, cls.poll_lease_s),
            sseedance_poll_s=_number(env, "SSEEDANCE_POLL_S", float, cls.sseedance_poll_s),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.env not in ("development", "test", "production"):
            raise SettingsError(f"TAPEDECK_ENV must be development, test or production, not {self.env!r}")
        if self.is_production and not (self.kie_webhook_hmac_key or self.callback_token):
            raise SettingsError(
                "TAPEDECK_ENV=production needs KIE_WEBHOOK_HMAC_KEY or CALLBACK_TOKEN set, "
                "or anyone could forge callbacks"
            )
        if self.is_production and not self.api_token:
            raise SettingsError(
                "TAPEDECK_ENV=production needs TAPEDECK_API_TOKEN set, or anyone could submit tasks"
            )
        try:
            Policy.build(self.download_allowed_hosts, self.download_allowed_networks)
        except ValueError as exc:
            raise SettingsError(f"DOWNLOAD_ALLOWED_NETWORKS must be CIDRs: {exc}") from None
        if not self.redis_prefix or ":" in self.redis_prefix:
            raise SettingsError("TAPEDECK_REDIS_PREFIX must be non-empty and contain no ':'")


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list; a leading '+' adds to the default instead of replacing it."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    items = tuple(part.strip() for part in raw.lstrip("+").split(",") if part.strip())
    return default + items if raw.lstrip().startswith("+") else items


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    value = env.get(name, "")
    return Secret(value) if value else None


def _number(env: Mapping[str, str], name: str, cast: Callable[[str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        kind = "a whole number" if cast is int else "a number"
        raise SettingsError(f"{name} must be {kind}, got {raw!r}") from None
    if isinstance(value, int | float) and value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value
