"""Fan-out of a camera's encoded packets to live viewers (one camera connection for all).

A producer — the recorder's worker thread (through :meth:`PacketHub.publisher`),
or :func:`pump` in demos and tests — calls :meth:`PacketHub.publish` for
every packet, from its own thread; each viewer holds a
:class:`Subscription` read from asyncio. The producer never waits: every
subscriber channel is a bounded ring buffer that drops its oldest entries,
and a video channel that overflowed (or just started) waits for the next
keyframe, because a decoder fed a GOP with holes shows garbage until then.

H.264 is normalised once per source (:mod:`edge_agent.recording.h264`), and
only while someone watches: packets are converted to Annex-B (FFmpeg's
``h264_mp4toannexb`` bitstream filter for MP4-style length-prefixed input) and
every keyframe carries its SPS/PPS, so a viewer that joins late can start
decoding at the first keyframe it gets.
WebRTC H.264 packetisation (RFC 6184) needs exactly that.

Instant start (docs/design/architecture.md): the hub keeps, per source, the video packets
since the last keyframe (bounded by count and bytes) and starts each new viewer
from there, as go2rtc and MediaMTX do, instead of making it wait up to a GOP
for the next keyframe. The cache holds *references* to the producer's packets
(their refcounted buffers; the muxer takes its own reference, docs/design/architecture.md)
plus the timestamps as they were at publish time (the muxer rebases a packet's
timestamps in place afterwards): nothing is copied or converted until a viewer
joins. The replayed packets get timestamps squeezed to 1 ms apart, ending at
the newest one, so the viewer decodes through the GOP at once and shows the
current picture instead of running a GOP behind live for ever.

Nobody watching a source costs its producer a lock, a dict lookup, two
counters and one GOP-cache append per packet: no copy, no conversion
(``copied`` in :meth:`PacketHub.counts` says how many packets were copied for
viewers). This module never imports aiortc: the recorder can publish whether
or not the live view is enabled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, Protocol

import av
from av.packet import Packet

from edge_agent.recording.gopcache import REPLAY_CLOCK, Entry, GopCache, replay_chunks
from edge_agent.recording.h264 import H264Normalizer

if TYPE_CHECKING:
    from av.stream import Stream

log = logging.getLogger(__name__)

__all__ = [
    "Channel",
    "CodecInfo",
    "H264Normalizer",
    "HubPacket",
    "PacketHub",
    "Subscription",
    "pump",
]

Kind = Literal["video", "audio"]

VIDEO_BACKLOG = 250  # packets: ~10 s at 25 fps: a replayed 4 s GOP plus a viewer's lag
AUDIO_BACKLOG = 300  # AAC frames: ~6 s at 48 kHz


@dataclass(frozen=True)
class CodecInfo:
    """What a viewer needs to know about a stream to decode or forward it.

    ``stream`` is the producer's stream object, needed only to build the
    H.264 bitstream filter (PyAV copies codec parameters from a stream); it is
    not part of equality, so a reconnect with identical parameters is no change.
    """

    kind: Kind
    codec: str  # FFmpeg codec name: "h264", "hevc", "aac", ...
    extradata: bytes = b""
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    layout: str = ""
    stream: Stream | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_stream(cls, stream: Stream) -> CodecInfo:
        ctx = stream.codec_context
        kind: Kind = "audio" if stream.type == "audio" else "video"
        extradata = bytes(ctx.extradata or b"")
        # The canonical name: an encoder's context is named "libx264", its stream is H.264.
        codec = ctx.codec.canonical_name
        if kind == "video":
            return cls(
                kind,
                codec,
                extradata,
                width=int(getattr(ctx, "width", 0) or 0),
                height=int(getattr(ctx, "height", 0) or 0),
                stream=stream,
            )
        layout = getattr(ctx, "layout", None)
        return cls(
            kind,
            codec,
            extradata,
            sample_rate=int(getattr(ctx, "sample_rate", 0) or 0),
            layout=layout.name if layout is not None else "",
            stream=stream,
        )

    @property
    def is_h264(self) -> bool:
        return self.codec == "h264"


@dataclass(frozen=True)
class HubPacket:
    """An immutable copy of one packet: viewers never share mutable av objects."""

    kind: Kind
    data: bytes
    pts: int | None
    time_base: Fraction | None
    keyframe: bool
    info: CodecInfo

    def seconds(self) -> float | None:
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)


class Channel:
    """A bounded single-consumer queue fed from any thread, drop-oldest.

    With ``gate_keyframes`` the channel discards everything up to the next
    keyframe when it starts and again after any overflow.
    """

    def __init__(self, maxlen: int, *, gate_keyframes: bool) -> None:
        self._buf: collections.deque[HubPacket] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._gate = gate_keyframes
        self._waiting_keyframe = gate_keyframes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self.closed = False
        self.dropped = 0
        self.delivered = 0

    def push(self, item: HubPacket) -> None:
        """Never blocks beyond a short lock; called from the producer thread."""
        with self._lock:
            if self.closed:
                return
            if self._waiting_keyframe:
                if not item.keyframe:
                    self.dropped += 1
                    return
                self._waiting_keyframe = False
            if len(self._buf) == self._buf.maxlen:
                self.dropped += len(self._buf) if self._gate else 1
                if self._gate:
                    # A hole in a GOP: resynchronise on a keyframe instead.
                    self._buf.clear()
                    if not item.keyframe:
                        self._waiting_keyframe = True
                        return
            self._buf.append(item)
            event, loop = self._event, self._loop
        self._wake(event, loop)

    @staticmethod
    def _wake(event: asyncio.Event | None, loop: asyncio.AbstractEventLoop | None) -> None:
        if event is None or loop is None:
            return
        # RuntimeError: the viewer's loop is gone; nothing to wake.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(event.set)

    async def get(self) -> HubPacket:
        """The next packet; EOFError once the channel is closed."""
        while True:
            with self._lock:
                if self._buf:
                    self.delivered += 1
                    return self._buf.popleft()
                if self.closed:
                    raise EOFError("live view channel closed")
                if self._event is None:
                    self._loop = asyncio.get_running_loop()
                    self._event = asyncio.Event()
                event = self._event
                event.clear()
            await event.wait()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._buf.clear()
            event, loop = self._event, self._loop
        self._wake(event, loop)


class Subscription:
    """One viewer's view of a source: a video channel and, if wanted, an audio channel."""

    def __init__(
        self, source_id: str, *, audio: bool, on_close: Callable[[Subscription], None]
    ) -> None:
        self.source_id = source_id
        self.video = Channel(VIDEO_BACKLOG, gate_keyframes=True)
        self.audio: Channel | None = Channel(AUDIO_BACKLOG, gate_keyframes=False) if audio else None
        self._on_close = on_close
        self._closed = False

    def push(self, item: HubPacket) -> None:
        if item.kind == "video":
            self.video.push(item)
        elif self.audio is not None:
            self.audio.push(item)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.video.close()
        if self.audio is not None:
            self.audio.close()
        self._on_close(self)


