"""The pure parts of scaled-out dispatch: stream entries, the sweep's notion of lost, the catalog's merge
of worker announcements."""

from __future__ import annotations

from predictd.core.ports import Job
from predictd.dispatch.redis_streams import job_fields, job_from_entry
from predictd.dispatch.registry import model_views
from predictd.usecases.recovery import Suspicion


def test_a_job_survives_its_trip_through_a_stream_entry() -> None:
    fields = job_fields("p1", orphaned=True)
    assert job_from_entry("echo", "1-0", fields) == Job("p1", "echo", orphaned=True, receipt="1-0")
    assert job_from_entry("echo", "2-0", job_fields("p2", orphaned=False)) == Job("p2", "echo", False, "2-0")
    assert job_from_entry("echo", "3-0", {"garbage": "x"}) is None


def test_a_prediction_is_lost_only_once_redis_has_not_known_it_for_a_whole_lease() -> None:
    suspicion = Suspicion()
    assert suspicion.lost(["a", "b"], now=100.0, grace_s=15) == []
    assert suspicion.lost(["a", "b"], now=110.0, grace_s=15) == []
    # "b" reappeared in Redis (a heartbeat restored its marker): its clock starts again if it goes missing.
    assert suspicion.lost(["a"], now=116.0, grace_s=15) == ["a"]
    assert suspicion.lost(["a", "b"], now=120.0, grace_s=15) == ["a"]
    assert suspicion.lost([], now=121.0, grace_s=15) == []
    assert suspicion.since == {}


def announced(worker: str, **models: tuple[bool, int]) -> dict[str, object]:
    return {
        "worker": worker,
        "models": {
            slug: {
                "available": up,
                "detail": "" if up else f"{slug} failed to start",
                "slots": slots,
                "input_schema": {"type": "object", "title": slug},
                "output_schema": {"type": "string"},
            }
            for slug, (up, slots) in models.items()
        },
    }


def test_the_catalog_merges_what_live_workers_announce() -> None:
    views = model_views(
        [
            announced("w1", echo=(True, 1), ocr=(False, 1)),
            announced("w2", echo=(True, 2), sleep=(True, 2)),
        ]
    )
    assert views["echo"].available
    assert views["echo"].slots == 3
    assert views["sleep"].slots == 2
    assert not views["ocr"].available
    assert views["ocr"].detail == "ocr failed to start"
    assert views["echo"].schemas == ({"type": "object", "title": "echo"}, {"type": "string"})
    # One worker that can run a model is enough, whatever the order of announcements.
    assert model_views([announced("a", ocr=(False, 1)), announced("b", ocr=(True, 1))])["ocr"].available
    assert "missing" not in views
