"""Disk against catalog: reconcile, and rebuild a lost catalog from the files' tags.

Neither ever deletes footage because the catalog does not know it (docs/design/deletion.md):

- a file without a row is re-adopted from its embedded tags and id
  (``media.decode_tags``); an untagged media file is only reported;
- a live row whose file is gone becomes ``missing`` (audited, event);
- a reconcile that would change more than half of the catalog stops and asks
  for ``--force``: that is what an unmounted or swapped disk looks like.

The one thing reconcile removes is ``.partial-*`` files untouched for a
minute. Intake writes them from a source that it removes only after the
finished file is catalogued, so the source is still there to be adopted again;
the recorder writes a segment under that name and renames it when closed, so
an old one is a segment abandoned by a crash, cut off at an unknown point and
never catalogued, which no deadline would ever delete.

Files younger than :data:`GRACE` are left alone: intake renames a finished
file into place just before committing its row.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.core.model import (
    LIVE_STATES,
    Hold,
    Recording,
    RecState,
    TimeSource,
    recording_doc,
)
from edge_agent.core.policy import deadline
from edge_agent.host.fsutil import fsync_dir
from edge_agent.intake.intake import PARTIAL_PREFIX, IntakeSettings
from edge_agent.media import media
from edge_agent.retention.deletion import finish_interrupted
from edge_agent.retention.erasure import Standing, apply_standing, finish_standing
from edge_agent.store.audit import AuditLog, head_file_path
from edge_agent.store.catalog import STORAGE_MARKER, Catalog
from edge_agent.store.holds import salvage_holds
from edge_agent.store.outbox_store import Outbox

__all__ = ["GRACE", "RebuildReport", "ReconcileReport", "rebuild", "reconcile"]

log = logging.getLogger(__name__)

GRACE = 60.0  # seconds a new or partial file is left alone (intake renames, then commits)


@dataclass
class ReconcileReport:
    dry_run: bool
    forced: bool = False
    refused: str | None = None
    live_rows: int = 0
    readopted: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    reappeared: list[dict[str, Any]] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    conflicts: list[dict[str, str]] = field(default_factory=list)
    partials_removed: list[str] = field(default_factory=list)
    finished_interrupted: int = 0
    # Re-adopted rows a request in force erases: unlinked once their rows are committed.
    standing: list[Standing] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return len(self.readopted) + len(self.missing)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "forced": self.forced,
            "refused": self.refused,
            "live_rows": self.live_rows,
            "changes": self.changes,
            "readopted": self.readopted,
            "missing": self.missing,
            "reappeared": self.reappeared,
            "untagged": self.untagged,
            "unreadable": self.unreadable,
            "conflicts": self.conflicts,
            "partials_removed": self.partials_removed,
            "finished_interrupted": self.finished_interrupted,
        }


@dataclass
class RebuildReport:
    catalog: str
    moved_aside: list[str] = field(default_factory=list)
    recordings: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    untagged: list[str] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    conflicts: list[dict[str, str]] = field(default_factory=list)
    holds_recovered: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "catalog": self.catalog,
            "moved_aside": self.moved_aside,
            "recordings": self.recordings,
            "untagged": self.untagged,
            "unreadable": self.unreadable,
            "conflicts": self.conflicts,
            "holds_recovered": self.holds_recovered,
            "notes": self.notes,
        }


# -- walking the storage root ------------------------------------------------


def _walk(root: Path, skip: Path | None) -> Iterator[tuple[Path, str]]:
    """(path, relative posix path) of every regular file, hidden folders skipped."""
    skip_resolved = skip.resolve() if skip is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and (skip_resolved is None or (here / d).resolve() != skip_resolved)
        )
        for name in sorted(filenames):
            p = here / name
            if p.is_symlink() or not p.is_file():
                continue
            yield p, p.relative_to(root).as_posix()


def _read_tagged(
    path: Path, rel: str, settings: IntakeSettings
) -> tuple[Recording | None, str | None]:
    """The recording a file's embedded tags describe, or (None, why-not)."""
    try:
        info = media.probe(path, max_streams=settings.max_streams)
        tags = media.decode_tags(info.tags)
    except media.MediaError as exc:
        return None, f"{exc.reason}: {exc}"
    if tags is None:
        return None, None
    rec_id = media.decode_recording_id(info.tags)
    if rec_id is None:
        return None, "bad_tags: edge-agent tags without a recording id"
    trusted = tags.time_source is not TimeSource.UNTRUSTED
    dl = deadline(tags.purpose, tags.site, tags.anonymized, tags.start, settings.periods)
    rec = Recording(
        id=rec_id,
        path=rel,
        tags=tags,
        size=path.stat().st_size,
        sha256=media.sha256_file(path),
        state=RecState.ACTIVE,
        deadline=dl if trusted else None,
        source_sha256=media.decode_source_sha256(info.tags),
    )
    return rec, None


