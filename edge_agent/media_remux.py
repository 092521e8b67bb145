"""Stream-copy a recording into a taggable container, optionally without audio.

Packets are copied as they are (no decoding, no re-encoding), so a remux costs
about one read and one write of the file. The destination container is the
source's family when that family can carry our tags (MP4, Matroska) and
Matroska otherwise (MPEG-TS, AVI and FLV have no place for arbitrary tags);
when that muxer refuses a kept codec, the next of MP4, Matroska and QuickTime
is tried (G.711 audio fits only QuickTime).
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

import av
import av.error
from av.container import InputContainer, OutputContainer
from av.stream import Disposition, Stream

from edge_agent.media_probe import (
    DEFAULT_MAX_STREAMS,
    TAG_PREFIX,
    MediaError,
    ProbeResult,
    Reason,
    count_packets,
    open_input,
    probe,
    probe_open,
)
from edge_agent.model import iso

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


@contextlib.contextmanager
def _write_errors(dst: Path, doing: str) -> Iterator[None]:
    try:
        yield
    except MediaError:
        raise
    except OSError as exc:  # PyAV's OSError subclasses included (ENOSPC arrives so)
        raise MediaError(
            Reason.WRITE_FAILED, f"{doing}: {exc.strerror or exc} (errno {exc.errno})", dst
        ) from exc
    except (av.error.FFmpegError, ValueError, RuntimeError, EOFError) as exc:
        raise MediaError(Reason.REMUX_FAILED, f"{doing}: {exc}", dst) from exc


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


def _copy_packets(
    inp: InputContainer,
    out: OutputContainer,
    dst: Path,
    mapping: dict[int, Stream],
) -> tuple[int, int, int]:
    selected = [s for s in inp.streams if s.index in mapping]
    video = audio = skipped = 0
    packets = inp.demux(selected)
    while True:
        packet = next(packets, None)  # input errors surface through open_input()
        if packet is None:
            break
        if packet.pts is None and packet.dts is None:
            # Demux flush markers, or data a muxer cannot place in time.
            if packet.size:
                skipped += 1
            continue
        in_type = packet.stream.type
        packet.stream = mapping[packet.stream.index]
        with _write_errors(dst, "mux"):
            out.mux(packet)  # PyAV rescales from the input time base here
        if in_type == "video":
            video += 1
        else:
            audio += 1
    return video, audio, skipped


class _CodecRefused(MediaError):
    """The output muxer cannot hold one of the kept streams."""

    def __init__(self, fmt: OutputFormat, message: str, path: Path) -> None:
        super().__init__(Reason.UNSUPPORTED, message, path)
        self.fmt = fmt


def _add_streams(
    inp: InputContainer, out: OutputContainer, fmt: OutputFormat, dst: Path, drop_audio: bool
) -> dict[int, Stream]:
    mapping: dict[int, Stream] = {}
    for stream in inp.streams:
        if not _keep(stream, drop_audio):
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
    return mapping


def _attempt(
    src: Path,
    dst: Path,
    tags: Mapping[str, str],
    drop_audio: bool,
    container: str | None,
    force: OutputFormat | None,
    max_streams: int,
) -> RemuxResult:
    size = src.stat().st_size if src.is_file() else 0
    with open_input(src) as inp:
        info = probe_open(inp, src, size, max_streams)
        fmt = force or output_format(info, container)
        dropped = tuple(_describe(s) for s in inp.streams if not _keep(s, drop_audio))
        with _write_errors(dst, "open output"):
            out = av.open(str(dst), "w", format=fmt.muxer, container_options=dict(fmt.options))
        try:
            with _write_errors(dst, "write tags"):
                out.metadata.update(_container_tags(info, tags))
            mapping = _add_streams(inp, out, fmt, dst, drop_audio)
            video, audio, skipped = _copy_packets(inp, out, dst, mapping)
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
    )


def remux(
    src: Path,
    dst: Path,
    *,
    tags: Mapping[str, str],
    drop_audio: bool,
    container: str | None = None,
    max_streams: int = DEFAULT_MAX_STREAMS,
) -> RemuxResult:
    """Copy ``src``'s video (and audio unless ``drop_audio``) into ``dst`` with ``tags``.

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
                return _attempt(src, dst, tags, drop_audio, container, force, max_streams)
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
        got = probe(dst)
        packets = count_packets(dst, "video")
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
