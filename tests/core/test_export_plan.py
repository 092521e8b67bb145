"""The export rules and the holdings selection, over plain data (core/export_plan.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core.export_plan import (
    ExportQuery,
    LeftOut,
    audio_refusal,
    holdings_at,
    left_out_reason,
    plan_export,
)
from edge_agent.core.model import (
    EraseRequest,
    Hold,
    HoldKind,
    Purpose,
    Recording,
    RecState,
    RequestMode,
    Site,
    Tags,
    TimeSource,
)

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def rec(
    i: int,
    *,
    minute: int = 0,
    seconds: int = 60,
    location: str = "gate",
    purpose: Purpose = Purpose.SECURITY,
    anonymized: bool = False,
    state: RecState = RecState.ACTIVE,
) -> Recording:
    start = T0 + timedelta(minutes=minute)
    return Recording(
        id=f"r{i}",
        path=f"{location}/{i}.mp4",
        tags=Tags(
            location,
            purpose,
            Site.PREMISES,
            False,
            anonymized,
            start,
            start + timedelta(seconds=seconds),
            TimeSource.RECORDER,
            "gw",
        ),
        size=100 + i,
        sha256=f"{i:064x}",
        state=state,
        deadline=start + timedelta(days=3),
    )


def q(**kw: object) -> ExportQuery:
    base: dict[str, object] = {
        "location": "gate",
        "start": T0,
        "end": T0 + timedelta(hours=1),
    }
    base.update(kw)
    return ExportQuery(**base)  # type: ignore[arg-type]


def test_restricted_never_goes_and_is_counted() -> None:
    plan = plan_export([rec(1), rec(2, state=RecState.RESTRICTED), rec(3, minute=5)], q())
    assert [r.id for r in plan.chosen] == ["r1", "r3"]
    assert plan.left_out == {LeftOut.RESTRICTED: 1}


def test_marketing_takes_anonymized_derivatives_unless_configured() -> None:
    recs = [rec(1, purpose=Purpose.MARKETING), rec(2, purpose=Purpose.MARKETING, anonymized=True)]
    plan = plan_export(recs, q(purpose=Purpose.MARKETING))
    assert [r.id for r in plan.chosen] == ["r2"]
    assert plan.left_out == {LeftOut.MARKETING_ORIGINAL: 1}
    plan = plan_export(recs, q(purpose=Purpose.MARKETING, marketing_originals=True))
    assert [r.id for r in plan.chosen] == ["r1", "r2"]
    # Without --purpose a marketing original still stays home.
    assert [r.id for r in plan_export(recs, q()).chosen] == ["r2"]


def test_marketing_without_derivatives_says_why() -> None:
    plan = plan_export([rec(1, purpose=Purpose.MARKETING)], q(purpose=Purpose.MARKETING))
    assert plan.chosen == ()
    assert "anonymized derivatives only" in plan.why_empty()
    assert "overlaps" in plan_export([], q()).why_empty()


def test_anonymized_only_and_purpose_and_window_edges() -> None:
    recs = [
        rec(1, anonymized=True),
        rec(2, purpose=Purpose.RND),
        rec(3, minute=-2, seconds=60),  # ends before the window
        rec(4, minute=60, seconds=1),  # starts at the window's end: overlaps (closed)
        rec(5, location="lab"),
        rec(6, state=RecState.DELETED),
    ]
    plan = plan_export(recs, q())
    assert [r.id for r in plan.chosen] == ["r1", "r2", "r4"]
    assert plan.left_out == {LeftOut.NOT_ON_DISK: 1}
    plan = plan_export(recs, q(anonymized_only=True))
    assert [r.id for r in plan.chosen] == ["r1"]
    plan = plan_export(recs, q(purpose=Purpose.RND))
    assert [r.id for r in plan.chosen] == ["r2"]


def test_audio_rule() -> None:
    assert audio_refusal(False, True) is not None
    assert audio_refusal(True, True) is None
    assert audio_refusal(False, False) is None


_recs = st.lists(
    st.builds(
        rec,
        st.integers(0, 10_000),
        minute=st.integers(-120, 120),
        seconds=st.integers(0, 3600),
        location=st.sampled_from(["gate", "lab"]),
        purpose=st.sampled_from(Purpose),
        anonymized=st.booleans(),
        state=st.sampled_from(RecState),
    ),
    max_size=30,
    unique_by=lambda r: r.id,
)


@settings(max_examples=200, deadline=None)
@given(
    recs=_recs,
    purpose=st.none() | st.sampled_from(Purpose),
    anonymized_only=st.booleans(),
    originals=st.booleans(),
)
def test_no_rule_is_ever_broken(
    recs: list[Recording], purpose: Purpose | None, anonymized_only: bool, originals: bool
) -> None:
    query = q(purpose=purpose, anonymized_only=anonymized_only, marketing_originals=originals)
    plan = plan_export(recs, query)
    for r in plan.chosen:
        assert r.state is RecState.ACTIVE and r.location == "gate"
        assert r.start <= query.end and query.start <= r.end
        if anonymized_only or (r.tags.purpose is Purpose.MARKETING and not originals):
            assert r.tags.anonymized
        assert purpose is None or r.tags.purpose is purpose
    # Every recording in scope is either chosen or counted, once.
    in_scope = {
        r.id: r
        for r in recs
        if r.location == "gate" and r.start <= query.end and query.start <= r.end
    }
    assert len(plan.chosen) + sum(plan.left_out.values()) == len(in_scope)
    restricted = {i for i, r in in_scope.items() if left_out_reason(r, query) is LeftOut.RESTRICTED}
    assert plan.left_out.get(LeftOut.RESTRICTED, 0) == len(restricted)


def test_holdings_at_an_instant() -> None:
    at = T0 + timedelta(seconds=30)
    recs = [
        rec(1),
        rec(2, anonymized=True, purpose=Purpose.MARKETING),
        rec(3, state=RecState.RESTRICTED),
        rec(4, state=RecState.DELETED),
        rec(5, minute=5),
        rec(6, location="lab"),
    ]
    hold_ids = Hold("h1", HoldKind.INCIDENT, "fight", "dpo", T0, recording_ids=("r1",))
    hold_place = Hold(
        "h2", HoldKind.INCIDENT, "theft", "dpo", T0, location="gate",
        window_start=at, window_end=at,
    )  # fmt: skip
    released = Hold("h3", HoldKind.INCIDENT, "old", "dpo", T0, location="gate", released_at=T0)
    reqs = [
        EraseRequest("DSR-1", "gate", T0, T0 + timedelta(hours=1), RequestMode.RESTRICT),
        EraseRequest("DSR-2", "gate", T0, T0 + timedelta(hours=1), RequestMode.ERASE),
        EraseRequest("DSR-3", "lab", T0, T0 + timedelta(hours=1), RequestMode.RESTRICT),
    ]
    h = holdings_at("gate", at, recs, [hold_ids, hold_place, released], reqs, now=T0)
    assert [r.id for r in h.recordings] == ["r1", "r3"]
    assert [r.id for r in h.derivatives] == ["r2"]
    assert [x.id for x in h.holds] == ["h1", "h2"]
    assert h.held_by["r1"] == ("h1", "h2")
    assert [r.ref for r in h.restrictions] == ["DSR-1"]
