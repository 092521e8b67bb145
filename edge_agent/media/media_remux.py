"""Stream-copy a recording into a taggable container, optionally without audio.

Packets are copied as they are (no decoding, no re-encoding), so a remux costs
about one read and one write of the file. The destination container is the
source's family when that family can carry our tags (MP4, Matroska) and
Matroska otherwise (MPEG-TS, AVI and FLV have no place for arbitrary tags);
when that muxer refuses a kept codec, the next of MP4, Matroska and QuickTime
is tried (G.711 audio fits only QuickTime).

Audio none of them holds (G.726, AAC-LATM) is the one exception to the
copy: it is decoded and written as PCM or Opus by the rules the recorder
uses (:mod:`edge_agent.media.audio`, docs/audio.md), and the result is tagged
``edge_agent.audio_conversion``; audio that cannot be converted is left out
(:func:`can_keep_audio` tells the caller beforehand), never the file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import av.error
from av.container import InputContainer, OutputContainer
from av.stream import Disposition, Stream

from edge_agent.core.model import iso
from edge_agent.media.audio import (
    AudioConverter,
    AudioEncoder,
    AudioError,
    AudioPlan,
    canonical,
    plan_for,
)
from edge_agent.media.media_probe import (
    DEFAULT_MAX_STREAMS,
    TAG_PREFIX,
    MediaError,
    ProbeResult,
    Reason,
    count_open,
    indexed_count,
    open_input,
    probe_open,
)
from edge_agent.media.packet_scan import (
    PacketScan,
    PacketScanner,
    indexed_span,
    scanned_streams,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputFormat:
    muxer: str  # FFmpeg muxer name: "mp4" | "matroska" | "mov"
    suffix: str  # file name suffix for the result: ".mp4" | ".mkv" | ".mov"
    options: Mapping[str, str]


MP4 = OutputFormat(
    "mp4",
    ".mp4",
    # Without use_metadata_tags the MP4 muxer silently drops every key outside
    # its fixed iTunes list, including all of ours.
    {"movflags": "use_metadata_tags"},
)
MATROSKA = OutputFormat("matroska", ".mkv", {})
# QuickTime is the last resort: the only taggable container here that takes
# G.711 (pcm_alaw / pcm_mulaw), the audio many IP cameras send.
MOV = OutputFormat("mov", ".mov", {"movflags": "use_metadata_tags"})

_REQUESTABLE = {"mp4": MP4, "mkv": MATROSKA, "matroska": MATROSKA, "mov": MOV}
_FALLBACKS = (MP4, MATROSKA, MOV)

# Tags the demuxer reports but the muxer owns; copying them would write stale
# brands or a misleading encoder string as custom keys.
_MUXER_OWNED = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration"}


@dataclass(frozen=True)
class RemuxResult:
    dst: Path
    muxer: str  # "mp4" | "matroska" | "mov"
    suffix: str  # what the caller should name the file: ".mp4" | ".mkv" | ".mov"
    container_changed: bool  # True when e.g. MPEG-TS became Matroska
    video_packets: int  # video packets written
    audio_packets: int  # audio packets written
    skipped_packets: int  # packets without any timestamp, not written
    dropped_streams: tuple[str, ...]  # "index:type:codec" of streams left out
    audio_removed: bool  # the source had audio and the result has none
    size: int  # bytes written
    audio_conversion: tuple[str, ...] = ()  # e.g. "adpcm_g726->pcm_s16le", per converted stream
    scan: PacketScan | None = None  # the source's packets as read, when asked (remux(scan=))


def output_format(src: ProbeResult, container: str | None = None) -> OutputFormat:
    """Where a remux of ``src`` goes first: its own family if taggable, else Matroska."""
    if container is not None:
        fmt = _REQUESTABLE.get(container.lower())
        if fmt is None:
            raise MediaError(
                Reason.UNSUPPORTED,
                f"output container {container!r} cannot carry tags; use 'mp4', 'mkv' or 'mov'",
            )
        return fmt
    return MP4 if src.family == "mp4" else MATROSKA


@functools.cache
def _supported_codecs(muxer: str) -> frozenset[str]:
    with av.open(io.BytesIO(), "w", format=muxer) as out:
        return frozenset(out.supported_codecs)


def output_container_for(src: ProbeResult, *, drop_audio: bool = False) -> str:
    """``"mp4"``, ``"mkv"`` or ``"mov"``: the container :func:`remux` would pick.

    Usable both as the file extension and as ``remux(container=...)``. Starts
    from :func:`output_format` and moves on (MP4, Matroska, QuickTime) while
    the muxer cannot hold a kept stream's codec, e.g. G.711 audio kept in an
    audio room ends up in QuickTime.
    """
    kept = [s.codec for s in src.video_streams]
    if not drop_audio:
        kept += [s.codec for s in src.audio_streams]
    first = output_format(src)
    for fmt in (first, *(f for f in _FALLBACKS if f is not first)):
        if all(codec in _supported_codecs(fmt.muxer) for codec in kept):
            return fmt.suffix.removeprefix(".")
    return first.suffix.removeprefix(".")  # remux() will say which stream is refused


AUDIO_CONVERSION_TAG = TAG_PREFIX + "audio_conversion"


def _held_somewhere(codec: str) -> bool:
    return any(codec in _supported_codecs(f.muxer) for f in _FALLBACKS)


def audio_plan(codec: str, rate: int, channels: int, fmt: str) -> AudioPlan:
    """What a remux into muxer ``fmt`` does with one audio stream (copy, convert, drop)."""
    return plan_for(canonical(codec), rate, channels, fmt)


def can_keep_audio(src: ProbeResult) -> bool:
    """Whether a remux that keeps audio ends up with some: False when none can be converted."""
    fmt = _REQUESTABLE[output_container_for(src)]
    return any(
        audio_plan(s.codec, s.sample_rate or 0, s.channels or 0, fmt.muxer).keeps_audio
        for s in src.audio_streams
    )


_WRITE_ERRORS = (OSError, av.error.FFmpegError, ValueError, RuntimeError, EOFError)


def _write_error(exc: BaseException, dst: Path, doing: str) -> MediaError:
    if isinstance(exc, OSError):  # PyAV's OSError subclasses included (ENOSPC arrives so)
        return MediaError(
            Reason.WRITE_FAILED, f"{doing}: {exc.strerror or exc} (errno {exc.errno})", dst
        )
    return MediaError(Reason.REMUX_FAILED, f"{doing}: {exc}", dst)


@contextlib.contextmanager
def _write_errors(dst: Path, doing: str) -> Iterator[None]:
    try:
        yield
    except MediaError:
        raise
    except _WRITE_ERRORS as exc:
        raise _write_error(exc, dst, doing) from exc


def _container_tags(src: ProbeResult, tags: Mapping[str, str]) -> dict[str, str]:
    """Source tags (minus muxer-owned and stale agent tags) overlaid with ``tags``."""
    ours = {k.lower() for k in tags}
    merged: dict[str, str] = {}
    for key, value in src.tags.items():
        low = key.lower()
        if low in _MUXER_OWNED or low in ours or low.startswith(TAG_PREFIX):
            continue
        merged[key] = value
    if src.creation_time is not None and "creation_time" not in merged:
        # Found only on the video track (MP4); keep it at the container level,
        # which is where probe() and other tools look first.
        merged["creation_time"] = iso(src.creation_time)
    merged.update(tags)
    return merged


def _keep(stream: Stream, drop_audio: bool) -> bool:
    if stream.type == "video":
        return not stream.disposition & Disposition.attached_pic
    return stream.type == "audio" and not drop_audio


def _describe(stream: Stream) -> str:
    ctx = stream.codec_context
    return f"{stream.index}:{stream.type}:{ctx.name if ctx is not None else 'unknown'}"


_Transcoders = dict[int, tuple[AudioConverter, AudioEncoder]]


def _copy_packets(
    inp: InputContainer,
    out: OutputContainer,
    dst: Path,
    mapping: dict[int, Stream],
    convert: _Transcoders,
    scanner: PacketScanner | None,
    size: int,
) -> tuple[int, int, int]:
    scanned: set[int] = set()
    if scanner is not None:
        for group in scanned_streams(inp):
            for s in group:
                span = None if s.index in mapping else indexed_span(inp, s, size)
                if span is None:
                    scanned.add(s.index)
                else:  # left out and its data all there: the index is its packets
                    scanner.add_span(*span)
    selected = [s for s in inp.streams if s.index in mapping or s.index in scanned]
    video = audio = skipped = 0
    packets = inp.demux(selected)
    while True:
        packet = next(packets, None)  # input errors surface through open_input()
        if packet is None:
            break
        if scanner is not None and packet.stream_index in scanned:
            scanner.feed(packet)
            if packet.stream_index not in mapping:
                continue  # read for the scan only (audio being removed)
        if packet.pts is None and packet.dts is None:
            # Demux flush markers, or data a muxer cannot place in time.
            if packet.size:
                skipped += 1
            continue
        in_type = packet.stream.type
        pair = convert.get(packet.stream.index)
        if pair is not None:
            ts = float(
                (packet.pts if packet.pts is not None else packet.dts or 0) * packet.time_base
            )
            with _write_errors(dst, "convert audio"):
                out.mux(pair[1].encode(pair[0].decode(packet), ts))
            audio += 1
            continue
        packet.stream = mapping[packet.stream.index]
        try:  # not _write_errors: a context manager per packet was a tenth of a remux
            out.mux(packet)  # PyAV rescales from the input time base here
        except _WRITE_ERRORS as exc:
            raise _write_error(exc, dst, "mux") from exc
        if in_type == "video":
            video += 1
        else:
            audio += 1
    for _, encoder in convert.values():
        with _write_errors(dst, "finish audio"):
            out.mux(encoder.flush())
    return video, audio, skipped


class _CodecRefused(MediaError):
    """The output muxer cannot hold one of the kept streams."""

    def __init__(self, fmt: OutputFormat, message: str, path: Path) -> None:
        super().__init__(Reason.UNSUPPORTED, message, path)
        self.fmt = fmt


def _convert_audio(
    stream: Stream, out: OutputContainer, fmt: OutputFormat, forced: bool
) -> tuple[AudioPlan, Stream | None, tuple[AudioConverter, AudioEncoder] | None] | None:
    """None to copy ``stream``; else its plan and, unless dropped, the converted stream."""
    ctx: Any = stream.codec_context
    codec = canonical(ctx.name if ctx is not None else "unknown")
    if codec in _supported_codecs(fmt.muxer) or (not forced and _held_somewhere(codec)):
        return None  # copied here, or refused so that remux() tries the next container
    rate = int(getattr(ctx, "sample_rate", 0) or 0)
    channels = len(ctx.layout.channels) if getattr(ctx, "layout", None) is not None else 0
    plan = plan_for(codec, rate, channels, fmt.muxer)
    if not plan.keeps_audio:
        return plan, None, None
    try:
        converter = AudioConverter(stream, plan)
        target: Any = out.add_stream(plan.encoder, rate=plan.sample_rate)
        target.layout = "mono" if plan.channels == 1 else "stereo"
        if plan.bit_rate:
            target.bit_rate = plan.bit_rate
        return plan, target, (converter, AudioEncoder(target, plan, follow_timestamps=False))
    except (AudioError, av.error.FFmpegError, ValueError) as exc:
        log.info("remux: audio %s left out: %s", codec, exc)
        return plan, None, None


def _add_streams(
    inp: InputContainer,
    out: OutputContainer,
    fmt: OutputFormat,
    dst: Path,
    drop_audio: bool,
    forced: bool = True,
) -> tuple[dict[int, Stream], _Transcoders, list[str], list[str]]:
    """Output streams by input index, the converted ones, conversions done, streams left out."""
    mapping: dict[int, Stream] = {}
    convert: _Transcoders = {}
    conversions: list[str] = []
    left_out: list[str] = []
    for stream in inp.streams:
        if not _keep(stream, drop_audio):
            continue
        if stream.type == "audio":
            decided = _convert_audio(stream, out, fmt, forced)
            if decided is not None:
                plan, target, pair = decided
                if target is None or pair is None:
                    left_out.append(_describe(stream))
                    continue
                mapping[stream.index], convert[stream.index] = target, pair
                conversions.append(plan.conversion or "")
                continue
        try:
            # opaque=True copies the demuxer's codec context instead of looking up
            # an encoder, so codecs we could never encode (HEVC, G.711) still copy.
            out_stream = out.add_stream_from_template(stream, opaque=True)
        except (av.error.FFmpegError, ValueError) as exc:
            raise _CodecRefused(
                fmt, f"{fmt.muxer} cannot hold stream {_describe(stream)}: {exc}", dst
            ) from exc
        if stream.language:
            out_stream.metadata["language"] = stream.language
        mapping[stream.index] = out_stream
    return mapping, convert, conversions, left_out


def _attempt(
    src: Path,
    dst: Path,
    tags: Mapping[str, str],
    drop_audio: bool,
    container: str | None,
    force: OutputFormat | None,
    max_streams: int,
    scan: bool,
) -> RemuxResult:
    size = src.stat().st_size if src.is_file() else 0
    with open_input(src) as inp:
        info = probe_open(inp, src, size, max_streams)
        fmt = force or output_format(info, container)
        dropped_list = [_describe(s) for s in inp.streams if not _keep(s, drop_audio)]
        with _write_errors(dst, "open output"):
            out = av.open(str(dst), "w", format=fmt.muxer, container_options=dict(fmt.options))
        try:
            with _write_errors(dst, "write tags"):
                out.metadata.update(_container_tags(info, tags))
            mapping, convert, conversions, left_out = _add_streams(
                inp, out, fmt, dst, drop_audio, forced=container is not None
            )
            dropped = tuple(dropped_list + left_out)
            if conversions:
                with _write_errors(dst, "write tags"):
                    out.metadata[AUDIO_CONVERSION_TAG] = ",".join(conversions)
            scanner = None
            if scan:
                scanner = PacketScanner({v.index for v in scanned_streams(inp)[0]})
            video, audio, skipped = _copy_packets(inp, out, dst, mapping, convert, scanner, size)
            if video == 0:
                raise MediaError(Reason.REMUX_FAILED, "no video packet to copy", src)
        except BaseException:
            with contextlib.suppress(Exception):
                out.close()  # dst is removed by remux(); keep the first error
            raise
        with _write_errors(dst, "finish"):
            out.close()  # writes the trailer (MP4 moov, Matroska cues)
    natural = {"mp4": (MP4, MOV), "matroska": (MATROSKA,)}.get(info.family, ())
    return RemuxResult(
        dst=dst,
        muxer=fmt.muxer,
        suffix=fmt.suffix,
        container_changed=all(fmt is not n for n in natural),
        video_packets=video,
        audio_packets=audio,
        skipped_packets=skipped,
        dropped_streams=dropped,
        audio_removed=info.has_audio and audio == 0,
        size=dst.stat().st_size,
        audio_conversion=tuple(conversions),
        scan=scanner.result() if scanner is not None else None,
    )


def remux(
    src: Path,
    dst: Path,
    *,
    tags: Mapping[str, str],
    drop_audio: bool,
    container: str | None = None,
    max_streams: int = DEFAULT_MAX_STREAMS,
    scan: bool = False,
) -> RemuxResult:
    """Copy ``src``'s video (and audio unless ``drop_audio``) into ``dst`` with ``tags``.

    ``scan``: also scan every video and audio packet on the way
    (:class:`~edge_agent.media.packet_scan.PacketScanner`, ``result.scan``), so a
    caller that needs both reads the source once.

    ``container`` forces ``"mp4"``, ``"mkv"`` or ``"mov"``; by default see
    :func:`output_format`, and when that container refuses a kept stream's codec
    the next of MP4, Matroska, QuickTime that takes it is used: name the final
    file with ``result.suffix``. Subtitle, data and attachment streams are always left
    out. Writes ``dst`` only (no fsync, no rename: the caller owns the temporary
    name); on failure ``dst`` is removed and MediaError raised.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and dst.samefile(src):
        # Opening the output would truncate the only copy of the footage.
        raise MediaError(Reason.REMUX_FAILED, "destination is the source file", dst)
    tried: list[OutputFormat] = []
    force: OutputFormat | None = None
    try:
        while True:
            try:
                return _attempt(src, dst, tags, drop_audio, container, force, max_streams, scan)
            except _CodecRefused as exc:
                tried.append(exc.fmt)
                rest = [f for f in _FALLBACKS if all(f is not t for t in tried)]
                if container is not None or not rest:
                    raise
                force = rest[0]
                log.info("remux %s: %s; trying %s", src, exc.message, force.muxer)
                dst.unlink(missing_ok=True)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise


