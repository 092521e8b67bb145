"""The clock guard's persistence across agent restarts, and late deadlines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.core.clock import FakeClock
from edge_agent.core.model import Purpose, Recording, Site, Tags, TimeSource
from edge_agent.retention.clockguard import STATE_KEY, ClockGuard, ClockGuardSettings
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SETTINGS = ClockGuardSettings(release_date=datetime(2026, 1, 1, tzinfo=UTC))


def _cat(tmp_path: Path) -> Catalog:
    return Catalog.open(tmp_path / "c.db", device_id="gw-test", storage_root=tmp_path / "rec")


def _rec(rid: str, start: datetime, ts: TimeSource) -> Recording:
    tags = Tags("gate", Purpose.SECURITY, Site.PREMISES, False, False, start,
                start + timedelta(minutes=1), ts, "gw-test")  # fmt: skip
    return Recording(rid, f"x/{rid}.mkv", tags, 1, "0" * 64, deadline=None)


def test_jump_is_caught_across_agent_restarts_within_a_boot(tmp_path: Path) -> None:
    cat = _cat(tmp_path)
    clock = FakeClock(NOW, synced=False)
    assert ClockGuard(cat, clock, SETTINGS).check().trusted
    clock.advance(600)
    clock.jump_wall(3600)
    # A new agent process (new guard, same catalog, same boot) sees the jump.
    v = ClockGuard(cat, clock, SETTINGS).check()
    assert not v.trusted and "jumped" in (v.reason or "")
    assert "untrusted" not in (cat.get_meta(STATE_KEY) or "") or '"trusted": false' in (
        cat.get_meta(STATE_KEY) or ""
    )
    # Still untrusted on the next check: the reference did not move to the bad time.
    clock.advance(60)
    assert not ClockGuard(cat, clock, SETTINGS).check().trusted
    clock.jump_wall(-3600)
    assert ClockGuard(cat, clock, SETTINGS).check().trusted
    actions = [e["action"] for e in AuditLog(cat).export()]
    assert actions == ["clock.untrusted", "clock.trusted"]


def test_late_deadlines_assigned_when_trust_returns(tmp_path: Path) -> None:
    cat = _cat(tmp_path)
    cat.recordings.add_many([
        _rec("plausible", NOW - timedelta(days=1), TimeSource.UNTRUSTED),
        _rec("in1970", datetime(1970, 1, 1, tzinfo=UTC), TimeSource.UNTRUSTED),
    ])  # fmt: skip
    clock = FakeClock(datetime(1970, 1, 1, 0, 10, tzinfo=UTC), synced=False)
    guard = ClockGuard(cat, clock, SETTINGS)
    assert not guard.check().trusted
    assert cat.recordings.get("plausible").deadline is None  # type: ignore[union-attr]
    clock.wall, clock.synced_value = NOW, True
    assert guard.check().trusted
    assert cat.recordings.get("plausible").deadline == NOW + timedelta(days=2)  # type: ignore[union-attr]
    # An implausible start counts from the moment trust returned.
    assert cat.recordings.get("in1970").deadline == NOW + timedelta(days=3)  # type: ignore[union-attr]
    entries = [e for e in AuditLog(cat).export() if e["action"] == "recording.deadline_set"]
    assert {e["subject"] for e in entries} == {"plausible", "in1970"}


def test_preview_check_persists_nothing(tmp_path: Path) -> None:
    cat = _cat(tmp_path)
    v = ClockGuard(cat, FakeClock(NOW), SETTINGS).check(persist=False)
    assert v.trusted and cat.get_meta(STATE_KEY) is None
