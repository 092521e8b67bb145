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

``--beside-anon`` measures instead what an anonymization job costs two
recording cameras (bench/beside_anon.py):

    python bench/recorder.py --beside-anon --seconds 30

Streams per process (issue 23): ``--streams 1,4,16,32`` records N copies of the
clip in one agent (one ``RecorderManager``, N ``file://`` sources, 4 s
segments) and, as the reference, N ``ffmpeg -c copy -f segment`` processes;
each N is run ``--runs`` times and the median reported. Per N: CPU per stream
(% of one core), total CPU vs ffmpeg's, the p99 filing delay (a segment's
hand-over by the recording thread, right after its last packet, to its catalog
row committed) and lag: a file source cannot drop packets, it falls behind
real time instead; the largest lag seen is reported, and packets that arrived
more than 1 s late are counted as what a live camera would have dropped.
``--liveview-idle`` adds the same agent with a live-view PacketHub attached
and nobody watching (the GOP cache's cost).

    python bench/recorder.py --streams 1,4,16,32 --seconds 20 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
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
cat.anchor_interval = 1.0  # as the daemon opens it (app/daemon.py ANCHOR_INTERVAL)
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
    ap.add_argument("--beside-anon", action="store_true", help="two cameras beside a job")
    ap.add_argument("--mask", action="store_true", help="privacy masks at recording time")
    ap.add_argument("--presets", default="ultrafast,superfast,veryfast", help="with --mask")
    ap.add_argument("--mask-kbps", type=int, default=2000, help="with --mask")
    ap.add_argument("--noise", type=int, default=12, help="with --mask: grain (0 = clean)")
    ap.add_argument("--streams", help="streams per process, e.g. 1,4,16,32 (see the docstring)")
    ap.add_argument("--runs", type=int, default=3, help="--streams: runs per N (median)")
    ap.add_argument("--liveview-idle", action="store_true", help="--streams: also with a hub")
    args = ap.parse_args()
    if args.streams:
        bench_streams([int(n) for n in args.streams.split(",")], args)
        return
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


# -- streams per process (issue 23) ------------------------------------------------------

STREAMS_DRIVER = r"""
import asyncio, json, resource, sys, time
from pathlib import Path
from edge_agent.store.catalog import Catalog
from edge_agent.config.config import parse_config
from edge_agent.intake.intake import Intake
from edge_agent.recording.recorder_manager import RecorderManager
from edge_agent.recording.run import Run
from edge_agent.recording.filer import SegmentFiler
from edge_agent.app.settings import source_plans
from edge_agent.intake.runtime import intake_settings

tmp, clip, seconds, n = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
hub_on = sys.argv[5] == "hub"
source = '''
[[sources]]
id = "cam%02d"
url = "file://%s"
location = "lab"
purpose = "rnd"
audio = true
segment_seconds = 4
'''
sources = "".join(source % (i, clip) for i in range(n))
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
{sources}''', tmp)

# Lag behind real time, per run: wall time since its first packet minus stream time.
lag = {"max": 0.0, "late": 0, "packets": 0}
first = {}
real_arrived = Run.arrived
def arrived(self, kind, packet):
    ts = real_arrived(self, kind, packet)
    if ts is not None:
        now = time.monotonic()
        f = first.setdefault(id(self), (now, ts))
        behind = (now - f[0]) - (ts - f[1])
        lag["packets"] += 1
        if behind > 1.0:
            lag["late"] += 1
        lag["max"] = max(lag["max"], behind)
    return ts
Run.arrived = arrived

# Filing delay: hand-over by the recording thread -> catalog row committed.
handed, delays = {}, []
real_closed = SegmentFiler.segment_closed
def closed(self, seg):
    handed[getattr(seg, "path", None)] = time.monotonic()
    real_closed(self, seg)
SegmentFiler.segment_closed = closed  # the recorders hold bound methods: patch the class
cat = Catalog.open(tmp / "catalog.db", device_id="bench", storage_root=tmp / "rec")
cat.anchor_interval = 1.0  # as the daemon opens it (app/daemon.py ANCHOR_INTERVAL)
intake = Intake(cat, intake_settings(cfg))
mgr = RecorderManager(source_plans(cfg), intake, cfg.storage.root)
if hub_on:
    from edge_agent.recording.packethub import PacketHub
    mgr.attach_hub(PacketHub())
real_register = intake.register_segments  # the filer catalogues a wave at a time
def register(segs, *a, **k):
    out = real_register(segs, *a, **k)
    done = time.monotonic()
    for seg, rec in zip(segs, out):
        t = handed.pop(seg.path, None)
        if t is not None and not isinstance(rec, Exception):
            delays.append(done - t)
    return out
intake.register_segments = register

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

async def main():
    stop = asyncio.Event()
    task = asyncio.create_task(mgr.run(stop))
    await asyncio.sleep(3)  # every source open and writing
    t0, w0 = cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    used, wall = cpu() - t0, time.monotonic() - w0
    stop.set()
    await task
    print(json.dumps({"cpu": used, "wall": wall, "segments": mgr.filed, "delays": delays,
                      "lag": lag["max"], "late": lag["late"], "packets": lag["packets"]}))

asyncio.run(main())
"""


def streams_agent(clip: Path, tmp: Path, seconds: float, n: int, hub: bool) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    args = [str(tmp), str(clip), str(seconds), str(n), "hub" if hub else "-"]
    out = subprocess.run(
        [sys.executable, "-c", STREAMS_DRIVER, *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return doc


def streams_ffmpeg(clip: Path, out: Path, seconds: float, n: int) -> float:
    """CPU seconds of N ``ffmpeg -c copy -f segment`` processes over the same window."""
    procs = []
    for i in range(n):
        d = out / f"cam{i:02d}"
        d.mkdir(parents=True, exist_ok=True)
        procs.append(
            subprocess.Popen(
                [
                    *("ffmpeg", "-v", "error", "-nostdin", "-re", "-stream_loop", "-1"),
                    *("-i", str(clip), "-c", "copy", "-f", "segment", "-segment_time", "4"),
                    *("-reset_timestamps", "1", str(d / "out%03d.mkv")),
                ]
            )
        )
    try:
        time.sleep(3)
        ps = [psutil.Process(p.pid) for p in procs]
        c0 = sum(_cpu(p) for p in ps)
        w0 = time.monotonic()
        time.sleep(seconds)
        used = sum(_cpu(p) for p in ps) - c0
        return used * seconds / (time.monotonic() - w0)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(10)


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def _p99(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


def bench_streams(ns: list[int], args: argparse.Namespace) -> None:
    seconds, runs = args.seconds, args.runs
    work = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    rows = []
    med = statistics.median
    try:
        clip = work / "clip.mkv"
        make_clip(clip)
        for n in ns:
            ours, hubbed, ff = [], [], []
            for r in range(runs):
                print(f"N={n} run {r + 1}/{runs}...", file=sys.stderr)
                ours.append(streams_agent(clip, work / f"a{n}-{r}", seconds, n, hub=False))
                if args.liveview_idle:
                    hubbed.append(streams_agent(clip, work / f"h{n}-{r}", seconds, n, hub=True))
                ff.append(streams_ffmpeg(clip, work / f"f{n}-{r}", seconds, n))
                for side in "ahf":
                    shutil.rmtree(work / f"{side}{n}-{r}", ignore_errors=True)
            ours_cpu = med(100 * o["cpu"] / o["wall"] for o in ours)
            ff_cpu = med(100 * f / seconds for f in ff)
            hub_cpu = med(100 * h["cpu"] / h["wall"] for h in hubbed) if hubbed else 0.0
            rows.append(
                {
                    "n": n,
                    "ours_per_stream": ours_cpu / n,
                    "ff_per_stream": ff_cpu / n,
                    "ratio": ours_cpu / ff_cpu if ff_cpu else float("inf"),
                    "hub_per_stream": hub_cpu / n,
                    "p99_filing": med(_p99(o["delays"]) for o in ours),
                    "segments": med(len(o["delays"]) for o in ours),
                    "lag": med(o["lag"] for o in ours),
                    "late": med(o["late"] for o in ours),
                }
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cores = os.cpu_count() or 1
    print(f"{seconds:.0f} s windows, median of {runs} runs, {cores} CPU(s); CPU in % of one core")
    head = f"{'N':>3} {'ours/str':>9} {'ffmpeg/str':>10} {'total ratio':>11}"
    if args.liveview_idle:
        head += f" {'hub idle/str':>12}"
    print(head + f" {'p99 filing':>10} {'segs':>5} {'max lag':>8} {'late>1s':>8}")
    for r in rows:
        line = (
            f"{r['n']:>3} {r['ours_per_stream']:>8.2f}% {r['ff_per_stream']:>9.2f}%"
            f" {r['ratio']:>10.2f}x"
        )
        if args.liveview_idle:
            line += f" {r['hub_per_stream']:>11.2f}%"
        print(
            line + f" {r['p99_filing'] * 1000:>8.0f}ms {r['segments']:>5.0f}"
            f" {r['lag']:>7.2f}s {r['late']:>8.0f}"
        )


if __name__ == "__main__":
    main()
