"""Audio a segment container can hold: one plan per source, and the conversion it needs.

IP cameras send G.711 (PCMU/PCMA), G.726, AAC (also as LATM) or Opus.
Matroska and MP4 hold AAC, Opus and 16-bit PCM, but not G.711, G.726 or
LATM. :func:`plan_audio` decides once per source, when it connects, what
happens to its audio (see ``docs/audio.md``):

- ``copy``: the container holds the codec; packets are copied as they are;
- ``pcm``: codecs whose decoder yields 16-bit integer samples (G.711, G.726,
  G.722) are decoded to ``pcm_s16le``: nothing is lost that the codec had
  not already lost, and narrowband PCM costs 128 kb/s per channel;
- ``encode``: anything else that decodes (LATM, odd PCM flavours) is encoded
  to Opus at :data:`OPUS_BITRATE_PER_CHANNEL` (AAC if this FFmpeg has no Opus
  encoder);
- ``drop``: the audio cannot be kept (no decoder, unknown sample rate or
  channel count); the reason says why. Video is recorded regardless.

:class:`AudioConverter` carries out a ``pcm``/``encode`` plan: decoding is per
session (G.726 decoders keep state across packets), encoding per segment
(:class:`AudioEncoder`, flushed into the segment it belongs to, so a cut does
not carry samples over). Failures leave as :class:`AudioError`.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any, Literal

import av
import av.error
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.packet import Packet
from av.stream import Stream

PCM_OUT = "pcm_s16le"
# Speech and room sound at 32 kb/s per channel is transparent enough for
# evidence and a fraction of the video's rate (docs/audio.md).
OPUS_BITRATE_PER_CHANNEL = 32_000
AAC_BITRATE_PER_CHANNEL = 64_000
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# Decoders whose output is 16-bit integer samples: decoding to PCM is exact.
LOSSLESS_TO_PCM = frozenset(
    {"pcm_mulaw", "pcm_alaw", "adpcm_g726", "adpcm_g726le", "adpcm_g722", "pcm_s16be", "pcm_u8"}
)


class AudioAction(StrEnum):
    COPY = "copy"
    PCM = "pcm"
    ENCODE = "encode"
    DROP = "drop"


@dataclass(frozen=True)
class AudioPlan:
    action: AudioAction
    source_codec: str
    target_codec: str = ""  # FFmpeg codec name written ("" for copy/drop)
    encoder: str = ""  # FFmpeg encoder used ("libopus", "aac", "pcm_s16le")
    sample_rate: int = 0
    channels: int = 0
    bit_rate: int | None = None
    reason: str = ""  # why audio is dropped

    @property
    def conversion(self) -> str | None:
        """``"pcm_mulaw->pcm_s16le"`` when packets are converted, else None."""
        if self.action in (AudioAction.PCM, AudioAction.ENCODE):
            return f"{self.source_codec}->{self.target_codec}"
        return None

    @property
    def keeps_audio(self) -> bool:
        return self.action is not AudioAction.DROP


def plan_audio(
    codec: str,
    sample_rate: int,
    channels: int,
    *,
    container_codecs: Collection[str],
    decodable: Collection[str],
    encoders: Collection[str],
) -> AudioPlan:
    """What to do with a source's audio stream (pure; see the module doc)."""
    if codec in container_codecs:
        return AudioPlan(AudioAction.COPY, codec, codec, sample_rate=sample_rate, channels=channels)
    if codec not in decodable:
        return AudioPlan(
            AudioAction.DROP, codec, reason=f"no decoder for audio codec {codec} in this FFmpeg"
        )
    if sample_rate <= 0 or channels <= 0:
        return AudioPlan(
            AudioAction.DROP,
            codec,
            reason=f"{codec} audio without sample rate or channel count (camera SDP incomplete)",
        )
    if codec in LOSSLESS_TO_PCM and PCM_OUT in container_codecs and PCM_OUT in encoders:
        return AudioPlan(
            AudioAction.PCM, codec, PCM_OUT, PCM_OUT, sample_rate=sample_rate, channels=channels
        )
    out_channels = min(channels, 2)
    if "opus" in container_codecs and "libopus" in encoders:
        rate = sample_rate if sample_rate in OPUS_RATES else 48000
        bit_rate = OPUS_BITRATE_PER_CHANNEL * out_channels
        return AudioPlan(AudioAction.ENCODE, codec, "opus", "libopus", rate, out_channels, bit_rate)
    if "aac" in container_codecs and "aac" in encoders:
        rate = min(sample_rate, 48000)
        bit_rate = AAC_BITRATE_PER_CHANNEL * out_channels
        return AudioPlan(AudioAction.ENCODE, codec, "aac", "aac", rate, out_channels, bit_rate)
    return AudioPlan(
        AudioAction.DROP,
        codec,
        reason=f"no encoder here turns {codec} into a codec the container holds",
    )


