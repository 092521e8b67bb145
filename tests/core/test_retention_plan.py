"""The retention plan: deadlines, holds, disk pressure and the clock guard together."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core.model import (
    Hold,
    HoldKind,
    Purpose,
    Recording,
    RecState,
    Site,
    Tags,
    TimeSource,
)
from edge_agent.core.policy import deadline_for, hold_covers
from edge_agent.core.retention_plan import (
    DeletionReason,
    SourcePriority,
    choose_for_pressure,
    plan,
    sources_to_stop,
)

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def rec(
    rid: str,
    start: datetime,
    *,
    size: int = 100,
    deadline: datetime | None = None,
    auto_deadline: bool = True,
    state: RecState = RecState.ACTIVE,
    purpose: Purpose = Purpose.SECURITY,
    location: str = "gate",
    time_source: TimeSource = TimeSource.RECORDER,
) -> Recording:
    tags = Tags(
        location=location,
        purpose=purpose,
        site=Site.PREMISES,
        audio=False,
        anonymized=False,
        start=start,
        end=start + timedelta(minutes=1),
        time_source=time_source,
        device="gw-test",
    )
    r = Recording(rid, f"2026/{rid}.mp4", tags, size, "0" * 64, state=state)
    return replace(r, deadline=deadline_for(r) if auto_deadline else deadline)


def hold_ids(hid: str, *ids: str, expires: datetime | None = None) -> Hold:
    return Hold(hid, HoldKind.INCIDENT, "case 12", "dpo", T0, recording_ids=ids, expires=expires)


def test_past_deadline_deleted_with_reason_future_kept_and_next_deadline() -> None:
    old = rec("old", T0 - 4 * DAY)
    young = rec("young", T0 - DAY)
    p = plan([young, old], [], T0, clock_trusted=True)
    assert [d.recording_id for d in p.deletions] == ["old"]
    d = p.deletions[0]
    assert d.reason is DeletionReason.RETENTION and d.deadline == T0 - DAY
    assert d.path == "2026/old.mp4"
    assert "security" in d.detail and "2026-11-28T08:00:00Z" in d.detail
    assert p.next_deadline == T0 + 2 * DAY == p.next_wake
    assert (p.overdue_count, p.worst_overdue_seconds) == (1, 86400.0)
    assert p.blocked_reason is None


def test_deadline_exactly_now_is_due() -> None:
    r = rec("r", T0 - 3 * DAY)
    assert r.deadline == T0
    assert [d.recording_id for d in plan([r], [], T0, clock_trusted=True).deletions] == ["r"]


def test_stored_deadline_is_used_not_recomputed() -> None:
    r = rec("r", T0 - 10 * DAY, deadline=T0 + DAY, auto_deadline=False)
    p = plan([r], [], T0, clock_trusted=True)
    assert p.deletions == () and p.next_deadline == T0 + DAY


def test_hold_keeps_past_deadline_footage_and_wakes_at_expiry() -> None:
    r = rec("r", T0 - 4 * DAY)
    p = plan([r], [hold_ids("H1", "r", expires=T0 + 5 * DAY)], T0, clock_trusted=True)
    assert p.deletions == () and p.kept_by_hold == (("r", ("H1",)),)
    assert p.overdue_count == 0 and p.next_deadline is None and p.next_wake == T0 + 5 * DAY


def test_only_active_and_restricted_considered() -> None:
    recs = [
        rec("a", T0 - 9 * DAY, state=RecState.DELETED),
        rec("b", T0 - 9 * DAY, state=RecState.MISSING),
        rec("c", T0 - 9 * DAY, state=RecState.DELETING),
        rec("d", T0 - 9 * DAY, state=RecState.RESTRICTED),
    ]
    assert [d.recording_id for d in plan(recs, [], T0, clock_trusted=True).deletions] == ["d"]


def test_untrusted_time_source_without_deadline_is_not_deleted() -> None:
    r = rec("u", T0 - 9 * DAY, auto_deadline=False, time_source=TimeSource.UNTRUSTED)
    p = plan([r], [], T0, clock_trusted=True)
    assert p.deletions == () and p.awaiting_deadline == ("u",)


def test_untrusted_clock_blocks_every_deletion() -> None:
    recs = [rec("old", T0 - 9 * DAY), rec("new", T0)]
    p = plan(
        recs,
        [],
        T0,
        clock_trusted=False,
        clock_reason="wall clock jumped -3600 s against CLOCK_BOOTTIME",
        free_bytes=0,
        floor_bytes=10_000,
    )
    assert p.deletions == ()
    assert p.blocked_reason == "wall clock jumped -3600 s against CLOCK_BOOTTIME"
    assert p.overdue_count == 1 and p.disk_pressure_bytes_needed == 10_000
    assert plan(recs, [], T0, clock_trusted=False).blocked_reason == "wall clock is untrusted"


def test_disk_pressure_order_and_stop() -> None:
    recs = [
        rec("rnd-old", T0 - 30 * DAY, purpose=Purpose.RND, size=300),  # deadline in ~5 months
        rec("sec-new", T0 - timedelta(hours=1), size=300),  # deadline in ~3 days
        rec("sec-older", T0 - DAY, size=300),  # deadline in 2 days
        rec("nodl", T0 - 60 * DAY, auto_deadline=False, size=300),
        rec("held", T0 - 2 * DAY, size=10_000),
    ]
    holds = [hold_ids("H", "held")]
    p = plan(recs, holds, T0, clock_trusted=True, free_bytes=1000, floor_bytes=1500)
    assert p.disk_pressure_bytes_needed == 500
    assert [d.recording_id for d in p.deletions] == ["sec-older", "sec-new"]
    assert {d.reason for d in p.deletions} == {DeletionReason.DISK_PRESSURE}
    assert not p.storage_full_held
    assert p.next_deadline == recs[0].deadline

    everything = plan(recs, holds, T0, clock_trusted=True, free_bytes=0, floor_bytes=10**6)
    assert [d.recording_id for d in everything.deletions] == [
        "sec-older",
        "sec-new",
        "rnd-old",
        "nodl",
    ]
    assert everything.storage_full_held


def test_retention_deletions_count_toward_pressure() -> None:
    recs = [rec("due", T0 - 5 * DAY, size=800), rec("young", T0, size=800)]
    p = plan(recs, [], T0, clock_trusted=True, free_bytes=0, floor_bytes=500)
    assert [(d.recording_id, d.reason) for d in p.deletions] == [("due", DeletionReason.RETENTION)]


def test_pressure_with_only_held_footage_left() -> None:
    r = rec("held", T0, size=10)
    p = plan([r], [hold_ids("H", "held")], T0, clock_trusted=True, free_bytes=0, floor_bytes=1)
    assert p.deletions == () and p.storage_full_held


def test_choose_for_pressure_direct() -> None:
    a = rec("a", T0 - 2 * DAY, size=10)
    b = rec("b", T0 - 2 * DAY, size=10)  # same deadline and start: id breaks the tie
    c = rec("c", T0 - 3 * DAY, size=10, auto_deadline=False)
    assert [r.id for r in choose_for_pressure([c, b, a], [], T0, 15)] == ["a", "b"]
    assert choose_for_pressure([a], [], T0, 0) == []
    assert [r.id for r in choose_for_pressure([c, b, a], [hold_ids("H", "a")], T0, 100)] == [
        "b",
        "c",
    ]


def test_sources_to_stop_lowest_priority_first() -> None:
    srcs = [SourcePriority("cam-b", 1), SourcePriority("cam-a", 1), ("cam-z", 0), ("cam-y", 9)]
    assert sources_to_stop(srcs, 3) == ["cam-z", "cam-a", "cam-b"]
    assert sources_to_stop(srcs, 0) == []


# -- properties ------------------------------------------------------------------

_ids = [f"r{i}" for i in range(12)]


@st.composite
def _recordings(draw: st.DrawFn) -> list[Recording]:
    out = []
    for rid in draw(st.lists(st.sampled_from(_ids), unique=True, max_size=12)):
        start = T0 + timedelta(hours=draw(st.integers(-24 * 400, 24 * 10)))
        r = rec(
            rid,
            start,
            size=draw(st.integers(0, 1000)),
            purpose=draw(st.sampled_from(Purpose)),
            location=draw(st.sampled_from(["gate", "lab"])),
            state=draw(st.sampled_from(RecState)),
        )
        if draw(st.booleans()):
            r = replace(r, deadline=None)
        out.append(r)
    return out


@st.composite
def _holds(draw: st.DrawFn) -> list[Hold]:
    out = []
    for i in range(draw(st.integers(0, 4))):
        ws = T0 + timedelta(hours=draw(st.integers(-24 * 400, 24 * 10)))
        out.append(
            Hold(
                f"H{i}",
                draw(st.sampled_from(HoldKind)),
                "case",
                "dpo",
                T0,
                recording_ids=tuple(draw(st.lists(st.sampled_from(_ids), max_size=3))),
                location=draw(st.sampled_from([None, "gate", "lab"])),
                window_start=ws,
                window_end=ws + timedelta(hours=draw(st.integers(0, 24 * 30))),
                expires=draw(st.sampled_from([None, T0, T0 + 30 * DAY])),
                released_at=draw(st.sampled_from([None, T0])),
            )
        )
    return out


@settings(max_examples=300, deadline=None)
@given(
    recs=_recordings(),
    holds=_holds(),
    now_h=st.integers(-24 * 30, 24 * 400),
    free=st.integers(0, 5000),
    floor=st.integers(0, 5000),
    trusted=st.booleans(),
)
def test_nothing_held_is_ever_planned_and_plan_is_deterministic(
    recs: list[Recording], holds: list[Hold], now_h: int, free: int, floor: int, trusted: bool
) -> None:
    now = T0 + timedelta(hours=now_h)
    p = plan(recs, holds, now, clock_trusted=trusted, free_bytes=free, floor_bytes=floor)
    by_id = {r.id: r for r in recs}
    for d in p.deletions:
        r = by_id[d.recording_id]
        assert not any(hold_covers(h, r, now) for h in holds)
        assert r.state in (RecState.ACTIVE, RecState.RESTRICTED)
        if d.reason is DeletionReason.RETENTION:
            assert r.deadline is not None and r.deadline <= now
    assert len({d.recording_id for d in p.deletions}) == len(p.deletions)
    if not trusted:
        assert p.deletions == ()
    if trusted and free < floor and not p.storage_full_held:
        assert p.bytes_freed >= floor - free
    assert (
        plan(
            list(reversed(recs)),
            holds,
            now,
            clock_trusted=trusted,
            free_bytes=free,
            floor_bytes=floor,
        )
        == p
    )
    if p.next_deadline is not None:
        assert p.next_deadline > now
    if trusted and p.storage_full_held:
        # Only held footage may be left once the plan is carried out.
        planned = {d.recording_id for d in p.deletions}
        for r in recs:
            if r.state in (RecState.ACTIVE, RecState.RESTRICTED) and r.id not in planned:
                assert any(hold_covers(h, r, now) for h in holds)