def verify(
    src_probe: ProbeResult,
    src_video_packets: int,
    dst: Path,
    *,
    expect_audio: bool,
    tags: Mapping[str, str],
) -> None:
    """Probe ``dst`` again and check it is what the remux promised.

    Raises MediaError("verify_failed") naming every mismatch: video packet count,
    audio present when it must be gone (or gone when it must be kept), a tag
    missing or different, creation time lost.
    """
    dst = Path(dst)
    try:
        # One open for both: each open probes the streams again.
        size = dst.stat().st_size if dst.is_file() else 0
        with open_input(dst) as inp:
            got = probe_open(inp, dst, size, DEFAULT_MAX_STREAMS)
            # The MP4 we wrote indexes every packet; the caller hashes every byte of
            # it next, so reading the packets a second time proved nothing more.
            packets = indexed_count(inp, "video")
            if packets is None:
                packets = count_open(inp, "video")
    except MediaError as exc:
        raise MediaError(
            Reason.VERIFY_FAILED, f"result unreadable ({exc.reason}: {exc.message})", dst
        ) from exc
    problems: list[str] = []
    if packets != src_video_packets:
        problems.append(f"video packets {packets} != source {src_video_packets}")
    if len(got.video_streams) != len(src_probe.video_streams):
        problems.append(
            f"video streams {len(got.video_streams)} != source {len(src_probe.video_streams)}"
        )
    if got.has_audio and not expect_audio:
        problems.append(f"audio stream present ({len(got.audio_streams)}) but must be removed")
    if expect_audio and not got.has_audio:
        problems.append("audio stream missing but must be kept")
    for key, value in tags.items():
        found = got.tags.get(key.lower())
        if found != value:
            problems.append(f"tag {key}={found!r}, expected {value!r}")
    if not _same_time(src_probe.creation_time, got.creation_time):
        problems.append(f"creation_time {got.creation_time} != source {src_probe.creation_time}")
    if problems:
        raise MediaError(Reason.VERIFY_FAILED, "; ".join(problems), dst)


def _same_time(src: datetime | None, dst: datetime | None) -> bool:
    if src is None:
        return True
    # MP4 stores whole seconds; Matroska nanoseconds.
    return dst is not None and abs((src - dst).total_seconds()) < 1.0
