"""One open Matroska segment: stream-copied video, audio copied or converted.

Timestamps are shifted so the segment starts at zero. Audio is best effort:
when the audio stream cannot be added (the muxer refuses the codec) the
segment opens without it and :attr:`SegmentWriter.audio_error` says why; the
caller reports it and goes on recording video (docs/audio.md).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
from av.audio.frame import AudioFrame
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream

from edge_agent.host.fsutil import create_file
from edge_agent.media.audio import AudioAction, AudioEncoder, AudioError, AudioPlan

log = logging.getLogger(__name__)

MUXER = "matroska"
# A closed cluster is on disk; a SIGKILL loses at most the open one.
MKV_OPTIONS = {
    "cluster_time_limit": "1000",
    "cluster_size_limit": "4194304",
    # Hand each finished cluster to the kernel at once instead of buffering 32 KiB.
    "flush_packets": "1",
}


@dataclass(frozen=True)
class VideoParams:
    """Parameter sets seen in the stream itself, overriding the stream's header."""

    extradata: bytes  # Annex-B SPS/PPS (and VPS)
    width: int = 0
    height: int = 0


class SegmentWriter:
    """Stream-copies packets with timestamps relative to the segment's start."""

    def __init__(
        self,
        path: Path,
        file_tags: dict[str, str],
        video: Stream,
        audio: Stream | None,
        start_exact: Fraction,
        *,
        audio_plan: AudioPlan | None = None,
        video_params: VideoParams | None = None,
    ) -> None:
        self.path = path
        self.start_exact = start_exact  # exact, for the integer timestamp shift
        self.start_ts = float(start_exact)
        self.end_ts = self.start_ts
        self.video_packets = 0
        self.audio_packets = 0
        self.refused = 0
        self.audio_error: str | None = None
        self._last_video: float | None = None
        self._shift: dict[str, int] = {}
        self._encoder: AudioEncoder | None = None
        self._audio: Stream | None = None
        create_file(path)  # 0640 whatever the umask; the muxer truncates and keeps the mode
        self._out: OutputContainer = av.open(
            str(path), "w", format=MUXER, container_options=dict(MKV_OPTIONS)
        )
        try:
            self._out.metadata.update(file_tags)
            self._video = self._out.add_stream_from_template(video, opaque=True)
            if video_params is not None:
                self._apply(video_params)
            if audio is not None:
                self._add_audio(audio, audio_plan)
        except BaseException:
            with contextlib.suppress(Exception):
                self._out.close()
            raise

    def _apply(self, params: VideoParams) -> None:
        ctx: Any = self._video.codec_context
        ctx.extradata = params.extradata
        if params.width and params.height:
            ctx.width, ctx.height = params.width, params.height

    def _add_audio(self, audio: Stream, plan: AudioPlan | None) -> None:
        try:
            if plan is None or plan.action is AudioAction.COPY:
                self._audio = self._out.add_stream_from_template(audio, opaque=True)
                return
            stream: Any = self._out.add_stream(plan.encoder, rate=plan.sample_rate)
            stream.layout = "mono" if plan.channels == 1 else "stereo"
            if plan.bit_rate:
                stream.bit_rate = plan.bit_rate
            self._encoder = AudioEncoder(stream, plan)
            self._audio = stream
        except (av.error.FFmpegError, ValueError, AudioError) as exc:
            if isinstance(exc, OSError):
                raise
            self.audio_error = f"{MUXER} cannot hold the audio ({exc})"
            self._audio = self._encoder = None

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def write(self, kind: str, packet: Packet[Stream], ts: float, tb: float) -> None:
        """Mux ``packet`` (stream time ``ts`` seconds, time base ``tb``) shifted to the start."""
        target = self._video if kind == "video" else self._audio
        if target is None:
            return
        shift = self._shift.get(kind)
        if shift is None:
            shift = self._shift[kind] = round(self.start_exact / packet.time_base)
        # Each read of a PyAV timestamp is a call into the extension: once each.
        pts, dts = packet.pts, packet.dts
        if pts is not None:
            packet.pts = pts - shift
        if dts is not None:
            packet.dts = dts - shift
        packet.stream = target
        try:
            self._out.mux_one(packet)
        except av.error.FFmpegError as exc:
            if isinstance(exc, OSError):
                raise  # the disk: the caller stops and keeps what is written
            # A packet the muxer refuses (e.g. non-increasing dts from a camera):
            # losing it is better than losing the session.
            self.refused += 1
            if self.refused == 1:
                log.warning("%s: muxer refused a %s packet: %s", self.path.name, kind, exc)
            return
        step = (packet.duration or 0) * tb
        if kind == "video":
            self.video_packets += 1
            if not step and self._last_video is not None:
                step = ts - self._last_video  # encoders and RTP often leave duration unset
            self._last_video = ts
        else:
            self.audio_packets += 1
        if ts + step > self.end_ts and (kind == "video" or self._encoder is None):
            self.end_ts = ts + step

    def write_frames(self, frames: list[AudioFrame], ts: float) -> None:
        """Encode decoded audio from a packet at stream time ``ts``; AudioError if it fails."""
        if self._encoder is None or self._audio is None:
            return
        encoder = self._encoder
        tb = float(encoder.time_base)
        for packet in encoder.encode(frames, ts):
            # Encoded packets go to the audio stream the encoder feeds, like a copy.
            self.write("audio", packet, (packet.pts or 0) * tb, tb)

    @property
    def seconds(self) -> float:
        return self.end_ts - self.start_ts

    def close(self) -> None:
        encoder = self._encoder
        if encoder is not None and self._audio is not None:
            # The samples of this segment's last packets go into this segment.
            try:
                tail = encoder.flush()
            except AudioError as exc:
                log.warning("%s: %s", self.path.name, exc)
                tail = []
            tb = float(encoder.time_base)
            for packet in tail:
                self.write("audio", packet, (packet.pts or 0) * tb, tb)
        self._out.close()
