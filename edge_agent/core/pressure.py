"""Pausing recorders when the disk is full of held footage (pure policy).

Two pure decisions about a full disk.

:func:`storage_budget`: the catalog (with its audit log and outbox) shares
the storage disk with the footage, but its growth is never a reason to
delete footage before its deadline. Disk pressure counts the catalog's own
bytes as free, so only what footage (and foreign files) take can make the
janitor delete early; a catalog that takes a large share of the floor is an
alarm (``alarm.storage_budget``) for the operator instead.

:class:`PressureValve`: when the janitor reports ``storage_full_held`` nothing more can be deleted:
every remaining recording is under a hold. Recording on would fail at the
worst moment, so sources stop, lowest priority first
(:func:`~edge_agent.core.retention_plan.sources_to_stop`): one at once, then one
more after each janitor pass that still finds the free space shrinking, until
the disk stops filling. When the condition clears, exactly the sources this
valve paused resume (an operator's pause is not undone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_agent.core.retention_plan import sources_to_stop

__all__ = ["PAUSE_REASON", "PressureValve", "StorageBudget", "storage_budget"]

PAUSE_REASON = "storage full of held footage"
# The catalog holding this share of the floor (1/4) while the disk is under it is an alarm.
CATALOG_SHARE_DIVISOR = 4
# A catalog on its own filesystem: less free than this there is an alarm (SQLite needs
# room for its WAL and checkpoints).
CATALOG_MIN_FREE = 64 * 1024 * 1024


@dataclass(frozen=True)
class StorageBudget:
    footage_free: int  # free bytes as disk pressure counts them
    alarm: bool  # the catalog, not footage, is filling a disk
    why: str | None = None


def storage_budget(
    *, free: int, floor: int, catalog_bytes: int, catalog_fs_free: int | None = None
) -> StorageBudget:
    """How disk pressure sees the storage disk, and whether the catalog is an alarm.

    ``catalog_bytes``: the catalog's files (database, WAL, audit head) when they
    are on the storage filesystem, else 0; ``catalog_fs_free``: the free space
    of the catalog's own filesystem when it is another one.
    """
    catalog_bytes = max(catalog_bytes, 0)
    footage_free = free + catalog_bytes
    if free < floor and catalog_bytes * CATALOG_SHARE_DIVISOR >= floor:
        why = (
            f"the catalog ({catalog_bytes} B: audit log, outbox) holds the storage disk "
            f"below its floor ({free} B free, floor {floor} B); footage is not deleted "
            "early for it"
        )
        return StorageBudget(footage_free, True, why)
    if catalog_fs_free is not None and catalog_fs_free < CATALOG_MIN_FREE:
        why = f"the catalog's filesystem has {catalog_fs_free} B free"
        return StorageBudget(footage_free, True, why)
    return StorageBudget(footage_free, False)


@dataclass
class PressureValve:
    tolerance_bytes: int = 8 * 1024 * 1024  # shrinking less than this counts as stable
    paused: list[str] = field(default_factory=list)
    _sweep: object = None
    _free_at_pause: int | None = None

    def step(
        self,
        *,
        full: bool,
        sweep: object,
        free_bytes: int | None,
        sources: Sequence[tuple[str, int]],
    ) -> tuple[list[str], list[str]]:
        """(to pause, to resume) for the janitor's latest verdict.

        ``sweep`` identifies the janitor pass (its time): one decision per pass.
        ``sources`` are the recording candidates as (id, priority), paused ones included.
        """
        known = {sid for sid, _ in sources}
        self.paused = [s for s in self.paused if s in known]
        if not full:
            resume, self.paused = self.paused, []
            self._sweep, self._free_at_pause = sweep, None
            return [], resume
        if sweep == self._sweep:
            return [], []
        self._sweep = sweep
        shrinking = (
            self._free_at_pause is None
            or free_bytes is None
            or free_bytes < self._free_at_pause - self.tolerance_bytes
        )
        if self.paused and not shrinking:
            return [], []
        candidates = [(sid, prio) for sid, prio in sources if sid not in self.paused]
        chosen = sources_to_stop(candidates, 1)
        self.paused += chosen
        self._free_at_pause = free_bytes
        return chosen, []
