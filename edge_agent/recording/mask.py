"""Privacy masks at recording time: decode, fill the polygons, re-encode H.264.

A source with ``mask_at_recording`` (docs/anonymization.md, "Masks at
recording time") never has its masked area written: its video is decoded in
the recorder's worker thread, every picture gets its polygons filled with a
solid colour in the YUV planes, and the result is encoded with libx264 (preset
and bitrate from the hardware profile). The recorder then treats the encoded
packets exactly like a camera's: the same segment cuts, tags and live view
(:class:`MaskingEncoder.stream` is the template the segments and the
:class:`~edge_agent.recording.packethub.PacketHub` read), so the live view
shows the masked picture too.

Timing as for stream copy: the encoder runs with no delay (``zerolatency``:
no B-frames, no look-ahead), so a packet leaves with its input's timestamp,
and keyframes are forced on a schedule anchored at the segment's start whose
step divides ``segment_seconds`` (at most :data:`MAX_KEY_INTERVAL`): the
segmenter finds a keyframe exactly at every segment boundary, and a live
viewer that joins waits at most that step for a picture.

The fill is computed once per picture size as byte ranges of each plane
(:func:`plane_spans`), so the hot path is one slice assignment per masked row
and plane into the decoded frame: no numpy, which is not a base dependency.
A pixel is masked when the polygon covers its centre row, and horizontally
every pixel the polygon's span touches (rounded outwards); chroma samples are
masked when any of the luma pixels they cover is, so no colour of the masked
area survives at its edges.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import PictureType, VideoFrame
from av.video.stream import VideoStream

from edge_agent.core.segmenter import CUT_TOLERANCE

log = logging.getLogger(__name__)

__all__ = [
    "FILL",
    "MAX_KEY_INTERVAL",
    "MaskError",
    "MaskFiller",
    "MaskSettings",
    "MaskingEncoder",
    "Polygon",
    "key_interval",
    "luma_spans",
    "plane_spans",
]

Polygon = tuple[tuple[float, float], ...]
Spans = list[list[tuple[int, int]]]  # per row: sorted, disjoint [x0, x1) ranges

# Black in limited range (Y=16), no colour (U=V=128): one flat value per plane.
FILL = (16, 128, 128)
# A live viewer waits at most this long for a keyframe; a camera's usual GOP.
MAX_KEY_INTERVAL = 2.0
_FORMATS = ("yuv420p", "yuvj420p")  # what H.264 cameras decode to; others are converted
_DEFAULT_TB = Fraction(1, 90000)


class MaskError(Exception):
    """The encoder cannot be set up for this source (the recorder retries later)."""


@dataclass(frozen=True)
class MaskSettings:
    """What the recorder needs to mask a source (docs/anonymization.md)."""

    polygons: tuple[Polygon, ...]
    preset: str = "veryfast"
    bitrate: int = 2_000_000  # bit/s, capped with a one-second VBV buffer


def key_interval(segment_seconds: float) -> float:
    """The largest step <= MAX_KEY_INTERVAL that divides ``segment_seconds``."""
    if segment_seconds <= MAX_KEY_INTERVAL:
        return segment_seconds
    return segment_seconds / math.ceil(segment_seconds / MAX_KEY_INTERVAL - 1e-9)


def luma_spans(polygons: Sequence[Polygon], width: int, height: int) -> Spans:
    """Per pixel row, the x ranges any polygon (normalised 0..1) covers (even-odd rule)."""
    rows: Spans = [[] for _ in range(height)]
    for polygon in polygons:
        pts = [(x * width, y * height) for x, y in polygon]
        crossings: dict[int, list[float]] = {}
        for (xa, ya), (xb, yb) in zip(pts, pts[1:] + pts[:1], strict=True):
            if ya == yb:
                continue  # a horizontal edge crosses no row centre line once
            lo, hi = min(ya, yb), max(ya, yb)
            # Rows whose centre (y + 0.5) lies in [lo, hi): each edge counted once.
            first = max(0, math.ceil(lo - 0.5))
            last = min(height - 1, math.ceil(hi - 0.5) - 1)
            slope = (xb - xa) / (yb - ya)
            for y in range(first, last + 1):
                crossings.setdefault(y, []).append(xa + (y + 0.5 - ya) * slope)
        for y, xs in crossings.items():
            xs.sort()
            for x0, x1 in zip(xs[0::2], xs[1::2], strict=False):
                a, b = max(0, math.floor(x0)), min(width, math.ceil(x1))
                if b > a:
                    rows[y].append((a, b))
    return [_merge(r) for r in rows]


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subsampled(luma: Spans, sub_x: int, sub_y: int) -> Spans:
    """Chroma spans: a sample is masked when any luma pixel it covers is."""
    fx, fy = 1 << sub_x, 1 << sub_y
    height = (len(luma) + fy - 1) // fy
    out: Spans = []
    for r in range(height):
        ranges = [
            (a // fx, (b + fx - 1) // fx)
            for y in range(r * fy, min(len(luma), (r + 1) * fy))
            for a, b in luma[y]
        ]
        out.append(_merge(ranges))
    return out


def plane_spans(luma: Spans, strides: Sequence[int]) -> list[list[tuple[int, int]]]:
    """Byte ranges ``[start, end)`` to fill in each plane of a yuv420p frame."""
    out = []
    for plane_no, stride in enumerate(strides):
        rows = luma if plane_no == 0 else subsampled(luma, 1, 1)
        out.append([(y * stride + a, y * stride + b) for y, row in enumerate(rows) for a, b in row])
    return out


class MaskFiller:
    """Fills one picture size's mask into frames, by precomputed byte ranges."""

    def __init__(self, polygons: Sequence[Polygon], frame: VideoFrame) -> None:
        self.key = _frame_key(frame)
        strides = [p.line_size for p in frame.planes]
        spans = plane_spans(luma_spans(polygons, frame.width, frame.height), strides)
        widest = max((b - a for plane in spans for a, b in plane), default=0)
        fills = [memoryview(bytes([value]) * widest) for value in FILL]
        self.jobs = [[(a, b, fills[i][: b - a]) for a, b in plane] for i, plane in enumerate(spans)]
        self.pixels = sum(b - a for a, b in spans[0])

    def fill(self, frame: VideoFrame) -> None:
        for plane, jobs in zip(frame.planes, self.jobs, strict=True):
            view = memoryview(plane)
            for a, b, value in jobs:
                view[a:b] = value


