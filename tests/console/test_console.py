"""The console served by a real aiohttp server: access, CSRF, bounds, holds, stills, SVG."""

from __future__ import annotations

import asyncio
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.console.auth import COOKIE, Sessions
from edge_agent.console.data import HoldRequest, Refused, parse_hold_request
from edge_agent.console.routes import MAX_BODY_BYTES
from edge_agent.console.still import Stills
from edge_agent.recording.packethub import PacketHub
from tests.support.console_fake import NOW, TOKEN, FakeData, console_server, live_hub

BEARER = {"Authorization": f"Bearer {TOKEN}"}
HOLD = {
    "kind": "incident",
    "location": "gate",
    "from": "2026-12-04T09:00:00Z",
    "to": "2026-12-04T10:00:00Z",
    "reason": "incident 2026-117",
    "by": "installer",
}
GETS = [
    "/console",
    "/console/",
    "/console/console.js",
    "/console/console.css",
    "/console/api/overview",
    "/console/api/sources",
    "/console/api/holds",
    "/console/api/events",
    "/console/api/doctor",
    "/console/api/locations",
    "/console/api/still/cam-lab",
    "/console/api/timeline/gate?window=24h",
    "/console/login",
]
POSTS = [
    "/console/api/holds",
    "/console/api/holds/hold-x/release",
    "/console/logout",
    "/console/login",
]


@pytest.fixture(scope="module")
def hub() -> Iterator[PacketHub]:
    with live_hub() as hub:
        yield hub


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, FakeData]]:
    data = FakeData()
    async with console_server(data) as base:
        yield base, data


def _jar() -> aiohttp.CookieJar:
    return aiohttp.CookieJar(unsafe=True)  # the server is an IP address


async def _login(http: aiohttp.ClientSession, base: str) -> str:
    """Log in through the URL form; the CSRF value embedded in the page."""
    resp = await http.get(f"{base}/console/login", params={"token": TOKEN})
    assert resp.status == 200 and str(resp.url).endswith("/console")  # after the 303
    page = await resp.text()
    marker = 'name="csrf-token" content="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


