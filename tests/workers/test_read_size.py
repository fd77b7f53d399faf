"""The downloads' 1 MiB network reads rest on a class constant of httpcore (httpx has no option for
it): if httpcore renames it, setting it does nothing, and this fails instead of the speed quietly."""

from __future__ import annotations

import httpcore

from workers.downloads import NETWORK_READ_BYTES


def test_httpcore_still_reads_by_the_constant_the_worker_sets() -> None:
    assert isinstance(httpcore.HTTP11Connection.READ_NUM_BYTES, int)
    assert NETWORK_READ_BYTES >= httpcore.HTTP11Connection.READ_NUM_BYTES
