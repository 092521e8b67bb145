"""Where an adopted file goes and how it gets there (the file side of intake).

``<root>/YYYY/MM/DD/<location>/<start>_<stem>_<id8>.<container>``; folders are
made 0750 (group ``reader_group``) and fsynced into their parent; the file is
made 0640, fsynced under its temporary name, then renamed and its folder
fsynced (docs/design/architecture.md, crash safety of intake).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.core.model import Recording, RecState, Tags, TimeSource, recording_doc
from edge_agent.core.policy import deadline
from edge_agent.core.timesource import StartChoice, choose_start, start_candidates, zone
from edge_agent.host.fsutil import fsync_dir, fsync_file
from edge_agent.intake.intake_types import DIR_MODE, FILE_MODE, IntakeSettings, Origin
from edge_agent.media import media

# What "recording.added" carries (docs/mqtt.md).
_EVENT_FIELDS = ("id", "path", "location", "purpose", "site", "audio", "start", "end",
                 "time_source", "deadline", "size")  # fmt: skip

if TYPE_CHECKING:
    from edge_agent.retention.storage_gate import StorageGate


def choose_recording_start(
    settings: IntakeSettings,
    path: Path,
    origin: Origin,
    creation_time: datetime | None,
    st: os.stat_result,
    now: datetime,
) -> StartChoice:
    """The start from the name, the recorder, the header or mtime (core/timesource.py)."""
    tz = zone(origin.name_timezone) if origin.name_timezone else None
    candidates = start_candidates(
        os.fsdecode(path.name), origin.recorder_start, creation_time, st.st_mtime, tz
    )
    return choose_start(candidates, now, floor=settings.start_floor, max_future=settings.max_future)


def final_path(
    settings: IntakeSettings,
    gate: StorageGate | None,
    tags: Tags,
    rec_id: str,
    stem: str,
    container: str,
) -> Path:
    day = tags.start.astimezone(UTC)
    folder = settings.storage_root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / tags.location
    # Undecodable bytes arrive as lone surrogates, which are not alphanumeric.
    safe_stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80]
    name = f"{day:%Y%m%dT%H%M%SZ}_{safe_stem}_{rec_id[:8]}.{container}"
    if gate is not None:
        gate.check()  # before any folder or file: raises StorageUnavailable
    make_dirs(settings, folder)
    return folder / name


def make_dirs(settings: IntakeSettings, folder: Path) -> None:
    root = settings.storage_root
    missing = []
    p = folder
    while p != root and not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by the recorder or another intake
        # mkdir's mode passes through the umask (077 under a strict shell): set it.
        os.chmod(d, DIR_MODE)
        if settings.reader_gid is not None:
            os.chown(d, -1, settings.reader_gid)
        if settings.fsync:
            fsync_dir(d.parent)


def seal_file(
    tmp: Path, settings: IntakeSettings, file_sha: str | None, *, synced: bool = False
) -> tuple[int, str]:
    """Mode, fsync and hash (unless known) of a finished ``tmp``: (size, sha256).

    ``synced``: the caller already made the bytes durable with one ``syncfs`` for a
    whole wave of recorder segments (``[storage] fsync = "batched"``), so no fsync here.
    """
    os.chmod(tmp, FILE_MODE)
    if settings.reader_gid is not None:
        os.chown(tmp, -1, settings.reader_gid)
    if settings.fsync and not synced:
        fsync_file(tmp)
    size = tmp.stat().st_size
    return size, file_sha or media.sha256_file(tmp)


def move_into_place(tmp: Path, final: Path, settings: IntakeSettings) -> None:
    """Rename a sealed ``tmp`` to ``final`` and make the rename durable."""
    os.rename(tmp, final)
    if settings.fsync:
        fsync_dir(final.parent)


def new_recording(
    settings: IntakeSettings,
    final: Path,
    tags: Tags,
    rec_id: str,
    size: int,
    sha: str,
    origin: Origin,
    source_sha: str,
    *,
    clock_trusted: bool,
) -> Recording:
    """The ``active`` row of a file placed at ``final``; no deadline while the clock
    (or the file's own start) is untrusted."""
    trusted = clock_trusted and tags.time_source is not TimeSource.UNTRUSTED
    dl = deadline(tags.purpose, tags.site, tags.anonymized, tags.start, settings.periods)
    return Recording(
        id=rec_id,
        path=str(final.relative_to(settings.storage_root)),
        tags=tags,
        size=size,
        sha256=sha,
        state=RecState.ACTIVE,
        deadline=dl if trusted else None,
        source_id=origin.source_id,
        source_sha256=source_sha,
    )


def added_event(rec: Recording) -> dict[str, object]:
    """The ``recording.added`` event (and the core of its audit entry, docs/mqtt.md)."""
    return recording_doc(rec, _EVENT_FIELDS, id_key="recording_id")
