"""What a file's packets say, as opposed to what its header claims.

:class:`PacketScanner` is fed every video and audio packet of a demux, either
a scan of its own (:func:`edge_agent.media.media_probe.scan_open`) or the
remux's (:mod:`edge_agent.media.media_remux`), so an adoption reads its source
once. Its result, the length of the recording, is also a tag written before
the first packet; for an MP4 :func:`predict_scan` tells it from the index
beforehand, and the adoption remuxes again in the rare case the packets
disagree (docs/design/architecture.md, "Adoption").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from av.container import InputContainer
from av.packet import Packet
from av.stream import Disposition, Stream

TRUNCATION_SLACK_SECONDS = 0.5


@dataclass(frozen=True)
class PacketScan:
    """What the packets of a file say, as opposed to what its header claims."""

    video_packets: int
    seconds: float  # from the earliest packet to the end of the last (video and audio)
    max_video_gap: float  # longest step between consecutive video packets, seconds
    measured: bool = True  # False: predicted from an index (predict_scan), not read

    def truncated(self, header_seconds: float | None) -> bool:
        """True when the header promises clearly more than the packets hold.

        A cut-off Matroska file still opens with its intended length in the
        header. The slack covers a last packet without a duration (one frame
        interval, long on a time-lapse camera) and containers that round.
        """
        if header_seconds is None or header_seconds <= 0:
            return False
        slack = max(TRUNCATION_SLACK_SECONDS, 2 * self.max_video_gap, 0.02 * header_seconds)
        return header_seconds - self.seconds > slack


def scanned_streams(container: InputContainer) -> tuple[list[Stream], list[Stream]]:
    """(video, audio) streams a scan reads: cover art is not footage."""
    video: list[Stream] = []
    audio: list[Stream] = []
    for s in container.streams:
        if s.disposition & Disposition.attached_pic:
            continue
        if s.type == "video":
            video.append(s)
        elif s.type == "audio":
            audio.append(s)
    return video, audio


class PacketScanner:
    """Count and span of the packets fed to it; cheap per packet (a hot loop)."""

    def __init__(self, video_ids: set[int]) -> None:
        self._video_ids = video_ids
        self._count = 0
        self._first: float | None = None
        self._last_end = 0.0
        self._prev_video: float | None = None
        self._gap = 0.0
        # One float per stream: Fraction arithmetic per packet was a third of an
        # adoption's CPU (bench/adoption.py).
        self._bases: dict[int, float | None] = {}

    def feed(self, packet: Packet[Any]) -> None:
        index = packet.stream_index
        tb = self._bases.get(index, 0.0)
        if tb == 0.0:
            tb = self._bases[index] = None if packet.time_base is None else float(packet.time_base)
        stamp = packet.pts
        if stamp is None:
            stamp = packet.dts
        if stamp is None or tb is None:
            if packet.size:
                self._count += index in self._video_ids
            return
        sec = stamp * tb
        end = sec + (packet.duration or 0) * tb
        if self._first is None or sec < self._first:
            self._first = sec
        if end > self._last_end:
            self._last_end = end
        if index in self._video_ids:
            self._count += 1
            if self._prev_video is not None:
                step = abs(sec - self._prev_video)
                if step > self._gap:
                    self._gap = step
            self._prev_video = sec

    def add_span(self, first: float, last_end: float) -> None:
        """A stream's span known without feeding its packets (:func:`indexed_span`)."""
        if self._first is None or first < self._first:
            self._first = first
        if last_end > self._last_end:
            self._last_end = last_end

    def result(self) -> PacketScan:
        span = 0.0 if self._first is None else max(0.0, self._last_end - self._first)
        return PacketScan(self._count, span, self._gap)


def predict_scan(container: InputContainer) -> PacketScan | None:
    """The scan of an MP4 as its index tells it, without reading a packet; None
    when the index cannot tell (other containers, streams without a duration).

    Audio starts at its first index entry: encoder priming sits before the edit
    list's start. The gap between video packets is unknown (0 here), which only
    matters to :meth:`PacketScan.truncated` near its slack, and the caller checks
    the measured scan against this one anyway.
    """
    if not _is_mp4(container):
        return None
    video, audio = scanned_streams(container)
    if not video:
        return None
    first: float | None = None
    last_end = 0.0
    count = 0
    for s in (*video, *audio):
        span = _span(s)
        if span is None:
            return None
        if s.type == "video":
            count += s.frames
        first = span[0] if first is None or span[0] < first else first
        last_end = max(last_end, span[1])
    if first is None:
        return None
    return PacketScan(count, max(0.0, last_end - first), 0.0, measured=False)


def _is_mp4(container: InputContainer) -> bool:
    return container.format.name.startswith("mov,mp4")


def _span(s: Stream) -> tuple[float, float] | None:
    """(first, end) of one MP4 stream in seconds as its index tells it."""
    if s.start_time is None or s.duration is None or s.time_base is None:
        return None
    tb = float(s.time_base)
    start = s.start_time * tb
    end = start + s.duration * tb
    if s.type == "audio" and len(s.index_entries):
        start = min(start, s.index_entries[0].timestamp * tb)
    return start, end


def indexed_span(container: InputContainer, s: Stream, size: int) -> tuple[float, float] | None:
    """An MP4 stream's span from its index, when every sample it indexes lies within
    the ``size`` bytes of the file; None when its packets must be read to know.

    The MP4 demuxer gives exactly the indexed samples whose bytes are there, so a
    remux that leaves a stream out (audio being removed) need not demux it for the
    scan: the index is the packets. A file cut off inside that stream's data is
    read as before.
    """
    if not _is_mp4(container):
        return None
    entries = s.index_entries
    if not len(entries) or max(e.pos + e.size for e in entries) > size:
        return None
    return _span(s)
