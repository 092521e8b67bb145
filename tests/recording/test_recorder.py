"""Recorder: cut rules, real recordings from testsrc:// and a real RTSP server, crash adoption.

Segments are checked with the ``ffprobe`` CLI, the catalog is a real SQLite file,
the RTSP server is GStreamer's gst-rtsp-server in a subprocess on loopback
(``tests/support/rtsp_server.py``; over TCP-interleaved and over UDP, the latter from a
server that offers nothing else), and the crash test SIGKILLs a real recorder process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.app.settings import source_plans
from edge_agent.config.config import ConfigError
from edge_agent.core.backoff import backoff_delay
from edge_agent.core.model import Recording, utcnow
from edge_agent.core.segmenter import Action, decide
from edge_agent.intake.intake import PARTIAL_PREFIX
from edge_agent.media.sources import SourceError, open_source
from edge_agent.recording.packethub import PacketHub
from edge_agent.recording.recorder import State, find_partials, recover_partials
from tests.support import rtsp_server
from tests.support.broker import free_port
from tests.support.mediagen import ffprobe, make_video, write_garbage
from tests.support.recorder import (
    FAST,
    kinds,
    make_cfg,
    open_rig,
    running,
    source,
    state,
    until,
)

REPO = Path(__file__).resolve().parents[2]
SMALL = "size=160x120&rate=25&bitrate=150k&gop=1"

# -- the cut decision (pure) -------------------------------------------------------------


def cut(**kw: object) -> Action:
    args: dict[str, object] = {
        "is_video": True,
        "is_keyframe": False,
        "ts": 10.0,
        "last_ts": 9.96,
        "segment_start": 5.0,
        "segment_seconds": 4.0,
    }
    args.update(kw)
    return decide(**args).action  # type: ignore[arg-type]


def test_a_segment_opens_only_on_a_video_keyframe() -> None:
    assert cut(segment_start=None, is_keyframe=False) is Action.SKIP
    assert cut(segment_start=None, is_video=False, is_keyframe=True) is Action.SKIP
    assert cut(segment_start=None, is_keyframe=True, last_ts=None) is Action.OPEN


def test_cut_at_the_first_keyframe_after_segment_seconds() -> None:
    assert cut(ts=8.96, last_ts=8.92, is_keyframe=True) is Action.WRITE  # 3.96 s in
    assert cut(ts=9.0, last_ts=8.96, is_keyframe=True) is Action.CUT  # 4 s in
    assert cut(ts=12.0, last_ts=11.96) is Action.WRITE  # long GOP: wait for a keyframe
    assert cut(ts=12.0, last_ts=11.96, is_video=False, is_keyframe=True) is Action.WRITE


@given(
    base=st.integers(0, 2**32 - 1),
    gop_frames=st.sampled_from([25, 50, 60, 100]),
    fps=st.sampled_from([10, 12.5, 15, 25, 30]),
)
def test_a_gop_as_long_as_the_segment_cuts_at_every_keyframe(
    base: int, gop_frames: int, fps: float
) -> None:
    # RTP timestamps (90 kHz) start anywhere in 32 bits; float rounding of
    # raw * time_base must not make a keyframe exactly one segment after the
    # start look a hair early, or the segment silently runs twice as long.
    tb = 1 / 90000
    step = round(90000 / fps)
    gop = gop_frames * step
    start = float(Fraction(base, 90000))
    for k in range(1, 20):
        raw = base + k * gop
        ts = raw * tb
        d = decide(
            is_video=True,
            is_keyframe=True,
            ts=ts,
            last_ts=(raw - step) * tb,
            segment_start=start,
            segment_seconds=gop / 90000,
        )
        assert d.action is Action.CUT, (k, ts - start)
        start = float(Fraction(raw, 90000))


def test_discontinuities_start_a_new_segment() -> None:
    back = decide(
        is_video=True,
        is_keyframe=False,
        ts=3.0,
        last_ts=9.0,
        segment_start=5.0,
        segment_seconds=60,
    )
    assert back.action is Action.CLOSE and "back" in back.reason
    assert cut(ts=30.0, last_ts=9.0, is_keyframe=True, segment_seconds=60) is Action.CUT
    assert cut(ts=9.8, last_ts=10.0) is Action.WRITE  # small reordering is not a jump


def test_backoff_grows_with_jitter_and_stays_capped() -> None:
    assert backoff_delay(1, 1.0, 60.0, 0.0) == 0.5
    assert backoff_delay(1, 1.0, 60.0, 1.0) == 1.0
    assert backoff_delay(4, 1.0, 60.0, 1.0) == 8.0
    assert backoff_delay(30, 1.0, 60.0, 1.0) == 60.0
    assert 0.5 <= backoff_delay(30, 1.0, 60.0, 0.0) < 1.0  # jitter reaches down to the floor


# -- helpers -------------------------------------------------------------------------------


def first_video_packet_is_key(path: Path) -> bool:
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-select_streams", "v:0"),
            *("-show_entries", "packet=flags", "-read_intervals", "%+#1", "-of", "csv=p=0"),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[0].startswith("K")


def packet_times(path: Path, stream: str) -> list[float]:
    """Start times (seconds) of one stream's packets, as ffprobe reads them."""
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-select_streams", stream),
            *("-show_entries", "packet=pts_time", "-of", "csv=p=0"),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(line.strip(",")) for line in out.stdout.split() if line.strip(",")]


