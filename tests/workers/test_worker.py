"""The worker loop's recovery when Redis fails under an RQ worker."""

from __future__ import annotations

from pathlib import Path

from service.cli.redis_server import free_port
from tests.e2e.workers import runtime_for
from workers.worker import requeue_cut_off


def test_a_download_cut_off_by_redis_failing_is_queued_again_once_it_answers(
    redis_url: str, tmp_path: Path
) -> None:
    """Its job ended with the RQ worker: without this, it waits out the sweep's two-minute grace."""
    with runtime_for({"REDIS_URL": redis_url, "STORAGE_DIR": str(tmp_path)}) as runtime:
        assert requeue_cut_off(runtime, [("t1", "audio-a")]) == []
        [job_id] = runtime.queues.downloads[False].job_ids
        assert job_id.startswith("td-download-t1-audio-a-c")


def test_while_redis_is_still_away_the_cut_off_download_is_kept_for_the_next_try(tmp_path: Path) -> None:
    away = f"redis://127.0.0.1:{free_port()}/0"
    with runtime_for({"REDIS_URL": away, "STORAGE_DIR": str(tmp_path)}) as runtime:
        assert requeue_cut_off(runtime, [("t1", "audio-a")]) == [("t1", "audio-a")]
