"""Retention under faults: SIGKILL mid-sweep, lost catalogs, bad clocks, a full disk.

The kill test runs a real janitor in a subprocess over 2,000 expired
recordings (tiny real files, rows inserted directly), kills it with SIGKILL at
a random moment, then checks what a restart must guarantee.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.app.reconcile import rebuild, reconcile
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
from edge_agent.intake.intake import Intake, IntakeSettings
from edge_agent.intake.runtime import Origin
from edge_agent.retention.clockguard import ClockGuard, ClockGuardSettings
from edge_agent.retention.deletion import finish_interrupted
from edge_agent.retention.holds import place_hold
from edge_agent.retention.janitor import Janitor
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import STORAGE_MARKER, Catalog
from tests.support.mediagen import make_video

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).replace(microsecond=0)
RELEASE = datetime(2026, 1, 1, tzinfo=UTC)
RUNS = 50
N = 2000
PATHS: list[str] = []


def tiny_rows(root: Path, n: int, *, start: datetime, prefix: str = "r") -> list[Recording]:
    """``n`` security recordings with real 64-byte files, 200 per folder, all expired."""
    recs = []
    for i in range(n):
        s = start + timedelta(seconds=i)
        rel = f"{s:%Y/%m/%d}/loc-{i // 200:02d}/{prefix}{i:05d}.mkv"
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 64)
        tags = Tags(
            f"loc-{i // 200:02d}",
            Purpose.SECURITY,
            Site.PREMISES,
            False,
            False,
            s,
            s + timedelta(seconds=1),
            TimeSource.RECORDER,
            "gw-test",
        )
        recs.append(
            Recording(
                id=f"{prefix}{i:05d}",
                path=rel,
                tags=tags,
                size=64,
                sha256="0" * 64,
                deadline=s + timedelta(days=3),
            )
        )
    return recs


def open_cat(base: Path) -> Catalog:
    return Catalog.open(base / "catalog.db", device_id="gw-test", storage_root=base / "rec")


def check_invariants(base: Path) -> dict[str, int]:
    """After a restart: no file without a row, no live row without a file, audits once."""
    root = base / "rec"
    with open_cat(base) as cat:
        finish_interrupted(cat, root, datetime.now(UTC), fsync=False)
        files = {
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and p.name != STORAGE_MARKER
        }
        rows = {r[0]: r[1] for r in cat.query("SELECT path, state FROM recordings")}
        live = {p for p, s in rows.items() if s in ("active", "restricted")}
        assert not [p for p, s in rows.items() if s == "deleting"]
        assert files - live == set(), "files without live rows"
        assert live - files == set(), "live rows without files"
        deleted = {r[0] for r in cat.query("SELECT id FROM recordings WHERE state = 'deleted'")}
        audited = cat.query(
            "SELECT subject, COUNT(*) FROM audit WHERE action = 'recording.deleted' "
            "GROUP BY subject"
        )
        assert {s for s, _ in audited} == deleted
        assert all(n == 1 for _, n in audited), "a deletion audited twice"
        events = cat.query(
            "SELECT COUNT(*), COUNT(DISTINCT json_extract(payload, '$.recording_id')) "
            "FROM outbox WHERE type = 'recording.deleted'"
        )[0]
        assert events[0] == events[1] == len(deleted)
        verdict = AuditLog(cat).verify()
        assert verdict.ok, verdict.reason
        return {"deleted": len(deleted), "live": len(live)}


DRIVER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from edge_agent.store.catalog import Catalog
from edge_agent.host.sysclock import SystemClock
from edge_agent.retention.clockguard import ClockGuard, ClockGuardSettings
from edge_agent.retention.janitor import Janitor
from edge_agent.core.model import NOTICE_PERIODS
base = Path(sys.argv[1])
cat = Catalog.open(base / "catalog.db", device_id="gw-test", storage_root=base / "rec")
release = datetime(2026, 1, 1, tzinfo=UTC)
guard = ClockGuard(cat, SystemClock(), ClockGuardSettings(release_date=release))
j = Janitor(cat, base / "rec", periods=NOTICE_PERIODS, guard=guard,
            free_space=lambda: (1 << 40, 1 << 41), batch=int(sys.argv[2]))
print("ready", flush=True)
res = j.sweep_once()
print("done", len(res.deleted), flush=True)
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("template")
    cat = open_cat(base)
    recs = tiny_rows(base / "rec", N, start=NOW - timedelta(days=5))
    PATHS[:] = [r.path for r in recs]
    cat.recordings.add_many(recs)
    # A real catalog already has audit entries (adoptions), hence a head anchor file.
    AuditLog(cat).append("test.setup", actor="test", ts=NOW)
    cat.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cat.close()
    return base


def _one_kill_run(
    template: Path, work: Path, seed: int, window: float | None = None
) -> tuple[int, str]:
    """Kill the sweep ``uniform(0, window)`` s after it is ready; ``None`` = let it finish
    and return its duration in ms as the first element (calibration)."""
    rnd = random.Random(seed)
    # Copy the catalog files and recreate the media (faster than copytree).
    (work / "rec").mkdir(parents=True)
    for p in template.iterdir():
        if p.is_file():
            shutil.copyfile(p, work / p.name)
    shutil.copyfile(template / "rec" / STORAGE_MARKER, work / "rec" / STORAGE_MARKER)
    made: set[Path] = set()
    for rel in PATHS:
        dest = work / "rec" / rel
        if dest.parent not in made:
            dest.parent.mkdir(parents=True, exist_ok=True)
            made.add(dest.parent)
        with open(dest, "wb") as fh:
            fh.write(b"x" * 64)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(work), str(rnd.choice([20, 50, 100]))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(b"ready"), (line, proc.stderr.read() if proc.stderr else b"")
    if window is None:
        t0 = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        shutil.rmtree(work)
        return int((time.monotonic() - t0) * 1000), "calibrated"
    time.sleep(rnd.uniform(0.0, window))
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    facts = check_invariants(work)
    outcome = "completed" if b"done" in out else "killed"
    shutil.rmtree(work)
    return facts["deleted"], outcome


@pytest.fixture
def fast_tmp(tmp_path: Path) -> Iterator[Path]:
    """tmpfs when there is one: creating 100,000 small files on an overlay disk takes minutes."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="edge-agent-faults-", dir=shm))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_sigkill_during_sweep_50_runs(template: Path, fast_tmp: Path) -> None:
    started = time.monotonic()
    # How long an uninterrupted sweep takes (with the biggest batch) sets the kill window,
    # so the kills keep landing mid-sweep however fast deletion becomes.
    full_ms, _ = _one_kill_run(template, fast_tmp / "calibrate", 1, None)
    window = max(0.05, full_ms / 1000 * 0.9)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                lambda i: _one_kill_run(template, fast_tmp / f"run{i}", 1000 + i, window),
                range(RUNS),
            )
        )
    assert len(results) == RUNS
    killed = [d for d, how in results if how == "killed"]
    # The kills landed at different points of the sweep, not all before or after it.
    assert len(killed) >= RUNS // 2
    assert len({d for d in killed}) >= 5, sorted(killed)
    assert time.monotonic() - started < 120


