"""deploy/systemd/: one unit per Procfile process, each run as the tapedeck user, restarted on
failure, stopped more slowly than a worker drains, and confined; `systemd-analyze verify` (where
it is installed) finds nothing to say about them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS_DIR = ROOT / "deploy" / "systemd"
SERVICES = sorted(UNITS_DIR.glob("*.service"))
INSTALLED_TAPEDECK = "/opt/tapedeck/venv/bin/tapedeck"
WORKER_DRAIN_S = 25  # WORKER_DRAIN_S's default
ANALYZE = Path("/usr/bin/systemd-analyze")
HARDENING = {
    "NoNewPrivileges": ["yes"],
    "ProtectSystem": ["strict"],
    "ProtectHome": ["yes"],
    "PrivateTmp": ["yes"],
    "PrivateDevices": ["yes"],
    "ProtectKernelTunables": ["yes"],
    "ProtectKernelModules": ["yes"],
    "ProtectControlGroups": ["yes"],
    "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
    "RestrictNamespaces": ["yes"],
    "RestrictSUIDSGID": ["yes"],
    "LockPersonality": ["yes"],
    "MemoryDenyWriteExecute": ["yes"],
    "CapabilityBoundingSet": [""],
    "AmbientCapabilities": [""],
    "SystemCallArchitectures": ["native"],
    "SystemCallFilter": ["@system-service", "~@privileged"],
}
# The keys the units may use, for the check without systemd-analyze: a misspelt one is an error.
KNOWN_KEYS = set(HARDENING) | {
    "Description", "After", "Wants", "PartOf", "WantedBy", "Type", "User", "Group", "EnvironmentFile",
    "ExecStart", "Restart", "RestartSec", "KillSignal", "TimeoutStopSec", "StateDirectory",
    "WorkingDirectory", "UMask", "ProtectKernelLogs", "ProtectClock", "ProtectHostname", "ProtectProc",
    "RestrictRealtime", "RemoveIPC", "SystemCallErrorNumber",
}  # fmt: skip
Unit = dict[str, dict[str, list[str]]]


def read_unit(text: str) -> Unit:
    """Sections of key → values, in order: systemd allows a key more than once."""
    sections: Unit = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: command.split() for name, _, command in (line.partition(": ") for line in lines if line)}


def unit_for(process: str) -> Path:
    return UNITS_DIR / ("tapedeck-worker@.service" if process == "worker" else f"tapedeck-{process}.service")


def seconds(value: str) -> int:
    return int(value.removesuffix("s"))


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_unit_runs_as_tapedeck_restarts_and_outlasts_the_drain(path: Path) -> None:
    service = read_unit(path.read_text())["Service"]
    assert service["User"] == ["tapedeck"] and service["Group"] == ["tapedeck"]
    assert service["EnvironmentFile"] == ["/etc/tapedeck/env"]
    assert service["Restart"] == ["on-failure"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert seconds(service["TimeoutStopSec"][0]) > WORKER_DRAIN_S
    # StateDirectory= is what ProtectSystem=strict leaves writable: STORAGE_DIR lives there.
    assert service["StateDirectory"] == ["tapedeck"]


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_unit_is_confined(path: Path) -> None:
    service = read_unit(path.read_text())["Service"]
    assert {key: service.get(key) for key in HARDENING} == HARDENING


@pytest.mark.parametrize("process", procfile())
def test_every_procfile_process_has_a_unit_running_the_same_command(process: str) -> None:
    command = procfile()[process]
    exec_start = read_unit(unit_for(process).read_text())["Service"]["ExecStart"][0].split()
    assert exec_start[0] == INSTALLED_TAPEDECK
    assert exec_start[1] == command[1]


def test_the_target_starts_every_process() -> None:
    wanted = set(read_unit((UNITS_DIR / "tapedeck.target").read_text())["Unit"]["Wants"][0].split())
    instances = {re.sub(r"@[^.]+\.", "@.", name) for name in wanted}
    assert instances == {unit_for(process).name for process in procfile()}
    assert {"tapedeck-worker@1.service", "tapedeck-worker@2.service"} <= wanted


def test_the_sysusers_entry_creates_the_units_user() -> None:
    lines = [line.split() for line in (UNITS_DIR / "tapedeck.sysusers").read_text().splitlines()]
    entries = [words for words in lines if words and not words[0].startswith("#")]
    assert [words[:2] for words in entries] == [["u", "tapedeck"]]


# The Python check always runs; systemd-analyze too wherever it is installed (no skip elsewhere).
VERIFIERS = ["python", *(["systemd-analyze"] if ANALYZE.exists() else [])]


def installable_copy(directory: Path, break_with: str = "") -> list[Path]:
    """The units as installed, in `directory`, with ExecStart on this checkout's own `tapedeck`
    (verify refuses a command that does not exist); `break_with` is a line added to each service."""
    tapedeck = Path(sys.executable).parent / "tapedeck"
    assert tapedeck.is_file()
    for path in UNITS_DIR.iterdir():
        if path.suffix in (".service", ".target"):
            text = path.read_text().replace(INSTALLED_TAPEDECK, str(tapedeck))
            (directory / path.name).write_text(text.replace("[Service]\n", f"[Service]\n{break_with}\n"))
    names = [
        "tapedeck-web.service",
        "tapedeck-worker@1.service",
        "tapedeck-deliver.service",
        "tapedeck.target",
    ]
    return [directory / name for name in names]


def verify(verifier: str, directory: Path, units: list[Path]) -> list[str]:
    """What is wrong with the units: systemd-analyze's lines about them (and its failure), or the
    unknown keys and missing commands that Python can see."""
    if verifier == "systemd-analyze":
        env = {"PATH": "/usr/bin:/bin", "SYSTEMD_UNIT_PATH": f"{directory}:", "SYSTEMD_LOG_COLOR": "0"}
        run = subprocess.run([str(ANALYZE), "verify", *map(str, units)], capture_output=True, text=True,
                             env=env, check=False)  # fmt: skip
        # It may also speak of the host (other units, the machine): only lines about ours count.
        ours = [line for line in (run.stdout + run.stderr).splitlines() if re.search(r"tapedeck[-.@]", line)]
        return ours + ([f"systemd-analyze exited {run.returncode}"] if run.returncode else [])
    complaints = []
    for path in directory.iterdir():
        for section in read_unit(path.read_text()).values():
            complaints += [f"{path.name}: unknown key {key}" for key in section if key not in KNOWN_KEYS]
            for command in section.get("ExecStart", []):
                if not Path(command.split()[0]).is_file():
                    complaints.append(f"{path.name}: {command} not found")
    return complaints


@pytest.mark.parametrize("verifier", VERIFIERS)
def test_verification_finds_nothing_wrong(tmp_path: Path, verifier: str) -> None:
    assert verify(verifier, tmp_path, installable_copy(tmp_path)) == []


@pytest.mark.parametrize("verifier", VERIFIERS)
@pytest.mark.parametrize("breakage", ["Restrat=on-failure", "ExecStartPre=/nonexistent/prepare"])
def test_verification_sees_a_broken_unit(tmp_path: Path, verifier: str, breakage: str) -> None:
    assert verify(verifier, tmp_path, installable_copy(tmp_path, breakage))
