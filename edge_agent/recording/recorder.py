"""One camera source → tagged Matroska segments, video by stream copy.

A :class:`Recorder` owns one source. :meth:`Recorder.run_session` runs in a
worker thread (PyAV's demuxer blocks) and does demux and mux in that same
thread, so there is no queue between reader and writer beyond a quarter
second of reordering (:mod:`edge_agent.recording.interleave`, which puts audio and video
in time order so that a cut splits them at the same instant): memory stays
flat however slow the disk. A session ends when the source fails, stalls
(PyAV read timeout) or is told to stop; the manager reconnects with backoff.

Segments:

- Matroska, because a file cut off by a crash stays readable up to its last
  cluster (plain MP4 does not); clusters are closed every second so a SIGKILL
  loses about a second;
- named by UTC start time in their final folder (the intake's layout) under
  the intake's ``.partial-`` prefix: without a catalog row a segment being
  written is invisible to retention, and reconcile skips the prefix;
- tagged when opened (``edge_agent.*`` tags plus the recording id and
  ``edge_agent.source_id``) because the file is never rewritten: the embedded
  ``end`` is an estimate (start + ``segment_seconds``); the catalog gets the
  real end when the segment is closed, and :func:`adopt_partial` measures it
  for a segment left behind by a crash (:mod:`edge_agent.recording.segment_recovery`);
- a keyframe with new in-band SPS/PPS (the camera's settings were edited)
  starts a new segment whose header matches (:mod:`edge_agent.core.paramsets`);
- timestamps start at zero in every segment; UTC start times come from the
  wall clock at the session's first keyframe plus stream time since, so
  consecutive segments abut exactly.

Audio reaches the segment only when the source asks for it and its location
is a signed audio room (:func:`edge_agent.core.policy.audio_decision`): the audio
stream is then not even demuxed. What happens to it is decided once per
connection (:mod:`edge_agent.media.audio`): copied, decoded to PCM (G.711, G.726) or
encoded to Opus. Audio that cannot be recorded never stops video: the source
records without it, reports ``degraded`` and raises ``alarm.audio_dropped``
(docs/audio.md).
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
import av.error
from av.packet import Packet
from av.stream import Stream

from edge_agent.core import paramsets
from edge_agent.core.model import Tags, TimeSource, iso
from edge_agent.core.segmenter import DEFAULT_MAX_GAP, Action, decide
from edge_agent.host import memtune
from edge_agent.intake.intake import PARTIAL_PREFIX, Origin
from edge_agent.media import media
from edge_agent.media.audio import (
    AudioAction,
    AudioConverter,
    AudioError,
    AudioPlan,
    plan_for_stream,
)
from edge_agent.media.sources import PacketSource, SourceError, open_source
from edge_agent.recording.interleave import Interleaver
from edge_agent.recording.segment_recovery import (
    CONTAINER,
    SOURCE_ID_TAG,
    adopt_partial,
    find_partials,
    recover_partials,
)
from edge_agent.recording.segment_writer import MUXER, SegmentWriter, VideoParams

log = logging.getLogger(__name__)

__all__ = [
    "CONTAINER",
    "SOURCE_ID_TAG",
    "ClosedSegment",
    "PacketTap",
    "Recorder",
    "RecorderSettings",
    "SessionResult",
    "SourceStatus",
    "State",
    "adopt_partial",
    "find_partials",
    "recover_partials",
]

# What was done to the source's audio (e.g. "pcm_mulaw->pcm_s16le"), and why
# a segment of an audio room has none (docs/audio.md).
AUDIO_CONVERSION_TAG = media.TAG_PREFIX + "audio_conversion"
AUDIO_DROPPED_TAG = media.TAG_PREFIX + "audio_dropped"
_BITRATE_WINDOW = 2.0  # seconds between bitrate updates
_DRIFT_CHECK = 5.0  # seconds between clock drift checks


# -- state ----------------------------------------------------------------------


class State:
    STARTING = "starting"
    RECORDING = "recording"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    # Not recording because policy forbids it (no signage), or recording video
    # without the audio it should have (the reason says why).
    DEGRADED = "degraded"
    PAUSED = "paused"  # stopped on purpose (disk pressure, operator)
    STOPPED = "stopped"


@dataclass(frozen=True)
class SourceStatus:
    """One source as telemetry reports it."""

    id: str
    url: str  # redacted
    location: str
    state: str
    reason: str | None = None
    since: datetime | None = None
    audio: bool = False  # audio is being recorded
    last_segment_start: datetime | None = None
    last_segment_end: datetime | None = None
    segments: int = 0
    reconnects: int = 0
    bitrate_bps: int | None = None
    clock_drift_seconds: float | None = None
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "url": self.url,
            "location": self.location,
            "state": self.state,
            "reason": self.reason,
            "since": iso(self.since) if self.since else None,
            "audio": self.audio,
            "last_segment_start": iso(self.last_segment_start) if self.last_segment_start else None,
            "last_segment_end": iso(self.last_segment_end) if self.last_segment_end else None,
            "segments": self.segments,
            "reconnects": self.reconnects,
            "bitrate_bps": self.bitrate_bps,
            "clock_drift_seconds": self.clock_drift_seconds,
            "warnings": list(self.warnings),
        }


# -- packet listeners (live view) ------------------------------------------------


class PacketTap:
    """A bounded copy of a source's packets for one consumer (e.g. a live viewer).

    The recording thread only appends to a ring buffer (oldest dropped when
    full) and never waits for the consumer, so a slow viewer cannot stall the
    recording. Consumers read in asyncio with :meth:`get` or from any thread
    with :meth:`poll`. Audio is offered only when it is being recorded.
    """

    def __init__(self, maxlen: int = 256, on_close: Callable[[PacketTap], None] | None = None):
        self._buf: collections.deque[tuple[str, Packet[Stream]]] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._waiter: Callable[[], object] | None = None
        self._on_close = on_close
        self.dropped = 0
        self.closed = False
        self.video: Stream | None = None  # the current input's streams: codec parameters
        self.audio: Stream | None = None

    def push(self, kind: str, packet: Packet[Stream]) -> None:
        with self._lock:
            if len(self._buf) == self._buf.maxlen:
                self.dropped += 1
            self._buf.append((kind, packet))
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter()

    def poll(self) -> tuple[str, Packet[Stream]] | None:
        with self._lock:
            return self._buf.popleft() if self._buf else None

    async def get(self) -> tuple[str, Packet[Stream]]:
        """The next (kind, packet); kind is "video" or "audio"."""
        import asyncio

        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._buf:
                    return self._buf.popleft()
                if self.closed:
                    raise EOFError("packet tap closed")
                event = asyncio.Event()
                self._waiter = functools.partial(loop.call_soon_threadsafe, event.set)
            await event.wait()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter()
        if self._on_close is not None:
            self._on_close(self)


def _copy_packet(packet: Packet[Stream]) -> Packet[Stream]:
    """An independent packet for listeners: the original is rebased in place when muxed."""
    twin = Packet(bytes(packet))
    twin.pts, twin.dts = packet.pts, packet.dts
    twin.time_base = packet.time_base
    twin.duration = packet.duration
    twin.is_keyframe = packet.is_keyframe
    return twin


# -- segments -----------------------------------------------------------------------


@dataclass(frozen=True)
class ClosedSegment:
    path: Path  # still under its .partial- name
    tags: Tags  # with the real end
    rec_id: str
    origin: Origin
    reason: str  # why it was closed
    damaged: bool = False  # writing failed: probe before registering


# -- one source --------------------------------------------------------------------


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


@dataclass
class SessionResult:
    packets: int = 0
    error: str | None = None
    permanent: bool = False


@dataclass
class _Live:
    """Mutable per-source figures, written by the worker, read by snapshot()."""

    state: str = State.STARTING
    reason: str | None = None
    since: datetime | None = None
    last_segment_start: datetime | None = None
    last_segment_end: datetime | None = None
    segments: int = 0
    reconnects: int = 0
    bitrate_bps: int | None = None
    drift: float | None = None
    warnings: dict[str, str] = field(default_factory=dict)
    last_packet: float = 0.0  # monotonic
    audio: bool = False  # the open segment records audio
    recording: bool = False  # a session is writing segments (also when degraded)


class Recorder:
    """Records one source; sessions run in a worker thread, one at a time."""

    def __init__(
        self,
        settings: RecorderSettings,
        *,
        segment_path: Callable[[Tags, str], Path],
        on_closed: Callable[[ClosedSegment], None],
        now: Callable[[], datetime],
        clock_trusted: Callable[[], bool] = lambda: True,
        open_source_fn: Callable[[RecorderSettings], PacketSource] | None = None,
        on_alarm: Callable[[str, dict[str, object]], None] = lambda _t, _d: None,
    ) -> None:
        self.settings = settings
        self._segment_path = segment_path
        self._on_closed = on_closed
        self._now = now
        self._clock_trusted = clock_trusted
        self._open = open_source_fn or _open_for
        self._lock = threading.Lock()
        self._live = _Live(since=now())
        self._taps: list[PacketTap] = []
        self._on_alarm = on_alarm
        self._alarmed: set[str] = set()  # audio-drop reasons already raised

    # -- status ------------------------------------------------------------------

    def set_state(self, state: str, reason: str | None = None, *, recording: bool = False) -> None:
        """``recording``: a session writes segments (also in ``degraded`` without audio)."""
        with self._lock:
            if (state, reason) != (self._live.state, self._live.reason):
                self._live.since = self._now()
            self._live.state, self._live.reason = state, reason
            if state == State.RECONNECTING:
                self._live.reconnects += 1
            self._live.recording = recording
            if not recording:
                self._live.bitrate_bps = None
                self._live.audio = False

    def status(self) -> SourceStatus:
        s, live = self.settings, self._live
        with self._lock:
            return SourceStatus(
                id=s.source_id,
                url=s.redacted_url,
                location=s.origin.location,
                state=live.state,
                reason=live.reason,
                since=live.since,
                audio=live.audio and live.recording,
                last_segment_start=live.last_segment_start,
                last_segment_end=live.last_segment_end,
                segments=live.segments,
                reconnects=live.reconnects,
                bitrate_bps=live.bitrate_bps,
                clock_drift_seconds=live.drift,
                warnings=tuple(live.warnings.values()),
            )

    def is_recording(self) -> bool:
        """A session is writing segments (state ``recording``, or ``degraded`` without audio)."""
        return self._live.recording

    def seconds_since_packet(self) -> float:
        return time.monotonic() - self._live.last_packet

    # -- listeners -----------------------------------------------------------------

    def add_packet_listener(self, maxlen: int = 256) -> PacketTap:
        tap = PacketTap(maxlen, on_close=self._remove_tap)
        with self._lock:
            self._taps = [*self._taps, tap]
        return tap

    def _remove_tap(self, tap: PacketTap) -> None:
        with self._lock:
            self._taps = [t for t in self._taps if t is not tap]

    # -- the session ---------------------------------------------------------------

    def run_session(self, stop: threading.Event) -> SessionResult:
        """Open the source, record until it fails or ``stop`` is set. Blocking."""
        result = SessionResult()
        try:
            source = self._open(self.settings)
        except SourceError as exc:
            result.error, result.permanent = str(exc), exc.permanent
            return result
        finally:
            memtune.trim()  # probing a camera frees decoder buffers worth megabytes
        try:
            self._record(source, stop, result)
        except SourceError as exc:
            result.error, result.permanent = str(exc), exc.permanent
        finally:
            source.close()
        return result

    def _record(self, source: PacketSource, stop: threading.Event, result: SessionResult) -> None:
        s = self.settings
        audio_in = source.audio if s.keep_audio else None
        plan, converter, problem = _prepare_audio(audio_in)
        if problem is not None:
            audio_in = None
        for tap in self._taps:
            tap.video, tap.audio = source.video, audio_in
        log.info("%s: connected to %s", s.source_id, source.description)
        run = _Run(self, source.video, audio_in, plan, converter)
        if problem is not None and plan is not None:
            run.drop_audio(problem, plan.source_codec)
        order: Interleaver[tuple[Packet[Stream], float]] = Interleaver(
            ("video", "audio") if audio_in is not None else ("video",)
        )
        try:
            for packet in source.packets(stop):
                if stop.is_set():
                    break
                kind = self._kind(packet, source.video, audio_in)
                if kind is None:
                    continue
                result.packets += 1
                ts = run.arrived(kind, packet)
                if ts is None:
                    continue  # no timestamp: a muxer cannot place it
                for k, (p, t) in order.push(kind, ts, (packet, ts)):
                    run.feed(k, p, t)
            for k, (p, t) in order.drain():
                run.feed(k, p, t)
        except OSError as exc:
            # The output side failed (disk full, I/O error): keep what was written.
            run.close(f"write failed: {exc.strerror or exc}", damaged=True)
            raise SourceError(
                f"{s.source_id}: cannot write segment ({exc.strerror or exc})"
            ) from exc
        finally:
            if run.writer is not None:
                run.close("stopped" if stop.is_set() else "source ended")
        if not stop.is_set() and result.error is None and result.packets == 0:
            result.error = f"{s.redacted_url}: no packets"

    @staticmethod
    def _kind(packet: Packet[Stream], video: Stream, audio: Stream | None) -> str | None:
        stream = packet.stream
        if stream is video:
            return "video"
        if audio is not None and stream is audio:
            return "audio"
        # Encoders and demuxers hand out the same stream objects; index is the fallback.
        if stream is not None and stream.index == video.index and stream.type == "video":
            return "video"
        if audio is not None and stream is not None and stream.index == audio.index:
            return "audio"
        return None

    # -- used by _Run ----------------------------------------------------------------

    def _publish(self, kind: str, packet: Packet[Stream]) -> None:
        taps = self._taps
        if not taps:
            return
        twin = _copy_packet(packet)
        for tap in taps:
            tap.push(kind, twin)

    def _note(self, **changes: object) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self._live, k, v)

    def _audio_dropped(self, codec: str, reason: str) -> None:
        log.warning("%s: recording without audio: %s", self.settings.source_id, reason)
        if reason in self._alarmed:
            return  # once per cause, not at every reconnect
        self._alarmed.add(reason)
        s = self.settings
        self._on_alarm(
            "alarm.audio_dropped",
            {
                "source_id": s.source_id,
                "location": s.origin.location,
                "codec": codec,
                "reason": reason,
                "fix": "video is recorded without audio; set the camera's audio to G.711, "
                "AAC or Opus (docs/audio.md)",
            },
        )

    def _warn(self, key: str, text: str | None) -> None:
        with self._lock:
            if text is None:
                self._live.warnings.pop(key, None)
            else:
                self._live.warnings[key] = text


class _Run:
    """The packet loop of one session: segment decisions, wall-clock mapping, figures."""

    def __init__(
        self,
        rec: Recorder,
        video: Stream,
        audio: Stream | None,
        plan: AudioPlan | None = None,
        converter: AudioConverter | None = None,
    ) -> None:
        self.rec = rec
        self.s = rec.settings
        self.video, self.audio = video, audio
        self.plan, self.converter = plan, converter
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

    def arrived(self, kind: str, packet: Packet[Stream]) -> float | None:
        """Note a packet's arrival (stall detection); its stream time in seconds, if any."""
        self.rec._live.last_packet = time.monotonic()
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
        tb = self.tb[kind]
        now_mono = time.monotonic()
        if kind == "audio" and self.audio is None:
            return  # audio dropped during this session
        params = None
        if kind == "video" and packet.is_keyframe and self.track_params:
            params = paramsets.parameter_sets(self.vcodec, bytes(packet))
        d = decide(
            is_video=kind == "video",
            is_keyframe=packet.is_keyframe,
            ts=ts,
            last_ts=self.last_ts.get(kind),
            segment_start=self.writer.start_ts if self.writer else None,
            segment_seconds=self.s.segment_seconds,
            max_gap=self.s.max_gap,
            params_changed=paramsets.changed(self.seg_params, params),
        )
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
            return
        self.last_ts[kind] = ts
        if d.action in (Action.OPEN, Action.CUT):
            raw = packet.dts if packet.dts is not None else packet.pts
            assert raw is not None  # arrived() let only timestamped packets through
            self.open(Fraction(raw) * packet.time_base, now_mono, params)
        self.rec._publish(kind, packet)
        assert self.writer is not None
        self.bytes += packet.size
        if kind == "audio" and self.converter is not None:
            try:
                self.writer.write_frames(self.converter.decode(packet), ts)
            except AudioError as exc:
                self.drop_audio(str(exc), self.converter.plan.source_codec)
        else:
            self.writer.write(kind, packet, ts, tb)
        if kind == "video":
            self._figures(ts, now_mono)

    # -- wall clock ------------------------------------------------------------------

    def _wall(self, ts: float, now_mono: float) -> datetime:
        if self.anchor is None:
            self.anchor = (self.rec._now(), ts, now_mono)
            self.next_drift_check = now_mono + _DRIFT_CHECK
        wall0, ts0, _ = self.anchor
        return wall0 + timedelta(seconds=ts - ts0)

    def _figures(self, ts: float, now_mono: float) -> None:
        t_mark, b_mark = self.bytes_mark
        if now_mono - t_mark >= _BITRATE_WINDOW:
            rate = int((self.bytes - b_mark) * 8 / (now_mono - t_mark))
            self.rec._note(bitrate_bps=rate)
            self.bytes_mark = (now_mono, self.bytes)
        if self.anchor is None or now_mono < self.next_drift_check:
            return
        self.next_drift_check = now_mono + _DRIFT_CHECK
        _, ts0, mono0 = self.anchor
        drift = (ts - ts0) - (now_mono - mono0)
        self.rec._note(drift=round(drift, 3))
        if abs(drift) > self.s.max_drift:
            text = (
                f"source clock drifts {drift:+.1f}s from the local clock "
                f"(more than {self.s.max_drift:g}s): check the camera's frame rate and NTP"
            )
            log.warning(
                "%s: %s; segment times re-anchored to the local clock", self.s.source_id, text
            )
            self.rec._warn("clock_drift", text)
            self.anchor = (self.rec._now(), ts, now_mono)

    # -- segments ----------------------------------------------------------------------

    def drop_audio(self, reason: str, codec: str) -> None:
        """Record video only from now on; the source reports ``degraded`` and raises an alarm."""
        self.audio, self.converter = None, None
        self.audio_problem = reason[:300]
        self.rec._audio_dropped(codec, self.audio_problem)
        if self.writer is not None:
            self._set_recording()

    def _set_recording(self) -> None:
        rec = self.rec
        if self.audio_problem is None:
            state, reason = State.RECORDING, None
        else:
            state, reason = State.DEGRADED, f"recording without audio: {self.audio_problem}"
        live = rec._live
        if (live.state, live.reason, live.recording) != (state, reason, True):
            rec.set_state(state, reason, recording=True)
        has_audio = self.writer is not None and self.writer.has_audio and self.audio is not None
        rec._note(audio=has_audio)

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
        trusted = self.rec._clock_trusted()
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
        final = self.rec._segment_path(self.tags, self.rec_id)
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
        self.rec._note(last_segment_start=start)
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
        with self.rec._lock:
            self.rec._live.segments += 1
            self.rec._live.last_segment_end = end
        self.rec._on_closed(closed)


def _prepare_audio(
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


def _open_for(settings: RecorderSettings) -> PacketSource:
    return open_source(
        settings.url,
        rtsp_transport=settings.rtsp_transport,
        open_timeout=settings.open_timeout,
        read_timeout=settings.stall_seconds,
    )