# -- lost catalog ------------------------------------------------------------------


def _settings(base: Path) -> IntakeSettings:
    return IntakeSettings(
        device_id="gw-test",
        storage_root=base / "rec",
        quarantine_dir=base / "quarantine",
        periods=NOTICE_PERIODS,
        fsync=False,
    )


def _adopt_some(base: Path, n: int) -> list[Recording]:
    cat = open_cat(base)
    intake = Intake(cat, _settings(base))
    out = []
    for i in range(n):
        src = base / "drop" / f"clip{i}.mkv"
        src.parent.mkdir(parents=True, exist_ok=True)
        make_video(src, container="mkv", seconds=0.4, creation_time=NOW - timedelta(days=i))
        origin = Origin(
            location="gate" if i % 2 else "lab",
            site=Site.PREMISES,
            audio_room=False,
            signage=True,
            purpose=Purpose.RND if i % 3 else Purpose.SECURITY,
        )
        res = intake.adopt(src, origin, NOW)
        assert res.recording is not None, res.reason
        out.append(res.recording)
    cat.close()
    return out


def _media_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != STORAGE_MARKER
    }


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_lost_catalog_deletes_nothing_and_rebuild_restores(tmp_path: Path, how: str) -> None:
    recs = _adopt_some(tmp_path, 6)
    root = tmp_path / "rec"
    before = _media_files(root)
    assert len(before) == 6
    if how == "deleted":
        for p in tmp_path.glob("catalog.db*"):
            p.unlink()
    else:
        with open_cat(tmp_path) as cat:
            cat.execute("DELETE FROM recordings")
    with open_cat(tmp_path) as cat:
        clock = FakeClock(NOW + timedelta(days=400), synced=True)
        guard = ClockGuard(cat, clock, ClockGuardSettings(release_date=RELEASE))
        res = Janitor(cat, root, periods=NOTICE_PERIODS, guard=guard, fsync=False).sweep_once()
        assert res.deleted == []
        rep = reconcile(
            cat, root, _settings(tmp_path), dry_run=False, force=False, now=NOW, grace=0
        )
        assert rep.refused and "more than half" in rep.refused
    assert _media_files(root) == before

    report = rebuild(tmp_path / "catalog.db", root, _settings(tmp_path), now=NOW)
    assert report.recordings == 6 and report.moved_aside
    with open_cat(tmp_path) as cat:
        for r in recs:
            got = cat.recordings.get(r.id)
            assert got is not None and got.tags == r.tags and got.path == r.path
            assert got.deadline == r.deadline
        assert AuditLog(cat).verify().ok
        actions = [e["action"] for e in AuditLog(cat).export()]
        assert "catalog.rebuilt" in actions
    assert _media_files(root) == before


