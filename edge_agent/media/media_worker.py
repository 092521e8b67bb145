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
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from edge_agent.media.media_probe import (
    DEFAULT_MAX_STREAMS,
    MediaError,
    PacketScan,
    ProbeResult,
)
from edge_agent.media.media_remux import RemuxResult

log = logging.getLogger(__name__)

IDLE_SECONDS = 30.0  # no call for this long: the child is stopped
MAX_REPLY = 1 << 20  # a reply is a few KiB; anything larger is refused unread
# Time bounds: a fixed part (start-up, slow disks) plus one per byte. Remuxing
# 1 GB takes about 5 s here (docs/scale.md); a ten times slower device fits.
PROBE_BOUND = (30.0, 1 / 50e6)
REMUX_BOUND = (60.0, 1 / 10e6)


# Built on first use: a daemon that adopts nothing keeps their memory.
@functools.cache
def _probed() -> TypeAdapter[tuple[ProbeResult, PacketScan]]:
    return TypeAdapter(tuple[ProbeResult, PacketScan])


@functools.cache
def _remuxed() -> TypeAdapter[RemuxResult]:
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


class MediaWorker:
    """One child process doing the PyAV work on untrusted files, one call at a time."""

    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        probe_bound: tuple[float, float] = PROBE_BOUND,
        remux_bound: tuple[float, float] = REMUX_BOUND,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.probe_bound = probe_bound
        self.remux_bound = remux_bound
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._last = 0.0
        self.started = 0  # children started (a restart after a crash counts)
        self.failures = 0  # calls that ended in MediaWorkerError

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- calls ---------------------------------------------------------------

    def probe_and_scan(
        self, fd: int, path: Path, *, max_streams: int = DEFAULT_MAX_STREAMS, predict: bool
    ) -> tuple[ProbeResult, PacketScan]:
        """:func:`~edge_agent.media.media_probe.probe_and_scan` of the open file ``fd``;
        the result names ``path`` as the in-process call would."""
        reply = self._call(
            "probe", fd, self._bound(self.probe_bound, fd),
            {"max_streams": max_streams, "predict": predict},
        )  # fmt: skip
        try:
            info, scan = _probed().validate_json(reply)
        except ValidationError as exc:
            raise self._nonsense(exc) from None
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
        try:
            reply = self._call("remux", fd, self._bound(self.remux_bound, fd), args)
        except MediaWorkerError:
            dst.unlink(missing_ok=True)  # what a killed child left half-written
            raise
        try:
            made = _remuxed().validate_json(reply)
        except ValidationError as exc:
            dst.unlink(missing_ok=True)
            raise self._nonsense(exc) from None
        if made.dst != dst:
            dst.unlink(missing_ok=True)
            raise self._nonsense(f"wrote {made.dst}, not {dst}")
        return made

    # -- lifecycle -----------------------------------------------------------

    def stop_if_idle(self) -> bool:
        """Stop the child if no call came for ``idle_seconds``; True if it was stopped."""
        if not self._lock.acquire(blocking=False):
            return False  # a call is running
        try:
            if self._proc is None or time.monotonic() - self._last < self.idle_seconds:
                return False
            self._stop()
            return True
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
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
        self._sock = parent
        self.started += 1
        log.debug("media worker started (pid %d)", self._proc.pid)

    def _stop(self) -> None:
        sock, proc = self._sock, self._proc
        self._sock = self._proc = None
        if sock is not None:
            sock.close()  # the child reads end of file and exits
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- internals -----------------------------------------------------------

    def _bound(self, bound: tuple[float, float], fd: int) -> float:
        try:
            size = os.fstat(fd).st_size
        except OSError:
            size = 0
        return bound[0] + size * bound[1]

    def _call(self, op: str, fd: int, bound: float, args: dict[str, Any]) -> bytes:
        request = json.dumps({"op": op, "args": args}).encode()
        with self._lock:
            self._last = time.monotonic()
            sock = self._send(op, request, fd)
            try:
                sock.settimeout(bound)
                reply = sock.recv(MAX_REPLY + 1)
            except TimeoutError:
                raise self._failed(f"{op} took more than {bound:.0f} s; stopped") from None
            except ConnectionResetError:
                reply = b""  # died with our request unread: as end of file
            except OSError as exc:
                raise self._failed(f"{op}: {exc.strerror or exc}") from None
            finally:
                self._last = time.monotonic()
            if not reply:
                proc = self._proc
                if proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=2)  # for its exit status in the verdict
                raise self._failed(f"the media worker died during {op}")
            if len(reply) > MAX_REPLY:
                raise self._failed(f"{op}: a reply over {MAX_REPLY} bytes")
        return self._unwrap(op, reply)

    def _send(self, op: str, request: bytes, fd: int) -> socket.socket:
        """Hand the request to a live child (started if needed); under the lock."""
        for attempt in (1, 2):
            if self._sock is None or self._proc is None or self._proc.poll() is not None:
                self._stop()
                self._start()
            sock = self._sock
            if sock is None:
                break
            try:
                socket.send_fds(sock, [request], [fd])
                return sock
            except OSError:
                # Gone before it took the request (killed while idle): once more.
                self._stop()
                if attempt == 2:
                    break
        raise self._failed(f"cannot reach the media worker for {op}")

    def _unwrap(self, op: str, reply: bytes) -> bytes:
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
                raise self._nonsense(bad) from None
            if isinstance(errno, int):
                # Intake tells "our side ran short" (EMFILE, ENOMEM) from a bad file by this.
                exc.__cause__ = OSError(errno, os.strerror(errno))
            raise exc
        if status == b"error":
            # An exception the call raised (the child lives on): retried, then quarantined.
            self.failures += 1
            raise MediaWorkerError(f"{op} failed: {body[:300].decode(errors='replace')}")
        raise self._nonsense(f"{op}: status {status[:40]!r}")

    def _failed(self, why: str) -> MediaWorkerError:
        """Kill the child (a hung or dead one serves no one) and say how it ended."""
        proc = self._proc
        ended = ""
        if proc is not None:
            code = proc.poll()
            if code is None:
                proc.kill()
                proc.wait()
            else:
                ended = f" ({_signal_name(code)})"
        self._stop()
        self.failures += 1
        log.warning("media worker: %s%s", why, ended)
        return MediaWorkerError(f"{why}{ended}")

    def _nonsense(self, what: object) -> MediaWorkerError:
        """A reply that is not what the protocol says: the child cannot be trusted on."""
        with self._lock:  # callers hold it no longer: the reply was read under it
            return self._failed(f"unreadable reply: {str(what)[:300]}")
