"""Retention's view of the catalog: what is due, what comes next, what is on disk.

``Catalog.schedule`` is a :class:`RetentionSchedule`, read by the janitor, the
clock guard, reconcile, telemetry and ``retention`` CLI. Deadline queries are
pinned to the partial index ``idx_recordings_due`` (store/migrations.py): without
ANALYZE statistics the planner may prefer a state index and sort every due row.
Their ``state IN`` text is :data:`LIVE_STATES_SQL`, the same words as the index's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edge_agent.core.model import Recording, RecState, TimeSource
from edge_agent.store.rows import LIVE_STATES_SQL as _LIVE
from edge_agent.store.rows import STATES, opt_dt, select_recordings, to_epoch

if TYPE_CHECKING:
    from edge_agent.store.catalog import Catalog

__all__ = ["RetentionSchedule"]

_DUE = f"INDEXED BY idx_recordings_due WHERE state IN {_LIVE} AND deadline IS NOT NULL"
_UNTRUSTED = str(TimeSource.UNTRUSTED)


class RetentionSchedule:
    """Deadline and state queries over ``recordings``; reach it as ``catalog.schedule``."""

    def __init__(self, catalog: Catalog) -> None:
        self._cat = catalog

    def _select(self, where: str, params: Sequence[Any] = ()) -> list[Recording]:
        with self._cat.lock:
            return select_recordings(self._cat.conn, where, params)

    def _value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cat.query(sql, params)[0][0]

    # -- deadlines --------------------------------------------------------------

    def due(self, now: datetime, limit: int = 1000) -> list[Recording]:
        """Live recordings whose deadline is at or before ``now``, by deadline."""
        return self.due_page(now, limit)

    def due_page(self, now: datetime, limit: int, offset: int = 0) -> list[Recording]:
        """Like :meth:`due`, skipping the first ``offset`` due rows.

        The janitor pages past held recordings this way: deleted rows leave the
        due set, held ones stay, so the offset is the number of held rows seen.
        """
        return self._select(
            f"{_DUE} AND deadline <= ? ORDER BY deadline LIMIT ? OFFSET ?",
            (to_epoch(now), int(limit), int(offset)),
        )

    def count_due(self, now: datetime) -> int:
        return self.overdue(now)[0]

    def overdue(self, now: datetime) -> tuple[int, datetime | None]:
        """How many live recordings are due at ``now``, and the oldest of their deadlines."""
        rows = self._cat.query(
            f"SELECT COUNT(*), MIN(deadline) FROM recordings {_DUE} AND deadline <= ?",
            (to_epoch(now),),
        )
        return int(rows[0][0]), opt_dt(rows[0][1])

    def next_deadline(self) -> datetime | None:
        """Earliest deadline of any live recording, past or future."""
        return opt_dt(self._value(f"SELECT MIN(deadline) FROM recordings {_DUE}"))

    def next_deadline_after(self, now: datetime) -> datetime | None:
        """Earliest deadline of a live recording that is still in the future."""
        return opt_dt(
            self._value(
                f"SELECT MIN(deadline) FROM recordings {_DUE} AND deadline > ?", (to_epoch(now),)
            )
        )

    def upcoming(self, after: datetime, limit: int = 10) -> list[Recording]:
        """Live recordings whose deadline is after ``after``, soonest first."""
        return self._select(
            f"{_DUE} AND deadline > ? ORDER BY deadline LIMIT ?", (to_epoch(after), int(limit))
        )

    def pressure_page(self, limit: int, offset: int = 0) -> list[Recording]:
        """Live recordings in disk-pressure order: nearest deadline first, no deadline last."""
        with_deadline = self._select(
            f"{_DUE} ORDER BY deadline LIMIT ? OFFSET ?", (int(limit), int(offset))
        )
        if len(with_deadline) >= limit:
            return with_deadline
        n_dated = int(self._value(f"SELECT COUNT(*) FROM recordings {_DUE}"))
        rest = self._select(
            f"WHERE state IN {_LIVE} AND deadline IS NULL ORDER BY start, id LIMIT ? OFFSET ?",
            (int(limit) - len(with_deadline), max(0, int(offset) - n_dated)),
        )
        return with_deadline + rest

    # -- the clock guard (docs/design/time.md) ------------------------------------

    def newest_trusted_start(self) -> datetime | None:
        """Newest start of any recording (deleted ones too) not timed by an untrusted clock.

        Walks the (state, start) index backwards per state, so it costs a few probes.
        """
        newest: float | None = None
        for state in RecState:
            rows = self._cat.query(
                "SELECT start FROM recordings INDEXED BY idx_recordings_state_start "
                "WHERE state = ? AND time_source != ? ORDER BY start DESC LIMIT 1",
                (str(state), _UNTRUSTED),
            )
            if rows and (newest is None or rows[0][0] > newest):
                newest = float(rows[0][0])
        return opt_dt(newest)

    def awaiting_deadline(self, limit: int = 1000, offset: int = 0) -> list[Recording]:
        """Live recordings made under an untrusted clock that have no deadline yet."""
        return self._select(
            f"WHERE state IN {_LIVE} AND deadline IS NULL "
            "AND time_source = ? ORDER BY start, id LIMIT ? OFFSET ?",
            (_UNTRUSTED, int(limit), int(offset)),
        )

    # -- states -------------------------------------------------------------------

    def in_state(self, state: RecState, limit: int = 1000) -> list[Recording]:
        """Recordings in ``state``, oldest start first."""
        return self._select(
            "INDEXED BY idx_recordings_state_start WHERE state = ? ORDER BY start LIMIT ?",
            (str(state), int(limit)),
        )

    def path_states(self) -> dict[str, tuple[str, RecState]]:
        """``path -> (id, state)`` of every row not yet deleted (reconcile's view of disk)."""
        with self._cat.lock:
            cur = self._cat.conn.cursor()
            cur.row_factory = None
            rows = cur.execute(
                "SELECT path, id, state FROM recordings WHERE state != 'deleted'"
            ).fetchall()
        return {r[0]: (r[1], STATES[r[2]]) for r in rows}