# -- IO: what this FFmpeg build offers ----------------------------------------------------


@functools.cache
def container_codecs(muxer: str) -> frozenset[str]:
    with av.open(io.BytesIO(), "w", format=muxer) as out:
        return frozenset(out.supported_codecs)


@functools.cache
def _has(name: str, mode: Literal["r", "w"]) -> bool:
    try:
        av.Codec(name, mode)
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def codec_name(stream: Stream) -> str:
    ctx = stream.codec_context
    if ctx is None:
        return "unknown"
    # The canonical name: a decoder named "g726" decodes codec "adpcm_g726".
    return str(ctx.codec.canonical_name)


def canonical(name: str) -> str:
    """The codec a decoder name stands for (``g726`` -> ``adpcm_g726``)."""
    try:
        return str(av.Codec(name, "r").canonical_name)
    except (av.error.FFmpegError, ValueError):
        return name


def plan_for(codec: str, rate: int, channels: int, muxer: str) -> AudioPlan:
    """:func:`plan_audio` for this FFmpeg build and ``muxer``."""
    return plan_audio(
        codec,
        rate,
        channels,
        container_codecs=container_codecs(muxer),
        decodable={codec} if _has(codec, "r") else set(),
        encoders={e for e in (PCM_OUT, "libopus", "aac") if _has(e, "w")},
    )


def plan_for_stream(stream: Stream, muxer: str) -> AudioPlan:
    """:func:`plan_audio` for a demuxed stream and this FFmpeg build."""
    ctx: Any = stream.codec_context
    rate = int(getattr(ctx, "sample_rate", 0) or 0)
    channels = int(getattr(ctx, "channels", 0) or 0)
    return plan_for(codec_name(stream), rate, channels, muxer)


# -- conversion ---------------------------------------------------------------------------


class AudioError(Exception):
    """Audio cannot be converted or written; the message is the reason."""


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo" if channels == 2 else f"{channels}c"


class AudioConverter:
    """Decodes one session's audio packets into frames (the decoder keeps state)."""

    def __init__(self, stream: Stream, plan: AudioPlan) -> None:
        self.plan = plan
        self.undecodable = 0
        # The demuxer's own context: it carries what the container or SDP said
        # (G.726's bits per sample, AAC's config) that a fresh context lacks.
        ctx: Any = stream.codec_context
        if ctx is None:
            raise AudioError(f"cannot decode {plan.source_codec}: no codec parameters")
        try:
            if not ctx.is_open:
                ctx.open()
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioError(f"cannot decode {plan.source_codec}: {exc}") from exc
        self._decoder = ctx

    def decode(self, packet: Packet[Stream]) -> list[AudioFrame]:
        """The packet's samples; a packet the decoder rejects is skipped (counted)."""
        twin = Packet(bytes(packet))
        try:
            return [f for f in self._decoder.decode(twin) if isinstance(f, AudioFrame)]
        except av.error.FFmpegError:
            self.undecodable += 1
            return []


