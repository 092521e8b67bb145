"""One recording session's writing: segment decisions, wall clock, figures, the open file.

:class:`Run` is fed the session's packets in time order by
:meth:`edge_agent.recording.recorder.Recorder.run_session` (in the recorder's
worker thread) and owns the open :class:`SegmentWriter`: it cuts by duration,
gap or new in-band parameter sets (:func:`edge_agent.core.segmenter.decide`),
maps stream time to UTC, tags each file when it opens and hands every closed
segment back to its :class:`RunHost` (the recorder). Each packet that goes
into a segment is offered to the live view first
(:meth:`RunHost.publish`), because the muxer rebases it in place.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av.error
from av.packet import Packet
from av.stream import Stream

from edge_agent.core import paramsets
from edge_agent.core.model import Tags, TimeSource, iso
from edge_agent.core.segmenter import DEFAULT_MAX_GAP, Action, Decision, decide
from edge_agent.intake.intake import PARTIAL_PREFIX, Origin
from edge_agent.media import media
from edge_agent.media.audio import (
    AudioAction,
    AudioConverter,
    AudioError,
    AudioPlan,
    plan_for_stream,
)
from edge_agent.recording.mask import MaskSettings
from edge_agent.recording.segment_recovery import SOURCE_ID_TAG
from edge_agent.recording.segment_writer import MUXER, SegmentWriter, VideoParams
from edge_agent.recording.status import LiveFigures, State

log = logging.getLogger(__name__)

__all__ = [
    "AUDIO_CONVERSION_TAG",
    "AUDIO_DROPPED_TAG",
    "ClosedSegment",
    "RecorderSettings",
    "Run",
    "RunHost",
    "prepare_audio",
]

# What was done to the source's audio (e.g. "pcm_mulaw->pcm_s16le"), and why
# a segment of an audio room has none (docs/audio.md).
AUDIO_CONVERSION_TAG = media.TAG_PREFIX + "audio_conversion"
AUDIO_DROPPED_TAG = media.TAG_PREFIX + "audio_dropped"
_BITRATE_WINDOW = 2.0  # seconds between bitrate updates
_DRIFT_CHECK = 5.0  # seconds between clock drift checks


@dataclass(frozen=True)
class RecorderSettings:
    source_id: str
    url: str
    redacted_url: str
    origin: Origin
    device_id: str
    segment_seconds: float
    keep_audio: bool
    rtsp_transport: str = "tcp"
    open_timeout: float = 10.0
    stall_seconds: float = 10.0
    max_gap: float = DEFAULT_MAX_GAP
    max_drift: float = 10.0
    # Privacy masks applied while recording (mask_at_recording): the video is
    # decoded, filled and re-encoded instead of copied (docs/anonymization.md).
    mask: MaskSettings | None = None


@dataclass(frozen=True)
class ClosedSegment:
    path: Path  # still under its .partial- name
    tags: Tags  # with the real end
    rec_id: str
    origin: Origin
    reason: str  # why it was closed
    damaged: bool = False  # writing failed: probe before registering


class RunHost(Protocol):
    """What a :class:`Run` needs from its recorder (implemented by ``Recorder``)."""

    settings: RecorderSettings
    live: LiveFigures  # last_packet is written without the lock: one float, one writer

    def now(self) -> datetime: ...

    def clock_trusted(self) -> bool: ...

    def segment_path(self, tags: Tags, rec_id: str) -> Path: ...

    def set_state(
        self, state: str, reason: str | None = None, *, recording: bool = False
    ) -> None: ...

    def note(self, **changes: object) -> None: ...

    def warn(self, key: str, text: str | None) -> None: ...

    def audio_dropped(self, codec: str, reason: str) -> None: ...

    def segment_closed(self, closed: ClosedSegment) -> None: ...


Publish = Callable[[str, "Packet[Stream]"], None]


class Run:
    """The packet loop of one session: segment decisions, wall-clock mapping, figures."""

    def __init__(
        self,
        host: RunHost,
        video: Stream,
        audio: Stream | None,
        plan: AudioPlan | None = None,
        converter: AudioConverter | None = None,
        *,
        publish: Publish | None = None,
    ) -> None:
        self.host = host
        self.s = host.settings
        self.video, self.audio = video, audio
        self.plan, self.converter = plan, converter
        self.publish = publish
        self.audio_problem: str | None = None
        # In-band parameter sets (Annex-B sources only): a change cuts the segment.
        ctx = video.codec_context
        self.vcodec = str(ctx.codec.canonical_name) if ctx is not None else ""
        extradata = bytes(ctx.extradata or b"") if ctx is not None else b""
        self.track_params = paramsets.is_annexb(extradata) and self.vcodec in ("h264", "hevc")
        self.baseline = paramsets.parameter_sets(self.vcodec, extradata) if extradata else None
        self.seg_params: paramsets.ParamSets | None = None
        self.writer: SegmentWriter | None = None
        self.tags: Tags | None = None
        self.rec_id = ""
        self.last_ts: dict[str, float] = {}
        # stream time -> UTC: (wall at anchor, stream seconds at anchor, monotonic at anchor)
        self.anchor: tuple[datetime, float, float] | None = None
        self.tb: dict[str, float] = {}
        self.next_drift_check = 0.0
        self.bytes = 0
        self.bytes_mark = (time.monotonic(), 0)
        self.figures_due = 0.0  # monotonic time :meth:`_figures` is next due

    def arrived(self, kind: str, packet: Packet[Stream]) -> float | None:
        """Note a packet's arrival (stall detection); its stream time in seconds, if any."""
        self.host.live.last_packet = time.monotonic()
        raw = packet.dts if packet.dts is not None else packet.pts
        if raw is None:
            return None
        # Time bases are fixed per stream; Fraction arithmetic per packet costs more
        # CPU than the copy itself, so the hot path uses a cached float.
        tb = self.tb.get(kind)
        if tb is None:
            tb = self.tb[kind] = float(packet.time_base)
        return raw * tb

    def feed(self, kind: str, packet: Packet[Stream], ts: float) -> None:
        """One packet, in time order, at stream time ``ts`` (from :meth:`arrived`)."""
        is_video = kind == "video"
        if not is_video and self.audio is None:
            return  # audio dropped during this session
        # Every packet of every camera comes through here: what a packet needs is
        # read once into locals, and the parameter-set scan runs on keyframes only.
        keyframe = is_video and packet.is_keyframe
        now_mono = time.monotonic()
        params = None
        if keyframe and self.track_params:
            params = paramsets.parameter_sets(self.vcodec, bytes(packet))
        writer = self.writer
        d = decide(
            is_video=is_video,
            is_keyframe=keyframe,
            ts=ts,
            last_ts=self.last_ts.get(kind),
            segment_start=writer.start_ts if writer is not None else None,
            segment_seconds=self.s.segment_seconds,
            max_gap=self.s.max_gap,
            params_changed=params is not None and paramsets.changed(self.seg_params, params),
        )
        if d.action is not Action.WRITE:
            writer = self._edge(d, kind, packet, ts, now_mono, params)
            if writer is None:
                return
        self.last_ts[kind] = ts
        if self.publish is not None:
            # Before the write: the muxer rebases the packet's timestamps in place.
            self.publish(kind, packet)
        assert writer is not None
        self.bytes += packet.size
        if not is_video and self.converter is not None:
            try:
                writer.write_frames(self.converter.decode(packet), ts)
            except AudioError as exc:
                self.drop_audio(str(exc), self.converter.plan.source_codec)
        else:
            writer.write(kind, packet, ts, self.tb[kind])
        if is_video and now_mono >= self.figures_due:
            self._figures(ts, now_mono)

    def _edge(
        self,
        d: Decision,
        kind: str,
        packet: Packet[Stream],
        ts: float,
        now_mono: float,
        params: paramsets.ParamSets | None,
    ) -> SegmentWriter | None:
        """Cut, close or open a segment at this packet: the writer it goes to, if any."""
        if d.action in (Action.CUT, Action.CLOSE):
            if d.reason == "duration" and self.writer is not None:
                # Segments abut: this one ends where the next begins (packets come
                # in time order, so only an audio frame straddling the cut plays
                # a few ms past it in the file).
                self.writer.end_ts = ts
            self.close(d.reason)
            if d.reason == "video parameters changed":
                log.warning("%s: %s; new segment from this keyframe", self.s.source_id, d.reason)
            elif d.reason != "duration":
                log.warning("%s: %s; new segment at the next keyframe", self.s.source_id, d.reason)
                self.last_ts.clear()
                self.anchor = None
        if d.action in (Action.SKIP, Action.CLOSE):
            self.last_ts[kind] = ts
            return None
        raw = packet.dts if packet.dts is not None else packet.pts
        assert raw is not None  # arrived() let only timestamped packets through
        self.open(Fraction(raw) * packet.time_base, now_mono, params)
        return self.writer

    # -- wall clock ------------------------------------------------------------------

    def _wall(self, ts: float, now_mono: float) -> datetime:
        if self.anchor is None:
            self.anchor = (self.host.now(), ts, now_mono)
            self.next_drift_check = now_mono + _DRIFT_CHECK
            self._figures_next()
        wall0, ts0, _ = self.anchor
        return wall0 + timedelta(seconds=ts - ts0)

    def _figures(self, ts: float, now_mono: float) -> None:
        t_mark, b_mark = self.bytes_mark
        if now_mono - t_mark >= _BITRATE_WINDOW:
            rate = int((self.bytes - b_mark) * 8 / (now_mono - t_mark))
            self.host.note(bitrate_bps=rate)
            self.bytes_mark = (now_mono, self.bytes)
        self._figures_next()
        if self.anchor is None or now_mono < self.next_drift_check:
            return
        self.next_drift_check = now_mono + _DRIFT_CHECK
        self._figures_next()
        _, ts0, mono0 = self.anchor
        drift = (ts - ts0) - (now_mono - mono0)
        self.host.note(drift=round(drift, 3))
        if abs(drift) > self.s.max_drift:
            text = (
                f"source clock drifts {drift:+.1f}s from the local clock "
                f"(more than {self.s.max_drift:g}s): check the camera's frame rate and NTP"
            )
            log.warning(
                "%s: %s; segment times re-anchored to the local clock", self.s.source_id, text
            )
            self.host.warn("clock_drift", text)
            self.anchor = (self.host.now(), ts, now_mono)

    def _figures_next(self) -> None:
        """When :meth:`_figures` has something to do: the next bitrate or drift figure."""
        due = self.bytes_mark[0] + _BITRATE_WINDOW
        if self.anchor is not None:
            due = min(due, self.next_drift_check)
        self.figures_due = due

    # -- segments ----------------------------------------------------------------------

    def drop_audio(self, reason: str, codec: str) -> None:
        """Record video only from now on; the source reports ``degraded`` and raises an alarm."""
        self.audio, self.converter = None, None
        self.audio_problem = reason[:300]
        self.host.audio_dropped(codec, self.audio_problem)
        if self.writer is not None:
            self._set_recording()

    def _set_recording(self) -> None:
        host = self.host
        if self.audio_problem is None:
            state, reason = State.RECORDING, None
        else:
            state, reason = State.DEGRADED, f"recording without audio: {self.audio_problem}"
        live = host.live
        if (live.state, live.reason, live.recording) != (state, reason, True):
            host.set_state(state, reason, recording=True)
        has_audio = self.writer is not None and self.writer.has_audio and self.audio is not None
        host.note(audio=has_audio)

    def open(
        self, exact: Fraction, now_mono: float, params: paramsets.ParamSets | None = None
    ) -> None:
        if params is not None:
            old = self.seg_params
            if old is None or paramsets.changed(old, params):
                old = self.baseline
            self.seg_params = paramsets.merged(old, params)
        elif self.seg_params is None:
            self.seg_params = self.baseline
        video_params = None
        seg = self.seg_params
        if seg is not None and paramsets.changed(self.baseline, seg):
            # The stream's header (SDP) no longer describes its packets.
            w, h = seg.dimensions() or (0, 0)
            video_params = VideoParams(seg.annexb, w, h)
        self.writer = self._new_writer(exact, now_mono, video_params)
        if self.writer.audio_error is not None and self.plan is not None:
            # The muxer refused the audio stream: this segment and the rest of the
            # session go without it, so the file's tags must say so.
            self.writer.close()
            self.writer.path.unlink(missing_ok=True)
            self.drop_audio(self.writer.audio_error, self.plan.source_codec)
            self.writer = self._new_writer(exact, now_mono, video_params)
        self._set_recording()

    def _new_writer(
        self, exact: Fraction, now_mono: float, video_params: VideoParams | None
    ) -> SegmentWriter:
        s = self.s
        start = self._wall(float(exact), now_mono)
        trusted = self.host.clock_trusted()
        self.tags = Tags(
            location=s.origin.location,
            purpose=s.origin.purpose,
            site=s.origin.site,
            audio=self.audio is not None,
            anonymized=s.origin.anonymized,
            start=start,
            # Unknown until the segment closes; the catalog gets the real end.
            end=start + timedelta(seconds=s.segment_seconds),
            time_source=TimeSource.RECORDER if trusted else TimeSource.UNTRUSTED,
            device=s.device_id,
        )
        self.rec_id = uuid.uuid4().hex
        final = self.host.segment_path(self.tags, self.rec_id)
        path = final.with_name(PARTIAL_PREFIX + final.name)
        file_tags = media.encode_tags(self.tags, recording_id=self.rec_id)
        file_tags[SOURCE_ID_TAG] = s.source_id
        file_tags["creation_time"] = iso(start)
        if self.audio is not None and self.plan is not None and self.plan.conversion:
            file_tags[AUDIO_CONVERSION_TAG] = self.plan.conversion
        if self.audio_problem is not None:
            file_tags[AUDIO_DROPPED_TAG] = self.audio_problem
        writer = SegmentWriter(
            path,
            file_tags,
            self.video,
            self.audio,
            exact,
            audio_plan=self.plan,
            video_params=video_params,
        )
        self.host.note(last_segment_start=start)
        return writer

    def close(self, reason: str, *, damaged: bool = False) -> None:
        writer, tags = self.writer, self.tags
        self.writer, self.tags = None, None
        if writer is None or tags is None:
            return
        try:
            writer.close()
        except (OSError, av.error.FFmpegError) as exc:
            log.error("%s: closing %s failed: %s", self.s.source_id, writer.path.name, exc)
            damaged = True
        if writer.video_packets == 0:
            writer.path.unlink(missing_ok=True)
            return
        end = tags.start + timedelta(seconds=writer.seconds)
        closed = ClosedSegment(
            writer.path, replace(tags, end=end), self.rec_id, self.s.origin, reason, damaged
        )
        self.host.segment_closed(closed)


def prepare_audio(
    audio: Stream | None,
) -> tuple[AudioPlan | None, AudioConverter | None, str | None]:
    """The source's audio plan (decided once per connection), its converter, or why not."""
    if audio is None:
        return None, None, None
    plan = plan_for_stream(audio, MUXER)
    if plan.action is AudioAction.DROP:
        return plan, None, plan.reason
    if plan.action is AudioAction.COPY:
        return plan, None, None
    try:
        return plan, AudioConverter(audio, plan), None
    except AudioError as exc:
        return plan, None, str(exc)