async def test_every_route_answers_401_without_the_token(
    served: tuple[str, FakeData],
) -> None:
    base, data = served
    wrong = [
        {},
        {"Authorization": "Bearer not-the-token-0123456789"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Cookie": f"{COOKIE}=made-up-session-id"},
    ]
    async with aiohttp.ClientSession() as http:
        for headers in wrong:
            for path in GETS:
                resp = await http.get(base + path, headers=headers, allow_redirects=False)
                assert resp.status == 401, (path, headers)
            for path in POSTS:
                resp = await http.post(
                    base + path, json=HOLD, headers=headers, allow_redirects=False
                )
                assert resp.status == 401, (path, headers)
        # The page says how to get in; JSON says why.
        page = await http.get(f"{base}/console")
        assert "token" in await page.text() and page.headers["Content-Type"].startswith("text/html")
        api = await http.get(f"{base}/console/api/overview")
        assert "token" in (await api.json())["error"]
    assert not data.calls  # nothing reached the provider


async def test_login_sets_a_strict_httponly_session_cookie(served: tuple[str, FakeData]) -> None:
    base, _ = served
    async with aiohttp.ClientSession(cookie_jar=_jar()) as http:
        resp = await http.get(
            f"{base}/console/login", params={"token": TOKEN}, allow_redirects=False
        )
        assert resp.status == 303 and resp.headers["Location"] == "/console"
        cookie = resp.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["path"] == "/console" and int(cookie["max-age"]) > 0
        assert TOKEN not in resp.headers.get("Set-Cookie", "")
        csrf = await _login(http, base)
        assert len(csrf) >= 20
        ov = await http.get(f"{base}/console/api/overview")
        assert ov.status == 200
        doc = await ov.json()
        assert doc["state"] == "degraded" and doc["liveview"] == "/"
        assert "default-src 'none'" in ov.headers["Content-Security-Policy"]
        assert ov.headers["Cache-Control"] == "no-store"
        # Logging out ends the session server side: the old cookie is worthless.
        out = await http.post(
            f"{base}/console/logout",
            json={},
            headers={"X-CSRF-Token": csrf, "Origin": base},
        )
        assert out.status == 200
        again = await http.get(f"{base}/console/api/overview")
        assert again.status == 401
    async with aiohttp.ClientSession(cookie_jar=_jar()) as http:
        bad = await http.get(
            f"{base}/console/login", params={"token": "nope"}, allow_redirects=False
        )
        assert bad.status == 401 and COOKIE not in bad.cookies
        form = await http.post(
            f"{base}/console/login", data={"token": TOKEN}, headers={"Origin": base}
        )
        assert form.status == 200 and str(form.url).endswith("/console")
        assert (await http.get(f"{base}/console/api/holds")).status == 200
        elsewhere = await http.post(
            f"{base}/console/login",
            data={"token": TOKEN},
            headers={"Origin": "http://evil.example"},
            allow_redirects=False,
        )
        assert elsewhere.status == 403


def test_sessions_are_bounded_and_expire() -> None:
    now = [0.0]
    sessions = Sessions(limit=3, seconds=60, clock=lambda: now[0])
    ids = [sessions.create()[0] for _ in range(4)]
    assert len(sessions) == 3
    assert sessions.get(ids[0]) is None  # the oldest went first
    assert sessions.get(ids[3]) is not None
    now[0] = 61
    assert sessions.get(ids[3]) is None
    assert sessions.get("x" * 10_000) is None


async def test_writes_by_cookie_need_csrf_and_origin(served: tuple[str, FakeData]) -> None:
    base, data = served
    url = f"{base}/console/api/holds"
    async with aiohttp.ClientSession(cookie_jar=_jar()) as http:
        csrf = await _login(http, base)
        cases: list[dict[str, str]] = [
            {"Origin": base},  # no CSRF header
            {"Origin": base, "X-CSRF-Token": "wrong"},
            {"X-CSRF-Token": csrf},  # no Origin
            {"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
            {"X-CSRF-Token": csrf, "Origin": "null"},
        ]
        for headers in cases:
            resp = await http.post(url, json=HOLD, headers=headers)
            assert resp.status == 403, headers
            assert (await resp.json())["error"]
        assert not data.calls
        ok = await http.post(url, json=HOLD, headers={"X-CSRF-Token": csrf, "Origin": base})
        assert ok.status == 201
    # A bearer header is never sent by a browser on its own: no CSRF needed.
    async with aiohttp.ClientSession() as http:
        ok = await http.post(url, json=HOLD, headers=BEARER)
        assert ok.status == 201
    assert [c[0] for c in data.calls] == ["place_hold", "place_hold"]


async def test_bad_bodies_are_4xx_with_a_reason(served: tuple[str, FakeData]) -> None:
    base, data = served
    url = f"{base}/console/api/holds"
    big = json.dumps({**HOLD, "reason": "x" * MAX_BODY_BYTES}).encode()

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 1024

    async with aiohttp.ClientSession(headers=BEARER) as http:
        cases: list[tuple[dict[str, Any], int]] = [
            ({"data": big, "headers": {"Content-Type": "application/json"}}, 413),
            ({"data": chunked(), "headers": {"Content-Type": "application/json"}}, 413),
            ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
            ({"data": b"[" * 3000, "headers": {"Content-Type": "application/json"}}, 400),
            ({"data": b"kind=incident", "headers": {"Content-Type": "text/plain"}}, 415),
            ({"json": [1, 2]}, 400),
            ({"json": {**HOLD, "kind": "forever"}}, 400),
            ({"json": {**HOLD, "surprise": 1}}, 400),
            ({"json": {**HOLD, "to": "2026-12-04T08:00:00Z"}}, 400),
            ({"json": {**HOLD, "from": "yesterday"}}, 400),
            ({"json": {**HOLD, "reason": "  "}}, 400),
            ({"json": {**HOLD, "by": "a\x00b"}}, 400),
            ({"json": {**HOLD, "recording_ids": ["rec-1"]}}, 400),
            ({"json": {**HOLD, "location": "nowhere"}}, 404),  # the provider's refusal
        ]
        for kwargs, status in cases:
            resp = await http.post(url, **kwargs)
            assert resp.status == status, (kwargs.get("json") or str(kwargs["data"])[:40], status)
            doc = await resp.json()
            assert doc["error"] and "Traceback" not in doc["error"]
        bad_queries = [
            ("window=1y", 400),
            ("window=24h&end=soon", 400),
            ("window=30d&end=0001-01-02T00:00:00Z", 400),
        ]
        for query, status in bad_queries:
            resp = await http.get(f"{base}/console/api/timeline/gate?{query}")
            assert resp.status == status and (await resp.json())["error"]
        assert (await http.get(f"{base}/console/api/timeline/nowhere")).status == 404
        for limit in ["-1", "0", "201", "²", "9" * 5000, ""]:
            resp = await http.get(f"{base}/console/api/events", params={"limit": limit})
            assert resp.status == 400, limit
        assert (await http.get(f"{base}/console/api/still/cam-none")).status == 404
        # A provider failure: 503 and a plain sentence, nothing of the exception.
        data.fail = True
        resp = await http.get(f"{base}/console/api/overview")
        assert resp.status == 503
        assert "secret" not in await resp.text()


async def test_hold_placed_and_released_through_the_routes(
    served: tuple[str, FakeData],
) -> None:
    base, data = served
    async with aiohttp.ClientSession(cookie_jar=_jar()) as http:
        csrf = await _login(http, base)
        headers = {"X-CSRF-Token": csrf, "Origin": base}
        resp = await http.post(f"{base}/console/api/holds", json=HOLD, headers=headers)
        assert resp.status == 201
        hold = (await resp.json())["hold"]
        placed = data.calls[-1][1]
        assert isinstance(placed, HoldRequest)
        assert placed.location == "gate" and placed.reason == "incident 2026-117"
        assert placed.start is not None and placed.start.hour == 9
        listed = await (await http.get(f"{base}/console/api/holds")).json()
        assert [h["id"] for h in listed["holds"]] == [hold["id"]]
        svg = await (await http.get(f"{base}/console/api/timeline/gate?window=24h")).text()
        assert f'class="hold" data-id="{hold["id"]}"' in svg
        release = f"{base}/console/api/holds/{hold['id']}/release"
        missing = await http.post(release, json={"by": "installer"}, headers=headers)
        assert missing.status == 400 and "reason" in (await missing.json())["error"]
        done = await http.post(
            release, json={"by": "installer", "reason": "case closed"}, headers=headers
        )
        assert done.status == 200
        assert data.calls[-1][0] == "release_hold"
        assert data.calls[-1][1].hold_id == hold["id"]
        again = await http.post(
            release, json={"by": "installer", "reason": "case closed"}, headers=headers
        )
        assert again.status == 404


async def test_timeline_svg_per_location_and_window(served: tuple[str, FakeData]) -> None:
    base, _ = served
    ns = "{http://www.w3.org/2000/svg}"
    async with aiohttp.ClientSession(headers=BEARER) as http:
        counts = {}
        for loc, window in [("gate", "24h"), ("lab", "24h"), ("lab", "7d"), ("gate", "6h")]:
            resp = await http.get(f"{base}/console/api/timeline/{loc}", params={"window": window})
            assert resp.status == 200 and resp.content_type == "image/svg+xml"
            root = ET.fromstring(await resp.text())
            bars = [r for r in root.iter(f"{ns}rect") if "bar" in (r.get("class") or "").split()]
            counts[(loc, window)] = len(bars)
        expected = {("gate", "24h"): 6, ("lab", "24h"): 1, ("lab", "7d"): 2, ("gate", "6h"): 6}
        assert counts == expected
        locs = await (await http.get(f"{base}/console/api/locations")).json()
        assert locs["locations"] == ["gate", "lab"] and "7d" in locs["windows"]
        assert NOW.isoformat()[:10] in await (await http.get(f"{base}/console/api/overview")).text()


async def test_still_is_a_jpeg_of_a_real_h264_keyframe(hub: PacketHub) -> None:
    assert await hub.wait_codec("cam-lab", "video", 10) is not None
    data = FakeData(hub=hub)
    async with console_server(data) as base, aiohttp.ClientSession(headers=BEARER) as http:
        resp = await http.get(f"{base}/console/api/still/cam-lab")
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        jpeg = await resp.read()
    assert jpeg[:3] == b"\xff\xd8\xff" and jpeg[-2:] == b"\xff\xd9"
    with av.open(io.BytesIO(jpeg), format="mjpeg") as c:
        frame = next(c.decode(video=0))
    assert (frame.width, frame.height) == (640, 360)
    assert hub.subscriber_count("cam-lab") == 0  # the still unsubscribed after one keyframe


async def test_concurrent_stills_share_one_decode(hub: PacketHub) -> None:
    assert await hub.wait_codec("cam-lab", "video", 10) is not None
    stills = Stills(hub)
    pictures = await asyncio.gather(*(stills.get("cam-lab") for _ in range(5)))
    assert pictures[0] is not None and all(p is pictures[0] for p in pictures)
    assert await stills.get("cam-none") is None
    assert hub.subscriber_count("cam-lab") == 0 and not stills._pending


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {k: st.one_of(st.just(v), json_values) for k, v in HOLD.items()},
        ),
    )
)
def test_any_json_is_a_hold_request_or_a_reason(doc: Any) -> None:
    try:
        req = parse_hold_request(doc)
    except Refused as exc:
        assert str(exc) and 400 <= exc.status < 500
    else:
        assert req.reason and req.by


async def test_nobody_looking_costs_nothing() -> None:
    """Mounting adds routes only: no task, no provider call until a request."""
    data = FakeData()
    before = len(asyncio.all_tasks())
    async with console_server(data) as base:
        await asyncio.sleep(0.3)
        assert len(asyncio.all_tasks()) == before  # aiohttp's server adds none while idle
        assert data.calls == []
        async with aiohttp.ClientSession(headers=BEARER) as http:
            assert (await http.get(f"{base}/console/api/sources")).status == 200
        await asyncio.sleep(0.1)
        assert len(asyncio.all_tasks()) == before  # nothing left running after the answer
