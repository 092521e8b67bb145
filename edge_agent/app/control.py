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

from aiohttp import web

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
    """Serves ``GET /v1/state`` (and ``/v1/health``) on a Unix socket."""

    def __init__(self, path: Path, state: StateProvider) -> None:
        self.path = path
        self._state = state
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        why = check_socket_path(self.path)
        if why is not None:
            raise ControlError(why)
        await asyncio.to_thread(self._prepare)
        # Requests carry no body worth reading: anything over 1 KiB is refused.
        app = web.Application(client_max_size=1024)
        app.router.add_get("/v1/state", self._get_state)
        app.router.add_get("/v1/health", self._get_health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.UnixSite(runner, str(self.path))
        try:
            await site.start()
            os.chmod(self.path, SOCKET_MODE)
        except OSError as e:
            await runner.cleanup()
            raise ControlError(f"control socket {self.path}: {e.strerror or e}") from e
        self._runner = runner
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
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.path.unlink)

    async def _get_state(self, _: web.Request) -> web.Response:
        try:
            doc = await self._state()
        except Exception as e:  # a broken provider is an answer, not a dead endpoint
            log.exception("control: state provider failed")
            return _json({"error": f"state unavailable: {type(e).__name__}"}, 500)
        return _json(doc, 200)

    async def _get_health(self, _: web.Request) -> web.Response:
        return _json({"ok": True, "pid": os.getpid()}, 200)


def _json(doc: dict[str, Any], status: int) -> web.Response:
    return web.Response(
        body=json.dumps(doc, default=str).encode("utf-8"),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
