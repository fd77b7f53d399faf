"""The one exception tree: every error class of ours is in service/errors.py and drawn in its
docstring, and each maps to one HTTP status."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import service
import service.errors as errors
import workers

# Programming and set-up errors that stop a process; the docstring names them outside the tree.
OUTSIDE_THE_TREE = {"RedisServerNotFound", "ObjectServerNotFound", "NoRuntime"}


def our_modules() -> list[ModuleType]:
    found = []
    for package in (service, workers):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            found.append(importlib.import_module(info.name))
    return found


def test_every_exception_class_of_ours_lives_in_errors_py() -> None:
    elsewhere = {
        name
        for module in our_modules()
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
        and module is not errors
    }
    assert elsewhere == OUTSIDE_THE_TREE


def test_the_docstring_draws_every_class_of_the_tree() -> None:
    classes = [v for v in vars(errors).values() if inspect.isclass(v) and issubclass(v, errors.TapedeckError)]
    assert len(classes) > 20
    doc = errors.__doc__ or ""
    assert [c.__name__ for c in classes if c.__name__ not in doc] == []
    assert all(name in doc for name in OUTSIDE_THE_TREE)


def test_every_error_has_a_status_and_a_code_of_its_own() -> None:
    classes = [v for v in vars(errors).values() if inspect.isclass(v) and issubclass(v, errors.TapedeckError)]
    assert all(100 <= c.status_code < 600 for c in classes)
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), "each class names itself in the JSON `error` field"
