"""The ``recordings`` rows: adding, finding, listing and changing recordings.

``Catalog.recordings`` is a :class:`RecordingStore`. Every statement runs under the
catalog lock (see store/catalog.py); retention's paging queries are in
store/schedule.py. The state changes retention makes in bulk (restrict, mark
``deleting``, close as ``deleted``) are here so that no SQL on this table lives
outside store/ (docs/design/deletion.md describes the protocol they serve).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.core.location_drift import LocationFootage
from edge_agent.core.model import LIVE_STATES, Purpose, Recording, RecState, Site
from edge_agent.store.errors import UnknownRecord
from edge_agent.store.rows import (
    LIVE_STATES_SQL,
    REC_COLUMNS,
    opt_dt,
    opt_epoch,
    rec_params,
    select_recordings,
    to_epoch,
)

if TYPE_CHECKING:
    from edge_agent.store.catalog import Catalog

__all__ = ["PurposeStats", "RecordingStore", "read_footage_by_location"]

_Recs = builtins.list[Recording]
# Rows per statement of the bulk state changes: 1,500 parameters, far below
# SQLite's limit of 32,766.
_CHUNK = 500


@dataclass(frozen=True)
class PurposeStats:
    """Live (active or restricted) recordings of one purpose."""

    count: int
    bytes: int
    oldest_start: datetime | None


class RecordingStore:
    """Rows of the ``recordings`` table; reach it as ``catalog.recordings``."""

    def __init__(self, catalog: Catalog) -> None:
        self._cat = catalog

    def _select(self, where: str, params: Sequence[Any] = ()) -> _Recs:
        with self._cat.lock:
            return select_recordings(self._cat.conn, where, params)

    def _one(self, where: str, params: Sequence[Any]) -> Recording | None:
        found = self._select(where + " LIMIT 1", params)
        return found[0] if found else None

    def _unknown(self, id: str) -> UnknownRecord:
        return UnknownRecord(f"no recording with id {id!r} in {self._cat.path}")

    # -- adding and finding ---------------------------------------------------

    def add(self, rec: Recording) -> None:
        self.add_many([rec])

    def add_many(self, recs: Iterable[Recording]) -> int:
        """Insert many rows in one transaction (bulk adoption, rebuild)."""
        now = time.time()
        placeholders = ", ".join("?" * 22)
        with self._cat.transaction():
            cur = self._cat.conn.executemany(
                f"INSERT INTO recordings ({REC_COLUMNS}) VALUES ({placeholders})",
                (rec_params(r, now) for r in recs),
            )
            return int(cur.rowcount)

    def get(self, id: str) -> Recording | None:
        return self._one("WHERE id = ?", (id,))

    def find_by_source_sha256(self, sha: str) -> Recording | None:
        """The recording adopted from a file with this content (before tagging)."""
        return self._one("WHERE source_sha256 = ? ORDER BY added_at", (sha,))

    def find_by_path(self, rel: str) -> Recording | None:
        return self._one("WHERE path = ?", (rel,))

    def list(
        self,
        *,
        location: str | None = None,
        purpose: Purpose | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        states: Sequence[RecState] | None = (RecState.ACTIVE,),
        limit: int | None = None,
    ) -> _Recs:
        """Recordings overlapping [since, until] (either bound optional), by start.

        ``states=None`` means every state.
        """
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if location is not None:
            where.append("location = ?")
            params.append(location)
        if purpose is not None:
            where.append("purpose = ?")
            params.append(str(purpose))
        if since is not None:
            where.append('"end" >= ?')
            params.append(to_epoch(since))
        if until is not None:
            where.append("start <= ?")
            params.append(to_epoch(until))
        if states is not None:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(str(s) for s in states)
        sql = "WHERE " + " AND ".join(where) if where else ""
        sql += " ORDER BY start, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return self._select(sql, params)

    def overlapping(
        self,
        location: str,
        start: datetime,
        end: datetime,
        states: Sequence[RecState] = LIVE_STATES,
    ) -> _Recs:
        """Recordings at ``location`` whose [start, end] meets [start, end] (closed)."""
        lo, hi = to_epoch(start), to_epoch(end)
        # No recording is longer than max_duration_s, so one that overlaps must start
        # within that distance before the window: keeps the index range narrow. The
        # extra millisecond absorbs float rounding of end - start.
        max_dur = float(self._cat.get_meta("max_duration_s") or 0.0) + 0.001
        placeholders = ", ".join("?" * len(states))
        return self._select(
            "INDEXED BY idx_recordings_loc_start "
            "WHERE location = ? AND start >= ? AND start <= ? "
            f'AND "end" >= ? AND state IN ({placeholders}) ORDER BY start, id',
            (location, lo - max_dur, hi, lo, *(str(s) for s in states)),
        )

    # -- changing one row -----------------------------------------------------

    def set_state(
        self,
        id: str,
        state: RecState,
        *,
        reason: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Move a recording to ``state``; DELETED also stamps ``deleted_at``."""
        at_s = to_epoch(at) if at is not None else time.time()
        deleting = state in (RecState.DELETING, RecState.DELETED)
        cur = self._cat.execute(
            "UPDATE recordings SET state = ?, state_reason = ?, updated_at = ?, "
            "deleted_at = CASE WHEN ? THEN ? ELSE deleted_at END, "
            "delete_reason = CASE WHEN ? THEN ? ELSE delete_reason END WHERE id = ?",
            (
                str(state),
                reason,
                at_s,
                state is RecState.DELETED,
                at_s,
                deleting,
                reason,
                id,
            ),
        )
        if cur.rowcount == 0:
            raise self._unknown(id)

    def restrict(self, id: str, *, reason: str, at: datetime) -> bool:
        """Restrict an ``active`` recording; False when it was not active (any more)."""
        cur = self._cat.execute(
            "UPDATE recordings SET state = 'restricted', state_reason = ?, updated_at = ? "
            "WHERE id = ? AND state = 'active'",
            (reason, at.timestamp(), id),
        )
        return cur.rowcount == 1

    def set_deadline(self, id: str, deadline: datetime | None) -> None:
        cur = self._cat.execute(
            "UPDATE recordings SET deadline = ?, updated_at = ? WHERE id = ?",
            (opt_epoch(deadline), time.time(), id),
        )
        if cur.rowcount == 0:
            raise self._unknown(id)

    def mark_truncated(self, id: str) -> None:
        """Flag a recording whose packets end before its header said."""
        cur = self._cat.execute(
            "UPDATE recordings SET truncated = 1, updated_at = ? WHERE id = ?", (time.time(), id)
        )
        if cur.rowcount == 0:
            raise self._unknown(id)

    # -- anonymization (docs/anonymization.md) ---------------------------------

    def set_derivation(self, id: str, *, derived_from: str, anonymization: dict[str, Any]) -> None:
        """Record that ``id`` is an anonymized derivative of ``derived_from``."""
        cur = self._cat.execute(
            "UPDATE recordings SET derived_from = ?, anonymization = ?, updated_at = ? "
            "WHERE id = ?",
            (derived_from, json.dumps(anonymization, sort_keys=True), time.time(), id),
        )
        if cur.rowcount == 0:
            raise self._unknown(id)

    def set_anonymized_reason(self, id: str, reason: str) -> None:
        """The written reason for footage declared anonymized without the process."""
        cur = self._cat.execute(
            "UPDATE recordings SET anonymized_reason = ?, updated_at = ? WHERE id = ?",
            (reason, time.time(), id),
        )
        if cur.rowcount == 0:
            raise self._unknown(id)

    def derivation(self, id: str) -> tuple[str | None, dict[str, Any] | None, str | None]:
        """``(derived_from, anonymization figures, anonymized_reason)`` of one row."""
        rows = self._cat.query(
            "SELECT derived_from, anonymization, anonymized_reason FROM recordings WHERE id = ?",
            (id,),
        )
        if not rows:
            raise self._unknown(id)
        src, figures, reason = rows[0]
        return src, (json.loads(figures) if figures else None), reason

    def derivatives_of(self, ids: Sequence[str], states: Sequence[RecState] = LIVE_STATES) -> _Recs:
        """Recordings derived from any of ``ids`` (in ``states``)."""
        out: _Recs = []
        st = ", ".join("?" * len(states))
        for i in range(0, len(ids), 500):
            chunk = builtins.list(ids[i : i + 500])
            out.extend(
                self._select(
                    f"WHERE derived_from IN ({', '.join('?' * len(chunk))}) "
                    f"AND state IN ({st}) ORDER BY start, id",
                    (*chunk, *(str(s) for s in states)),
                )
            )
        return out

    def anonymized_counts(self) -> dict[str, int]:
        """Live anonymized rows: verified derivatives, unverified ones, and declared ones."""
        # Both read small partial indexes (store/migrations.py), not the table.
        derived = self._cat.query(
            "SELECT anonymized, COUNT(*) FROM recordings INDEXED BY idx_recordings_derived_from "
            f"WHERE derived_from IS NOT NULL AND state IN {LIVE_STATES_SQL} GROUP BY anonymized"
        )
        by = {int(a): int(n) for a, n in derived}
        declared = self._cat.query(
            "SELECT COUNT(*) FROM recordings INDEXED BY idx_recordings_declared "
            f"WHERE anonymized = 1 AND derived_from IS NULL AND state IN {LIVE_STATES_SQL}"
        )
        return {
            "verified": by.get(1, 0),
            "unverified": by.get(0, 0),
            "declared": int(declared[0][0]) if declared else 0,
        }

    def is_truncated(self, id: str) -> bool:
        rows = self._cat.query("SELECT truncated FROM recordings WHERE id = ?", (id,))
        return bool(rows and rows[0][0])

    # -- the deletion protocol's bulk steps (docs/design/deletion.md) -----------

    def mark_deleting(
        self, rows: Sequence[tuple[str, str, str]], *, at: datetime, from_states: Sequence[str]
    ) -> set[str]:
        """``(id, delete_reason, state_reason)`` rows still in one of ``from_states``
        become ``deleting``; returns their ids.

        One ``UPDATE … FROM (VALUES …) … RETURNING`` per 500 rows: checking and
        marking a batch this way costs about half of a per-row ``executemany``
        plus a separate state query (docs/scale.md).
        """
        done: set[str] = set()
        states = ", ".join("?" * len(from_states))
        with self._cat.lock:
            for i in range(0, len(rows), _CHUNK):
                chunk = rows[i : i + _CHUNK]
                # In the order of the placeholders: SET, then VALUES, then WHERE.
                params: builtins.list[Any] = [at.timestamp()]
                for row in chunk:
                    params.extend(row)
                params.extend(from_states)
                done.update(
                    str(r[0])
                    for r in self._cat.conn.execute(
                        "UPDATE recordings SET state = 'deleting', delete_reason = t.column2, "
                        "state_reason = t.column3, updated_at = ? FROM (VALUES "
                        f"{', '.join(['(?, ?, ?)'] * len(chunk))}) AS t "
                        # `+state` keeps SQLite on the primary key: the state index would scan.
                        f"WHERE recordings.id = t.column1 AND +recordings.state IN ({states}) "
                        "RETURNING recordings.id",
                        params,
                    ).fetchall()
                )
        return done

    def mark_deleted(self, ids: Sequence[str], *, at: datetime) -> set[str]:
        """Rows of ``ids`` still ``deleting`` become ``deleted``; returns their ids."""
        at_s = at.timestamp()
        done: set[str] = set()
        with self._cat.lock:
            for i in range(0, len(ids), _CHUNK):
                chunk = builtins.list(ids[i : i + _CHUNK])
                done.update(
                    str(r[0])
                    for r in self._cat.conn.execute(
                        "UPDATE recordings SET state = 'deleted', deleted_at = ?, updated_at = ? "
                        f"WHERE id IN ({', '.join('?' * len(chunk))}) AND +state = 'deleting' "
                        "RETURNING id",
                        (at_s, at_s, *chunk),
                    ).fetchall()
                )
        return done

    def deleting_reasons(self, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        """``id -> (delete_reason, state_reason)`` of those ``ids`` still ``deleting``."""
        if not ids:
            return {}
        rows = self._cat.query(
            "SELECT id, delete_reason, state_reason FROM recordings WHERE state = 'deleting'"
            f" AND id IN ({', '.join('?' * len(ids))})",
            builtins.list(ids),
        )
        return {str(r[0]): (r[1], r[2]) for r in rows}

    # -- summaries --------------------------------------------------------------

    def has_location(self, location: str) -> bool:
        """Whether any recording, live or gone, was catalogued at ``location``."""
        with self._cat.lock:
            row = self._cat.conn.execute(
                "SELECT 1 FROM recordings WHERE location = ? LIMIT 1", (location,)
            ).fetchone()
        return row is not None

    def has_live(self) -> bool:
        """Whether any row is not yet deleted (the wrong-disk check in store/catalog.py)."""
        with self._cat.lock:
            row = self._cat.conn.execute(
                "SELECT 1 FROM recordings WHERE state != 'deleted' LIMIT 1"
            ).fetchone()
        return row is not None

    def locations(self) -> builtins.list[str]:
        """Every location with a catalogued recording, sorted."""
        with self._cat.lock:
            rows = self._cat.conn.execute("SELECT DISTINCT location FROM recordings").fetchall()
        return sorted(str(r[0]) for r in rows)

    def footage(self) -> builtins.list[LocationFootage]:
        """Live recordings per (location, site, audio): what the config must still honour."""
        with self._cat.lock:
            return _footage_by_location(self._cat.conn)

    def audio_outside(self, audio_rooms: Collection[str]) -> int:
        """Live recordings that keep audio at a location that is not an audio room.

        The notice's audio rule as one number (must be 0): telemetry and the
        fleet dashboard report it (docs/mqtt.md).
        """
        with self._cat.lock:
            rows = self._cat.conn.execute(
                "SELECT location, COUNT(*) FROM recordings "
                f"WHERE audio = 1 AND state IN {LIVE_STATES_SQL} GROUP BY location"
            ).fetchall()
        return sum(int(n) for loc, n in rows if loc not in audio_rooms)

    def summaries(self) -> dict[Purpose, PurposeStats]:
        """Count, bytes and oldest start of live recordings, for every purpose."""
        live = tuple(str(s) for s in LIVE_STATES)
        out: dict[Purpose, PurposeStats] = {}
        conn = self._cat.conn
        with self._cat.lock:
            totals = {
                row[0]: (int(row[1]), int(row[2]))
                for row in conn.execute(
                    "SELECT purpose, SUM(count), SUM(bytes) FROM purpose_stats "
                    f"WHERE state IN {LIVE_STATES_SQL} GROUP BY purpose"
                )
            }
            for purpose in Purpose:
                oldest: float | None = None
                for state in live:
                    # One MIN per (purpose, state): each is a single index probe.
                    value = conn.execute(
                        "SELECT MIN(start) FROM recordings WHERE purpose = ? AND state = ?",
                        (str(purpose), state),
                    ).fetchone()[0]
                    if value is not None and (oldest is None or value < oldest):
                        oldest = value
                count, nbytes = totals.get(str(purpose), (0, 0))
                out[purpose] = PurposeStats(count, nbytes, opt_dt(oldest))
        return out

    def counts(self) -> dict[RecState, int]:
        """Rows per state (from the ``purpose_stats`` table the triggers keep)."""
        rows = self._cat.query("SELECT state, SUM(count) FROM purpose_stats GROUP BY state")
        counts = {s: 0 for s in RecState}
        for state, n in rows:
            counts[RecState(state)] = int(n)
        return counts


def _footage_by_location(conn: sqlite3.Connection) -> builtins.list[LocationFootage]:
    rows = conn.execute(
        "SELECT location, site, audio, COUNT(*), MAX(deadline), SUM(deadline IS NULL) "
        f"FROM recordings WHERE state IN {LIVE_STATES_SQL} GROUP BY location, site, audio"
    ).fetchall()
    return [
        LocationFootage(str(loc), Site(site), bool(audio), int(n), opt_dt(last), int(undated or 0))
        for loc, site, audio, n, last, undated in rows
    ]


def read_footage_by_location(path: Path) -> builtins.list[LocationFootage] | None:
    """:meth:`RecordingStore.footage` through a read-only connection, or None.

    For ``config check`` and ``doctor``: they must not create, migrate or take
    ownership of a catalog. None when there is no readable catalog yet.
    """
    if not Path(path).is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        return _footage_by_location(conn)
    except (sqlite3.Error, ValueError):
        return None
    finally:
        conn.close()
