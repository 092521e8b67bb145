"""Recorder CPU cost vs ``ffmpeg -c copy -f segment`` on the same source, same run.

Source: a 720p25 H.264 CBR 4 Mbit/s + AAC file made here with the ffmpeg CLI,
played at real time and looped by both sides:

- ffmpeg: ``ffmpeg -re -stream_loop -1 -i clip.mkv -c copy -f segment
  -segment_time 10 -reset_timestamps 1 out%03d.mkv``
- edge-agent: ``RecorderManager`` with a ``file://`` source, 10 s segments,
  the full path (tags, Matroska, catalog row, audit entry, event, fsync, hash).

Each runs in its own process; CPU = user + system seconds of that process
during the recording window (our figure excludes interpreter start-up and
imports, measured by the process itself with getrusage at the window edges).

The same video with G.711 mu-law audio (8 kHz mono in QuickTime, what most IP
cameras send) is measured too: Matroska cannot hold G.711, so the recorder
decodes it to 16-bit PCM (docs/audio.md); ffmpeg does the same with
``-c:v copy -c:a pcm_s16le``. Side by side with the plain copy, that is the
cost of the conversion per stream.

    python bench/recorder.py --seconds 60

``--beside-anon`` measures instead what an anonymization job costs two
recording cameras (bench/beside_anon.py):

    python bench/recorder.py --beside-anon --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def make_clip(path: Path, seconds: int = 20, audio: str = "aac") -> None:
    codec = (
        ["-c:a", "aac", "-b:a", "64k"]
        if audio == "aac"
        else ["-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1"]
    )
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y"),
            *("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"),
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
            *("-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "50"),
            *("-b:v", "4M", "-minrate", "4M", "-maxrate", "4M", "-bufsize", "2M"),
            *("-x264-params", "nal-hrd=cbr", *codec, str(path)),
        ],
        check=True,
    )


def ffmpeg_cpu(clip: Path, out: Path, seconds: float, audio: str = "copy") -> float:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            *("ffmpeg", "-v", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", str(clip)),
            *("-c:v", "copy", "-c:a", audio),
            *("-f", "segment", "-segment_time", "10", "-reset_timestamps", "1"),
            str(out / "out%03d.mkv"),
        ]
    )
    time.sleep(seconds)
    t = psutil.Process(proc.pid).cpu_times()
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    return float(t.user + t.system)


DRIVER = """
import asyncio, json, resource, sys, time
from pathlib import Path
from edge_agent.store.catalog import Catalog
from edge_agent.config.config import parse_config
from edge_agent.intake.intake import Intake
from edge_agent.recording.recorder_manager import RecorderManager
from edge_agent.app.settings import source_plans
from edge_agent.intake.runtime import intake_settings

tmp, clip, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
cfg = parse_config(f'''
[device]
id = "bench"
hw_profile = "generic-linux"
[storage]
root = "{tmp}/rec"
catalog = "{tmp}/catalog.db"
[[locations]]
id = "lab"
kind = "premises"
audio_room = true
signage = true
[[sources]]
id = "cam"
url = "file://{clip}"
location = "lab"
purpose = "rnd"
audio = true
segment_seconds = 10
''', tmp)
cat = Catalog.open(tmp / "catalog.db", device_id="bench", storage_root=tmp / "rec")
mgr = RecorderManager(source_plans(cfg), Intake(cat, intake_settings(cfg)), cfg.storage.root)

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

async def main():
    stop = asyncio.Event()
    t0 = cpu()
    task = asyncio.create_task(mgr.run(stop))
    await asyncio.sleep(seconds)
    bitrate = mgr.snapshot()[0].bitrate_bps
    stop.set()
    await task
    print(json.dumps({"cpu": cpu() - t0, "segments": mgr.filed, "bitrate": bitrate}))

asyncio.run(main())
"""


def agent_cpu(clip: Path, tmp: Path, seconds: float) -> dict[str, float]:
    tmp.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp), str(clip), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    doc: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--no-g711", action="store_true", help="skip the G.711 conversion runs")
    ap.add_argument("--beside-anon", action="store_true", help="two cameras beside a job")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-recorder-"))
    if args.beside_anon:
        sys.path.insert(0, str(REPO / "bench"))
        import beside_anon

        try:
            make_clip(work / "clip.mkv")
            beside_anon.report(work / "clip.mkv", work, args.seconds)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    try:
        clip = work / "clip.mkv"
        make_clip(clip)
        mbps = clip.stat().st_size * 8 / 20 / 1e6
        ff = ffmpeg_cpu(clip, work / "ffmpeg", args.seconds)
        ours = agent_cpu(clip, work / "agent", args.seconds)
        per_min_ff = ff * 60 / args.seconds
        per_min_ours = ours["cpu"] * 60 / args.seconds
        cores = os.cpu_count() or 1
        streams = int(0.8 * cores * 60 / per_min_ours) if per_min_ours else 0
        print(f"source: 1280x720 25 fps H.264 CBR + AAC, {mbps:.2f} Mbit/s, {cores} CPU(s)")
        print(f"window: {args.seconds:.0f} s of real-time recording, 10 s segments")
        print(f"ffmpeg -c copy -f segment : {per_min_ff:.3f} CPU s per minute")
        print(
            f"edge-agent recorder       : {per_min_ours:.3f} CPU s per minute "
            f"({ours['segments']:.0f} segments filed, measured {ours['bitrate'] or 0:.0f} bit/s)"
        )
        ratio = per_min_ours / per_min_ff if per_min_ff else float("inf")
        print(f"ratio (ours / ffmpeg)     : {ratio:.2f}x (target <= 1.0x)")
        print(f"streams at < 80% CPU      : ~{streams} (0.8 x {cores} cores x 60 s / per-minute)")
        if not args.no_g711:
            g711 = work / "g711.mov"
            make_clip(g711, audio="pcmu")
            ff_g = ffmpeg_cpu(g711, work / "ffmpeg-g711", args.seconds, "pcm_s16le") * 60
            ours_g = agent_cpu(g711, work / "agent-g711", args.seconds)
            per_min_g = ours_g["cpu"] * 60 / args.seconds
            print("G.711 mu-law 8 kHz camera, decoded to pcm_s16le for Matroska:")
            print(f"ffmpeg -c:a pcm_s16le     : {ff_g / args.seconds:.3f} CPU s per minute")
            print(
                f"edge-agent recorder       : {per_min_g:.3f} CPU s per minute "
                f"({ours_g['segments']:.0f} segments filed)"
            )
            extra = per_min_g - per_min_ours
            print(f"G.711 conversion costs    : {extra:+.3f} CPU s per minute per stream")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
