"""The live view's GOP cache: a source's video packets since its last keyframe.

:class:`~edge_agent.recording.packethub.PacketHub` starts each new viewer from
the last keyframe, as go2rtc and MediaMTX do, instead of making it wait up to
a GOP for the next one (docs/design/architecture.md, "Recording and the live view"). With nobody
watching, the cache must still be kept, on every packet, in the recorder's
thread: so it holds *references* to the producer's packets (their refcounted
buffers: the muxer takes its own reference to a packet it writes) and copies
or converts nothing until a viewer joins. The timestamps are taken when the
packet is added, because the muxer rebases a packet's timestamps in place
afterwards.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeAlias

from av.packet import Packet

from edge_agent.recording.h264 import H264Normalizer

if TYPE_CHECKING:
    from edge_agent.recording.packethub import CodecInfo

__all__ = ["GOP_MAX_BYTES", "GOP_MAX_PACKETS", "REPLAY_CLOCK", "GopCache", "replay_chunks"]

GOP_MAX_PACKETS = 200  # 8 s at 25 fps; a longer GOP is not kept: viewers wait for a keyframe
GOP_MAX_BYTES = 8 << 20  # 4 s at 16 Mbit/s
REPLAY_STEP = 0.001  # seconds between replayed packets' timestamps
REPLAY_CLOCK = Fraction(1, 90_000)

# packet, its pts then, its time base then (quoted: Packet is not subscriptable at run time)
Entry: TypeAlias = "tuple[Packet[Any], int | None, Fraction | None]"


class GopCache:
    """Bounded by packet count and bytes; producer thread only."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.bytes = 0
        self.valid = False  # starts with a keyframe and within bounds
        # The GOP's time base, read at its keyframe: PyAV builds a new Fraction at
        # every read, which costs more than the rest of add(). A stream's time base
        # is fixed and a connection's first packet here is a keyframe (the recorder
        # publishes only what it records, and a segment opens on a keyframe).
        self._time_base: Fraction | None = None

    def add(self, packet: Packet[Any]) -> None:
        if packet.is_keyframe:
            self.entries.clear()
            self.bytes = 0
            self.valid = True
            self._time_base = packet.time_base
        elif not self.valid:
            return
        size = packet.size
        if len(self.entries) >= GOP_MAX_PACKETS or self.bytes + size > GOP_MAX_BYTES:
            # Too long a GOP to keep: new viewers wait for the next keyframe instead.
            self.entries.clear()
            self.bytes = 0
            self.valid = False
            return
        pts = packet.pts if packet.pts is not None else packet.dts
        self.entries.append((packet, pts, self._time_base))
        self.bytes += size

    def snapshot(self) -> list[Entry]:
        return list(self.entries) if self.valid else []


def replay_chunks(entries: list[Entry], info: CodecInfo) -> list[tuple[bytes, bool, int | None]]:
    """(data, keyframe, pts on :data:`REPLAY_CLOCK`) for a new viewer; raises FFmpegError.

    H.264 goes through a fresh :class:`H264Normalizer` (the hub's own is at the
    live stream's position). Timestamps are squeezed to :data:`REPLAY_STEP`
    apart, ending at the newest packet's: the viewer decodes through the GOP at
    once and shows the current picture, instead of playing it out and staying a
    GOP behind live for ever (a browser's jitter buffer holds each frame until
    its timestamp is due). B-frames would be shown out of order during the
    squeeze; cameras rarely send them.
    """
    if not entries:
        return []
    normalizer = H264Normalizer(info) if info.is_h264 else None
    chunks: list[tuple[bytes, bool]] = []
    for packet, _, _ in entries:
        if normalizer is not None:
            chunks.extend(normalizer.convert(packet))
        else:
            chunks.append((bytes(packet), bool(packet.is_keyframe)))
    _, pts, tb = entries[-1]
    newest = float(pts * tb) if pts is not None and tb is not None else None
    n = len(chunks)
    out: list[tuple[bytes, bool, int | None]] = []
    for i, (data, keyframe) in enumerate(chunks):
        at = None if newest is None else round((newest - (n - 1 - i) * REPLAY_STEP) / REPLAY_CLOCK)
        out.append((data, keyframe, at))
    return out
