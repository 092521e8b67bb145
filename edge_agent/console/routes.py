"""The console's HTTP routes, mounted on the live view's aiohttp application.

``mount_console(app, data, token)`` adds, under ``/console``:

- ``GET /console`` the page; ``GET /console/console.js`` and ``console.css``;
- ``GET|POST /console/login`` trades the token for a session cookie, then
  redirects to the page; ``POST /console/logout`` ends the session;
- ``GET /console/api/{overview,sources,holds,events,doctor,locations}`` JSON;
- ``GET /console/api/still/{source}`` a JPEG of the latest keyframe;
- ``GET /console/api/timeline/{location}?window=24h`` the SVG timeline;
- ``POST /console/api/holds`` places a hold, ``POST
  /console/api/holds/{id}/release`` releases one (JSON bodies, a few KiB).

Every route answers 401 without the token or a session (the page and the
login form say how to log in); writes carried by a cookie also need the CSRF
value and this origin (:mod:`edge_agent.console.auth`). Bad input is a 4xx
JSON ``{"error": reason}``; a provider failure is a 503 with no trace. Nothing
runs between requests (docs/console.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from edge_agent.console import timeline
from edge_agent.console.auth import COOKIE, Auth, Caller
from edge_agent.console.data import (
    ConsoleData,
    Refused,
    parse_hold_release,
    parse_hold_request,
)
from edge_agent.core.model import iso, parse_ts

log = logging.getLogger(__name__)

__all__ = ["MAX_BODY_BYTES", "WINDOWS", "mount_console"]

PREFIX = "/console"
MAX_BODY_BYTES = 4096  # a hold request is a few hundred bytes
BODY_SECONDS = 10.0
MAX_EVENTS = 200
WINDOWS = {"6h": timedelta(hours=6), "24h": timedelta(days=1), "7d": timedelta(days=7),
           "30d": timedelta(days=30)}  # fmt: skip
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": under it browsers send "Origin: null" with the form's POST,
    # and the Origin check would refuse the console's own login. Nothing here
    # links elsewhere, so the referrer never leaves the device.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CSP,
}
_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-agent console: log in</title></head>
<body><h1>edge-agent console</h1>{message}
<form method="post" action="{prefix}/login">
<p><label>Live view token<br><input name="token" type="password" autocomplete="off"
 size="40" autofocus></label></p><p><button type="submit">Log in</button></p></form>
</body></html>
"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Guarded = Callable[[web.Request, Caller], Awaitable[web.StreamResponse]]


def _asset(name: str) -> str:
    return (resources.files("edge_agent.console") / "static" / name).read_text("utf-8")


def _error(status: int, message: str) -> web.Response:
    resp = web.json_response({"error": message}, status=status, headers=_HEADERS)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="edge-agent console"'
    return resp


def _login_page(status: int, message: str = "") -> web.Response:
    text = _LOGIN.format(
        prefix=PREFIX, message=f"<p role=alert>{escape(message)}</p>" if message else ""
    )
    resp = web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=_HEADERS
    )
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="edge-agent console"'
    return resp


async def _read_body(request: web.Request) -> bytes:
    """The body, at most MAX_BODY_BYTES, within BODY_SECONDS; Refused otherwise."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Refused(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_SECONDS):
            while not request.content.at_eof():
                chunk = await request.content.read(MAX_BODY_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise Refused(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
    except TimeoutError:
        raise Refused(f"the body did not arrive within {BODY_SECONDS:g}s", 408) from None
    return b"".join(chunks)


async def _read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise Refused(f"Content-Type is {request.content_type!r}; send application/json", 415)
    body = await _read_body(request)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Refused(f"the body is not JSON ({type(exc).__name__})") from None


class _Console:
    def __init__(
        self,
        data: ConsoleData,
        auth: Auth,
        now: Callable[[], datetime],
        liveview_url: str,
    ) -> None:
        self.data = data
        self.auth = auth
        self.now = now
        self.liveview_url = liveview_url
        self.page = _asset("console.html")
        self.js = _asset("console.js")
        self.css = _asset("console.css")

    # -- wrapping: auth, CSRF, errors ----------------------------------------------

    def guard(self, handler: Guarded, *, write: bool = False, page: bool = False) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            caller = self.auth.caller(request)
            if caller is None:
                if page:
                    return _login_page(401, "Log in with the live view token.")
                return _error(401, "missing or wrong token (log in at /console/login, or send "
                                   "Authorization: Bearer <liveview token>)")  # fmt: skip
            if write:
                why = self.auth.write_refusal(request, caller)
                if why is not None:
                    return _error(403, why)
            try:
                resp = await handler(request, caller)
            except Refused as exc:
                return _error(exc.status, str(exc))
            except web.HTTPException:
                raise
            except Exception:
                log.exception("console: %s %s failed", request.method, request.path)
                return _error(503, "the agent could not answer this now; see its log")
            for key, value in _HEADERS.items():
                resp.headers.setdefault(key, value)
            return resp

        return wrapped

    # -- login ---------------------------------------------------------------------------

    def _start_session(self, request: web.Request) -> web.StreamResponse:
        self.auth.sessions.drop(request.cookies.get(COOKIE))
        session_id, _ = self.auth.sessions.create()
        resp = web.Response(status=303, headers={**_HEADERS, "Location": PREFIX})
        resp.set_cookie(
            COOKIE,
            session_id,
            path=PREFIX,
            max_age=int(self.auth.sessions.seconds),
            httponly=True,
            samesite="Strict",
        )
        return resp

    async def login_get(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if token is None:
            return _login_page(401, "Log in with the live view token.")
        if not self.auth.token_ok(token):
            return _login_page(401, "Wrong token.")
        return self._start_session(request)

    async def login_post(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not self.auth.same_origin(request):
            return _login_page(403, "This form must be sent from this console.")
        try:
            body = await _read_body(request)
        except Refused as exc:
            return _error(exc.status, str(exc))
        try:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        except ValueError:
            return _login_page(400, "Send only the token.")
        if not self.auth.token_ok((form.get("token") or [""])[0]):
            return _login_page(401, "Wrong token.")
        return self._start_session(request)

    async def logout(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        self.auth.sessions.drop(request.cookies.get(COOKIE))
        resp = web.json_response({"ok": True})
        resp.del_cookie(COOKIE, path=PREFIX)
        return resp

    # -- page and assets -------------------------------------------------------------

    async def index(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        csrf = caller.session.csrf if caller.session is not None else ""
        html = self.page.replace("{{CSRF}}", escape(csrf)).replace("{{PREFIX}}", PREFIX)
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def script(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        return web.Response(text=self.js, content_type="text/javascript", charset="utf-8")

    async def style(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        return web.Response(text=self.css, content_type="text/css", charset="utf-8")

    # -- JSON reads ---------------------------------------------------------------------

    async def overview(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        doc = await self.data.overview()
        live = self.data.liveview_enabled
        return web.json_response(
            {**doc, "liveview": self.liveview_url if live else None, "now": iso(self.now())}
        )

    async def sources(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        return web.json_response({"sources": await self.data.sources()})

    async def holds(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        return web.json_response({"holds": await self.data.holds()})

    async def events(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        text = request.query.get("limit", "50")
        if not (text.isascii() and text.isdigit() and len(text) <= 3) or not (
            1 <= int(text) <= MAX_EVENTS
        ):
            raise Refused(f"'limit' must be a whole number from 1 to {MAX_EVENTS}")
        return web.json_response({"events": await self.data.events(int(text))})

    async def doctor(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        return web.json_response({"checks": await self.data.doctor()})

    async def locations(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        return web.json_response({"locations": await self.data.locations(), "windows": [*WINDOWS]})

    async def still(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        source_id = request.match_info["source_id"]
        jpeg = await self.data.still(source_id) if len(source_id) <= 200 else None
        if jpeg is None:
            why = f"no picture from {source_id[:200]!r} (unknown source, or no keyframe yet)"
            raise Refused(why, 404)
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def timeline(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        location = request.match_info["location"]
        window = request.query.get("window", "24h")
        span = WINDOWS.get(window)
        if span is None:
            raise Refused(f"'window' {window[:20]!r} is not one of {', '.join(WINDOWS)}")
        now = self.now()
        end_text = request.query.get("end")
        try:
            t1 = parse_ts(end_text) if end_text else now
            t0 = t1 - span
        except (ValueError, OverflowError) as exc:
            raise Refused(f"'end' is not a usable ISO 8601 time ({exc})") from None
        if len(location) > 200 or location not in await self.data.locations():
            raise Refused(f"no location {location[:200]!r}", 404)
        bars, shades = await self.data.timeline(location, t0, t1)
        svg = timeline.render(location, bars, shades, t0, t1, now)
        return web.Response(text=svg, content_type="image/svg+xml", charset="utf-8")

    # -- writes ------------------------------------------------------------------------------

    async def place_hold(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        hold = parse_hold_request(await _read_json(request))
        doc = await self.data.place_hold(hold)
        return web.json_response({"hold": doc}, status=201)

    async def release_hold(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        release = parse_hold_release(request.match_info["hold_id"], await _read_json(request))
        return web.json_response({"hold": await self.data.release_hold(release)})


def mount_console(
    app: web.Application,
    data: ConsoleData,
    token: str,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    liveview_url: str = "/",
    auth: Auth | None = None,
) -> Auth:
    """Add the console's routes to ``app`` (before it starts); returns its :class:`Auth`.

    ``token`` is the live view's bearer token; ``now`` the clock for the
    timeline's window and now-line; ``liveview_url`` where a source card's
    live-view button leads when ``data.liveview_enabled``.
    """
    console = _Console(data, auth or Auth(token), now, liveview_url)
    g = console.guard
    r = app.router
    r.add_get(PREFIX, g(console.index, page=True))
    r.add_get(PREFIX + "/", g(console.index, page=True))
    r.add_get(PREFIX + "/login", console.login_get)
    r.add_post(PREFIX + "/login", console.login_post)
    r.add_post(PREFIX + "/logout", g(console.logout, write=True))
    r.add_get(PREFIX + "/console.js", g(console.script))
    r.add_get(PREFIX + "/console.css", g(console.style))
    api = PREFIX + "/api"
    r.add_get(api + "/overview", g(console.overview))
    r.add_get(api + "/sources", g(console.sources))
    r.add_get(api + "/holds", g(console.holds))
    r.add_get(api + "/events", g(console.events))
    r.add_get(api + "/doctor", g(console.doctor))
    r.add_get(api + "/locations", g(console.locations))
    r.add_get(api + "/still/{source_id}", g(console.still))
    r.add_get(api + "/timeline/{location}", g(console.timeline))
    r.add_post(api + "/holds", g(console.place_hold, write=True))
    r.add_post(api + "/holds/{hold_id}/release", g(console.release_hold, write=True))
    return console.auth
