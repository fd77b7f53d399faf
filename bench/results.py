"""The figures a bench reports, kept for the README's results table (bench/table.py).

Each bench run with `--results FILE` appends one JSON line: the bench, the command that ran it,
when, and its figures. `make bench` starts a fresh file, runs every bench, then renders it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    what: str  # what was measured, against what
    measured: str  # the figures themselves, with units
    ratio: str = ""  # against the baseline measured in the same run, when there is one
    target: str = ""  # the target, when there is one
    met: bool | None = None  # None: no target


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results", type=Path, help="append this run's figures to FILE (JSON lines) for bench/table.py"
    )


def record(path: Path | None, bench: str, figures: list[Figure]) -> None:
    """Appends this run's figures to `path` (nothing when None)."""
    if path is None:
        return
    here = Path(__file__).resolve().parent.parent
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(here) if script.is_relative_to(here) else script
    entry = {
        "bench": bench,
        "command": shlex.join(["python", str(shown), *[a for a in _without_results(sys.argv[1:])]]),
        "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "figures": [asdict(f) for f in figures],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(entry) + "\n")


def _without_results(argv: list[str]) -> list[str]:
    """The command line less `--results FILE`, which says nothing about what was measured."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--results":
            skip = True
        elif not arg.startswith("--results="):
            kept.append(arg)
    return kept
