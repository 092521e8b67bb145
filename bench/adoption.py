"""A backlog of files: N camera files dropped into a watched folder at once (issue #23 item 2).

    python bench/adoption.py [--files 500] [--seconds 10] [--dir /fast/disk] [--big-gb 1]

Inputs: ``--files`` distinct 720p H.264 + AAC MP4 files of ``--seconds`` each,
made once with PyAV and cached in ``/tmp/edge-agent-adoption-cache`` (one
encode, then a stream copy per file with its own title tag, so every file has
its own hash). Each contender gets a fresh copy of the backlog on the same
file system and the page cache is flushed (``sync``) before its clock starts.

1. agent: the real :class:`FolderAdopter` with inotify on the folder and, as in
   the daemon, the media child (``BENCH_NO_WORKER=1``: PyAV in this process
   instead, to compare); files are renamed into it at once; the clock stops
   when every one is catalogued (hash, audio removed, fsync, audit entry,
   event) and its source removed.
2. shell: per file ``ffprobe``, ``ffmpeg -c copy -an``, ``sha256sum``, ``sync``
   and ``rm`` of the source, one ``bash -c`` per file.
3. minimum: per file ``shutil.copyfile`` + SHA-256 over the copy + ``fsync``
   + unlink of the source, in one Python process (C-speed copy and hash).

Prints files/s of each and the ratios (goals: agent >= 5x shell, >= 0.8x
minimum). ``--big-gb`` adds one file of that size (a long 720p recording made
by stream-copying the cached input end to end) adopted alone, with the time
split (SHA-256 of the source, copy + fsync, total) and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import av  # noqa: E402

from edge_agent.app.daemon import ANCHOR_INTERVAL  # noqa: E402
from edge_agent.core.model import NOTICE_PERIODS, Purpose, Site  # noqa: E402
from edge_agent.intake.adopter import FolderAdopter, WatchSpec  # noqa: E402
from edge_agent.intake.intake import Intake, IntakeSettings, Origin, Outcome  # noqa: E402
from edge_agent.media.media_worker import MediaWorker  # noqa: E402
from edge_agent.store.catalog import Catalog  # noqa: E402
from tests.support.mediagen import make_video  # noqa: E402

CACHE = Path("/tmp/edge-agent-adoption-cache")
ORIGIN = Origin(
    location="lobby", site=Site.PREMISES, audio_room=False, signage=True, purpose=Purpose.SECURITY
)


def base_file(seconds: float) -> Path:
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"base-{seconds:g}s.mp4"
    if not path.exists():
        print(f"encoding {seconds:g} s of 720p H.264 + AAC once ...", file=sys.stderr)
        tmp = path.with_suffix(".tmp.mp4")
        make_video(tmp, seconds=seconds, size=(1280, 720), audio="aac", bit_rate=4_000_000)
        tmp.rename(path)
    return path


def variant(base: Path, i: int) -> Path:
    """``base`` stream-copied with its own title: same media, its own hash."""
    path = CACHE / f"{base.stem}-{i:04d}.mp4"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(base)) as src, av.open(str(tmp), "w", format="mp4") as dst:
        dst.metadata["title"] = f"camera file {i}"
        dst.metadata["creation_time"] = "2026-11-30T10:00:00Z"
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for pkt in src.demux():
            if pkt.dts is None:
                continue
            pkt.stream = streams[pkt.stream.index]
            dst.mux(pkt)
    tmp.rename(path)
    return path


def stage(files: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for i, f in enumerate(files):
        dst = folder / f"cam1_{i:04d}.mp4"
        shutil.copyfile(f, dst)
        out.append(dst)
    subprocess.run(["sync"], check=True)
    return out


def intake_for(base: Path) -> Intake:
    root = base / "rec"
    cat = Catalog.open(base / "catalog.db", device_id="bench", storage_root=root)
    cat.anchor_interval = ANCHOR_INTERVAL  # as the daemon opens it
    settings = IntakeSettings(
        device_id="bench",
        storage_root=root,
        quarantine_dir=base / "quarantine",
        periods=NOTICE_PERIODS,
    )
    return Intake(cat, settings)


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (user + system)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


async def agent_run(staged: list[Path], watch: Path, base: Path) -> tuple[float, float]:
    intake = intake_for(base)
    # As the daemon runs it: PyAV work on the files in a child process, whose CPU
    # counts (RUSAGE_CHILDREN, once it has exited).
    intake.media_worker = None if os.environ.get("BENCH_NO_WORKER") else MediaWorker()
    os.mkdir(watch)
    spec = WatchSpec(folder=watch, origin=ORIGIN, stable_seconds=0.2, poll_seconds=0.5)
    adopter = FolderAdopter(spec, intake, now=lambda: datetime.now(UTC))
    task = asyncio.create_task(adopter.run())
    await asyncio.sleep(0.3)
    t0, c0 = time.perf_counter(), _cpu()
    for p in staged:
        os.rename(p, watch / p.name)
    while adopter.stats.adopted + adopter.stats.quarantined < len(staged):
        await asyncio.sleep(0.02)
        if adopter.stats.errors:
            raise RuntimeError(adopter.stats.last_error)
    elapsed = time.perf_counter() - t0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if intake.media_worker is not None:
        intake.media_worker.close()
    cpu = _cpu() - c0
    assert adopter.stats.adopted == len(staged), adopter.stats
    cat = intake.catalog
    audits = cat.query("SELECT COUNT(*) FROM audit WHERE action='recording.added'")[0][0]
    assert audits == len(staged), audits
    cat.close()
    return elapsed, cpu


def shell_run(staged: list[Path], out: Path) -> tuple[float, float]:
    out.mkdir()
    t0, c0 = time.perf_counter(), _cpu()
    for p in staged:
        dst = out / p.name
        script = (
            f"ffprobe -v error -show_format -show_streams '{p}' > /dev/null && "
            f"ffmpeg -v error -y -i '{p}' -map 0:v -c copy -an '{dst}' && "
            f"sha256sum '{dst}' > /dev/null && sync && rm '{p}'"
        )
        subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - t0, _cpu() - c0


def minimum_run(staged: list[Path], out: Path) -> tuple[float, float]:
    out.mkdir()
    t0, c0 = time.perf_counter(), _cpu()
    for p in staged:
        dst = out / p.name
        shutil.copyfile(p, dst)
        h = hashlib.sha256()
        with open(dst, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
            os.fsync(fh.fileno())
        os.unlink(p)
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return time.perf_counter() - t0, _cpu() - c0


CAMERA = "testsrc://?size=1280x720&rate=25&bitrate=2M&gop=2"


def daemon_run(files: list[Path], base: Path, segment_s: float = 2.0) -> None:
    """The real daemon recording two cameras while the backlog drains through its watch.

    Segment timing per camera from the catalog: length, gap to the previous
    segment and filing delay (row added_at minus segment end), before and during
    the drain.
    """
    watch, root = base / "watch", base / "rec"
    watch.mkdir(parents=True)
    cfg = base / "config.toml"
    lines = [
        "[device]", 'id = "bench"', 'hw_profile = "generic-linux"',
        "[storage]", f'root = "{root}"', f'catalog = "{base / "catalog.db"}"',
        'free_space_floor = "1MiB"',
        "[[locations]]", 'id = "gate"', 'kind = "premises"', "signage = true",
    ]  # fmt: skip
    for cam in ("cam-1", "cam-2"):
        lines += [
            "[[sources]]", f'id = "{cam}"', f'url = "{CAMERA}"', 'location = "gate"',
            'purpose = "security"', f"segment_seconds = {segment_s:g}",
        ]  # fmt: skip
    lines += [
        "[[watch]]", f'path = "{watch}"', 'location = "gate"', 'purpose = "security"',
        "stable_seconds = 0.5",
    ]  # fmt: skip
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    staged = stage(files, base / "stage")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)]
    log_fh = open(base / "agent.log", "wb")  # noqa: SIM115 - closed with the agent
    agent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log_fh)
    db = base / "catalog.db"
    try:
        time.sleep(12.0)  # cameras running, a few segments filed
        t_drop = time.time()
        t0 = time.perf_counter()
        for p in staged:
            os.rename(p, watch / p.name)
        adopted = 0
        while adopted < len(staged):
            time.sleep(0.2)
            if agent.poll() is not None:
                raise RuntimeError((base / "agent.log").read_text()[-2000:])
            adopted = _count(db, "SELECT COUNT(*) FROM recordings WHERE source_id IS NULL")
        drain_s = time.perf_counter() - t0
        t_end = time.time()
        time.sleep(2 * segment_s)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        log_fh.close()
    rows = _rows(
        db,
        'SELECT source_id, start, "end", added_at FROM recordings '
        "WHERE source_id IS NOT NULL ORDER BY source_id, start",
    )
    rate = len(staged) / drain_s
    print(f"\ndaemon with two 720p cameras ({segment_s:g} s segments): "
          f"{len(staged)} files drained in {drain_s:.1f} s ({rate:.1f} files/s)")  # fmt: skip
    print(
        "| camera | window | segments | length min..max s | max gap s | filing delay p50 / max s |"
    )
    print("|---|---|---|---|---|---|")
    for cam in ("cam-1", "cam-2"):
        segs = [r for r in rows if r[0] == cam]
        for label, lo, hi in (("before", 0.0, t_drop), ("during drain", t_drop, t_end)):
            w = [r for r in segs if lo <= r[2] < hi]
            if not w:
                print(f"| {cam} | {label} | 0 | - | - | - |")
                continue
            lengths = [r[2] - r[1] for r in w]
            gaps = [b[1] - a[2] for a, b in itertools.pairwise(w)] or [0.0]
            delays = sorted(r[3] - r[2] for r in w)
            p50, worst = delays[len(delays) // 2], delays[-1]
            print(f"| {cam} | {label} | {len(w)} | {min(lengths):.2f}..{max(lengths):.2f} "
                  f"| {max(gaps):.2f} | {p50:.2f} / {worst:.2f} |")  # fmt: skip


def _count(db: Path, sql: str) -> int:
    return int(_rows(db, sql)[0][0])


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return [(0,)]
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return [(0,)]
    finally:
        conn.close()


def big_file(base: Path, gigabytes: float) -> Path:
    path = CACHE / f"big-{gigabytes:g}g.mp4"
    if path.exists():
        return path
    print(f"building a {gigabytes:g} GB recording by stream copy ...", file=sys.stderr)
    copies = max(1, round(gigabytes * 1e9 / base.stat().st_size))
    listing = CACHE / "big-list.txt"
    listing.write_text(f"file '{base}'\n" * copies, encoding="utf-8")
    tmp = path.with_suffix(".tmp.mp4")
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
    subprocess.run([*cmd, "-c", "copy", str(tmp)], check=True)
    tmp.rename(path)
    return path


def big_run(src: Path, base: Path) -> None:
    folder = base / "big-in"
    folder.mkdir()
    staged = folder / "long.mp4"
    shutil.copyfile(src, staged)
    subprocess.run(["sync"], check=True)
    size = staged.stat().st_size
    t0 = time.perf_counter()
    h = hashlib.sha256()
    with open(staged, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    sha_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cp = base / "big-cp.mp4"
    shutil.copyfile(staged, cp)
    with open(cp, "rb") as fh:
        os.fsync(fh.fileno())
    cp_s = time.perf_counter() - t0
    cp.unlink()
    intake = intake_for(base / "big")
    intake.media_worker = worker = MediaWorker()  # as the daemon
    fd = os.open(staged, os.O_RDONLY)
    try:
        worker.probe_and_scan(fd, staged, predict=True)  # the child is up before the clock
    finally:
        os.close(fd)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    res = intake.adopt(staged, ORIGIN, datetime.now(UTC))
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = max(_rss_kib(pid) for pid in worker.pids)
    worker.close()
    assert res.outcome is Outcome.ADOPTED, res
    intake.catalog.close()
    print(f"\none {size / 1e9:.2f} GB file:")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| SHA-256 of the source alone (hashlib) | {sha_s:.2f} |")
    print(f"| copy + fsync alone (shutil.copyfile) | {cp_s:.2f} |")
    print(f"| agent adoption, total | {total:.2f} |")
    print(f"peak RSS of the process {rss / 1024:.0f} MiB (before adoption {rss0 / 1024:.0f} MiB)")
    print(f"peak RSS of the media child {child / 1024:.0f} MiB")


def _rss_kib(pid: int) -> int:
    """Peak resident set of a live process (VmHWM), KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--big-gb", type=float, default=0.0, help="also one file of this size")
    ap.add_argument("--skip-shell", action="store_true")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median)")
    ap.add_argument(
        "--cameras", action="store_true", help="also drain through the daemon recording two cameras"
    )
    args = ap.parse_args()
    base_src = base_file(args.seconds)
    files = [variant(base_src, i) for i in range(args.files)]
    mb = sum(f.stat().st_size for f in files) / 1e6
    work = Path(tempfile.mkdtemp(prefix="adoption-", dir=args.dir))
    try:
        print(f"# {args.files} files of {args.seconds:g} s 720p H.264+AAC, {mb:.0f} MB in all")
        runs: dict[str, list[float]] = {"agent": [], "minimum": [], "shell": []}
        cpus: dict[str, list[float]] = {"agent": [], "minimum": [], "shell": []}
        for r in range(args.rounds):
            # Interleaved rounds, medians: the disk and CPU are shared with other jobs.
            staged = stage(files, work / f"a-stage{r}")
            took = asyncio.run(agent_run(staged, work / f"a-watch{r}", work / f"a{r}"))
            runs["agent"].append(took[0])
            cpus["agent"].append(took[1])
            staged = stage(files, work / f"m-stage{r}")
            took = minimum_run(staged, work / f"m-out{r}")
            runs["minimum"].append(took[0])
            cpus["minimum"].append(took[1])
            if not args.skip_shell:
                staged = stage(files, work / f"s-stage{r}")
                took = shell_run(staged, work / f"s-out{r}")
                runs["shell"].append(took[0])
                cpus["shell"].append(took[1])
            for d in work.iterdir():  # keep the disk use to one round
                if d.name != "d":
                    shutil.rmtree(d, ignore_errors=True)
        names = {
            "agent": "agent (FolderAdopter)",
            "minimum": "minimum (copy+sha256+fsync)",
            "shell": "shell (ffprobe, ffmpeg -an, sha256sum, sync)",
        }
        print(
            f"| contender | seconds, median of {args.rounds} (all) | files/s | MB/s | CPU ms/file |"
        )
        print("|---|---|---|---|---|")
        med = {k: statistics.median(v) for k, v in runs.items() if v}
        for key, s in med.items():
            every = ", ".join(f"{x:.1f}" for x in runs[key])
            cpu_ms = statistics.median(cpus[key]) * 1000 / args.files
            print(
                f"| {names[key]} | {s:.2f} ({every}) | {args.files / s:.1f} | {mb / s:.0f} "
                f"| {cpu_ms:.1f} |"
            )
        print(f"agent / minimum: {med['minimum'] / med['agent']:.2f}x (goal >= 0.8x)")
        if "shell" in med:
            print(f"agent / shell: {med['shell'] / med['agent']:.2f}x (goal >= 5x)")
        if args.cameras:
            daemon_run(files, work / "d")
        if args.big_gb:
            big_run(big_file(base_src, args.big_gb), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
