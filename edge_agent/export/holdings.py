"""The DPO's question: what do we hold of place X at time T, why, and when will it go.

:func:`edge_agent.core.export_plan.holdings_at` selects; this module reads the
catalog (through :mod:`edge_agent.store.exports`) and shapes the answer
(docs/export.md). Restricted recordings are listed here, unlike everywhere
else: the DPO must be able to answer for them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edge_agent.core.export_plan import Holdings, holdings_at
from edge_agent.core.model import Recording, iso
from edge_agent.retention.holds import hold_doc
from edge_agent.store import exports as store
from edge_agent.store.catalog import Catalog


def holdings(cat: Catalog, location: str, at: datetime, now: datetime) -> Holdings:
    return holdings_at(
        location,
        at,
        store.recordings_in_window(cat, location, at, at),
        store.holds(cat),
        store.requests_at(cat, location, at),
        now,
    )


def _rec(rec: Recording, held_by: tuple[str, ...]) -> dict[str, Any]:
    t = rec.tags
    if held_by:
        goes = "kept while held by " + ", ".join(held_by)
    elif rec.deadline is None:
        goes = "no deadline (anonymized material has no limit unless configured)"
    else:
        goes = f"deleted at {iso(rec.deadline)}"
    return {
        "id": rec.id,
        "path": rec.path,
        "state": str(rec.state),
        "purpose": str(t.purpose),
        "site": str(t.site),
        "audio": t.audio,
        "anonymized": t.anonymized,
        "start": iso(t.start),
        "end": iso(t.end),
        "deadline": iso(rec.deadline) if rec.deadline else None,
        "held_by": list(held_by),
        "goes": goes,
        "size": rec.size,
    }


def holdings_doc(h: Holdings, location: str, at: datetime, now: datetime) -> dict[str, Any]:
    return {
        "location": location,
        "at": iso(at),
        "asked_at": iso(now),
        "recordings": [_rec(r, h.held_by.get(r.id, ())) for r in h.recordings],
        "derivatives": [_rec(r, h.held_by.get(r.id, ())) for r in h.derivatives],
        "holds": [hold_doc(x) for x in h.holds],
        "restrictions": [
            {"request_ref": r.ref, "from": iso(r.start), "to": iso(r.end)} for r in h.restrictions
        ],
    }


__all__ = ["holdings", "holdings_doc"]
