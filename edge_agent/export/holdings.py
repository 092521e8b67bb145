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
from edge_agent.core.model import Hold, Recording, iso
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


def _hold(h: Hold) -> dict[str, Any]:
    return {
        "id": h.id,
        "kind": str(h.kind),
        "reason": h.reason,
        "placed_by": h.placed_by,
        "placed_at": iso(h.placed_at),
        "recording_ids": list(h.recording_ids),
        "location": h.location,
        "window_start": iso(h.window_start) if h.window_start else None,
        "window_end": iso(h.window_end) if h.window_end else None,
        "expires": iso(h.expires) if h.expires else None,
    }


def holdings_doc(h: Holdings, location: str, at: datetime, now: datetime) -> dict[str, Any]:
    return {
        "location": location,
        "at": iso(at),
        "asked_at": iso(now),
        "recordings": [_rec(r, h.held_by.get(r.id, ())) for r in h.recordings],
        "derivatives": [_rec(r, h.held_by.get(r.id, ())) for r in h.derivatives],
        "holds": [_hold(x) for x in h.holds],
        "restrictions": [
            {"request_ref": r.ref, "from": iso(r.start), "to": iso(r.end)} for r in h.restrictions
        ],
    }


__all__ = ["holdings", "holdings_doc"]
