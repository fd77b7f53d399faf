from __future__ import annotations

import pytest

from service.errors import SettingsError
from service.settings import Settings


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert (settings.redis_prefix, settings.kie_webhook_tolerance_s, settings.max_callback_bytes) == (
        "td",
        300,
        1 << 20,
    )


def test_production_refuses_to_start_without_callback_authentication() -> None:
    with pytest.raises(SettingsError, match="KIE_WEBHOOK_HMAC_KEY or CALLBACK_TOKEN"):
        Settings.from_env({"TAPEDECK_ENV": "production", "TAPEDECK_API_TOKEN": "t"})


def test_production_refuses_to_start_without_an_api_token() -> None:
    with pytest.raises(SettingsError, match="TAPEDECK_API_TOKEN"):
        Settings.from_env({"TAPEDECK_ENV": "production", "CALLBACK_TOKEN": "c"})


@pytest.mark.parametrize("variable", ["KIE_WEBHOOK_HMAC_KEY", "CALLBACK_TOKEN"])
def test_production_starts_with_either_authentication(variable: str) -> None:
    env = {"TAPEDECK_ENV": "production", "TAPEDECK_API_TOKEN": "t", variable: "x"}
    assert Settings.from_env(env).is_production


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAX_CALLBACK_BYTES": "lots"}, "MAX_CALLBACK_BYTES must be a whole number"),
        ({"KIE_WEBHOOK_TOLERANCE_S": "-5"}, "must be a positive finite number"),
        ({"SUBMIT_RECONCILE_S": "inf"}, "SUBMIT_RECONCILE_S must be a positive finite number"),
        ({"WEBHOOK_TIMEOUT_S": "nan"}, "WEBHOOK_TIMEOUT_S must be a positive finite number"),
        ({"WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/33"}, "WEBHOOK_ALLOWED_NETWORKS must be CIDRs"),
        ({"WEBHOOK_SECRET": "whsec_***"}, "WEBHOOK_SECRET must be whsec_"),
        ({"TAPEDECK_ENV": "staging"}, "TAPEDECK_ENV"),
        ({"TAPEDECK_REDIS_PREFIX": "a:b"}, "TAPEDECK_REDIS_PREFIX"),
        ({"IDEMPOTENCY_TTL_S": "60"}, "IDEMPOTENCY_TTL_S must be at least an hour"),
        ({"IDEMPOTENCY_TTL_S": "7200", "SUBMIT_RECONCILE_S": "9000"}, "IDEMPOTENCY_TTL_S must be at least"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_secrets_do_not_appear_in_repr() -> None:
    env = {
        "KIE_WEBHOOK_HMAC_KEY": "hunter2",
        "CALLBACK_TOKEN": "tok-123",
        "KIE_API_KEY": "kk-9",
        "TAPEDECK_API_TOKEN": "api-7",
    }
    text = repr(Settings.from_env(env))
    assert not [secret for secret in env.values() if secret in text]


def test_every_field_has_a_variable_and_every_variable_a_field() -> None:
    from dataclasses import fields

    from service.settings import VARIABLES

    assert [name for name, _, _ in VARIABLES] == [f.name for f in fields(Settings)]
    assert len({variable for _, variable, _ in VARIABLES}) == len(VARIABLES)


@pytest.mark.parametrize(
    ("env", "check"),
    [
        ({"MAX_CALLBACK_BYTES": ""}, lambda s: s.max_callback_bytes == 1 << 20),
        ({"DOWNLOAD_ALLOWED_HOSTS": "  "}, lambda s: "cdn1.suno.ai" in s.download_allowed_hosts),
        ({"CALLBACK_TOKEN": ""}, lambda s: s.callback_token is None),
        ({"CALLBACK_TOKEN": " "}, lambda s: s.callback_token is not None),
        ({"PUBLIC_BASE_URL": "http://h:1/"}, lambda s: s.public_base_url == "http://h:1"),
        ({"DOWNLOAD_ALLOWED_HOSTS": "+a.test"}, lambda s: s.download_allowed_hosts[-1] == "a.test"),
    ],
)
def test_blank_numbers_and_lists_mean_the_default_and_blank_secrets_unset(
    env: dict[str, str], check: object
) -> None:
    assert check(Settings.from_env(env))  # type: ignore[operator]


@pytest.mark.parametrize("variable", ["TAPEDECK_ENV", "TAPEDECK_REDIS_PREFIX"])
def test_a_blank_environment_or_prefix_is_refused_not_defaulted(variable: str) -> None:
    """A template that expands an unset variable to '' must not start an open development API."""
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: ""})


def test_a_tolerance_past_a_day_is_refused() -> None:
    with pytest.raises(SettingsError, match="KIE_WEBHOOK_TOLERANCE_S"):
        Settings.from_env({"KIE_WEBHOOK_TOLERANCE_S": "1e12"})


def test_every_variable_is_documented_in_env_example_and_the_readme() -> None:
    from pathlib import Path

    from service.settings import VARIABLES

    root = Path(__file__).resolve().parent.parent
    example, readme = (root / "deploy/env.example").read_text(), (root / "README.md").read_text()
    assert [v for _, v, _ in VARIABLES if f"\n{v}=" not in example] == []
    assert [v for _, v, _ in VARIABLES if f"`{v}`" not in readme and f"{v}`" not in readme] == []


def test_sentinels_are_read_as_addresses_and_travel_with_the_url() -> None:
    env = {
        "REDIS_URL": "redis://:pw@ignored:1/3",
        "REDIS_SENTINELS": "s1:26379, [::1]:26380,10.0.0.3:26381",
        "REDIS_SENTINEL_MASTER": "main",
        "REDIS_SENTINEL_PASSWORD": "sentinel-secret",
    }
    where = Settings.from_env(env).redis
    assert (where.url, where.sentinels, where.sentinel_master) == (
        "redis://:pw@ignored:1/3",
        (("s1", 26379), ("::1", 26380), ("10.0.0.3", 26381)),
        "main",
    )
    assert str(where.sentinel_password) == "sentinel-secret"
    assert "sentinel-secret" not in repr(where) and "sentinel-secret" not in repr(Settings.from_env(env))


def test_without_sentinels_redis_is_the_url_alone() -> None:
    where = Settings.from_env({"REDIS_SENTINELS": ""}).redis
    assert (where.url, where.sentinels) == ("redis://127.0.0.1:6379/0", ())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "s1"}, "REDIS_SENTINELS must be host:port entries.*'s1'"),
        ({"REDIS_SENTINELS": "s1:26379,s2:port"}, "REDIS_SENTINELS must be host:port.*'s2:port'"),
        ({"REDIS_SENTINELS": "s1:0"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s1:70000"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "::1:26379"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_MASTER": ""}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINELS": "s1:26379", "REDIS_URL": "rediss://h:6380/0"}, "REDIS_URL must be a redis://"),
        ({"REDIS_ACK_REPLICAS": "-1"}, "REDIS_ACK_REPLICAS must be a whole number, 0 or more"),
        ({"REDIS_ACK_REPLICAS": "one"}, "REDIS_ACK_REPLICAS"),
        ({"REDIS_ACK_TIMEOUT_MS": "0"}, "REDIS_ACK_TIMEOUT_MS must be a positive"),
    ],
)
def test_bad_redis_high_availability_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(("raw", "replicas"), [("", 0), ("0", 0), ("2", 2)])
def test_ack_replicas_default_to_none(raw: str, replicas: int) -> None:
    assert Settings.from_env({"REDIS_ACK_REPLICAS": raw}).redis_ack_replicas == replicas
