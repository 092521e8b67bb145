"""The retention preview: what a sweep would do, as data (docs/operator-guide.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edge_agent.core.model import iso, recording_doc
from edge_agent.core.retention_plan import plan
from edge_agent.retention.janitor import Janitor

__all__ = ["retention_preview"]


def retention_preview(janitor: Janitor, at: datetime, limit: int) -> dict[str, Any]:
    """What a sweep at ``at`` would delete and keep, and why; nothing is written.

    Walks the due pages through the same pure plan as the sweep
    (core/retention_plan.py), with the clock judged as the sweep would judge it.
    """
    cat = janitor.catalog
    verdict = janitor.guard.check(persist=False)
    holds = cat.holds.list()
    going: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    total_due = 0
    offset = 0
    while len(going) < limit:
        page = cat.schedule.due_page(at, 500, offset)
        if not page:
            break
        offset += len(page)
        p = plan(page, holds, at, clock_trusted=True)
        total_due += len(p.deletions)
        kept += [{"id": i, "holds": list(h)} for i, h in p.kept_by_hold]
        going += [
            {
                "id": d.recording_id,
                "path": d.path,
                "reason": str(d.reason),
                "deadline": iso(d.deadline) if d.deadline else None,
                "detail": d.detail,
            }
            for d in p.deletions
        ]
    if len(going) >= limit:
        total_due = cat.schedule.count_due(at) - len(kept)
    upcoming = [
        recording_doc(r, ("id", "location", "purpose", "deadline"))
        for r in cat.schedule.upcoming(at, 10)
    ]
    free, total = janitor.free_space()
    floor = janitor.floor_bytes(total)
    nxt = cat.schedule.next_deadline_after(at)
    return {
        "at": iso(at),
        "clock": "trusted" if verdict.trusted else "untrusted",
        "clock_reason": verdict.reason,
        "blocked": None
        if verdict.trusted
        else f"no deletion while the clock is untrusted: {verdict.reason}",
        "would_delete_count": total_due,
        "would_delete": going[:limit],
        "kept_by_hold": kept,
        "holds": [h.id for h in holds],
        "upcoming": upcoming,
        "next_deadline": iso(nxt) if nxt else None,
        "awaiting_deadline": len(cat.schedule.awaiting_deadline(limit=10_000)),
        "free_bytes": free,
        "floor_bytes": floor,
        "disk_pressure": free < floor,
    }
