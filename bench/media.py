"""Benchmark the PyAV media layer against the ffprobe / ffmpeg command-line tools.

Generates one input (default: 60 s of 1280x720 H.264 at 2 Mbit/s plus AAC, in
MP4) and times, as the median of several warm runs:

- probe:         edge_agent.media.media.probe       vs  ffprobe -show_format -show_streams
- count packets: media.count_packets (video)  vs  ffprobe -count_packets -select_streams v
- drop audio:    media.remux(drop_audio=True) vs  ffmpeg -i in -map 0:v -c copy out

The CLI rows include process start-up (also reported on its own), which is
what the agent would pay if it shelled out.

Usage: ``python bench/media.py [--runs 7] [--seconds 60] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.media import media  # noqa: E402
from tests.support.mediagen import make_video  # noqa: E402


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm the page cache and any lazy initialisation
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--bitrate", type=int, default=2_000_000)
    ap.add_argument("--input", type=Path, help="reuse this file instead of generating one")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as tmp_name:
        tmp = Path(tmp_name)
        src: Path = args.input or tmp / "in.mp4"
        gen_s = 0.0
        if args.input is None:
            t0 = time.perf_counter()
            make_video(
                src,
                container="mp4",
                seconds=args.seconds,
                size=(args.width, args.height),
                audio="aac",
                bit_rate=args.bitrate,
            )
            gen_s = time.perf_counter() - t0
        info = media.probe(src)
        tags = {"edge_agent.location": "bench", "edge_agent.purpose": "security"}
        out_py, out_cli = tmp / "py.mp4", tmp / "cli.mp4"

        probe_cmd = ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json"]
        count_cmd = ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v"]
        count_cmd += ["-show_entries", "stream=nb_read_packets"]
        remux_cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-map", "0:v", "-c", "copy"]
        rows = [
            (
                "probe",
                _median_ms(lambda: media.probe(src), args.runs),
                _median_ms(lambda: _run([*probe_cmd, str(src)]), args.runs),
            ),
            (
                "count video packets",
                _median_ms(lambda: media.count_packets(src), args.runs),
                _median_ms(lambda: _run([*count_cmd, str(src)]), args.runs),
            ),
            (
                "remux, drop audio",
                _median_ms(lambda: media.remux(src, out_py, tags=tags, drop_audio=True), args.runs),
                _median_ms(lambda: _run([*remux_cmd, str(out_cli)]), args.runs),
            ),
        ]
        startup_ms = _median_ms(lambda: _run(["ffprobe", "-v", "error", "-version"]), args.runs)
        same = media.count_packets(out_py) == media.count_packets(out_cli)
        meta = {
            "input": {
                "seconds": info.duration,
                "size_bytes": info.size,
                "streams": [f"{s.type}:{s.codec}" for s in info.streams],
                "generated_in_s": round(gen_s, 1),
            },
            "runs": args.runs,
            "cli_startup_ms": round(startup_ms, 1),
            "outputs_same_video_packets": same,
            "ffmpeg_cli": _version(["ffmpeg", "-version"]),
            "pyav_libavformat": ".".join(map(str, _pyav_lavf())),
        }

    if args.json:
        doc = {
            **meta,
            "rows": [
                {"op": op, "pyav_ms": round(py, 2), "cli_ms": round(cli, 2), "ratio": py / cli}
                for op, py, cli in rows
            ],
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"input: {meta['input']['seconds']:.1f} s, {info.size / 1e6:.1f} MB, "
        f"{', '.join(meta['input']['streams'])}; median of {args.runs} warm runs"
    )
    print(f"ffmpeg CLI: {meta['ffmpeg_cli']}; PyAV libavformat {meta['pyav_libavformat']}")
    print(f"{'operation':<22}{'PyAV ms':>10}{'CLI ms':>10}{'PyAV/CLI':>10}")
    for op, py, cli in rows:
        print(f"{op:<22}{py:>10.1f}{cli:>10.1f}{py / cli:>10.2f}")
    print(f"CLI process start-up alone (ffprobe -version): {startup_ms:.1f} ms")
    print(f"outputs have the same video packet count: {same}")
    return 0


def _version(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    return " ".join(out.split()[:3]) if out else "unknown"


def _pyav_lavf() -> tuple[int, ...]:
    import av

    return tuple(av.library_versions["libavformat"])


if __name__ == "__main__":
    raise SystemExit(main())
