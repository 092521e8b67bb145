"""The clock guard: when the wall clock may be trusted to delete by."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edge_agent.core.clock import (
    ClockSample,
    ClockVerdict,
    FakeClock,
    evaluate_clock,
    newest_trusted_start,
    take_sample,
)
from edge_agent.core.model import Purpose, Recording, Site, Tags, TimeSource
from edge_agent.host.sysclock import SystemClock, kernel_clock_synced, read_boot_id

RELEASE = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
NEWEST = NOW - timedelta(minutes=2)


def check(
    cur: ClockSample,
    prev: ClockSample | None,
    *,
    newest: datetime | None = NEWEST,
    trust_rtc: bool = False,
) -> ClockVerdict:
    return evaluate_clock(
        cur,
        prev,
        newest_recording_start=newest,
        release_date=RELEASE,
        max_jump=timedelta(seconds=120),
        max_ahead_unsynced=timedelta(days=2),
        trust_rtc=trust_rtc,
    )


def test_steady_clock_is_trusted_and_becomes_the_reference() -> None:
    clk = FakeClock(NOW)
    first = take_sample(clk)
    clk.advance(60)
    cur = take_sample(clk)
    v = check(cur, first)
    assert (v.trusted, v.reason, v.reference) == (True, None, cur)
    # The evidence the clock is trusted on is carried for status and telemetry.
    assert v.evidence is not None and v.evidence.source == "kernel"


def test_small_drift_within_threshold_is_fine() -> None:
    clk = FakeClock(NOW)
    prev = take_sample(clk)
    clk.advance(3600)
    clk.jump_wall(30)
    assert check(take_sample(clk), prev).trusted


def test_1970_is_before_release_date() -> None:
    v = check(ClockSample(datetime(1970, 1, 1, tzinfo=UTC), 5.0, "b2", False), None, newest=None)
    assert not v.trusted
    assert v.reason == (
        "wall clock 1970-01-01T00:00:00Z is before release date 2026-11-01T00:00:00Z"
    )


def test_behind_newest_recording() -> None:
    v = check(ClockSample(NOW - timedelta(days=1), 5.0, "b2", True), None)
    assert not v.trusted and "before the newest recording start" in (v.reason or "")
    # A few minutes behind a recording stamped by a camera running slightly fast is fine.
    assert check(ClockSample(NEWEST - timedelta(minutes=5), 5.0, "b2", True), None).trusted


def test_jump_back_one_hour_stays_untrusted_until_put_right() -> None:
    clk = FakeClock(NOW, synced=False)
    ref = take_sample(clk)
    clk.advance(60)
    clk.jump_wall(-3600)
    v = check(take_sample(clk), ref, newest=None)
    assert not v.trusted
    assert v.reason == "wall clock jumped -3600 s against CLOCK_BOOTTIME"
    assert v.reference == ref  # the reference does not follow a bad clock
    clk.advance(60)
    assert not check(take_sample(clk), v.reference, newest=None).trusted
    clk.jump_wall(3600)  # an operator fixes it
    fixed = check(take_sample(clk), v.reference, newest=None)
    assert fixed.trusted and fixed.reference == take_sample(clk)


def test_jump_forward_ten_years() -> None:
    clk = FakeClock(NOW, synced=None)
    ref = take_sample(clk)
    clk.advance(10)
    clk.jump_wall(10 * 365 * 86400)
    v = check(take_sample(clk), ref)
    assert not v.trusted and "jumped +315360000 s" in (v.reason or "")


def test_step_made_by_synchronised_ntp_is_accepted_with_a_note() -> None:
    clk = FakeClock(NOW, synced=True)
    ref = take_sample(clk)
    clk.advance(10)
    clk.jump_wall(7200)
    v = check(take_sample(clk), ref)
    assert v.trusted and v.note is not None and "NTP sync" in v.note


def test_reboot_far_ahead_unsynced_is_untrusted_unless_trust_rtc() -> None:
    clk = FakeClock(NOW, boot_id="b1", synced=False)
    ref = take_sample(clk)
    clk.reboot("b2", wall=NOW + timedelta(days=400))
    cur = take_sample(clk)
    v = check(cur, ref)
    assert not v.trusted and "after reboot" in (v.reason or "") and "trust_rtc" in (v.reason or "")
    assert v.reference == ref
    assert check(cur, ref, trust_rtc=True).trusted
    # Not far ahead, or synchronised, or state unknown: trusted.
    clk.reboot("b3", wall=NOW + timedelta(hours=5))
    assert check(take_sample(clk), ref).trusted
    clk.reboot("b4", wall=NOW + timedelta(days=400))
    clk.synced_value = True
    assert check(take_sample(clk), ref).trusted
    clk.synced_value = None
    assert check(take_sample(clk), ref).trusted


def test_first_run_is_treated_like_a_fresh_boot() -> None:
    v = check(ClockSample(NOW + timedelta(days=30), 5.0, "b1", False), None)
    assert not v.trusted and "after reboot" in (v.reason or "")


def test_boottime_going_back_in_the_same_boot_is_inconsistent() -> None:
    prev = ClockSample(NOW, 500.0, "b1", True)
    v = check(ClockSample(NOW, 100.0, "b1", True), prev)
    assert not v.trusted and "CLOCK_BOOTTIME went back 400 s" in (v.reason or "")


def test_several_reasons_are_all_given() -> None:
    prev = ClockSample(NOW, 100.0, "b1", False)
    v = check(ClockSample(datetime(1970, 1, 1, tzinfo=UTC), 160.0, "b1", False), prev)
    assert v.reason is not None and v.reason.count("; ") == 2


def _rec(rid: str, start: datetime, src: TimeSource) -> Recording:
    tags = Tags("gate", Purpose.SECURITY, Site.PREMISES, False, False, start, start, src, "gw")
    return Recording(rid, rid, tags, 1, "")


def test_newest_trusted_start_ignores_untrusted_stamps() -> None:
    recs = [
        _rec("a", NOW, TimeSource.RECORDER),
        _rec("b", NOW + timedelta(days=3650), TimeSource.UNTRUSTED),
        _rec("c", NOW - timedelta(days=1), TimeSource.MTIME),
    ]
    assert newest_trusted_start(recs) == NOW
    assert newest_trusted_start([]) is None


def test_system_clock_reads_real_clocks() -> None:
    clk = SystemClock()
    a, b = clk.boottime(), clk.boottime()
    assert 0 < a <= b
    assert clk.now().tzinfo is UTC
    assert clk.boot_id() == (read_boot_id() or clk.boot_id())
    assert kernel_clock_synced() in (True, False, None)
    assert read_boot_id("/nonexistent/boot_id") is None
