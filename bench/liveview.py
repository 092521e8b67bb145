"""Benchmark the live view: CPU per viewer at 720p, passthrough vs re-encode, time to first frame.

A child process runs what the daemon would: a ``testsrc://`` camera (1280x720,
25 fps, 2 Mbit/s, keyframe every 2 s) published through the PacketHub, and the
LiveView server on loopback. This process connects aiortc viewers to it (their
decoding is not counted) and samples the child's CPU time (user + system, all
threads) with psutil:

- with no viewer (the camera stand-in's own cost, mostly the x264 encoder that
  a real camera would not need), then with 1 and 2 viewers;
- per viewer = (CPU with N viewers - CPU with none) / N, in % of one core.

Modes: ``passthrough`` (browser offers H.264: packets forwarded as they are),
``reencode-vp8`` (browser offers only VP8: decode + VP8 encode),
``reencode-h264`` (server told not to pass through: decode + H.264 encode).

Time to first frame is from the POST of the offer to the first decoded frame
at the viewer; it includes ICE + DTLS. The hub starts a new viewer from the
source's cached GOP (docs/design/architecture.md), so it no longer includes
waiting for the next keyframe.

``--ttff-gops 1,2,4`` measures time to first frame alone at those GOPs
(seconds): ``--ttff-samples`` viewers per GOP, one after the other, each
joining at a random point of the GOP (goal: at most 0.5 s at any GOP up to 4 s).

Usage: ``python bench/liveview.py [--seconds 20] [--modes passthrough,reencode-vp8] [--json]``
or ``python bench/liveview.py --ttff-gops 1,2,4 [--ttff-samples 8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-liveview-token-0123456789"
URL = "testsrc://?size=1280x720&rate=25&bitrate=2M"
MODES = ("passthrough", "reencode-vp8", "reencode-h264")


# -- the server side (child process) ----------------------------------------------------


async def _serve(port: int, passthrough: bool, gop: float = 2.0) -> None:
    from edge_agent.config.config import LiveView as LiveViewSettings
    from edge_agent.liveview.liveview import LiveView, SourceInfo
    from edge_agent.media.testsrc import open_testsrc
    from edge_agent.recording.packethub import PacketHub, pump

    hub = PacketHub()
    stop = threading.Event()
    src = open_testsrc(f"{URL}&gop={gop:g}")
    feeder = threading.Thread(target=pump, args=(hub, "cam", src, stop), daemon=True)
    feeder.start()
    settings = LiveViewSettings.model_validate(
        {"listen": f"127.0.0.1:{port}", "token": TOKEN, "max_viewers": 8}
    )
    info = SourceInfo("cam", "gate", "security", "premises", audio_room=False, signage=True)
    lv = LiveView(settings, [info], hub, passthrough=passthrough)
    await lv.start()
    print("ready", flush=True)
    done = asyncio.Event()
    asyncio.get_running_loop().add_reader(sys.stdin.fileno(), done.set)  # parent closes stdin
    await done.wait()
    await lv.close()
    stop.set()
    feeder.join(5)
    src.close()


# -- the viewer side ------------------------------------------------------------------------


class Viewer:
    def __init__(self) -> None:
        self.first_frame: float | None = None
        self.frames = 0
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.pc: Any = None

    async def connect(self, base: str, codec: str) -> None:
        import aiohttp
        from aiortc import (
            RTCConfiguration,
            RTCPeerConnection,
            RTCRtpReceiver,
            RTCSessionDescription,
        )

        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        t = pc.addTransceiver("video", direction="recvonly")
        caps = RTCRtpReceiver.getCapabilities("video")
        assert caps is not None
        t.setCodecPreferences(
            [c for c in caps.codecs if c.mimeType.lower() in (codec, "video/rtx")]
        )
        got_track = asyncio.get_running_loop().create_future()
        pc.on("track", lambda track: got_track.set_result(track))
        await pc.setLocalDescription(await pc.createOffer())
        start = time.monotonic()
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"{base}/whep/cam",
                data=pc.localDescription.sdp,
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"},
            )
            if resp.status != 201:
                raise RuntimeError(f"POST /whep/cam: {resp.status} {await resp.text()}")
            answer = await resp.text()
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        track = await got_track

        async def consume() -> None:
            while True:
                await track.recv()
                self.frames += 1
                if self.first_frame is None:
                    self.first_frame = time.monotonic() - start
                    self._started.set()

        self._task = asyncio.create_task(consume())
        async with asyncio.timeout(20):
            await self._started.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.pc is not None:
            await self.pc.close()


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def _measure(proc: psutil.Process, seconds: float) -> float:
    """% of one core used by the server process over ``seconds``."""
    c0, t0 = _cpu(proc), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (_cpu(proc) - c0) / (time.monotonic() - t0)


async def bench_mode(mode: str, seconds: float, warmup: float) -> dict[str, Any]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, __file__, "--serve", str(port)]
    if mode == "reencode-h264":
        args.append("--no-passthrough")
    child = await asyncio.create_subprocess_exec(
        *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    viewers: list[Viewer] = []
    try:
        assert child.stdout is not None
        line = (await child.stdout.readline()).decode()
        if line.strip() != "ready":
            raise RuntimeError(f"server did not start: {line!r}")
        proc = psutil.Process(child.pid)
        base = f"http://127.0.0.1:{port}"
        codec = "video/vp8" if mode == "reencode-vp8" else "video/h264"
        await asyncio.sleep(warmup)
        cpu = {0: await _measure(proc, seconds)}
        for n in (1, 2):
            v = Viewer()
            await v.connect(base, codec)
            viewers.append(v)
            await asyncio.sleep(warmup)
            frames0 = sum(x.frames for x in viewers)
            cpu[n] = await _measure(proc, seconds)
            fps = (sum(x.frames for x in viewers) - frames0) / seconds / n
        ttff = [v.first_frame for v in viewers if v.first_frame is not None]
        return {
            "mode": mode,
            "cpu_percent": {str(k): round(v, 1) for k, v in cpu.items()},
            "per_viewer_percent": {str(n): round((cpu[n] - cpu[0]) / n, 1) for n in (1, 2)},
            "fps_per_viewer": round(fps, 1),
            "first_frame_s": [round(t, 2) for t in ttff],
            "first_frame_median_s": round(statistics.median(ttff), 2),
        }
    finally:
        for v in viewers:
            await v.close()
        if child.stdin is not None:
            child.stdin.close()
        try:
            async with asyncio.timeout(10):
                await child.wait()
        except TimeoutError:
            child.kill()
            await child.wait()


async def _start_child(port: int, gop: float) -> asyncio.subprocess.Process:
    args = [sys.executable, __file__, "--serve", str(port), "--gop", str(gop)]
    child = await asyncio.create_subprocess_exec(
        *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    line = (await child.stdout.readline()).decode()
    if line.strip() != "ready":
        raise RuntimeError(f"server did not start: {line!r}")
    return child


async def bench_ttff(gop: float, samples: int, warmup: float) -> dict[str, Any]:
    """Time to first frame at one GOP: viewers one after the other, at random GOP phases."""
    import random
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = await _start_child(port, gop)
    times: list[float] = []
    try:
        await asyncio.sleep(warmup)
        for _ in range(samples):
            await asyncio.sleep(random.uniform(0, gop))
            v = Viewer()
            try:
                await v.connect(f"http://127.0.0.1:{port}", "video/h264")
                assert v.first_frame is not None
                times.append(v.first_frame)
            finally:
                await v.close()
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            async with asyncio.timeout(10):
                await child.wait()
        except TimeoutError:
            child.kill()
            await child.wait()
    return {
        "gop_s": gop,
        "first_frame_s": [round(t, 3) for t in times],
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for mode in args.modes.split(","):
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
        print(f"{mode}: measuring {args.seconds:g} s per step...", file=sys.stderr)
        results.append(await bench_mode(mode, args.seconds, args.warmup))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU sampling window")
    parser.add_argument("--warmup", type=float, default=3.0, help="settle time before sampling")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-passthrough", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gop", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--ttff-gops", help="time to first frame only, at these GOPs (s)")
    parser.add_argument("--ttff-samples", type=int, default=8)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(_serve(args.serve, not args.no_passthrough, args.gop))
        return 0
    if args.ttff_gops:
        return _ttff_main(args)
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps({"cpu_count": os.cpu_count(), "source": URL, "results": results}))
        return 0
    print(f"source {URL}; CPU in % of one core ({os.cpu_count()} cores)")
    print(f"{'mode':<15}{'0 viewers':>10}{'1':>8}{'2':>8}{'per viewer':>12}{'fps':>6}{'TTFF':>8}")
    for r in results:
        c, p = r["cpu_percent"], r["per_viewer_percent"]
        print(
            f"{r['mode']:<15}{c['0']:>10}{c['1']:>8}{c['2']:>8}"
            f"{p['1']:>6}/{p['2']:<5}{r['fps_per_viewer']:>6}{r['first_frame_median_s']:>7}s"
        )
    return 0


def _ttff_main(args: argparse.Namespace) -> int:
    gops = [float(g) for g in args.ttff_gops.split(",")]
    rows = [
        asyncio.run(bench_ttff(g, args.ttff_samples, args.warmup)) for g in gops
    ]  # fmt: skip
    if args.json:
        print(json.dumps({"source": URL, "results": rows}))
        return 0
    print(f"source {URL}; passthrough; {args.ttff_samples} viewers per GOP, random join phase")
    print(f"{'GOP':>5} {'TTFF median':>12} {'max':>7}  all")
    for r in rows:
        shown = " ".join(f"{t:.2f}" for t in r["first_frame_s"])
        print(f"{r['gop_s']:>4g}s {r['median_s']:>11.2f}s {r['max_s']:>6.2f}s  {shown}")
    return 0 if all(r["max_s"] <= 0.5 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
