"""Settings, read once from the environment into a frozen object. The only module that reads it.

Every variable is documented in `deploy/env.example`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.datastructures import Secret

from service.core.url_policy import DEFAULT_ALLOWED_HOSTS, Policy
from service.core.webhooks import secret_key
from service.errors import SettingsError

MIB = 1024 * 1024


@dataclass(frozen=True)
class RedisLocation:
    """Where Redis is, and what a client needs to reach it: built from Settings at the entry point
    and handed to `store.connection`, so nothing below reads settings for it.

    With `sentinels`, the primary's address comes from them (and follows a failover); `url` then
    gives only the database, username and password of the primary.
    """

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "tapedeck"
    sentinel_password: Secret | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "tapedeck"
    redis_sentinel_password: Secret | None = field(default=None, repr=False)
    redis_ack_replicas: int = 0
    redis_ack_timeout_ms: int = 1000
    redis_prefix: str = "td"
    env: str = "development"
    kie_webhook_hmac_key: Secret | None = field(default=None, repr=False)
    kie_webhook_tolerance_s: float = 300.0
    callback_token: Secret | None = field(default=None, repr=False)
    max_callback_bytes: int = MIB
    callback_body_timeout_s: float = 10.0
    raw_log_max_entries: int = 10_000
    event_log_max_entries: int = 200_000
    raw_log_rejected_body_bytes: int = 4 * 1024
    raw_log_body_bytes: int = 64 * 1024
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
    submit_reconcile_s: float = 300.0
    submit_attach_wait_s: float = 20.0
    tapedeck_url: str = "http://127.0.0.1:8000"
    storage_dir: str = ".data/files"
    storage_url: str = ""  # file:///path or s3://bucket/prefix; unset: STORAGE_DIR
    s3_endpoint_url: str = ""
    s3_public_endpoint_url: str = ""
    s3_region: str = ""
    s3_part_bytes: int = 8 * MIB
    # AWS's own variable names; unset, boto3's chain finds credentials (a profile, a role).
    aws_access_key_id: Secret | None = field(default=None, repr=False)
    aws_secret_access_key: Secret | None = field(default=None, repr=False)
    aws_session_token: Secret | None = field(default=None, repr=False)
    files_presign_s: int = 300
    files_proxy: bool = False
    task_retention_s: float = 30 * 86_400.0
    download_allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    download_allowed_networks: tuple[str, ...] = ()
    max_download_bytes: int = 1024 * MIB
    artifact_ttl_s: float = 14 * 86_400.0
    urgent_within_s: float = 86_400.0
    download_retry_base_s: float = 5.0
    download_retry_max_s: float = 3_600.0
    download_lease_s: float = 60.0
    download_timeout_s: float = 30.0
    worker_drain_s: float = 25.0
    poll_after_submit_s: float = 90.0
    poll_after_text_s: float = 120.0
    poll_after_first_s: float = 180.0
    poll_backoff_min_s: float = 30.0
    poll_backoff_max_s: float = 600.0
    poll_give_up_s: float = 86_400.0
    poll_rate_per_s: int = 10
    poll_lease_s: float = 120.0
    sseedance_poll_s: float = 15.0
    webhook_secret: Secret | None = field(default=None, repr=False)
    webhook_allowed_networks: tuple[str, ...] = ()
    webhook_timeout_s: float = 15.0
    webhook_rotation_grace_s: float = 86_400.0
    webhook_disable_after_s: float = 5 * 86_400.0
    webhook_concurrency: int = 50
    webhook_per_subscription: int = 10
    webhook_niceness: int = 10

    @property
    def poll_deadlines_ms(self) -> tuple[int, int, int]:
        """How long a task may sit in pending, text and first before it is polled."""
        return (
            int(self.poll_after_submit_s * 1000),
            int(self.poll_after_text_s * 1000),
            int(self.poll_after_first_s * 1000),
        )

    @property
    def redis(self) -> RedisLocation:
        return RedisLocation(
            self.redis_url, self.redis_sentinels, self.redis_sentinel_master, self.redis_sentinel_password
        )

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Raises SettingsError naming the variable that is wrong."""
        env = os.environ if environ is None else environ
        defaults = cls()
        values: dict[str, Any] = {}
        for name, variable, cast in VARIABLES:
            raw = env.get(variable)
            if raw is not None:
                values[name] = cast(variable, raw, getattr(defaults, name))
        settings = cls(**values)
        settings.check()
        return settings

    @property
    def webhook_policy(self) -> Policy:
        """Subscriber URLs: any host, on a public address unless its network is listed."""
        return Policy.any_public_host(self.webhook_allowed_networks, "WEBHOOK_ALLOWED_NETWORKS")

    def check(self) -> None:
        self._check_redis()
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
        try:
            _ = self.webhook_policy
        except ValueError as exc:
            raise SettingsError(f"WEBHOOK_ALLOWED_NETWORKS must be CIDRs: {exc}") from None
        if self.webhook_secret:
            try:
                secret_key(str(self.webhook_secret))
            except ValueError:
                raise SettingsError("WEBHOOK_SECRET must be whsec_ followed by base64") from None
        if not max(3600.0, self.submit_reconcile_s) <= self.idempotency_ttl_s <= 1_000_000_000:
            # A submission whose answer was lost waits SUBMIT_RECONCILE_S for its callback under
            # its key, and one whose task Redis could not record yet is attached minutes later:
            # a key (and the submission with it) forgotten sooner would create a second task or
            # leave a task without its submission.
            raise SettingsError(
                "IDEMPOTENCY_TTL_S must be at least an hour and SUBMIT_RECONCILE_S, and at most 1000000000"
            )
        if self.kie_webhook_tolerance_s > 86_400:
            # A signature is remembered for twice the tolerance; a day is far past any clock skew.
            raise SettingsError("KIE_WEBHOOK_TOLERANCE_S must be at most 86400 seconds")
        self.check_storage()
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", self.redis_prefix):
            # It begins every key and every RQ queue name and job id, which allow no more.
            raise SettingsError(
                "TAPEDECK_REDIS_PREFIX must be 1-32 letters, digits, '_' or '-'; got "
                + repr(self.redis_prefix)
            )

    def check_storage(self) -> None:
        url = self.storage_url
        if url.startswith("s3://"):
            bucket = url.removeprefix("s3://").partition("/")[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise SettingsError(
                    f"STORAGE_URL must be s3://BUCKET/PREFIX with a valid bucket name; got {url!r}"
                )
        elif url and not url.startswith("file:///"):
            raise SettingsError(
                f"STORAGE_URL must be file:///absolute/path or s3://bucket/prefix; got {url!r}"
            )
        if not 5 * MIB <= self.s3_part_bytes <= 512 * MIB:
            # S3 refuses smaller parts; a part is held in memory whole while it fills.
            raise SettingsError("S3_PART_BYTES must be from 5242880 (5 MiB) to 536870912 (512 MiB)")
        if url.startswith("s3://") and self.max_download_bytes > min(
            5 * 1024 * MIB, 10_000 * self.s3_part_bytes
        ):
            # An object's metadata is set by a copy onto itself, which S3 allows up to 5 GiB; an
            # upload has at most 10,000 parts.
            raise SettingsError(
                "with STORAGE_URL=s3://, MAX_DOWNLOAD_BYTES must be at most 5 GiB and 10,000 x S3_PART_BYTES"
            )
        if self.files_presign_s > 7 * 86_400:
            raise SettingsError("FILES_PRESIGN_S must be at most 604800 (S3 signs for a week at most)")

    def _check_redis(self) -> None:
        if not self.redis_sentinels:
            return
        if not self.redis_sentinel_master:
            raise SettingsError("REDIS_SENTINEL_MASTER must name the primary the sentinels watch")
        if not self.redis_url.startswith("redis://"):
            # The sentinels give a host and port; TLS and unix sockets to the primary are not
            # built for them yet (redis-py's sentinel pool would quietly drop them).
            raise SettingsError(
                "with REDIS_SENTINELS, REDIS_URL must be a redis:// URL (it gives the database and "
                f"credentials; rediss:// and unix sockets are not supported with sentinels), got "
                f"{self.redis_url.split('://', 1)[0]}://"
            )


Cast = Callable[[str, str, Any], Any]


# Each cast gets the raw value even when it is blank: a blank text is taken as given (a blank
# TAPEDECK_ENV or TAPEDECK_REDIS_PREFIX is refused by `check`, not quietly defaulted), while a
# blank secret is unset and a blank number or list means the default.


def _text(variable: str, raw: str, default: Any) -> str:
    return raw


def _base_url(variable: str, raw: str, default: Any) -> str:
    return raw.rstrip("/")


def _secret(variable: str, raw: str, default: Any) -> Secret | None:
    return Secret(raw) if raw else None


def _list(variable: str, raw: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list; a leading '+' adds to the default instead of replacing it."""
    if raw.strip() == "":
        return default
    items = tuple(part.strip() for part in raw.lstrip("+").split(",") if part.strip())
    return default + items if raw.lstrip().startswith("+") else items


def _positive(kind: type[int] | type[float]) -> Cast:
    def cast(variable: str, raw: str, default: Any) -> int | float:
        if raw == "":
            return default  # type: ignore[no-any-return]
        try:
            value = kind(raw)
        except ValueError:
            raise SettingsError(f"{variable} must be {WHAT[kind]}, got {raw!r}") from None
        if not value > 0 or value == math.inf:  # nan and inf pass float() and break every sum
            raise SettingsError(f"{variable} must be a positive finite number, got {raw!r}")
        return value

    return cast


def _flag(variable: str, raw: str, default: Any) -> bool:
    if raw == "":
        return bool(default)
    if raw not in ("0", "1"):
        raise SettingsError(f"{variable} must be 0 or 1, got {raw!r}")
    return raw == "1"


def _count(variable: str, raw: str, default: Any) -> int:
    """A whole number, 0 or more."""
    if raw == "":
        return int(default)
    if not re.fullmatch(r"\d{1,6}", raw.strip()):
        raise SettingsError(f"{variable} must be a whole number, 0 or more, got {raw!r}")
    return int(raw)


def _addresses(variable: str, raw: str, default: Any) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (an IPv6 host in brackets: `[::1]:26379`)."""
    found = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        address = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\s\[\]]+):(\d{1,5})", part)
        port = int(address.group(2) or address.group(4)) if address else 0
        if address is None or not 0 < port < 65536:
            raise SettingsError(f"{variable} must be host:port entries separated by commas, got {part!r}")
        found.append((address.group(1) or address.group(3), port))
    return tuple(found)


