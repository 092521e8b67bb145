"""Recorder and camera audio: G.711/AAC over real RTSP, dropped audio, mid-stream changes.

The RTSP server is GStreamer's (``tests/support/rtsp_server.py``) sending H.264 with
PCMU, PCMA or AAC; segments are checked with the ``ffprobe`` CLI; the outbox is
the real SQLite catalog's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import av
import pytest

from edge_agent.core.model import Recording
from edge_agent.core.paramsets import (
    ParamSets,
    changed,
    h264_sps_dimensions,
    merged,
    parameter_sets,
)
from edge_agent.core.segmenter import Action, decide
from edge_agent.media.audio import (
    OPUS_BITRATE_PER_CHANNEL,
    AudioAction,
    plan_audio,
    plan_for_stream,
)
from edge_agent.recording.recorder import State
from edge_agent.store.outbox_store import Outbox
from tests.support import rtsp_server
from tests.support.broker import free_port
from tests.support.mediagen import ffprobe, make_resolution_switch, make_video
from tests.support.recorder import kinds, open_rig, running, source, state, until

MKV = frozenset({"aac", "opus", "pcm_s16le", "mp3", "flac", "h264"})
ALL = frozenset({"pcm_mulaw", "pcm_alaw", "adpcm_g726", "aac_latm", "aac", "opus"})
ENCODERS = frozenset({"pcm_s16le", "libopus", "aac"})


# -- the plan (pure) ------------------------------------------------------------------------


def plan(codec: str, rate: int = 8000, channels: int = 1, **kw: frozenset[str]) -> object:
    args = {"container_codecs": MKV, "decodable": ALL, "encoders": ENCODERS, **kw}
    return plan_audio(codec, rate, channels, **args)  # type: ignore[arg-type]


def test_each_camera_codec_gets_a_plan_matroska_can_hold() -> None:
    for codec in ("pcm_mulaw", "pcm_alaw", "adpcm_g726"):
        p = plan(codec)
        assert p.action is AudioAction.PCM and p.conversion == f"{codec}->pcm_s16le", p  # type: ignore[attr-defined]
    aac = plan("aac", 48000)
    assert aac.action is AudioAction.COPY and aac.conversion is None  # type: ignore[attr-defined]
    assert plan("opus", 48000).action is AudioAction.COPY  # type: ignore[attr-defined]
    latm = plan("aac_latm", 44100, 2)
    assert latm.action is AudioAction.ENCODE  # type: ignore[attr-defined]
    assert latm.conversion == "aac_latm->opus"  # type: ignore[attr-defined]
    assert latm.sample_rate == 48000 and latm.bit_rate == 2 * OPUS_BITRATE_PER_CHANNEL  # type: ignore[attr-defined]
    # Without an Opus encoder, AAC; without any encoder or decoder, a reason.
    no_opus = plan("aac_latm", 16000, 1, encoders=frozenset({"aac"}))
    assert no_opus.conversion == "aac_latm->aac"  # type: ignore[attr-defined]
    gone = plan("pcm_mulaw", decodable=frozenset())
    assert gone.action is AudioAction.DROP and "no decoder" in gone.reason  # type: ignore[attr-defined]
    blind = plan("adpcm_g726", 8000, 0)
    assert blind.action is AudioAction.DROP and "channel" in blind.reason  # type: ignore[attr-defined]


def test_the_plan_matches_this_ffmpeg_build(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "c.mov", container="mov", seconds=0.5, size=(64, 48), audio="alaw")
    with av.open(str(clip)) as inp:
        p = plan_for_stream(inp.streams.audio[0], "matroska")
    assert p.action is AudioAction.PCM and p.conversion == "pcm_alaw->pcm_s16le"


# -- mid-stream parameter changes (pure) --------------------------------------------------------


def _keyframe(size: tuple[int, int]) -> bytes:
    enc = av.CodecContext.create("libx264", "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height = size
    enc.pix_fmt = "yuv420p"
    enc.time_base = av.time_base  # type: ignore[assignment]
    enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
    frame = av.VideoFrame(size[0], size[1], "yuv420p")
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.pts = 0
    return b"".join(bytes(p) for p in [*enc.encode(frame), *enc.encode(None)])


def test_in_band_parameter_sets_and_their_picture_size() -> None:
    small, big, odd = _keyframe((160, 120)), _keyframe((320, 240)), _keyframe((1918, 1078))
    ps_small, ps_big = parameter_sets("h264", small), parameter_sets("h264", big)
    assert ps_small is not None and ps_big is not None and ps_small != ps_big
    assert ps_small == parameter_sets("h264", small)
    assert ps_small.dimensions() == (160, 120) and ps_big.dimensions() == (320, 240)
    ps_odd = parameter_sets("h264", odd)
    assert ps_odd is not None and ps_odd.dimensions() == (1918, 1078)  # frame cropping
    assert parameter_sets("h264", b"\x00\x00\x01\x65" + bytes(64)) is None  # a slice only
    assert parameter_sets("aac", small) is None
    assert changed(ps_small, ps_big) and not changed(ps_small, ps_small)
    # A keyframe that repeats only its PPS (or nothing) is no change.
    sps_only = ParamSets("h264", ps_small.nals[:1])
    assert not changed(ps_small, sps_only) and not changed(ps_small, None)
    assert changed(ps_small, ParamSets("h264", ps_big.nals[:1]))
    assert merged(ps_small, ParamSets("h264", ps_big.nals[:1])).nals == (
        ps_small.nals[1],
        ps_big.nals[0],
    )
    with pytest.raises(IndexError):
        h264_sps_dimensions(b"\x67\x42")


def test_a_parameter_change_cuts_at_the_keyframe_only() -> None:
    base = {"ts": 10.0, "last_ts": 9.96, "segment_start": 9.0, "segment_seconds": 60}
    key = decide(is_video=True, is_keyframe=True, params_changed=True, **base)  # type: ignore[arg-type]
    assert key.action is Action.CUT and key.reason == "video parameters changed"
    other = decide(is_video=True, is_keyframe=False, params_changed=True, **base)  # type: ignore[arg-type]
    assert other.action is Action.WRITE


# -- audio that cannot be recorded never stops video ------------------------------------------


def _g726_without_parameters(path: Path) -> Path:
    """H.264 + G.726 in NUT, which loses G.726's channel count: undecodable audio."""
    with av.open(str(path), "w", format="nut") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
        v.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "25"}
        a = out.add_stream("g726", rate=8000)
        a.layout = "mono"
        a.bit_rate = 32000
        for i in range(100):
            frame = av.VideoFrame(160, 120, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([i % 256]) * plane.buffer_size)
            frame.pts = i
            out.mux(v.encode(frame))
            tone = av.AudioFrame(format="s16", layout="mono", samples=320)
            tone.planes[0].update(bytes(640))
            tone.sample_rate, tone.pts = 8000, i * 320
            out.mux(a.encode(tone))
        out.mux(v.encode(None))
        out.mux(a.encode(None))
    return path


