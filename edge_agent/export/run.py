"""Carry out one export: select, check, copy, sign, audit, rename (docs/export.md).

:func:`edge_agent.core.export_plan.plan_export` decides what may go; this
module probes each chosen file for audio (the audio rule checked once more),
copies the files as stored with :class:`ExportWriter`, writes the signed
manifest, records one audit entry and one ``export.created`` event, and only
then gives the export its name. The audit entry comes before the rename: the
bytes are on the target by then, so a crash between the two leaves an
audited export under its temporary name, never an unaudited one.

Blocking throughout (file copies, PyAV, SQLite): the CLI calls it directly;
an async caller must go through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from edge_agent.config.device_key import ensure_device_key, load_device_key
from edge_agent.core.export_plan import WHY, ExportPlan, ExportQuery, audio_refusal, plan_export
from edge_agent.core.model import Recording, iso
from edge_agent.export.manifest import (
    FILES_DIR,
    FORMAT,
    MANIFEST,
    SIGNATURE,
    manifest_bytes,
    public_key_doc,
    sign,
)
from edge_agent.export.writer import ExportError, ExportWriter
from edge_agent.media.media_probe import MediaError, probe
from edge_agent.store import exports as store
from edge_agent.store.catalog import Catalog

# (bytes done, bytes in all, files in all)
ProgressFn = Callable[[int, int, int], None]


@dataclass(frozen=True)
class Operator:
    """Who ran the export, taken before the command switches to the agent's user."""

    uid: int
    user: str
    sudo_user: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "user": self.user, "sudo_user": self.sudo_user}

    @property
    def actor(self) -> str:
        return f"cli:{self.sudo_user or self.user}"


@dataclass(frozen=True)
class ExportRequest:
    query: ExportQuery
    request_ref: str
    reason: str
    out: Path
    operator: Operator
    device_id: str
    storage_root: Path
    state_dir: Path  # where the device's signing key lives
    audio_rooms: Collection[str]
    now: datetime
    dry_run: bool = False


@dataclass
class ExportReceipt:
    request: ExportRequest
    plan: ExportPlan
    status: str = "done"  # done | dry_run | empty
    manifest_sha256: str | None = None
    key_id: str | None = None
    audit_seq: int | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        q = self.request.query
        return {
            "status": self.status,
            "out": str(self.request.out),
            "request_ref": self.request.request_ref,
            "location": q.location,
            "from": iso(q.start),
            "to": iso(q.end),
            "purpose": str(q.purpose) if q.purpose else None,
            "anonymized_only": q.anonymized_only,
            "dry_run": self.request.dry_run,
            "file_count": len(self.plan.chosen),
            "bytes": self.plan.total_bytes,
            "left_out": {str(k): n for k, n in sorted(self.plan.left_out.items())},
            "left_out_why": {str(k): WHY[k] for k in sorted(self.plan.left_out)},
            "manifest_sha256": self.manifest_sha256,
            "key_id": self.key_id,
            "audit_seq": self.audit_seq,
            "files": self.files,
            "notes": self.notes,
        }


def export_name(rec: Recording) -> str:
    """``files/<start>_<id><ext>``: sorts by time, unique by id, keeps the container's suffix."""
    suffix = PurePosixPath(rec.path).suffix.lower()
    if not suffix[1:].isalnum():
        suffix = ""
    stamp = rec.start.strftime("%Y%m%dT%H%M%SZ")
    return f"{FILES_DIR}/{stamp}_{rec.id}{suffix}"


def file_entry(rec: Recording, name: str) -> dict[str, Any]:
    t = rec.tags
    return {
        "id": rec.id,
        "name": name,
        "size": rec.size,
        "sha256": rec.sha256,
        "start": iso(t.start),
        "end": iso(t.end),
        # The deadline travels with the footage: the recipient must delete by then.
        "deadline": iso(rec.deadline) if rec.deadline else None,
        "tags": {
            "location": t.location,
            "purpose": str(t.purpose),
            "site": str(t.site),
            "audio": t.audio,
            "anonymized": t.anonymized,
            "time_source": str(t.time_source),
            "device": t.device,
            "policy_version": t.policy_version,
        },
    }


def _audio_refusals(req: ExportRequest, recs: tuple[Recording, ...]) -> list[str]:
    problems = []
    room = req.query.location in req.audio_rooms
    for rec in recs:
        path = req.storage_root / rec.path
        try:
            has_audio = probe(path).has_audio
        except MediaError as exc:
            problems.append(f"{rec.id}: cannot be probed ({exc.reason}: {exc.message})")
            continue
        why = audio_refusal(room, has_audio)
        if why:
            problems.append(f"{rec.id}: {why}")
    return problems


