"""aiortc media tracks fed from a :class:`~edge_agent.recording.packethub.Subscription`.

- :class:`PassthroughVideoTrack` hands aiortc Annex-B H.264 ``av.Packet``s
  (timestamps on the 90 kHz RTP clock); aiortc's H.264 encoder only packetises
  them (``H264Encoder.pack``), so a viewer costs a copy, not an encode.
- :class:`ReencodeVideoTrack` decodes and returns frames for aiortc to encode
  (VP8 or H.264): the fallback for codecs browsers cannot take as they are.
- :class:`G711AudioTrack` forwards G.711 (PCMU/PCMA, 8 kHz mono) packets as
  they are: they are WebRTC's mandatory audio codecs, so every browser takes
  them and nothing is decoded (aiortc's G.711 encoder only packetises).
- :class:`OpusAudioTrack` decodes anything else (AAC, G.726, ...) and returns
  s16 frames that aiortc encodes to Opus; WebRTC has no AAC. Decoding audio is
  allowed only here, for the live preview of an audio room.
  :func:`audio_track` picks one of the two per viewer.

Imported only by :mod:`edge_agent.liveview.liveview`, i.e. only when the live view is on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from fractions import Fraction
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.packet import Packet
from av.video.frame import VideoFrame

from edge_agent.recording.packethub import Channel, CodecInfo, HubPacket

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000
_MAX_JUMP = 5.0  # seconds; a bigger jump is a reconnect or a camera clock reset
_MAX_REORDER = 0.5  # seconds a B-frame may sit before the newest timestamp


class Timeline:
    """Source timestamps mapped onto a steady clock starting at 0.

    A reconnect restarts the camera's timestamps and a camera may reset its
    clock: the RTP timestamps must keep moving forward regardless, or the
    browser's jitter buffer stalls.
    """

    def __init__(self, rate: int, step: float) -> None:
        self.rate = rate
        self._step = step  # seconds assumed between frames across a discontinuity
        self._offset: float | None = None  # output seconds = source seconds + offset
        self._last: float | None = None
        self._wall0: float | None = None

    def ticks(self, seconds: float | None) -> int:
        if seconds is None:
            # No timestamp at all: fall back to arrival time.
            now = time.monotonic()
            if self._wall0 is None:
                self._wall0 = now
            seconds = now - self._wall0
        if self._offset is None:
            self._offset = -seconds
        out = seconds + self._offset
        last = self._last
        # B-frames step back a little (presentation order); only a big jump is a break.
        if last is not None and not (last - _MAX_REORDER <= out <= last + _MAX_JUMP):
            self._offset = last + self._step - seconds
            out = last + self._step
        self._last = out if last is None else max(last, out)
        return round(out * self.rate)


class _HubTrack(MediaStreamTrack):
    """Shared bits: reading the channel, ending the track, first-frame time."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel
        self.first_frame_at: float | None = None  # monotonic
        self.frames = 0

    async def _next(self) -> HubPacket:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            return await self._channel.get()
        except EOFError:
            self.stop()
            raise MediaStreamError from None

    def _count(self) -> None:
        self.frames += 1
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()


class PassthroughVideoTrack(_HubTrack):
    kind = "video"

    def __init__(self, channel: Channel) -> None:
        super().__init__(channel)
        self._timeline = Timeline(VIDEO_CLOCK, 1 / 25)

    async def recv(self) -> Packet[Any]:
        item = await self._next()
        packet = Packet(item.data)
        packet.pts = self._timeline.ticks(item.seconds())
        packet.time_base = Fraction(1, VIDEO_CLOCK)
        packet.is_keyframe = item.keyframe
        self._count()
        return packet


def _decoder(info: CodecInfo) -> Any:
    # Any: PyAV's stubs only put decode() on the kind-specific context classes.
    ctx: Any = av.CodecContext.create(info.codec, "r")
    # Hub H.264 is Annex-B with in-band SPS/PPS; avcC extradata would make the
    # decoder expect length prefixes instead.
    if info.extradata and not info.is_h264:
        ctx.extradata = info.extradata
    if info.kind == "audio" and info.sample_rate:
        ctx.sample_rate = info.sample_rate
    return ctx


