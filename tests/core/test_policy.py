"""The notice's rules: deadlines, audio, holds, overlap, data-subject requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.core.model import (
    NOTICE_PERIODS,
    EraseRequest,
    Hold,
    HoldKind,
    Period,
    Purpose,
    Recording,
    RecState,
    RequestMode,
    RetentionPeriods,
    Site,
    Tags,
    TimeSource,
)
from edge_agent.core.policy import (
    add_period,
    adopted_audio_decision,
    audio_decision,
    deadline,
    deadline_for,
    erase_matches,
    evaluate_erase,
    hold_covers,
    holds_covering,
    longer_than_notice,
    overlaps,
)

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def rec(
    rid: str = "r1",
    start: datetime = T0,
    minutes: float = 10,
    location: str = "gate",
    purpose: Purpose = Purpose.SECURITY,
    site: Site = Site.PREMISES,
    state: RecState = RecState.ACTIVE,
) -> Recording:
    tags = Tags(
        location=location,
        purpose=purpose,
        site=site,
        audio=False,
        anonymized=False,
        start=start,
        end=start + timedelta(minutes=minutes),
        time_source=TimeSource.RECORDER,
        device="gw-test",
    )
    return Recording(rid, f"{rid}.mp4", tags, 100, "0" * 64, state=state)


def hold(hid: str = "h1", **kw: Any) -> Hold:
    return Hold(
        hid,
        HoldKind.INCIDENT,
        "investigation",
        "dpo",
        T0 - timedelta(days=1),
        **kw,
    )


# -- calendar arithmetic ---------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        ("2026-08-31T12:00:00", 6, "2027-02-28T12:00:00"),
        ("2027-08-31T12:00:00", 6, "2028-02-29T12:00:00"),
        ("2024-02-29T00:00:00", 2, "2024-04-29T00:00:00"),
        ("2026-12-31T23:59:59", 2, "2027-02-28T23:59:59"),
        ("2026-03-31T00:00:00", 1, "2026-04-30T00:00:00"),
        ("2024-02-29T00:00:00", 12, "2025-02-28T00:00:00"),
        ("2024-01-29T00:00:00", 1, "2024-02-29T00:00:00"),
        ("2025-01-29T00:00:00", 1, "2025-02-28T00:00:00"),
        ("2025-01-30T00:00:00", 1, "2025-02-28T00:00:00"),
        ("2026-11-30T00:00:00", 2, "2027-01-30T00:00:00"),
        ("2026-10-31T06:00:00", 2, "2026-12-31T06:00:00"),
    ],
)
def test_add_months_clamps_to_month_end(start: str, months: int, expected: str) -> None:
    assert add_period(ts(start), Period(months=months)) == ts(expected)


def test_add_period_months_then_seconds_and_normalises_to_utc() -> None:
    paris = datetime(2026, 8, 31, 1, 0, tzinfo=ZoneInfo("Europe/Paris"))
    # 01:00 in Paris on 31 Aug is 23:00 UTC on 30 Aug: months are counted in UTC.
    assert add_period(paris, Period(months=6)) == ts("2027-02-28T23:00:00")
    assert add_period(ts("2026-01-31T00:00:00"), Period(months=1, seconds=86400)) == ts(
        "2026-03-01T00:00:00"
    )


def test_naive_start_is_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        add_period(datetime(2026, 1, 1), Period(seconds=1))


def test_deadline_per_purpose_and_site() -> None:
    start = ts("2026-08-31T10:00:00")
    assert deadline(Purpose.SECURITY, Site.EXTERNAL, False, start) == start + timedelta(days=3)
    assert deadline(Purpose.RND, Site.PREMISES, False, start) == ts("2027-02-28T10:00:00")
    assert deadline(Purpose.MARKETING, Site.EXTERNAL, False, start) == ts("2026-10-31T10:00:00")
    assert deadline(Purpose.RND, Site.PREMISES, True, start) is None
    limited = RetentionPeriods(anonymized=Period(months=12))
    assert deadline(Purpose.RND, Site.PREMISES, True, start, limited) == ts("2027-08-31T10:00:00")
    assert deadline_for(rec(start=start, purpose=Purpose.RND, site=Site.EXTERNAL)) == ts(
        "2026-10-31T10:00:00"
    )


_starts = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 12, 31), timezones=st.just(UTC)
)


@given(start=_starts, purpose=st.sampled_from(Purpose), site=st.sampled_from(Site))
def test_deadline_never_later_than_the_notice_allows(
    start: datetime, purpose: Purpose, site: Site
) -> None:
    due = deadline(purpose, site, False, start, NOTICE_PERIODS)
    assert due is not None
    limit = NOTICE_PERIODS.for_purpose(purpose, site)
    assert start < due <= start + timedelta(seconds=limit.upper_bound_seconds())
    assert due >= start + timedelta(seconds=limit.lower_bound_seconds())


@given(start=_starts, months=st.integers(0, 240))
def test_month_arithmetic_lands_on_the_same_day_or_the_month_end(
    start: datetime, months: int
) -> None:
    out = add_period(start, Period(months=months))
    assert (out.year * 12 + out.month) - (start.year * 12 + start.month) == months
    assert out.time() == start.time()
    assert out.day == start.day or (out.day < start.day and (out + timedelta(days=1)).day == 1)


def test_longer_than_notice() -> None:
    assert longer_than_notice(NOTICE_PERIODS) == []
    longer = RetentionPeriods(
        security=Period(seconds=4 * 86400), rnd_external=Period(seconds=62 * 86400)
    )
    # 62 days can outlast 2 calendar months (59 days from 1 Jan in a non-leap year).
    assert longer_than_notice(longer) == ["security", "rnd_external"]
    shorter = RetentionPeriods(marketing_premises=Period(months=1), security=Period(seconds=3600))
    assert longer_than_notice(shorter) == []
    # Two calendar months never last fewer than 59 days: 59d is not longer. The
    # config check and telemetry used to disagree on this (28-day months here).
    assert longer_than_notice(RetentionPeriods(rnd_external=Period(seconds=59 * 86400))) == []


@given(
    days=st.integers(0, 400),
    months=st.integers(0, 14),
    start=st.datetimes(datetime(2020, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC)),
)
def test_not_longer_means_no_start_outlasts_the_notice(
    days: int, months: int, start: datetime
) -> None:
    from edge_agent.core.policy import add_period, is_longer

    value, notice = Period(seconds=days * 86400), Period(months=months)
    if not is_longer(value, notice):
        assert add_period(start, value) <= add_period(start, notice)


# -- audio -------------------------------------------------------------------


def test_audio_kept_only_if_wanted_in_a_signed_audio_room() -> None:
    assert audio_decision(True, True, True).keep
    assert audio_decision(False, True, True).reason == "source does not ask for audio"
    assert audio_decision(True, False, True).reason == "location is not an audio room"
    assert audio_decision(True, True, False).reason == "audio room has no signage"
    for wanted in (True, False):
        for room in (True, False):
            for signs in (True, False):
                assert audio_decision(wanted, room, signs).keep == (wanted and room and signs)


def test_adopted_audio_is_stripped_outside_audio_rooms() -> None:
    d = adopted_audio_decision(True, False, True)
    assert (d.keep, d.strip) == (False, True)
    assert "audio stream removed" in d.reason
    d = adopted_audio_decision(True, True, True)
    assert (d.keep, d.strip) == (True, False)
    d = adopted_audio_decision(False, True, True)
    assert (d.keep, d.strip) == (False, False)


# -- overlap and holds ---------------------------------------------------------


def test_overlap_is_closed_at_the_edges() -> None:
    a, b = T0, T0 + timedelta(hours=1)
    assert overlaps(a, b, b, b + timedelta(hours=1))  # touching at the end
    assert overlaps(a, b, a - timedelta(hours=1), a)  # touching at the start
    assert not overlaps(a, b, b + US, b + timedelta(hours=1))
    assert not overlaps(a, b, a - timedelta(hours=1), a - US)
    assert overlaps(a, b, a + US, b - US)  # inside
    assert overlaps(a, a, a, a)  # instants


@given(a=st.integers(0, 100), la=st.integers(0, 50), b=st.integers(0, 100), lb=st.integers(0, 50))
def test_overlap_is_symmetric_and_matches_shared_instants(a: int, la: int, b: int, lb: int) -> None:
    def t(x: int) -> datetime:
        return T0 + timedelta(seconds=x)

    got = overlaps(t(a), t(a + la), t(b), t(b + lb))
    assert got == overlaps(t(b), t(b + lb), t(a), t(a + la))
    assert got == bool(set(range(a, a + la + 1)) & set(range(b, b + lb + 1)))


def test_hold_by_id_and_by_window() -> None:
    r = rec(start=T0, minutes=10)
    assert hold_covers(hold(recording_ids=("r1",)), r, T0)
    assert not hold_covers(hold(recording_ids=("r2",)), r, T0)
    by_window = hold(
        location="gate", window_start=T0 + timedelta(minutes=10), window_end=T0 + timedelta(hours=1)
    )
    assert hold_covers(by_window, r, T0)  # window starts the instant the recording ends
    late = hold(location="gate", window_start=T0 + timedelta(minutes=10) + US)
    assert not hold_covers(late, r, T0)
    assert hold_covers(hold(location="gate"), r, T0)  # no window: the whole location
    assert not hold_covers(hold(location="lab"), r, T0)


def test_released_or_expired_holds_do_not_cover() -> None:
    r = rec()
    exp = T0 + timedelta(days=1)
    assert hold_covers(hold(recording_ids=("r1",), expires=exp), r, exp)  # in force at expiry
    assert not hold_covers(hold(recording_ids=("r1",), expires=exp), r, exp + US)
    released = hold(recording_ids=("r1",), released_at=T0, released_by="dpo")
    assert not hold_covers(released, r, T0 - timedelta(days=1))
    assert holds_covering(
        r, [hold("b", location="gate"), hold("a", recording_ids=("r1",))], T0
    ) == (
        "a",
        "b",
    )


# -- data-subject requests -------------------------------------------------------


def _req(start: datetime, end: datetime, mode: RequestMode = RequestMode.ERASE) -> EraseRequest:
    return EraseRequest("REF-1", "gate", start, end, mode)


def test_erase_matches_location_overlap_and_live_state() -> None:
    r = rec(start=T0, minutes=10)
    end = T0 + timedelta(minutes=10)
    assert erase_matches(_req(end, end + timedelta(hours=1)), r)
    assert not erase_matches(_req(end + US, end + timedelta(hours=1)), r)
    assert not erase_matches(_req(T0 - timedelta(hours=1), T0 - US), r)
    assert erase_matches(_req(T0 - timedelta(hours=1), T0), r)
    assert not erase_matches(EraseRequest("x", "lab", T0, end), r)
    for state in (RecState.DELETED, RecState.DELETING):
        assert not erase_matches(_req(T0, end), rec(state=state))


def test_erase_that_meets_a_hold_stops_entirely() -> None:
    recs = [rec("a", T0), rec("b", T0 + timedelta(minutes=10)), rec("c", T0 + timedelta(days=1))]
    window = _req(T0, T0 + timedelta(hours=1))
    free = evaluate_erase(window, recs, [], T0)
    assert not free.blocked and [r.id for r in free.to_touch] == ["a", "b"]
    held = evaluate_erase(window, recs, [hold("H7", recording_ids=("b",))], T0)
    assert held.blocked and held.to_touch == ()
    assert [r.id for r in held.matched] == ["a", "b"]
    assert held.held == (("b", ("H7",)),) and held.blocking_holds == ("H7",)
    assert held.reason is not None and "H7" in held.reason and "release" in held.reason
    released = hold("H7", recording_ids=("b",), released_at=T0, released_by="dpo")
    assert [r.id for r in evaluate_erase(window, recs, [released], T0).to_touch] == ["a", "b"]


def test_restrict_marks_held_recordings_too_and_skips_already_restricted() -> None:
    recs = [rec("a", T0), rec("b", T0, state=RecState.RESTRICTED)]
    d = evaluate_erase(
        _req(T0, T0 + timedelta(hours=1), RequestMode.RESTRICT),
        recs,
        [hold("H1", recording_ids=("a",))],
        T0,
    )
    assert not d.blocked and d.blocking_holds == ()
    assert [r.id for r in d.to_touch] == ["a"]
    assert d.held == (("a", ("H1",)),)


def test_request_window_backwards_is_refused() -> None:
    with pytest.raises(ValueError, match="swap"):
        evaluate_erase(_req(T0, T0 - US), [], [], T0)