def audio_stays_inside(rec: Recording, path: Path) -> None:
    """Every audio packet of a segment starts within the segment's catalog window."""
    times = packet_times(path, "a:0")
    length = (rec.end - rec.start).total_seconds()
    assert times and min(times) >= 0 and max(times) < length, (path.name, times[:2], times[-2:])


def duration(doc: dict[str, object]) -> float:
    fmt = doc["format"]
    assert isinstance(fmt, dict)
    return float(fmt["duration"])


# -- testsrc:// --------------------------------------------------------------------------------


async def test_testsrc_segments_audio_rule_and_signage(tmp_path: Path) -> None:
    rig = open_rig(
        tmp_path,
        source("lab-cam", f"testsrc://?{SMALL}&tone=1", "lab")
        + source("gate-cam", f"testsrc://?{SMALL}&tone=1", "gate")
        + source("dark-cam", f"testsrc://?{SMALL}", "unsigned"),
    )
    async with running(rig):
        await until(lambda: len(rig.recordings("gate-cam")) >= 2, 10, "two gate segments")
        await until(lambda: len(rig.recordings("lab-cam")) >= 2, 5, "two lab segments")
        snap = {s.id: s for s in rig.manager.snapshot()}
        assert snap["lab-cam"].state == State.RECORDING and snap["lab-cam"].audio
        assert snap["gate-cam"].state == State.RECORDING and not snap["gate-cam"].audio
        assert snap["gate-cam"].bitrate_bps and snap["gate-cam"].last_segment_end
        dark = snap["dark-cam"]
        assert dark.state == State.DEGRADED and "no signage" in (dark.reason or "")
        # While recording, the open segment has no catalog row: retention cannot see it.
        open_files = list(find_partials(Path(rig.cfg.storage.root)))
        assert open_files and all(
            rig.catalog.recordings.find_by_path(str(p)) is None for p in open_files
        )
    assert not list(find_partials(Path(rig.cfg.storage.root))), "stop files the open segment"
    assert not rig.recordings("dark-cam")
    for sid, audio in (("lab-cam", True), ("gate-cam", False)):
        recs = rig.recordings(sid)
        for rec in recs[:-1]:  # the last one was cut short by the stop
            doc = ffprobe(rig.path(rec))
            assert abs(duration(doc) - 2.0) < 0.3, (sid, duration(doc))
            assert first_video_packet_is_key(rig.path(rec))
            assert ("audio" in kinds(doc)) is audio and rec.tags.audio is audio
            tags = {k.lower(): v for k, v in doc["format"]["tags"].items()}  # type: ignore[index]
            assert tags["edge_agent.id"] == rec.id
            assert tags["edge_agent.location"] == rec.location
        for a, b in itertools.pairwise(recs):
            assert a.end == b.start, "segments abut"
            if audio:
                audio_stays_inside(a, rig.path(a))
        assert rig.path(recs[0]).name.startswith(f"{recs[0].start:%Y%m%dT%H%M%SZ}_{sid}_")
        assert oct(rig.path(recs[0]).stat().st_mode & 0o777) == "0o640"


