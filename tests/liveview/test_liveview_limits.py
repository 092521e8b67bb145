"""Live view server limits against a real aiohttp server on loopback (issue 12 items 6, 11b).

No camera is needed: every request here is refused or answered before the
live view waits for a picture.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from edge_agent.config.config import LiveView as LiveViewSettings
from edge_agent.liveview.liveview import ACCEPT_BACKLOG, LiveView, SourceInfo
from edge_agent.liveview.liveview_gate import DropLog, ServerLimits, open_fd_count
from edge_agent.recording.packethub import PacketHub
from tests.support.broker import free_port

TOKEN = "limits-test-token-0123456789"
SOURCE = SourceInfo("cam", "gate", "security", "premises", audio_room=False, signage=True)
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"}


def settings(**extra: object) -> LiveViewSettings:
    listen = f"127.0.0.1:{free_port()}"
    return LiveViewSettings.model_validate({"listen": listen, "token": TOKEN, **extra})


@pytest.fixture
async def small() -> AsyncIterator[LiveView]:
    limits = ServerLimits(max_connections=32, max_per_address=24, header_seconds=1.5)
    lv = LiveView(settings(), [SOURCE], PacketHub(), limits=limits)
    await lv.start()
    try:
        yield lv
    finally:
        await lv.close()


def _hold(port: int, n: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """Open ``n`` silent connections (in a thread: the server runs on the test's loop)."""
    out = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(5)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def _closed_by_server(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset: aborted by the server


async def _get(port: int, path: str = "/", source: str = "127.0.0.2") -> int:
    conn = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with (
        aiohttp.ClientSession(connector=conn) as session,
        session.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(5)) as r,
    ):
        await r.read()
        return r.status


async def test_idle_flood_is_closed_and_a_legit_client_is_served(
    small: LiveView, caplog: pytest.LogCaptureFixture
) -> None:
    """300 silent connections: the excess is closed at once, the rest at the header
    deadline, fds stay bounded, another host is served meanwhile, two log lines at most."""
    assert small.port is not None and small.gate is not None
    caplog.set_level(logging.WARNING, logger="edge_agent.liveview.liveview")
    before = open_fd_count()
    assert before is not None
    t0 = time.monotonic()
    socks = await asyncio.to_thread(_hold, small.port, 300)
    try:
        await asyncio.sleep(0.3)
        assert len(small.gate.open) <= 24  # per-address limit binds first
        closed = sum(_closed_by_server(s) for s in socks)
        assert closed >= 300 - 24, closed
        held = open_fd_count()
        assert held is not None
        # The test's own 300 client sockets, plus at most the admitted server side.
        assert held - 300 - before <= 24 + 8, (before, held)
        # Another host gets in while the flood holds its slots.
        assert await _get(small.port) == 200
        # The silent ones are dropped at the header deadline.
        while any(not _closed_by_server(s) for s in socks):
            assert time.monotonic() - t0 < 1.5 + 3.0, "silent clients outlived the deadline"
            await asyncio.sleep(0.1)
        assert len(small.gate.open) == 0
    finally:
        for s in socks:
            s.close()
    assert await _get(small.port, source="127.0.0.1") == 200
    drops = [r for r in caplog.records if "dropped connections" in r.getMessage()]
    assert 1 <= len(drops) <= 2, [r.getMessage() for r in drops]
    totals = small.gate.drops.totals
    assert totals["over the per-address limit"] + totals["over the connection limit"] >= 250
    assert totals["sent no request in time"] >= 24


async def test_connection_limit_across_addresses(small: LiveView) -> None:
    assert small.port is not None and small.gate is not None
    groups = []
    for last in (3, 4):  # 20 + 20 from two hosts, limit 32
        groups.append(await asyncio.to_thread(_hold, small.port, 20, f"127.0.0.{last}"))
    try:
        await asyncio.sleep(0.3)
        assert len(small.gate.open) == 32
        assert small.gate.drops.totals["over the connection limit"] == 8
    finally:
        for group in groups:
            for s in group:
                s.close()


async def test_dribbled_headers_are_dropped(small: LiveView) -> None:
    """A slowloris client that keeps sending header bytes is cut at the deadline."""
    assert small.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", small.port)
    t0 = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\n")
    with pytest.raises((ConnectionError, AssertionError)):
        for i in range(50):
            await asyncio.sleep(0.2)
            writer.write(f"X-Slow-{i}: a\r\n".encode())
            await writer.drain()
            assert not reader.at_eof()
    assert time.monotonic() - t0 < 1.5 + 1.5
    writer.close()


async def test_keepalive_is_bounded(small: LiveView) -> None:
    assert small.port is not None
    lv = LiveView(
        settings(),
        [SOURCE],
        PacketHub(),
        limits=ServerLimits(keepalive_seconds=0.5, max_requests=3),
    )
    await lv.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{lv.port}/liveview.js"
            headers = []
            for _ in range(3):
                async with session.get(url) as r:
                    await r.read()
                    headers.append(r.headers.get("Connection", ""))
            assert headers[-1].lower() == "close"  # third request on one connection
        reader, writer = await asyncio.open_connection("127.0.0.1", lv.port)
        writer.write(b"GET /liveview.js HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        t0 = time.monotonic()
        while await reader.read(65536):
            pass  # ends when the idle connection is closed
        assert time.monotonic() - t0 < 3.0
        writer.close()
    finally:
        await lv.close()


OFFERS = {
    "empty": b"",
    "blank": b"  \r\n",
    "garbage": b"hello, this is not SDP",
    "not utf-8": b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=\xff\xfe\r\n",
    "bad m-line": b"v=0\r\nm=video\r\n",
    "bad port": b"v=0\r\no=- 1 1 IN IP4 0\r\ns=-\r\nt=0 0\r\nm=video x UDP/TLS/RTP/SAVPF 96\r\n",
    "bad rtpmap": (
        b"v=0\r\no=- 1 1 IN IP4 0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        b"a=rtpmap:96\r\na=fmtp:zz\r\n"
    ),
    "huge": b"v=0\r\n" + b"a=x-filler:" + b"z" * 60_000 + b"\r\n",
    "no video": b"v=0\r\no=- 1 1 IN IP4 0\r\ns=-\r\nt=0 0\r\n",
}


async def test_malformed_offers_are_400_with_a_reason(small: LiveView) -> None:
    assert small.port is not None
    url = f"http://127.0.0.1:{small.port}/whep/cam"
    async with aiohttp.ClientSession() as session:
        for name, body in OFFERS.items():
            async with session.post(url, data=body, headers=AUTH) as r:
                doc = await r.json()
                assert r.status == 400, (name, r.status, doc)
                assert doc["error"], name
        async with session.post(url, data=b"v=0\r\n" + b"z" * 100_000, headers=AUTH) as r:
            assert r.status == 413
            assert "larger than" in (await r.json())["error"]


async def test_a_slow_body_is_408(small: LiveView) -> None:
    assert small.port is not None
    lv = LiveView(settings(), [SOURCE], PacketHub(), limits=ServerLimits(body_seconds=0.5))
    await lv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", lv.port)
        writer.write(
            f"POST /whep/cam HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/sdp\r\nContent-Length: 500\r\n\r\nv=0\r\n".encode()
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert b" 408 " in status
        writer.close()
    finally:
        await lv.close()


async def test_a_short_token_is_refused_at_start() -> None:
    lv = LiveView(settings(token="x"), [SOURCE], PacketHub())
    with pytest.raises(ValueError, match="shorter than 16"):
        await lv.start()


def test_drop_log_summarises() -> None:
    d = DropLog(every=3600)
    for _ in range(1000):
        d.add("a")
    assert d.totals == {"a": 1000}
    assert d._pending == {"a": 999}  # the first was logged, the rest wait for the summary


_CHILD = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (FDLIMIT, hard))
    from edge_agent.config.config import LiveView as S
    from edge_agent.liveview.liveview import ACCEPT_BACKLOG, LiveView, SourceInfo
    from edge_agent.liveview.liveview_gate import ServerLimits, open_fd_count, recording_fd_reserve
    from edge_agent.recording.packethub import PacketHub

    async def main():
        src = SourceInfo("cam", "gate", "security", "premises", audio_room=False, signage=True)
        reserve = recording_fd_reserve(2)
        limits = ServerLimits(max_connections=1024, max_per_address=1024, header_seconds=30,
                              fd_reserve=reserve)
        lv = LiveView(S.model_validate({"listen": "127.0.0.1:PORT", "token": "t" * 20}), [src],
                      PacketHub(), limits=limits)
        await lv.start()
        print(json.dumps({"port": lv.port, "reserve": reserve}), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        used = open_fd_count()
        # What the recorder does next: open segment files. None may fail.
        fds, error = [], None
        try:
            for i in range(reserve - 2 * ACCEPT_BACKLOG):
                fds.append(os.open(os.devnull, os.O_WRONLY))
        except OSError as exc:
            error = str(exc)
        for fd in fds:
            os.close(fd)
        print(json.dumps({"used": used, "opened": len(fds), "error": error,
                          "admitted": len(lv.gate.open)}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        await lv.close()

    asyncio.run(main())
    """
)


def test_http_never_takes_the_recording_fd_reserve(tmp_path: Path) -> None:
    """RLIMIT_NOFILE lowered to 300 in a child agent: 400 idle connections leave the
    recording reserve free, and a legit request is still answered."""
    limit = 300
    script = tmp_path / "child.py"
    script.write_text(_CHILD.replace("FDLIMIT", str(limit)).replace("PORT", str(free_port())))
    child = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    socks: list[socket.socket] = []
    try:
        assert child.stdout is not None and child.stdin is not None
        hello = json.loads(child.stdout.readline())
        port, reserve = hello["port"], hello["reserve"]
        socks = _hold(port, 400)
        time.sleep(0.5)
        child.stdin.write("probe\n")
        child.stdin.flush()
        report = json.loads(child.stdout.readline())
        for s in socks:
            s.close()
        socks = []
        time.sleep(0.3)
        status = asyncio.run(_get(port))  # the flood is gone: served again
        child.stdin.write("stop\n")
        child.stdin.flush()
    finally:
        for s in socks:
            s.close()
        child.wait(timeout=20)
    assert report["error"] is None, report
    assert report["opened"] == reserve - 2 * ACCEPT_BACKLOG
    # The stated bound: HTTP stops admitting while fewer than `reserve` are free.
    assert report["used"] <= limit - reserve + 1, report
    assert 0 < report["admitted"] < 400
    assert status == 200
