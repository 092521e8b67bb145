"""The ``testsrc://`` virtual camera: url parameters, real encoded packets, real-time pacing."""

from __future__ import annotations

import threading
import time

import pytest

from edge_agent.media.testsrc import TestSrcError, TestSrcParams, open_testsrc, parse_testsrc_url


def test_defaults_and_spec_example() -> None:
    assert parse_testsrc_url("testsrc://") == TestSrcParams()
    p = parse_testsrc_url("testsrc://?size=1280x720&rate=25&bitrate=2M&tone=1")
    assert (p.width, p.height, p.rate, p.bitrate, p.tone) == (1280, 720, 25, 2_000_000, True)
    assert parse_testsrc_url("testsrc://?bitrate=500k&gop=1").bitrate == 500_000


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("testsrc://?size=big", "size='big'"),
        ("testsrc://?size=321x240", "size='321x240'"),
        ("testsrc://?rate=0", "rate='0'"),
        ("testsrc://?bitrate=lots", "bitrate='lots'"),
        ("testsrc://?tone=yes", "tone='yes'"),
        ("testsrc://?colour=red", "'colour'"),
    ],
)
def test_bad_parameters_name_the_value_and_the_fix(url: str, names: str) -> None:
    with pytest.raises(TestSrcError) as exc:
        parse_testsrc_url(url)
    assert names in str(exc.value)
    assert "(" in str(exc.value)  # the fix or the known names


def test_packets_are_real_h264_and_aac_paced_to_real_time() -> None:
    src = open_testsrc("testsrc://?size=160x120&rate=25&bitrate=200k&tone=1&gop=0.4")
    assert src.video.codec_context.name == "libx264"  # stream copy keeps the H.264 codec id
    assert src.video.codec_context.extradata  # global header, like a demuxed camera
    assert src.audio is not None and src.audio.codec_context.name == "aac"
    stop = threading.Event()
    video: list[tuple[int, bool]] = []
    audio = 0
    t0 = time.monotonic()
    try:
        for packet in src.packets(stop):
            if packet.stream.type == "video":
                video.append((int(packet.pts or 0), packet.is_keyframe))
            else:
                audio += 1
            if len(video) == 25:
                break
    finally:
        src.close()
    elapsed = time.monotonic() - t0
    assert 0.8 < elapsed < 1.6, elapsed  # 25 frames at 25 fps take about a second
    assert video[0][1], "a camera stream starts with a keyframe"
    keyframes = [pts for pts, key in video if key]
    assert keyframes[:3] == [0, 10, 20]  # gop=0.4 s at 25 fps
    assert audio >= 35  # 48 kHz AAC: ~47 frames per second, minus encoder delay


def test_stop_ends_the_stream_promptly() -> None:
    src = open_testsrc("testsrc://?size=64x48&rate=2")
    stop = threading.Event()
    it = src.packets(stop)
    next(it)
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    rest = list(it)
    src.close()
    assert time.monotonic() - t0 < 0.6
    assert len(rest) <= 1
