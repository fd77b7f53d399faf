"""The interfaces others call: SandboxConfig, SandboxServer, the CLI's options."""

from __future__ import annotations

import httpx
import pytest

from sandbox.cli import config_from, parser
from sandbox.config import SandboxConfig, parse_stages
from sandbox.server import SandboxServer


def test_config_defaults_match_the_cli_contract() -> None:
    config = SandboxConfig()
    assert (config.host, config.port, config.api_key, config.hmac_key) == (
        "127.0.0.1",
        8090,
        "sandbox-key",
        None,
    )
    assert (config.speed, config.drop, config.duplicate_rate, config.reorder) == (
        1.0,
        frozenset(),
        0.0,
        False,
    )
    assert (config.fail_rate, config.retention_s, config.seed) == (0.0, 14 * 86400, None)
    assert 900_000 < config.file_bytes < 1_100_000


def test_the_cli_maps_every_option_onto_the_config() -> None:
    argv = ["--host", "0.0.0.0", "--port", "9000", "--api-key", "k", "--hmac-key", "h", "--speed", "60"]
    argv += ["--drop", "text,first", "--duplicate-rate", "0.5", "--reorder", "--fail-rate", "0.25"]
    argv += ["--retention-s", "3600", "--seed", "3", "--file-bytes", "2048", "--fast-callbacks"]
    argv += ["--record-info-null-s", "4", "--credits", "50"]
    config = config_from(parser().parse_args(argv))
    assert config == SandboxConfig(
        host="0.0.0.0",
        port=9000,
        api_key="k",
        hmac_key="h",
        speed=60.0,
        drop=frozenset({"text", "first"}),
        duplicate_rate=0.5,
        reorder=True,
        fail_rate=0.25,
        retention_s=3600.0,
        seed=3,
        file_bytes=2048,
        fast_callbacks=True,
        record_info_null_s=4.0,
        credits=50.0,
    )


@pytest.mark.parametrize(
    "argv",
    [["--drop", "middle"], ["--fail-rate", "2"], ["--file-bytes", "0"], ["--file-bytes", str(101 << 20)]],
)
def test_the_cli_refuses_bad_values(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(argv)


def test_drop_all_means_every_stage() -> None:
    assert parse_stages("all") == frozenset({"text", "first", "complete", "error"})


@pytest.mark.parametrize(
    "bad", [{"speed": 0}, {"file_bytes": 0}, {"fail_rate": 1.5}, {"drop": frozenset({"x"})}]
)
def test_config_refuses_impossible_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SandboxConfig(**bad)  # type: ignore[arg-type]


def test_sandbox_server_picks_a_free_port_and_stops_cleanly() -> None:
    with SandboxServer(SandboxConfig(port=0)) as server:
        assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0")
        response = httpx.get(
            f"{server.url}/api/v1/chat/credit", headers={"Authorization": "Bearer sandbox-key"}
        )
        assert response.json()["code"] == 200
        url = server.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/api/v1/chat/credit", trust_env=False)