async def test_undecodable_audio_records_video_degraded_with_an_alarm(tmp_path: Path) -> None:
    clip = _g726_without_parameters(tmp_path / "cam.nut")
    rig = open_rig(tmp_path, source("cam", f"file://{clip}", "lab", seconds=2))
    async with running(rig):
        await until(lambda: len(rig.recordings()) >= 2, 15, "two segments despite the audio")
        snap = rig.manager.snapshot()[0]
        assert snap.state == State.DEGRADED and not snap.audio, snap
        assert snap.reason and "recording without audio" in snap.reason
        assert "adpcm_g726" in snap.reason, snap.reason
    for rec in rig.recordings():
        doc = ffprobe(rig.path(rec))
        assert kinds(doc) == ["video"] and rec.tags.audio is False
        tags = {k.lower(): v for k, v in doc["format"]["tags"].items()}
        assert "adpcm_g726" in tags["edge_agent.audio_dropped"]
    alarms = [e for e in Outbox(rig.catalog).peek(100) if e.type == "alarm.audio_dropped"]
    assert len(alarms) == 1, "one alarm per cause"
    data = alarms[0].payload
    assert data["source_id"] == "cam" and data["codec"] == "adpcm_g726"
    assert "adpcm_g726" in str(data["reason"]) and "docs/audio.md" in str(data["fix"])


async def test_g711_from_a_file_is_recorded_as_pcm_with_a_tag(tmp_path: Path) -> None:
    # The camera: G.711 in an audio room used to crash every session.
    clip = make_video(tmp_path / "cam.mov", container="mov", seconds=3, size=(160, 120),
                      audio="alaw")  # fmt: skip
    rig = open_rig(tmp_path, source("cam", f"file://{clip}", "lab", seconds=2))
    async with running(rig):
        await until(lambda: len(rig.recordings()) >= 1, 10, "a segment")
        assert state(rig, "cam") == State.RECORDING and rig.manager.snapshot()[0].audio
    rec = rig.recordings()[0]
    doc = ffprobe(rig.path(rec))
    assert [s["codec_name"] for s in doc["streams"]] == ["h264", "pcm_s16le"]
    tags = {k.lower(): v for k, v in doc["format"]["tags"].items()}
    assert tags["edge_agent.audio_conversion"] == "pcm_alaw->pcm_s16le" and rec.tags.audio