async def test_pause_files_the_segment_and_resume_records_again(tmp_path: Path) -> None:
    rig = open_rig(tmp_path, source("cam", f"testsrc://?{SMALL}", "gate", seconds=30))
    async with running(rig) as m:
        await until(lambda: state(rig, "cam") == State.RECORDING, 5, "recording")
        await asyncio.sleep(1.0)
        m.pause("cam", "disk pressure: free space below floor")
        await until(lambda: state(rig, "cam") == State.PAUSED, 5, "paused")
        await until(lambda: len(rig.recordings()) == 1, 5, "segment filed on pause")
        assert m.snapshot()[0].reason == "disk pressure: free space below floor"
        m.resume("cam")
        await until(lambda: state(rig, "cam") == State.RECORDING, 5, "recording again")
        await asyncio.sleep(0.5)
    assert len(rig.recordings()) == 2


async def test_a_slow_viewer_never_stalls_recording(tmp_path: Path) -> None:
    rig = open_rig(tmp_path, source("cam", f"testsrc://?{SMALL}&tone=1", "lab", seconds=2))
    hub = PacketHub()
    rig.manager.attach_hub(hub)
    async with running(rig):
        slow = hub.subscribe("cam", audio=True)  # never read
        live = hub.subscribe("cam", audio=True)
        assert live.audio is not None
        first = await asyncio.wait_for(live.video.get(), 5)
        assert first.keyframe and first.data and first.info.codec == "h264"
        assert (await asyncio.wait_for(live.audio.get(), 5)).data
        # The slow viewer's backlog (packethub.VIDEO_BACKLOG, ~6 s here) overflows...
        await until(lambda: slow.video.dropped > 0, 12, "the slow viewer's backlog overflows")
        # ...and recording went on all along: 2 s segments were filed meanwhile.
        assert len(rig.recordings()) >= 2
        slow.close()
        live.close()


async def test_nobody_watching_copies_no_packet(tmp_path: Path) -> None:
    """A live view with no viewer costs the recorder no copy (docs/design/architecture.md)."""
    rig = open_rig(tmp_path, source("cam", f"testsrc://?{SMALL}&tone=1", "lab", seconds=2))
    hub = PacketHub()
    rig.manager.attach_hub(hub)
    async with running(rig):
        await until(lambda: hub.counts("cam")[0] > 50, 6, "packets published")
        assert hub.counts("cam")[1] == 0, "copied with nobody watching"
        assert hub.codec("cam", "video") is not None and hub.codec("cam", "audio") is not None
        assert (hub.seconds_since_packet("cam") or 99.0) < 1.0
        viewer = hub.subscribe("cam")
        await asyncio.wait_for(viewer.video.get(), 5)
        viewer.close()
        published, copied = hub.counts("cam")
        await asyncio.sleep(0.3)
        assert hub.counts("cam")[1] == copied > 0, "copies stop when the viewer leaves"
        assert hub.counts("cam")[0] > published


