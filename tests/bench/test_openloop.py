from __future__ import annotations

import pytest
from openloop import percentile

VALUES = [float(n) for n in range(1, 1001)]  # 1 … 1000


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        (VALUES, 0.5, 500.0),
        (VALUES, 0.99, 990.0),
        (VALUES, 0.999, 999.0),
        (VALUES, 1.0, 1000.0),
        ([3.0], 0.99, 3.0),
        ([], 0.5, 0.0),
        ([1.0, 2.0], 0.5, 1.0),
        ([1.0, 2.0], 0.51, 2.0),
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected
