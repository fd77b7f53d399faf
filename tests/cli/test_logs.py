"""The access log of `tapedeck serve` never shows the callback token."""

from __future__ import annotations

import logging

import pytest

from service.cli.logs import RedactTokens, log_config, redact


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/callbacks/kie?token=s3cret", "/callbacks/kie?token=<redacted>"),
        ("/callbacks/kie?sub=sub_1&Token=s3cret&x=1", "/callbacks/kie?sub=sub_1&Token=<redacted>&x=1"),
        ("/callbacks/kie?TOKEN=s3cret", "/callbacks/kie?TOKEN=<redacted>"),
        ("/tasks?status=complete", "/tasks?status=complete"),
        ("/callbacks/kie?notatoken=1", "/callbacks/kie?notatoken=1"),
    ],
)
def test_a_token_in_the_query_is_redacted_in_any_case(path: str, shown: str) -> None:
    assert redact(path) == shown


def test_the_access_logger_is_configured_with_the_filter() -> None:
    config = log_config()
    assert config["handlers"]["access"]["filters"] == ["redact_tokens"]
    args = ("1.2.3.4:5", "POST", "/callbacks/kie?token=s3cret", "1.1", 200)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
    )
    assert RedactTokens().filter(record)
    assert "s3cret" not in record.getMessage() and "<redacted>" in record.getMessage()
