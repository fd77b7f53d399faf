"""Renders the figures `make bench` gathered (bench/results.py) as the README's results table.

    python bench/table.py RESULTS.jsonl [--readme README.md]

Prints the table; with --readme, replaces what lies between the README's results markers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

START = "<!-- bench-results: written by `make bench` (bench/table.py); not by hand -->"
END = "<!-- /bench-results -->"


def render(entries: list[dict[str, Any]]) -> str:
    if not entries:
        raise ValueError("no bench results to render")
    days = sorted({e["at"][:10] for e in entries})
    machines = sorted({e["machine"] for e in entries})
    lines = [
        f"Measured by `make bench` on {' to '.join(dict.fromkeys([days[0], days[-1]]))}, on "
        f"{'; '.join(machines)}. Absolute figures vary from "
        "machine to machine and run to run; the ratios, each against a baseline measured in the same "
        "run, are what to compare.",
        "",
        "| bench | what | measured | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for entry in entries:
        for figure in entry["figures"]:
            met = {True: "yes", False: "**no**", None: ""}[figure["met"]]
            cells = [
                entry["bench"],
                figure["what"],
                figure["measured"],
                figure["ratio"],
                figure["target"],
                met,
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Commands:", ""]
    lines += [f"- {e['bench']}: `{e['command']}` ({e['at']})" for e in entries]
    return "\n".join(lines)


def replace_between_markers(text: str, table: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"the README has no results markers: {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path)
    parser.add_argument("--readme", type=Path)
    options = parser.parse_args()
    entries = [json.loads(line) for line in options.results.read_text().splitlines() if line.strip()]
    table = render(entries)
    print(table)
    if options.readme is not None:
        options.readme.write_text(replace_between_markers(options.readme.read_text(), table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
