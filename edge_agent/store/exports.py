"""Every catalog access of exports and the holdings report, in one place.

The export package and ``report holdings`` reach the catalog only through
these functions, so a change to the catalog's shape is met here alone
(docs/export.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edge_agent.core.model import EraseRequest, Hold, Recording
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox

EXPORT_ACTION = "export.created"


def recordings_in_window(
    cat: Catalog, location: str, start: datetime, end: datetime
) -> list[Recording]:
    """Recordings of ``location`` overlapping [start, end], in every state (rules decide)."""
    return cat.recordings.list(location=location, since=start, until=end, states=None)


def holds(cat: Catalog) -> list[Hold]:
    """Open holds (released ones protect nothing)."""
    return cat.holds.list()


def requests_at(cat: Catalog, location: str, at: datetime) -> list[EraseRequest]:
    """Requests in force (not dry runs) whose window holds ``at`` at ``location``."""
    return cat.requests.standing(location, at, at)


def record_export(
    cat: Catalog,
    *,
    actor: str,
    subject: str,
    data: dict[str, Any],
    event: dict[str, Any],
    ts: datetime,
) -> int:
    """One audit entry and one ``export.created`` event, in one transaction; the audit seq."""
    with cat.transaction():
        entry = AuditLog(cat).append(EXPORT_ACTION, actor=actor, subject=subject, data=data, ts=ts)
        Outbox(cat).enqueue(EXPORT_ACTION, {**event, "audit_seq": entry.seq}, ts=ts)
    return entry.seq


def count_exports(cat: Catalog) -> int:
    """How many exports this device has made (telemetry)."""
    rows = cat.query("SELECT COUNT(*) FROM audit WHERE action = ?", (EXPORT_ACTION,))
    return int(rows[0][0])


__all__ = [
    "EXPORT_ACTION",
    "count_exports",
    "holds",
    "record_export",
    "recordings_in_window",
    "requests_at",
]
