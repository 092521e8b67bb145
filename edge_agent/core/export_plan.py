"""What an export may take, and what the DPO holdings report shows: pure rules.

The rules are in docs/export.md (and docs/retention-policy.md for why):

- only footage on disk and not restricted goes (restricted recordings are
  counted, never named: a restriction keeps them out of every listing);
- marketing takes anonymized derivatives only, unless the config allows
  originals (``[export] marketing_originals``);
- ``--anonymized-only`` takes anonymized derivatives only, whatever the purpose;
- a recording with audio outside an audio room breaks the audio rule: the
  export refuses (the IO side probes the files and asks :func:`audio_refusal`).

Everything here works on plain data; the export package does the IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from edge_agent.core.model import (
    EraseRequest,
    Hold,
    Purpose,
    Recording,
    RecState,
    RequestMode,
    Site,
    Tags,
    TimeSource,
)
from edge_agent.core.policy import hold_covers, overlaps


class LeftOut(StrEnum):
    """Why a recording in the window does not go."""

    RESTRICTED = "restricted"
    NOT_ON_DISK = "not_on_disk"  # deleting, deleted or missing
    OTHER_PURPOSE = "other_purpose"
    MARKETING_ORIGINAL = "marketing_original"
    NOT_ANONYMIZED = "not_anonymized"


WHY = {
    LeftOut.RESTRICTED: "restricted by a data-subject request (never exported)",
    LeftOut.NOT_ON_DISK: "not on disk (being deleted, deleted or missing)",
    LeftOut.OTHER_PURPOSE: "recorded for another purpose than --purpose",
    LeftOut.MARKETING_ORIGINAL: (
        "marketing takes anonymized derivatives only ([export] marketing_originals = false)"
    ),
    LeftOut.NOT_ANONYMIZED: "not an anonymized derivative (--anonymized-only)",
}


@dataclass(frozen=True)
class ExportQuery:
    location: str
    start: datetime
    end: datetime
    purpose: Purpose | None = None
    anonymized_only: bool = False
    marketing_originals: bool = False


@dataclass(frozen=True)
class ExportPlan:
    chosen: tuple[Recording, ...]
    left_out: dict[LeftOut, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(r.size for r in self.chosen)

    def why_empty(self) -> str:
        """One sentence for an export that meets nothing."""
        if not self.left_out:
            return "no recording at this location overlaps the window"
        parts = [f"{n} {WHY[k]}" for k, n in sorted(self.left_out.items())]
        return "nothing may be exported: left out " + "; ".join(parts)


def left_out_reason(rec: Recording, q: ExportQuery) -> LeftOut | None:
    """Why ``rec`` (already in the place and window) stays, or None when it goes.

    Order matters only for the receipt's counts: restriction is named first so
    the count of restricted recordings is complete.
    """
    if rec.state is RecState.RESTRICTED:
        return LeftOut.RESTRICTED
    if rec.state is not RecState.ACTIVE:
        return LeftOut.NOT_ON_DISK
    if q.purpose is not None and rec.tags.purpose is not q.purpose:
        return LeftOut.OTHER_PURPOSE
    if q.anonymized_only and not rec.tags.anonymized:
        return LeftOut.NOT_ANONYMIZED
    if (rec.tags.purpose is Purpose.MARKETING or q.purpose is Purpose.MARKETING) and not (
        rec.tags.anonymized or q.marketing_originals
    ):
        return LeftOut.MARKETING_ORIGINAL
    return None


def in_scope(rec: Recording, q: ExportQuery) -> bool:
    return rec.location == q.location and overlaps(rec.start, rec.end, q.start, q.end)


def plan_export(recordings: Iterable[Recording], q: ExportQuery) -> ExportPlan:
    """Select what goes, oldest first, and count what stays by reason."""
    chosen: list[Recording] = []
    left: dict[LeftOut, int] = {}
    seen: set[str] = set()
    for rec in recordings:
        if rec.id in seen or not in_scope(rec, q):
            continue
        seen.add(rec.id)
        why = left_out_reason(rec, q)
        if why is None:
            chosen.append(rec)
        else:
            left[why] = left.get(why, 0) + 1
    chosen.sort(key=lambda r: (r.start, r.id))
    return ExportPlan(tuple(chosen), left)


def audio_refusal(location_is_audio_room: bool, file_has_audio: bool) -> str | None:
    """The audio rule checked once more at the door (docs/audio.md)."""
    if file_has_audio and not location_is_audio_room:
        return "carries audio but its location is not an audio room"
    return None


# -- the holdings report --------------------------------------------------------


@dataclass(frozen=True)
class Holdings:
    """What the device holds of one place at one instant, and why."""

    recordings: tuple[Recording, ...]  # originals (not anonymized), in any kept state
    derivatives: tuple[Recording, ...]  # anonymized derivatives
    holds: tuple[Hold, ...]
    restrictions: tuple[EraseRequest, ...]
    held_by: dict[str, tuple[str, ...]] = field(default_factory=dict)


_HELD_STATES = frozenset({RecState.ACTIVE, RecState.RESTRICTED, RecState.DELETING})


def holdings_at(
    location: str,
    at: datetime,
    recordings: Iterable[Recording],
    holds: Sequence[Hold],
    requests: Iterable[EraseRequest],
    now: datetime,
) -> Holdings:
    """Recordings covering ``at`` at ``location``, the holds and restrictions on them.

    A recording being deleted is still held until its file is gone, so it is
    listed; a deleted or missing one is not held. Holds are those in force
    ``now`` that cover a listed recording or the place at ``at``.
    """
    covering = sorted(
        (
            r
            for r in recordings
            if r.location == location and r.state in _HELD_STATES and r.start <= at <= r.end
        ),
        key=lambda r: (r.start, r.id),
    )
    held_by: dict[str, tuple[str, ...]] = {}
    hold_ids: set[str] = set()
    for rec in covering:
        ids = tuple(sorted(h.id for h in holds if hold_covers(h, rec, now)))
        if ids:
            held_by[rec.id] = ids
            hold_ids.update(ids)
    # Holds on the place itself (a location window) count even over no recording.
    instant = Recording(
        id="",
        path="",
        tags=Tags(
            location, Purpose.SECURITY, Site.PREMISES, False, False, at, at, TimeSource.RECORDER, ""
        ),
        size=0,
        sha256="",
    )
    hold_ids.update(h.id for h in holds if hold_covers(h, instant, now))
    restrictions = tuple(
        r
        for r in requests
        if r.mode is RequestMode.RESTRICT and r.location == location and r.start <= at <= r.end
    )
    return Holdings(
        recordings=tuple(r for r in covering if not r.tags.anonymized),
        derivatives=tuple(r for r in covering if r.tags.anonymized),
        holds=tuple(sorted((h for h in holds if h.id in hold_ids), key=lambda h: h.id)),
        restrictions=restrictions,
        held_by=held_by,
    )
