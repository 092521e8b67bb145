"""Placing, extending and releasing holds (docs/retention-policy.md): each audited, each an event.

The hold row, its audit entry and its outbox event are written in one
transaction. Which recordings a hold protects is decided by
:func:`edge_agent.core.policy.hold_covers`; nothing here deletes anything.
Whether a location exists is the caller's check (the CLI knows the config).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from edge_agent.core.model import Hold, HoldKind, iso
from edge_agent.core.policy import require_utc
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox

__all__ = ["HoldError", "extend_hold", "hold_doc", "place_hold", "release_hold"]


class HoldError(ValueError):
    """A hold request that cannot be carried out as asked."""


def hold_doc(h: Hold) -> dict[str, Any]:
    """A hold as JSON-ready data (times ISO 8601 UTC)."""
    return {
        "id": h.id,
        "kind": str(h.kind),
        "reason": h.reason,
        "placed_by": h.placed_by,
        "placed_at": iso(h.placed_at),
        "recording_ids": list(h.recording_ids),
        "location": h.location,
        "from": iso(h.window_start) if h.window_start else None,
        "to": iso(h.window_end) if h.window_end else None,
        "until": iso(h.expires) if h.expires else None,
        "released_at": iso(h.released_at) if h.released_at else None,
        "released_by": h.released_by,
    }


def _need_text(value: str, what: str) -> str:
    if not value or not value.strip():
        raise HoldError(f"{what} is empty: say {what} (e.g. --{what} 'incident 2024-117')")
    return value.strip()


def place_hold(
    catalog: Catalog,
    *,
    kind: HoldKind,
    reason: str,
    by: str,
    now: datetime,
    recording_ids: Sequence[str] = (),
    location: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    until: datetime | None = None,
) -> Hold:
    """Place a hold on recording ids, or on a location + window. Audited: ``hold.placed``."""
    reason = _need_text(reason, "reason")
    by = _need_text(by, "by")
    ids = tuple(dict.fromkeys(recording_ids))
    if ids and (location is not None or start is not None or end is not None):
        raise HoldError(
            "a hold covers either recording ids or a location with a window, not both: "
            "drop --recording or drop --location/--from/--to"
        )
    if not ids:
        if location is None or start is None or end is None:
            raise HoldError(
                "a hold needs a scope: --recording ID (repeatable), or --location with "
                "--from and --to"
            )
        start = require_utc(start, "--from")
        end = require_utc(end, "--to")
        if end < start:
            raise HoldError(f"--to {iso(end)} is before --from {iso(start)}: swap them")
    if until is not None:
        until = require_utc(until, "--until")
        if until <= now:
            raise HoldError(f"--until {iso(until)} is not in the future (now {iso(now)})")
    hold = Hold(
        id=f"hold-{uuid.uuid4().hex[:12]}",
        kind=kind,
        reason=reason,
        placed_by=by,
        placed_at=now,
        recording_ids=ids,
        location=location if not ids else None,
        window_start=start if not ids else None,
        window_end=end if not ids else None,
        expires=until,
    )
    with catalog.transaction():
        unknown = [i for i in ids if catalog.recordings.get(i) is None]
        if unknown:
            raise HoldError(
                f"unknown recording id(s) {', '.join(unknown)}: "
                "check `edge-agent recordings list --json` for ids"
            )
        catalog.holds.add(hold)
        doc = hold_doc(hold)
        AuditLog(catalog).append("hold.placed", actor=by, subject=hold.id, data=doc, ts=now)
        Outbox(catalog).enqueue("hold.placed", _event(doc), ts=now)
    return hold


def _event(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k != "id"}
    out["hold_id"] = doc["id"]
    return out


def _open_hold(catalog: Catalog, hold_id: str) -> Hold:
    hold = catalog.holds.get(hold_id)
    if hold is None:
        raise HoldError(f"unknown hold {hold_id!r}: see `edge-agent hold list` for ids")
    if hold.released_at is not None:
        raise HoldError(
            f"hold {hold_id} was already released at {iso(hold.released_at)} by {hold.released_by}"
        )
    return hold


def release_hold(catalog: Catalog, hold_id: str, *, by: str, reason: str, now: datetime) -> Hold:
    """Release an open hold. Audited: ``hold.released``; footage it kept becomes deletable."""
    reason = _need_text(reason, "reason")
    by = _need_text(by, "by")
    with catalog.transaction():
        _open_hold(catalog, hold_id)
        catalog.holds.release(hold_id, by=by, reason=reason, at=now)
        released = catalog.holds.get(hold_id)
        assert released is not None
        doc = {**hold_doc(released), "release_reason": reason}
        AuditLog(catalog).append("hold.released", actor=by, subject=hold_id, data=doc, ts=now)
        Outbox(catalog).enqueue("hold.released", _event(doc), ts=now)
    return released


def extend_hold(
    catalog: Catalog,
    hold_id: str,
    *,
    until: datetime | None,
    by: str,
    reason: str,
    now: datetime,
) -> Hold:
    """Move an open hold's expiry (``None`` = no expiry). Audited: ``hold.extended``."""
    reason = _need_text(reason, "reason")
    by = _need_text(by, "by")
    if until is not None:
        until = require_utc(until, "--until")
        if until <= now:
            raise HoldError(f"--until {iso(until)} is not in the future (now {iso(now)})")
    with catalog.transaction():
        old = _open_hold(catalog, hold_id)
        catalog.holds.set_expiry(hold_id, until)
        new = catalog.holds.get(hold_id)
        assert new is not None
        doc = {
            **hold_doc(new),
            "previous_until": iso(old.expires) if old.expires else None,
            "extend_reason": reason,
            "extended_by": by,
        }
        AuditLog(catalog).append("hold.extended", actor=by, subject=hold_id, data=doc, ts=now)
        Outbox(catalog).enqueue("hold.extended", _event(doc), ts=now)
    return new
