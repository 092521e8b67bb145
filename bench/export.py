"""Export throughput against ``cp`` + ``sync`` of the same files, in the same run.

    python bench/export.py [--files 8] [--mib 32] [--rounds 3] [--dir /fast/disk]

Builds a storage root of ``--files`` recordings of ``--mib`` MiB each: a real
H.264 Matroska file made with PyAV, padded with random bytes to the size (the
export probes only the header, and random bytes keep the disk honest), and
catalogued with their SHA-256. Then, per round and in alternating order:

- ``export`` as folder and as tar: :func:`edge_agent.export.run.run_export`,
  the path ``edge-agent export`` takes (probe each file for audio, copy while
  hashing, fsync each file and the folder, sign, audit, rename);
- ``cp FILES... DST && sync`` (the whole system's dirty data, as an operator
  would), and ``cp FILES... DST && sync DST/FILES DST`` (only the copies,
  like the export: the fairer line on a machine others write to).

One export is made first and not counted (imports, PyAV, the key). Prints
MiB/s of each (median of the rounds) and the ratio against ``cp + sync``
(goal >= 0.8x), and SHA-256 alone over the same
bytes: where the disk writes faster than one core hashes, that is the
export's ceiling. Before each copy the earlier outputs are removed and
``sync`` run. Source files stay in the page cache for both, so this measures the
write side, which is what an export to a USB disk waits for.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.core.export_plan import ExportQuery
from edge_agent.core.model import Purpose, Recording, Site, Tags, TimeSource
from edge_agent.export.run import ExportRequest, Operator, run_export
from edge_agent.store.catalog import Catalog
from tests.support.mediagen import make_video

NOW = datetime.now(UTC).replace(microsecond=0)


def build(root: Path, files: int, mib: int) -> tuple[Catalog, list[Path]]:
    storage = root / "rec"
    (storage / "gate").mkdir(parents=True)
    seed = root / "seed.mkv"
    make_video(seed, container="mkv", seconds=0.4)
    head = seed.read_bytes()
    cat = Catalog.open(root / "state" / "catalog.db", device_id="gw-bench", storage_root=storage)
    recs, paths = [], []
    for i in range(files):
        rel = f"gate/{i:04d}.mkv"
        data = head + os.urandom(mib * (1 << 20) - len(head))
        (storage / rel).write_bytes(data)
        start = NOW - timedelta(hours=1) + timedelta(minutes=i)
        tags = Tags(
            "gate", Purpose.SECURITY, Site.PREMISES, False, False, start,
            start + timedelta(seconds=60), TimeSource.RECORDER, "gw-bench",
        )  # fmt: skip
        recs.append(
            Recording(
                id=f"bench{i:04d}",
                path=rel,
                tags=tags,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                deadline=start + timedelta(days=3),
            )
        )
        paths.append(storage / rel)
    cat.recordings.add_many(recs)
    os.sync()
    return cat, paths


def time_export(cat: Catalog, root: Path, out: Path) -> float:
    req = ExportRequest(
        query=ExportQuery("gate", NOW - timedelta(days=1), NOW),
        request_ref="BENCH",
        reason="benchmark",
        out=out,
        operator=Operator(os.getuid(), "bench"),
        device_id="gw-bench",
        storage_root=root / "rec",
        state_dir=root / "state",
        audio_rooms=(),
        now=NOW,
    )
    t = time.perf_counter()
    receipt = run_export(cat, req)
    took = time.perf_counter() - t
    assert receipt.status == "done", receipt.notes
    return took


def time_cp(paths: list[Path], out: Path, *, only_copies: bool = False) -> float:
    out.mkdir()
    t = time.perf_counter()
    subprocess.run(["cp", *map(str, paths), str(out)], check=True)
    if only_copies:
        # sync FILE... fsyncs just those (coreutils >= 8.24): what the export does.
        copies = [str(out / p.name) for p in paths]
        subprocess.run(["sync", *copies, str(out)], check=True)
    else:
        subprocess.run(["sync"], check=True)
    return time.perf_counter() - t


def time_hash(paths: list[Path]) -> float:
    """The ceiling on a fast disk: SHA-256 of the same bytes, one thread, from the cache."""
    t = time.perf_counter()
    for p in paths:
        with p.open("rb") as fh:
            hashlib.file_digest(fh, "sha256")
    return time.perf_counter() - t


def quiet(base: Path) -> None:
    """Each copy starts alike: earlier outputs gone, nothing dirty, writeback idle."""
    for p in base.iterdir():
        if p.name.startswith(("cp", "ex", "warm")):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    os.sync()
    time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: a tmp dir)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-export-", dir=args.dir))
    try:
        cat, paths = build(base, args.files, args.mib)
        total = sum(p.stat().st_size for p in paths) / (1 << 20)
        times: dict[str, list[float]] = {
            "export (folder)": [],
            "export (tar)": [],
            "cp + sync": [],
            "cp + sync FILES": [],
            "sha256 only, 1 thread": [],
        }
        time_export(cat, base, base / "warm")  # imports, PyAV, the signing key
        for r in range(args.rounds):
            runs = [
                ("cp + sync", lambda: time_cp(paths, base / "cp")),
                ("cp + sync FILES", lambda: time_cp(paths, base / "cp", only_copies=True)),
                ("sha256 only, 1 thread", lambda: time_hash(paths)),
                ("export (folder)", lambda: time_export(cat, base, base / "ex")),
                ("export (tar)", lambda: time_export(cat, base, base / "ex.tar")),
            ]
            if r % 2:
                runs.reverse()
            for name, fn in runs:
                quiet(base)
                times[name].append(fn())
        quiet(base)
        cat.close()
        cp = statistics.median(times["cp + sync"])
        print(
            f"{args.files} files x {args.mib} MiB = {total:.0f} MiB, {args.rounds} rounds, {base}"
        )
        print("| copy | median s | MiB/s | vs cp + sync |")
        print("|---|---|---|---|")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"| {name} | {med:.2f} | {total / med:.0f} | {cp / med:.2f}x |")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
