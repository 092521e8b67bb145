"""Retention benchmark: the janitor against ``find -delete``, and plan latency at scale.

    python bench/retention.py [--files 100000] [--plan-rows 1000000] [--dir /fast/disk]

1. Builds two identical trees of ``--files`` 1 KB files laid out like the
   storage root (``YYYY/MM/DD/<location>/``, 1,000 files per folder); one is
   catalogued as expired security footage. The janitor deletes the catalogued
   tree through the full protocol (mark ``deleting``, unlink, fsync each folder
   once per batch, mark ``deleted``, audit entry, outbox event) and
   ``find <tree> -type f -delete`` deletes the other. Prints files/s of both
   and the ratio (target: janitor >= 0.75x find, issue 23).
2. Builds a ``--plan-rows`` catalog (bench/catalog.py's generator) and times
   one retention decision as the janitor makes it: the first page of due rows
   from the index plus the pure ``plan`` over it (target: <= 5 ms), and
   ``next_deadline_after``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.catalog import build as build_catalog
from edge_agent.app.daemon import ANCHOR_INTERVAL
from edge_agent.core.clock import FakeClock
from edge_agent.core.model import (
    NOTICE_PERIODS,
    Purpose,
    Recording,
    Site,
    Tags,
    TimeSource,
)
from edge_agent.core.retention_plan import plan
from edge_agent.retention.clockguard import ClockGuard, ClockGuardSettings
from edge_agent.retention.janitor import Janitor
from edge_agent.store.catalog import Catalog

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PER_DIR = 1000
RATIO_TARGET = 0.75  # janitor files/s over find -delete's (issue 23)
PAYLOAD = os.urandom(1024)


def rel_path(i: int) -> tuple[str, datetime]:
    start = NOW - timedelta(days=10) + timedelta(seconds=i)
    folder = i // PER_DIR
    day = NOW - timedelta(days=10 + folder // 20)
    return f"{day:%Y/%m/%d}/cam-{folder % 20:02d}/{start:%Y%m%dT%H%M%SZ}_{i:07d}.mp4", start


def make_tree(root: Path, n: int) -> list[tuple[str, datetime]]:
    out = []
    made: set[Path] = set()
    for i in range(n):
        rel, start = rel_path(i)
        p = root / rel
        if p.parent not in made:
            p.parent.mkdir(parents=True, exist_ok=True)
            made.add(p.parent)
        with open(p, "wb") as fh:
            fh.write(PAYLOAD)
        out.append((rel, start))
    return out


def catalogue(cat: Catalog, entries: list[tuple[str, datetime]]) -> None:
    recs = []
    for i, (rel, start) in enumerate(entries):
        loc = rel.split("/")[3]
        tags = Tags(
            loc,
            Purpose.SECURITY,
            Site.PREMISES,
            False,
            False,
            start,
            start + timedelta(seconds=1),
            TimeSource.RECORDER,
            "bench",
        )
        recs.append(
            Recording(
                id=f"{i:032x}",
                path=rel,
                tags=tags,
                size=1024,
                sha256="0" * 64,
                deadline=start + timedelta(days=3),
            )
        )
        if len(recs) == 50_000:
            cat.recordings.add_many(recs)
            recs = []
    if recs:
        cat.recordings.add_many(recs)


def deletion_bench(base: Path, n: int, batch: int) -> tuple[float, float]:
    jroot, froot = base / "janitor" / "rec", base / "find"
    print(f"building two trees of {n:,} x 1 KB files ...", file=sys.stderr)
    entries = make_tree(jroot, n)
    make_tree(froot, n)
    cat = Catalog.open(base / "janitor" / "catalog.db", device_id="bench", storage_root=jroot)
    cat.anchor_interval = ANCHOR_INTERVAL  # as the daemon opens it
    catalogue(cat, entries)
    cat.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    clock = FakeClock(NOW, synced=True)
    guard = ClockGuard(cat, clock, ClockGuardSettings(release_date=NOW - timedelta(days=365)))
    janitor = Janitor(
        cat, jroot, periods=NOTICE_PERIODS, guard=guard, free_space=lambda: (1 << 40, 1 << 41),
        batch=batch,
    )  # fmt: skip
    subprocess.run(["sync"], check=False)
    t0 = time.perf_counter()
    res = janitor.sweep_once(NOW)
    j_s = time.perf_counter() - t0
    assert len(res.deleted) == n, (len(res.deleted), res.failed[:3], res.skipped[:3])
    left = sum(len(files) for _, _, files in os.walk(jroot) if files)
    assert left <= 1, f"{left} files left"  # the storage marker
    audits = cat.query("SELECT COUNT(*) FROM audit WHERE action = 'recording.deleted'")[0][0]
    events = cat.query("SELECT COUNT(*) FROM outbox WHERE type = 'recording.deleted'")[0][0]
    cat.close()
    subprocess.run(["sync"], check=False)
    t0 = time.perf_counter()
    subprocess.run(["find", str(froot), "-type", "f", "-delete"], check=True)
    f_s = time.perf_counter() - t0
    print(f"janitor: {n:,} deletions in {j_s:.2f} s = {n / j_s:,.0f} files/s "
          f"({audits:,} audit entries, {events:,} events, batch {batch})")  # fmt: skip
    print(f"find -type f -delete: {n:,} files in {f_s:.2f} s = {n / f_s:,.0f} files/s")
    ratio = (n / j_s) / (n / f_s)
    print(f"ratio janitor/find: {ratio:.2f}x (target >= {RATIO_TARGET:.2f}x)")
    return j_s, f_s


def plan_bench(base: Path, rows: int, runs: int) -> None:
    cat = Catalog.open(base / "plan" / "catalog.db", device_id="bench", storage_root=base / "plan")
    print(f"building a {rows:,}-row catalog ...", file=sys.stderr)
    build_s = build_catalog(cat, rows, 50_000)
    now = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=60 * (rows // 12) + 3600)
    holds = cat.holds.list()
    times, next_times = [], []
    p = None
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        page = cat.schedule.due_page(now, 500, 0)
        p = plan(page, holds, now, clock_trusted=True)
        times.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        cat.schedule.next_deadline_after(now)
        next_times.append((time.perf_counter() - t0) * 1000)
    assert p is not None
    due = cat.schedule.count_due(now)
    page_ms, next_ms = statistics.median(times[1:]), statistics.median(next_times[1:])
    print(f"plan at {rows:,} rows (built in {build_s:.0f} s, {due:,} due): first page of 500 "
          f"+ plan = {page_ms:.2f} ms median; next_deadline_after = {next_ms:.2f} ms; "
          f"{len(p.deletions)} deletions planned")  # fmt: skip
    cat.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--plan-rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--dir", type=Path, help="where to build (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        j_s, f_s = deletion_bench(base, args.files, args.batch)
        if args.plan_rows:
            plan_bench(base, args.plan_rows, args.runs)
    return 0 if f_s / j_s >= RATIO_TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
