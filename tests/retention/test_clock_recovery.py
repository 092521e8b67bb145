"""The clock guard recovers from a step once evidence confirms it (docs/design/time.md).

adjtimex is unavailable here as under ProtectClock=yes (``synced=None``); the
time-sync flag file is a real file in the test folder, like timesyncd's.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.core.clock import ClockSample, FakeClock, SyncEvidence, confirming_evidence
from edge_agent.core.model import NOTICE_PERIODS, Purpose, RecState
from edge_agent.retention.clockguard import (
    ClockAcceptError,
    ClockGuard,
    ClockGuardSettings,
    alarm_due,
)
from edge_agent.retention.janitor import Janitor
from edge_agent.retention.timesync import TimeSyncSources, parse_chrony_tracking
from edge_agent.store.audit import AuditLog
from tests.support.retention import NOW, RELEASE, adopt, env


def _touch(flag: Path, at: datetime) -> None:
    flag.touch()
    os.utime(flag, (at.timestamp(), at.timestamp()))


def _setup(tmp_path: Path) -> tuple[Janitor, FakeClock, Path, str]:
    cat, settings = env(tmp_path)
    flag = tmp_path / "timesync" / "synchronized"
    flag.parent.mkdir()
    # Security footage due in one hour: overdue once the clock steps +2 h.
    rec = adopt(
        cat,
        settings,
        "due-after-step",
        start=NOW - timedelta(days=3) + timedelta(hours=1),
        purpose=Purpose.SECURITY,
    )
    clock = FakeClock(NOW, boottime=500.0, synced=None)  # adjtimex unavailable
    guard = ClockGuard(
        cat,
        clock,
        ClockGuardSettings(
            release_date=RELEASE,
            sources=TimeSyncSources(timesyncd_flag=flag, chronyc=None),
            alarm_after=timedelta(minutes=10),
        ),
    )
    j = Janitor(
        cat,
        settings.storage_root,
        periods=NOTICE_PERIODS,
        guard=guard,
        free_space=lambda: (1 << 40, 1 << 41),
        fsync=False,
    )
    return j, clock, flag, rec.id


def _actions(j: Janitor) -> list[str]:
    return [e["action"] for e in AuditLog(j.catalog).export()]


def test_step_without_evidence_stays_untrusted_then_the_flag_confirms_it(tmp_path: Path) -> None:
    j, clock, flag, rid = _setup(tmp_path)
    assert j.sweep_once().clock_trusted
    clock.advance(60)
    clock.jump_wall(7200)  # NTP steps the clock +2 h; timesyncd has not written yet
    res = j.sweep_once()
    assert not res.clock_trusted and "+7200 s" in (res.clock_reason or "")
    assert res.overdue_count == 1  # due by the new wall clock, not deleted
    clock.advance(60)
    assert not j.sweep_once().clock_trusted  # still no evidence: stays untrusted
    assert j.guard.paused_since() is not None
    # timesyncd touches its flag on the sync that follows the step.
    _touch(flag, clock.wall)
    clock.advance(1)
    res = j.sweep_once()
    assert res.clock_trusted
    assert rid in res.deleted_retention
    assert j.catalog.recordings.get(rid).state is RecState.DELETED  # type: ignore[union-attr]
    step = [e for e in AuditLog(j.catalog).export() if e["action"] == "clock.step_accepted"]
    assert len(step) == 1
    assert step[0]["data"]["source"] == "timesyncd"
    assert abs(step[0]["data"]["step_s"] - 7200) < 1
    assert j.guard.paused_since() is None
    # The new wall time is the reference: time passing after it stays trusted.
    clock.advance(60)
    assert j.sweep_once().clock_trusted


def test_a_sync_from_before_the_step_does_not_confirm_it(tmp_path: Path) -> None:
    j, clock, flag, _ = _setup(tmp_path)
    _touch(flag, clock.wall - timedelta(seconds=30))  # synced, then someone ran date -s
    assert j.sweep_once().clock_trusted
    clock.advance(60)
    clock.jump_wall(7200)
    assert not j.sweep_once().clock_trusted
    clock.jump_wall(-2 * 7200)  # and a step back: the old sync now looks to be in the future
    assert not j.sweep_once().clock_trusted
    assert "clock.step_accepted" not in _actions(j)


def test_clock_accept_rebases_the_guard_and_is_audited(tmp_path: Path) -> None:
    j, clock, _flag, rid = _setup(tmp_path)
    assert j.sweep_once().clock_trusted
    clock.advance(60)
    clock.jump_wall(7200)
    assert not j.sweep_once().clock_trusted
    ev = SyncEvidence("installer", None, "confirmed on site by alice")
    assert j.guard.accept(actor="user:alice", reason="checked against my phone", evidence=ev)
    res = j.sweep_once()
    assert res.clock_trusted and rid in res.deleted_retention
    step = [e for e in AuditLog(j.catalog).export() if e["action"] == "clock.step_accepted"]
    assert step[-1]["actor"] == "user:alice"
    assert step[-1]["data"]["reason"] == "checked against my phone"


def test_clock_accept_refuses_a_clock_before_the_release(tmp_path: Path) -> None:
    j, clock, _flag, _ = _setup(tmp_path)
    clock.wall = datetime(1970, 1, 2, tzinfo=UTC)
    with pytest.raises(ClockAcceptError, match="before this release"):
        j.guard.accept(actor="u", reason="r", evidence=SyncEvidence("installer", None, "x"))


def test_untrusted_for_long_raises_the_alarm_once_then_daily(tmp_path: Path) -> None:
    j, clock, _flag, _ = _setup(tmp_path)
    j.sweep_once()
    clock.advance(60)
    clock.jump_wall(7200)
    j.sweep_once()

    def alarms() -> int:
        return j.catalog.query("SELECT COUNT(*) FROM outbox WHERE type = 'alarm.clock_untrusted'")[
            0
        ][0]

    clock.advance(9 * 60)
    j.sweep_once()
    assert alarms() == 0
    clock.advance(2 * 60)  # 11 minutes untrusted (the setting is 10)
    j.sweep_once()
    assert alarms() == 1
    for _ in range(5):
        clock.advance(3600)
        j.sweep_once()
    assert alarms() == 1  # not repeated within the day
    clock.advance(86400)
    j.sweep_once()
    assert alarms() == 2


@given(
    since=st.floats(0, 1e6), last=st.one_of(st.none(), st.floats(0, 1e6)), after=st.floats(1, 1e5)
)
def test_alarm_never_before_its_time(since: float, last: float | None, after: float) -> None:
    if alarm_due(since, last, after=after, repeat=86400):
        assert since >= after and (last is None or last >= 86400)


REF = ClockSample(NOW, 1000.0, "b1", None)


@given(
    age=st.floats(-1e5, 1e5),  # how long ago, on the current wall clock, the sync was
    elapsed=st.floats(0, 1e5),  # boot time since the reference
    step=st.floats(-1e5, 1e5),
)
def test_evidence_counts_only_between_the_reference_and_now(
    age: float, elapsed: float, step: float
) -> None:
    cur = ClockSample(NOW + timedelta(seconds=elapsed + step), REF.boottime_s + elapsed, "b1", None)
    ev = SyncEvidence("timesyncd", cur.wall - timedelta(seconds=age), "x")
    found = confirming_evidence([ev], cur, REF)
    synced_boot = cur.boottime_s - age
    inside = REF.boottime_s - 2 <= synced_boot <= cur.boottime_s + 2
    assert (found is not None) == inside


def test_chrony_tracking_is_parsed() -> None:
    synced = "A9FEA9FE,169.254.169.254,3,1764849600.123,0.000001,0.0,0.0,-1.2,0.0,0.1,0.01,0.02,64.0,Normal\n"  # noqa: E501
    ev = parse_chrony_tracking(synced)
    assert ev is not None and ev.source == "chrony" and "stratum 3" in ev.detail
    lost = synced.replace("Normal", "Not synchronised")
    assert parse_chrony_tracking(lost) is None
    assert parse_chrony_tracking("garbage") is None
    assert parse_chrony_tracking("0,0,x,y,0,0,0,0,0,0,0,0,0,Normal") is None


def test_a_signed_commands_time_is_evidence_a_far_one_is_not(tmp_path: Path) -> None:
    j, clock, _flag, rid = _setup(tmp_path)
    assert j.sweep_once().clock_trusted
    clock.advance(60)
    clock.jump_wall(7200)
    assert not j.sweep_once().clock_trusted
    j.guard.offer_command_time(clock.wall - timedelta(minutes=30), "signed command far")
    assert not j.sweep_once().clock_trusted
    j.guard.offer_command_time(clock.wall - timedelta(seconds=5), "signed command c1")
    res = j.sweep_once()
    assert res.clock_trusted and rid in res.deleted_retention
    step = [e for e in AuditLog(j.catalog).export() if e["action"] == "clock.step_accepted"]
    assert step[-1]["data"]["source"] == "command"
    assert "c1" in step[-1]["data"]["evidence"]
