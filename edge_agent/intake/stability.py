"""When is a dropped file complete? A pure rule plus one /proc probe.

A file is adopted only when its size and mtime have not changed for
``stable_seconds`` *and* no process holds it open for writing. Either signal
alone is wrong: a camera uploading over a slow link can pause longer than any
sensible quiet period, and a writer may close and reopen to append.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

O_ACCMODE = 0o3
O_WRONLY = 0o1
O_RDWR = 0o2


@dataclass(frozen=True)
class Observation:
    size: int
    mtime_ns: int
    stable_since: float  # monotonic seconds when this (size, mtime) was first seen
    ident: tuple[int, int] = (0, 0)  # (device, inode): another file under the name restarts


def observe(
    previous: Observation | None,
    size: int,
    mtime_ns: int,
    now: float,
    *,
    ident: tuple[int, int] = (0, 0),
) -> Observation:
    """Fold a new stat result into the running observation of one file."""
    if (
        previous is not None
        and previous.size == size
        and previous.mtime_ns == mtime_ns
        and previous.ident == ident
    ):
        return previous
    return Observation(size=size, mtime_ns=mtime_ns, stable_since=now, ident=ident)


def is_stable(obs: Observation, now: float, stable_seconds: float) -> bool:
    # An empty file is often a writer that created it and has not flushed yet: wait longer.
    quiet = stable_seconds if obs.size else stable_seconds * 4
    return now - obs.stable_since >= quiet


def open_for_writing(path: Path, proc: Path = Path("/proc")) -> bool:
    """True if any process we can see has ``path`` open with write access.

    Processes of other users are invisible without privileges; in that case a
    stable size and mtime remain the only signal, which is why both are used.
    """
    try:
        target = os.stat(path)
    except OSError:
        return False
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        fd_dir = proc / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(fd_dir / fd)
            except OSError:
                continue
            if st.st_ino != target.st_ino or st.st_dev != target.st_dev:
                continue
            if _fd_writable(proc / pid / "fdinfo" / fd):
                return True
    return False


def _fd_writable(fdinfo: Path) -> bool:
    try:
        text = fdinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags:"):
            flags = int(line.split()[1], 8)
            return flags & O_ACCMODE in (O_WRONLY, O_RDWR)
    return False
