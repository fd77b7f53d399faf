"""The house holds its walls: each wing imports only the wings beneath it (read from the source).

core       pure rules, standard library only, and the exception tree
store      Redis; on top of core and settings
service    upstream clients, submissions, storage, replay; on top of store
web        the HTTP edge               workers   the job edge      (never each other)
cli        may use anything            sandbox   someone else's server: nothing of ours
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("service", "workers", "sandbox", "tests", "bench")

# wing → the wings its modules may import (besides its own and the standard library).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "core": {"errors"},
    "settings": {"core", "errors"},
    "store": {"core", "errors", "settings"},
    "service": {"core", "errors", "settings", "store"},
    "web": {"core", "errors", "settings", "store", "service"},
    "workers": {"core", "errors", "settings", "store", "service"},
    "cli": {"core", "errors", "settings", "store", "service", "web", "workers", "sandbox"},
    "sandbox": set(),
}
THIRD_PARTY_ALLOWED = {wing: wing not in ("core", "errors") for wing in ALLOWED}
# Redis belongs to the store. Outside it, only these may name a Redis or RQ client: the error
# mapping (RedisError), RQ's own queues and worker, the runtime that owns the worker's clients,
# and the local redis-server launcher's readiness ping.
REDIS_LIBRARIES = {"redis", "rq", "hiredis"}
REDIS_OUTSIDE_STORE = {"service.web.app", "workers.queues", "workers.worker", "workers.runtime",
                       "service.cli.redis_server"}  # fmt: skip


def wing_of(module: str) -> str | None:
    """The wing a dotted module name belongs to; None for what is not ours."""
    parts = module.split(".")
    if parts[0] == "workers":
        return "workers"
    if parts[0] == "sandbox":
        return "sandbox"
    if parts[0] != "service":
        return None
    if len(parts) == 1:
        return "errors"  # service/__init__.py: a docstring, nothing more
    if parts[1] in ("core", "store", "web", "cli"):
        return parts[1]
    if parts[1] in ("errors", "settings"):
        return parts[1]
    return "service"


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text() if text is None else text, filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, (
                f"{path}:{node.lineno}: relative import; the layering test reads absolute ones"
            )
            # `from service import store` imports service.store: judge each name as a module path.
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def sources() -> list[Path]:
    return sorted(p for top in ("service", "workers", "sandbox") for p in (ROOT / top).rglob("*.py"))


def violations(path: Path, text: str | None = None) -> list[str]:
    """Every import of `path` (or of `text` placed there) that crosses a wall, as
    'file:line: wing imports target'."""
    wing = wing_of(module_name(path))
    assert wing is not None
    found = []
    for line, target in imports_of(path, text):
        top = target.split(".")[0]
        target_wing = wing_of(target)
        if target_wing is None:
            if top in REDIS_LIBRARIES and wing != "store" and module_name(path) not in REDIS_OUTSIDE_STORE:
                found.append(
                    f"{path.relative_to(ROOT)}:{line}: {wing} imports {target}: Redis is the store's"
                )
            elif top in OURS:
                found.append(f"{path.relative_to(ROOT)}:{line}: {wing} imports {target}")
            elif not THIRD_PARTY_ALLOWED[wing] and top not in sys.stdlib_module_names and top != "__future__":
                found.append(f"{path.relative_to(ROOT)}:{line}: {wing} imports third-party {target}")
            continue
        if target_wing != wing and target_wing not in ALLOWED[wing]:
            found.append(f"{path.relative_to(ROOT)}:{line}: {wing} imports {target}")
    return found


def test_every_module_belongs_to_a_wing() -> None:
    assert sources(), "no sources found: the test would pass on nothing"
    assert all(wing_of(module_name(p)) in ALLOWED for p in sources())


def test_no_module_imports_a_wing_it_must_not() -> None:
    found = [v for path in sources() for v in violations(path)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    ("source", "wing", "crossing"),
    [
        ("from service.store.tasks import TaskStore\n", "core", True),
        ("import redis\n", "core", True),
        ("import json\nfrom service.errors import SignatureError\n", "core", False),
        ("from workers.jobs import download\n", "web", True),
        ("from service.web.app import create_app\n", "workers", True),
        ("from service.cli.main import main\n", "store", True),
        ("from service.store.keys import Keys\n", "workers", False),
        ("from service.settings import Settings\n", "sandbox", True),
        ("from tests.live import serve\n", "service", True),
        ("from service import store\n", "core", True),
        ("from service import errors\n", "core", False),
        ("import redis\n", "web", True),
        ("from redis.exceptions import RedisError\n", "workers", True),
        ("import redis\n", "store", False),
    ],
)
def test_the_walls_catch_a_crossing(source: str, wing: str, crossing: bool) -> None:
    """The checker itself: a planted import in a module of each wing is caught, or allowed."""
    place = {"core": "service/core/x.py", "web": "service/web/x.py", "workers": "workers/x.py",
             "store": "service/store/x.py", "sandbox": "sandbox/x.py", "service": "service/x.py"}  # fmt: skip
    assert bool(violations(ROOT / place[wing], source)) == crossing
