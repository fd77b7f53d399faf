"""The interfaces others call: SandboxConfig, SandboxServer, the CLI's options."""

from __future__ import annotations

import httpx
import pytest

from sandbox.cli import config_from, parser
from sandbox.config import SandboxConfig, parse_stages
from sandbox.server import SandboxServer
from service.cli.main import main as tapedeck_main


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
    argv += ["--record-info-null-s", "4", "--credits", "50", "--create-limit", "5"]
    argv += ["--record-info-per-s", "9", "--stall-s", "2.5", "--callback-retry-s", "0.5,2,10"]
    argv += ["--transfer-log-size", "50"]
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
        create_limit=5,
        record_info_per_s=9,
        stall_s=2.5,
        callback_retry_s=(0.5, 2.0, 10.0),
        transfer_log_size=50,
    )


def test_the_cli_defaults_are_the_config_defaults() -> None:
    assert config_from(parser().parse_args([])) == SandboxConfig()


def test_the_tapedeck_command_hands_sandbox_options_to_the_sandbox_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tapedeck sandbox ...` reaches the sandbox's own parser: a bad value there exits with its message."""
    with pytest.raises(SystemExit) as exited:
        tapedeck_main(["sandbox", "--callback-retry-s", "1,soon"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "tapedeck sandbox: error: argument --callback-retry-s" in error and "1,5,15" in error


@pytest.mark.parametrize(
    "argv",
    [
        ["--drop", "middle"],
        ["--fail-rate", "2"],
        ["--file-bytes", "0"],
        ["--file-bytes", str(101 << 20)],
        ["--create-limit", "0"],
        ["--record-info-per-s", "-1"],
        ["--stall-s", "-3"],
        ["--callback-retry-s", ""],
        ["--callback-retry-s", "1,-5"],
        ["--callback-retry-s", "1,,5"],
        ["--transfer-log-size", "0"],
    ],
)
def test_the_cli_refuses_bad_values(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(argv)


def test_drop_all_means_every_stage() -> None:
    assert parse_stages("all") == frozenset({"text", "first", "complete", "error"})


@pytest.mark.parametrize(
    "bad",
    [
        {"speed": 0},
        {"file_bytes": 0},
        {"fail_rate": 1.5},
        {"drop": frozenset({"x"})},
        {"create_limit": 0},
        {"record_info_per_s": 0},
        {"stall_s": -1.0},
        {"callback_retry_s": ()},
        {"callback_retry_s": (1.0, -1.0)},
        {"transfer_log_size": 0},
    ],
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