# -- bad clocks --------------------------------------------------------------------


def _clock_setup(tmp_path: Path) -> tuple[Catalog, FakeClock, Janitor]:
    cat = open_cat(tmp_path)
    cat.recordings.add_many(tiny_rows(tmp_path / "rec", 30, start=NOW - timedelta(days=5)))
    clock = FakeClock(NOW, boot_id="boot-a", synced=False)
    guard = ClockGuard(cat, clock, ClockGuardSettings(release_date=RELEASE))
    janitor = Janitor(cat, tmp_path / "rec", periods=NOTICE_PERIODS, guard=guard, fsync=False)
    assert guard.check().trusted  # the reference sample is persisted now
    return cat, clock, janitor


@pytest.mark.parametrize("scenario", ["1970", "back_1h", "forward_10y", "reboot_forward_10y"])
def test_untrusted_clock_deletes_nothing(tmp_path: Path, scenario: str) -> None:
    cat, clock, janitor = _clock_setup(tmp_path)
    if scenario == "1970":
        clock.reboot("boot-b", wall=datetime(1970, 1, 1, 0, 5, tzinfo=UTC))
    elif scenario == "back_1h":
        clock.advance(120)
        clock.jump_wall(-3600)
    elif scenario == "forward_10y":
        clock.jump_wall(10 * 365 * 86400)
    else:
        clock.reboot("boot-b", wall=NOW + timedelta(days=3650))
    res = janitor.sweep_once(clock.now())
    assert res.deleted == [] and not res.clock_trusted
    status = janitor.status(clock.now()).as_dict()
    assert status["clock"] == "untrusted" and status["clock_reason"]
    # Measured against the wrong clock, so only as good as that clock.
    assert status["overdue_count"] == (0 if scenario == "1970" else 30)
    assert cat.recordings.counts()[RecState.ACTIVE] == 30
    # A restarted agent in the same boot still distrusts it (reference in catalog meta).
    guard2 = ClockGuard(cat, clock, ClockGuardSettings(release_date=RELEASE))
    assert not guard2.check().trusted
    # Put right (NTP sync for the reboot cases): deletion resumes by itself.
    if scenario == "back_1h":
        clock.jump_wall(3600)
    elif scenario == "forward_10y":
        clock.jump_wall(-10 * 365 * 86400)
    else:
        clock.wall = NOW + timedelta(seconds=60)
        clock.synced_value = True
    res = janitor.sweep_once(clock.now())
    assert res.clock_trusted, res.clock_reason
    assert len(res.deleted) == 30
    cat.close()


# -- disk pressure -----------------------------------------------------------------


def test_disk_pressure_spares_held_footage_and_raises_alarms(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    cat = open_cat(tmp_path)
    # Not expired: only disk pressure can delete these (deadlines 1..2 days ahead).
    recs = tiny_rows(root, 40, start=NOW - timedelta(days=2))
    cat.recordings.add_many(recs)
    held_ids = [r.id for r in recs[:10]]  # the ones nearest their deadline
    place_hold(
        cat, kind=HoldKind.INCIDENT, reason="case 7", by="dpo", now=NOW, recording_ids=held_ids
    )
    capacity = 64 * 40 + 10_000

    def used() -> int:
        return sum(p.stat().st_size for p in root.rglob("*.mkv"))

    alarms: list[str] = []
    floor = [10_000 + 64 * 15]  # needs 15 recordings' worth freed
    clock = FakeClock(NOW, synced=True)
    guard = ClockGuard(cat, clock, ClockGuardSettings(release_date=RELEASE))
    janitor = Janitor(
        cat,
        root,
        periods=NOTICE_PERIODS,
        guard=guard,
        free_space=lambda: (capacity - used(), capacity),
        floor_bytes=lambda total: floor[0],
        on_alarm=lambda name, data: alarms.append(name),
        fsync=False,
    )
    res = janitor.sweep_once(NOW)
    assert len(res.deleted_pressure) == 15 and not res.storage_full_held
    assert set(res.deleted_pressure).isdisjoint(held_ids)
    assert res.deleted_pressure == [r.id for r in recs[10:25]]  # nearest deadline first
    assert alarms == ["alarm.disk_pressure"]
    # Now ask for more than the unheld footage can give: only held footage is left.
    floor[0] = capacity
    res = janitor.sweep_once(NOW)
    assert res.storage_full_held and janitor.storage_full_held
    assert all(cat.recordings.get(i).state is RecState.ACTIVE for i in held_ids)  # type: ignore[union-attr]
    assert all((root / r.path).exists() for r in recs[:10])
    assert "alarm.storage_full_held" in alarms
    types = [r[0] for r in cat.query("SELECT type FROM outbox WHERE type LIKE 'alarm.%'")]
    assert "alarm.disk_pressure" in types and "alarm.storage_full_held" in types
    cat.close()