async def test_file_source_plays_in_real_time_and_loops_without_a_cut(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mkv", container="mkv", seconds=1.0, size=(160, 120))
    rig = open_rig(tmp_path, source("cam", f"file://{clip}", "gate", seconds=60))
    t0 = time.monotonic()
    async with running(rig):
        await until(lambda: state(rig, "cam") == State.RECORDING, 5, "recording")
        await asyncio.sleep(3.2)
    wall = time.monotonic() - t0
    recs = rig.recordings()
    assert len(recs) == 1, "looping continues the timestamps: no discontinuity cut"
    got = duration(ffprobe(rig.path(recs[0])))
    assert 2.5 < got <= wall + 0.1, (got, wall)


# -- a real RTSP server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rtsp_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = rtsp_server.available()
    if why is not None:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("rtsp")
    return make_video(
        folder / "clip.mkv", container="mkv", seconds=40, size=(160, 120), audio="aac"
    )


@contextmanager
def rtsp(port: int, clip: Path, protocols: str = "any") -> Iterator[subprocess.Popen[str]]:
    proc = rtsp_server.start(port, clip, protocols=protocols)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(5)


async def test_rtsp_records_survives_a_stall_and_a_server_restart(
    tmp_path: Path, rtsp_clip: Path
) -> None:
    port = free_port()
    url = f"rtsp://viewer:s3cret@127.0.0.1:{port}/cam"
    rig = open_rig(tmp_path, source("ipcam", url, "lab", seconds=2))
    with rtsp(port, rtsp_clip) as server:
        async with running(rig) as m:
            await until(lambda: len(rig.recordings()) >= 1, 15, "a first RTSP segment")
            assert "s3cret" not in json.dumps([s.as_dict() for s in m.snapshot()])
            # Stall: the server stops sending but keeps the connection open.
            os.kill(server.pid, signal.SIGSTOP)
            await until(lambda: state(rig, "ipcam") != State.RECORDING, 8, "stall detected")
            os.kill(server.pid, signal.SIGCONT)
            await until(lambda: state(rig, "ipcam") == State.RECORDING, 15, "recording again")
            before = len(rig.recordings())
            # Server dies mid-stream, then comes back on the same port.
            server.kill()
            server.wait(5)
            await until(lambda: state(rig, "ipcam") != State.RECORDING, 8, "disconnect seen")
            with rtsp(port, rtsp_clip):
                await until(lambda: len(rig.recordings()) > before + 1, 20, "new segments")
            assert m.snapshot()[0].reconnects >= 2
    recs = rig.recordings()
    full = [r for r in recs if (r.end - r.start).total_seconds() > 1.5]
    assert full, [(r.start, r.end) for r in recs]
    for rec in full:
        doc = ffprobe(rig.path(rec))
        assert kinds(doc) == ["video", "audio"]  # audio room: audio kept
        assert first_video_packet_is_key(rig.path(rec))
        # 2 s segments of a 2 s GOP: a segment that runs to the next keyframe
        # (4 s) means a cut was missed (see the GOP property test above).
        assert 1.5 < duration(doc) < 3.5, duration(doc)


def test_rtsp_transport_is_a_per_source_key_that_reaches_the_recorder(tmp_path: Path) -> None:
    url = "rtsp://127.0.0.1:1/cam"
    cfg = make_cfg(
        tmp_path, source("udp-cam", url, "gate", transport="udp") + source("cam", url, "gate")
    )
    assert [s.rtsp_transport for s in cfg.sources] == ["udp", "tcp"]  # tcp by default
    assert source_plans(cfg, FAST)[0].settings.rtsp_transport == "udp"
    with pytest.raises(ConfigError) as info:
        make_cfg(tmp_path, source("cam", url, "gate", transport="UDP"))
    assert info.value.problems == [
        "sources[0].rtsp_transport: 'UDP' is not allowed (use one of: tcp, udp)"
    ]


async def test_rtsp_over_udp_records_from_a_server_that_offers_only_udp(
    tmp_path: Path, rtsp_clip: Path
) -> None:
    # Segments look the same whichever transport carried them: a server that
    # turns TCP away is what proves these came over UDP, not a silent fallback.
    port = free_port()
    url = f"rtsp://viewer:s3cret@127.0.0.1:{port}/cam"
    rig = open_rig(
        tmp_path,
        source("lab-cam", url, "lab", transport="udp")
        + source("gate-cam", url, "gate", transport="udp"),
    )
    cams = ("lab-cam", "gate-cam")
    with rtsp(port, rtsp_clip, protocols="udp"):
        async with running(rig):
            await until(
                lambda: all(len(rig.recordings(sid)) >= 2 for sid in cams),
                20,
                "two UDP segments per camera",
            )
            # Filed while running, so cut at a keyframe, not by the stop: full length.
            closed = {sid: rig.recordings(sid)[:2] for sid in cams}
            # The control, once the shared media runs (a rejected first client
            # leaves gst-rtsp-server answering the next SETUP with a 5XX): the
            # same server refuses a TCP client with a clear, one-line error.
            with pytest.raises(SourceError) as info:
                await asyncio.to_thread(
                    open_source, url, rtsp_transport="tcp", open_timeout=3.0, read_timeout=3.0
                )
            why = str(info.value)
            assert "cannot open" in why and "Protocol not supported" in why, why
            assert 'try rtsp_transport = "udp"' in why and "Errno" not in why, why
            assert "s3cret" not in why and "\n" not in why
            assert all(state(rig, sid) == State.RECORDING for sid in cams)
    for sid, audio in (("lab-cam", True), ("gate-cam", False)):
        a, b = closed[sid]
        # Consecutive segments abut; RTP delivers audio ahead of the cutting
        # keyframe, and that audio must land in the segment it plays in.
        assert a.end == b.start, (sid, a.end, b.start)
        if audio:
            audio_stays_inside(a, rig.path(a))
            audio_stays_inside(b, rig.path(b))
        for rec in (a, b):
            doc = ffprobe(rig.path(rec))
            assert kinds(doc) == (["video", "audio"] if audio else ["video"]), sid
            assert rec.tags.audio is audio
            assert first_video_packet_is_key(rig.path(rec))
            assert 1.5 < duration(doc) < 3.5, (sid, duration(doc))


# -- crash: SIGKILL mid-segment, adopted at the next start ---------------------------------------

DRIVER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from tests.support.recorder import open_rig, source

    async def main():
        tmp = Path(sys.argv[1])
        rig = open_rig(tmp, source("cam", "testsrc://?size=160x120&tone=1&gop=0.5", "lab",
                                   seconds=600))
        stop = asyncio.Event()
        task = asyncio.create_task(rig.manager.run(stop))
        while not rig.manager.snapshot() or rig.manager.snapshot()[0].state != "recording":
            await asyncio.sleep(0.05)
        print("RECORDING", flush=True)
        await task

    asyncio.run(main())
    """
)


def test_sigkill_leaves_a_readable_segment_that_start_up_adopts(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "RECORDING"
    time.sleep(3.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    root = tmp_path / "rec"
    left = list(find_partials(root))
    assert len(left) == 1
    # A crash leftover of someone else's making: garbage under our prefix.
    junk = write_garbage(left[0].with_name(PARTIAL_PREFIX + "junk.mkv"), 4096, seed=1)

    rig = open_rig(tmp_path, "")
    recs = recover_partials(root, rig.intake, utcnow())
    assert len(recs) == 1
    rec = recs[0]
    assert rig.catalog.recordings.get(rec.id) is not None
    seconds = (rec.end - rec.start).total_seconds()
    assert 1.0 < seconds < 3.5, seconds  # ~1 s may be lost with the open cluster
    doc = ffprobe(rig.path(rec))
    assert kinds(doc) == ["video", "audio"] and first_video_packet_is_key(rig.path(rec))
    assert rec.source_id == "cam" and rec.tags.audio
    assert not junk.exists() and any(rig.intake.settings.quarantine_dir.iterdir())
    assert not list(find_partials(root))


# -- an HTTP camera stream -------------------------------------------------------------------


async def test_http_stream_records_segments_without_audio_outside_audio_rooms(
    tmp_path: Path,
) -> None:
    """A camera that serves MPEG-TS over HTTP (chunked, paced like a live stream)."""
    from aiohttp import web

    clip = make_video(tmp_path / "cam.ts", container="ts", seconds=6.0, size=(320, 240),
                      audio="aac")  # fmt: skip
    data = clip.read_bytes()

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
        await resp.prepare(request)
        step = max(1, len(data) // 60)  # ~6 s of media in 60 chunks, 0.1 s apart
        for i in range(0, len(data), step):
            await resp.write(data[i : i + step])
            await asyncio.sleep(0.1)
        return resp

    app = web.Application()
    app.router.add_get("/live.ts", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        rig = open_rig(tmp_path, source("web", f"http://127.0.0.1:{port}/live.ts", "gate"))
        async with running(rig):
            await until(lambda: len(rig.recordings("web")) >= 2, 30, "two HTTP segments")
        recs = rig.recordings("web")
        for rec in recs:
            doc = ffprobe(rig.path(rec))
            assert kinds(doc) == ["video"], "no audio outside an audio room"
            assert first_video_packet_is_key(rig.path(rec))
            assert rec.tags.location == "gate" and rec.tags.audio is False
    finally:
        await runner.cleanup()
