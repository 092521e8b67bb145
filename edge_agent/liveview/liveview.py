"""Live preview for installers: a WHEP endpoint per source and a small page.

``POST /whep/{source_id}`` (``Authorization: Bearer <token>``,
``Content-Type: application/sdp``) answers an SDP offer with ``201``, the SDP
answer and ``Location: /whep/{source_id}/{session}``; ``DELETE`` there hangs
up. ``401`` bad token, ``404`` unknown source, ``415`` not SDP, ``503`` over
``max_viewers`` (or no picture from the camera yet); a body that is not a
usable SDP offer (empty, not UTF-8, unparsable) is ``400`` with the reason,
one over 64 KiB ``413``. ``GET /`` is the page; ``GET /api/sources`` (token
required) lists what it shows. Connection limits, timeouts and the descriptor
reserve for recording are in :mod:`edge_agent.liveview.liveview_gate`.

What an installer may see:
- live pictures only — recordings (restricted or not) are never served here;
- only sources whose location has signs up (``signage = true``);
- audio only from an audio room, and only if the source records audio.

Video goes out without re-encoding when the camera sends H.264 and the
browser offers H.264 packetisation mode 1; anything else is decoded and
re-encoded by aiortc, and the page and the JSON say so (``mode``).

No STUN/TURN by default: installers are on the gateway's LAN, where host
candidates connect. aiortc loads only when a LiveView is built, i.e. only when
``[liveview]`` is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from edge_agent.liveview.liveview_gate import Gate, ServerLimits, recording_fd_reserve
from edge_agent.recording.packethub import PacketHub, Subscription

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from edge_agent.config.config import Config
    from edge_agent.config.config import LiveView as LiveViewSettings
    from edge_agent.liveview.liveview_tracks import _HubTrack

log = logging.getLogger(__name__)

__all__ = ["LiveView", "SourceInfo", "sources_from_config"]

Mode = Literal["passthrough", "reencode"]
CODEC_WAIT_SECONDS = 5.0  # a source that shows no packet in this long is "not live"
AUDIO_WAIT_SECONDS = 1.0
CONNECT_SECONDS = 30.0  # a viewer that never connects gives its slot back
MAX_OFFER_BYTES = 64 * 1024
ACCEPT_BACKLOG = 16
LISTEN_QUEUE = 128
MIN_TOKEN_LENGTH = 16  # the same floor as the config check (config_checks.MIN_TOKEN_LENGTH)
_SDP = "application/sdp"


@dataclass(frozen=True)
class SourceInfo:
    """What the live view needs to know about a configured camera."""

    id: str
    location: str
    purpose: str
    site: str
    audio_room: bool
    signage: bool
    audio: bool = False  # the source is configured to record audio

    @property
    def audio_allowed(self) -> bool:
        return self.audio_room and self.audio


def sources_from_config(cfg: Config) -> list[SourceInfo]:
    out: list[SourceInfo] = []
    for src in cfg.sources:
        loc = cfg.location(src.location)
        out.append(
            SourceInfo(
                id=src.id,
                location=loc.id,
                purpose=str(src.purpose),
                site=str(loc.kind),
                audio_room=loc.audio_room,
                signage=loc.signage,
                audio=src.audio,
            )
        )
    return out


@dataclass
class _Session:
    id: str
    source_id: str
    pc: RTCPeerConnection
    sub: Subscription
    mode: Mode
    tracks: list[_HubTrack] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)
    closing: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class _Offer:
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


def _read_offer(offer_sdp: str) -> _Offer:
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
    return _Offer(video is not None, h264, "audio" in kinds)


class LiveView:
    """The live view server; one per daemon, enabled by ``[liveview]``."""

    def __init__(
        self,
        settings: LiveViewSettings,
        sources: Sequence[SourceInfo],
        hub: PacketHub,
        *,
        passthrough: bool = True,
        limits: ServerLimits | None = None,
    ) -> None:
        self.settings = settings
        # The descriptor reserve counts every configured camera, signed or not:
        # each one records.
        self.limits = limits or ServerLimits(
            max_connections=settings.max_connections,
            # Half the slots: one host (or a NAT of installers' browsers, six
            # connections each) cannot lock the others out.
            max_per_address=max(8, settings.max_connections // 2),
            max_body_bytes=MAX_OFFER_BYTES,
            fd_reserve=recording_fd_reserve(len(sources)),
        )
        self.gate: Gate | None = None
        self._server: asyncio.Server | None = None
        # Sources without signs are not offered at all, not even by name.
        self.sources = {s.id: s for s in sources if s.signage}
        self.hub = hub
        self.passthrough = passthrough  # False forces re-encoding (benchmarks, odd browsers)
        self._token = b""
        self._sessions: dict[str, _Session] = {}
        self._reserved = 0  # slots held by offers still negotiating
        self._runner: web.AppRunner | None = None
        self._closed = False
        self._close_lock = asyncio.Lock()
        self.port: int | None = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def viewer_count(self) -> int:
        return len(self._sessions) + self._reserved

    @property
    def url(self) -> str:
        host = self.settings.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    async def start(self) -> None:
        """Read the token and listen. Raises OSError if the address is taken."""
        if self._runner is not None:
            return
        token = self.settings.read_token()
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"liveview: the token is shorter than {MIN_TOKEN_LENGTH} characters "
                "(run 'edge-agent provision' or write a longer random one)"
            )
        self._token = token.encode("utf-8")
        import aiortc  # noqa: F401  -- fail at start-up, not at the first viewer

        limits = self.limits
        app = web.Application(
            client_max_size=limits.max_body_bytes, middlewares=[self._per_request, _headers]
        )
        from edge_agent.liveview.liveview_page import PAGE_HTML, PAGE_JS

        async def page(_: web.Request) -> web.Response:
            return web.Response(text=PAGE_HTML, content_type="text/html", charset="utf-8")

        async def script(_: web.Request) -> web.Response:
            return web.Response(text=PAGE_JS, content_type="text/javascript", charset="utf-8")

        app.router.add_get("/", page)
        app.router.add_get("/liveview.js", script)
        app.router.add_get("/api/sources", self._api_sources)
        app.router.add_post("/whep/{source_id}", self._whep_post)
        app.router.add_delete("/whep/{source_id}/{session_id}", self._whep_delete)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=limits.keepalive_seconds,
            # Without this a shutdown waits for viewers' slow requests.
            shutdown_timeout=1.0,
        )
        await runner.setup()
        assert runner.server is not None
        gate = Gate(runner.server, limits)
        host, port = self.settings.host, self.settings.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.setblocking(False)
            # Our own server in front of aiohttp's handler: the gate decides per
            # connection before aiohttp sees it (see liveview_gate). asyncio
            # accepts up to `backlog` sockets per wake-up before the gate sees
            # any of them: short bursts keep a flood inside the fd reserve.
            server = await asyncio.get_running_loop().create_server(
                gate, sock=sock, backlog=ACCEPT_BACKLOG
            )
            # create_server also made ACCEPT_BACKLOG the kernel's queue; a longer
            # one costs no descriptor (queued connections are not ours until
            # accepted) and spares clients SYN retries while a flood is drained.
            sock.listen(LISTEN_QUEUE)
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner, self._server, self.gate = runner, server, gate
        self.port = sock.getsockname()[1]
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        log.info(
            "live view on %s (%d source(s), at most %d viewer(s)%s)",
            self.url,
            len(self.sources),
            self.settings.max_viewers,
            "" if loopback else "; reachable from the network",
        )

    async def run(self, stop: asyncio.Event) -> None:
        """For the daemon's TaskGroup: serve until ``stop`` is set, then close."""
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Hang up every viewer, then stop listening. Safe to call more than once."""
        async with self._close_lock:
            self._closed = True
            sessions = list(self._sessions.values())
            await asyncio.gather(*(self._end(s, "shutdown") for s in sessions))
            if self._server is not None:
                server, self._server = self._server, None
                server.close()
            if self.gate is not None:
                self.gate.closing = True
            if self._runner is not None:
                runner, self._runner = self._runner, None
                await runner.cleanup()
            if self.gate is not None:
                self.gate.abort_all()
                self.gate.drops.flush(force=True)

    # -- access ------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not self._token:
            return False
        return hmac.compare_digest(given.strip().encode("utf-8"), self._token)

    @staticmethod
    def _unauthorised() -> web.Response:
        return web.json_response(
            {"error": "missing or wrong token (send Authorization: Bearer <liveview token>)"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="edge-agent live view"'},
        )

    # -- handlers ---------------------------------------------------------------------

    def _mode_for(self, source_id: str) -> Mode | None:
        info = self.hub.codec(source_id, "video")
        if info is None:
            return None
        return "passthrough" if info.is_h264 and self.passthrough else "reencode"

    async def _api_sources(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        docs = []
        for s in self.sources.values():
            idle = self.hub.seconds_since_packet(s.id)
            docs.append(
                {
                    "id": s.id,
                    "location": s.location,
                    "purpose": s.purpose,
                    "site": s.site,
                    "audio": s.audio_allowed,
                    "audio_room": s.audio_room,
                    "live": idle is not None and idle < CODEC_WAIT_SECONDS,
                    "mode": self._mode_for(s.id),
                    "viewers": sum(1 for x in self._sessions.values() if x.source_id == s.id),
                }
            )
        return web.json_response(
            {
                "sources": docs,
                "viewers": self.viewer_count,
                "max_viewers": self.settings.max_viewers,
            }
        )

    async def _whep_post(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        if request.content_type != _SDP:
            return _error(415, f"Content-Type is {request.content_type!r}; send {_SDP}")
        source_id = request.match_info["source_id"]
        source = self.sources.get(source_id)
        if source is None:
            known = ", ".join(sorted(self.sources)) or "none"
            return _error(404, f"no live source {source_id!r} (live sources: {known})")
        if self._closed:
            return _error(503, "the live view is shutting down")
        if self.viewer_count >= self.settings.max_viewers:
            return _error(
                503,
                f"{self.settings.max_viewers} viewer(s) already watching "
                "(liveview.max_viewers); close another viewer and retry",
                retry_after=5,
            )
        self._reserved += 1  # before any await: concurrent offers must not overshoot the cap
        try:
            return await self._negotiate(request, source)
        finally:
            self._reserved -= 1

    async def _negotiate(self, request: web.Request, source: SourceInfo) -> web.Response:
        try:
            body = await asyncio.wait_for(request.read(), self.limits.body_seconds)
        except TimeoutError:
            return _error(408, f"the offer did not arrive within {self.limits.body_seconds:g}s")
        except web.HTTPRequestEntityTooLarge:
            return _error(
                413, f"the offer is larger than {self.limits.max_body_bytes} bytes (send SDP only)"
            )
        try:
            offer_sdp = decode_offer(body)
            offer = _read_offer(offer_sdp)
        except BadOffer as exc:
            return _error(400, f"the offer is not usable SDP: {exc}")
        if not offer.video:
            return _error(400, "the offer has no video section (add a recvonly video transceiver)")
        info = await self.hub.wait_codec(source.id, "video", CODEC_WAIT_SECONDS)
        if info is None:
            return _error(503, f"no picture from {source.id!r} yet; retry shortly", retry_after=3)
        mode: Mode = (
            "passthrough" if info.is_h264 and offer.h264 and self.passthrough else "reencode"
        )
        # Audio packets may trail the first video packet by a frame or so.
        audio = (
            offer.audio
            and source.audio_allowed
            and (await self.hub.wait_codec(source.id, "audio", AUDIO_WAIT_SECONDS) is not None)
        )
        try:
            session = await self._answer(source.id, offer_sdp, mode, audio)
        except Exception as exc:  # aiortc raises a zoo of types on odd offers
            log.info("live view: offer for %s refused: %s", source.id, exc)
            return _error(400, f"cannot answer this offer: {exc}")
        if self._closed:
            await self._end(session, "shutdown")
            return _error(503, "the live view is shutting down")
        self._sessions[session.id] = session
        log.info(
            "live view: viewer %s on %s (%s%s), %d watching",
            session.id[:8],
            source.id,
            mode,
            ", audio" if audio else "",
            len(self._sessions),
        )
        answer = session.pc.localDescription
        return web.Response(
            status=201,
            text=answer.sdp,
            content_type=_SDP,
            headers={
                "Location": f"/whep/{source.id}/{session.id}",
                "X-Liveview-Mode": mode,
                "X-Liveview-Audio": "1" if audio else "0",
            },
        )

    async def _answer(self, source_id: str, offer_sdp: str, mode: Mode, audio: bool) -> _Session:
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

        servers = [RTCIceServer(urls=u) for u in self.settings.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        sub = self.hub.subscribe(source_id, audio=audio)
        session = _Session(secrets.token_urlsafe(16), source_id, pc, sub, mode)
        try:
            video: _HubTrack = (
                PassthroughVideoTrack(sub.video)
                if mode == "passthrough"
                else ReencodeVideoTrack(sub.video)
            )
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
                at, mimes = audio_track(sub.audio, self.hub.codec(source_id, "audio"))
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
                    self._forget(session, pc.connectionState)

            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            # aiortc gathers all candidates here: the answer is complete (no trickle).
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            sub.close()
            await pc.close()
            raise
        asyncio.get_running_loop().call_later(CONNECT_SECONDS, self._check_connected, session)
        return session

    def _check_connected(self, session: _Session) -> None:
        if session.id in self._sessions and session.pc.connectionState not in ("connected",):
            self._forget(session, "never connected")

    def _forget(self, session: _Session, why: str) -> None:
        if session.closing is None and session.id in self._sessions:
            session.closing = asyncio.ensure_future(self._end(session, why))

    async def _end(self, session: _Session, why: str) -> None:
        if self._sessions.pop(session.id, None) is not None:
            log.info("live view: viewer %s on %s gone (%s)", session.id[:8], session.source_id, why)
        session.sub.close()
        for track in session.tracks:
            track.stop()
        with contextlib.suppress(Exception):
            await session.pc.close()

    async def _whep_delete(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        session = self._sessions.get(request.match_info["session_id"])
        if session is None or session.source_id != request.match_info["source_id"]:
            return _error(404, "no such viewer session (already closed?)")
        await self._end(session, "hung up")
        return web.Response(status=200)

    @web.middleware
    async def _per_request(self, request: web.Request, handler: Any) -> web.StreamResponse:
        transport = request.transport
        conn = transport.get_protocol() if transport is not None else None
        started = getattr(conn, "request_started", None)
        number = started() if started is not None else 0
        response: web.StreamResponse = await handler(request)
        if number >= self.limits.max_requests:
            response.force_close()  # keep-alive bound: the client reconnects
        return response

    # -- for tests and status --------------------------------------------------------

    def session_stats(self) -> list[dict[str, Any]]:
        out = []
        for s in self._sessions.values():
            first = min((t.first_frame_at for t in s.tracks if t.first_frame_at), default=None)
            out.append(
                {
                    "id": s.id,
                    "source": s.source_id,
                    "mode": s.mode,
                    "state": s.pc.connectionState,
                    "frames": {t.kind: t.frames for t in s.tracks},
                    "first_frame_s": None if first is None else first - s.created,
                }
            )
        return out


def _error(status: int, message: str, *, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    )
    return response
