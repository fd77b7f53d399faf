"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_polling import PollEnv


@pytest.fixture
def poll_env(redis_url: str, tmp_path: Path) -> PollEnv:
    """Tapedeck's and its workers' settings with polling compressed to fractions of a second."""
    return PollEnv(redis_url, tmp_path / "files")
