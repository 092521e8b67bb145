"""FFmpeg's demuxers and muxers in a child process, for files from outside.

A watched folder hands the agent files nobody checked. Probing and remuxing
them in the daemon meant that a file which crashes FFmpeg (a segfault in a
demuxer) took every camera down with it, and one that makes it loop stalled
the folder for good. :class:`MediaWorker` runs :func:`probe_and_scan` and
:func:`remux` of such files in one child process
(:mod:`edge_agent.media.media_child`): a crash or a call past its time bound
kills only the child, the caller gets :class:`MediaWorkerError` (a verdict
with the reason: the adoption is retried, then quarantined), and the next
call starts a fresh child. A backlog's remuxes also run beside the daemon's
Python instead of sharing its GIL (docs/scale.md, "Backlog adoption").

The child gets the source as a descriptor (``SCM_RIGHTS``), so it reads the
inode the caller checked, and writes only the destination it is told. Replies
are JSON validated into the same dataclasses the in-process calls return,
never pickles: whatever FFmpeg does in the child, the daemon reads data.

Started on first use and stopped by :meth:`stop_if_idle` (the daemon's monitor
calls it), so a device that adopts nothing never pays for a second
interpreter. Blocking: call from worker threads; calls are serialised.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from edge_agent.media.media_probe import (
    DEFAULT_MAX_STREAMS,
    MediaError,
    PacketScan,
    ProbeResult,
)
from edge_agent.media.media_remux import RemuxResult

log = logging.getLogger(__name__)

T = TypeVar("T")

IDLE_SECONDS = 30.0  # no call for this long: the child is stopped
MAX_REPLY = 1 << 20  # a reply is a few KiB; anything larger is refused unread
# Time bounds: a fixed part (start-up, slow disks) plus one per byte. Remuxing
# 1 GB takes about 5 s here (docs/scale.md); a ten times slower device fits.
PROBE_BOUND = (30.0, 1 / 50e6)
REMUX_BOUND = (60.0, 1 / 10e6)


# The replies' types, for both sides (media_child.py dumps, we validate). Built on
# first use: a daemon that adopts nothing keeps their memory, and building one
# costs more than a probe, so never per call.
@functools.cache
def probe_reply() -> TypeAdapter[tuple[ProbeResult, PacketScan]]:
    return TypeAdapter(tuple[ProbeResult, PacketScan])


@functools.cache
def remux_reply() -> TypeAdapter[RemuxResult]:
    return TypeAdapter(RemuxResult)


class MediaWorkerError(RuntimeError):
    """The child died, hung past its bound or answered nonsense: not the file's verdict
    alone (it may be the file), so callers retry before they quarantine."""


def _signal_name(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit status {code}"


class _Child:
    """One child process and the socket to it; its lock is held for a call."""

    def __init__(self, owner: MediaWorker) -> None:
        self.owner = owner
        self.lock = threading.Lock()
        self.busy = False  # taken by a call (MediaWorker._pick)
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.last = 0.0

    @property
    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.media.media_child", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Its warnings (FFmpeg's, Python's) go where the daemon's go.
                stderr=None,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.sock = parent
        self.owner.started += 1
        log.debug("media worker started (pid %d)", self.proc.pid)

    def stop(self) -> None:
        sock, proc = self.sock, self.proc
        self.sock = self.proc = None
        if sock is not None:
            sock.close()  # the child reads end of file and exits
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def call(self, op: str, fd: int, bound: float, request: bytes) -> bytes:
        with self.lock:
            self.last = time.monotonic()
            sock = self._send(op, request, fd)
            try:
                sock.settimeout(bound)
                reply = sock.recv(MAX_REPLY + 1)
            except TimeoutError:
                raise self.failed(f"{op} took more than {bound:.0f} s; stopped") from None
            except ConnectionResetError:
                reply = b""  # died with our request unread: as end of file
            except OSError as exc:
                raise self.failed(f"{op}: {exc.strerror or exc}") from None
            finally:
                self.last = time.monotonic()
            if not reply:
                if self.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(timeout=2)  # for its exit status in the verdict
                raise self.failed(f"the media worker died during {op}")
            if len(reply) > MAX_REPLY:
                raise self.failed(f"{op}: a reply over {MAX_REPLY} bytes")
            return reply

    def _send(self, op: str, request: bytes, fd: int) -> socket.socket:
        """Hand the request to a live child (started if needed); under the lock."""
        for attempt in (1, 2):
            if self.sock is None or self.proc is None or self.proc.poll() is not None:
                self.stop()
                self.start()
            sock = self.sock
            if sock is None:
                break
            try:
                socket.send_fds(sock, [request], [fd])
                return sock
            except OSError:
                # Gone before it took the request (killed while idle): once more.
                self.stop()
                if attempt == 2:
                    break
        raise self.failed(f"cannot reach the media worker for {op}")

    def failed(self, why: str) -> MediaWorkerError:
        """Kill the child (a hung or dead one serves no one) and say how it ended."""
        proc = self.proc
        ended = ""
        if proc is not None:
            code = proc.poll()
            if code is None:
                proc.kill()
                proc.wait()
            else:
                ended = f" ({_signal_name(code)})"
        self.stop()
        self.owner.failures += 1
        log.warning("media worker: %s%s", why, ended)
        return MediaWorkerError(f"{why}{ended}")


class MediaWorker:
    """Child processes doing the PyAV work on untrusted files, one call each at a time.

    ``children``: how many calls run side by side. Two, so that the adoption
    pipeline's read stage (probe) never waits behind its write stage (remux);
    the second starts only when two calls overlap.
    """

    def __init__(
        self,
        *,
        children: int = 2,
        idle_seconds: float = IDLE_SECONDS,
        probe_bound: tuple[float, float] = PROBE_BOUND,
        remux_bound: tuple[float, float] = REMUX_BOUND,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.probe_bound = probe_bound
        self.remux_bound = remux_bound
        self._children = [_Child(self) for _ in range(max(1, children))]
        self._slots = threading.Semaphore(len(self._children))
        self._pick_lock = threading.Lock()
        self.started = 0  # children started (a restart after a crash counts)
        self.failures = 0  # calls that ended in MediaWorkerError

    @property
    def pids(self) -> list[int]:
        """The live children's process ids."""
        return [pid for c in self._children if (pid := c.pid) is not None]

    @property
    def pid(self) -> int | None:
        """The first live child's, None when none runs."""
        pids = self.pids
        return pids[0] if pids else None

    # -- calls ---------------------------------------------------------------

    def probe_and_scan(
        self, fd: int, path: Path, *, max_streams: int = DEFAULT_MAX_STREAMS, predict: bool
    ) -> tuple[ProbeResult, PacketScan]:
        """:func:`~edge_agent.media.media_probe.probe_and_scan` of the open file ``fd``;
        the result names ``path`` as the in-process call would."""
        found = self._call(
            "probe", fd, self._bound(self.probe_bound, fd),
            {"max_streams": max_streams, "predict": predict}, probe_reply().validate_json,
        )  # fmt: skip
        info, scan = found
        return replace(info, path=path), scan

    def remux(
        self,
        fd: int,
        dst: Path,
        *,
        tags: Mapping[str, str],
        drop_audio: bool,
        container: str | None = None,
        max_streams: int = DEFAULT_MAX_STREAMS,
        scan: bool = False,
    ) -> RemuxResult:
        """:func:`~edge_agent.media.media_remux.remux` of the open file ``fd`` to ``dst``."""
        args = {
            "dst": str(dst), "tags": dict(tags), "drop_audio": drop_audio,
            "container": container, "max_streams": max_streams, "scan": scan,
        }  # fmt: skip

        def parse(reply: bytes) -> RemuxResult:
            made = remux_reply().validate_json(reply)
            if made.dst != dst:
                raise ValueError(f"wrote {made.dst}, not {dst}")
            return made

        try:
            return self._call("remux", fd, self._bound(self.remux_bound, fd), args, parse)
        except MediaWorkerError:
            dst.unlink(missing_ok=True)  # what a killed child left half-written
            raise

    # -- lifecycle -----------------------------------------------------------

    def stop_if_idle(self) -> bool:
        """Stop each child no call used for ``idle_seconds``; True if one was stopped."""
        stopped = False
        now = time.monotonic()
        for child in self._children:
            if not child.lock.acquire(blocking=False):
                continue  # a call is running
            try:
                if child.proc is not None and now - child.last >= self.idle_seconds:
                    child.stop()
                    stopped = True
            finally:
                child.lock.release()
        return stopped

    def close(self) -> None:
        for child in self._children:
            with child.lock:
                child.stop()

    # -- internals -----------------------------------------------------------

    def _bound(self, bound: tuple[float, float], fd: int) -> float:
        try:
            size = os.fstat(fd).st_size
        except OSError:
            size = 0
        return bound[0] + size * bound[1]

    def _call(
        self, op: str, fd: int, bound: float, args: dict[str, Any], parse: Callable[[bytes], T]
    ) -> T:
        request = json.dumps({"op": op, "args": args}).encode()
        with self._slots:
            with self._pick_lock:
                free = [c for c in self._children if not c.busy]
                # A running child first: a second is started only when two calls overlap.
                child = next((c for c in free if c.pid is not None), free[0])
                child.busy = True
            try:
                reply = child.call(op, fd, bound, request)
            finally:
                child.busy = False
        body = self._unwrap(op, reply, child)
        try:
            return parse(body)
        except (ValidationError, ValueError) as exc:
            raise self._nonsense(child, exc) from None

    def _unwrap(self, op: str, reply: bytes, child: _Child) -> bytes:
        """The result's JSON, or the MediaError the child raised, raised here."""
        status, _, body = reply.partition(b"\n")
        if status == b"ok":
            return body
        if status == b"media":
            try:
                doc = json.loads(body)
                exc = MediaError(str(doc["reason"]), str(doc["message"]))
                errno = doc.get("errno")
            except (ValueError, KeyError, TypeError) as bad:
                raise self._nonsense(child, bad) from None
            if isinstance(errno, int):
                # Intake tells "our side ran short" (EMFILE, ENOMEM) from a bad file by this.
                exc.__cause__ = OSError(errno, os.strerror(errno))
            raise exc
        if status == b"error":
            # An exception the call raised (the child lives on): retried, then quarantined.
            self.failures += 1
            raise MediaWorkerError(f"{op} failed: {body[:300].decode(errors='replace')}")
        raise self._nonsense(child, f"{op}: status {status[:40]!r}")

    def _nonsense(self, child: _Child, what: object) -> MediaWorkerError:
        """A reply that is not what the protocol says: that child cannot be trusted on."""
        with child.lock:  # the call released it once the reply was read
            return child.failed(f"unreadable reply: {str(what)[:300]}")
