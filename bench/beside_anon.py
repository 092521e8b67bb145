"""What an anonymization job costs the recorders (docs/anonymization.md, "never at
the cost of recording"); run through ``python bench/recorder.py --beside-anon``.

Two cameras (the same 720p25 H.264 4 Mbit/s + AAC file, played at real time
and looped by the recorder's ``file://`` source, 5 s segments) are recorded
for the window alone, then again while jobs anonymize a 4 s 720p clip with
faces (tests/support/anonclip.py) over and over, each as app/anon_worker.py runs it:
``edge-agent anonymize --job ID`` in its own process, niced (15), with
``[anonymize] threads = 2``. Each run is its own process. Printed per run: the
event-loop thread's CPU (where the recorders' segments are filed), the
recorder process's CPU (the jobs' processes not included), the loop's worst
lag, the segments filed, their length spread and the filing delay (catalog
``added_at`` minus segment end), and the jobs done beside with their CPU.

This file is also the driver: ``python bench/beside_anon.py TMP CLIP SECONDS 0|1``
prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
[device]
id = "bench"
hw_profile = "generic-linux"
[storage]
root = "{tmp}/rec"
catalog = "{tmp}/catalog.db"
[[locations]]
id = "lab"
kind = "premises"
signage = true
[[sources]]
id = "cam1"
url = "file://{clip}"
location = "lab"
purpose = "security"
segment_seconds = 5
[[sources]]
id = "cam2"
url = "file://{clip}"
location = "lab"
purpose = "security"
segment_seconds = 5
[anonymize]
enabled = true
threads = 2
nice = 15
"""


def drive(tmp: Path, clip: str, seconds: float, anon: bool) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from edge_agent.app.settings import source_plans
    from edge_agent.config.config import parse_config
    from edge_agent.core.model import Purpose
    from edge_agent.intake.intake import Intake
    from edge_agent.intake.runtime import intake_settings, origin_for
    from edge_agent.recording.recorder_manager import RecorderManager
    from edge_agent.store.catalog import Catalog
    from tests.support import anonclip

    text = CONFIG.format(tmp=tmp, clip=clip)
    (tmp / "agent.toml").write_text(text, encoding="utf-8")
    cfg = parse_config(text, tmp)
    cat = Catalog.open(tmp / "catalog.db", device_id="bench", storage_root=tmp / "rec")
    intake = Intake(cat, intake_settings(cfg))
    faces = tmp / "faces.mp4"
    anonclip.make_clip(faces, seconds=4.0)
    adopted = intake.adopt(faces, origin_for(cfg, "lab", Purpose.RND), datetime.now(UTC))
    assert adopted.recording is not None, adopted
    rid = adopted.recording.id
    mgr = RecorderManager(source_plans(cfg), intake, cfg.storage.root)
    stop_jobs = threading.Event()
    done: dict[str, Any] = {"jobs": 0, "frames": 0, "job_cpu": 0.0}

    def jobs() -> None:
        nice = cfg.anonymize.nice
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        while not stop_jobs.is_set():
            job, _ = cat.anon_jobs.enqueue(rid, requested_by="bench", origin="cli")
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "anonymize", "--job", str(job.id),
                 "--config", str(tmp / "agent.toml")],
                stdout=subprocess.PIPE, preexec_fn=lambda: os.nice(nice),
            )  # fmt: skip
            while proc.poll() is None:
                if stop_jobs.wait(0.2):
                    proc.terminate()
            out = json.loads(proc.communicate()[0] or b"{}")
            if out.get("state") == "done":
                done["jobs"] += 1
                done["frames"] += out.get("frames", 0)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        done["job_cpu"] = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        lag = 0.0

        async def ticker() -> None:
            nonlocal lag
            while not stop.is_set():
                t = time.monotonic()
                await asyncio.sleep(0.05)
                lag = max(lag, time.monotonic() - t - 0.05)

        task = asyncio.create_task(mgr.run(stop))
        await asyncio.sleep(2.0)  # the sources open
        started = time.time()
        worker = threading.Thread(target=jobs) if anon else None
        if worker is not None:
            worker.start()
        tick = asyncio.create_task(ticker())
        r0, l0 = resource.getrusage(resource.RUSAGE_SELF), time.thread_time()
        await asyncio.sleep(seconds)
        r1, l1 = resource.getrusage(resource.RUSAGE_SELF), time.thread_time()
        stop.set()
        stop_jobs.set()
        await task
        await tick
        if worker is not None:
            worker.join()
        rows = cat.query(
            'SELECT "end" - start, added_at - "end" FROM recordings '
            "WHERE source_id IS NOT NULL AND start >= ?",
            (started,),
        )
        lengths = [float(r[0]) for r in rows]
        delays = [float(r[1]) for r in rows]
        return {
            "loop_cpu": l1 - l0,
            "process_cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
            "lag_max": lag,
            "segments": len(rows),
            "len_min": min(lengths, default=0.0),
            "len_max": max(lengths, default=0.0),
            "delay_mean": sum(delays) / len(delays) if delays else 0.0,
            "delay_max": max(delays, default=0.0),
            **done,
        }

    return asyncio.run(main())


def run(clip: Path, tmp: Path, seconds: float, anon: bool) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, __file__, str(tmp), str(clip), str(seconds), "1" if anon else "0"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return doc


def report(clip: Path, work: Path, seconds: float) -> None:
    cores = os.cpu_count() or 1
    print(f"two cameras 1280x720 25 fps H.264 4 Mbit/s + AAC, 5 s segments, {seconds:.0f} s")
    print(f"jobs: 4 s 720p25 clip with faces, own process, threads 2, nice 15; {cores} CPU(s)")
    print(
        "| run | loop CPU s/min | process CPU s/min | worst loop lag ms | segments "
        "| length min..max s | filing delay mean / max s | jobs (frames, CPU s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    per_min = 60 / seconds
    for anon in (False, True):
        d = run(clip, work / ("anon" if anon else "alone"), seconds, anon)
        print(
            f"| {'beside a job' if anon else 'alone'} | {d['loop_cpu'] * per_min:.2f} "
            f"| {d['process_cpu'] * per_min:.2f} | {d['lag_max'] * 1000:.0f} "
            f"| {d['segments']} | {d['len_min']:.2f}..{d['len_max']:.2f} "
            f"| {d['delay_mean']:.3f} / {d['delay_max']:.3f} "
            f"| {d['jobs']} ({d['frames']}, {d['job_cpu']:.1f}) |"
        )


if __name__ == "__main__":
    print(json.dumps(drive(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1")))