class _SourceState:
    def __init__(self) -> None:
        self.info: dict[str, CodecInfo] = {}
        self.subs: tuple[Subscription, ...] = ()
        self.normalizer: H264Normalizer | None = None
        self.normalizer_for: CodecInfo | None = None
        self.last_packet = 0.0  # monotonic
        self.packets = 0
        self.copied = 0  # packets copied for viewers
        self.gop = GopCache()
        self.replay: tuple[Subscription, ...] = ()  # new viewers still to be given the GOP


class PacketHub:
    """Per-source fan-out of encoded packets; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, _SourceState] = {}

    def _state(self, source_id: str) -> _SourceState:
        state = self._sources.get(source_id)
        if state is None:
            state = self._sources[source_id] = _SourceState()
        return state

    def publish(
        self, source_id: str, kind: str, packet: Packet[Any], codec_info: CodecInfo
    ) -> None:
        """Offer one packet to the source's viewers. Never blocks, never raises on bad data."""
        if kind not in ("video", "audio"):
            return
        with self._lock:
            state = self._state(source_id)
        self._publish(state, source_id, kind, packet, codec_info)

    def _publish(
        self,
        state: _SourceState,
        source_id: str,
        kind: str,
        packet: Packet[Any],
        codec_info: CodecInfo,
    ) -> None:
        with self._lock:
            state.info[kind] = codec_info
            state.last_packet = time.monotonic()
            state.packets += 1
            replay: tuple[Subscription, ...] = ()
            entries: list[Entry] | None = None  # not a new list per packet
            if kind == "video":
                state.gop.add(packet)
                if state.replay:
                    replay, state.replay = state.replay, ()
                    entries = state.gop.snapshot()
            subs = state.subs
            if not subs:
                return  # nobody watches: no copy, no conversion
            if kind == "video" and codec_info.is_h264 and state.normalizer_for != codec_info:
                try:
                    state.normalizer = H264Normalizer(codec_info)
                except (ValueError, av.error.FFmpegError) as exc:
                    log.warning("%s: cannot prepare H.264 for the live view: %s", source_id, exc)
                    state.normalizer = None
                state.normalizer_for = codec_info
            normalizer = state.normalizer if kind == "video" and codec_info.is_h264 else None
            state.copied += 1
        if replay and entries is not None and self._replay(source_id, replay, entries, codec_info):
            # They got this packet as the end of the GOP.
            subs = tuple(s for s in subs if s not in replay)
        try:
            if normalizer is not None:
                chunks = normalizer.convert(packet)
            else:
                chunks = [(bytes(packet), bool(packet.is_keyframe) or kind == "audio")]
        except av.error.FFmpegError as exc:
            log.debug("%s: packet dropped for the live view: %s", source_id, exc)
            return
        pts = packet.pts if packet.pts is not None else packet.dts
        k: Kind = "video" if kind == "video" else "audio"
        for data, keyframe in chunks:
            item = HubPacket(k, data, pts, packet.time_base, keyframe, codec_info)
            for sub in subs:
                sub.push(item)

    def _replay(
        self,
        source_id: str,
        subs: tuple[Subscription, ...],
        entries: list[Entry],
        info: CodecInfo,
    ) -> bool:
        """Start new viewers with the GOP so far (it includes the packet being published).

        False if there is no usable GOP: these viewers wait for the next keyframe.
        """
        try:
            chunks = replay_chunks(entries, info)
        except (ValueError, av.error.FFmpegError) as exc:
            log.debug("%s: cached GOP not replayed for the live view: %s", source_id, exc)
            return False
        if not chunks:
            return False
        items = [
            HubPacket("video", data, pts, REPLAY_CLOCK if pts is not None else None, key, info)
            for data, key, pts in chunks
        ]
        with self._lock:
            self._sources[source_id].copied += len(items)
        for sub in subs:
            for item in items:
                sub.push(item)
        return True

    def publisher(
        self, source_id: str, video: Stream, audio: Stream | None
    ) -> Callable[[str, Packet[Any]], None]:
        """``publish`` bound to one connection's streams (the recorder's seam).

        Codec parameters are read here, once per connection: per packet they would
        cost more than the packet itself. A reconnect brings new streams, hence a
        new publisher.
        """
        infos = {"video": CodecInfo.from_stream(video)}
        if audio is not None:
            infos["audio"] = CodecInfo.from_stream(audio)
        # A source's state lives as long as the hub: looked up once, not per packet.
        with self._lock:
            state = self._state(source_id)

        def publish(kind: str, packet: Packet[Any]) -> None:
            info = infos.get(kind)
            if info is None:
                return
            try:
                self._publish(state, source_id, kind, packet, info)
            except Exception:
                # This runs in the recording thread: a live view fault must cost the
                # preview, never the recording. Off until the next connection.
                log.exception("%s: live view feed stopped for this connection", source_id)
                infos.clear()

        return publish

    def subscribe(self, source_id: str, *, audio: bool = False) -> Subscription:
        """A new viewer. Close it when done.

        Its video starts with the source's cached GOP, given at the next video
        packet, or at the next keyframe if there is none (docs/design/architecture.md).
        """
        sub = Subscription(source_id, audio=audio, on_close=self._unsubscribe)
        with self._lock:
            state = self._state(source_id)
            state.subs = (*state.subs, sub)
            state.replay = (*state.replay, sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            state = self._sources.get(sub.source_id)
            if state is not None:
                state.subs = tuple(s for s in state.subs if s is not sub)
                state.replay = tuple(s for s in state.replay if s is not sub)

    def codec(self, source_id: str, kind: Kind) -> CodecInfo | None:
        """The codec last seen on the source's stream of that kind, if any."""
        with self._lock:
            state = self._sources.get(source_id)
            return state.info.get(kind) if state is not None else None

    def seconds_since_packet(self, source_id: str) -> float | None:
        with self._lock:
            state = self._sources.get(source_id)
            if state is None or not state.packets:
                return None
            return time.monotonic() - state.last_packet

    def counts(self, source_id: str) -> tuple[int, int]:
        """(packets published, packets copied for viewers) since the hub started."""
        with self._lock:
            state = self._sources.get(source_id)
            return (state.packets, state.copied) if state is not None else (0, 0)

    def subscriber_count(self, source_id: str) -> int:
        with self._lock:
            state = self._sources.get(source_id)
            return len(state.subs) if state is not None else 0

    async def wait_codec(self, source_id: str, kind: Kind, within: float) -> CodecInfo | None:
        """The stream's codec, waiting up to ``within`` seconds for a first packet."""
        deadline = time.monotonic() + within
        while True:
            info = self.codec(source_id, kind)
            if info is not None or time.monotonic() >= deadline:
                return info
            await asyncio.sleep(0.05)


# -- demo/test producer ------------------------------------------------------------------


class _PacketSource(Protocol):
    @property
    def video(self) -> Stream: ...

    @property
    def audio(self) -> Stream | None: ...

    def packets(self, stop: threading.Event) -> Iterator[Packet[Any]]: ...


def pump(hub: PacketHub, source_id: str, source: _PacketSource, stop: threading.Event) -> int:
    """Publish a packet source (e.g. ``testsrc://``) into the hub until ``stop``; blocking.

    For demos and tests without a recorder; returns the number of packets published.
    """
    video_info = CodecInfo.from_stream(source.video)
    audio_info = CodecInfo.from_stream(source.audio) if source.audio is not None else None
    count = 0
    for packet in source.packets(stop):
        stream = packet.stream
        if stream is source.video:
            hub.publish(source_id, "video", packet, video_info)
        elif audio_info is not None and stream is source.audio:
            hub.publish(source_id, "audio", packet, audio_info)
        else:
            continue
        count += 1
    return count