_LINE = ("id", "path", "location", "purpose", "start", "end", "deadline")


def _rec_line(rec: Recording) -> dict[str, Any]:
    return recording_doc(rec, _LINE)


# -- reconcile -----------------------------------------------------------------


def reconcile(
    catalog: Catalog,
    storage_root: Path,
    settings: IntakeSettings,
    *,
    dry_run: bool,
    force: bool,
    now: datetime,
    actor: str = "agent",
    grace: float = GRACE,
) -> ReconcileReport:
    """Compare disk and catalog; see the module docstring. ``grace``: seconds a new file rests."""
    rep = ReconcileReport(dry_run=dry_run, forced=force)
    if not dry_run:
        rep.finished_interrupted = len(
            finish_interrupted(
                catalog, storage_root, now, actor=actor, fsync=settings.fsync
            ).deleted
        )
    known = catalog.schedule.path_states()
    rep.live_rows = sum(1 for _, st in known.values() if st in LIVE_STATES)
    seen: set[str] = set()
    partials: list[Path] = []
    new: list[Recording] = []
    wall = time.time()
    new_ids: set[str] = set()
    for path, rel in _walk(storage_root, settings.quarantine_dir):
        name = path.name
        if name == STORAGE_MARKER:
            continue
        age = wall - path.stat().st_mtime
        if name.startswith(PARTIAL_PREFIX):
            if age > grace:
                partials.append(path)
            continue
        if name.startswith("."):
            continue  # other temporary files (atomic writes in progress)
        seen.add(rel)
        row = known.get(rel)
        if row is not None:
            if row[1] is RecState.MISSING:
                rep.reappeared.append({"id": row[0], "path": rel})
            continue
        if age <= grace:
            continue
        rec, why = _read_tagged(path, rel, settings)
        if rec is None:
            if why is None:
                rep.untagged.append(rel)
            else:
                rep.unreadable.append({"path": rel, "why": why})
            continue
        other = catalog.recordings.get(rec.id)
        if other is not None or rec.id in new_ids:
            where = other.path if other is not None else "another file on this disk"
            rep.conflicts.append(
                {"path": rel, "why": f"recording id {rec.id} is already catalogued at {where}"}
            )
            continue
        new_ids.add(rec.id)
        new.append(rec)
        rep.readopted.append(_rec_line(rec))
    gone: list[tuple[str, str]] = []
    for rel, (rid, state) in known.items():
        if state in LIVE_STATES and rel not in seen and not (storage_root / rel).exists():
            gone.append((rid, rel))
            rep.missing.append({"id": rid, "path": rel})
    rep.partials_removed = [p.relative_to(storage_root).as_posix() for p in partials]
    if rep.changes and rep.changes * 2 > rep.live_rows and not force:
        rep.refused = (
            f"reconcile would change {rep.changes} recording(s) ({len(rep.readopted)} re-adopted, "
            f"{len(rep.missing)} missing) against {rep.live_rows} catalogued: more than half. "
            f"Check that the right disk is mounted at {storage_root}; if this is expected run "
            "`edge-agent reconcile --force`, or `edge-agent catalog rebuild` for a lost catalog"
        )
        return rep
    if dry_run:
        return rep
    _apply(catalog, rep, new, gone, partials, now, actor, settings.fsync)
    for standing in rep.standing:
        finish_standing(catalog, storage_root, standing, actor=actor, now=now, fsync=settings.fsync)
    return rep


