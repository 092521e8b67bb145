"""Rows <-> domain objects: the one place a catalog row becomes a Recording or Hold.

Times are stored as REAL epoch seconds (they sort and index correctly, unlike
ISO strings with optional fractions) and come back as aware UTC datetimes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from edge_agent.core.model import (
    LIVE_STATES,
    Hold,
    HoldKind,
    Purpose,
    Recording,
    RecState,
    Site,
    Tags,
    TimeSource,
    iso,
)

__all__ = [
    "HOLD_COLUMNS",
    "LIVE_STATES_SQL",
    "REC_COLUMNS",
    "REC_SELECT",
    "STATES",
    "from_epoch",
    "hold_params",
    "opt_dt",
    "opt_epoch",
    "rec_params",
    "row_to_hold",
    "row_to_recording",
    "select_recordings",
    "to_epoch",
]

# "('active', 'restricted')": the live states as SQL, for queries and for the partial
# index they must match word for word to use it (store/migrations.py).
LIVE_STATES_SQL = "(" + ", ".join(f"'{s}'" for s in LIVE_STATES) + ")"


def to_epoch(dt: datetime) -> float:
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: the catalog only stores aware UTC times")
    return dt.timestamp()


def from_epoch(x: float) -> datetime:
    return datetime.fromtimestamp(x, UTC)


def opt_epoch(dt: datetime | None) -> float | None:
    return None if dt is None else to_epoch(dt)


def opt_dt(x: float | None) -> datetime | None:
    return None if x is None else from_epoch(x)


REC_COLUMNS = (
    'id, path, location, purpose, site, audio, anonymized, start, "end", start_iso, '
    "time_source, device, policy_version, deadline, size, sha256, source_sha256, state, "
    "source_id, added_at, updated_at"
)
# What a Recording needs, in the order row_to_recording reads by position.
REC_SELECT = (
    'SELECT id, path, location, purpose, site, audio, anonymized, start, "end", '
    "time_source, device, policy_version, deadline, size, sha256, source_sha256, state, "
    "source_id FROM recordings"
)
_PURPOSES = {p.value: p for p in Purpose}
_SITES = {s.value: s for s in Site}
_TIME_SOURCES = {t.value: t for t in TimeSource}
STATES = {s.value: s for s in RecState}


def rec_params(rec: Recording, now: float) -> tuple[Any, ...]:
    """The values for ``INSERT INTO recordings (REC_COLUMNS)``."""
    t = rec.tags
    return (
        rec.id,
        rec.path,
        t.location,
        str(t.purpose),
        str(t.site),
        int(t.audio),
        int(t.anonymized),
        to_epoch(t.start),
        to_epoch(t.end),
        iso(t.start),
        str(t.time_source),
        t.device,
        t.policy_version,
        opt_epoch(rec.deadline),
        rec.size,
        rec.sha256,
        rec.source_sha256,
        str(rec.state),
        rec.source_id,
        now,
        now,
    )


def row_to_recording(row: tuple[Any, ...]) -> Recording:
    # Positional access and dict lookups instead of sqlite3.Row names and Enum
    # calls: the retention sweep converts a thousand rows at a time.
    (rid, path, loc, purpose, site, audio, anon, start, end, tsrc, device, policy,
     deadline, size, sha, source_sha, state, source_id) = row  # fmt: skip
    tags = Tags(
        location=loc,
        purpose=_PURPOSES[purpose],
        site=_SITES[site],
        audio=bool(audio),
        anonymized=bool(anon),
        start=datetime.fromtimestamp(start, UTC),
        end=datetime.fromtimestamp(end, UTC),
        time_source=_TIME_SOURCES[tsrc],
        device=device,
        policy_version=policy,
    )
    return Recording(
        id=rid,
        path=path,
        tags=tags,
        size=size,
        sha256=sha,
        state=STATES[state],
        deadline=None if deadline is None else datetime.fromtimestamp(deadline, UTC),
        source_id=source_id,
        source_sha256=source_sha,
    )


def select_recordings(
    conn: sqlite3.Connection, where: str, params: Sequence[Any] = ()
) -> list[Recording]:
    """``REC_SELECT`` + ``where`` as Recordings. The caller holds the catalog lock."""
    cur = conn.cursor()
    cur.row_factory = None
    rows = cur.execute(f"{REC_SELECT} {where}", params).fetchall()
    return [row_to_recording(r) for r in rows]


HOLD_COLUMNS = (
    "id, kind, reason, placed_by, placed_at, recording_ids, location, "
    "window_start, window_end, expires, released_at, released_by"
)


def hold_params(h: Hold) -> tuple[Any, ...]:
    """The values for ``INSERT INTO holds (HOLD_COLUMNS)``."""
    return (
        h.id,
        str(h.kind),
        h.reason,
        h.placed_by,
        to_epoch(h.placed_at),
        json.dumps(list(h.recording_ids)),
        h.location,
        opt_epoch(h.window_start),
        opt_epoch(h.window_end),
        opt_epoch(h.expires),
        opt_epoch(h.released_at),
        h.released_by,
    )


def row_to_hold(row: Sequence[Any]) -> Hold:
    """A ``SELECT HOLD_COLUMNS`` row (by position) as a Hold.

    Raises ValueError/TypeError for a row no agent wrote (a salvaged old catalog).
    """
    return Hold(
        id=row[0],
        kind=HoldKind(row[1]),
        reason=row[2],
        placed_by=row[3],
        placed_at=from_epoch(row[4]),
        recording_ids=tuple(json.loads(row[5] or "[]")),
        location=row[6],
        window_start=opt_dt(row[7]),
        window_end=opt_dt(row[8]),
        expires=opt_dt(row[9]),
        released_at=opt_dt(row[10]),
        released_by=row[11],
    )
