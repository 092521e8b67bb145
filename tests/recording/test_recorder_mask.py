"""Privacy masks at recording time: the masked area is never stored nor shown live.

Real sources (``testsrc://`` and a real RTSP server, tests/support/rtsp_server.py),
real recordings decoded back with PyAV, the live view read from the real
PacketHub the recorder publishes into (docs/anonymization.md, "Masks at
recording time").

"Uniform" is measured on the decoded pictures: every luma and chroma sample
inside the polygon, away from its edge by one 16-pixel macroblock (where the
encoder's blocks straddle the edge and may ring), lies within
:data:`TOLERANCE` of the fill; the same area of the unmasked source is not
uniform (the test pattern moves through it).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import av
import pytest

from edge_agent.app.settings import source_plans
from edge_agent.config.profiles import load_profile
from edge_agent.recording.mask import FILL, key_interval, luma_spans, plane_spans, subsampled
from edge_agent.recording.packethub import HubPacket, PacketHub
from tests.recording.test_recorder import duration, first_video_packet_is_key, rtsp
from tests.support import rtsp_server
from tests.support.broker import free_port
from tests.support.mediagen import ffprobe, make_resolution_switch, make_video
from tests.support.recorder import FAST, open_rig, running, source, until

# The left half of the picture's middle band: a window, a pavement.
POLYGON = ((0.1, 0.2), (0.55, 0.2), (0.55, 0.8), (0.1, 0.8))
MASKS = "privacy_masks = [[[0.1, 0.2], [0.55, 0.2], [0.55, 0.8], [0.1, 0.8]]]\n"
TOLERANCE = 3  # of 255: what lossy coding leaves of a flat area
SIZE = (320, 240)
TESTSRC = f"testsrc://?size={SIZE[0]}x{SIZE[1]}&rate=25&bitrate=400k&gop=3"


def masked_source(sid: str, url: str, location: str, *, seconds: int = 2) -> str:
    return source(sid, url, location, seconds=seconds) + MASKS + "mask_at_recording = true\n"


def inner_box(width: int, height: int, margin: int = 16) -> tuple[int, int, int, int]:
    """The polygon's pixels (a rectangle here) less one macroblock at each edge."""
    (x0, y0), (x1, y1) = POLYGON[0], POLYGON[2]
    return (
        round(x0 * width) + margin,
        round(y0 * height) + margin,
        round(x1 * width) - margin,
        round(y1 * height) - margin,
    )


def spread(frame: av.VideoFrame) -> int:
    """Largest distance from the fill of any sample inside the polygon (all three planes)."""
    yuv = frame.reformat(format="yuv420p")
    x0, y0, x1, y1 = inner_box(yuv.width, yuv.height)
    worst = 0
    for plane_no, plane in enumerate(yuv.planes):
        sub = 0 if plane_no == 0 else 1
        data, stride = bytes(plane), plane.line_size
        for y in range(y0 >> sub, y1 >> sub):
            row = data[y * stride + (x0 >> sub) : y * stride + (x1 >> sub)]
            worst = max(worst, max(abs(v - FILL[plane_no]) for v in row))
    return worst


def decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def decode_hub(packets: list[HubPacket]) -> list[av.VideoFrame]:
    codec = av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    for p in packets:
        frames.extend(codec.decode(av.Packet(p.data)))  # type: ignore[arg-type]
    frames.extend(codec.decode(None))  # type: ignore[arg-type]
    return frames


# -- the fill's geometry (pure) ------------------------------------------------------------


def test_spans_cover_the_polygon_and_chroma_covers_every_masked_luma_pixel() -> None:
    rows = luma_spans([POLYGON], 320, 240)
    assert rows[47] == [] and rows[48] == [(32, 176)] and rows[191] == [(32, 176)]
    assert rows[192] == []
    # A triangle: spans shrink row by row, rounded outwards.
    tri = luma_spans([((0.0, 0.0), (1.0, 1.0), (0.0, 1.0))], 10, 10)
    assert tri[0] == [(0, 1)] and tri[9] == [(0, 10)]
    assert all(b - a >= y for y, ((a, b),) in enumerate(tri))
    # Two overlapping masks merge; the whole frame is the whole frame.
    both = luma_spans([POLYGON, ((0.5, 0.5), (0.9, 0.5), (0.9, 0.9), (0.5, 0.9))], 320, 240)
    assert both[150] == [(32, 288)]
    whole = luma_spans([((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))], 7, 5)
    assert whole == [[(0, 7)]] * 5
    # An odd-sized box still has its chroma sample masked on both sides.
    odd = [[], [(3, 6)], [], []]
    assert subsampled(odd, 1, 1) == [[(1, 3)], []]
    assert plane_spans(odd, [8, 4, 4]) == [[(11, 14)], [(1, 3)], [(1, 3)]]


@pytest.mark.parametrize("seconds", [2, 3, 5, 10, 60, 300, 7])
def test_the_keyframe_step_divides_the_segment(seconds: int) -> None:
    step = key_interval(seconds)
    assert step <= 2.0
    assert abs(seconds / step - round(seconds / step)) < 1e-9


