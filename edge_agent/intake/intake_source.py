"""Opening a file to adopt: once, by descriptor, and naming it safely.

A watched folder is writable by cameras, NVRs and whoever else can reach the
share, so the file checked must be the file adopted. It is opened once with
``O_NOFOLLOW | O_NONBLOCK`` (a symlink fails, a FIFO cannot block), the
descriptor is checked with ``fstat`` (a regular file, the inode that was
watched becoming stable, a direct entry of the folder) and everything after
that (hash, probe, remux) reads ``/proc/self/fd/N``, which reopens that inode
whatever the name points at by then.

Names come from the disk as bytes: Latin-1 names from Windows shares and older
DVRs are not UTF-8. :func:`display_name` is the only form that leaves this
layer as text (catalog, audit, events, logs): undecodable bytes and control
characters escaped, length bounded.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DISPLAY_MAX",
    "OPEN_FLAGS",
    "TRANSIENT_ERRNOS",
    "Source",
    "SourceChanged",
    "display_name",
    "first_look",
    "open_source",
]

OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
DISPLAY_MAX = 200  # characters of a name kept in audit, events and logs
_CHUNK = 64 * 1024
# Our side is short of something (descriptors, memory): not the file's fault, so
# these are raised for a later retry instead of refusing or quarantining it.
TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EINTR})


class SourceChanged(Exception):
    """The name now points at another file than the one watched: observe it afresh."""


def display_name(name: Path | str) -> str:
    """A name from the disk as bounded, printable text that always encodes as UTF-8."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    text = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
    if len(text) > DISPLAY_MAX:
        text = f"{text[:DISPLAY_MAX]}...(+{len(text) - DISPLAY_MAX} chars)"
    return text


@dataclass
class Source:
    """A file opened for adoption; read it only through :attr:`proc` or :attr:`fd`."""

    path: Path  # the name it was found under: display and removal only
    fd: int
    st: os.stat_result

    @property
    def proc(self) -> Path:
        # A magic link: opening it reopens this descriptor's inode, not a name lookup.
        return Path(f"/proc/self/fd/{self.fd}")

    @property
    def ident(self) -> tuple[int, int]:
        return (self.st.st_dev, self.st.st_ino)

    @property
    def shown(self) -> str:
        return display_name(self.path)

    def sha256(self) -> str:
        # One buffer below glibc's mmap threshold: a new 1 MiB bytes object per read
        # came from a fresh mmap and faulted in every page (host/fsutil.py).
        digest = hashlib.sha256()
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        offset = 0
        while n := os.preadv(self.fd, [buf], offset):
            digest.update(view[:n])
            offset += n
        return digest.hexdigest()

    def still_named(self) -> bool:
        """True while :attr:`path` still names this inode (checked before moving it)."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.ident

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def first_look(path: Path) -> str | None:
    """Why ``path`` must not be adopted, judged by name (None: open it and see)."""
    if ".." in path.parts:
        return "path_escape: path contains '..'"
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "missing: file disappeared before adoption"
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return "symlink: symlinks are refused (they may point outside the storage root)"
    if not stat.S_ISREG(st.st_mode):
        return "not_regular: only regular files are adopted"
    return None


def _directly_in(path: Path, folder: Path) -> bool:
    try:
        return os.path.samefile(path.parent, folder)
    except OSError:
        return False


def open_source(
    path: Path, *, within: Path | None = None, expect: tuple[int, int] | None = None
) -> Source | str:
    """The opened file, or why it must not be adopted (``code: explanation``).

    ``within``: the watched folder ``path`` must be a direct entry of; the name
    is then opened relative to that folder. ``expect``: the (device, inode) the
    caller watched becoming stable; another one raises :class:`SourceChanged`.
    OSError with an errno in :data:`TRANSIENT_ERRNOS` is raised as it is.
    """
    if ".." in path.parts:
        return "path_escape: path contains '..'"
    if within is not None and not _directly_in(path, within):
        return f"path_escape: {display_name(path)} is not directly in {display_name(within)}"
    try:
        if within is not None:
            dir_fd = os.open(within, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fd = os.open(path.name, OPEN_FLAGS, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        else:
            fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        return "missing: file disappeared before adoption"
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise
        if exc.errno == errno.ELOOP:
            return "symlink: symlinks are refused (they may point outside the storage root)"
        return f"unreadable: {exc.strerror or exc}"
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        return f"unreadable: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return "not_regular: only regular files are adopted"
    if expect is not None and (st.st_dev, st.st_ino) != expect:
        os.close(fd)
        raise SourceChanged(f"{display_name(path)} was replaced after it was watched")
    return Source(path, fd, st)
