"""The crash-safe deletion protocol (docs/design/deletion.md), shared by the janitor and erasure.

1. One transaction marks every chosen row ``deleting`` (re-checking holds and
   state inside it, so a hold placed after the plan was made still wins).
2. The files are unlinked.
3. Each directory that lost a file is fsynced once (batched per directory).
4. One transaction marks the rows ``deleted`` with time and reason, appends a
   ``recording.deleted`` audit entry and queues the ``recording.deleted`` event.

A crash after 1 leaves rows in ``deleting``: :func:`finish_interrupted` (run at
start-up and before every sweep) completes them. Step 4 only touches rows that
are still ``deleting``, so a deletion is audited exactly once even when two
processes finish the same interrupted row. A file exists without a row in a
live or ``deleting`` state never: the row only leaves ``deleting`` after the
unlink is durable.

Synchronous: the janitor calls it from a worker thread.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from edge_agent.core.model import LIVE_STATES, Recording, RecState, iso, recording_doc
from edge_agent.core.policy import holds_covering
from edge_agent.host.fsutil import fsync_dir
from edge_agent.store.audit import AuditLog, PreparedEntry, prepare_entry
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox

__all__ = [
    "DeletionOutcome",
    "Doomed",
    "delete_recordings",
    "finish_interrupted",
    "prepare_records",
    "prune_empty_dirs",
]

log = logging.getLogger(__name__)

LIVE = tuple(str(s) for s in LIVE_STATES)
_DATE_DIR = re.compile(r"^(\d{4})(?:/(\d{2})(?:/(\d{2}))?)?(?:/|$)")


@dataclass(frozen=True)
class Doomed:
    """A recording to delete and why (``reason`` is a short code, ``detail`` one line)."""

    rec: Recording
    reason: str
    detail: str


@dataclass
class DeletionOutcome:
    deleted: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, why)
    failed: list[tuple[str, str]] = field(default_factory=list)  # unlink failed, row stays deleting
    bytes_freed: int = 0

    def merge(self, other: DeletionOutcome) -> None:
        self.deleted += other.deleted
        self.skipped += other.skipped
        self.failed += other.failed
        self.bytes_freed += other.bytes_freed


_EVENT = ("id", "path", "location", "purpose", "start", "end", "deadline", "size")


def _event(
    rec: Recording, reason: str, now: datetime, now_iso: str | None = None
) -> dict[str, Any]:
    doc = recording_doc(rec, _EVENT, id_key="recording_id")
    doc["reason"] = reason
    doc["deleted_at"] = now_iso or iso(now)
    return doc


def delete_recordings(
    catalog: Catalog,
    storage_root: Path,
    doomed: Sequence[Doomed],
    *,
    actor: str,
    now: datetime,
    fsync: bool = True,
    from_states: Sequence[str] = LIVE,
) -> DeletionOutcome:
    """Run the protocol over one batch. Held or already changed rows are skipped."""
    out = DeletionOutcome()
    marked = mark_deleting(catalog, doomed, now=now, from_states=from_states, out=out)
    unlinked = unlink_marked(storage_root, marked, fsync=fsync)
    out.merge(record_deleted(catalog, storage_root, unlinked, actor=actor, now=now, fsync=fsync))
    return out


@dataclass
class Unlinked:
    """Step 2's result: files gone (and their folders fsynced), or why not."""

    done: list[Doomed] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    dirs: set[Path] = field(default_factory=set)


def mark_deleting(
    catalog: Catalog,
    doomed: Sequence[Doomed],
    *,
    now: datetime,
    from_states: Sequence[str] = LIVE,
    out: DeletionOutcome,
) -> list[Doomed]:
    """Step 1, one transaction: rows still deletable and unheld become ``deleting``."""
    marked: list[Doomed] = []
    if not doomed:
        return marked
    with catalog.transaction():
        holds = catalog.holds.list()
        unheld: list[Doomed] = []
        for d in doomed:
            held = holds_covering(d.rec, holds, now)
            if held:
                out.skipped.append((d.rec.id, f"held by {', '.join(held)}"))
            else:
                unheld.append(d)
        # The state is checked by the update itself: a row another process deleted or
        # restricted since the plan was made is left alone and reported.
        done = catalog.recordings.mark_deleting(
            [(d.rec.id, d.reason, d.detail) for d in unheld], at=now, from_states=from_states
        )
        for d in unheld:
            if d.rec.id in done:
                marked.append(d)
            else:
                out.skipped.append((d.rec.id, "no longer in a deletable state"))
    return marked


_BULK_MIN = 64
# Parallel rm processes: unlink is kernel time, and ext4 takes unlinks from several
# processes at once, even in one folder (measured on this project's 2-core test
# machine: 20,000 files in one folder 1.43 s with one rm, 0.87 s with two).
_UNLINK_JOBS = max(1, min(4, os.cpu_count() or 1))


