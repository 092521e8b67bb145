"""Generate small, real media files with PyAV for tests and benchmarks.

Every helper encodes genuine H.264 (libx264, ultrafast) and, when asked, an
AAC or Opus tone, so that demuxers, muxers and the ``ffprobe`` CLI see the same
files a camera or NVR would drop. Frames are small and synthetic, which keeps a
few seconds of media well under a second of CPU.

Import as ``from tests.support.mediagen import make_video``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from array import array
from collections.abc import Mapping
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.stream import VideoStream

Container = Literal["mp4", "mkv", "ts", "fmp4", "mov"]
AudioCodec = Literal["aac", "opus", "alaw", "pcm"]

# Muxer name and options per container kind. ``use_metadata_tags`` makes the MP4
# muxer keep arbitrary keys; without it only a fixed set of iTunes keys survives.
_MUXERS: dict[str, tuple[str, dict[str, str]]] = {
    "mp4": ("mp4", {"movflags": "use_metadata_tags"}),
    "fmp4": (
        "mp4",
        {"movflags": "frag_keyframe+empty_moov+default_base_moof+use_metadata_tags"},
    ),
    "mkv": ("matroska", {}),
    "ts": ("mpegts", {}),
    # QuickTime: what many IP cameras write, and the only ISO-BMFF flavour
    # that takes G.711 (``alaw``) audio.
    "mov": ("mov", {"movflags": "use_metadata_tags"}),
}

_AUDIO_RATE = 48000
_TONE_HZ = 440.0


def _iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _add_video(
    out: OutputContainer, fps: int, size: tuple[int, int], bit_rate: int | None, bframes: int
) -> VideoStream:
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    # A 2 s GOP like a camera; ultrafast + zerolatency keeps generation cheap
    # and avoids B-frames (pts == dts) unless asked for: some cameras send them,
    # and then pts and dts differ, which a remux must preserve.
    opts = {"preset": "ultrafast", "g": str(2 * fps)}
    if bframes:
        opts["x264-params"] = f"bframes={bframes}:b-adapt=0"
    else:
        opts["tune"] = "zerolatency"
    if bit_rate is None:
        opts["crf"] = "30"
    else:
        stream.bit_rate = bit_rate
    stream.options = dict(opts)
    return stream


def _add_audio(out: OutputContainer, codec: AudioCodec) -> AudioStream:
    name = {"aac": "aac", "opus": "libopus", "alaw": "pcm_alaw", "pcm": "pcm_s16le"}[codec]
    stream = out.add_stream(name, rate=8000 if codec == "alaw" else _AUDIO_RATE)
    assert isinstance(stream, AudioStream)
    stream.layout = "mono"
    return stream


def _video_frame(index: int, size: tuple[int, int]) -> av.VideoFrame:
    """A moving diagonal gradient: cheap to build, non-trivial to encode."""
    width, height = size
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane_no, plane in enumerate(frame.planes):
        pw = width if plane_no == 0 else (width + 1) // 2
        ph = height if plane_no == 0 else (height + 1) // 2
        stride = plane.line_size
        shift = index * (3 if plane_no == 0 else 1) + plane_no * 64
        row_pattern = bytes((x + shift) & 0xFF for x in range(pw + ph))
        buf = bytearray(stride * ph)
        for y in range(ph):
            buf[y * stride : y * stride + pw] = row_pattern[y : y + pw]
        plane.update(bytes(buf))
    frame.pts = index
    return frame


def _audio_frame(first_sample: int, samples: int) -> av.AudioFrame:
    pcm = array(
        "h",
        (
            int(8000 * math.sin(2 * math.pi * _TONE_HZ * (first_sample + i) / _AUDIO_RATE))
            for i in range(samples)
        ),
    )
    frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
    frame.planes[0].update(pcm.tobytes())
    frame.sample_rate = _AUDIO_RATE
    frame.pts = first_sample
    frame.time_base = Fraction(1, _AUDIO_RATE)
    return frame


def make_video(
    path: Path | str,
    *,
    container: Container = "mp4",
    seconds: float = 2.0,
    fps: int = 25,
    size: tuple[int, int] = (320, 240),
    audio: AudioCodec | None = None,
    creation_time: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
    bit_rate: int | None = None,
    extra_audio_streams: int = 0,
    bframes: int = 0,
) -> Path:
    """Encode ``seconds`` of H.264 (plus an optional tone) into ``path``.

    ``container`` picks the muxer: ``mp4`` (moov at the end, like most NVRs),
    ``fmp4`` (fragmented, survives being cut off), ``mkv``, ``ts`` or ``mov``
    (QuickTime; needed for ``audio="alaw"``, G.711 as many IP cameras send).
    ``creation_time`` and ``metadata`` go into the container's global tags.
    ``extra_audio_streams`` adds more tone tracks (for stream-count limits);
    ``bframes`` > 0 makes the encoder reorder frames (pts != dts).
    """
    path = Path(path)
    muxer, options = _MUXERS[container]
    tags: dict[str, str] = dict(metadata or {})
    if creation_time is not None:
        tags["creation_time"] = _iso(creation_time)
    n_frames = max(1, round(seconds * fps))
    with av.open(str(path), "w", format=muxer, container_options=options) as out:
        out.metadata.update(tags)
        vstream = _add_video(out, fps, size, bit_rate, bframes)
        astreams: list[AudioStream] = []
        if audio is not None:
            astreams.append(_add_audio(out, audio))
        astreams.extend(_add_audio(out, audio or "aac") for _ in range(extra_audio_streams))
        chunk = 960  # 20 ms; PyAV re-blocks to each encoder's frame size
        audio_pos = 0
        for i in range(n_frames):
            out.mux(vstream.encode(_video_frame(i, size)))
            # Keep audio level with video so the muxer interleaves as it goes.
            until = (i + 1) * _AUDIO_RATE // fps
            while astreams and audio_pos < until:
                for astream in astreams:
                    out.mux(astream.encode(_audio_frame(audio_pos, chunk)))
                audio_pos += chunk
        out.mux(vstream.encode(None))
        for astream in astreams:
            out.mux(astream.encode(None))
    return path


def make_resolution_switch(
    path: Path | str,
    sizes: tuple[tuple[int, int], ...] = ((160, 120), (320, 240)),
    *,
    seconds_each: float = 6.0,
    fps: int = 25,
) -> Path:
    """MPEG-TS H.264 whose resolution changes: a camera whose settings were edited.

    One encoder per size, each with SPS/PPS in band at every keyframe (no global
    header) and a 1 s GOP; timestamps run on across the switch.
    """
    path = Path(path)
    frames_each = round(seconds_each * fps)
    with av.open(str(path), "w", format="mpegts") as out:
        vstream = out.add_stream("libx264", rate=fps)
        vstream.width, vstream.height = sizes[0]
        vstream.pix_fmt = "yuv420p"
        index = 0
        for size in sizes:
            enc = av.CodecContext.create("libx264", "w")
            assert isinstance(enc, av.VideoCodecContext)
            enc.width, enc.height = size
            enc.pix_fmt = "yuv420p"
            enc.time_base = Fraction(1, fps)
            enc.framerate = Fraction(fps)
            enc.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps)}
            frames = [_video_frame(index + i, size) for i in range(frames_each)]
            packets = [p for f in frames for p in enc.encode(f)] + list(enc.encode(None))
            for packet in packets:
                assert packet.pts is not None
                packet.pts += index
                packet.dts = packet.pts
                packet.stream = vstream
                out.mux(packet)
            index += frames_each
    return path


def make_audio_only(path: Path | str, *, seconds: float = 1.0, codec: AudioCodec = "aac") -> Path:
    """An M4A/MKA-style file with a single audio track and no video."""
    path = Path(path)
    muxer = "mp4" if codec == "aac" else "matroska"
    with av.open(str(path), "w", format=muxer) as out:
        astream = _add_audio(out, codec)
        chunk = 960
        for pos in range(0, int(seconds * _AUDIO_RATE), chunk):
            out.mux(astream.encode(_audio_frame(pos, chunk)))
        out.mux(astream.encode(None))
    return path


def make_many_streams(path: Path | str, n: int, *, seconds: float = 0.5) -> Path:
    """A Matroska file with ``n`` streams: one video and ``n - 1`` audio tracks."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return make_video(
        path, container="mkv", seconds=seconds, size=(64, 48), extra_audio_streams=n - 1
    )


def write_garbage(path: Path | str, n: int = 64 * 1024, *, seed: int | None = None) -> Path:
    """``n`` random bytes (deterministic when ``seed`` is given)."""
    path = Path(path)
    if seed is None:
        data = os.urandom(n)
    else:
        import random

        data = random.Random(seed).randbytes(n)
    path.write_bytes(data)
    return path


def truncate(path: Path | str, fraction: float) -> Path:
    """Cut ``path`` in place to ``fraction`` of its size, like a crash mid-write."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0..1, got {fraction}")
    path = Path(path)
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(int(size * fraction))
    return path


def ffprobe(path: Path | str) -> dict[str, Any]:
    """What the ``ffprobe`` CLI says of a file (format, streams, packet counts) as JSON.

    Tests check our output with the reference tool, not only with PyAV.
    """
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_format", "-show_streams",
         "-print_format", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    data: dict[str, Any] = json.loads(out.stdout)
    return data
