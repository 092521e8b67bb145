"""The control socket: the daemon answers, the CLI asks, and neither trusts the other."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from edge_agent.app.control import ControlError, ControlServer, check_socket_path
from edge_agent.cli.control_client import MAX_ANSWER, ask_agent


async def _state() -> dict[str, object]:
    return {"state": "online", "pid": os.getpid()}


async def test_state_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"
    server = ControlServer(path, _state)
    await server.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        answer = await asyncio.to_thread(ask_agent, path)
        assert answer.doc == {"state": "online", "pid": os.getpid()}
        health = await asyncio.to_thread(ask_agent, path, "/v1/health")
        assert health.doc is not None and health.doc["ok"] is True
        unknown = await asyncio.to_thread(ask_agent, path, "/v1/../etc/passwd")
        assert unknown.doc is None and "HTTP 404" in (unknown.why_not or "")
    finally:
        await server.close()
    assert not path.exists()


async def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a killed agent leaves the file behind
    first = ControlServer(path, _state)
    await first.start()
    try:
        with pytest.raises(ControlError, match="another agent answers"):
            await ControlServer(path, _state).start()
    finally:
        await first.close()


async def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("keep me")
    with pytest.raises(ControlError, match="not a socket"):
        await ControlServer(path, _state).start()
    assert path.read_text() == "keep me"


def test_long_path_is_a_clear_error(tmp_path: Path) -> None:
    assert check_socket_path(tmp_path / ("x" * 120)) is not None
    assert check_socket_path(Path("/run/edge-agent/control.sock")) is None


async def test_a_failing_provider_is_an_answer(tmp_path: Path) -> None:
    async def broken() -> dict[str, object]:
        raise RuntimeError("secret-ish detail")

    path = tmp_path / "control.sock"
    server = ControlServer(path, broken)
    await server.start()
    try:
        answer = await asyncio.to_thread(ask_agent, path)
        assert answer.doc is None and "HTTP 500" in (answer.why_not or "")
    finally:
        await server.close()


def test_client_bounds_a_silent_or_flooding_peer(tmp_path: Path) -> None:
    assert "no control socket" in (ask_agent(tmp_path / "none.sock").why_not or "")
    path = tmp_path / "peer.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(4)
    flood = threading.Event()

    def serve() -> None:
        for _ in range(2):
            conn, _ = srv.accept()
            if flood.is_set():
                conn.recv(4096)
                head = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
                with contextlib.suppress(OSError):
                    conn.sendall(head + b"[" * (MAX_ANSWER + 10))
            else:
                threading.Event().wait(1.5)  # accept, never answer
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    silent = ask_agent(path, timeout=0.5)
    assert silent.doc is None and "did not answer" in (silent.why_not or "")
    flood.set()
    big = ask_agent(path, timeout=5)
    assert big.doc is None and "over" in (big.why_not or "")
    t.join(5)
    srv.close()


async def test_hostile_requests_get_a_verdict_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    server = ControlServer(path, _state)
    await server.start()

    async def raw(data: bytes) -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(data)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()

    try:
        assert (await raw(b"POST /v1/state HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await raw(b"\x00\xff garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert await raw(b"GET /v1/state HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n") == b""
        # Still serving after all that.
        answer = await asyncio.to_thread(ask_agent, path)
        assert answer.doc is not None and answer.doc["state"] == "online"
    finally:
        await server.close()
