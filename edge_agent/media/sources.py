"""Camera inputs as packet sources: ``rtsp(s)://``, ``http(s)://``, ``file://``, ``testsrc://``.

Every source offers the same small interface (:class:`PacketSource`): the
video stream (and the audio stream, if any) to use as muxer templates, and a
blocking iterator of encoded packets. The recorder never decodes.

- network sources are opened with a connect timeout and a read timeout
  (PyAV's interrupt callback): a camera that goes silent makes the read fail
  instead of blocking the worker forever — this is the stall watchdog's teeth;
- ``file://`` plays at real time and loops, with timestamps carried on across
  loops, so a demo file looks like a camera that never ends;
- urls are shown redacted: camera urls often carry a password.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import av
import av.error
from av.container import InputContainer
from av.packet import Packet
from av.stream import Stream

from edge_agent.config.config import redact_url

__all__ = [
    "AvSource",
    "PacketSource",
    "SourceError",
    "open_source",
    "packet_seconds",
    "redact_url",
]


_READ_AHEAD = 0.1  # seconds a file:// source may run ahead of real time
_STOP_POLL = 0.2  # seconds a file:// source may take to notice a stop while it waits


class SourceError(Exception):
    """The source cannot be opened or read; ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class PacketSource(Protocol):
    @property
    def video(self) -> Stream: ...

    @property
    def audio(self) -> Stream | None: ...

    @property
    def description(self) -> str: ...

    def packets(self, stop: threading.Event) -> Iterator[Packet[Stream]]: ...

    def close(self) -> None: ...


def packet_seconds(packet: Packet[Stream]) -> float | None:
    """The packet's decode time in seconds (presentation time if it has no dts)."""
    ts = packet.dts if packet.dts is not None else packet.pts
    tb = packet.time_base
    if ts is None or tb is None:
        return None
    return float(ts * tb)


class AvSource:
    """A PyAV demuxer: a camera over RTSP/HTTP, or a file played as one."""

    def __init__(
        self,
        url: str,
        *,
        rtsp_transport: str = "tcp",
        open_timeout: float = 10.0,
        read_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self._shown = redact_url(url)
        parts = urlsplit(url)
        self._is_file = parts.scheme.lower() == "file"
        options: dict[str, str] = {}
        target = url
        if self._is_file:
            target = unquote(parts.path)
            if not Path(target).is_file():
                raise SourceError(
                    f"{self._shown}: no such file (check the path in sources.url)", permanent=False
                )
        elif parts.scheme.lower() in ("rtsp", "rtsps"):
            options["rtsp_transport"] = rtsp_transport
            # Socket-level timeout in microseconds (FFmpeg >= 5 calls it "timeout").
            options["timeout"] = str(int(read_timeout * 1_000_000))
        else:
            options["rw_timeout"] = str(int(read_timeout * 1_000_000))
            options["reconnect"] = "0"  # reconnecting is the recorder's job
        try:
            self._container: InputContainer = av.open(
                target, options=options, timeout=(open_timeout, read_timeout)
            )
        except (av.error.FFmpegError, OSError) as exc:
            why = _why(exc, self.url, options.get("rtsp_transport"))
            raise SourceError(f"{self._shown}: cannot open ({why})") from exc
        videos = [s for s in self._container.streams.video if s.codec_context is not None]
        if not videos:
            self._container.close()
            raise SourceError(
                f"{self._shown}: no video stream (point sources.url at a camera's video stream)",
                permanent=True,
            )
        self._video: Stream = videos[0]
        audios = list(self._container.streams.audio)
        self._audio: Stream | None = audios[0] if audios else None

    @property
    def video(self) -> Stream:
        return self._video

    @property
    def audio(self) -> Stream | None:
        return self._audio

    @property
    def description(self) -> str:
        v = self._video.codec_context
        desc = f"{self._shown} {v.name if v else '?'}"
        if self._audio is not None and self._audio.codec_context is not None:
            desc += f"+{self._audio.codec_context.name}"
        return desc

    def packets(self, stop: threading.Event) -> Iterator[Packet[Stream]]:
        wanted = [s for s in (self._video, self._audio) if s is not None]
        # The generator itself, not one delegating to it: a layer per packet less.
        if self._is_file:
            return self._file_packets(wanted, stop)
        return self._camera_packets(wanted, stop)

    def _camera_packets(
        self, wanted: list[Stream], stop: threading.Event
    ) -> Iterator[Packet[Stream]]:
        try:
            for packet in self._container.demux(wanted):
                if stop.is_set():
                    return
                yield packet
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"{self._shown}: read failed ({_why(exc, self.url)})") from exc
        raise SourceError(f"{self._shown}: stream ended")

    def _file_packets(
        self, wanted: list[Stream], stop: threading.Event
    ) -> Iterator[Packet[Stream]]:
        """Real-time, looped playback; each loop continues the timestamps of the last."""
        offset = Fraction(0)  # seconds added to every timestamp in this loop
        t0 = time.monotonic()
        # Stream time up to which packets are due at once: no more than _READ_AHEAD
        # early as of the last reading of the clock (it only moves forward).
        ahead = -1.0
        while not stop.is_set():
            first: Fraction | None = None
            end = 0.0
            # Per stream index: (time base as float, tick shift for this loop); exact
            # Fractions only once per stream and loop, floats per packet.
            per_stream: dict[int, tuple[float, int]] = {}
            for packet in self._container.demux(wanted):
                # Each read of a PyAV timestamp is a call into the extension: once each.
                pts, dts = packet.pts, packet.dts
                raw = dts if dts is not None else pts
                if raw is None:
                    continue
                known = per_stream.get(packet.stream_index)
                if known is None:
                    tb = packet.time_base
                    if first is None:
                        first = Fraction(raw) * tb
                    known = per_stream[packet.stream_index] = (
                        float(tb),
                        round((offset - first) / tb),
                    )
                tbf, shift = known
                if pts is not None:
                    packet.pts = pts + shift
                if dts is not None:
                    packet.dts = dts + shift
                stream_time = (raw + shift) * tbf
                until = stream_time + (packet.duration or 0) * tbf
                if until > end:
                    end = until
                # Waking up for every packet costs more CPU than copying it: run up
                # to _READ_AHEAD early, then sleep (a camera's packets arrive in
                # bursts too). The clock is read only when this packet may be early.
                if stream_time > ahead:
                    delay = t0 + stream_time - time.monotonic()
                    if delay > _READ_AHEAD and _pause(stop, delay):
                        return
                    ahead = time.monotonic() - t0 + _READ_AHEAD
                yield packet
            if first is None:
                raise SourceError(f"{self._shown}: file has no packets", permanent=True)
            offset = Fraction(end).limit_denominator(1_000_000)
            try:
                self._container.seek(0)
            except (av.error.FFmpegError, OSError):
                self._container.close()
                self._container = av.open(unquote(urlsplit(self.url).path))
                self._video = self._container.streams.video[0]
                audios = list(self._container.streams.audio)
                self._audio = audios[0] if audios else None
                wanted = [s for s in (self._video, self._audio) if s is not None]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()