# Bytes of paths on one rm command line: far below the kernel's limit for arguments
# (a quarter of the stack limit, never under 128 KiB).
_ARG_BYTES = 64 * 1024


def _rm_commands(paths: Sequence[str]) -> list[list[str]]:
    """``rm -f -- …`` command lines: one per job, split further when one would be long."""
    per = -(-len(paths) // _UNLINK_JOBS)
    cmds: list[list[str]] = []
    args: list[str] = []
    size = 0
    for p in paths:
        n = len(os.fsencode(p)) + 1
        if args and (len(args) >= per or size + n > _ARG_BYTES):
            cmds.append(["rm", "-f", "--", *args])
            args, size = [], 0
        args.append(p)
        size += n
    if args:
        cmds.append(["rm", "-f", "--", *args])
    return cmds


def _bulk_unlink(paths: Sequence[str]) -> None:
    """Unlink a batch in ``rm`` child processes, up to :data:`_UNLINK_JOBS` at a time.

    Each unlink waits on the filesystem, and in this process every return from
    the kernel must win the GIL back from the thread writing the catalog; a child
    process has no such contention (measured: janitor vs ``find -delete`` from
    0.43x to 0.6x), and several run side by side (docs/design/deletion.md).

    The paths go on the command line and each child is waited for with a blocking
    ``waitpid``: this thread then needs the GIL once per child. Feeding ``xargs``
    through ``subprocess.run(input=…, timeout=…)`` took it for every 512 bytes
    written and every poll of a timed wait, and each time had to win it from the
    busy catalog thread (a 1,000-file batch: 200 ms instead of 150 ms while that
    thread runs). There is no timeout: an ``rm`` stuck in the filesystem leaves the
    in-process unlinks after it just as stuck, and the daemon's watchdog sees the
    janitor stop either way. Best effort only: the caller unlinks every path
    afterwards.
    """
    cmds = _rm_commands(paths)
    for i in range(0, len(cmds), _UNLINK_JOBS):
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for cmd in cmds[i : i + _UNLINK_JOBS]:
                procs.append(
                    subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        except (OSError, ValueError) as exc:  # ValueError: a NUL in a path
            log.debug("bulk unlink helper unavailable (%s); unlinking in-process", exc)
            return
        finally:
            for proc in procs:
                proc.wait()


def _still_listed(paths: Sequence[str]) -> set[str]:
    """The paths whose folder still lists them (every path of a folder that cannot be read)."""
    by_dir: dict[str, list[str]] = {}
    for p in paths:
        by_dir.setdefault(os.path.dirname(p), []).append(p)
    left: set[str] = set()
    for folder, members in by_dir.items():
        try:
            names = set(os.listdir(folder))
        except FileNotFoundError:
            continue  # the folder is gone, and its files with it
        except OSError:
            left.update(members)  # cannot tell: unlink each and see
            continue
        left.update(p for p in members if os.path.basename(p) in names)
    return left


def _unlink(path: str) -> str | None:
    """None when the file is gone (a crash after unlink, or already gone: the row still
    closes); the error text when it could not be removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def unlink_marked(storage_root: Path, marked: Sequence[Doomed], *, fsync: bool) -> Unlinked:
    """Step 2, no catalog access (safe in a worker thread): unlink, then fsync the folders."""
    res = Unlinked()
    paths = [os.path.join(storage_root, d.rec.path) for d in marked]
    left: set[str] | None = None
    if len(paths) >= _BULK_MIN:
        _bulk_unlink(paths)
        left = _still_listed(paths)
    # What the helpers left (all of it, if they did not run) is unlinked here, and that
    # decides success: nothing rests on a helper process's word. A name its folder no
    # longer lists is gone; one listing per folder instead of an ENOENT per file keeps
    # this thread off the GIL the catalog thread needs.
    dirs: set[str] = set()
    for d, path in zip(marked, paths, strict=True):
        err = _unlink(path) if left is None or path in left else None
        if err is not None:
            log.error("cannot delete %s (recording %s): %s", path, d.rec.id, err)
            res.failed.append((d.rec.id, err))
            continue
        dirs.add(os.path.dirname(path))
        res.done.append(d)
    # Folder names as text until here: a Path per file was most of this thread's
    # Python work, and that work competes with the catalog thread for the GIL.
    res.dirs = {Path(f) for f in dirs}
    if fsync:
        for folder in sorted(res.dirs):
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(folder)
    return res


# A deletion's audit entry and event data, by recording id.
Records = dict[str, tuple[PreparedEntry, dict[str, Any]]]


def prepare_records(doomed: Iterable[Doomed], now: datetime) -> Records:
    """What step 4 writes for each deletion that can be made before its transaction.

    Formatting the times and encoding the audit data are half of step 4's Python
    work; done here, the catalog lock is not held for them. The janitor prepares
    a batch while its files are being unlinked.
    """
    now_iso = iso(now)
    out: Records = {}
    for d in doomed:
        event = _event(d.rec, d.reason, now, now_iso)
        entry = prepare_entry("recording.deleted", d.rec.id, {**event, "detail": d.detail})
        out[d.rec.id] = (entry, event)
    return out


def record_deleted(
    catalog: Catalog,
    storage_root: Path,
    unlinked: Unlinked,
    *,
    actor: str,
    now: datetime,
    fsync: bool,
    records: Records | None = None,
) -> DeletionOutcome:
    """Step 4, one transaction: close the rows, one audit entry and one event each.

    ``records``: :func:`prepare_records` of (at least) ``unlinked.done``, made now if None.
    """
    out = DeletionOutcome(failed=list(unlinked.failed))
    if not unlinked.done:
        return out
    if records is None:
        records = prepare_records(unlinked.done, now)
    with catalog.transaction():
        # Only rows still in `deleting` are closed: another process may have finished an
        # interrupted deletion first, and each deletion is audited exactly once.
        still = catalog.recordings.mark_deleted([d.rec.id for d in unlinked.done], at=now)
        closed = [records[d.rec.id] for d in unlinked.done if d.rec.id in still]
        # One audit entry and one event per recording, written as a batch in the same
        # transaction that closes the rows.
        AuditLog(catalog).append_many([entry for entry, _ in closed], actor=actor, ts=now)
        Outbox(catalog).enqueue_many([("recording.deleted", event) for _, event in closed], ts=now)
    for d in unlinked.done:
        if d.rec.id in still:
            out.deleted.append(d.rec.id)
            out.bytes_freed += max(d.rec.size, 0)
    prune_empty_dirs(storage_root, unlinked.dirs, now, fsync=fsync)
    return out


def _unlink_and_record(
    catalog: Catalog,
    storage_root: Path,
    marked: Sequence[Doomed],
    *,
    actor: str,
    now: datetime,
    fsync: bool,
) -> DeletionOutcome:
    unlinked = unlink_marked(storage_root, marked, fsync=fsync)
    return record_deleted(catalog, storage_root, unlinked, actor=actor, now=now, fsync=fsync)


def finish_interrupted(
    catalog: Catalog,
    storage_root: Path,
    now: datetime,
    *,
    actor: str = "agent",
    fsync: bool = True,
) -> DeletionOutcome:
    """Complete every row left in ``deleting`` by a crash (unlink, fsync, record)."""
    out = DeletionOutcome()
    failed: set[str] = set()
    while True:
        rows = [
            r
            for r in catalog.schedule.in_state(RecState.DELETING, limit=1000 + len(failed))
            if r.id not in failed
        ]
        if not rows:
            return out
        reasons = {
            rid: (str(why or "unknown"), str(detail or "interrupted deletion finished"))
            for rid, (why, detail) in catalog.recordings.deleting_reasons(
                [r.id for r in rows]
            ).items()
        }
        batch = [
            Doomed(r, *reasons.get(r.id, ("unknown", "interrupted deletion finished")))
            for r in rows
        ]
        done = _unlink_and_record(catalog, storage_root, batch, actor=actor, now=now, fsync=fsync)
        failed.update(i for i, _ in done.failed)
        out.merge(done)
        if done.failed:
            log.error("%d interrupted deletion(s) could not be finished", len(done.failed))
        if not done.deleted and not done.failed:
            return out


def _last_day(year: str, month: str | None, day: str | None) -> date | None:
    """Last calendar day a ``YYYY[/MM[/DD]]`` folder can hold footage for."""
    try:
        if day is not None and month is not None:
            return date(int(year), int(month), int(day))
        if month is not None:
            y, mo = int(year), int(month)
            return date(y, mo, calendar.monthrange(y, mo)[1])
        return date(int(year), 12, 31)
    except ValueError:
        return None


def prune_empty_dirs(
    storage_root: Path, dirs: Iterable[Path], now: datetime, *, fsync: bool = True
) -> list[Path]:
    """Remove emptied ``YYYY/MM/DD/<location>`` folders and their empty parents.

    Only days before yesterday (UTC): the recorder and intake create today's
    folders just before writing into them, and removing one in between would
    make that write fail. Deleted footage is days old, so its folders qualify.
    """
    cutoff = (now.astimezone(UTC) - timedelta(days=1)).date()
    root = storage_root.resolve()
    removed: list[Path] = []
    for folder in sorted(set(dirs), key=lambda p: len(p.parts), reverse=True):
        p = folder
        while True:
            try:
                rel = p.resolve().relative_to(root).as_posix()
            except (ValueError, OSError):
                break
            m = _DATE_DIR.match(rel)
            if not rel or rel == "." or not m:
                break
            last = _last_day(m[1], m[2], m[3])
            if last is None or last >= cutoff:
                break
            try:
                os.rmdir(p)
            except OSError:
                break  # not empty (or already gone): parents are not empty either
            removed.append(p)
            if fsync:
                with contextlib.suppress(OSError):
                    fsync_dir(p.parent)
            p = p.parent
    return removed
