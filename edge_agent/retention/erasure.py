"""Data-subject requests: erase or restrict footage of a place and time window.

The rules are in docs/retention-policy.md.

:func:`edge_agent.core.policy.evaluate_erase` decides; this module carries the
decision out and writes the receipt. Erasure uses the janitor's crash-safe
deletion protocol (:mod:`edge_agent.retention.deletion`). An erase that meets a hold
touches nothing and its receipt names the holds. Every run, dry or real,
blocked or done, leaves a stored receipt (``catalog.requests.add``), an audit
entry and an ``erase.done`` / ``restrict.done`` event.

A request stays in force for its window (:func:`apply_standing`): a recording
catalogued later (a segment closing, an adopted file, crash recovery, reconcile)
that overlaps it is erased or restricted in the transaction that catalogues it,
audited against the same request reference, so it is never seen ``active``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_agent.core.model import (
    EraseRequest,
    Hold,
    Recording,
    RecState,
    RequestMode,
    iso,
    recording_doc,
)
from edge_agent.core.policy import erase_matches, evaluate_erase, holds_covering
from edge_agent.retention.deletion import (
    DeletionOutcome,
    Doomed,
    delete_recordings,
    mark_deleting,
    record_deleted,
    unlink_marked,
)
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox

__all__ = [
    "Receipt",
    "Standing",
    "StandingVerdict",
    "apply_standing",
    "execute_request",
    "finish_standing",
    "standing_verdict",
]

_MATCH_STATES = (RecState.ACTIVE, RecState.RESTRICTED, RecState.MISSING)


_LINE = ("id", "path", "location", "purpose", "start", "end", "state")


def _rec_line(rec: Recording) -> dict[str, Any]:
    return recording_doc(rec, _LINE)


@dataclass(frozen=True)
class Receipt:
    """What a request did (or, for a dry run, would do), and what it held back and why."""

    ref: str
    mode: RequestMode
    location: str
    start: datetime
    end: datetime
    dry_run: bool
    actor: str
    at: datetime
    matched: tuple[dict[str, Any], ...] = ()
    touched: tuple[dict[str, Any], ...] = ()  # erased or restricted (would be, if dry run)
    held: tuple[dict[str, Any], ...] = ()  # {"id", "holds": [...]}
    failed: tuple[dict[str, Any], ...] = ()  # {"id", "why"}: not erased, still on disk
    blocked: bool = False
    blocking_holds: tuple[str, ...] = ()
    reason: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def status(self) -> str:
        if self.blocked:
            return "blocked"
        if self.failed:
            return "incomplete"
        return "dry_run" if self.dry_run else "done"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "mode": str(self.mode),
            "location": self.location,
            "from": iso(self.start),
            "to": iso(self.end),
            "dry_run": self.dry_run,
            "status": self.status,
            "actor": self.actor,
            "at": iso(self.at),
            "matched_count": len(self.matched),
            "touched_count": len(self.touched),
            "matched": list(self.matched),
            "touched": list(self.touched),
            "held": list(self.held),
            "failed": list(self.failed),
            "blocked": self.blocked,
            "blocking_holds": list(self.blocking_holds),
            "reason": self.reason,
            "notes": list(self.notes),
        }


def execute_request(
    catalog: Catalog,
    storage_root: Path,
    req: EraseRequest,
    *,
    dry_run: bool,
    actor: str,
    now: datetime,
    fsync: bool = True,
) -> Receipt:
    """Evaluate and (unless ``dry_run``) carry out one request; store and return the receipt.

    Raises ValueError for a window whose end is before its start.
    """
    recordings = catalog.recordings.overlapping(
        req.location, req.start, req.end, states=_MATCH_STATES
    )
    decision = evaluate_erase(req, recordings, catalog.holds.list(), now)
    base: dict[str, Any] = {
        "ref": req.ref,
        "mode": req.mode,
        "location": req.location,
        "start": req.start,
        "end": req.end,
        "dry_run": dry_run,
        "actor": actor,
        "at": now,
        "matched": tuple(_rec_line(r) for r in decision.matched),
        "held": tuple({"id": rid, "holds": list(ids)} for rid, ids in decision.held),
    }
    if decision.blocked:
        receipt = Receipt(
            **base,
            blocked=True,
            blocking_holds=decision.blocking_holds,
            reason=decision.reason,
        )
        return _store(catalog, req, receipt, now)
    touched = tuple(_rec_line(r) for r in decision.to_touch)
    if dry_run:
        return _store(catalog, req, Receipt(**base, touched=touched), now)
    if req.mode is RequestMode.RESTRICT:
        receipt = _restrict(catalog, req, decision.to_touch, base, actor, now)
        _late_arrivals(catalog, storage_root, req, decision.matched, actor, now, fsync)
        return receipt
    detail = (
        f"data-subject request {req.ref}: erase {req.location} {iso(req.start)}..{iso(req.end)}"
    )
    outcome = delete_recordings(
        catalog,
        storage_root,
        [Doomed(r, "erase", detail) for r in decision.to_touch],
        actor=actor,
        now=now,
        fsync=fsync,
        from_states=tuple(str(s) for s in _MATCH_STATES),
    )
    done = set(outcome.deleted)
    failed = [{"id": i, "why": why} for i, why in (*outcome.failed, *outcome.skipped)]
    receipt = Receipt(
        **base,
        touched=tuple(line for line in touched if line["id"] in done),
        failed=tuple(failed),
        reason=(
            f"{len(failed)} recording(s) could not be erased; run the request again"
            if failed
            else None
        ),
    )
    receipt = _store(catalog, req, receipt, now)
    _late_arrivals(catalog, storage_root, req, decision.matched, actor, now, fsync)
    return receipt


def _late_arrivals(
    catalog: Catalog,
    storage_root: Path,
    req: EraseRequest,
    matched: tuple[Recording, ...],
    actor: str,
    now: datetime,
    fsync: bool,
) -> None:
    """Recordings catalogued while the request ran: the stored request now covers them."""
    seen = {r.id for r in matched}
    for rec in catalog.recordings.overlapping(
        req.location, req.start, req.end, states=(RecState.ACTIVE,)
    ):
        if rec.id in seen:
            continue
        with catalog.transaction():
            standing = apply_standing(catalog, rec, actor=actor, now=now)
        finish_standing(catalog, storage_root, standing, actor=actor, now=now, fsync=fsync)


def _restrict(
    catalog: Catalog,
    req: EraseRequest,
    to_touch: tuple[Recording, ...],
    base: dict[str, Any],
    actor: str,
    now: datetime,
) -> Receipt:
    audit = AuditLog(catalog)
    outbox = Outbox(catalog)
    touched: list[dict[str, Any]] = []
    with catalog.transaction():
        for rec in to_touch:
            if not catalog.recordings.restrict(
                rec.id, reason=f"data-subject request {req.ref}", at=now
            ):
                continue
            line = _rec_line(rec) | {"state": str(RecState.RESTRICTED)}
            audit.append(
                "recording.restricted",
                actor=actor,
                subject=rec.id,
                data={**line, "request_ref": req.ref},
                ts=now,
            )
            event = {k: v for k, v in line.items() if k != "id"}
            event.update(recording_id=rec.id, request_ref=req.ref)
            outbox.enqueue("recording.restricted", event, ts=now)
            touched.append(line)
        receipt = Receipt(**base, touched=tuple(touched))
        return _store(catalog, req, receipt, now)


def _store(catalog: Catalog, req: EraseRequest, receipt: Receipt, now: datetime) -> Receipt:
    doc = receipt.as_dict()
    summary = {k: v for k, v in doc.items() if k not in ("matched", "touched")}
    summary["touched_ids"] = [line["id"] for line in receipt.touched]
    # A dry run is audited (someone looked) but sends no event: it changed nothing.
    action = f"{req.mode}.previewed" if receipt.dry_run else f"{req.mode}.done"
    with catalog.transaction():
        catalog.requests.add(req, dry_run=receipt.dry_run, receipt=doc, at=now)
        AuditLog(catalog).append(action, actor=receipt.actor, subject=req.ref, data=summary, ts=now)
        if not receipt.dry_run:
            Outbox(catalog).enqueue(action, {"request_ref": req.ref, **summary}, ts=now)
    return receipt


# -- standing requests ---------------------------------------------------------------


@dataclass(frozen=True)
class StandingVerdict:
    """What the requests in force mean for one newly catalogued recording."""

    action: str  # "erase" | "restrict" | "none"
    ref: str | None = None
    held: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (erase ref, hold ids) a hold stopped


def standing_verdict(
    rec: Recording, requests: list[EraseRequest], holds: list[Hold], now: datetime
) -> StandingVerdict:
    """Pure: erase beats restrict; a hold stops an erase (as for a request run now)."""
    erases = [r for r in requests if r.mode is RequestMode.ERASE and erase_matches(r, rec)]
    restricts = [r for r in requests if r.mode is RequestMode.RESTRICT and erase_matches(r, rec)]
    held_by = holds_covering(rec, holds, now) if erases else ()
    if erases and not held_by:
        return StandingVerdict("erase", erases[0].ref)
    held = tuple((r.ref, held_by) for r in erases)
    if restricts and rec.state is RecState.ACTIVE:
        return StandingVerdict("restrict", restricts[0].ref, held)
    return StandingVerdict("none", None, held)


@dataclass(frozen=True)
class Standing:
    """A recording after the requests in force were applied; ``doomed`` awaits its unlink."""

    rec: Recording
    verdict: StandingVerdict
    doomed: tuple[Doomed, ...] = ()


def apply_standing(catalog: Catalog, rec: Recording, *, actor: str, now: datetime) -> Standing:
    """Apply the requests in force to ``rec``, inside the transaction that catalogued it.

    Restricting is done here; an erase marks the row ``deleting`` here and
    :func:`finish_standing` unlinks after the commit (a crash in between is
    finished by ``deletion.finish_interrupted`` at start-up). Every writer of
    new recordings calls this: intake (segments, adopted files, crash
    recovery), reconcile re-adoption, and any future derivative of a recording.
    """
    requests = catalog.requests.standing(rec.location, rec.start, rec.end)
    if not requests:
        return Standing(rec, StandingVerdict("none"))
    verdict = standing_verdict(rec, requests, catalog.holds.list(), now)
    audit, outbox = AuditLog(catalog), Outbox(catalog)
    line = _rec_line(rec)
    for ref, hold_ids in verdict.held:
        audit.append(
            "erase.held",
            actor=actor,
            subject=ref,
            data={"recording_id": rec.id, "request_ref": ref, "holds": list(hold_ids)},
            ts=now,
        )
    if verdict.action == "restrict" and verdict.ref is not None:
        catalog.recordings.restrict(rec.id, reason=f"data-subject request {verdict.ref}", at=now)
        line |= {"state": str(RecState.RESTRICTED)}
        audit.append(
            "recording.restricted",
            actor=actor,
            subject=rec.id,
            data={**line, "request_ref": verdict.ref, "standing": True},
            ts=now,
        )
        event = {k: v for k, v in line.items() if k != "id"}
        event.update(recording_id=rec.id, request_ref=verdict.ref)
        outbox.enqueue("recording.restricted", event, ts=now)
        return Standing(replace(rec, state=RecState.RESTRICTED), verdict)
    if verdict.action == "erase" and verdict.ref is not None:
        detail = f"data-subject request {verdict.ref}: erase on arrival"
        marked = mark_deleting(
            catalog,
            [Doomed(rec, "erase", detail)],
            now=now,
            from_states=tuple(str(s) for s in _MATCH_STATES),
            out=DeletionOutcome(),
        )
        audit.append(
            "erase.applied",
            actor=actor,
            subject=verdict.ref,
            data={**line, "recording_id": rec.id, "request_ref": verdict.ref, "standing": True},
            ts=now,
        )
        if marked:
            return Standing(replace(rec, state=RecState.DELETING), verdict, tuple(marked))
    return Standing(rec, verdict)


def finish_standing(
    catalog: Catalog,
    storage_root: Path,
    standing: Standing,
    *,
    actor: str,
    now: datetime,
    fsync: bool = True,
) -> Recording:
    """After the commit: unlink what :func:`apply_standing` marked, close its row."""
    if not standing.doomed:
        return standing.rec
    unlinked = unlink_marked(storage_root, standing.doomed, fsync=fsync)
    out = record_deleted(catalog, storage_root, unlinked, actor=actor, now=now, fsync=fsync)
    if standing.rec.id in out.deleted:
        return replace(standing.rec, state=RecState.DELETED)
    return standing.rec