def _pause(stop: threading.Event, seconds: float) -> bool:
    """Sleep ``seconds``, or until ``stop`` is seen set (within :data:`_STOP_POLL`); True if set.

    Not ``stop.wait(seconds)``: a timed wait on a condition costs about twice the
    CPU of a plain sleep (a lock made and taken twice per wait), and a file source
    sleeps ten times a second; a stop is noticed a fraction of a second later.
    """
    end = time.monotonic() + seconds
    while not stop.is_set():
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, _STOP_POLL))
    return True


def _why(exc: BaseException, url: str, transport: str | None = None) -> str:
    # FFmpeg's own error codes (tags like 0x58354235) mean nothing to an installer,
    # and its messages echo the url, password included: keep the words only.
    text = getattr(exc, "strerror", None) or str(exc)
    text = text.replace(url, redact_url(url)) or type(exc).__name__
    if getattr(exc, "errno", None) == errno.EPROTONOSUPPORT and transport is not None:
        other = "udp" if transport == "tcp" else "tcp"
        text += f'; the camera may not offer RTSP over {transport}: try rtsp_transport = "{other}"'
    return text


def open_source(
    url: str,
    *,
    rtsp_transport: str = "tcp",
    open_timeout: float = 10.0,
    read_timeout: float = 10.0,
) -> PacketSource:
    """Open ``url`` (blocking). Raises SourceError naming the redacted url and the cause."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "testsrc":
        # Demo and test cameras encode in-process; real gateways never load this.
        from edge_agent.media.testsrc import TestSrcError, open_testsrc

        try:
            return open_testsrc(url)
        except TestSrcError as exc:
            raise SourceError(str(exc), permanent=True) from exc
    if scheme not in ("rtsp", "rtsps", "http", "https", "file"):
        raise SourceError(
            f"{redact_url(url)}: unsupported scheme {scheme!r} (use rtsp, http, file or testsrc)",
            permanent=True,
        )
    return AvSource(
        url, rtsp_transport=rtsp_transport, open_timeout=open_timeout, read_timeout=read_timeout
    )