# -- a real RTSP server: H.264 + PCMU / PCMA / AAC ----------------------------------------------


def packets(path: Path, stream: str) -> list[tuple[float, float]]:
    """(start, duration) seconds of one stream's packets, as ffprobe reads them."""
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-select_streams", stream),
            *("-show_entries", "packet=pts_time,duration_time", "-of", "json"),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        (float(p["pts_time"]), float(p.get("duration_time", 0.0)))
        for p in json.loads(out)["packets"]
    ]


def check_sync_at_cut(
    a: tuple[Recording, Path], b: tuple[Recording, Path], slack: timedelta = timedelta(0)
) -> None:
    """Audio ends where the segment ends and the next one's starts at zero, to one frame."""
    (ra, pa), (rb, pb) = a, b
    assert abs(ra.end - rb.start) <= slack, (ra.end, rb.start)
    length = (ra.end - ra.start).total_seconds()
    audio_a, audio_b = packets(pa, "a:0"), packets(pb, "a:0")
    frame = max(d for _, d in audio_a + audio_b)
    assert 0 < frame < 0.1, frame
    end_a = max(t + d for t, d in audio_a)
    assert abs(end_a - length) <= frame + 0.001, (pa.name, end_a, length, frame)
    assert 0 <= min(t for t, _ in audio_b) <= frame + 0.001, (pb.name, audio_b[:2])


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    why = rtsp_server.available()
    if why is not None:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("rtsp-audio")
    size = (160, 120)
    return {
        "aac": make_video(folder / "aac.mkv", container="mkv", seconds=40, size=size, audio="aac"),
        "pcm": make_video(folder / "pcm.mkv", container="mkv", seconds=40, size=size, audio="pcm"),
    }


@pytest.fixture
def servers(clips: dict[str, Path]) -> Iterator[dict[str, int]]:
    ports: dict[str, int] = {}
    with ExitStack() as stack:
        for codec in ("pcmu", "pcma", "aac"):
            port = free_port()
            clip = clips["aac" if codec == "aac" else "pcm"]
            proc = rtsp_server.start(port, clip, audio=codec)
            stack.callback(proc.wait, 5)
            stack.callback(proc.kill)
            ports[codec] = port
        yield ports


EXPECT = {
    "pcmu": ("pcm_s16le", "pcm_mulaw"),
    "pcma": ("pcm_s16le", "pcm_alaw"),
    "aac": ("aac", None),
}


async def test_rtsp_g711_and_aac_in_an_audio_room_and_outside(
    tmp_path: Path, servers: dict[str, int]
) -> None:
    cfg = ""
    for codec, port in servers.items():
        url = f"rtsp://127.0.0.1:{port}/cam"
        cfg += source(f"{codec}-lab", url, "lab") + source(f"{codec}-gate", url, "gate")
    rig = open_rig(tmp_path, cfg)
    ids = [f"{c}-{room}" for c in servers for room in ("lab", "gate")]
    async with running(rig):
        await until(
            lambda: all(len(rig.recordings(i)) >= 3 for i in ids), 30, "three segments each"
        )
        snap = {s.id: s for s in rig.manager.snapshot()}
        closed = {i: rig.recordings(i)[:3] for i in ids}
    for codec in servers:
        assert snap[f"{codec}-lab"].state == State.RECORDING and snap[f"{codec}-lab"].audio
        assert snap[f"{codec}-gate"].state == State.RECORDING and not snap[f"{codec}-gate"].audio
        want, source_codec = EXPECT[codec]
        lab = closed[f"{codec}-lab"]
        for rec in lab:
            path = rig.path(rec)
            doc = ffprobe(path)
            assert [s["codec_name"] for s in doc["streams"]] == ["h264", want], codec
            assert rec.tags.audio
            assert 1.5 < (rec.end - rec.start).total_seconds() < 2.5, (codec, rec.end - rec.start)
            assert abs(float(doc["format"]["duration"]) - 2.0) < 0.3, (codec, doc["format"])
            tags = {k.lower(): v for k, v in doc["format"]["tags"].items()}
            conv = f"{source_codec}->pcm_s16le" if source_codec else None
            assert tags.get("edge_agent.audio_conversion") == conv, (codec, tags)
        for a, b in itertools.pairwise(lab):
            check_sync_at_cut((a, rig.path(a)), (b, rig.path(b)))
        for rec in closed[f"{codec}-gate"]:
            assert kinds(ffprobe(rig.path(rec))) == ["video"] and not rec.tags.audio, codec


