"""Write an export folder or tar file durably, or leave nothing that looks complete.

Everything goes to a temporary name beside the target (``.NAME.partial-PID``),
each file is hashed while it is copied (one read per file), and fsynced; the
manifest and its signature come last; then the temporary name is renamed to
the target and the parent folder fsynced (the protocol of
docs/design/deletion.md for adopted files). Killed half-way, an export leaves
only the temporary name, whose manifest, if any, was never renamed into
place. A full target (ENOSPC, EDQUOT) removes the temporary name and raises
:class:`ExportError` with the sizes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from edge_agent.host.fsutil import fsync_dir

CHUNK = 4 << 20  # big reads keep SHA-256 and the copy near disk speed
FILE_MODE = 0o640
DIR_MODE = 0o750
_FULL = (errno.ENOSPC, errno.EDQUOT)
BLOCK = tarfile.BLOCKSIZE

T = TypeVar("T")
Progress = Callable[[int], None]  # bytes copied so far in this file


class ExportError(Exception):
    """An export that cannot be made; the message is for the operator."""


def full_message(target: Path, need: int, exc: OSError | None = None) -> str:
    try:
        st = os.statvfs(target)
        free = f"{st.f_bavail * st.f_frsize} bytes free"
    except OSError:
        free = "free space unknown"
    what = f" ({exc.strerror})" if exc is not None else ""
    return (
        f"{target}: not enough space for the export{what}: {need} bytes needed, {free}; "
        "nothing was written (choose another --out or a narrower window)"
    )


def copy_hashing(
    src: Path, write: Callable[[memoryview], object], progress: Progress
) -> tuple[str, int]:
    """Copy ``src`` through ``write``, hashing the same bytes: (sha256, size)."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    done = 0
    fd = os.open(src, os.O_RDONLY)
    try:
        with os.fdopen(fd, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                chunk = view[:n]
                h.update(chunk)
                write(chunk)
                done += n
                progress(done)
    finally:
        view.release()
    return h.hexdigest(), done


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class ExportWriter:
    """A folder or a tar file being written under a temporary name."""

    def __init__(self, out: Path) -> None:
        self.out = Path(os.path.abspath(out))
        self.parent = self.out.parent
        self.tmp = self.parent / f".{self.out.name}.partial-{os.getpid()}"
        self.tar = self.out.suffix == ".tar"
        self._fd: int | None = None
        self._offset = 0

    # -- lifecycle ---------------------------------------------------------------

    def begin(self, need: int) -> None:
        """Check the target, refuse a full disk up front, create the temporary name."""
        if self.out.exists() or self.out.is_symlink():
            raise ExportError(f"{self.out}: already exists (an export never overwrites)")
        if not self.parent.is_dir():
            raise ExportError(f"{self.parent}: folder does not exist (create it first)")
        try:
            st = os.statvfs(self.parent)
        except OSError as exc:
            raise ExportError(f"{self.parent}: {exc.strerror}") from None
        # Headers, manifest and signature: small, but counted so a near-full disk is refused.
        if st.f_bavail * st.f_frsize < need + 64 * 1024:
            raise ExportError(full_message(self.parent, need))
        self._guard(self._create)

    def _create(self) -> None:
        if self.tar:
            self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        else:
            os.mkdir(self.tmp, DIR_MODE)
            os.mkdir(self.tmp / "files", DIR_MODE)

    def add_file(self, name: str, src: Path, size: int, progress: Progress) -> str:
        """Copy ``src`` as ``name``; its SHA-256. ``size`` is the catalogued size."""
        return self._guard(lambda: self._add_file(name, src, size, progress))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._guard(lambda: self._add_bytes(name, data))

    def commit(self) -> None:
        """Make everything durable, then give the export its real name."""
        self._guard(self._commit)

    def abort(self) -> None:
        """Remove the temporary name, whatever state it is in."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.tar:
            self.tmp.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- internals -----------------------------------------------------------------

    def _guard(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except OSError as exc:
            self.abort()
            if exc.errno in _FULL:
                raise ExportError(full_message(self.parent, self._offset, exc)) from None
            raise ExportError(f"{self.out}: cannot write the export: {exc}") from None
        except BaseException:
            self.abort()
            raise

    def _header(self, name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = FILE_MODE
        info.mtime = int(time.time())
        return info.tobuf(tarfile.PAX_FORMAT)

    def _tar_write(self, data: memoryview | bytes) -> None:
        assert self._fd is not None
        _write_all(self._fd, data)
        self._offset += len(data)

    def _tar_pad(self) -> None:
        rest = -self._offset % BLOCK
        if rest:
            self._tar_write(bytes(rest))

    def _add_file(self, name: str, src: Path, size: int, progress: Progress) -> str:
        if self.tar:
            self._tar_write(self._header(name, size))
            digest, n = copy_hashing(src, self._tar_write, progress)
            if n != size:
                raise ExportError(f"{src}: {n} bytes on disk, {size} catalogued (run reconcile)")
            self._tar_pad()
            return digest
        target = self.tmp / name
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            digest, n = copy_hashing(src, lambda b: _write_all(fd, b), progress)
            self._offset += n
            os.fsync(fd)
        finally:
            os.close(fd)
        if n != size:
            raise ExportError(f"{src}: {n} bytes on disk, {size} catalogued (run reconcile)")
        return digest

    def _add_bytes(self, name: str, data: bytes) -> None:
        if self.tar:
            self._tar_write(self._header(name, len(data)))
            self._tar_write(data)
            self._tar_pad()
            return
        fd = os.open(self.tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _commit(self) -> None:
        if self.tar:
            assert self._fd is not None
            self._tar_write(bytes(2 * BLOCK))  # the end-of-archive marker
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        else:
            fsync_dir(self.tmp / "files")
            fsync_dir(self.tmp)
        # rename(2) onto a name made meanwhile would replace a file (or fail on a
        # non-empty folder): check once more, the window left is the operator's own.
        if self.out.exists():
            raise ExportError(f"{self.out}: appeared while exporting (an export never overwrites)")
        os.rename(self.tmp, self.out)
        fsync_dir(self.parent)


__all__ = ["CHUNK", "ExportError", "ExportWriter", "copy_hashing", "full_message"]
