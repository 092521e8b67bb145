"""Reading a file once: the quick open, the index-based scan and the remux's own scan.

An adoption opens an MP4 without FFmpeg's packet probe and takes its packet
scan from the index, measuring it during the remux (docs/design/architecture.md,
"Adoption"). These check, on real files, that nothing an adoption writes or
decides changes by it.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import av
import pytest

from edge_agent.media import media, media_probe
from edge_agent.media.packet_scan import predict_scan
from tests.support.mediagen import make_video, truncate

VARIANTS = [
    (c, a, b)
    for c, a, b in itertools.product(["mp4", "mov"], [None, "aac", "opus", "pcm"], [0, 2])
    if not (c == "mov" and a == "opus")  # QuickTime takes no Opus
]


def _full_open(monkeypatch: pytest.MonkeyPatch) -> None:
    real = media_probe._open
    monkeypatch.setattr(media_probe, "_open", lambda path, quick: real(path, False))


@pytest.mark.parametrize(("container", "audio", "bframes"), VARIANTS)
def test_quick_open_changes_no_byte_of_a_remux(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, container: str, audio: str | None, bframes: int
) -> None:
    src = make_video(
        tmp_path / f"in.{container}",
        container=container,
        audio=audio,
        bframes=bframes,  # type: ignore[arg-type]
    )
    made: list[tuple[str, media.ProbeResult]] = []
    for quick in (True, False):
        if not quick:
            _full_open(monkeypatch)
        for drop in (True, False):
            dst = tmp_path / f"out-{quick}-{drop}.{container}"
            media.remux(src, dst, tags={"edge_agent.location": "gate"}, drop_audio=drop)
            made.append((hashlib.sha256(dst.read_bytes()).hexdigest(), media.probe(src)))
    assert made[0] == made[2] and made[1] == made[3]


def test_containers_without_a_full_header_get_the_full_probe(tmp_path: Path) -> None:
    for container in ("ts", "mkv"):
        src = make_video(tmp_path / f"in.{container}", container=container, audio="aac")
        with media_probe.open_input(src) as quick, av.open(str(src)) as full:
            # Same demuxer state as a plain open: every parameter the probe found.
            for a, b in zip(quick.streams, full.streams, strict=True):
                assert a.codec_context.name == b.codec_context.name
                if a.type == "video":
                    assert a.codec_context.pix_fmt == b.codec_context.pix_fmt is not None


@pytest.mark.parametrize(("container", "audio", "bframes"), VARIANTS)
@pytest.mark.parametrize("seconds", [1.0, 2.5])
def test_index_tells_what_the_packets_say(
    tmp_path: Path, container: str, audio: str | None, bframes: int, seconds: float
) -> None:
    src = make_video(
        tmp_path / f"in.{container}", container=container, audio=audio, bframes=bframes,  # type: ignore[arg-type]
        seconds=seconds,
    )  # fmt: skip
    with media_probe.open_input(src) as c:
        told = predict_scan(c)
        count = media_probe.indexed_count(c)
    read = media.scan_packets(src)
    assert told is not None and not told.measured and read.measured
    assert (told.video_packets, told.seconds) == (read.video_packets, read.seconds)
    assert count == read.video_packets


def test_remux_scans_what_a_scan_reads(tmp_path: Path) -> None:
    for container, drop in itertools.product(("mp4", "mkv", "ts"), (True, False)):
        src = make_video(tmp_path / f"in.{container}", container=container, audio="aac")
        made = media.remux(
            src, tmp_path / f"o-{container}-{drop}", tags={}, drop_audio=drop, scan=True
        )
        assert made.scan == media.scan_packets(src), (container, drop)
        assert media.remux(src, tmp_path / "plain", tags={}, drop_audio=drop).scan is None


@pytest.mark.parametrize("keep", [0.999, 0.9, 0.6])
def test_audio_left_out_of_a_cut_file_is_still_measured(tmp_path: Path, keep: float) -> None:
    # Audio being removed is not demuxed when the index shows all its bytes are
    # there; a file cut inside its data must be read as before.
    whole = make_video(tmp_path / "whole.mp4", seconds=3, audio="aac")
    src = tmp_path / "cut.mp4"
    with av.open(str(whole)) as i, av.open(str(src), "w", options={"movflags": "faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for pkt in i.demux():
            if pkt.dts is not None:
                pkt.stream = streams[pkt.stream.index]
                o.mux(pkt)
    truncate(src, keep)
    made = media.remux(src, tmp_path / "out.mp4", tags={}, drop_audio=True, scan=True)
    assert made.scan == media.scan_packets(src)


def test_no_index_to_tell_from(tmp_path: Path) -> None:
    for container in ("mkv", "ts"):
        src = make_video(tmp_path / f"in.{container}", container=container)
        with media_probe.open_input(src) as c:
            assert predict_scan(c) is None
            assert media_probe.indexed_count(c) is None
        _probe, scan = media.probe_and_scan(src, predict=True)
        assert scan.measured
