"""Start-time choice: first plausible candidate; recorder file names."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, tzinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.core.model import TimeSource
from edge_agent.core.timesource import StartChoice, choose_start, parse_segment_name

NOW = datetime(2026, 11, 29, 8, 30, tzinfo=UTC)
FLOOR = datetime(2020, 1, 1, tzinfo=UTC)
FIVE_MIN = timedelta(minutes=5)


def _choose(*cands: tuple[TimeSource, datetime | None]) -> StartChoice:
    return choose_start(cands, NOW, floor=FLOOR, max_future=FIVE_MIN)


def test_recorder_time_wins_when_plausible() -> None:
    rec_t = NOW - timedelta(minutes=1)
    c = _choose(
        (TimeSource.RECORDER, rec_t),
        (TimeSource.CREATION_TIME, NOW - timedelta(hours=1)),
        (TimeSource.MTIME, NOW),
    )
    assert (c.start, c.source, c.rejected) == (rec_t, TimeSource.RECORDER, ())


def test_camera_that_lost_its_clock_falls_through_to_mtime() -> None:
    c = _choose(
        (TimeSource.RECORDER, None),
        (TimeSource.CREATION_TIME, datetime(1970, 1, 1, tzinfo=UTC)),
        (TimeSource.MTIME, NOW - timedelta(seconds=60)),
    )
    assert c.source is TimeSource.MTIME and c.start == NOW - timedelta(seconds=60)
    assert [r.source for r in c.rejected] == [TimeSource.RECORDER, TimeSource.CREATION_TIME]
    assert c.rejected[0].why == "not available"
    assert "before the floor 2020-01-01T00:00:00Z" in c.rejected[1].why


def test_future_edge_and_floor_edge() -> None:
    assert _choose((TimeSource.MTIME, NOW + FIVE_MIN)).source is TimeSource.MTIME
    c = _choose((TimeSource.MTIME, NOW + FIVE_MIN + timedelta(microseconds=1)))
    assert c.source is TimeSource.UNTRUSTED and "ahead of now" in c.rejected[0].why
    assert _choose((TimeSource.RECORDER, FLOOR)).source is TimeSource.RECORDER


def test_nothing_plausible_means_now_untrusted() -> None:
    c = _choose(
        (TimeSource.RECORDER, datetime(2000, 1, 1, tzinfo=UTC)),
        (TimeSource.MTIME, NOW + timedelta(days=365)),
    )
    assert (c.start, c.source) == (NOW, TimeSource.UNTRUSTED)
    assert len(c.rejected) == 2


def test_naive_container_time_is_read_as_utc() -> None:
    c = _choose((TimeSource.CREATION_TIME, datetime(2026, 11, 29, 8, 0)))
    assert c.start == datetime(2026, 11, 29, 8, 0, tzinfo=UTC) and c.start.tzinfo is not None


@given(
    cands=st.lists(
        st.tuples(
            st.sampled_from([TimeSource.RECORDER, TimeSource.CREATION_TIME, TimeSource.MTIME]),
            st.none()
            | st.datetimes(
                min_value=datetime(1960, 1, 1),
                max_value=datetime(2040, 1, 1),
                timezones=st.just(UTC),
            ),
        ),
        max_size=4,
    )
)
def test_choice_is_always_plausible_or_untrusted_now(
    cands: list[tuple[TimeSource, datetime | None]],
) -> None:
    c = choose_start(cands, NOW, floor=FLOOR, max_future=FIVE_MIN)
    if c.source is TimeSource.UNTRUSTED:
        assert c.start == NOW and len(c.rejected) == len(cands)
    else:
        assert FLOOR <= c.start <= NOW + FIVE_MIN
        assert c.start == cands[len(c.rejected)][1]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("20261129T083000Z", "2026-11-29T08:30:00+00:00"),
        ("20261129T083000Z.mp4", "2026-11-29T08:30:00+00:00"),
        ("2026-11-29T08-30-00Z.mkv", "2026-11-29T08:30:00+00:00"),
        ("2026-11-29T08:30:00+01:00.mp4", "2026-11-29T07:30:00+00:00"),
        ("cam-gate_20261129-083000.mp4", "2026-11-29T08:30:00+00:00"),
        ("cam-gate_2026-11-29_08-30-00.mp4", "2026-11-29T08:30:00+00:00"),
        ("ch01_20261129083000.mp4", "2026-11-29T08:30:00+00:00"),
        ("RecM01_20261129_083000_083500_6E1100_1.mp4", "2026-11-29T08:30:00+00:00"),
        ("x_20261129-083000-083500.mp4", "2026-11-29T08:30:00+00:00"),
        ("seg_20261129T083000.250Z.ts", "2026-11-29T08:30:00.250000+00:00"),
        ("20261129T083000-0500.mp4", "2026-11-29T13:30:00+00:00"),
        # A bad first date-time does not hide a good later one.
        ("cam_20261399-083000_20261129-083000.mp4", "2026-11-29T08:30:00+00:00"),
    ],
)
def test_parse_segment_name(name: str, expected: str) -> None:
    assert parse_segment_name(name) == datetime.fromisoformat(expected)


@pytest.mark.parametrize(
    "name",
    [
        "clip.mp4",
        "cam-7.mp4",
        "20261129.mp4",
        "120261129T083000Z",
        "20261340T083000Z",
        "2026112908300",
    ],
)
def test_parse_segment_name_rejects(name: str) -> None:
    assert parse_segment_name(name) is None


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)
    )
)
def test_parse_round_trips_the_agents_own_names(dt: datetime) -> None:
    dt = dt.replace(microsecond=0)
    assert parse_segment_name(f"{dt:%Y%m%dT%H%M%SZ}_cam-a_1a2b3c4d.mp4") == dt
    assert parse_segment_name(f"cam_{dt:%Y-%m-%dT%H-%M-%S}Z.mkv") == dt


# -- times from outside never throw anything but ValueError (issue: hostile input) ----


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+01:00",  # one hour before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # one hour after year 9999 in UTC
        "0001-01-01T00:00:00+23:59",
        "x" * 10_000,
    ],
)
def test_parse_ts_out_of_range_is_a_value_error(text: str) -> None:
    from edge_agent.core.model import parse_ts

    with pytest.raises(ValueError):
        parse_ts(text)


def test_segment_name_at_the_edges_of_time_is_not_a_time() -> None:
    assert parse_segment_name("cam_00010101T000000+0100.mp4") is None
    assert parse_segment_name("cam_99991231T235959-0100.mp4") is None


@given(st.text(max_size=80))
def test_parse_ts_only_raises_value_error(text: str) -> None:
    from edge_agent.core.model import parse_ts

    with contextlib.suppress(ValueError):
        parse_ts(text)


# -- local time in file names (name_timezone) ---------------------------------------


def _paris() -> tzinfo:
    from edge_agent.core.timesource import zone

    return zone("Europe/Paris")


@pytest.mark.parametrize(
    ("name", "utc"),
    [
        # summer (CEST, +02:00) and winter (CET, +01:00)
        ("cam1_20260715_101500.mp4", datetime(2026, 7, 15, 8, 15, tzinfo=UTC)),
        ("cam1_20261128_101500.mp4", datetime(2026, 11, 28, 9, 15, tzinfo=UTC)),
        # 25 Oct 2026: 02:00-03:00 happens twice; the earlier instant (CEST) wins
        ("cam1_20261025_023000.mp4", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        # 29 Mar 2026: 02:00-03:00 does not exist; the earlier reading wins
        ("cam1_20260329_023000.mp4", datetime(2026, 3, 29, 0, 30, tzinfo=UTC)),
        # an explicit offset is taken as written, whatever the zone
        ("cam1_20261128T101500Z.mp4", datetime(2026, 11, 28, 10, 15, tzinfo=UTC)),
    ],
)
def test_names_in_local_time(name: str, utc: datetime) -> None:
    assert parse_segment_name(name, _paris()) == utc


def test_unknown_zone_names_the_fix() -> None:
    from edge_agent.core.timesource import zone

    with pytest.raises(ValueError, match="IANA"):
        zone("Europe/Atlantis")


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31)))
def test_local_reading_is_never_later_than_either_interpretation(naive: datetime) -> None:
    naive = naive.replace(microsecond=0)
    name = f"cam_{naive:%Y%m%d_%H%M%S}.mp4"
    got = parse_segment_name(name, _paris())
    assert got is not None
    for fold in (0, 1):
        assert got <= naive.replace(tzinfo=_paris(), fold=fold).astimezone(UTC)
