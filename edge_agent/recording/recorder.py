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
- the open file, cuts, tags and wall-clock mapping of one session are
  :class:`edge_agent.recording.run.Run`; the status model is
  :mod:`edge_agent.recording.status`;
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

Privacy masks (``mask_at_recording``): the video of such a source is decoded,
its polygons filled and re-encoded in the same worker thread
(:mod:`edge_agent.recording.mask`); the segments and the live view get only
the masked packets. A source whose masking cannot be set up does not record
at all rather than record unmasked (docs/anonymization.md).

Live view: with a :class:`~edge_agent.recording.packethub.PacketHub` attached,
the worker publishes every recorded packet straight into it. The hub copies
a packet only for a source someone watches; otherwise a publish is a lock,
a dict lookup and two counters (docs/design/architecture.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from av.packet import Packet
from av.stream import Stream

from edge_agent.core.model import Tags
from edge_agent.host import memtune
from edge_agent.media.sources import PacketSource, SourceError, open_source
from edge_agent.recording.interleave import Interleaver
from edge_agent.recording.mask import MaskError, MaskingEncoder
from edge_agent.recording.run import (
    AUDIO_CONVERSION_TAG,
    AUDIO_DROPPED_TAG,
    ClosedSegment,
    RecorderSettings,
    Run,
    prepare_audio,
)
from edge_agent.recording.segment_recovery import (
    CONTAINER,
    SOURCE_ID_TAG,
    adopt_partial,
    find_partials,
    recover_partials,
)
from edge_agent.recording.status import LiveFigures, SourceStatus, State

if TYPE_CHECKING:
    from edge_agent.recording.packethub import PacketHub

log = logging.getLogger(__name__)

__all__ = [
    "AUDIO_CONVERSION_TAG",
    "AUDIO_DROPPED_TAG",
    "CONTAINER",
    "SOURCE_ID_TAG",
    "ClosedSegment",
    "Recorder",
    "RecorderSettings",
    "SessionResult",
    "SourceStatus",
    "State",
    "adopt_partial",
    "find_partials",
    "recover_partials",
]


@dataclass
class SessionResult:
    packets: int = 0
    error: str | None = None
    permanent: bool = False


class Recorder:
    """Records one source; sessions run in a worker thread, one at a time.

    ``hub``: the live view's packet hub, or None (no live view). Read when a
    session opens, so attach it before the sessions start.
    """

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
        hub: PacketHub | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self._segment_path = segment_path
        self._on_closed = on_closed
        self._now = now
        self._clock_trusted = clock_trusted
        self._open = open_source_fn or _open_for
        self._lock = threading.Lock()
        self.live = LiveFigures(since=now())
        self._on_alarm = on_alarm
        self._alarmed: set[str] = set()  # audio-drop reasons already raised

    # -- status ------------------------------------------------------------------

    def set_state(self, state: str, reason: str | None = None, *, recording: bool = False) -> None:
        """``recording``: a session writes segments (also in ``degraded`` without audio)."""
        with self._lock:
            if (state, reason) != (self.live.state, self.live.reason):
                self.live.since = self._now()
            self.live.state, self.live.reason = state, reason
            if state == State.RECONNECTING:
                self.live.reconnects += 1
            self.live.recording = recording
            if not recording:
                self.live.bitrate_bps = None
                self.live.audio = False

    def status(self) -> SourceStatus:
        s, live = self.settings, self.live
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
        return self.live.recording

    def seconds_since_packet(self) -> float:
        return time.monotonic() - self.live.last_packet

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
        plan, converter, problem = prepare_audio(audio_in)
        if problem is not None:
            audio_in = None
        log.info("%s: connected to %s", s.source_id, source.description)
        masker = self._masker(source.video)
        video = masker.stream if masker is not None else source.video
        # Codec parameters are read once per connection, not per packet.
        hub = self.hub
        publish = hub.publisher(s.source_id, video, audio_in) if hub else None
        run = Run(self, video, audio_in, plan, converter, publish=publish)
        if problem is not None and plan is not None:
            run.drop_audio(problem, plan.source_codec)
        order: Interleaver[tuple[Packet[Stream], float]] = Interleaver(
            ("video", "audio") if audio_in is not None else ("video",)
        )

        # Bound once: this loop runs for every packet of every camera.
        arrived, run_feed, push = run.arrived, run.feed, order.push
        video_in = source.video
        is_set = stop.is_set

        def feed(kind: str, packet: Packet[Stream]) -> None:
            ts = arrived(kind, packet)
            if ts is None:
                return  # no timestamp: a muxer cannot place it
            for k, (p, t) in push(kind, ts, (packet, ts)):
                run_feed(k, p, t)
            if masker is not None and run.writer is not None:
                # Keyframes are forced from where the open segment starts.
                masker.realign(run.writer.start_ts)

        try:
            for packet in source.packets(stop):
                if is_set():
                    break
                stream = packet.stream
                if stream is video_in:
                    kind = "video"
                elif stream is audio_in and stream is not None:
                    kind = "audio"
                else:
                    found = self._kind(packet, video_in, audio_in)
                    if found is None:
                        continue
                    kind = found
                result.packets += 1
                if masker is None:
                    # feed() inline: the path of every packet of an unmasked camera.
                    ts = arrived(kind, packet)
                    if ts is not None:
                        for k, (p, t) in push(kind, ts, (packet, ts)):
                            run_feed(k, p, t)
                    continue
                if kind != "video":
                    feed(kind, packet)
                    continue
                self.live.last_packet = time.monotonic()  # arrival, for stall detection
                for masked in masker.feed(packet):
                    feed("video", masked)
            if masker is not None:
                for masked in masker.flush():
                    feed("video", masked)
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
            if masker is not None:
                masker.close()
        if not stop.is_set() and result.error is None and result.packets == 0:
            result.error = f"{s.redacted_url}: no packets"

    def _masker(self, video: Stream) -> MaskingEncoder | None:
        """The decode-fill-encode stage of a masked source; never a fallback to copy."""
        s = self.settings
        if s.mask is None:
            return None
        try:
            return MaskingEncoder(video, s.mask, s.segment_seconds)
        except MaskError as exc:
            # Recording unmasked would store the very area the law forbids.
            raise SourceError(f"{s.source_id}: {exc}") from exc

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

    # -- RunHost: called by the session's Run ------------------------------------------

    def now(self) -> datetime:
        return self._now()

    def clock_trusted(self) -> bool:
        return self._clock_trusted()

    def segment_path(self, tags: Tags, rec_id: str) -> Path:
        return self._segment_path(tags, rec_id)

    def note(self, **changes: object) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self.live, k, v)

    def warn(self, key: str, text: str | None) -> None:
        with self._lock:
            if text is None:
                self.live.warnings.pop(key, None)
            else:
                self.live.warnings[key] = text

    def segment_closed(self, closed: ClosedSegment) -> None:
        with self._lock:
            self.live.segments += 1
            self.live.last_segment_end = closed.tags.end
        self._on_closed(closed)

    def audio_dropped(self, codec: str, reason: str) -> None:
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


def _open_for(settings: RecorderSettings) -> PacketSource:
    return open_source(
        settings.url,
        rtsp_transport=settings.rtsp_transport,
        open_timeout=settings.open_timeout,
        read_timeout=settings.stall_seconds,
    )