class ReencodeVideoTrack(_HubTrack):
    kind = "video"

    def __init__(self, channel: Channel) -> None:
        super().__init__(channel)
        self._timeline = Timeline(VIDEO_CLOCK, 1 / 25)
        self._decoder: Any = None
        self._info: CodecInfo | None = None
        self._pending: collections.deque[tuple[VideoFrame, float | None]] = collections.deque()

    def _decode(self, item: HubPacket) -> list[VideoFrame]:
        if self._decoder is None or self._info != item.info:
            self._decoder = _decoder(item.info)
            self._info = item.info
        packet = Packet(item.data)
        try:
            return [f for f in self._decoder.decode(packet) if isinstance(f, VideoFrame)]
        except av.error.FFmpegError as exc:
            log.debug("live view: undecodable video packet skipped: %s", exc)
            return []

    async def recv(self) -> VideoFrame:
        loop = asyncio.get_running_loop()
        while not self._pending:
            item = await self._next()
            # Decoding a 720p frame takes milliseconds: keep it off the event loop.
            frames = await loop.run_in_executor(None, self._decode, item)
            self._pending.extend((f, item.seconds()) for f in frames)
        frame, seconds = self._pending.popleft()
        frame.pts = self._timeline.ticks(seconds)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        self._count()
        return frame


class OpusAudioTrack(_HubTrack):
    kind = "audio"

    def __init__(self, channel: Channel) -> None:
        super().__init__(channel)
        self._decoder: Any = None
        self._info: CodecInfo | None = None
        self._resampler = AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE)
        self._pending: collections.deque[AudioFrame] = collections.deque()
        self._samples = 0

    def _decode(self, item: HubPacket) -> list[AudioFrame]:
        if self._decoder is None or self._info != item.info:
            self._decoder = _decoder(item.info)
            self._info = item.info
        try:
            decoded = [
                f for f in self._decoder.decode(Packet(item.data)) if isinstance(f, AudioFrame)
            ]
            out: list[AudioFrame] = []
            for frame in decoded:
                frame.pts = None  # the resampler would otherwise carry source timestamps over
                out.extend(self._resampler.resample(frame))
            return out
        except (av.error.FFmpegError, ValueError) as exc:
            log.debug("live view: undecodable audio packet skipped: %s", exc)
            return []

    async def recv(self) -> AudioFrame:
        while not self._pending:
            # AAC frames decode in tens of microseconds: no executor round trip.
            self._pending.extend(self._decode(await self._next()))
        frame = self._pending.popleft()
        frame.pts = self._samples
        frame.time_base = Fraction(1, AUDIO_RATE)
        frame.sample_rate = AUDIO_RATE
        self._samples += frame.samples
        self._count()
        return frame


G711_RATE = 8000
G711_PACKET = 160  # 20 ms: one RTP packet of the usual camera size
_G711_MIME = {"pcm_mulaw": "audio/pcmu", "pcm_alaw": "audio/pcma"}


def g711_mime(info: CodecInfo | None) -> str | None:
    """``audio/pcmu`` or ``audio/pcma`` when the stream can go to a browser as is."""
    if info is None or info.codec not in _G711_MIME:
        return None
    if info.sample_rate != G711_RATE or info.layout not in ("mono", ""):
        return None  # WebRTC's PCMU/PCMA are 8 kHz mono only
    return _G711_MIME[info.codec]


class G711AudioTrack(_HubTrack):
    """G.711 packets to aiortc's PCMU/PCMA packetiser, 20 ms each, on a steady clock."""

    kind = "audio"

    def __init__(self, channel: Channel) -> None:
        super().__init__(channel)
        self._timeline = Timeline(G711_RATE, G711_PACKET / G711_RATE)
        self._pending: collections.deque[Packet[Any]] = collections.deque()

    def _split(self, item: HubPacket) -> None:
        # One byte per sample: a big camera packet becomes several RTP-sized ones.
        start = self._timeline.ticks(item.seconds())
        for off in range(0, len(item.data), G711_PACKET):
            packet = Packet(item.data[off : off + G711_PACKET])
            packet.pts = start + off
            packet.time_base = Fraction(1, G711_RATE)
            self._pending.append(packet)

    async def recv(self) -> Packet[Any]:
        while not self._pending:
            self._split(await self._next())
        self._count()
        return self._pending.popleft()


def audio_track(channel: Channel, info: CodecInfo | None) -> tuple[_HubTrack, tuple[str, ...]]:
    """The track for a viewer of an audio room and the codecs to offer (mime, lower case)."""
    mime = g711_mime(info)
    if mime is not None:
        return G711AudioTrack(channel), (mime,)
    return OpusAudioTrack(channel), ("audio/opus",)
