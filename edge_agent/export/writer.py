"""Write an export folder or tar file durably, or leave nothing that looks complete.

Everything goes to a temporary name beside the target (``.NAME.partial-PID``),
each file is hashed while it is copied (one read per file); the manifest
and its signature come last; every file is fsynced; then the temporary name is renamed to
the target and the parent folder fsynced (the protocol of
docs/design/deletion.md for adopted files). Killed half-way, an export leaves
only the temporary name, whose manifest, if any, was never renamed into
place. A full target (ENOSPC, EDQUOT) removes the temporary name and raises
:class:`ExportError` with the sizes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from edge_agent.host.fsutil import fsync_dir, fsync_file

CHUNK = 4 << 20  # big reads keep SHA-256 and the copy near disk speed
FILE_MODE = 0o640
DIR_MODE = 0o750
_FULL = (errno.ENOSPC, errno.EDQUOT)
BLOCK = tarfile.BLOCKSIZE

T = TypeVar("T")
Progress = Callable[[int], None]  # bytes just copied


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


_NO_KERNEL_COPY = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF)
WORKERS = 2  # files hashed at once: SHA-256 on one core is slower than a fast disk


def _copy_range(src_fd: int, dst_fd: int, view: memoryview, offset: int, dst: int, n: int) -> None:
    """Copy ``n`` bytes at ``offset`` of ``src_fd`` to ``dst_fd`` at ``dst``.

    copy_file_range first (the kernel moves page-cache pages, as cp does), else
    a plain pwrite of the mapped bytes for targets that refuse it.
    """
    done = 0
    while done < n:
        try:
            k = os.copy_file_range(src_fd, dst_fd, n - done, offset + done, dst + done)
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise
            k = os.pwrite(dst_fd, view[offset + done : offset + n], dst + done)
        if k == 0:
            raise ExportError("source file shrank while it was copied")
        done += k


def copy_hashing(src: Path, dst_fd: int, dst_offset: int, progress: Progress) -> tuple[str, int]:
    """Copy ``src`` into ``dst_fd`` at ``dst_offset``, hashing it: (sha256, size).

    The file is read from disk once: each chunk is hashed from a read-only
    memory map, then the kernel copies the same page-cache pages. Catalogued
    files are never changed in place (docs/design/deletion.md), and ``export
    verify`` re-hashes what was written.
    """
    h = hashlib.sha256()
    fd = os.open(src, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return h.hexdigest(), 0
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm, memoryview(mm) as view:
            with contextlib.suppress(OSError, AttributeError):
                mm.madvise(mmap.MADV_SEQUENTIAL)
            offset = 0
            while offset < size:
                n = min(CHUNK, size - offset)
                with view[offset : offset + n] as chunk:
                    h.update(chunk)  # releases the GIL: the other worker runs meanwhile
                _copy_range(fd, dst_fd, view, offset, dst_offset + offset, n)
                # Start writing this chunk back now (Linux: DONTNEED on dirty pages
                # begins writeback), so the final fsync waits for little, as cp's
                # sync does after a copy the disk has been absorbing meanwhile.
                with contextlib.suppress(OSError):
                    os.posix_fadvise(dst_fd, dst_offset + offset, n, os.POSIX_FADV_DONTNEED)
                offset += n
                progress(n)
    finally:
        os.close(fd)
    return h.hexdigest(), size


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
        self._offset = 0  # the tar's end so far
        self._need = 0

    # -- lifecycle ---------------------------------------------------------------

    def begin(self, need: int, files: int = 0) -> None:
        """Check the target, refuse a full disk up front, create the temporary name.

        ``need``: the recordings' bytes; ``files``: how many (their tar headers).
        """
        if self.out.exists() or self.out.is_symlink():
            raise ExportError(f"{self.out}: already exists (an export never overwrites)")
        if not self.parent.is_dir():
            raise ExportError(f"{self.parent}: folder does not exist (create it first)")
        try:
            st = os.statvfs(self.parent)
        except OSError as exc:
            raise ExportError(f"{self.parent}: {exc.strerror}") from None
        # Headers, manifest and signature: small, but counted so a near-full disk is refused.
        self._need = need + 64 * 1024 + 3 * BLOCK * files
        if st.f_bavail * st.f_frsize < self._need:
            raise ExportError(full_message(self.parent, self._need))
        self._guard(self._create)

    def _create(self) -> None:
        if self.tar:
            self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        else:
            os.mkdir(self.tmp, DIR_MODE)
            os.mkdir(self.tmp / "files", DIR_MODE)

    def add_files(self, items: Sequence[tuple[str, Path, int]], progress: Progress) -> list[str]:
        """Copy each (name, source, catalogued size); their SHA-256s, in order.

        ``progress`` gets the bytes of each chunk copied (from worker threads).
        """
        return self._guard(lambda: self._add_files(items, progress))

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
                raise ExportError(full_message(self.parent, self._need, exc)) from None
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
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, self._offset)
            view = view[n:]
            self._offset += n

    def _tar_pad(self) -> None:
        rest = -self._offset % BLOCK
        if rest:
            self._tar_write(bytes(rest))

    def _add_files(self, items: Sequence[tuple[str, Path, int]], progress: Progress) -> list[str]:
        # Each file's place is known before copying (sizes from the catalog), so
        # files are copied side by side, a tar at their offsets (padding stays a hole).
        jobs: list[tuple[Path, int, int, int]] = []  # source, fd, offset, size
        opened: list[int] = []
        try:
            for name, src, size in items:
                if self.tar:
                    assert self._fd is not None
                    self._tar_write(self._header(name, size))
                    jobs.append((src, self._fd, self._offset, size))
                    self._offset += size + (-size % BLOCK)
                else:
                    fd = os.open(self.tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
                    opened.append(fd)
                    jobs.append((src, fd, 0, size))
            return self._run_jobs(jobs, progress)
        finally:
            for fd in opened:
                os.close(fd)

    def _run_jobs(self, jobs: list[tuple[Path, int, int, int]], progress: Progress) -> list[str]:
        lock = threading.Lock()

        def step(n: int) -> None:
            with lock:
                progress(n)

        def one(src: Path, fd: int, offset: int, size: int) -> str:
            digest, n = copy_hashing(src, fd, offset, step)
            if n != size:
                raise ExportError(f"{src}: {n} bytes on disk, {size} catalogued (run reconcile)")
            return digest

        pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="export-copy")
        futures = [pool.submit(one, *job) for job in jobs]
        try:
            return [f.result() for f in futures]
        finally:
            # On the first failure the rest are cancelled; running ones finish first.
            pool.shutdown(wait=True, cancel_futures=True)

    def _add_bytes(self, name: str, data: bytes) -> None:
        if self.tar:
            self._tar_write(self._header(name, len(data)))
            self._tar_write(data)
            self._tar_pad()
            return
        fd = os.open(self.tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            _write_all(fd, data)
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
            # One pass of fsyncs at the end, like cp + sync: the kernel writes the
            # files back while later ones are copied, instead of one at a time.
            for path in sorted(self.tmp.rglob("*")):
                if path.is_file():
                    fsync_file(path)
            fsync_dir(self.tmp / "files")
            fsync_dir(self.tmp)
        # rename(2) onto a name made meanwhile would replace a file (or fail on a
        # non-empty folder): check once more, the window left is the operator's own.
        if self.out.exists():
            raise ExportError(f"{self.out}: appeared while exporting (an export never overwrites)")
        os.rename(self.tmp, self.out)
        fsync_dir(self.parent)


__all__ = ["CHUNK", "ExportError", "ExportWriter", "copy_hashing", "full_message"]
