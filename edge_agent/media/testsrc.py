"""``testsrc://`` — a virtual camera for demos and tests (docs/operator-guide.md).

``testsrc://?size=1280x720&rate=25&bitrate=2M&tone=1&gop=2`` encodes a moving
test pattern with libx264 (ultrafast, zerolatency, a keyframe every ``gop``
seconds) and, when ``tone=1``, a 440 Hz sine in AAC (``audio=pcmu`` or
``audio=pcma``: G.711 at 8 kHz in 20 ms packets, like most IP cameras), and yields real
``av.Packet``s paced to real time. The recorder treats it like any camera: it
gets encoded packets and stream templates, never frames.

Cheap by construction: a cycle of frames is rendered once at start-up and the
tone is one pre-computed second; the only steady cost is the encoder. ``bitrate``
caps the stream (VBV); a flat test pattern often needs less.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from urllib.parse import parse_qs, urlsplit

import av
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.stream import VideoStream

AUDIO_RATE = 48000
TONE_HZ = 440  # a whole number of cycles per second: the pre-computed second loops cleanly
AAC_FRAME = 1024
_PATTERN_FRAMES = 50  # distinct pictures before the pattern repeats
_MAX_SIZE = (3840, 2160)
# testsrc audio= -> (encoder, sample rate, samples per packet)
_AUDIO_CODECS = {
    "aac": ("aac", AUDIO_RATE, AAC_FRAME),
    "pcmu": ("pcm_mulaw", 8000, 160),
    "pcma": ("pcm_alaw", 8000, 160),
}


class TestSrcError(ValueError):
    """A ``testsrc://`` url with a bad parameter; the message names it and the fix."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class TestSrcParams:
    __test__ = False  # not a pytest test class

    width: int = 1280
    height: int = 720
    rate: int = 25
    bitrate: int = 2_000_000
    tone: bool = False
    gop_seconds: float = 2.0
    audio_codec: str = "aac"  # "aac" | "pcmu" | "pcma"


def _bitrate(text: str) -> int:
    t = text.strip().lower()
    mult = 1
    if t.endswith("m"):
        mult, t = 1_000_000, t[:-1]
    elif t.endswith("k"):
        mult, t = 1000, t[:-1]
    value = int(float(t) * mult)
    if not 50_000 <= value <= 50_000_000:
        raise ValueError
    return value


