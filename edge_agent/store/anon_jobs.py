"""The ``anon_jobs`` rows: anonymization jobs that survive a crash (docs/anonymization.md).

A job is ``queued``, then ``running`` (one attempt more, with the id its
derivative will get and the staging file it writes), then ``done`` or
``failed`` with a reason. A job found ``running`` at start was interrupted:
the runner removes its staging files and runs it again. At most one open
(queued or running) job exists per recording (a unique partial index), so a
second request for the same recording joins the first.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edge_agent.core.model import Recording
from edge_agent.store.rows import select_recordings, to_epoch

if TYPE_CHECKING:
    from edge_agent.store.catalog import Catalog

__all__ = ["JOB_STATES", "AnonJob", "AnonJobStore"]

JOB_STATES = ("queued", "running", "done", "failed")
_COLUMNS = (
    "id, recording_id, state, requested_by, origin, created_at, updated_at, attempts, "
    "derivative_id, staging, reason, result"
)


@dataclass(frozen=True)
class AnonJob:
    id: int
    recording_id: str
    state: str
    requested_by: str
    origin: str  # "cli" | "command" | "policy"
    created_at: float
    updated_at: float
    attempts: int
    derivative_id: str | None
    staging: str | None  # relative to the storage root
    reason: str | None
    result: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "recording_id": self.recording_id,
            "state": self.state,
            "origin": self.origin,
            "attempts": self.attempts,
            "derivative_id": self.derivative_id,
            "reason": self.reason,
        }


def _row(r: sqlite3.Row | tuple[Any, ...]) -> AnonJob:
    return AnonJob(
        id=int(r[0]),
        recording_id=str(r[1]),
        state=str(r[2]),
        requested_by=str(r[3]),
        origin=str(r[4]),
        created_at=float(r[5]),
        updated_at=float(r[6]),
        attempts=int(r[7]),
        derivative_id=r[8],
        staging=r[9],
        reason=r[10],
        result=json.loads(r[11]) if r[11] else None,
    )


class AnonJobStore:
    """Rows of ``anon_jobs``; reach it as ``catalog.anon_jobs``."""

    def __init__(self, catalog: Catalog) -> None:
        self._cat = catalog

    def _select(self, where: str, params: tuple[Any, ...] = ()) -> list[AnonJob]:
        return [
            _row(r) for r in self._cat.query(f"SELECT {_COLUMNS} FROM anon_jobs {where}", params)
        ]

    def enqueue(
        self, recording_id: str, *, requested_by: str, origin: str, now: float | None = None
    ) -> tuple[AnonJob, bool]:
        """The open job for ``recording_id``, and whether it was created now."""
        at = time.time() if now is None else now
        with self._cat.transaction():
            found = self._select(
                "WHERE recording_id = ? AND state IN ('queued', 'running')", (recording_id,)
            )
            if found:
                return found[0], False
            cur = self._cat.execute(
                "INSERT INTO anon_jobs (recording_id, state, requested_by, origin, created_at, "
                "updated_at) VALUES (?, 'queued', ?, ?, ?, ?)",
                (recording_id, requested_by, origin, at, at),
            )
            job_id = int(cur.lastrowid or 0)
        return self.get(job_id), True

    def get(self, job_id: int) -> AnonJob:
        found = self._select("WHERE id = ?", (job_id,))
        if not found:
            raise KeyError(f"no anonymization job {job_id}")
        return found[0]

    def open_jobs(self) -> list[AnonJob]:
        """Queued and running jobs, oldest first (the control socket's ``jobs``)."""
        return self._select("WHERE state IN ('queued', 'running') ORDER BY id")

    def next_open(self) -> AnonJob | None:
        """Interrupted (running) jobs first, then the oldest queued one."""
        found = self._select(
            "WHERE state IN ('queued', 'running') "
            "ORDER BY CASE state WHEN 'running' THEN 0 ELSE 1 END, id LIMIT 1"
        )
        return found[0] if found else None

    def for_recording(self, recording_id: str) -> list[AnonJob]:
        return self._select("WHERE recording_id = ? ORDER BY id", (recording_id,))

    def ever_requested(self, recording_ids: list[str]) -> set[str]:
        """Which of ``recording_ids`` have any job, in any state (policy runs once)."""
        out: set[str] = set()
        for i in range(0, len(recording_ids), 500):
            chunk = recording_ids[i : i + 500]
            rows = self._cat.query(
                "SELECT DISTINCT recording_id FROM anon_jobs "
                f"WHERE recording_id IN ({', '.join('?' * len(chunk))})",
                tuple(chunk),
            )
            out.update(str(r[0]) for r in rows)
        return out

    def start(self, job_id: int, *, derivative_id: str, staging: str) -> AnonJob:
        """Mark running (one attempt more) with the derivative's id and staging path."""
        self._cat.execute(
            "UPDATE anon_jobs SET state = 'running', attempts = attempts + 1, "
            "derivative_id = ?, staging = ?, updated_at = ? WHERE id = ?",
            (derivative_id, staging, time.time(), job_id),
        )
        return self.get(job_id)

    def finish(
        self, job_id: int, state: str, *, reason: str, result: dict[str, Any] | None = None
    ) -> None:
        if state not in ("done", "failed", "queued"):
            raise ValueError(f"a job finishes as done, failed or queued, not {state!r}")
        self._cat.execute(
            "UPDATE anon_jobs SET state = ?, reason = ?, result = ?, updated_at = ? WHERE id = ?",
            (
                state,
                reason,
                json.dumps(result, sort_keys=True) if result is not None else None,
                time.time(),
                job_id,
            ),
        )

    # -- the policy's candidates (docs/anonymization.md, "policy") ---------------

    _FRESH = (
        "derived_from IS NULL AND anonymized = 0 AND state = 'active' AND NOT EXISTS "
        "(SELECT 1 FROM anon_jobs j WHERE j.recording_id = recordings.id)"
    )

    def candidates_added(self, after_rowid: int, limit: int = 200) -> tuple[list[Recording], int]:
        """Originals catalogued after ``after_rowid`` with no job yet, and the new mark.

        The rowid walks the table's own b-tree, so a sweep reads only new rows.
        """
        with self._cat.lock:
            rows = self._cat.conn.execute(
                "SELECT rowid FROM recordings WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after_rowid, limit),
            ).fetchall()
            if not rows:
                return [], after_rowid
            last = int(rows[-1][0])
            recs = select_recordings(
                self._cat.conn,
                f"WHERE rowid > ? AND rowid <= ? AND {self._FRESH} ORDER BY rowid",
                (after_rowid, last),
            )
        return recs, last

    def candidates_due(
        self, after: datetime, before: datetime, limit: int = 200
    ) -> list[Recording]:
        """Active originals whose deadline is in (after, before] with no job yet, soonest
        first (the due index: retention's own, store/migrations.py)."""
        with self._cat.lock:
            return select_recordings(
                self._cat.conn,
                "INDEXED BY idx_recordings_due WHERE state IN ('active', 'restricted') "
                "AND deadline IS NOT NULL AND +state = 'active' AND deadline > ? "
                f"AND deadline <= ? AND {self._FRESH} ORDER BY deadline LIMIT ?",
                (to_epoch(after), to_epoch(before), limit),
            )

    def requeue(self, job_id: int, reason: str) -> None:
        """A paused attempt goes back to the queue; a pause is not a failed attempt."""
        self._cat.execute(
            "UPDATE anon_jobs SET state = 'queued', reason = ?, attempts = MAX(0, attempts - 1), "
            "updated_at = ? WHERE id = ?",
            (reason, time.time(), job_id),
        )

    def counts(self) -> dict[str, int]:
        rows = self._cat.query("SELECT state, COUNT(*) FROM anon_jobs GROUP BY state")
        out = dict.fromkeys(JOB_STATES, 0)
        out.update({str(s): int(n) for s, n in rows})
        return out