def _frame_key(frame: VideoFrame) -> tuple[int, ...]:
    return (frame.width, frame.height, *(p.line_size for p in frame.planes))


class MaskingEncoder:
    """One connection's decode → fill → encode; not thread-safe (the recorder's worker).

    The encoder lives in a throw-away in-memory Matroska container so that it
    is opened with global headers (Annex-B SPS/PPS in the extradata), like a
    demuxed camera stream; nothing is ever written to that container.
    """

    def __init__(self, video: Stream, mask: MaskSettings, segment_seconds: float) -> None:
        ctx: Any = video.codec_context
        if ctx is None or not ctx.width or not ctx.height:
            raise MaskError("the camera's stream header gives no picture size")
        self.mask = mask
        self.time_base = video.time_base or _DEFAULT_TB
        self.step = key_interval(segment_seconds)
        self.anchor: float | None = None  # stream seconds of the keyframe schedule's start
        self._next_key = 0
        self.frames = self.errors = 0
        self._filler: MaskFiller | None = None
        self._sink: OutputContainer | None = None
        try:
            # By codec, not by the template's coder: testsrc's template is an encoder.
            self._decoder: Any = av.CodecContext.create(ctx.codec.canonical_name, "r")
            if ctx.extradata:
                self._decoder.extradata = bytes(ctx.extradata)
            self._sink = av.open(io.BytesIO(), "w", format="matroska")
            rate = video.average_rate or video.base_rate or Fraction(25)
            out = self._sink.add_stream("libx264", rate=rate)
            assert isinstance(out, VideoStream)
            out.width, out.height = ctx.width - ctx.width % 2, ctx.height - ctx.height % 2
            out.pix_fmt = "yuv420p"
            out.codec_context.time_base = self.time_base
            out.bit_rate = mask.bitrate
            kbps = max(1, mask.bitrate // 1000)
            out.options = {
                "preset": mask.preset,
                # No frame leaves later than its input: audio stays in step
                # (edge_agent.recording.interleave) and cuts stay where stream copy has them.
                "tune": "zerolatency",
                # Keyframes come from the schedule only (forced), not from scene cuts.
                "g": str(max(1, round(float(rate) * 10))),
                "sc_threshold": "0",
                "forced-idr": "1",
                "x264-params": f"vbv-maxrate={kbps}:vbv-bufsize={kbps}",
            }
            self._sink.start_encoding()
        except (av.error.FFmpegError, ValueError) as exc:
            self.close()
            raise MaskError(f"cannot set up the masking encoder: {exc}") from exc
        self.stream: VideoStream = out

    def realign(self, ts: float) -> None:
        """Anchor the keyframe schedule at a segment that opened at stream time ``ts``."""
        if self.anchor != ts:
            self.anchor, self._next_key = ts, 1

    def feed(self, packet: Packet[Stream]) -> list[Packet[Stream]]:
        """The masked, encoded packets that ``packet`` (one camera packet) yields."""
        try:
            frames = self._decoder.decode(packet)
        except av.error.FFmpegError as exc:
            # Codec errors only: no file is involved here, so none is the disk's.
            return self._error("decode", exc)
        out: list[Packet[Stream]] = []
        for frame in frames:
            out.extend(self._encode(frame, packet.time_base))
        return out

    def flush(self) -> list[Packet[Stream]]:
        """What the decoder and encoder still hold (the session ends)."""
        out: list[Packet[Stream]] = []
        try:
            for frame in self._decoder.decode(None):
                out.extend(self._encode(frame, self.time_base))
            out.extend(self.stream.encode(None))
        except av.error.FFmpegError as exc:
            self._error("flush", exc)
        return out

    def _encode(self, frame: VideoFrame, tb: Fraction | None) -> list[Packet[Stream]]:
        pts = frame.pts
        if pts is None:
            return []  # nowhere to place it in time
        if frame.format.name not in _FORMATS:
            frame = frame.reformat(format="yuv420p")
        else:
            frame.make_writable()  # the decoder keeps its reference pictures intact
        filler = self._filler
        if filler is None or filler.key != _frame_key(frame):
            filler = self._filler = MaskFiller(self.mask.polygons, frame)
        filler.fill(frame)
        frame.pts, frame.time_base = pts, tb or self.time_base
        ts = float(pts * frame.time_base)
        if self.anchor is None:
            self.realign(ts)
            frame.pict_type = PictureType.I
        elif ts >= self._due() - CUT_TOLERANCE:
            frame.pict_type = PictureType.I
            while self._due() - CUT_TOLERANCE <= ts:
                self._next_key += 1
        else:
            frame.pict_type = PictureType.NONE
        self.frames += 1
        try:
            return list(self.stream.encode(frame))
        except av.error.FFmpegError as exc:
            # Codec errors only: no file is involved here, so none is the disk's.
            return self._error("encode", exc)

    def _due(self) -> float:
        assert self.anchor is not None
        return self.anchor + self._next_key * self.step

    def _error(self, what: str, exc: Exception) -> list[Packet[Stream]]:
        # A damaged camera packet costs a picture or a few, never the session.
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            log.warning("masking: %s failed (%d so far): %s", what, self.errors, exc)
        return []

    def close(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            # A scratch buffer: nothing in it is worth an error.
            with contextlib.suppress(av.error.FFmpegError, ValueError, OSError):
                sink.close()