# -- a camera whose resolution changes mid-stream -------------------------------------------------


def frame_sizes(path: Path) -> set[str]:
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-select_streams", "v:0"),
            *("-show_entries", "frame=width,height", "-of", "csv=p=0"),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.strip(",") for line in out.split() if line.strip(",")}


async def test_rtsp_resolution_switch_starts_a_segment_with_the_new_size(tmp_path: Path) -> None:
    why = rtsp_server.available()
    if why is not None:
        pytest.skip(why)
    clip = make_resolution_switch(tmp_path / "switch.ts", seconds_each=5.0)
    port = free_port()
    proc = rtsp_server.start(port, clip, audio="none")
    try:
        rig = open_rig(tmp_path, source("cam", f"rtsp://127.0.0.1:{port}/cam", "gate", seconds=3))
        async with running(rig):
            await until(
                lambda: any("320,240" in frame_sizes(rig.path(r)) for r in rig.recordings()),
                25,
                "a segment after the switch",
            )
            await asyncio.sleep(0.5)
    finally:
        proc.kill()
        proc.wait(5)
    seen: list[str] = []
    for rec in rig.recordings():
        path = rig.path(rec)
        sizes = frame_sizes(path)
        assert len(sizes) == 1, (path.name, sizes)  # one resolution per segment
        (size,) = sizes
        stream = ffprobe(path)["streams"][0]
        assert f"{stream['width']},{stream['height']}" == size, "the header matches the frames"
        seen.append(size)
    assert seen[0] == "160,120" and seen[-1] == "320,240", seen
    assert seen == sorted(seen, key=lambda s: s != "160,120"), "one switch, in order"


# -- a camera whose timestamps jump back (reboot, RTCP reset) ----------------------------------


def video_steps(path: Path) -> list[float]:
    times = [t for t, _ in packets(path, "v:0")]
    return [b - a for a, b in itertools.pairwise(sorted(times))]


async def test_timestamp_jump_starts_a_new_segment_not_a_broken_one(tmp_path: Path) -> None:
    # Two camera runs back to back in one stream: the second restarts its clock at zero.
    one = make_video(tmp_path / "a.ts", container="ts", seconds=3, size=(160, 120), audio="aac")
    two = make_video(tmp_path / "b.ts", container="ts", seconds=3, size=(160, 120), audio="aac")
    joined = tmp_path / "rebooted.ts"
    joined.write_bytes(one.read_bytes() + two.read_bytes())
    rig = open_rig(tmp_path, source("cam", f"file://{joined}", "lab", seconds=60))
    async with running(rig):
        await until(lambda: len(rig.recordings()) >= 1, 15, "the segment before the jump")
        await asyncio.sleep(1.0)
    recs = rig.recordings()
    assert len(recs) >= 2, "the jump closed the first segment"
    for rec in recs:
        path = rig.path(rec)
        doc = ffprobe(path)
        assert kinds(doc) == ["video", "audio"]
        assert max(video_steps(path), default=0.0) < 0.1, (path.name, "a jump inside a segment")
    first = recs[0]
    assert 2.5 < (first.end - first.start).total_seconds() < 3.5, first.end - first.start


async def test_latm_audio_is_encoded_to_opus_in_sync(tmp_path: Path) -> None:
    # DVB-style MPEG-TS with AAC in LATM: no container we write holds LATM.
    from tests.support.audioclip import camera_file

    clip = camera_file(tmp_path / "latm.ts", "mpegts", "aac", 48000, mpegts_flags="latm")
    rig = open_rig(tmp_path, source("cam", f"file://{clip}", "lab", seconds=2))
    async with running(rig):
        await until(lambda: len(rig.recordings()) >= 3, 15, "three segments")
    recs = rig.recordings()[:3]
    for rec in recs:
        doc = ffprobe(rig.path(rec))
        assert [s["codec_name"] for s in doc["streams"]] == ["h264", "opus"]
        tags = {k.lower(): v for k, v in doc["format"]["tags"].items()}
        assert tags["edge_agent.audio_conversion"] == "aac_latm->opus"
    for a, b in itertools.pairwise(recs):
        # The file loops: its offsets are rounded to the microsecond.
        check_sync_at_cut((a, rig.path(a)), (b, rig.path(b)), timedelta(microseconds=1))