def run_export(
    cat: Catalog, req: ExportRequest, progress: ProgressFn | None = None
) -> ExportReceipt:
    """The receipt; ExportError (nothing written) when the export cannot be made."""
    q = req.query
    plan = plan_export(store.recordings_in_window(cat, q.location, q.start, q.end), q)
    receipt = ExportReceipt(req, plan)
    receipt.files = [file_entry(r, export_name(r)) for r in plan.chosen]
    if not plan.chosen:
        receipt.status = "empty"
        receipt.notes.append(plan.why_empty() + "; nothing was written")
        return receipt
    refused = _audio_refusals(req, plan.chosen)
    if refused:
        raise ExportError(
            "refused, nothing was written: audio may leave only from audio rooms, and this "
            "could not be confirmed (docs/audio.md): "
            + "; ".join(refused[:5])
            + (f"; and {len(refused) - 5} more" if len(refused) > 5 else "")
        )
    if req.dry_run:
        receipt.status = "dry_run"
        return receipt
    _write(cat, req, receipt, progress)
    return receipt


def _write(
    cat: Catalog, req: ExportRequest, receipt: ExportReceipt, progress: ProgressFn | None
) -> None:
    try:
        ensure_device_key(req.state_dir)
        key = load_device_key(req.state_dir)
    except (OSError, ValueError) as exc:
        raise ExportError(f"device signing key in {req.state_dir} unusable: {exc}") from None
    plan = receipt.plan
    total, n_files = plan.total_bytes, len(plan.chosen)
    writer = ExportWriter(req.out)
    writer.begin(total, n_files)
    done = [0]  # bytes copied, across the copying threads (add_files serialises calls)

    def step(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total, n_files)

    try:
        sources = [
            (e["name"], req.storage_root / r.path, r.size)
            for r, e in zip(plan.chosen, receipt.files, strict=True)
        ]
        digests = writer.add_files(sources, step)
        for rec, digest in zip(plan.chosen, digests, strict=True):
            if digest != rec.sha256:
                raise ExportError(
                    f"{rec.id} ({rec.path}): SHA-256 on disk differs from the catalog's; "
                    "the file changed since it was catalogued (run edge-agent reconcile); "
                    "nothing was written"
                )
        if progress is not None:
            progress(total, total, n_files)
        doc = _manifest(req, receipt, key)
        data = manifest_bytes(doc)
        writer.add_bytes(MANIFEST, data)
        writer.add_bytes(SIGNATURE, sign(data, key))
        receipt.manifest_sha256 = hashlib.sha256(data).hexdigest()
        receipt.key_id = doc["signing_key"]["key_id"]
        receipt.audit_seq = store.record_export(
            cat,
            actor=req.operator.actor,
            subject=req.request_ref,
            data=_audit_data(req, receipt),
            event=_event_data(req, receipt),
            ts=req.now,
        )
    except BaseException:
        writer.abort()
        raise
    writer.commit()


def _manifest(req: ExportRequest, receipt: ExportReceipt, key: Any) -> dict[str, Any]:
    q = req.query
    return {
        "format": FORMAT,
        "device": req.device_id,
        "request_ref": req.request_ref,
        "reason": req.reason,
        "run_by": req.operator.as_dict(),
        "created": iso(req.now),
        "query": {
            "location": q.location,
            "from": iso(q.start),
            "to": iso(q.end),
            "purpose": str(q.purpose) if q.purpose else None,
            "anonymized_only": q.anonymized_only,
        },
        "left_out": {str(k): n for k, n in sorted(receipt.plan.left_out.items())},
        "files": receipt.files,
        "signing_key": public_key_doc(key),
    }


_EVENT_KEYS = (
    "manifest_sha256",
    "request_ref",
    "location",
    "from",
    "to",
    "purpose",
    "anonymized_only",
    "file_count",
    "bytes",
    "left_out",
)


def _event_data(req: ExportRequest, receipt: ExportReceipt) -> dict[str, Any]:
    """The event carries no free text, names or paths: the reason may name a person."""
    data = _audit_data(req, receipt)
    return {k: data[k] for k in _EVENT_KEYS}


def _audit_data(req: ExportRequest, receipt: ExportReceipt) -> dict[str, Any]:
    q = req.query
    return {
        "manifest_sha256": receipt.manifest_sha256,
        "key_id": receipt.key_id,
        "request_ref": req.request_ref,
        "reason": req.reason,
        "location": q.location,
        "from": iso(q.start),
        "to": iso(q.end),
        "purpose": str(q.purpose) if q.purpose else None,
        "anonymized_only": q.anonymized_only,
        "file_count": len(receipt.plan.chosen),
        "bytes": receipt.plan.total_bytes,
        "recording_ids": [r.id for r in receipt.plan.chosen],
        "left_out": {str(k): n for k, n in sorted(receipt.plan.left_out.items())},
        "run_by": req.operator.as_dict(),
        "out": str(req.out),
    }


__all__ = ["ExportError", "ExportReceipt", "ExportRequest", "Operator", "export_name", "run_export"]