def parse_testsrc_url(url: str) -> TestSrcParams:
    """Parameters of a ``testsrc://`` url; unknown or bad ones raise TestSrcError."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "testsrc":
        raise TestSrcError(f"{url!r} is not a testsrc:// url")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    known = {"size", "rate", "bitrate", "tone", "gop", "audio"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise TestSrcError(
            f"testsrc: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    p = TestSrcParams()
    try:
        if "size" in query:
            w, _, h = query["size"].lower().partition("x")
            width, height = int(w), int(h)
            if not (16 <= width <= _MAX_SIZE[0] and 16 <= height <= _MAX_SIZE[1]):
                raise ValueError
            if width % 2 or height % 2:
                raise ValueError
            p = TestSrcParams(width, height, p.rate, p.bitrate, p.tone, p.gop_seconds)
    except ValueError:
        raise TestSrcError(
            f"testsrc: size={query['size']!r} is not WIDTHxHEIGHT with even numbers "
            "from 16x16 to 3840x2160 (write e.g. size=1280x720)"
        ) from None
    try:
        rate = int(query.get("rate", p.rate))
        if not 1 <= rate <= 60:
            raise ValueError
    except ValueError:
        raise TestSrcError(
            f"testsrc: rate={query['rate']!r} is not a frame rate 1-60 (write e.g. rate=25)"
        ) from None
    try:
        bitrate = _bitrate(query["bitrate"]) if "bitrate" in query else p.bitrate
    except ValueError:
        raise TestSrcError(
            f"testsrc: bitrate={query['bitrate']!r} is not 50k-50M (write e.g. bitrate=2M)"
        ) from None
    tone_text = query.get("tone", "0").strip().lower()
    if tone_text not in ("0", "1", "true", "false", ""):
        raise TestSrcError(f"testsrc: tone={tone_text!r} is not 0 or 1 (write tone=1)")
    try:
        gop = float(query.get("gop", p.gop_seconds))
        if not 0.1 <= gop <= 10:
            raise ValueError
    except ValueError:
        raise TestSrcError(
            f"testsrc: gop={query['gop']!r} is not 0.1-10 seconds (write e.g. gop=2)"
        ) from None
    audio = query.get("audio", "aac").strip().lower()
    if audio not in _AUDIO_CODECS:
        raise TestSrcError(
            f"testsrc: audio={audio!r} is not one of {', '.join(_AUDIO_CODECS)} (write audio=pcmu)"
        )
    tone = tone_text in ("1", "true") or "audio" in query
    return TestSrcParams(p.width, p.height, rate, bitrate, tone, gop, audio)


def _pattern(index: int, width: int, height: int) -> av.VideoFrame:
    """A gradient with a bright bar that crosses the picture once per cycle."""
    frame = av.VideoFrame(width, height, "yuv420p")
    bar_w = max(2, width // 16)
    x0 = (index * (width - bar_w)) // max(1, _PATTERN_FRAMES - 1)
    for plane_no, plane in enumerate(frame.planes):
        sub = 0 if plane_no == 0 else 1
        pw, ph = width >> sub, height >> sub
        stride = plane.line_size
        if plane_no == 0:
            row = bytearray((16 + (x * 160) // pw) & 0xFF for x in range(pw))
            row[x0 : x0 + bar_w] = b"\xeb" * bar_w
        else:
            row = bytearray([128 + (40 if plane_no == 1 else -40)] * pw)
            bx0 = x0 >> 1
            row[bx0 : bx0 + (bar_w >> 1)] = b"\x80" * (bar_w >> 1)
        line = bytes(row) + bytes(stride - pw)
        plane.update(line * ph)
    return frame


def _tone_second(rate: int = AUDIO_RATE) -> bytes:
    pcm = array(
        "h",
        (int(6000 * math.sin(2 * math.pi * TONE_HZ * i / rate)) for i in range(rate)),
    )
    return pcm.tobytes()


class TestSource:
    """A packet source like a camera: ``video``/``audio`` streams and a paced packet stream.

    The encoders live in a throw-away in-memory Matroska container so that they
    are opened with global headers (codec extradata), exactly like a demuxed
    camera stream; nothing is ever written to it past its header.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, params: TestSrcParams) -> None:
        self.params = params
        encoder, self._rate, self._chunk = _AUDIO_CODECS[params.audio_codec]
        # Matroska cannot hold G.711; QuickTime can, with the same avcC video headers.
        sink = "mov" if params.tone and params.audio_codec != "aac" else "matroska"
        self._sink: OutputContainer = av.open(io.BytesIO(), "w", format=sink)
        v = self._sink.add_stream("libx264", rate=params.rate)
        assert isinstance(v, VideoStream)
        v.width, v.height = params.width, params.height
        v.pix_fmt = "yuv420p"
        v.bit_rate = params.bitrate
        kbps = params.bitrate // 1000
        gop = max(1, round(params.gop_seconds * params.rate))
        v.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "x264-params": f"vbv-maxrate={kbps}:vbv-bufsize={kbps}",
        }
        self.video: VideoStream = v
        self.audio: AudioStream | None = None
        if params.tone:
            a = self._sink.add_stream(encoder, rate=self._rate)
            assert isinstance(a, AudioStream)
            a.layout = "mono"
            if encoder == "aac":
                a.bit_rate = 64_000
            self.audio = a
        self._sink.start_encoding()
        self._frames = [_pattern(i, params.width, params.height) for i in range(_PATTERN_FRAMES)]
        self._tone = _tone_second(self._rate) if params.tone else b""
        self._closed = False

    @property
    def description(self) -> str:
        p = self.params
        tone = f"+{p.audio_codec}" if p.tone else ""
        return f"testsrc {p.width}x{p.height}@{p.rate} {p.bitrate // 1000}k{tone}"

    def _audio_frame(self, first_sample: int) -> av.AudioFrame:
        n, rate = self._chunk, self._rate
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        start = (first_sample % rate) * 2
        chunk = self._tone[start : start + n * 2]
        if len(chunk) < n * 2:
            chunk += self._tone[: n * 2 - len(chunk)]
        frame.planes[0].update(chunk)
        frame.sample_rate = rate
        frame.pts = first_sample
        frame.time_base = Fraction(1, rate)
        return frame

    def packets(self, stop: threading.Event) -> Iterator[Packet[Stream]]:
        """Encoded packets in real time until ``stop`` is set (a live camera never ends)."""
        rate = self.params.rate
        t0 = time.monotonic()
        index = 0
        audio_pos = 0
        while not stop.is_set():
            due = t0 + index / rate
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            frame = self._frames[index % _PATTERN_FRAMES]
            frame.pts = index
            frame.time_base = Fraction(1, rate)
            yield from self.video.encode(frame)
            index += 1
            if self.audio is not None:
                until = index * self._rate // rate
                while audio_pos < until:
                    yield from self.audio.encode(self._audio_frame(audio_pos))
                    audio_pos += self._chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The sink is a scratch buffer: nothing in it is worth an error.
        with contextlib.suppress(av.error.FFmpegError, OSError, ValueError):
            self._sink.close()


def open_testsrc(url: str) -> TestSource:
    return TestSource(parse_testsrc_url(url))
