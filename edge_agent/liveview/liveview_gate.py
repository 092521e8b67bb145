"""Connection limits for the live view's HTTP server.

The live view listens on the LAN; anyone who can reach the port can open TCP
connections without a token. Every connection holds a file descriptor, and
the recorder needs descriptors for the segments it opens, so the server:

- admits at most ``max_connections`` at once, and at most
  ``max_per_address`` from one peer address (so one host cannot take every
  slot), and closes the rest at once (``abort``: no lingering, the descriptor
  is freed immediately);
- refuses new connections while the process's free descriptors under
  ``RLIMIT_NOFILE`` are fewer than ``fd_reserve``: that reserve belongs to
  recording, never to HTTP. Sockets are accepted before the gate sees them
  and a refused one is closed on the next loop pass, so a flood can dip into
  the reserve by about two accept bursts (``2 * ACCEPT_BACKLOG``, 32);
- drops a connection that has not sent complete request headers within
  ``header_seconds`` (a silent or dribbling client);
- closes idle keep-alive connections after ``keepalive_seconds`` and any
  connection after ``max_requests`` requests.

Drops are counted and logged as one summary line per ``LOG_EVERY_SECONDS``,
never one line per connection: a flood must not fill the disk with logs.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("edge_agent.liveview.liveview")

LOG_EVERY_SECONDS = 30.0
ACCEPT_BACKLOG = 16  # sockets accepted per wake-up before the gate sees any
LISTEN_QUEUE = 128
# What the rest of the agent may need at once: the catalog (db, WAL, shm, a
# second connection), watched-folder files, the broker socket, sd_notify,
# WebRTC peers' UDP sockets, libraries' own descriptors.
BASE_FD_RESERVE = 128
# Per camera: the segment being written, the next one opened before the
# previous is renamed, RTSP TCP/UDP sockets (RTP and RTCP per stream).
FDS_PER_SOURCE = 16


def recording_fd_reserve(n_sources: int) -> int:
    """Descriptors kept free for recording and the rest of the agent, never used by HTTP."""
    return BASE_FD_RESERVE + FDS_PER_SOURCE * max(n_sources, 0)


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = 64
    max_per_address: int = 32
    header_seconds: float = 5.0  # from accept to complete request headers
    body_seconds: float = 10.0  # to read a request body (an SDP offer)
    keepalive_seconds: float = 15.0  # idle between requests on one connection
    max_requests: int = 100  # per connection, then Connection: close
    max_body_bytes: int = 64 * 1024
    fd_reserve: int = BASE_FD_RESERVE


class _Exhausted(Exception):
    pass


def _count_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir used
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise _Exhausted from None  # not even one descriptor left to look
        return None


def open_fd_count() -> int | None:
    """Descriptors this process has open, or None where /proc is missing."""
    try:
        return _count_fds()
    except _Exhausted:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return None if soft == resource.RLIM_INFINITY else int(soft)


def fd_headroom() -> int | None:
    """Descriptors still free under the soft ``RLIMIT_NOFILE``, or None if unknown."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        used = _count_fds()
    except _Exhausted:
        return 0
    return None if used is None else soft - used


class DropLog:
    """Counts dropped connections by reason; logs one summary line per period."""

    def __init__(self, every: float = LOG_EVERY_SECONDS) -> None:
        self.every = every
        self.totals: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._last = -float("inf")

    def add(self, reason: str) -> None:
        self.totals[reason] = self.totals.get(reason, 0) + 1
        self._pending[reason] = self._pending.get(reason, 0) + 1
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._pending or (not force and now - self._last < self.every):
            return
        self._last = now
        parts = ", ".join(f"{n} {why}" for why, n in sorted(self._pending.items()))
        self._pending.clear()
        log.warning("live view: dropped connections (%s); next summary in %gs", parts, self.every)


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


