"""Read a media file's container and stream metadata with PyAV.

Only headers and packets are read, never frames: the privacy notice forbids
analysing footage (docs/retention-policy.md). Every failure, whatever PyAV or
the OS raised, leaves this module as a
:class:`MediaError` carrying a short reason code that callers can switch on
(quarantine reason, event field) and a message a person can act on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import av.error
from av.container import InputContainer
from av.stream import Disposition, Stream

from edge_agent.core.model import parse_ts
from edge_agent.media.packet_scan import (
    PacketScan,
    PacketScanner,
    predict_scan,
    scanned_streams,
)

__all__ = ["PacketScan"]  # re-exported: edge_agent.media.media is the import

StreamType = Literal["video", "audio", "subtitle", "data", "attachment", "unknown"]

# Our container tags are named "edge_agent.<field>" (see edge_agent.media.media).
TAG_PREFIX = "edge_agent."

DEFAULT_MAX_STREAMS = 16
MAX_TAGS = 256
MAX_TAG_VALUE_BYTES = 4096
MAX_TAG_KEY_BYTES = 256


class Reason(StrEnum):
    """Machine-friendly causes of a :class:`MediaError`."""

    NOT_FOUND = "not_found"
    UNREADABLE = "unreadable"  # OS refused (permissions, a directory, I/O error)
    EMPTY = "empty"
    NOT_MEDIA = "not_media"  # no demuxer, or not a video container we adopt
    TRUNCATED = "truncated"  # recognisable container cut off (e.g. MP4 without moov)
    CORRUPT = "corrupt"  # recognisable container that fails to parse
    NO_VIDEO = "no_video"
    TOO_MANY_STREAMS = "too_many_streams"
    ABSURD_METADATA = "absurd_metadata"
    BAD_TAGS = "bad_tags"  # our own edge_agent.* tags present but malformed
    UNSUPPORTED = "unsupported"  # a stream or container the target cannot hold
    REMUX_FAILED = "remux_failed"
    # Writing the destination failed in the OS (disk full, I/O error): not the
    # input's fault, so retry later instead of quarantining the source.
    WRITE_FAILED = "write_failed"
    VERIFY_FAILED = "verify_failed"


class MediaError(Exception):
    """A media file could not be used; ``reason`` is a :class:`Reason` value."""

    def __init__(self, reason: str, message: str, path: Path | None = None) -> None:
        self.reason = reason
        self.message = message
        self.path = path
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{reason}: {where}{message}")


# Demuxer name (as PyAV reports it) -> container family. Anything else is
# refused: random bytes occasionally probe as raw MP3 or H.263, which are not
# recordings and cannot carry our tags.
FAMILIES: dict[str, str] = {
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
    "matroska,webm": "matroska",
    "mpegts": "mpegts",
    "avi": "avi",
    "flv": "flv",
}

_ISOBMFF_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"styp", b"moof"}
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"


@dataclass(frozen=True)
class StreamInfo:
    index: int
    type: StreamType
    codec: str
    time_base: Fraction | None = None
    duration: float | None = None  # seconds, from the header when present
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    language: str | None = None
    attached_pic: bool = False  # cover art: a "video" stream that is not footage


@dataclass(frozen=True)
class ProbeResult:
    path: Path
    format_name: str  # demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    family: str  # "mp4" | "matroska" | "mpegts" | "avi" | "flv"
    duration: float | None  # seconds
    start_time: float | None  # seconds
    streams: tuple[StreamInfo, ...]
    creation_time: datetime | None  # aware UTC, as written in the container
    tags: dict[str, str] = field(default_factory=dict)  # container tags, keys lower-cased
    bit_rate: int | None = None
    size: int = 0

    @property
    def video_streams(self) -> tuple[StreamInfo, ...]:
        return tuple(s for s in self.streams if s.type == "video" and not s.attached_pic)

    @property
    def audio_streams(self) -> tuple[StreamInfo, ...]:
        return tuple(s for s in self.streams if s.type == "audio")

    @property
    def has_video(self) -> bool:
        return bool(self.video_streams)

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_streams)


def _sniff_reason(path: Path) -> Reason:
    """Why a file that no demuxer accepted is bad: cut off, damaged or not media."""
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError:
        return Reason.UNREADABLE
    if len(head) >= 8 and head[4:8] in _ISOBMFF_BOXES:
        return Reason.TRUNCATED
    if head.startswith(_EBML_MAGIC) or head[:1] == b"\x47":
        return Reason.CORRUPT
    return Reason.NOT_MEDIA


def _map_error(exc: BaseException, path: Path, doing: str) -> MediaError:
    if isinstance(exc, MediaError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return MediaError(Reason.NOT_FOUND, "file does not exist", path)
    if isinstance(exc, av.error.InvalidDataError):
        reason = _sniff_reason(path)
        hints = {
            Reason.TRUNCATED: "an MP4 whose index (moov) is missing, usually a recording "
            "cut off mid-write; re-export it from the recorder",
            Reason.CORRUPT: "the container header is recognisable but damaged",
            Reason.NOT_MEDIA: "no demuxer recognises this file",
            Reason.UNREADABLE: "the file cannot be read",
        }
        return MediaError(reason, f"{doing}: {hints.get(reason, reason.value)}", path)
    if isinstance(exc, av.error.EOFError):
        return MediaError(Reason.TRUNCATED, f"{doing}: unexpected end of file", path)
    if isinstance(exc, OSError):
        return MediaError(Reason.UNREADABLE, f"{doing}: {exc.strerror or exc}", path)
    if isinstance(exc, UnicodeError):
        return MediaError(Reason.CORRUPT, f"{doing}: undecodable metadata ({exc})", path)
    return MediaError(Reason.CORRUPT, f"{doing}: {type(exc).__name__}: {exc}", path)


@contextlib.contextmanager
def av_errors(path: Path, doing: str) -> Iterator[None]:
    """Turn anything PyAV or the OS raises inside the block into a MediaError."""
    try:
        yield
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError, EOFError) as exc:
        raise _map_error(exc, path, doing) from exc


def _check_file(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MediaError(Reason.NOT_FOUND, "file does not exist", path) from None
    except OSError as exc:
        raise MediaError(Reason.UNREADABLE, f"cannot stat: {exc.strerror}", path) from exc
    if not path.is_file():
        raise MediaError(Reason.UNREADABLE, "not a regular file", path)
    if st.st_size == 0:
        raise MediaError(Reason.EMPTY, "file is empty (0 bytes)", path)
    return st.st_size


# MP4/QuickTime headers (the moov box) carry every codec parameter we read or copy
# (size, sample rate, layout, extradata), so their streams are not probed by reading
# packets: FFmpeg's default probe (up to 5 MB and 5 s of packets, decoding some) was
# a fifth of an adoption's CPU (bench/adoption.py), and a remux of such an input is
# byte-identical (tests/media/test_quick_open.py). Everything else gets the full probe:
# containers that describe streams only in their packets (MPEG-TS, FLV, AVI), Matroska
# (its stream start times come from the probe), and headers that leave a parameter out.
_HEADER_FAMILIES = frozenset({"mp4"})
_QUICK_PROBE = {"probesize": "32", "analyzeduration": "0", "codec_whitelist": "none"}


def _described(container: InputContainer) -> bool:
    """Whether the header alone gave every stream what probe and remux use."""
    if FAMILIES.get(container.format.name) not in _HEADER_FAMILIES:
        return False
    for stream in container.streams:
        ctx: Any = stream.codec_context
        if ctx is None or ctx.name in ("", "none"):
            return False
        if stream.type == "video" and not (ctx.width and ctx.height):
            return False
        if stream.type == "audio":
            layout = getattr(ctx, "layout", None)
            if not ctx.sample_rate or layout is None or not layout.channels:
                return False
    return True


def _open(path: Path, quick: bool) -> InputContainer:
    # "replace": a camera that writes Latin-1 tags must not make the file unreadable.
    if not quick:
        return av.open(str(path), "r", metadata_errors="replace")
    container = av.open(str(path), "r", metadata_errors="replace", options=_QUICK_PROBE)
    if _described(container):
        return container
    container.close()
    return av.open(str(path), "r", metadata_errors="replace")


@contextlib.contextmanager
def open_input(path: Path, *, quick: bool = True) -> Iterator[InputContainer]:
    """Open ``path`` for demuxing; errors (also those inside the block) become MediaError.

    ``quick=False`` always runs FFmpeg's full stream probe (see :data:`_QUICK_PROBE`).
    """
    _check_file(path)
    with av_errors(path, "open"):
        container = _open(path, quick)
    try:
        with av_errors(path, "read"):
            yield container
    finally:
        container.close()


def _seconds(value: int | None, time_base: Fraction) -> float | None:
    if value is None:
        return None
    return float(value * time_base)


def _stream_info(stream: Stream) -> StreamInfo:
    tb = stream.time_base
    ctx = stream.codec_context
    codec = ctx.name if ctx is not None else "unknown"
    info = StreamInfo(
        index=stream.index,
        type=stream.type,
        codec=codec,
        time_base=tb,
        duration=_seconds(stream.duration, tb) if tb else None,
        language=stream.language,
        attached_pic=bool(stream.disposition & Disposition.attached_pic),
    )
    if stream.type == "video":
        vctx = stream.codec_context
        width = getattr(vctx, "width", 0) or None
        height = getattr(vctx, "height", 0) or None
        return replace(info, width=width, height=height)
    if stream.type == "audio":
        actx = stream.codec_context
        rate = getattr(actx, "sample_rate", 0) or None
        layout = getattr(actx, "layout", None)
        channels = len(layout.channels) if layout is not None else None
        return replace(info, sample_rate=rate, channels=channels)
    return info


def _check_metadata(path: Path, groups: list[dict[str, str]]) -> None:
    count = sum(len(g) for g in groups)
    if count > MAX_TAGS:
        raise MediaError(Reason.ABSURD_METADATA, f"{count} metadata tags (limit {MAX_TAGS})", path)
    for group in groups:
        for key, value in group.items():
            kb, vb = len(key.encode()), len(value.encode())
            if kb > MAX_TAG_KEY_BYTES or vb > MAX_TAG_VALUE_BYTES:
                raise MediaError(
                    Reason.ABSURD_METADATA,
                    f"tag {key[:40]!r} is {kb}+{vb} bytes "
                    f"(limits {MAX_TAG_KEY_BYTES} key, {MAX_TAG_VALUE_BYTES} value)",
                    path,
                )


def parse_creation_time(tags: dict[str, str]) -> datetime | None:
    """``creation_time`` from lower-cased tags as aware UTC, or None if absent or bad."""
    raw = tags.get("creation_time")
    if not raw:
        return None
    try:
        return parse_ts(raw)
    except ValueError:
        return None


def probe_open(container: InputContainer, path: Path, size: int, max_streams: int) -> ProbeResult:
    """Build a ProbeResult from an open container, enforcing the sanity limits."""
    family = FAMILIES.get(container.format.name)
    if family is None:
        raise MediaError(
            Reason.NOT_MEDIA,
            f"detected as {container.format.name!r}, not a video container "
            f"this agent adopts (MP4, Matroska, MPEG-TS, AVI, FLV)",
            path,
        )
    streams = list(container.streams)
    if len(streams) > max_streams:
        raise MediaError(
            Reason.TOO_MANY_STREAMS,
            f"{len(streams)} streams (limit {max_streams}); cameras write one or two",
            path,
        )
    _check_metadata(path, [dict(container.metadata), *(dict(s.metadata) for s in streams)])
    tags = {k.lower(): v for k, v in container.metadata.items()}
    infos = tuple(_stream_info(s) for s in streams)
    creation = parse_creation_time(tags)
    if creation is None:
        # MP4 also stamps each track; use the first video track's if the movie has none.
        for s in streams:
            if s.type == "video":
                creation = parse_creation_time({k.lower(): v for k, v in s.metadata.items()})
                break
    micro = Fraction(1, 1_000_000)
    result = ProbeResult(
        path=path,
        format_name=container.format.name,
        family=family,
        duration=_seconds(container.duration, micro),
        start_time=_seconds(container.start_time, micro),
        streams=infos,
        creation_time=creation,
        tags=tags,
        bit_rate=container.bit_rate or None,
        size=size,
    )
    if not result.has_video:
        kinds = ", ".join(f"{s.type}:{s.codec}" for s in infos) or "none"
        raise MediaError(Reason.NO_VIDEO, f"no video stream (streams: {kinds})", path)
    return result


def probe_and_scan(
    path: Path, *, max_streams: int = DEFAULT_MAX_STREAMS, predict: bool = False
) -> tuple[ProbeResult, PacketScan]:
    """:func:`probe` and :func:`scan_packets` with one open (each open probes the
    streams again: a sixth of an adoption's time, bench/adoption.py).

    ``predict``: an MP4's scan comes from its index (:func:`predict_scan`, not
    ``measured``) and the caller measures it during its remux.
    """
    path = Path(path)
    size = _check_file(path)
    with open_input(path) as container:
        info = probe_open(container, path, size, max_streams)
        predicted = predict_scan(container) if predict else None
        return info, predicted if predicted is not None else scan_open(container)


def probe(path: Path, *, max_streams: int = DEFAULT_MAX_STREAMS) -> ProbeResult:
    """Container and stream metadata of ``path``; raises MediaError if it is not usable."""
    path = Path(path)
    size = _check_file(path)
    with open_input(path) as container:
        return probe_open(container, path, size, max_streams)


def _selected(container: InputContainer, stream_type: StreamType) -> list[Stream]:
    return [
        s
        for s in container.streams
        if s.type == stream_type and not s.disposition & Disposition.attached_pic
    ]


def count_packets(path: Path, stream_type: StreamType = "video") -> int:
    """Number of packets in all streams of ``stream_type`` (demux only, no decoding)."""
    path = Path(path)
    with open_input(path) as container:
        return count_open(container, stream_type)


def indexed_count(container: InputContainer, stream_type: StreamType = "video") -> int | None:
    """Packets of ``stream_type`` as an MP4 index lists them, without reading any; None
    when the container keeps no such index (Matroska, MPEG-TS, fragmented MP4)."""
    streams = _selected(container, stream_type)
    if FAMILIES.get(container.format.name) != "mp4" or not streams:
        return None
    frames = [s.frames for s in streams]
    return sum(frames) if all(f > 0 for f in frames) else None


def count_open(container: InputContainer, stream_type: StreamType = "video") -> int:
    """:func:`count_packets` on a container already open (and probed)."""
    streams = _selected(container, stream_type)
    if not streams:
        return 0
    count = 0
    for packet in container.demux(streams):
        # PyAV ends each stream with an empty flush packet; it is not data.
        if packet.size == 0 and packet.pts is None and packet.dts is None:
            continue
        count += 1
    return count


def scan_packets(path: Path) -> PacketScan:
    """Demux (never decode) the video and audio packets of ``path``: count and real span."""
    path = Path(path)
    with open_input(path) as container:
        return scan_open(container)


def scan_open(container: InputContainer) -> PacketScan:
    """:func:`scan_packets` on a container already open (and probed)."""
    video, audio = scanned_streams(container)
    if not video:
        return PacketScan(0, 0.0, 0.0)
    scanner = PacketScanner({s.index for s in video})
    for packet in container.demux([*video, *audio]):
        scanner.feed(packet)
    return scanner.result()
