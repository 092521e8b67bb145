"""H.264 as WebRTC needs it: Annex-B, with SPS/PPS in front of every keyframe.

The live view's :class:`~edge_agent.recording.packethub.PacketHub` converts a
source's packets with :class:`H264Normalizer` only while someone watches;
RFC 6184 packetisation wants start codes, and a viewer that joins late can
decode from the first keyframe it gets only if that keyframe carries the
parameter sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import av
from av.packet import Packet

if TYPE_CHECKING:
    from edge_agent.recording.packethub import CodecInfo

__all__ = ["H264Normalizer"]

_START_CODE = b"\x00\x00\x01"
_NAL_SPS = 7


def _nal_types(data: bytes) -> set[int]:
    types: set[int] = set()
    i = data.find(_START_CODE)
    while i != -1 and i + 3 < len(data):
        types.add(data[i + 3] & 0x1F)
        i = data.find(_START_CODE, i + 3)
    return types


def _is_annexb(extradata: bytes) -> bool:
    return extradata.startswith(_START_CODE) or extradata.startswith(b"\x00" + _START_CODE)


class H264Normalizer:
    """Annex-B H.264 with SPS/PPS in front of every keyframe."""

    def __init__(self, info: CodecInfo) -> None:
        self._bsf: av.BitStreamFilterContext | None = None
        self._parameter_sets = b""
        if info.extradata and not _is_annexb(info.extradata):
            # avcC extradata: the filter rewrites length prefixes to start codes and
            # inserts SPS/PPS itself. It needs the stream's codec parameters: given
            # only a codec name it has no extradata and silently passes MP4-style
            # packets through, which the browser cannot decode.
            if info.stream is None:
                raise ValueError("h264 with avcC extradata needs CodecInfo.stream")
            self._bsf = av.BitStreamFilterContext("h264_mp4toannexb", info.stream)
        else:
            # Annex-B already (RTSP, raw encoders with global headers): the
            # parameter sets live out of band in extradata, if anywhere.
            self._parameter_sets = info.extradata

    def convert(self, packet: Packet[Any]) -> list[tuple[bytes, bool]]:
        """(Annex-B data, keyframe) for one input packet."""
        keyframe = bool(packet.is_keyframe)
        if self._bsf is not None:
            twin = Packet(bytes(packet))  # the filter consumes its input packet
            twin.pts, twin.dts, twin.time_base = packet.pts, packet.dts, packet.time_base
            twin.is_keyframe = keyframe
            return [(bytes(out), bool(out.is_keyframe)) for out in self._bsf.filter(twin)]
        data = bytes(packet)
        if keyframe and self._parameter_sets and _NAL_SPS not in _nal_types(data):
            data = self._parameter_sets + data
        return [(data, keyframe)]
