"""A still picture of a source for the console: its latest keyframe as a JPEG.

Decoding happens only when someone asks (the console polls a card's still
every few seconds while the page is open; nobody looking costs nothing): one
keyframe is decoded and re-encoded as a small JPEG in a worker thread, never on
the event loop (docs/console.md).
"""

from __future__ import annotations

import asyncio
import logging
from fractions import Fraction
from typing import Any

import av

from edge_agent.recording.packethub import PacketHub

log = logging.getLogger(__name__)

__all__ = ["MAX_WIDTH", "Stills", "hub_still", "keyframe_jpeg"]

MAX_WIDTH = 640  # a card on a phone; a larger picture is only more bytes to poll
JPEG_QUALITY = 5  # FFmpeg qscale for MJPEG: 2 best .. 31 worst
FF_QP2LAMBDA = 118  # libavutil's scale from qscale to the encoder's lambda


def _decode(codec: str, data: bytes, extradata: bytes) -> Any:
    ctx: Any = av.CodecContext.create(codec, "r")
    if extradata:
        ctx.extradata = extradata
    frames = list(ctx.decode(av.Packet(data)))
    frames += list(ctx.decode(None))  # flush: a single packet may sit in the decoder
    return frames[0] if frames else None


def keyframe_jpeg(codec: str, data: bytes, extradata: bytes = b"") -> bytes | None:
    """A JPEG of one keyframe (Annex-B H.264 with its parameter sets, or any codec
    FFmpeg decodes given ``extradata``); None if it does not decode to a picture."""
    try:
        frame = _decode(codec, data, extradata)
    except (av.error.FFmpegError, ValueError) as exc:
        log.debug("console still: %s keyframe does not decode: %s", codec, exc)
        return None
    if frame is None or not frame.width or not frame.height:
        return None
    width, height = frame.width, frame.height
    if width > MAX_WIDTH:
        height = max(2, round(height * MAX_WIDTH / width / 2) * 2)
        width = MAX_WIDTH
    enc: Any = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height = width, height
    enc.pix_fmt = "yuvj420p"
    enc.time_base = Fraction(1, 25)
    # Fixed quality, not a bit rate: one frame has no rate to control.
    enc.qscale = True
    enc.global_quality = JPEG_QUALITY * FF_QP2LAMBDA
    out = frame.reformat(width=width, height=height, format="yuvj420p")
    out.pts = 0
    packets = list(enc.encode(out)) + list(enc.encode(None))
    return b"".join(bytes(p) for p in packets) or None


async def hub_still(hub: PacketHub, source_id: str, within: float = 4.0) -> bytes | None:
    """The next keyframe the source sends, as a JPEG; None if none comes ``within`` s.

    Subscribes only for the wait (the hub copies nothing while nobody is
    subscribed) and decodes in a worker thread.
    """
    if hub.codec(source_id, "video") is None:
        return None
    sub = hub.subscribe(source_id)
    try:
        # The channel starts at a keyframe: its first packet is the picture.
        packet = await asyncio.wait_for(sub.video.get(), within)
    except (TimeoutError, EOFError):
        return None
    finally:
        sub.close()
    info = packet.info
    extradata = b"" if info.is_h264 else info.extradata  # H.264 arrives with SPS/PPS inline
    return await asyncio.to_thread(keyframe_jpeg, info.codec, packet.data, extradata)


class Stills:
    """Stills for the console's provider: concurrent asks for one source share one
    decode, and at most ``parallel`` decodes run at once (a page with many cameras
    open on a small device never takes more than that many cores). Keeps nothing
    once answered: no cache to hold memory while nobody looks."""

    def __init__(self, hub: PacketHub, *, within: float = 4.0, parallel: int = 1) -> None:
        self.hub = hub
        self.within = within
        self._slots = asyncio.Semaphore(parallel)
        self._pending: dict[str, asyncio.Future[bytes | None]] = {}

    async def _make(self, source_id: str) -> bytes | None:
        async with self._slots:
            return await hub_still(self.hub, source_id, self.within)

    async def get(self, source_id: str) -> bytes | None:
        if self.hub.codec(source_id, "video") is None:
            return None  # unknown or silent source: nothing is created for it
        pending = self._pending.get(source_id)
        if pending is None:
            pending = asyncio.ensure_future(self._make(source_id))
            self._pending[source_id] = pending
            pending.add_done_callback(lambda _: self._pending.pop(source_id, None))
        # shield: one asker hanging up does not cancel the others' picture.
        return await asyncio.shield(pending)
