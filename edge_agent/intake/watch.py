"""Noticing files in watched folders: inotify where the kernel offers it, polling otherwise.

Only *notices*; deciding when a file is complete lives in :mod:`edge_agent.intake.stability`
and adopting it in :mod:`edge_agent.intake.intake`. Network shares do not deliver
inotify events for writes made by other hosts, so a poll pass always runs as
well, just less often when inotify is active.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from edge_agent.host.libc import has, libc

log = logging.getLogger(__name__)

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_MODIFY = 0x00000002
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


class Inotify:
    """A minimal inotify reader bound to the running event loop (no threads)."""

    def __init__(self) -> None:
        if not has("inotify_init1"):
            raise OSError(errno.ENOSYS, "inotify not available")
        self._libc = libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd: int = fd
        self._wds: dict[int, Path] = {}
        self._queue: asyncio.Queue[Path | None] = asyncio.Queue(maxsize=4096)
        self._loop: asyncio.AbstractEventLoop | None = None

    def add_watch(self, folder: Path) -> None:
        mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MODIFY
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(folder))
        self._wds[wd] = folder

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return
        for path in self._parse(data):
            try:
                self._queue.put_nowait(path)
            except asyncio.QueueFull:
                # A full queue only delays noticing: the poll pass finds the file.
                return

    def _parse(self, data: bytes) -> Iterator[Path]:
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            raw = data[offset : offset + length].rstrip(b"\0")
            offset += length
            folder = self._wds.get(wd)
            if mask & IN_Q_OVERFLOW or folder is None or not raw:
                continue
            yield folder / os.fsdecode(raw)

    async def get(self) -> Path | None:
        return await self._queue.get()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._loop = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_inotify(folders: list[Path]) -> Inotify | None:
    """An inotify watcher on these folders, or None to fall back to polling."""
    try:
        ino = Inotify()
    except OSError as exc:
        log.info("inotify unavailable (%s); polling watched folders", exc)
        return None
    try:
        for folder in folders:
            ino.add_watch(folder)
    except OSError as exc:
        log.info("inotify watch failed (%s); polling watched folders", exc)
        ino.close()
        return None
    return ino


def scan_folder(folder: Path) -> list[Path]:
    """Regular-looking entries directly in ``folder`` (no recursion, hidden files skipped)."""
    out: list[Path] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                out.append(Path(entry.path))
    except FileNotFoundError:
        return []
    return sorted(out)