def test_the_plan_carries_the_masks_and_the_profiles_encoder(tmp_path: Path) -> None:
    rig = open_rig(
        tmp_path,
        masked_source("masked", TESTSRC, "gate") + source("plain", TESTSRC, "gate"),
    )
    plans = {p.settings.source_id: p.settings for p in source_plans(rig.cfg, FAST)}
    mask = plans["masked"].mask
    assert plans["plain"].mask is None
    assert mask is not None and mask.polygons == (POLYGON,)
    profile = load_profile("generic-linux")
    assert mask.preset == profile.mask_preset
    assert mask.bitrate == profile.mask_bitrate_kbps * 1000


# -- recording a masked testsrc ------------------------------------------------------------


async def test_the_masked_area_is_uniform_in_every_stored_frame_and_live(tmp_path: Path) -> None:
    rig = open_rig(
        tmp_path, masked_source("masked", TESTSRC, "gate") + source("plain", TESTSRC, "gate")
    )
    hub = PacketHub()
    rig.manager.attach_hub(hub)
    live: list[HubPacket] = []
    async with running(rig):
        viewer = hub.subscribe("masked")
        while len(live) < 60:
            live.append(await asyncio.wait_for(viewer.video.get(), 5))
        viewer.close()
        await until(lambda: len(rig.recordings("masked")) >= 3, 15, "three masked segments")
    # Live view: what the hub publishes decodes to the masked picture.
    assert live[0].keyframe and live[0].info.codec == "h264"
    pictures = decode_hub(live)
    assert len(pictures) >= 55
    assert max(spread(f) for f in pictures) <= TOLERANCE
    # Stored: every frame of every segment.
    recs = rig.recordings("masked")
    total = 0
    for rec in recs:
        frames = decoded(rig.path(rec))
        total += len(frames)
        assert (frames[0].width, frames[0].height) == SIZE
        assert max(spread(f) for f in frames) <= TOLERANCE, rec.path
    assert total >= 100
    # The control: the same area of the unmasked source is not uniform.
    plain = decoded(rig.path(rig.recordings("plain")[0]))
    assert max(spread(f) for f in plain) > 40
    # Timing as for stream copy: 2 s segments cut at keyframes that abut,
    # although the camera's own GOP (3 s) does not divide them.
    for rec in recs[:-1]:
        doc = ffprobe(rig.path(rec))
        assert abs(duration(doc) - 2.0) < 0.1, duration(doc)
        assert abs((rec.end - rec.start).total_seconds() - 2.0) < 0.05
        assert first_video_packet_is_key(rig.path(rec))
    for a, b in itertools.pairwise(recs):
        assert a.end == b.start, "segments abut"
    plain_recs = rig.recordings("plain")
    assert plain_recs and all((r.end - r.start).total_seconds() > 2.5 for r in plain_recs[:-1]), (
        "stream copy waits for the camera's keyframe"
    )


# -- a real RTSP camera ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rtsp_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = rtsp_server.available()
    if why is not None:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("rtsp-mask")
    return make_video(folder / "clip.mkv", container="mkv", seconds=20, size=SIZE, audio="aac")


async def test_a_masked_rtsp_camera_records_masked_segments_with_its_audio(
    tmp_path: Path, rtsp_clip: Path
) -> None:
    port = free_port()
    url = f"rtsp://viewer:s3cret@127.0.0.1:{port}/cam"
    rig = open_rig(tmp_path, masked_source("ipcam", url, "lab"))
    with rtsp(port, rtsp_clip):
        async with running(rig):
            await until(lambda: len(rig.recordings()) >= 3, 20, "three RTSP segments")
    recs = rig.recordings()
    for rec in recs:
        frames = decoded(rig.path(rec))
        assert frames and max(spread(f) for f in frames) <= TOLERANCE, rec.path
    for rec in recs[:-1]:
        doc = ffprobe(rig.path(rec))
        kinds = [s["codec_type"] for s in doc["streams"]]  # type: ignore[union-attr, index]
        assert kinds == ["video", "audio"]  # an audio room: audio passes through as before
        assert abs(duration(doc) - 2.0) < 0.15, duration(doc)
        assert first_video_packet_is_key(rig.path(rec))


async def test_a_camera_that_changes_resolution_stays_masked_at_the_sessions_size(
    tmp_path: Path,
) -> None:
    # Stream copy starts a segment with the new size; masking scales the new
    # pictures to the session's size instead (after the fill), so the segments
    # go on unbroken and the polygon stays filled.
    why = rtsp_server.available()
    if why is not None:
        pytest.skip(why)
    clip = make_resolution_switch(tmp_path / "switch.ts", seconds_each=4.0)
    port = free_port()
    rig = open_rig(tmp_path, masked_source("cam", f"rtsp://127.0.0.1:{port}/cam", "gate"))
    proc = rtsp_server.start(port, clip, audio="none")
    try:
        async with running(rig):
            # 4 s at 160x120, then 320x240: the third 2 s segment is past the switch.
            await until(lambda: len(rig.recordings()) >= 3, 20, "segments past the switch")
    finally:
        proc.kill()
        proc.wait(5)
    recs = rig.recordings()
    for rec in recs:
        frames = decoded(rig.path(rec))
        assert {(f.width, f.height) for f in frames} == {(160, 120)}
        assert max(spread(f) for f in frames) <= TOLERANCE, rec.path
    for rec in recs[:-1]:
        assert abs(duration(ffprobe(rig.path(rec))) - 2.0) < 0.15
    assert sum((r.end - r.start).total_seconds() for r in recs) > 5.0
