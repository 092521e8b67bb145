"""Live preview for installers: a WHEP endpoint per source and a small page.

``POST /whep/{source_id}`` (``Authorization: Bearer <token>``,
``Content-Type: application/sdp``) answers an SDP offer with ``201``, the SDP
answer and ``Location: /whep/{source_id}/{session}``; ``DELETE`` there hangs
up. ``401`` bad token, ``404`` unknown source, ``415`` not SDP, ``503`` over
``max_viewers`` (or no picture from the camera yet); a body that is not a
usable SDP offer (empty, not UTF-8, unparsable) is ``400`` with the reason,
one over 64 KiB ``413``. ``GET /`` is the page; ``GET /api/sources`` (token
required) lists what it shows. Connection limits, timeouts and the descriptor
reserve for recording are in :mod:`edge_agent.liveview.liveview_gate`; what
one viewer's offer turns into (SDP checks, the WebRTC answer, its tracks) in
:mod:`edge_agent.liveview.liveview_session`.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge_agent.liveview.liveview_gate import (
    ACCEPT_BACKLOG,
    Gate,
    ServerLimits,
    listen,
    recording_fd_reserve,
    request_cap,
)
from edge_agent.liveview.liveview_session import (
    BadOffer,
    Mode,
    Session,
    decode_offer,
    open_session,
    read_offer,
)
from edge_agent.recording.packethub import PacketHub

if TYPE_CHECKING:
    from edge_agent.config.config import LiveView as LiveViewSettings

log = logging.getLogger(__name__)

__all__ = ["ACCEPT_BACKLOG", "LiveView", "SourceInfo"]

CODEC_WAIT_SECONDS = 5.0  # a source that shows no packet in this long is "not live"
AUDIO_WAIT_SECONDS = 1.0
CONNECT_SECONDS = 30.0  # a viewer that never connects gives its slot back
MAX_OFFER_BYTES = 64 * 1024
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
        mount: Callable[[web.Application, str], None] | None = None,
    ) -> None:
        self.settings = settings
        # More routes on the same server and token (the console, docs/console.md).
        self._mount = mount
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
        self._sessions: dict[str, Session] = {}
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
            client_max_size=limits.max_body_bytes, middlewares=[request_cap(limits), _headers]
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
        if self._mount is not None:
            self._mount(app, token)
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
        host = self.settings.host
        try:
            server, gate, self.port = await listen(runner.server, limits, host, self.settings.port)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._server, self.gate = runner, server, gate
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

    # -- handlers ---------------------------------------------------------------------

    def _mode_for(self, source_id: str) -> Mode | None:
        info = self.hub.codec(source_id, "video")
        if info is None:
            return None
        return "passthrough" if info.is_h264 and self.passthrough else "reencode"

    async def _api_sources(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _unauthorised()
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
            return _unauthorised()
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
            offer = read_offer(offer_sdp)
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
            session = await open_session(
                self.hub,
                source.id,
                offer_sdp,
                mode,
                audio,
                ice_servers=self.settings.ice_servers,
                on_gone=self._forget,
            )
        except Exception as exc:  # aiortc raises a zoo of types on odd offers
            log.info("live view: offer for %s refused: %s", source.id, exc)
            return _error(400, f"cannot answer this offer: {exc}")
        if self._closed:
            await self._end(session, "shutdown")
            return _error(503, "the live view is shutting down")
        self._sessions[session.id] = session
        asyncio.get_running_loop().call_later(CONNECT_SECONDS, self._check_connected, session)
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

    def _check_connected(self, session: Session) -> None:
        if session.id in self._sessions and session.pc.connectionState not in ("connected",):
            self._forget(session, "never connected")

    def _forget(self, session: Session, why: str) -> None:
        if session.closing is None and session.id in self._sessions:
            session.closing = asyncio.ensure_future(self._end(session, why))

    async def _end(self, session: Session, why: str) -> None:
        if self._sessions.pop(session.id, None) is not None:
            log.info("live view: viewer %s on %s gone (%s)", session.id[:8], session.source_id, why)
        session.sub.close()
        for track in session.tracks:
            track.stop()
        with contextlib.suppress(Exception):
            await session.pc.close()

    async def _whep_delete(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _unauthorised()
        session = self._sessions.get(request.match_info["session_id"])
        if session is None or session.source_id != request.match_info["source_id"]:
            return _error(404, "no such viewer session (already closed?)")
        await self._end(session, "hung up")
        return web.Response(status=200)

    # -- for tests and status --------------------------------------------------------

    def session_stats(self) -> list[dict[str, Any]]:
        return [s.stats() for s in self._sessions.values()]


def _unauthorised() -> web.Response:
    return web.json_response(
        {"error": "missing or wrong token (send Authorization: Bearer <liveview token>)"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="edge-agent live view"'},
    )


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
