"""Catalog benchmark: a million recordings, then the queries the daemon runs often.

    python bench/catalog.py [--rows 1000000] [--runs 9] [--dir /some/fast/disk]

Builds a catalog in a temporary folder through the public bulk-insert API
(``Catalog.recordings.add_many`` in big transactions: executemany plus the
purpose-stats triggers), then reports the median of several runs of:

- the retention sweep: the first 1000 due recordings (target <= 5 ms),
- the per-purpose summary for telemetry (target <= 50 ms),
- a location + one-hour window lookup, as an erase request does (target <= 10 ms).

Data: 60 s segments from 12 cameras spread over seven months; security
footage is due after 3 days and R&D/marketing after 2-6 months, so at "now"
hundreds of thousands of rows are due and the sweep must stop at its limit.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.core.model import (
    Purpose,
    Recording,
    RecState,
    Site,
    Tags,
    TimeSource,
)
from edge_agent.store.catalog import Catalog

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
LOCATIONS = [f"cam-{i:02d}" for i in range(12)]
PURPOSE_OF = {loc: list(Purpose)[i % 3] for i, loc in enumerate(LOCATIONS)}
SITE_OF = {loc: Site.PREMISES if i % 2 else Site.EXTERNAL for i, loc in enumerate(LOCATIONS)}
KEEP = {
    Purpose.SECURITY: timedelta(days=3),
    Purpose.RND: timedelta(days=182),
    Purpose.MARKETING: timedelta(days=61),
}


def generate(rows: int, seed: int = 1) -> Iterator[Recording]:
    rnd = random.Random(seed)
    per_loc = rows // len(LOCATIONS) + 1
    n = 0
    for k in range(per_loc):
        for loc in LOCATIONS:
            if n >= rows:
                return
            start = EPOCH + timedelta(seconds=60 * k + rnd.random())
            purpose = PURPOSE_OF[loc]
            state = RecState.ACTIVE
            roll = rnd.random()
            if roll < 0.02:
                state = RecState.RESTRICTED
            elif roll < 0.05:
                state = RecState.DELETED
            yield Recording(
                id=f"{n:032x}",
                path=f"{loc}/{start:%Y/%m/%d/%H%M%S}-{n}.mp4",
                tags=Tags(
                    location=loc,
                    purpose=purpose,
                    site=SITE_OF[loc],
                    audio=False,
                    anonymized=False,
                    start=start,
                    end=start + timedelta(seconds=60),
                    time_source=TimeSource.RECORDER,
                    device="bench",
                ),
                size=rnd.randint(5_000_000, 30_000_000),
                sha256=f"{rnd.getrandbits(256):064x}",
                state=state,
                deadline=start + KEEP[purpose],
            )
            n += 1


def build(cat: Catalog, rows: int, batch: int) -> float:
    t0 = time.perf_counter()
    it = generate(rows)
    done = 0
    while done < rows:
        chunk = [rec for _, rec in zip(range(batch), it, strict=False)]
        if not chunk:
            break
        cat.recordings.add_many(chunk)
        done += len(chunk)
        rate = done / (time.perf_counter() - t0)
        print(f"\r  inserted {done:>9,} rows ({rate:,.0f} rows/s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    return time.perf_counter() - t0


def median_ms(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    result = fn()  # warm the page cache and the statement cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--dir", type=Path, help="where to build (default: a temporary folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        cat = Catalog.open(root / "catalog.db", device_id="bench", storage_root=root / "rec")
        print(f"building a {args.rows:,}-row catalog in {root} ...", file=sys.stderr)
        build_s = build(cat, args.rows, args.batch)
        cat.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size_mb = (root / "catalog.db").stat().st_size / 1e6

        last_start = EPOCH + timedelta(seconds=60 * (args.rows // len(LOCATIONS)))
        now = last_start + timedelta(hours=1)
        window_start = EPOCH + (last_start - EPOCH) / 2
        raw = cat.conn.cursor()
        raw.row_factory = None

        def sweep_sql_only() -> list[tuple[object, ...]]:
            # The same statement as schedule.due (store/schedule.py), without Recordings.
            return raw.execute(
                'SELECT id, path, location, purpose, site, audio, anonymized, start, "end", '
                "time_source, device, policy_version, deadline, size, sha256, source_sha256, "
                "state, source_id FROM recordings INDEXED BY idx_recordings_due "
                "WHERE state IN ('active', 'restricted') AND deadline IS NOT NULL "
                "AND deadline <= ? ORDER BY deadline LIMIT 1000",
                (now.timestamp(),),
            ).fetchall()

        cases: list[tuple[str, Callable[[], object], float, Callable[[object], str]]] = [
            (
                "deadline sweep (first 1000 due)",
                lambda: cat.schedule.due(now, limit=1000),
                5.0,
                lambda r: f"{len(r)} rows",  # type: ignore[arg-type]
            ),
            (
                "  same, SQL only (tuples)",
                sweep_sql_only,
                5.0,
                lambda r: f"{len(r)} rows",  # type: ignore[arg-type]
            ),
            (
                "next deadline",
                cat.schedule.next_deadline,
                5.0,
                lambda r: str(r),
            ),
            (
                "per-purpose summary",
                cat.recordings.summaries,
                50.0,
                lambda r: ", ".join(f"{p}={s.count:,}" for p, s in r.items()),  # type: ignore[attr-defined]
            ),
            (
                "location + 1 h window lookup",
                lambda: cat.recordings.overlapping(
                    "cam-03", window_start, window_start + timedelta(hours=1)
                ),
                10.0,
                lambda r: f"{len(r)} rows",  # type: ignore[arg-type]
            ),
            (
                "count by state",
                cat.recordings.counts,
                50.0,
                lambda r: f"{sum(r.values()):,} rows",  # type: ignore[attr-defined]
            ),
        ]
        print()
        print(f"catalog: {args.rows:,} rows, {size_mb:,.0f} MB, built in {build_s:.1f} s")
        print(f"insert rate: {args.rows / build_s:,.0f} rows/s (batches of {args.batch:,})")
        print()
        due_total = cat.query(
            "SELECT COUNT(*) FROM recordings WHERE state IN ('active', 'restricted') "
            "AND deadline <= ?",
            (now.timestamp(),),
        )[0][0]
        print(f"due at 'now': {due_total:,} rows (the sweep must stop at its limit)")
        print()
        print(f"{'query':34} {'median ms':>10} {'target ms':>10}  {'ok':3} result")
        failed = 0
        for name, fn, target, describe in cases:
            ms, result = median_ms(fn, args.runs)
            ok = ms <= target
            failed += not ok
            print(
                f"{name:34} {ms:10.2f} {target:10.1f}  {'yes' if ok else 'NO':3} {describe(result)}"
            )
        cat.close()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
