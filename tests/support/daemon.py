"""Test helpers shared by several test modules (first written in test_daemon.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.support.broker import REPO, Broker

SRC = "testsrc://?size=320x240&rate=10&bitrate=200k&gop=1"


ROOT = "edge/gw-1"


class NotifySocket:
    """A datagram socket in the abstract namespace, standing in for systemd."""

    def __init__(self) -> None:
        self.name = f"@edge-agent-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._cond:
                self.messages.append(fields)
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[dict[str, str]], bool], timeout: float = 20) -> int:
        """Index of the first message matching ``pred``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, m in enumerate(self.messages):
                    if pred(m):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such notification; got {self.messages[-8:]}")
                self._cond.wait(min(left, 0.2))

    def count(self, key: str) -> int:
        with self._cond:
            return sum(1 for m in self.messages if key in m)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def write_config(
    folder: Path,
    sources: list[str],
    *,
    broker: Broker | None = None,
    watch: Path | None = None,
    extra: str = "",
    root: Path | None = None,
    floor: str = "1MiB",
    priorities: dict[str, int] | None = None,
) -> Path:
    lines = [
        "[device]",
        'id = "gw-1"',
        'hw_profile = "generic-linux"',
        "[storage]",
        f'root = "{root or folder / "recordings"}"',
        f'catalog = "{folder / "catalog.db"}"',
        f'quarantine = "{folder / "quarantine"}"',
        f'free_space_floor = "{floor}"',
        "[[locations]]",
        'id = "gate"',
        'kind = "premises"',
        "signage = true",
    ]
    if broker is not None:
        lines += [
            "[mqtt]",
            f'url = "{broker.url}"',
            'topic_prefix = "edge"',
            "keepalive = 5",
            "telemetry_interval_seconds = 2",
        ]
    for sid in sources:
        lines += [
            "[[sources]]",
            f'id = "{sid}"',
            f'url = "{SRC}"',
            'location = "gate"',
            'purpose = "security"',
            "segment_seconds = 2",
        ]
        if priorities and sid in priorities:
            lines.append(f"priority = {priorities[sid]}")
    if watch is not None:
        lines += [
            "[[watch]]",
            f'path = "{watch}"',
            'location = "gate"',
            'purpose = "security"',
            "stable_seconds = 0.5",
            "poll_seconds = 0.5",
        ]
    path = folder / "agent.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def start(
    config: Path, log: Path, notify: NotifySocket | None = None, *args: str
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NOTIFY_SOCKET", None)
    if notify is not None:
        env |= {"NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "2000000"}
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(config), *args],
            stdout=fh,
            stderr=fh,
            env=env,
            cwd=REPO,
        )


def segments(folder: Path, source: str) -> list[Path]:
    root = folder / "recordings"
    return sorted(p for p in root.rglob(f"*_{source}_*.mkv") if not p.name.startswith("."))


def wait_until(pred: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise
    return proc.returncode