def _niceness(variable: str, raw: str, default: Any) -> int:
    """0 (as the parent) to 19 (only when nothing else wants the CPU)."""
    if raw == "":
        return int(default)
    if not re.fullmatch(r"\d{1,2}", raw) or int(raw) > 19:
        raise SettingsError(f"{variable} must be a whole number from 0 to 19, got {raw!r}")
    return int(raw)


WHAT: Final = {int: "a whole number", float: "a number"}
_int, _float = _positive(int), _positive(float)

# field → environment variable → cast; the default is the field's own (deploy/env.example
# documents each).
VARIABLES: Final[tuple[tuple[str, str, Cast], ...]] = (
    ("redis_url", "REDIS_URL", _text),
    ("redis_sentinels", "REDIS_SENTINELS", _addresses),
    ("redis_sentinel_master", "REDIS_SENTINEL_MASTER", _text),
    ("redis_sentinel_password", "REDIS_SENTINEL_PASSWORD", _secret),
    ("redis_ack_replicas", "REDIS_ACK_REPLICAS", _count),
    ("redis_ack_timeout_ms", "REDIS_ACK_TIMEOUT_MS", _int),
    ("redis_prefix", "TAPEDECK_REDIS_PREFIX", _text),
    ("env", "TAPEDECK_ENV", _text),
    ("kie_webhook_hmac_key", "KIE_WEBHOOK_HMAC_KEY", _secret),
    ("kie_webhook_tolerance_s", "KIE_WEBHOOK_TOLERANCE_S", _float),
    ("callback_token", "CALLBACK_TOKEN", _secret),
    ("max_callback_bytes", "MAX_CALLBACK_BYTES", _int),
    ("callback_body_timeout_s", "CALLBACK_BODY_TIMEOUT_S", _float),
    ("raw_log_max_entries", "RAW_LOG_MAX_ENTRIES", _int),
    ("event_log_max_entries", "EVENT_LOG_MAX_ENTRIES", _int),
    ("raw_log_rejected_body_bytes", "RAW_LOG_REJECTED_BODY_BYTES", _int),
    ("raw_log_body_bytes", "RAW_LOG_BODY_BYTES", _int),
    ("history_max_entries", "HISTORY_MAX_ENTRIES", _int),
    ("public_base_url", "PUBLIC_BASE_URL", _base_url),
    ("api_token", "TAPEDECK_API_TOKEN", _secret),
    ("read_token", "TAPEDECK_READ_TOKEN", _secret),
    ("kie_api_base", "KIE_API_BASE", _base_url),
    ("kie_api_key", "KIE_API_KEY", _secret),
    ("sseedance_api_base", "SSEEDANCE_API_BASE", _base_url),
    ("sseedance_api_key", "SSEEDANCE_API_KEY", _secret),
    ("create_limit", "KIE_CREATE_LIMIT", _int),
    ("create_window_s", "KIE_CREATE_WINDOW_S", _float),
    ("create_max_queue_s", "CREATE_MAX_QUEUE_S", _float),
    ("upstream_max_attempts", "UPSTREAM_MAX_ATTEMPTS", _int),
    ("upstream_timeout_s", "UPSTREAM_TIMEOUT_S", _float),
    ("idempotency_ttl_s", "IDEMPOTENCY_TTL_S", _int),
    ("submit_reconcile_s", "SUBMIT_RECONCILE_S", _float),
    ("submit_attach_wait_s", "SUBMIT_ATTACH_WAIT_S", _float),
    ("tapedeck_url", "TAPEDECK_URL", _base_url),
    ("storage_dir", "STORAGE_DIR", _text),
    ("storage_url", "STORAGE_URL", _text),
    ("s3_endpoint_url", "S3_ENDPOINT_URL", _base_url),
    ("s3_public_endpoint_url", "S3_PUBLIC_ENDPOINT_URL", _base_url),
    ("s3_region", "S3_REGION", _text),
    ("s3_part_bytes", "S3_PART_BYTES", _int),
    ("aws_access_key_id", "AWS_ACCESS_KEY_ID", _secret),
    ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", _secret),
    ("aws_session_token", "AWS_SESSION_TOKEN", _secret),
    ("files_presign_s", "FILES_PRESIGN_S", _int),
    ("files_proxy", "FILES_PROXY", _flag),
    ("task_retention_s", "TASK_RETENTION_S", _float),
    ("download_allowed_hosts", "DOWNLOAD_ALLOWED_HOSTS", _list),
    ("download_allowed_networks", "DOWNLOAD_ALLOWED_NETWORKS", _list),
    ("max_download_bytes", "MAX_DOWNLOAD_BYTES", _int),
    ("artifact_ttl_s", "ARTIFACT_TTL_S", _float),
    ("urgent_within_s", "URGENT_WITHIN_S", _float),
    ("download_retry_base_s", "DOWNLOAD_RETRY_BASE_S", _float),
    ("download_retry_max_s", "DOWNLOAD_RETRY_MAX_S", _float),
    ("download_lease_s", "DOWNLOAD_LEASE_S", _float),
    ("download_timeout_s", "DOWNLOAD_TIMEOUT_S", _float),
    ("worker_drain_s", "WORKER_DRAIN_S", _float),
    ("poll_after_submit_s", "POLL_AFTER_SUBMIT_S", _float),
    ("poll_after_text_s", "POLL_AFTER_TEXT_S", _float),
    ("poll_after_first_s", "POLL_AFTER_FIRST_S", _float),
    ("poll_backoff_min_s", "POLL_BACKOFF_MIN_S", _float),
    ("poll_backoff_max_s", "POLL_BACKOFF_MAX_S", _float),
    ("poll_give_up_s", "POLL_GIVE_UP_S", _float),
    ("poll_rate_per_s", "POLL_RATE_PER_S", _int),
    ("poll_lease_s", "POLL_LEASE_S", _float),
    ("sseedance_poll_s", "SSEEDANCE_POLL_S", _float),
    ("webhook_secret", "WEBHOOK_SECRET", _secret),
    ("webhook_allowed_networks", "WEBHOOK_ALLOWED_NETWORKS", _list),
    ("webhook_timeout_s", "WEBHOOK_TIMEOUT_S", _float),
    ("webhook_rotation_grace_s", "WEBHOOK_ROTATION_GRACE_S", _float),
    ("webhook_disable_after_s", "WEBHOOK_DISABLE_AFTER_S", _float),
    ("webhook_concurrency", "WEBHOOK_CONCURRENCY", _int),
    ("webhook_per_subscription", "WEBHOOK_PER_SUBSCRIPTION", _int),
    ("webhook_niceness", "WEBHOOK_NICENESS", _niceness),
)
