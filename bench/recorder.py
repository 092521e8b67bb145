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

``--mask``: the CPU of privacy masks at recording time instead
(docs/anonymization.md, "Masks at recording time"): the same 720p25 clip
(with sensor-like grain, ``--noise``) recorded by stream copy and then
decoded, masked (a quarter of the picture) and re-encoded with libx264 at
each preset given (``--presets``, bitrate ``--mask-kbps``), each in its own
process, with the lengths of the segments filed (10 s expected: the
keyframes are forced at the cuts).

    python bench/recorder.py --mask --seconds 30 --presets ultrafast,superfast,veryfast
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
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]


def make_clip(path: Path, seconds: int = 20, audio: str = "aac", noise: int = 0) -> None:
    codec = (
        ["-c:a", "aac", "-b:a", "64k"]
        if audio == "aac"
        else ["-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1"]
    )
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y"),
            *("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25" + _noise(noise)),
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
            *("-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "50"),
            *("-b:v", "4M", "-minrate", "4M", "-maxrate", "4M", "-bufsize", "2M"),
            *("-x264-params", "nal-hrd=cbr", *codec, str(path)),
        ],
        check=True,
    )


def _noise(strength: int) -> str:
    # Sensor-like grain that changes every frame: a camera's picture costs an
    # encoder far more than the clean test pattern.
    return f",noise=alls={strength}:allf=t" if strength else ""


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
# --mask: extra [[sources]] keys and a profile file with the encoder's settings
extra = sys.argv[4] if len(sys.argv) > 4 else ""
profile = sys.argv[5] if len(sys.argv) > 5 else "generic-linux"
cfg = parse_config(f'''
[device]
id = "bench"
hw_profile = "{profile}"
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
{extra}
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
    lengths = [(r.end - r.start).total_seconds() for r in cat.recordings.list()]
    print(json.dumps({"cpu": cpu() - t0, "segments": mgr.filed, "bitrate": bitrate,
                      "lengths": sorted(lengths)}))

asyncio.run(main())
"""


def agent_cpu(clip: Path, tmp: Path, seconds: float, *mask: str) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp), str(clip), str(seconds), *mask],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return doc


# A quarter of the picture, as a neighbour's house front might be.
MASK_KEYS = (
    "privacy_masks = [[[0.5, 0.0], [1.0, 0.0], [1.0, 0.5], [0.5, 0.5]]]\nmask_at_recording = true"
)


def fill_cost(frames: int = 500) -> float:
    """Microseconds to fill MASK_KEYS' quarter into one 720p picture (spans, no numpy)."""
    import av

    from edge_agent.recording.mask import MaskFiller

    frame = av.VideoFrame(1280, 720, "yuv420p")
    filler = MaskFiller([((0.5, 0.0), (1.0, 0.0), (1.0, 0.5), (0.5, 0.5))], frame)
    t0 = time.perf_counter()
    for _ in range(frames):
        filler.fill(frame)
    return (time.perf_counter() - t0) / frames * 1e6


def mask_bench(args: argparse.Namespace, clip: Path, work: Path) -> None:
    """CPU per 720p25 stream, masked at each preset, against stream copy."""
    cores = os.cpu_count() or 1
    grain = f", grain {args.noise}" if args.noise else ", clean"
    print(f"source: 1280x720 25 fps H.264 4 Mbit/s + AAC{grain}, {cores} CPU(s), 10 s segments")
    print(f"window: {args.seconds:.0f} s of real-time recording per row")
    print("| mode | CPU % of one core | CPU s per minute | segments (s) | bitrate (kbit/s) |")
    print("|---|---|---|---|---|")
    rows = [("stream copy", "")] + [(p, p) for p in args.presets.split(",") if p]
    for label, preset in rows:
        extra: tuple[str, ...] = ()
        if preset:
            profile = work / f"mask-{preset}.toml"
            base = (REPO / "edge_agent/hw_profiles/generic-linux.toml").read_text()
            profile.write_text(
                f'{base}\nmask_preset = "{preset}"\nmask_bitrate_kbps = {args.mask_kbps}\n'
            )
            extra = (MASK_KEYS, str(profile))
        doc = agent_cpu(clip, work / f"agent-{label}", args.seconds, *extra)
        pct = 100 * doc["cpu"] / args.seconds
        full = doc["lengths"][1:-1] or doc["lengths"]  # the first and last are cut short
        lengths = f"{min(full):.2f}-{max(full):.2f}" if full else "none"
        mode = "copy" if not preset else f"masked, {preset}, {args.mask_kbps} kbit/s"
        print(
            f"| {mode} | {pct:.1f} | {doc['cpu'] * 60 / args.seconds:.1f} | {lengths} "
            f"| {(doc['bitrate'] or 0) / 1000:.0f} |"
        )
    print(f"fill alone: {fill_cost():.0f} us per 720p picture (a quarter of it masked)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--no-g711", action="store_true", help="skip the G.711 conversion runs")
    ap.add_argument("--mask", action="store_true", help="privacy masks at recording time")
    ap.add_argument("--presets", default="ultrafast,superfast,veryfast", help="with --mask")
    ap.add_argument("--mask-kbps", type=int, default=2000, help="with --mask")
    ap.add_argument("--noise", type=int, default=12, help="with --mask: grain (0 = clean)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-recorder-"))
    try:
        clip = work / "clip.mkv"
        make_clip(clip, noise=args.noise if args.mask else 0)
        if args.mask:
            mask_bench(args, clip, work)
            return
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
