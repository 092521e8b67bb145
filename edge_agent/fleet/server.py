"""``edge-agent fleet``: a read-only web page of every device, fed by MQTT, updated by SSE.

It subscribes to ``{prefix}/+/status``, ``/telemetry`` and ``/events`` with
the agent's own MqttLink, keeps a bounded :class:`~edge_agent.fleet.model.Fleet`
and pushes what changed to every open page every ``push_interval`` (a quarter
second) as server-sent events: one message per interval whatever the message
rate, so a busy broker cannot flood a browser. A client that falls behind is
dropped (its page reconnects and reloads the snapshot). Every request needs
the token: ``Authorization: Bearer``, or the cookie that ``/?token=`` sets
for a browser (docs/fleet.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from typing import Any

from aiohttp import web

from edge_agent.comms.mqtt import InMessage, MqttLink
from edge_agent.fleet.model import KINDS, Fleet
from edge_agent.fleet.page import PAGE_CSS, PAGE_HTML, PAGE_JS

log = logging.getLogger(__name__)

COOKIE = "edge_fleet_token"


class FleetServer:
    def __init__(
        self,
        link: MqttLink,
        fleet: Fleet,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8090,
        push_interval: float = 0.25,
        max_clients: int = 64,
        client_queue: int = 16,
    ) -> None:
        if len(token) < 16:
            raise ValueError("fleet token: at least 16 characters (e.g. openssl rand -hex 16)")
        self.link = link
        self.fleet = fleet
        self._token = token.encode("utf-8")
        self.host, self.port = host, port
        self.push_interval = push_interval
        self.max_clients = max_clients
        self.client_queue = client_queue
        self._dirty: set[str] = set()
        self._clients: set[asyncio.Queue[bytes | None]] = set()
        self._runner: web.AppRunner | None = None
        for kind in KINDS:
            link.subscribe(f"{fleet.prefix}/+/{kind}", self._on_message, qos=1)

    # -- MQTT -----------------------------------------------------------------------------

    def _on_message(self, msg: InMessage) -> None:
        changed = self.fleet.apply(msg.topic, msg.payload, time.time())
        if changed is not None:
            self._dirty.add(changed)
        msg.ack()

    # -- the push loop ----------------------------------------------------------------------

    def _delta(self) -> bytes | None:
        if not self._dirty:
            return None
        ids, self._dirty = self._dirty, set()
        rows = [self.fleet.devices[i].row() for i in ids if i in self.fleet.devices]
        doc = {"summary": self.fleet.summary(), "rows": rows, "mqtt": self.link.connected}
        return b"event: delta\ndata: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"

    async def _push(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.push_interval)
            message = self._delta() if self._clients else None
            if message is None:
                if not self._clients:
                    self._dirty.clear()  # nobody to tell; a new page loads a snapshot
                continue
            for queue in list(self._clients):
                try:
                    queue.put_nowait(message)
                except asyncio.QueueFull:
                    # Behind by a whole queue: drop it; the page reconnects and reloads.
                    self._clients.discard(queue)
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.get_nowait()
                        queue.put_nowait(None)
        for queue in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    # -- HTTP -------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            given = request.cookies.get(COOKIE, "")
        return bool(given) and hmac.compare_digest(given.strip().encode("utf-8"), self._token)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/" and "token" in request.query:
            given = request.query["token"].encode("utf-8")
            if hmac.compare_digest(given, self._token):
                # Out of the address bar and the history: a cookie from here on.
                found = web.HTTPFound("/")
                found.set_cookie(COOKIE, request.query["token"], httponly=True, samesite="Strict")
                raise found
        if not self._authorised(request):
            return web.json_response(
                {"error": "missing or wrong token (Authorization: Bearer <token>, or /?token=)"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="edge-agent fleet"'},
            )
        response: web.StreamResponse = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'self'"
        return response

    async def _page(self, _: web.Request) -> web.Response:
        return web.Response(text=PAGE_HTML, content_type="text/html", charset="utf-8")

    async def _js(self, _: web.Request) -> web.Response:
        return web.Response(text=PAGE_JS, content_type="text/javascript", charset="utf-8")

    async def _css(self, _: web.Request) -> web.Response:
        return web.Response(text=PAGE_CSS, content_type="text/css", charset="utf-8")

    async def _api_fleet(self, request: web.Request) -> web.Response:
        state = request.query.get("state") or None
        site = request.query.get("site") or None
        try:
            limit = max(1, min(int(request.query.get("limit", "1000")), 10_000))
        except ValueError:
            return web.json_response({"error": "limit: a number from 1 to 10000"}, status=400)
        rows = self.fleet.rows(state=state, site=site, limit=limit)
        return web.json_response(
            {"summary": self.fleet.summary(), "rows": rows, "mqtt": self.link.connected}
        )

    async def _api_device(self, request: web.Request) -> web.Response:
        doc = self.fleet.device(request.match_info["id"])
        if doc is None:
            return web.json_response({"error": "no such device"}, status=404)
        return web.json_response(doc)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if len(self._clients) >= self.max_clients:
            return web.json_response({"error": "too many pages open"}, status=503)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(self.client_queue)
        self._clients.add(queue)
        try:
            await response.write(b"retry: 1000\n\nevent: hello\ndata: {}\n\n")
            while (message := await queue.get()) is not None:
                await response.write(message)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(queue)
        return response

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=4096)
        app.router.add_get("/", self._page)
        app.router.add_get("/app.js", self._js)
        app.router.add_get("/app.css", self._css)
        app.router.add_get("/api/fleet", self._api_fleet)
        app.router.add_get("/api/device/{id}", self._api_device)
        app.router.add_get("/api/stream", self._stream)
        return app

    async def run(self, stop: asyncio.Event) -> None:
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        log.info("fleet dashboard on http://%s:%d/", self.host, self.port)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.link.run(stop), name="mqtt")
                tg.create_task(self._push(stop), name="push")
        finally:
            await runner.cleanup()
