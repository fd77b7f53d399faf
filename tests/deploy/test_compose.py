"""deploy/compose.yaml: valid under the Compose Specification's own schema (vendored, see
README.md), and right in what the schema cannot see: the files it mounts exist, nginx routes to
every web, the Sentinels can agree, and each Tapedeck process gets the settings of this stack."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.nginx_conf import parse

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
# The settings other Tapedeck code reads for this topology, with the values this stack needs.
STACK_SETTINGS = {
    "REDIS_SENTINEL_MASTER": "tapedeck",
    "REDIS_ACK_REPLICAS": "1",
    "STORAGE_URL": "s3://tapedeck/files",
    "S3_ENDPOINT_URL": "http://seaweedfs:8333",
    "S3_REGION": "us-east-1",
}
# What deploy/.env must give (compose refuses to start without): the secrets, and the public URL.
FROM_DOT_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "CALLBACK_TOKEN", "TAPEDECK_API_TOKEN",
           "TAPEDECK_READ_TOKEN", "KIE_API_KEY", "PUBLIC_BASE_URL"}  # fmt: skip
_REQUIRED = re.compile(r"^\$\{(\w+):\?[^}]+\}$")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def tapedeck_services() -> dict[str, dict[str, Any]]:
    return {
        name: s
        for name, s in services().items()
        if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """What the service's containers get: its env_files, then `environment` over them."""
    merged: dict[str, str] = {}
    for name in service.get("env_file", []):
        merged |= env_file(DEPLOY / name)
    return merged | {k: str(v) for k, v in service.get("environment", {}).items()}


def command_option(command: list[str], option: str) -> str:
    return command[command.index(option) + 1]


def test_compose_file_is_valid_under_the_compose_spec_schema() -> None:
    assert SCHEMA["title"] == "Compose Specification"
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(compose())
    ]
    assert errors == []


def test_the_schema_refuses_a_misspelt_key() -> None:
    broken = compose()
    broken["services"]["web-1"]["healthchek"] = broken["services"]["web-1"].pop("healthcheck")
    assert not jsonschema.Draft7Validator(SCHEMA).is_valid(broken)


@pytest.mark.parametrize("name", services())
def test_every_file_a_service_reads_is_in_deploy(name: str) -> None:
    service = services()[name]
    files = [DEPLOY / f for f in service.get("env_file", [])]
    files += [DEPLOY / v.split(":")[0] for v in service.get("volumes", []) if v.startswith(".")]
    if "build" in service:
        files.append(DEPLOY / service["build"]["context"] / service["build"]["dockerfile"])
    assert all(f.is_file() for f in files), [str(f) for f in files if not f.is_file()]


def test_nginx_routes_to_every_web_and_only_to_them() -> None:
    webs = {name: s["command"] for name, s in tapedeck_services().items() if s["command"][0] == "serve"}
    assert len(webs) >= 2
    upstream = parse((DEPLOY / "compose" / "nginx.conf").read_text()).one("upstream")
    servers = {d.args[0] for d in upstream.all("server")}
    assert servers == {f"{name}:{command_option(cmd, '--port')}" for name, cmd in webs.items()}
    assert set(services()["nginx"]["depends_on"]) == set(webs)


def test_web_healthchecks_ask_healthz() -> None:
    for name, service in tapedeck_services().items():
        if service["command"][0] == "serve":
            assert any("/healthz" in word for word in service["healthcheck"]["test"]), name


def test_two_workers_and_one_deliverer() -> None:
    by_command = {s["command"][0]: s for s in tapedeck_services().values()}
    assert by_command["worker"]["deploy"]["replicas"] == 2
    assert "replicas" not in by_command["deliver"].get("deploy", {})


def test_sentinels_can_agree_on_a_failover() -> None:
    monitors = [line.split() for line in (DEPLOY / "compose" / "sentinel.conf").read_text().splitlines()
                if line.startswith("sentinel monitor ")]  # fmt: skip
    assert len(monitors) == 1
    _, _, master, host, port, quorum = monitors[0]
    sentinels = sorted(
        name for name, s in services().items() if "redis-sentinel" in " ".join(s.get("entrypoint", []))
    )
    assert len(sentinels) >= 3
    # No more than the Sentinels that exist (or no failover ever starts), and a majority of them:
    # one Sentinel's view alone never marks the primary down.
    assert len(sentinels) // 2 < int(quorum) <= len(sentinels)
    assert "--replicaof" not in services()[host]["command"] and port == "6379"
    replicas = [s["command"] for s in services().values() if "--replicaof" in s.get("command", [])]
    assert replicas and all(command_option(c, "--replicaof") == host for c in replicas)
    for service in tapedeck_services().values():
        env = environment(service)
        assert env["REDIS_SENTINELS"].split(",") == [f"{name}:26379" for name in sentinels]
        assert env["REDIS_SENTINEL_MASTER"] == master


def test_redis_keeps_an_append_only_file() -> None:
    conf = dict(line.split(maxsplit=1) for line in (DEPLOY / "redis.conf").read_text().splitlines()
                if line and not line.startswith("#"))  # fmt: skip
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "everysec"
    for name in ("redis-primary", "redis-replica"):
        command = services()[name]["command"]
        assert command[:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"], name
        assert "/data" in {v.split(":")[1] for v in services()[name]["volumes"]}, name


@pytest.mark.parametrize("name", tapedeck_services())
def test_every_tapedeck_process_gets_this_stacks_settings(name: str) -> None:
    env = environment(tapedeck_services()[name])
    assert {key: env.get(key) for key in STACK_SETTINGS} == STACK_SETTINGS
    required = {m.group(1) for value in env.values() if (m := _REQUIRED.match(value))}
    assert required == FROM_DOT_ENV
    assert set(env_file(DEPLOY / "compose.secrets.example")) >= FROM_DOT_ENV


def test_the_file_store_is_the_one_tapedeck_is_given() -> None:
    env = environment(next(iter(tapedeck_services().values())))
    host, port = env["S3_ENDPOINT_URL"].removeprefix("http://").split(":")
    assert f"-s3.port={port}" in services()[host]["command"]
    bucket = env["STORAGE_URL"].removeprefix("s3://").split("/")[0]
    one_shot = " ".join(services()["seaweedfs-buckets"]["entrypoint"])
    assert f"s3.bucket.create -name {bucket}" in one_shot
    # SeaweedFS's admin identity is the pair Tapedeck signs with.
    store = services()[host]["environment"]
    assert {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")} == store
    for service in tapedeck_services().values():
        assert service["depends_on"]["seaweedfs-buckets"]["condition"] == "service_completed_successfully"


def test_nothing_but_nginx_is_published_on_the_host() -> None:
    assert {name for name, s in services().items() if s.get("ports")} == {"nginx"}


@pytest.mark.parametrize("name", tapedeck_services())
def test_tapedeck_containers_are_locked_down_and_outlast_the_drain(name: str) -> None:
    service = tapedeck_services()[name]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert int(service["stop_grace_period"].removesuffix("s")) > 25  # WORKER_DRAIN_S's default
