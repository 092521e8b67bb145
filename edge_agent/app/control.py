"""The daemon's local control endpoint: read-only JSON over a Unix socket.

``edge-agent status`` asks the running agent here instead of guessing from the
catalog (docs/operator-guide.md, "Status"). The socket is the only way in: no
TCP port, mode 0660 so the agent's group (installers) may read it, and only
``GET`` of a few fixed paths is answered. Nothing from the request reaches the
answer but the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107
SOCKET_MODE = 0o660

StateProvider = Callable[[], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The endpoint cannot listen (path too long, another agent answers, no permission)."""


def check_socket_path(path: Path) -> str | None:
    """Why ``path`` cannot be a Unix socket's address, or None when it can."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return f"control socket path is {len(os.fsencode(path))} bytes; the limit is 107"
    return None


def _answers(path: Path) -> bool:
    """True when something accepts connections on ``path`` (another agent)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(os.fsencode(path))
    except OSError:
        return False
    finally:
        s.close()
    return True


def _clear_stale(path: Path) -> None:
    """Remove a socket left by a killed agent; refuse to touch anything else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} exists and is not a socket; refusing to replace it")
    if _answers(path):
        raise ControlError(f"another agent answers on {path}")
    path.unlink()


class ControlServer:
    """Serves ``GET /v1/state`` (and ``/v1/health``) on a Unix socket.

    A few lines of HTTP/1.x on asyncio streams rather than aiohttp: a daemon
    without the live view must not load a web framework for one read-only
    route. Requests are bounded in size and time; anything else is refused.
    """

    def __init__(self, path: Path, state: StateProvider) -> None:
        self.path = path
        self._state = state
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        why = check_socket_path(self.path)
        if why is not None:
            raise ControlError(why)
        await asyncio.to_thread(self._prepare)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
            os.chmod(self.path, SOCKET_MODE)
        except OSError as e:
            await self.close()
            raise ControlError(f"control socket {self.path}: {e.strerror or e}") from e
        log.info("control endpoint on %s", self.path)

    def _prepare(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _clear_stale(self.path)
        except OSError as e:
            raise ControlError(f"control socket {self.path}: {e.strerror or e}") from e

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.path.unlink)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return  # slow, cut short or oversized: no answer is owed
            status, doc = await self._answer(head)
            body = json.dumps(doc, default=str).encode("utf-8")
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode("ascii")
                + body
            )
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(self, head: bytes) -> tuple[int, dict[str, Any]]:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, {"error": "not an HTTP/1.x request"}
        method, target = parts[0], parts[1]
        if method != b"GET":
            return 405, {"error": "read-only: only GET"}
        if target == b"/v1/health":
            return 200, {"ok": True, "pid": os.getpid()}
        if target != b"/v1/state":
            return 404, {"error": "unknown path (use /v1/state or /v1/health)"}
        try:
            return 200, await self._state()
        except Exception as e:  # a broken provider is an answer, not a dead endpoint
            log.exception("control: state provider failed")
            return 500, {"error": f"state unavailable: {type(e).__name__}"}


MAX_REQUEST = 4096
READ_TIMEOUT = 2.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error"}  # fmt: skip