class _Guarded(asyncio.Protocol):
    """Wraps aiohttp's per-connection handler to enforce the header deadline."""

    def __init__(self, gate: Gate, inner: Any) -> None:
        self._gate = gate
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started = False
        self.peer = ""
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._gate.admit_peer(self):
            transport.abort()
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._gate.limits.header_seconds, self._deadline)
        self._inner.connection_made(transport)

    def _deadline(self) -> None:
        self._timer = None
        if self.requests == 0 and self._transport is not None:
            self._gate.drops.add("sent no request in time")
            self._transport.abort()

    def request_started(self) -> int:
        """Called for each request: ends the header deadline; returns the request number."""
        self.requests += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self.requests

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._gate.forget(self)
        self._transport = None
        if self._started:
            self._inner.connection_lost(exc)


class Gate:
    """The protocol factory handed to ``loop.create_server`` in front of aiohttp."""

    def __init__(self, handler_factory: Any, limits: ServerLimits) -> None:
        self._factory = handler_factory
        self.limits = limits
        self.open: set[_Guarded] = set()
        self._per_peer: dict[str, int] = {}
        self.drops = DropLog()
        self.closing = False

    def __call__(self) -> asyncio.Protocol:
        if self.closing:
            return _Refused()
        if len(self.open) >= self.limits.max_connections:
            self.drops.add("over the connection limit")
            return _Refused()
        headroom = fd_headroom()
        if headroom is not None and headroom < self.limits.fd_reserve:
            # The accepted socket already holds one descriptor; closing it at once
            # returns it before anything else can run.
            self.drops.add("file descriptors reserved for recording")
            return _Refused()
        guarded = _Guarded(self, self._factory())
        self.open.add(guarded)
        return guarded

    def admit_peer(self, conn: _Guarded) -> bool:
        n = self._per_peer.get(conn.peer, 0)
        if n >= self.limits.max_per_address:
            self.open.discard(conn)
            self.drops.add("over the per-address limit")
            return False
        self._per_peer[conn.peer] = n + 1
        return True

    def forget(self, conn: _Guarded) -> None:
        if conn not in self.open:
            return
        self.open.discard(conn)
        if conn._started:
            n = self._per_peer.get(conn.peer, 1) - 1
            if n > 0:
                self._per_peer[conn.peer] = n
            else:
                self._per_peer.pop(conn.peer, None)

    def abort_all(self) -> None:
        for conn in list(self.open):
            if conn._transport is not None:
                conn._transport.abort()


async def listen(
    handler_factory: Any, limits: ServerLimits, host: str, port: int
) -> tuple[asyncio.Server, Gate, int]:
    """Listen on ``host:port`` with a :class:`Gate` in front of ``handler_factory``.

    Returns the server, its gate and the bound port (``port`` 0 picks one).
    """
    gate = Gate(handler_factory, limits)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
        # Our own server in front of aiohttp's handler: the gate decides per
        # connection before aiohttp sees it. asyncio accepts up to `backlog`
        # sockets per wake-up before the gate sees any of them: short bursts
        # keep a flood inside the fd reserve.
        server = await asyncio.get_running_loop().create_server(
            gate, sock=sock, backlog=ACCEPT_BACKLOG
        )
        # create_server also made ACCEPT_BACKLOG the kernel's queue; a longer
        # one costs no descriptor (queued connections are not ours until
        # accepted) and spares clients SYN retries while a flood is drained.
        sock.listen(LISTEN_QUEUE)
    except BaseException:
        sock.close()
        raise
    return server, gate, int(sock.getsockname()[1])


def request_cap(limits: ServerLimits) -> Any:
    """aiohttp middleware: close a connection after ``max_requests`` requests."""
    from aiohttp import web

    @web.middleware
    async def cap(request: web.Request, handler: Any) -> web.StreamResponse:
        transport = request.transport
        conn = transport.get_protocol() if transport is not None else None
        started = getattr(conn, "request_started", None)
        number = started() if started is not None else 0
        response: web.StreamResponse = await handler(request)
        if number >= limits.max_requests:
            response.force_close()  # keep-alive bound: the client reconnects
        return response

    return cap
