"""The metric catalog's rules: bounded label values, one field per sample, read back as written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core import metrics


@pytest.mark.parametrize(
    ("value", "expected"),
    [("music", "music"), ("kie:/api/v1/generate", "kie:/api/v1/generate"), ("", "other"), (None, "other"),
     ("a b", "other"), ("a|b", "other"), ("x" * 64, "x" * 64), ("x" * 65, "other"), ("\u00e9", "other"),
     (404, "404")],
)  # fmt: skip
def test_a_label_value_is_kept_only_when_it_is_short_and_plain(value: object, expected: str) -> None:
    assert metrics.label(value) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/generate", "/api/v1/generate"),
        ("/api/v1/generate/record-info?taskId=5b0f3c1e9a7d", "/api/v1/generate/record-info"),
        ("/v1/tasks/5b0f3c1e9a7d4e2f8c6b1a0d", "/v1/tasks/:id"),
        ("/v1/tasks/task_20261202", "/v1/tasks/:id"),
        ("/api/v1/chat/credit", "/api/v1/chat/credit"),
        ("api/v1/wav/generate/", "/api/v1/wav/generate"),
    ],
)
def test_an_upstream_path_names_no_single_task(path: str, expected: str) -> None:
    assert metrics.endpoint_label(path) == expected


@pytest.mark.parametrize(
    ("seconds", "bucket"), [(0.0, 1), (0.001, 1), (0.0011, 2), (2.5, 11), (2.51, 12), (1e9, 12)]
)
def test_an_observation_falls_in_the_first_bucket_that_holds_it(seconds: float, bucket: int) -> None:
    assert metrics.bucket_of(metrics.ACK_SECONDS, seconds) == bucket


@given(st.sampled_from([m for m in metrics.METRICS if m.kind == "counter"]), st.data())
def test_a_counter_sample_is_read_back_as_written(metric: metrics.Metric, data: st.DataObject) -> None:
    values = tuple(data.draw(st.text(max_size=70)) for _ in metric.labels)
    sample = metrics.parse(metrics.field(metric, values), "7")
    assert sample is not None
    assert (sample.metric, sample.values, sample.value) == (
        metric,
        tuple(metrics.label(v) for v in values),
        7.0,
    )


def test_fields_no_metric_names_are_skipped_not_misread() -> None:
    assert metrics.parse("tapedeck_gone|x", "1") is None
    assert metrics.parse("tapedeck_polls|a|b", "1") is None  # the wrong number of labels
    assert metrics.parse("tapedeck_polls|ok", "not a number") is None
    with pytest.raises(ValueError, match="has labels"):
        metrics.field(metrics.POLLS, ())