def _apply(
    catalog: Catalog,
    rep: ReconcileReport,
    new: list[Recording],
    gone: list[tuple[str, str]],
    partials: list[Path],
    now: datetime,
    actor: str,
    fsync: bool,
) -> None:
    audit, outbox = AuditLog(catalog), Outbox(catalog)
    for i in range(0, len(new), 500):
        with catalog.transaction():
            for rec in new[i : i + 500]:
                catalog.recordings.add(rec)
                line = {**_rec_line(rec), "readopted": True, "size": rec.size}
                audit.append("recording.readopted", actor=actor, subject=rec.id, data=line, ts=now)
                event = {k: v for k, v in line.items() if k != "id"}
                outbox.enqueue("recording.added", {"recording_id": rec.id, **event}, ts=now)
                # Erase/restrict requests in force for its window apply before it is seen.
                rep.standing.append(apply_standing(catalog, rec, actor=actor, now=now))
    with catalog.transaction():
        for rid, rel in gone:
            catalog.recordings.set_state(
                rid, RecState.MISSING, reason="file not found by reconcile", at=now
            )
            data = {"recording_id": rid, "path": rel}
            audit.append("recording.missing", actor=actor, subject=rid, data=data, ts=now)
            outbox.enqueue("recording.missing", data, ts=now)
        for item in rep.reappeared:
            catalog.recordings.set_state(
                item["id"], RecState.ACTIVE, reason="file found again", at=now
            )
            data = {"recording_id": item["id"], "path": item["path"]}
            audit.append("recording.found", actor=actor, subject=item["id"], data=data, ts=now)
            outbox.enqueue("recording.found", data, ts=now)
    dirs = set()
    for p in partials:
        p.unlink(missing_ok=True)
        dirs.add(p.parent)
    if partials:
        audit.append(
            "reconcile.partials_removed",
            actor=actor,
            subject=None,
            data={"files": rep.partials_removed},
            ts=now,
        )
    if fsync:
        for d in dirs:
            fsync_dir(d)


# -- rebuild -------------------------------------------------------------------


def _move_aside(catalog_path: Path, now: datetime) -> list[str]:
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    moved = []
    for p in (
        catalog_path,
        catalog_path.with_name(catalog_path.name + "-wal"),
        catalog_path.with_name(catalog_path.name + "-shm"),
        head_file_path(catalog_path),
    ):
        if p.exists():
            dest = p.with_name(f"{p.name}.lost-{stamp}")
            os.replace(p, dest)
            moved.append(str(dest))
    if moved:
        fsync_dir(catalog_path.parent)
    return moved


def rebuild(
    catalog_path: Path,
    storage_root: Path,
    settings: IntakeSettings,
    *,
    now: datetime,
    actor: str = "agent",
) -> RebuildReport:
    """Move the old catalog aside (never deleted) and build a new one from the files."""
    catalog_path = Path(catalog_path)
    rep = RebuildReport(catalog=str(catalog_path))
    rep.moved_aside = _move_aside(catalog_path, now)
    holds: list[Hold] = []
    if rep.moved_aside and rep.moved_aside[0].startswith(str(catalog_path) + ".lost-"):
        holds, note = salvage_holds(Path(rep.moved_aside[0]))
        if note:
            rep.notes.append(note)
    cat = Catalog.open(catalog_path, device_id=settings.device_id, storage_root=storage_root)
    try:
        recs: list[Recording] = []
        ids: dict[str, str] = {}
        for path, rel in _walk(storage_root, settings.quarantine_dir):
            if path.name == STORAGE_MARKER or path.name.startswith("."):
                continue
            rec, why = _read_tagged(path, rel, settings)
            if rec is None:
                if why is None:
                    rep.untagged.append(rel)
                else:
                    rep.unreadable.append({"path": rel, "why": why})
                continue
            if rec.id in ids:
                rep.conflicts.append(
                    {"path": rel, "why": f"recording id {rec.id} also at {ids[rec.id]}"}
                )
                continue
            ids[rec.id] = rel
            recs.append(rec)
        audit, outbox = AuditLog(cat), Outbox(cat)
        with cat.transaction():
            for i in range(0, len(recs), 1000):
                cat.recordings.add_many(recs[i : i + 1000])
            for h in holds:
                cat.holds.add(h)
            rep.recordings = len(recs)
            rep.holds_recovered = len(holds)
            summary = {
                "moved_aside": rep.moved_aside,
                "recordings": rep.recordings,
                "untagged": rep.untagged[:100],
                "unreadable": len(rep.unreadable),
                "conflicts": len(rep.conflicts),
                "holds_recovered": rep.holds_recovered,
            }
            audit.append("catalog.rebuilt", actor=actor, subject=None, data=summary, ts=now)
            outbox.enqueue("catalog.rebuilt", summary, ts=now)
    finally:
        cat.close()
    log.info("catalog rebuilt: %d recordings from %s", rep.recordings, storage_root)
    return rep