class AudioEncoder:
    """Encodes frames into one segment's audio stream, with continuous timestamps.

    Output timestamps follow the source's (``ts`` of each packet) to the
    sample: PCM packet by packet; encoded audio, re-blocked into fixed frames,
    counts samples and re-anchors when the source is more than a frame away
    (a gap, or FFmpeg's RTCP correction of RTP times). With
    ``follow_timestamps=False`` only the first packet's time counts and the
    samples run on from it: for files, whose audio timestamps can be coarse
    (AVI counts blocks) while the samples themselves are continuous.
    """

    def __init__(self, stream: Any, plan: AudioPlan, *, follow_timestamps: bool = True) -> None:
        self._follow = follow_timestamps
        self.stream = stream
        self.rate = plan.sample_rate
        fmt = av.Codec(plan.encoder, "w").audio_formats
        self._resampler = AudioResampler(
            format=fmt[0].name if fmt else "s16",
            layout=_layout(plan.channels),
            rate=plan.sample_rate,
            # Opus and AAC take fixed frames (20 ms / 1024 samples); PCM any size.
            frame_size=None if plan.encoder == PCM_OUT else self._frame_size(plan),
        )
        # Samples the source may drift from the count before it is followed.
        self._tolerance = 0 if plan.encoder == PCM_OUT else self._frame_size(plan)
        self.time_base = Fraction(1, plan.sample_rate)
        self._in_next: int | None = None  # where the next input samples should start
        self._out_next = 0
        self._buffered = 0  # samples inside the resampler
        self._delay: int | None = None  # encoder look-ahead, shifted away

    @staticmethod
    def _frame_size(plan: AudioPlan) -> int:
        return plan.sample_rate // 50 if plan.encoder == "libopus" else 1024

    def encode(self, frames: list[AudioFrame], ts: float) -> list[Packet[Stream]]:
        """Packets for ``frames`` decoded from a packet at stream time ``ts`` seconds."""
        expected = round(ts * self.rate)
        jumped = self._follow and abs(expected - (self._in_next or 0)) > self._tolerance
        if self._in_next is None or jumped:
            self._in_next = expected
            self._out_next = expected - self._buffered
        out: list[Packet[Stream]] = []
        try:
            for frame in frames:
                frame.pts = None
                got = self._resampler.resample(frame)
                n_in = round(frame.samples * self.rate / (frame.sample_rate or self.rate))
                self._in_next += n_in
                self._buffered += n_in
                out.extend(self._encode(got))
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioError(f"cannot encode {self.stream.codec_context.name}: {exc}") from exc
        return out

    def flush(self) -> list[Packet[Stream]]:
        """The samples still buffered, and the encoder's tail."""
        try:
            out = self._encode(self._resampler.resample(None))
            out.extend(self._shifted(self.stream.encode(None)))
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioError(f"cannot finish {self.stream.codec_context.name}: {exc}") from exc
        return out

    def _encode(self, frames: list[AudioFrame]) -> list[Packet[Stream]]:
        out: list[Packet[Stream]] = []
        for f in frames:
            f.pts = self._out_next
            f.time_base = self.time_base
            self._out_next += f.samples
            self._buffered = max(0, self._buffered - f.samples)
            packets = self.stream.encode(f)
            if self._delay is None and packets:
                # Opus/AAC packets start before their frame (encoder priming);
                # moved back so the first one never precedes the segment start.
                self._delay = max(0, int(f.pts) - int(packets[0].pts or 0))
            out.extend(self._shifted(packets))
        return out

    def _shifted(self, packets: list[Packet[Stream]]) -> list[Packet[Stream]]:
        delay = self._delay or 0
        for p in packets:
            if delay and p.pts is not None:
                p.pts += delay
            if delay and p.dts is not None:
                p.dts += delay
        return packets
