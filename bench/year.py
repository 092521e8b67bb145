"""A year on one device: does the catalog stop growing? (issue #23 item 5)

    python bench/year.py [--scale 0.05] [--days 365] [--period 31d] [--dir /fast/disk]

Simulates an eight-camera device (60 s segments: 11,500 recordings a day at
``--scale 1``) on an accelerated clock, one simulated day per step:

- the day's recordings are catalogued as the recorder does (row, a
  ``recording.added`` audit entry and an outbox event, one transaction per
  batch) with a real 1-byte file each;
- the real janitor deletes what is past its deadline (security footage,
  72 h): files unlinked, tombstone rows, ``recording.deleted`` audit entries;
- the outbox is emptied as a connected publisher would;
- the sealer (store/audit_archive.py) seals entries and tombstones older than
  ``--period`` into archives and reclaims free pages.

At the end of every 30 days it prints the catalog size (db + wal), archive
size, the janitor pass of that day, a telemetry read (what the gatherer asks
the catalog: retention snapshot, per-purpose summary, counts by state), and
``audit verify`` (full walk and ``--quick``). Goal: the catalog stops growing
after the period; janitor, telemetry and quick verify flat within 20%.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.comms.telemetry import catalog_retention
from edge_agent.core.clock import FakeClock
from edge_agent.core.model import (
    NOTICE_PERIODS,
    Period,
    Purpose,
    Recording,
    Site,
    Tags,
    TimeSource,
)
from edge_agent.retention.clockguard import ClockGuard, ClockGuardSettings
from edge_agent.retention.janitor import Janitor
from edge_agent.store.audit import AuditLog
from edge_agent.store.audit_archive import AuditArchiver, archive_dir
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox

START = datetime(2026, 1, 1, tzinfo=UTC)
CAMERAS = 8
PER_DAY_FULL = 11_500


def du(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.iterdir() if f.is_file())
        elif p.exists():
            total += p.stat().st_size
    return total


def record_day(
    cat: Catalog, audit: AuditLog, outbox: Outbox, root: Path, day: int, per_day: int
) -> None:
    base = START + timedelta(days=day)
    folder = root / f"{base:%Y/%m/%d}"
    step = 86400.0 / (per_day / CAMERAS)
    recs: list[Recording] = []
    for i in range(per_day):
        cam = i % CAMERAS
        start = base + timedelta(seconds=(i // CAMERAS) * step)
        rel = f"{base:%Y/%m/%d}/cam-{cam}/{start:%H%M%S}_{i:06d}.mp4"
        tags = Tags(
            f"cam-{cam}",
            Purpose.SECURITY,
            Site.PREMISES,
            False,
            False,
            start,
            start + timedelta(seconds=60),
            TimeSource.RECORDER,
            "bench",
        )
        recs.append(
            Recording(
                id=f"{day:04d}{i:028x}",
                path=rel,
                tags=tags,
                size=1,
                sha256=f"{day:08x}{i:056x}",
                deadline=start + timedelta(hours=72),
            )
        )
    for cam in range(CAMERAS):
        (folder / f"cam-{cam}").mkdir(parents=True, exist_ok=True)
    for r in recs:
        with open(root / r.path, "wb") as fh:
            fh.write(b"x")
    now = base + timedelta(days=1)
    for k in range(0, len(recs), 500):
        batch = recs[k : k + 500]
        with cat.transaction():
            cat.recordings.add_many(batch)
            items = []
            for r in batch:
                event = {
                    "recording_id": r.id,
                    "path": r.path,
                    "location": r.tags.location,
                    "purpose": "security",
                    "site": "premises",
                    "audio": False,
                    "start": r.tags.start.isoformat(),
                    "end": r.tags.end.isoformat(),
                    "time_source": "recorder",
                    "deadline": r.deadline.isoformat() if r.deadline else None,
                    "size": r.size,
                    "sha256": r.sha256,
                }
                items.append(("recording.added", r.id, event))
                outbox.enqueue("recording.added", event, ts=now)
            audit.append_many(items, actor="recorder", ts=now)


def telemetry_read(cat: Catalog, now: datetime) -> float:
    t0 = time.perf_counter()
    catalog_retention(cat, now)
    cat.recordings.summaries()
    cat.recordings.counts()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.05, help="fraction of 11,500 a day")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--period", default="31d", help="accountability period")
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: tmp)")
    ap.add_argument("--no-seal", action="store_true", help="today's behaviour, for comparison")
    ap.add_argument(
        "--no-vacuum", action="store_true", help="leave freed pages for reuse (no conversion)"
    )
    args = ap.parse_args()
    per_day = max(CAMERAS, int(PER_DAY_FULL * args.scale))
    period = Period.parse(args.period)
    base = Path(tempfile.mkdtemp(prefix="year-", dir=args.dir))
    root = base / "rec"
    root.mkdir()
    cat_path = base / "catalog.db"
    cat = Catalog.open(cat_path, device_id="bench", storage_root=root)
    audit, outbox = AuditLog(cat), Outbox(cat)
    clock = FakeClock(START, synced=True)
    guard = ClockGuard(cat, clock, ClockGuardSettings(release_date=START - timedelta(days=30)))
    janitor = Janitor(
        cat, root, periods=NOTICE_PERIODS, guard=guard,
        free_space=lambda: (1 << 40, 1 << 41), batch=500,
    )  # fmt: skip
    archiver = AuditArchiver(cat)
    print(
        f"# {per_day:,} recordings/day (scale {args.scale}), {args.days} days, "
        f"accountability period {period}, sealing {'off' if args.no_seal else 'on'}"
    )
    print(
        "| month | day | catalog rows | audit rows | catalog MB | archive MB "
        "| janitor ms, wall (CPU) median day | seal ms (median day) | telemetry ms | verify s "
        "| verify --quick ms, wall (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    jan: list[float] = []
    jan_cpu: list[float] = []  # CPU time: what a busy neighbour does not inflate
    seals: list[float] = []
    t_start = time.perf_counter()
    for day in range(args.days):
        record_day(cat, audit, outbox, root, day, per_day)
        now = START + timedelta(days=day + 1)
        clock.advance(86400)
        t0, c0 = time.perf_counter(), time.process_time()
        res = janitor.sweep_once(now)
        jan.append((time.perf_counter() - t0) * 1000)
        jan_cpu.append((time.process_time() - c0) * 1000)
        assert not res.failed, res.failed[:3]
        cat.execute("DELETE FROM outbox")  # a connected publisher's acks
        t0 = time.perf_counter()
        if not args.no_seal:
            # convert: as `audit seal --vacuum` once, then incremental (docs/storage.md).
            cutoff = now - timedelta(seconds=period.upper_bound_seconds())
            archiver.seal(now, cutoff, convert=not args.no_vacuum)
        seals.append((time.perf_counter() - t0) * 1000)
        if (day + 1) % 30 == 0 or day + 1 == args.days:
            cat.query("PRAGMA wal_checkpoint(TRUNCATE)")
            tel = min(telemetry_read(cat, now) for _ in range(5)) * 1000
            t0 = time.perf_counter()
            v = audit.verify()
            ver = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), time.process_time()
            q = audit.verify(newest_archive_only=True)
            quick = (time.perf_counter() - t0) * 1000
            quick_cpu = (time.process_time() - c0) * 1000
            assert v.ok and q.ok, (v.reason, q.reason)
            live = cat.query("SELECT COUNT(*) FROM recordings")[0][0]
            arows = cat.query("SELECT COUNT(*) FROM audit")[0][0]
            size = du([cat_path, cat_path.with_name(cat_path.name + "-wal")])
            arch = du([archive_dir(cat_path)])
            print(
                f"| {(day + 1) // 30 if (day + 1) % 30 == 0 else '-'} | {day + 1} | {live:,} "
                f"| {arows:,} | {size / 1e6:.1f} | {arch / 1e6:.1f} "
                f"| {statistics.median(jan):.0f} ({statistics.median(jan_cpu):.0f}) "
                f"| {statistics.median(seals):.0f} "
                f"| {tel:.2f} | {ver:.2f} | {quick:.0f} ({quick_cpu:.0f}) |",
                flush=True,
            )
            jan, jan_cpu, seals = [], [], []
    print(f"# wall time {time.perf_counter() - t_start:.0f} s; built in {base}")
    cat.close()
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
