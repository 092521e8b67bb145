"""core.anon_policy (pure): when the [anonymize] policy picks a recording, why a
job may not run, and when the worker waits (docs/anonymization.md)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from edge_agent.core.anon_policy import (
    AnonPolicy,
    choose,
    original_verdict,
    pause_reason,
    policy_wants,
)
from edge_agent.core.model import Purpose, Recording, RecState, Site, Tags, TimeSource

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def rec(i: int, purpose: Purpose = Purpose.RND, deadline_days: float | None = 30) -> Recording:
    start = NOW - timedelta(hours=1)
    return Recording(
        id=f"r{i}",
        path=f"{i}.mp4",
        tags=Tags(
            "gate",
            purpose,
            Site.PREMISES,
            False,
            False,
            start,
            start + timedelta(minutes=1),
            TimeSource.RECORDER,
            "gw",
        ),
        size=1,
        sha256="x",
        deadline=None if deadline_days is None else NOW + timedelta(days=deadline_days),
    )


def test_catalogued_policy_picks_by_purpose_and_location() -> None:
    p = AnonPolicy("catalogued", purposes=(Purpose.RND,), locations=("gate",))
    assert policy_wants(p, rec(1), NOW)
    assert not policy_wants(p, rec(2, Purpose.SECURITY), NOW)
    assert not policy_wants(replace(p, locations=("yard",)), rec(3), NOW)
    assert not policy_wants(AnonPolicy(None), rec(4), NOW)  # on request only
    assert not policy_wants(p, replace(rec(5), derived_from="r1"), NOW)


def test_before_deadline_policy_waits_until_days_before() -> None:
    p = AnonPolicy("before_deadline", days_before=7)
    assert not policy_wants(p, rec(1, deadline_days=30), NOW)
    assert policy_wants(p, rec(2, deadline_days=6), NOW)
    assert not policy_wants(p, rec(3, deadline_days=None), NOW)  # no deadline: never due


def test_the_deadline_and_requests_win_over_a_job() -> None:
    assert original_verdict(rec(1), NOW) is None
    assert "deadline" in (original_verdict(rec(2, deadline_days=-0.001), NOW) or "")
    assert "restricted" in (original_verdict(replace(rec(3), state=RecState.RESTRICTED), NOW) or "")
    assert "deleted" in (original_verdict(replace(rec(4), state=RecState.DELETED), NOW) or "")
    assert original_verdict(None, NOW) == "original not in the catalog"
    chosen, refused = choose([rec(5), replace(rec(6), derived_from="r5")], NOW)
    assert [r.id for r in chosen] == ["r5"]
    assert refused == [{"id": "r6", "why": "a derivative is not anonymized again"}]


def test_the_worker_waits_for_the_clock_and_the_disk() -> None:
    ok = dict(clock_trusted=True, disk_pressure=False, storage_full=False,
              storage_unavailable=None, free_bytes=10_000, floor_bytes=1_000)  # fmt: skip
    assert pause_reason(**ok) is None  # type: ignore[arg-type]
    assert pause_reason(**{**ok, "clock_trusted": False}) == "clock untrusted"  # type: ignore[arg-type]
    assert pause_reason(**{**ok, "disk_pressure": True}) == "disk pressure"  # type: ignore[arg-type]
    assert pause_reason(**{**ok, "free_bytes": 1_500}) == "free space under twice the floor"  # type: ignore[arg-type]
    assert pause_reason(**{**ok, "free_bytes": None}) == "storage not checked yet"  # type: ignore[arg-type]
    assert "unavailable" in (pause_reason(**{**ok, "storage_unavailable": "EIO"}) or "")  # type: ignore[arg-type]
