"""sd_notify over a real unix datagram socket, path and abstract namespace."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.host import sdnotify


def _recv_fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(sdnotify.MAX_MESSAGE + 1)
    return dict(line.split("=", 1) for line in data.decode().split("\n"))


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    addr = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(addr)
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", addr)
        yield sock


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


def test_ready_status_watchdog_stopping_on_a_path_socket(path_socket: socket.socket) -> None:
    assert sdnotify.ready("catalog open, 2 sources")
    assert _recv_fields(path_socket) == {"READY": "1", "STATUS": "catalog open, 2 sources"}
    assert sdnotify.status("recording 2/2")
    assert _recv_fields(path_socket) == {"STATUS": "recording 2/2"}
    assert sdnotify.watchdog()
    assert _recv_fields(path_socket) == {"WATCHDOG": "1"}
    assert sdnotify.reloading()
    assert _recv_fields(path_socket) == {"RELOADING": "1"}
    assert sdnotify.stopping()
    assert _recv_fields(path_socket) == {"STOPPING": "1"}


def test_abstract_namespace(abstract_socket: socket.socket) -> None:
    assert sdnotify.notify(READY=1, MAINPID=os.getpid())
    assert _recv_fields(abstract_socket) == {"READY": "1", "MAINPID": str(os.getpid())}


def test_status_newlines_cannot_forge_fields(path_socket: socket.socket) -> None:
    sdnotify.status("disk full\nREADY=1\r\nWATCHDOG=1")
    fields = _recv_fields(path_socket)
    assert list(fields) == ["STATUS"]
    assert "READY" not in fields and "\n" not in fields["STATUS"]


def test_long_status_is_cut(path_socket: socket.socket) -> None:
    sdnotify.status("x" * 10_000)
    fields = _recv_fields(path_socket)
    assert len(fields["STATUS"]) <= 1024 and fields["STATUS"].endswith("...")


def test_unset_environment_drops_the_socket(
    path_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sdnotify.notify(unset_environment=True, READY=1)
    assert _recv_fields(path_socket) == {"READY": "1"}
    assert "NOTIFY_SOCKET" not in os.environ
    assert not sdnotify.watchdog()


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.ready()
    assert not sdnotify.status("x")
    assert not sdnotify.watchdog()
    assert not sdnotify.stopping()


@pytest.mark.parametrize("value", ["relative/path", "vsock:2:1234", "@"])
def test_unusable_addresses_never_raise(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert not sdnotify.ready()


def test_gone_socket_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert not sdnotify.watchdog()


def test_unprintable_value_never_raises(path_socket: socket.socket) -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert not sdnotify.notify(STATUS=Broken())


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None  # the watchdog is for another process
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "-5", "soon", ""):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert sdnotify.watchdog_interval() is None


def test_a_child_process_notifies(path_socket: socket.socket) -> None:
    # What the daemon test does: a subprocess inherits NOTIFY_SOCKET.
    code = "from edge_agent.host import sdnotify; sdnotify.ready('child up')"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
    assert _recv_fields(path_socket) == {"READY": "1", "STATUS": "child up"}
