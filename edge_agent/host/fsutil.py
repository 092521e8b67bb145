"""Small durable-file helpers: fsync a file or a directory, atomic replace, hashing.

Adoption and remux write to a temporary name in the target directory, fsync it,
rename it over the final name and fsync the directory (docs/design/deletion.md), so that after
a crash the final name points either at nothing or at a complete file.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from edge_agent.host.libc import libc

# Read into one buffer below glibc's mmap threshold (host/memtune.py): a new 1 MiB
# bytes object per read came from a fresh mmap and faulted in every page, which
# cost as much CPU as the SHA-256 itself (2.5 ms for a 2 MB segment, now 1.5 ms).
_CHUNK = 64 * 1024
# The agent's modes whatever the umask: the owner writes, the
# group (storage.reader_group) reads, others nothing.
FILE_MODE = 0o640
DIR_MODE = 0o750


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data and metadata to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make renames, creations and unlinks inside directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """Flush every file of the filesystem holding ``path`` to stable storage, at once.

    One flush for a whole wave of recorder segments (``[storage] fsync =
    "batched"``) instead of an fsync and a folder fsync per file: what SD cards and
    spinning disks want. Python has no ``os.syncfs``; the C library's is called
    (it releases the GIL while the disk works). Without it, ``sync()`` flushes
    every filesystem, which is more than needed but just as safe.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fn = _syncfs()
        if fn is None:
            os.sync()
        elif fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


def _syncfs() -> Any:
    try:
        return libc().syncfs
    except (OSError, AttributeError):
        return None


def make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    """``mkdir -p`` whose new folders get ``mode`` exactly, not ``mode & ~umask``."""
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs to set
        os.chmod(d, mode)


def create_file(path: Path, mode: int = FILE_MODE) -> None:
    """Create ``path`` empty with ``mode`` exactly if missing; an existing file is left as is.

    For files another library then opens by name (SQLite, the muxer): they would
    create it ``0666 & ~umask``.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o640) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sha256_file(path: Path, *, chunk_size: int = _CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks so large recordings use little memory."""
    digest = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with Path(path).open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()
