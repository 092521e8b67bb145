"""Pausing recorders when the disk is full of held footage (pure policy).

When the janitor reports ``storage_full_held`` nothing more can be deleted:
every remaining recording is under a hold. Recording on would fail at the
worst moment, so sources stop, lowest priority first
(:func:`~edge_agent.retention_plan.sources_to_stop`): one at once, then one
more after each janitor pass that still finds the free space shrinking, until
the disk stops filling. When the condition clears, exactly the sources this
valve paused resume (an operator's pause is not undone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_agent.retention_plan import sources_to_stop

__all__ = ["PAUSE_REASON", "PressureValve"]

PAUSE_REASON = "storage full of held footage"


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
