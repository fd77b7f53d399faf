"""Logging for `tapedeck serve`: uvicorn's own configuration, with secrets taken out of the
access log (Kie calls the callback URL with `?token=`)."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any, Final

import uvicorn.config

_TOKEN: Final = re.compile(r"(?i)([?&]token=)[^&\s]*")
REDACTED: Final = "<redacted>"


def redact(text: str) -> str:
    """A request path with the value of every `token` query parameter replaced."""
    return _TOKEN.sub(rf"\g<1>{REDACTED}", text)


class RedactTokens(logging.Filter):
    """Rewrites the path of each access-log record (its third argument, as uvicorn logs it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            record.args = (*record.args[:2], redact(record.args[2]), *record.args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's default configuration with the access handler filtered (dict form, so that
    `--workers` processes build the same filter)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {"redact_tokens": {"()": "service.cli.logs.RedactTokens"}}
    config["handlers"]["access"]["filters"] = ["redact_tokens"]
    return config
