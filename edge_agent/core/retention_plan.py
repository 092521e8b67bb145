"""The retention plan: which recordings one janitor pass deletes, and why.

The rules are in docs/retention-policy.md.

Pure like :mod:`edge_agent.core.policy`: the janitor gathers recordings, holds, the
clock verdict and free space, calls :func:`plan`, and carries the plan out with
the crash-safe deletion protocol. Holds are hard here: neither a deadline nor
disk pressure ever selects held footage, and an untrusted clock selects nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import NamedTuple

from edge_agent.core.model import LIVE_STATES, Hold, Recording, TimeSource, iso
from edge_agent.core.policy import active_holds, holds_covering, require_utc

__all__ = [
    "DeletionReason",
    "PlannedDeletion",
    "RetentionPlan",
    "SourcePriority",
    "choose_for_pressure",
    "plan",
    "sources_to_stop",
]

_LATEST = datetime.max.replace(tzinfo=UTC)


class DeletionReason(StrEnum):
    RETENTION = "retention"
    DISK_PRESSURE = "disk_pressure"


@dataclass(frozen=True)
class PlannedDeletion:
    recording_id: str
    path: str
    reason: DeletionReason
    deadline: datetime | None
    size: int
    detail: str  # one human line for the audit log and `retention plan`


@dataclass(frozen=True)
class RetentionPlan:
    """One janitor pass, decided in advance; every deletion says why.

    ``kept_by_hold``: past-deadline recordings an active hold keeps, with hold ids.
    ``next_deadline``: the earliest future deadline among unheld live recordings;
    ``next_wake`` also counts hold expiries, so the janitor can sleep until then.
    ``overdue_count`` / ``worst_overdue_seconds``: unheld live recordings whose
    deadline has passed (non-zero after a pass only while deletion is blocked).
    ``blocked_reason``: the clock is untrusted, so ``deletions`` is empty whatever
    the deadlines or the disk say; the other figures are still computed.
    ``storage_full_held``: below the floor and, after every unheld recording is
    planned, still short: only held footage is left, so recording must stop.
    ``awaiting_deadline``: recorded while the clock was untrusted; never deleted
    for retention until the catalog gives them a deadline.
    """

    now: datetime
    deletions: tuple[PlannedDeletion, ...] = ()
    kept_by_hold: tuple[tuple[str, tuple[str, ...]], ...] = ()
    next_deadline: datetime | None = None
    next_wake: datetime | None = None
    overdue_count: int = 0
    worst_overdue_seconds: float = 0.0
    blocked_reason: str | None = None
    disk_pressure_bytes_needed: int = 0
    storage_full_held: bool = False
    awaiting_deadline: tuple[str, ...] = ()

    @property
    def bytes_freed(self) -> int:
        return sum(d.size for d in self.deletions)


def _pressure_key(rec: Recording) -> tuple[int, datetime, datetime, str]:
    # Nearest deadline first, then oldest; recordings without a deadline go last.
    if rec.deadline is None:
        return (1, _LATEST, rec.start, rec.id)
    return (0, rec.deadline, rec.start, rec.id)


def choose_for_pressure(
    candidates: Sequence[Recording], holds: Sequence[Hold], now: datetime, bytes_needed: int
) -> list[Recording]:
    """Unheld live recordings to delete to free ``bytes_needed``, in deletion order.

    Order: nearest deadline first, then oldest start, then id; no deadline last.
    Stops as soon as the chosen sizes cover the need. Held footage is never chosen;
    if the unheld ones are not enough, all of them are returned and the caller
    sees the shortfall.
    """
    if bytes_needed <= 0:
        return []
    chosen: list[Recording] = []
    total = 0
    for rec in sorted(candidates, key=_pressure_key):
        if rec.state not in LIVE_STATES or holds_covering(rec, holds, now):
            continue
        chosen.append(rec)
        total += max(rec.size, 0)
        if total >= bytes_needed:
            break
    return chosen


def _retention_detail(rec: Recording, due: datetime) -> str:
    t = rec.tags
    kind = f"anonymized {t.purpose}" if t.anonymized else str(t.purpose)
    return (
        f"{kind} footage at {t.location} ({t.site}) started {iso(t.start)}; "
        f"deadline {iso(due)} has passed"
    )


def plan(
    recordings: Sequence[Recording],
    holds: Sequence[Hold],
    now: datetime,
    *,
    clock_trusted: bool,
    clock_reason: str | None = None,
    free_bytes: int | None = None,
    floor_bytes: int | None = None,
) -> RetentionPlan:
    """Decide one retention pass. Deterministic: same inputs, same plan.

    Deadlines are read from ``Recording.deadline`` as stored, never recomputed.
    Only ACTIVE and RESTRICTED recordings are considered; held ones are never
    deleted, neither for retention nor for disk pressure.
    """
    now = require_utc(now, "now")
    live = sorted((r for r in recordings if r.state in LIVE_STATES), key=lambda r: r.id)
    retention: list[PlannedDeletion] = []
    kept: list[tuple[str, tuple[str, ...]]] = []
    unheld_rest: list[Recording] = []
    future: list[datetime] = []
    worst = 0.0
    for rec in live:
        held = holds_covering(rec, holds, now)
        due = rec.deadline is not None and rec.deadline <= now
        if held:
            if due:
                kept.append((rec.id, held))
            continue
        if rec.deadline is not None and due:
            worst = max(worst, (now - rec.deadline).total_seconds())
            retention.append(
                PlannedDeletion(
                    rec.id,
                    rec.path,
                    DeletionReason.RETENTION,
                    rec.deadline,
                    rec.size,
                    _retention_detail(rec, rec.deadline),
                )
            )
            continue
        if rec.deadline is not None:
            future.append(rec.deadline)
        unheld_rest.append(rec)
    retention.sort(key=lambda d: (d.deadline or _LATEST, d.recording_id))

    needed = 0
    pressure: list[PlannedDeletion] = []
    full_held = False
    if free_bytes is not None and floor_bytes is not None and free_bytes < floor_bytes:
        needed = floor_bytes - free_bytes
        short = needed - sum(max(d.size, 0) for d in retention)
        chosen = choose_for_pressure(unheld_rest, holds, now, short)
        detail = f"free space {free_bytes} B is below the floor {floor_bytes} B"
        pressure = [
            PlannedDeletion(r.id, r.path, DeletionReason.DISK_PRESSURE, r.deadline, r.size, detail)
            for r in chosen
        ]
        full_held = short - sum(max(r.size, 0) for r in chosen) > 0
        chosen_ids = {r.id for r in chosen}
        future = [r.deadline for r in unheld_rest if r.deadline and r.id not in chosen_ids]

    next_deadline = min(future, default=None)
    expiries = [h.expires for h in active_holds(holds, now) if h.expires is not None]
    next_wake = min([*expiries, *([next_deadline] if next_deadline else [])], default=None)
    blocked = None if clock_trusted else (clock_reason or "wall clock is untrusted")
    return RetentionPlan(
        now=now,
        deletions=() if blocked else (*retention, *pressure),
        kept_by_hold=tuple(kept),
        next_deadline=next_deadline,
        next_wake=next_wake,
        overdue_count=len(retention),
        worst_overdue_seconds=worst,
        blocked_reason=blocked,
        disk_pressure_bytes_needed=needed,
        storage_full_held=full_held,
        awaiting_deadline=tuple(
            r.id for r in live if r.deadline is None and r.tags.time_source is TimeSource.UNTRUSTED
        ),
    )


class SourcePriority(NamedTuple):
    """A recorder source and its priority: higher numbers matter more."""

    id: str
    priority: int


def sources_to_stop(sources: Sequence[tuple[str, int]], n: int) -> list[str]:
    """The ``n`` sources to stop first when only held footage is left: lowest priority, then id."""
    ordered = sorted(sources, key=lambda s: (s[1], s[0]))
    return [s[0] for s in ordered[: max(n, 0)]]
