"""Moving a file aside with the reason next to it (docs/operator-guide.md, quarantine).

The file side of :meth:`edge_agent.intake.intake.Intake.quarantine`; the audit
entry and the event stay with the caller, which owns the catalog.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.core.model import iso
from edge_agent.host.fsutil import fsync_dir
from edge_agent.intake.intake_types import DIR_MODE, FILE_MODE


def still_there(path: Path, ident: tuple[int, int] | None) -> bool:
    """True when ``path`` is still the inode ``ident`` (or no identity was asked)."""
    if ident is None:
        return True
    try:
        st = path.lstat()
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == ident


def move_aside(
    path: Path, shown: str, reason: str, now: datetime, qdir: Path, *, fsync: bool
) -> Path | str:
    """The quarantined file's new path, or why it could not be moved."""
    if not qdir.is_dir():
        qdir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(qdir, DIR_MODE)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    safe = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in shown)[:120]
    dest = qdir / f"{stamp}_{safe}"
    reason_doc = {"source": shown, "reason": reason, "ts": iso(now)}
    try:
        shutil.move(path, dest)
    except OSError as exc:
        return f"could not move to quarantine: {exc.strerror or exc}"
    with contextlib.suppress(OSError):
        os.chmod(dest, FILE_MODE, follow_symlinks=False)
    fd = os.open(
        dest.with_name(dest.name + ".reason.json"),
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
        FILE_MODE,
    )
    os.fchmod(fd, FILE_MODE)
    with open(fd, "w", encoding="utf-8") as fh:
        json.dump(reason_doc, fh, indent=2)
        fh.write("\n")
    if fsync:
        fsync_dir(qdir)
    return dest
