"""The janitor over real, tagged media: who is deleted, who is kept, and when it wakes."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.core.clock import FakeClock
from edge_agent.core.model import (
    NOTICE_PERIODS,
    HoldKind,
    Purpose,
    Recording,
    RecState,
    Site,
    Tags,
    TimeSource,
)
from edge_agent.host.sysclock import SystemClock
from edge_agent.intake.intake import IntakeSettings
from edge_agent.retention.clockguard import ClockGuard, ClockGuardSettings
from edge_agent.retention.deletion import finish_interrupted
from edge_agent.retention.holds import place_hold
from edge_agent.retention.janitor import Janitor
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from tests.support.recordings import MakeRecording, intake_settings
from tests.support.retention import NOW, RELEASE


def janitor(cat: Catalog, settings: IntakeSettings, clock: FakeClock | None = None) -> Janitor:
    guard = ClockGuard(
        cat, clock or FakeClock(NOW, synced=True), ClockGuardSettings(release_date=RELEASE)
    )
    return Janitor(
        cat,
        settings.storage_root,
        periods=NOTICE_PERIODS,
        guard=guard,
        free_space=lambda: (1 << 40, 1 << 41),
        quarantine_dir=settings.quarantine_dir,
        fsync=False,
    )


def test_retention_with_real_media(
    tmp_path: Path, catalog: Catalog, make_recording: MakeRecording
) -> None:
    settings = intake_settings(tmp_path)
    old = NOW - timedelta(days=4)
    security = make_recording("sec", start=old, purpose=Purpose.SECURITY, location="yard")
    rnd = make_recording("rnd", start=old, purpose=Purpose.RND)
    anon = make_recording("anon", start=old, purpose=Purpose.SECURITY, anonymized=True)
    held = make_recording("held", start=old, purpose=Purpose.SECURITY, location="lab")
    fresh = make_recording("fresh", start=NOW - timedelta(hours=1), purpose=Purpose.SECURITY)
    hold = place_hold(
        catalog, kind=HoldKind.INCIDENT, reason="theft", by="dpo", now=NOW, recording_ids=[held.id]
    )
    root = settings.storage_root
    res = janitor(catalog, settings).sweep_once(NOW)

    assert res.deleted_retention == [security.id]
    assert not (root / security.path).exists()
    # The emptied date folder of the deleted recording went with it.
    assert not (root / security.path).parent.exists()
    assert (root / security.path).parent.parent.exists()  # other locations that day remain
    for kept in (rnd, anon, held, fresh):
        assert (root / kept.path).exists()
        assert catalog.recordings.get(kept.id).state is RecState.ACTIVE  # type: ignore[union-attr]
    assert res.kept_by_hold == [(held.id, (hold.id,))]
    row = catalog.recordings.get(security.id)
    assert row is not None and row.state is RecState.DELETED
    entries = [e for e in AuditLog(catalog).export() if e["action"] == "recording.deleted"]
    assert [e["subject"] for e in entries] == [security.id]
    assert entries[0]["data"]["reason"] == "retention"
    events = catalog.query("SELECT payload FROM outbox WHERE type = 'recording.deleted'")
    assert [json.loads(e[0])["recording_id"] for e in events] == [security.id]
    assert AuditLog(catalog).verify().ok
    # The next wake is the fresh recording's deadline, not an hourly timer.
    assert res.next_deadline == fresh.deadline
    catalog.close()


def test_held_recording_goes_when_hold_expires(
    tmp_path: Path, catalog: Catalog, make_recording: MakeRecording
) -> None:
    settings = intake_settings(tmp_path)
    rec = make_recording("sec", start=NOW - timedelta(days=4), purpose=Purpose.SECURITY)
    place_hold(
        catalog,
        kind=HoldKind.INCIDENT,
        reason="look",
        by="dpo",
        now=NOW,
        location="gate",
        start=NOW - timedelta(days=5),
        end=NOW,
        until=NOW + timedelta(hours=2),
    )
    clock = FakeClock(NOW, synced=True)
    j = janitor(catalog, settings, clock)
    res = j.sweep_once(NOW)
    assert res.deleted == [] and res.next_wake == NOW + timedelta(hours=2)
    assert j.sleep_seconds(res, NOW) == 60.0  # capped
    clock.advance(2 * 3600 + 1)
    res = j.sweep_once(clock.now())
    assert res.deleted == [rec.id]
    catalog.close()


def test_interrupted_deletion_is_finished_once(
    tmp_path: Path, catalog: Catalog, make_recording: MakeRecording
) -> None:
    settings = intake_settings(tmp_path)
    rec = make_recording("sec", start=NOW - timedelta(days=4), purpose=Purpose.SECURITY)
    catalog.execute(
        "UPDATE recordings SET state = 'deleting', delete_reason = 'retention' WHERE id = ?",
        (rec.id,),
    )
    out = finish_interrupted(catalog, settings.storage_root, NOW, fsync=False)
    assert out.deleted == [rec.id]
    assert not (settings.storage_root / rec.path).exists()
    assert finish_interrupted(catalog, settings.storage_root, NOW).deleted == []
    n = catalog.query("SELECT COUNT(*) FROM audit WHERE action = 'recording.deleted'")[0][0]
    assert n == 1
    catalog.close()


def test_quarantine_is_purged_after_security_period(tmp_path: Path, catalog: Catalog) -> None:
    settings = intake_settings(tmp_path)
    q = settings.quarantine_dir
    q.mkdir()
    old, new = q / "old.mp4", q / "new.mp4"
    for p, age in ((old, 4), (new, 1)):
        p.write_bytes(b"junk")
        ts = (NOW - timedelta(days=age)).timestamp()
        os.utime(p, (ts, ts))
    (q / "old.mp4.reason.json").write_text("{}")
    res = janitor(catalog, settings).sweep_once(NOW)
    assert res.quarantine_purged == ["old.mp4"]
    assert not old.exists() and not (q / "old.mp4.reason.json").exists() and new.exists()
    assert any(e["action"] == "quarantine.purged" for e in AuditLog(catalog).export())
    catalog.close()


def _row(i: int, deadline: datetime) -> Recording:
    start = deadline - timedelta(days=3)
    tags = Tags(
        "gate",
        Purpose.SECURITY,
        Site.PREMISES,
        False,
        False,
        start,
        start + timedelta(seconds=1),
        TimeSource.RECORDER,
        "gw-test",
    )
    return Recording(
        f"r{i}", f"{start:%Y/%m/%d}/gate/r{i}.mkv", tags, 4, "0" * 64, deadline=deadline
    )


async def test_run_wakes_at_the_deadline_and_on_poke(tmp_path: Path, catalog: Catalog) -> None:
    settings = intake_settings(tmp_path)
    now = datetime.now(UTC)
    recs = [_row(1, now + timedelta(seconds=1.0)), _row(2, now + timedelta(days=1))]
    for r in recs:
        p = settings.storage_root / r.path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"data")
    catalog.recordings.add_many(recs)
    guard = ClockGuard(catalog, SystemClock(), ClockGuardSettings(release_date=RELEASE))
    j = Janitor(
        catalog,
        settings.storage_root,
        periods=NOTICE_PERIODS,
        guard=guard,
        free_space=lambda: (1 << 40, 1 << 41),
        fsync=False,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(j.run(stop))
    for _ in range(60):
        await asyncio.sleep(0.1)
        if catalog.recordings.get("r1").state is RecState.DELETED:  # type: ignore[union-attr]
            break
    deleted_at = datetime.now(UTC)
    assert catalog.recordings.get("r1").state is RecState.DELETED  # type: ignore[union-attr]
    assert (deleted_at - recs[0].deadline).total_seconds() < 2.0  # type: ignore[operator]
    # A recording that became due meanwhile is handled at once on poke.
    catalog.recordings.set_deadline("r2", datetime.now(UTC) - timedelta(seconds=1))
    j.poke()
    for _ in range(30):
        await asyncio.sleep(0.1)
        if catalog.recordings.get("r2").state is RecState.DELETED:  # type: ignore[union-attr]
            break
    assert catalog.recordings.get("r2").state is RecState.DELETED  # type: ignore[union-attr]
    status = j.status().as_dict()
    assert status["clock"] == "trusted" and status["overdue_count"] == 0
    stop.set()
    await asyncio.wait_for(task, 5)
    catalog.close()


# -- issue 12: the catalog shares the storage budget but never costs footage ----------


def test_storage_budget_charges_the_catalog_to_nobody_but_the_operator() -> None:
    from edge_agent.core.pressure import CATALOG_MIN_FREE, storage_budget

    mib = 1 << 20
    # Footage filled the disk: pressure as before, no alarm (a small catalog).
    b = storage_budget(free=2 * mib, floor=8 * mib, catalog_bytes=mib // 2)
    assert (b.footage_free, b.alarm) == (2 * mib + mib // 2, False)
    # A flood grew the catalog: it is counted as free, so no footage goes, and it is an alarm.
    b = storage_budget(free=2 * mib, floor=8 * mib, catalog_bytes=40 * mib)
    assert b.footage_free >= 8 * mib and b.alarm and b.why and "catalog" in b.why
    # Above the floor a big catalog is no alarm; on its own filesystem only its free space counts.
    assert not storage_budget(free=9 * mib, floor=8 * mib, catalog_bytes=40 * mib).alarm
    b = storage_budget(free=1, floor=8 * mib, catalog_bytes=0, catalog_fs_free=CATALOG_MIN_FREE - 1)
    assert b.alarm and b.footage_free == 1


def test_a_growing_catalog_never_makes_the_janitor_delete_footage_early(
    tmp_path: Path, catalog: Catalog, make_recording: MakeRecording
) -> None:
    """Issue 12, item 1: audit rows filled the disk and pressure deleted footage early."""
    settings = intake_settings(tmp_path)
    recs = [
        make_recording(f"r{i}", start=NOW - timedelta(hours=i + 1), purpose=Purpose.SECURITY)
        for i in range(3)
    ]
    size = sum(r.size for r in recs)
    total, floor = 64 << 20, 8 << 20
    catalog_bytes, foreign = [0], [0]
    alarms: list[tuple[str, dict[str, object]]] = []
    guard = ClockGuard(
        catalog, FakeClock(NOW, synced=True), ClockGuardSettings(release_date=RELEASE)
    )

    def free() -> tuple[int, int]:
        live = sum(r.size for r in catalog.recordings.list() if r.state is RecState.ACTIVE)
        # 1000 B above the floor with all three recordings and nothing else on the disk.
        used = (total - floor - size - 1000) + live + catalog_bytes[0] + foreign[0]
        return total - used, total

    jan = Janitor(
        catalog,
        settings.storage_root,
        periods=NOTICE_PERIODS,
        guard=guard,
        free_space=free,
        floor_bytes=lambda _t: floor,
        catalog_space=lambda: (catalog_bytes[0], None),
        on_alarm=lambda name, data: alarms.append((name, data)),
        fsync=False,
    )
    assert not jan.sweep_once(NOW).disk_pressure  # 1000 B above the floor
    catalog_bytes[0] = 5 << 20  # the audit log grew by 5 MiB
    res = jan.sweep_once(NOW)
    assert res.free_bytes is not None and res.free_bytes < floor
    assert res.deleted == [] and not res.storage_full_held and not res.disk_pressure
    assert all((settings.storage_root / r.path).exists() for r in recs)
    assert [n for n, _ in alarms] == ["alarm.storage_budget"]
    assert alarms[0][1]["catalog_bytes"] == 5 << 20
    catalog_bytes[0] = 0
    jan.sweep_once(NOW)
    assert alarms[-1] == ("alarm.cleared", {**alarms[-1][1], "alarm": "storage_budget"})
    # Anything else growing past the floor is still disk pressure, as documented.
    foreign[0] = 2000
    res = jan.sweep_once(NOW)
    assert res.deleted_pressure == [recs[-1].id]  # nearest its deadline: the oldest
