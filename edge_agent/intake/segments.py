"""Recorder segments catalogued a wave at a time (:meth:`Intake.register_segments`).

Cameras started together close their segments together: 32 of them filed one
by one were 32 transactions, each reading and writing the audit head and the
outbox counter, and 64 fsyncs. Here each segment's file steps are its own
(mode, fsync, hash, rename), every folder that got a name is fsynced once,
and then ONE transaction writes every row, audit entry and event, in the
order given, so each camera's ``recording.added`` events stay in order.

``synced``: the caller made the wave's bytes durable with one ``syncfs`` of the
storage root (``[storage] fsync = "batched"``), so no file is fsynced here.
The folders still are, after the renames: a row must never name a file whose
name may not be on disk.

One bad segment (a duplicate id, a row the catalog refuses) rolls the wave's
transaction back; the wave is then catalogued one segment per transaction,
so only that one fails. A segment that is not catalogued goes back under its
``.partial-`` name, where crash recovery adopts it at the next start
(:mod:`edge_agent.recording.segment_recovery`).

Synchronous on purpose: the recorder's filer runs it in a worker thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.core.model import Recording, Tags
from edge_agent.host.fsutil import fsync_dir
from edge_agent.intake.intake_types import PARTIAL_PREFIX, Origin
from edge_agent.intake.placement import added_event, new_recording, seal_file
from edge_agent.retention.erasure import (
    Standing,
    StandingVerdict,
    apply_standing,
    finish_standing,
)
from edge_agent.store.audit import PreparedEntry, prepare_entry

if TYPE_CHECKING:
    from edge_agent.intake.intake import Intake

log = logging.getLogger("edge_agent.intake.intake")  # the lines intake logged before

__all__ = ["Segment", "file_segments"]


@dataclass(frozen=True)
class Segment:
    """A closed recorder segment under its ``.partial-`` name, tags already inside."""

    path: Path
    tags: Tags
    rec_id: str
    origin: Origin


@dataclass(frozen=True)
class _Placed:
    """A segment renamed to its final name, its row and what its commit writes."""

    seg: Segment
    final: Path
    rec: Recording
    event: dict[str, Any]
    entry: PreparedEntry


def file_segments(
    intake: Intake, segs: Sequence[Segment], now: datetime, *, synced: bool = False
) -> list[Recording | Exception]:
    """Place and catalogue ``segs``: one result per segment, in order, a Recording or why
    it was not catalogued (that file is then back under its ``.partial-`` name)."""
    results: list[Recording | Exception] = []
    placed: list[tuple[int, _Placed]] = []
    for i, seg in enumerate(segs):
        try:
            placed.append((i, _place(intake, seg, synced)))
            results.append(RuntimeError(f"{seg.path.name} not catalogued"))  # until it is
        except Exception as exc:  # the file is still under its .partial- name
            log.error("cannot place segment %s: %s", seg.path.name, exc)
            results.append(exc)
    bad = _sync_folders(intake, {p.final.parent for _, p in placed})
    kept: list[tuple[int, _Placed]] = []
    for i, p in placed:
        why = bad.get(p.final.parent)
        if why is None:
            kept.append((i, p))
        else:
            _unplace(intake, p, why)
            results[i] = why
    try:
        done = _catalogue(intake, [p for _, p in kept], now)
    except Exception as exc:
        log.warning("a wave of %d segment(s) was refused (%s); one by one", len(kept), exc)
        done = {}
        for i, p in kept:
            try:
                done.update(_catalogue(intake, [p], now))
            except Exception as one:
                _unplace(intake, p, one)
                results[i] = one
    for i, p in kept:
        standing = done.get(p.rec.id)
        if standing is not None:
            results[i] = _finish(intake, standing, now)
            log.info("adopted %s as %s (%s)", p.final.name, p.rec.id, p.rec.path)
    return results


def _place(intake: Intake, seg: Segment, synced: bool) -> _Placed:
    """Mode, fsync (unless ``synced``), hash and rename: no catalog access."""
    settings = intake.settings
    final = seg.path.with_name(seg.path.name.removeprefix(PARTIAL_PREFIX))
    # A recorder segment is its own source: the hash of the file is both.
    size, sha = seal_file(seg.path, settings, None, synced=synced)
    rec = new_recording(
        settings, final, seg.tags, seg.rec_id, size, sha, seg.origin, sha,
        clock_trusted=intake.clock_trusted,
    )  # fmt: skip
    event = added_event(rec)
    data = dict(event)
    if seg.tags.anonymized and seg.origin.anonymized_reason:
        data["anonymized_reason"] = seg.origin.anonymized_reason
    entry = prepare_entry("recording.added", rec.id, data)
    if final.exists():  # a rename would replace a catalogued recording's file
        raise FileExistsError(f"{final.name} exists already")
    os.rename(seg.path, final)
    return _Placed(seg, final, rec, event, entry)


def _sync_folders(intake: Intake, folders: set[Path]) -> dict[Path, OSError]:
    """One fsync per folder that got new names; the folders that failed, and why.

    A segment in such a folder goes back under its ``.partial-`` name: its row
    would name a file whose name may not be on disk.
    """
    bad: dict[Path, OSError] = {}
    if intake.settings.fsync:
        for folder in sorted(folders):
            try:
                fsync_dir(folder)
            except OSError as exc:
                bad[folder] = exc
    return bad


def _catalogue(intake: Intake, placed: Sequence[_Placed], now: datetime) -> dict[str, Standing]:
    """One transaction: the rows, then each segment's audit entry and event in order.

    A request in force for a segment's window (``apply_standing``) writes its own
    entries right after that segment's, as when segments were filed one by one.
    """
    cat, actor = intake.catalog, intake.actor
    standing: dict[str, Standing] = {}
    if not placed:
        return standing
    pending: list[_Placed] = []

    def flush() -> None:
        intake.audit.append_many([p.entry for p in pending], actor=actor, ts=now)
        intake.outbox.enqueue_many([("recording.added", p.event) for p in pending], ts=now)
        pending.clear()

    with cat.transaction():
        cat.recordings.add_many(p.rec for p in placed)
        for p in placed:
            reason = p.seg.origin.anonymized_reason
            if p.seg.tags.anonymized and reason:  # stored and audited
                cat.recordings.set_anonymized_reason(p.rec.id, reason)
            pending.append(p)
            if cat.requests.standing(p.rec.location, p.rec.start, p.rec.end):
                flush()
                # Requests in force for this window apply before anyone can see the row.
                standing[p.rec.id] = apply_standing(cat, p.rec, actor=actor, now=now)
            else:
                standing[p.rec.id] = Standing(p.rec, StandingVerdict("none"))
        flush()
    return standing


def _finish(intake: Intake, standing: Standing, now: datetime) -> Recording:
    """After the commit: unlink what a standing erase marked (its row is ``deleting``)."""
    try:
        return finish_standing(
            intake.catalog, intake.settings.storage_root, standing,
            actor=intake.actor, now=now, fsync=intake.settings.fsync,
        )  # fmt: skip
    except Exception:
        # The row is `deleting`: finish_interrupted completes it at the next sweep.
        log.exception("erasing %s on arrival is unfinished", standing.rec.id)
        return standing.rec


def _unplace(intake: Intake, p: _Placed, why: Exception) -> None:
    """Back under the ``.partial-`` name: recovery adopts it at the next start."""
    log.error("cannot catalogue segment %s: %s", p.final.name, why)
    try:
        os.rename(p.final, p.seg.path)
        if intake.settings.fsync:
            fsync_dir(p.seg.path.parent)
    except OSError as exc:
        # Under its final name without a row: reconcile adopts it from its tags.
        log.error("cannot rename %s back: %s", p.final.name, exc)
