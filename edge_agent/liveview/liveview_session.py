"""One WHEP viewer: reading its SDP offer and answering it with a WebRTC peer.

:mod:`edge_agent.liveview.liveview` is the HTTP side (token, limits, routes,
the set of sessions); this module is what one ``POST /whep/{source_id}``
turns into once it is allowed: a checked offer (:func:`decode_offer`,
:func:`read_offer`, refusals are :class:`BadOffer` with the reason, i.e. a
``400``), then a :class:`Session` holding the peer connection, the hub
subscription and the tracks that read it (:func:`open_session`).

Passthrough or re-encode, and whether audio goes out, are decided by the
caller (docs/design/architecture.md, live view); aiortc is imported only here
and only when a viewer arrives.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from edge_agent.recording.packethub import PacketHub, Subscription

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from edge_agent.liveview.liveview_tracks import _HubTrack

__all__ = ["BadOffer", "Mode", "Offer", "Session", "decode_offer", "open_session", "read_offer"]

Mode = Literal["passthrough", "reencode"]


@dataclass
class Session:
    id: str
    source_id: str
    pc: RTCPeerConnection
    sub: Subscription
    mode: Mode
    tracks: list[_HubTrack] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)
    closing: asyncio.Task[None] | None = None

    def stats(self) -> dict[str, Any]:
        """For tests and status: state, frames sent per track, time to the first frame."""
        first = min((t.first_frame_at for t in self.tracks if t.first_frame_at), default=None)
        return {
            "id": self.id,
            "source": self.source_id,
            "mode": self.mode,
            "state": self.pc.connectionState,
            "frames": {t.kind: t.frames for t in self.tracks},
            "first_frame_s": None if first is None else first - self.created,
        }


@dataclass(frozen=True)
class Offer:
    video: bool
    h264: bool  # H.264 packetization-mode 1 offered for video
    audio: bool


class BadOffer(ValueError):
    """The body is not an SDP offer this server can answer; the message says why."""


def decode_offer(body: bytes) -> str:
    if not body.strip():
        raise BadOffer("the body is empty (send the SDP offer)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadOffer(f"the body is not UTF-8 (byte {exc.start})") from None
    if not text.lstrip().startswith("v=0"):
        raise BadOffer("the body does not start with 'v=0', so it is not SDP")
    return text


def read_offer(offer_sdp: str) -> Offer:
    from aiortc import sdp

    try:
        desc = sdp.SessionDescription.parse(offer_sdp)
    except Exception as exc:  # aiortc's parser raises whatever the split/int calls raise
        raise BadOffer(f"the offer is not valid SDP ({type(exc).__name__})") from None
    kinds = [m.kind for m in desc.media]
    video = next((m for m in desc.media if m.kind == "video"), None)
    h264 = video is not None and any(
        c.mimeType.lower() == "video/h264"
        and str(c.parameters.get("packetization-mode", "0")) == "1"
        for c in video.rtp.codecs
    )
    return Offer(video is not None, h264, "audio" in kinds)


async def open_session(
    hub: PacketHub,
    source_id: str,
    offer_sdp: str,
    mode: Mode,
    audio: bool,
    *,
    ice_servers: Sequence[str],
    on_gone: Callable[[Session, str], None],
) -> Session:
    """A session answering ``offer_sdp``; ``on_gone(session, why)`` when its peer fails or closes.

    Raises whatever aiortc raises on an offer it cannot answer; nothing is left open then.
    """
    from aiortc import (
        RTCConfiguration,
        RTCIceServer,
        RTCPeerConnection,
        RTCRtpSender,
        RTCSessionDescription,
    )

    from edge_agent.liveview.liveview_tracks import (
        PassthroughVideoTrack,
        ReencodeVideoTrack,
        audio_track,
    )

    servers = [RTCIceServer(urls=u) for u in ice_servers]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
    sub = hub.subscribe(source_id, audio=audio)
    session = Session(secrets.token_urlsafe(16), source_id, pc, sub, mode)
    try:
        track = PassthroughVideoTrack if mode == "passthrough" else ReencodeVideoTrack
        video: _HubTrack = track(sub.video)
        session.tracks.append(video)
        # Transceivers made before the offer is applied take its m-lines, so the
        # codec preference below shapes the answer.
        vt = pc.addTransceiver(video, direction="sendonly")
        if mode == "passthrough":
            caps = RTCRtpSender.getCapabilities("video").codecs
            vt.setCodecPreferences(
                [c for c in caps if c.mimeType.lower() in ("video/h264", "video/rtx")]
            )
        if audio and sub.audio is not None:
            # G.711 goes out as is; anything else is transcoded to Opus.
            at, mimes = audio_track(sub.audio, hub.codec(source_id, "audio"))
            session.tracks.append(at)
            acaps = RTCRtpSender.getCapabilities("audio").codecs
            pc.addTransceiver(at, direction="sendonly").setCodecPreferences(
                [c for c in acaps if c.mimeType.lower() in mimes]
            )
        # No audio transceiver otherwise: an offered audio m-line is answered
        # inactive and nothing is ever sent on it.

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                on_gone(session, pc.connectionState)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        # aiortc gathers all candidates here: the answer is complete (no trickle).
        await pc.setLocalDescription(await pc.createAnswer())
    except BaseException:
        sub.close()
        await pc.close()
        raise
    return session
