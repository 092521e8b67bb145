"""One anonymization job, from the catalog's job row to a catalogued derivative.

docs/anonymization.md, "jobs": the derivative D of recording R is written by
the engine under a hidden staging name in R's day folder (the engine itself
writes ``.<name>.partial`` first), given its tags (with the verification
figures) by a stream copy, then renamed to the intake's layout
(``Intake.final_path``) and catalogued in one transaction with its audit entry
and ``recording.anonymized`` event. Every file of an interrupted attempt is
known from the job row (its staging path and derivative id) and removed
before the next attempt, so a partial D is never catalogued and never left
behind. R is only read.

Blocking: call :func:`run_job` from a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.config.config import Anonymize, Config
from edge_agent.core.anon_policy import original_verdict
from edge_agent.core.model import Recording, RecState, Tags, recording_doc
from edge_agent.core.policy import deadline
from edge_agent.host.fsutil import FILE_MODE, fsync_dir, fsync_file
from edge_agent.intake.intake import Intake
from edge_agent.intake.runtime import intake_settings
from edge_agent.media import media
from edge_agent.retention.erasure import apply_standing, finish_standing
from edge_agent.store.anon_jobs import AnonJob
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox

if TYPE_CHECKING:
    from edge_agent.anonymize.settings import AnonResult, AnonSettings
    from edge_agent.retention.storage_gate import StorageGate

log = logging.getLogger(__name__)

STAGING_PREFIX = ".anon-"
RESIDUALS_TAG = media.TAG_PREFIX + "anon_residuals"
VERIFIED_TAG = media.TAG_PREFIX + "anon_verified"
DERIVED_TAG = media.TAG_PREFIX + "derived_from"
_EVENT_FIELDS = ("id", "path", "location", "purpose", "site", "anonymized", "start", "end",
                 "deadline", "size")  # fmt: skip

Cancel = Callable[[], bool]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class JobOutcome:
    job_id: int
    recording_id: str
    state: str  # "done" | "failed" | "queued" (cancelled: runs again later) | "busy"
    reason: str
    derivative: Recording | None = None
    verified: bool = False
    result: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job": self.job_id,
            "recording_id": self.recording_id,
            "state": self.state,
            "reason": self.reason,
            "verified": self.verified,
        }
        if self.derivative is not None:
            out["derivative"] = recording_doc(self.derivative, _EVENT_FIELDS)
        if self.result is not None:
            out["residuals"] = self.result.get("residuals", {})
            out["frames"] = self.result.get("frames", 0)
            out["fps"] = self.result.get("fps", 0.0)
        return out


def anon_settings(a: Anonymize, masks: Any, tags: dict[str, str]) -> AnonSettings:
    """The engine's settings from ``[anonymize]``, the source's masks and the file tags."""
    from edge_agent.anonymize.settings import AnonSettings

    return AnonSettings(
        faces=a.faces,
        face_threshold=a.face_threshold,
        face_verify_threshold=a.face_verify_threshold,
        plates=a.plates,
        plate_threshold=a.plate_threshold,
        plate_verify_threshold=a.plate_verify_threshold,
        detect_every=a.every,
        detect_width=a.detect_width,
        fill=a.fill,
        masks=tuple(tuple((float(x), float(y)) for x, y in poly) for poly in masks),
        threads=a.threads,
        residual_limit=a.residual_limit,
        tags=tags,
    )


def source_masks(cfg: Config, rec: Recording) -> tuple[Any, ...]:
    """The privacy masks of ``rec``'s source: always applied to its derivatives."""
    if rec.source_id is None:
        return ()
    for src in cfg.sources:
        if src.id == rec.source_id:
            return tuple(src.privacy_masks)
    return ()


def _paths(root: Path, staging_rel: str) -> list[Path]:
    """Every file one attempt may have left: staging, the engine's partial, the
    retagged copy and the final name."""
    staging = root / staging_rel
    final = staging.with_name(staging.name.removeprefix(STAGING_PREFIX))
    return [
        staging.with_name(f".{staging.name}.partial"),
        staging,
        staging.with_name(staging.name + ".tagged"),
        final,
    ]


def clean_attempt(catalog: Catalog, root: Path, job: AnonJob) -> bool:
    """Remove what an interrupted attempt left; True when its derivative is catalogued
    (the crash came after the commit: the job is done)."""
    if job.derivative_id and catalog.recordings.get(job.derivative_id) is not None:
        return True
    if job.staging:
        removed = False
        for p in _paths(root, job.staging):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed = True
                log.info("removed %s left by an interrupted anonymization", p.name)
        if removed:
            fsync_dir((root / job.staging).parent)
    return False


def _fail(catalog: Catalog, job: AnonJob, reason: str, now: datetime, actor: str) -> JobOutcome:
    with catalog.transaction():
        catalog.anon_jobs.finish(job.id, "failed", reason=reason)
        AuditLog(catalog).append(
            "anonymize.failed",
            actor=actor,
            subject=job.recording_id,
            data={"job": job.id, "recording_id": job.recording_id, "reason": reason},
            ts=now,
        )
    return JobOutcome(job.id, job.recording_id, "failed", reason)


@contextlib.contextmanager
def _job_lock(catalog: Catalog, job_id: int) -> Iterator[bool]:
    """One byte per job in a lock file beside the catalog: the daemon's worker and
    an `edge-agent anonymize` never run the same job at once. A record lock dies
    with its process, so a SIGKILLed job is free to resume at once."""
    path = catalog.path.with_name(catalog.path.name + ".anon-lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, job_id)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, job_id)
    finally:
        os.close(fd)


def run_job(
    catalog: Catalog,
    cfg: Config,
    job_id: int,
    **kw: Any,
) -> JobOutcome:
    """Run (or resume) one job to ``done`` or ``failed``; never raises for bad input.

    ``state == "busy"`` when another process runs this job now. Keywords: see
    :func:`_run_job`.
    """
    with _job_lock(catalog, job_id) as mine:
        if not mine:
            job = catalog.anon_jobs.get(job_id)
            return JobOutcome(job.id, job.recording_id, "busy", "running in another process")
        return _run_job(catalog, cfg, job_id, **kw)


def _run_job(
    catalog: Catalog,
    cfg: Config,
    job_id: int,
    *,
    actor: str = "agent",
    cancel: Cancel = lambda: False,
    progress: Progress | None = None,
    gate: StorageGate | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> JobOutcome:
    from edge_agent.anonymize.engine import anonymize_file

    job = catalog.anon_jobs.get(job_id)
    root = Path(cfg.storage.root)
    if job.state in ("done", "failed"):
        return JobOutcome(job.id, job.recording_id, job.state, job.reason or "")
    if clean_attempt(catalog, root, job):
        catalog.anon_jobs.finish(job.id, "done", reason="catalogued before an interruption")
        d = catalog.recordings.get(job.derivative_id or "")
        return JobOutcome(job.id, job.recording_id, "done", "catalogued", d)
    rec = catalog.recordings.get(job.recording_id)
    why = original_verdict(rec, now())
    if why is not None or rec is None:
        return _fail(catalog, job, why or "original not in the catalog", now(), actor)
    if job.attempts >= cfg.anonymize.max_attempts:
        return _fail(catalog, job, f"gave up after {job.attempts} attempts", now(), actor)

    intake = Intake(catalog, intake_settings(cfg), actor=actor)
    intake.gate = gate
    d_id = uuid.uuid4().hex
    base = replace(rec.tags, audio=False, anonymized=False)
    final = intake.final_path(base, d_id, f"anon_{Path(rec.path).stem}", "mp4")
    staging = final.with_name(STAGING_PREFIX + final.name)
    job = catalog.anon_jobs.start(
        job.id, derivative_id=d_id, staging=str(staging.relative_to(root))
    )
    src = root / rec.path
    settings = anon_settings(
        cfg.anonymize, source_masks(cfg, rec), {media.TAG_PREFIX + "anonymized": "true"}
    )
    result = anonymize_file(src, staging, settings, cancel=cancel, progress=progress)
    if result.status == "cancelled":
        clean_attempt(catalog, root, job)
        catalog.anon_jobs.requeue(job.id, "paused")
        return JobOutcome(job.id, job.recording_id, "queued", "paused")
    if result.status != "ok":
        clean_attempt(catalog, root, job)
        return _fail(catalog, job, f"anonymization failed: {result.reason}", now(), actor)
    try:
        return _place(catalog, cfg, intake, job, rec, base, staging, final, result, actor, now())
    except (OSError, media.MediaError) as exc:
        clean_attempt(catalog, root, job)
        reason = getattr(exc, "strerror", None) or str(exc)
        return _fail(catalog, job, f"cannot place the derivative: {reason}", now(), actor)


def _place(
    catalog: Catalog,
    cfg: Config,
    intake: Intake,
    job: AnonJob,
    rec: Recording,
    base: Tags,
    staging: Path,
    final: Path,
    result: AnonResult,
    actor: str,
    at: datetime,
) -> JobOutcome:
    d_id = job.derivative_id or ""
    verified = result.verified
    # Only a verified D is exempt; otherwise it keeps R's deadline (docs/retention-policy.md).
    tags = replace(base, anonymized=verified)
    periods = cfg.retention_periods()
    dl = deadline(tags.purpose, tags.site, True, tags.start, periods) if verified else rec.deadline
    figures = {
        "verified": verified,
        "reason": result.reason,
        "residuals": result.residuals,
        "discounted": result.discounted,
        "residual_limit": cfg.anonymize.residual_limit,
        "detections": result.detections,
        "frames": result.frames,
        "masks": len(source_masks(cfg, rec)),
    }
    file_tags = media.encode_tags(tags, recording_id=d_id)
    file_tags[DERIVED_TAG] = rec.id
    file_tags[VERIFIED_TAG] = "true" if verified else "false"
    file_tags[RESIDUALS_TAG] = ",".join(f"{k}={v}" for k, v in sorted(result.residuals.items()))
    tagged = staging.with_name(staging.name + ".tagged")
    media.remux(staging, tagged, tags=file_tags, drop_audio=True, container="mp4")
    os.chmod(tagged, FILE_MODE)
    fsync_file(tagged)
    size = tagged.stat().st_size
    sha = media.sha256_file(tagged)
    staging.unlink()
    d = Recording(
        id=d_id,
        path=str(final.relative_to(cfg.storage.root)),
        tags=tags,
        size=size,
        sha256=sha,
        state=RecState.ACTIVE,
        deadline=dl,
        source_id=rec.source_id,
        derived_from=rec.id,
    )
    event: dict[str, Any] = recording_doc(d, _EVENT_FIELDS, id_key="recording_id")
    event.update(derived_from=rec.id, verified=verified, residuals=result.residuals)
    if not verified:
        event["not_exempt_reason"] = result.reason
    os.rename(tagged, final)
    fsync_dir(final.parent)
    try:
        with catalog.transaction():
            # The deadline wins: R may have been deleted while the job ran.
            now_rec = catalog.recordings.get(rec.id)
            gone = original_verdict(now_rec, at)
            if gone is not None:
                raise _OriginalGone(gone)
            catalog.recordings.add(d)
            catalog.recordings.set_derivation(d_id, derived_from=rec.id, anonymization=figures)
            catalog.anon_jobs.finish(job.id, "done", reason=result.reason, result=result.to_json())
            AuditLog(catalog).append(
                "recording.anonymized", actor=actor, subject=d_id,
                data={**event, "job": job.id, "figures": figures}, ts=at,
            )  # fmt: skip
            Outbox(catalog).enqueue("recording.anonymized", event, ts=at)
            standing = apply_standing(catalog, d, actor=actor, now=at)
    except _OriginalGone as exc:
        final.unlink(missing_ok=True)
        fsync_dir(final.parent)
        return _fail(catalog, job, str(exc), at, actor)
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    d = finish_standing(catalog, Path(cfg.storage.root), standing, actor=actor, now=at)
    log.info("anonymized %s as %s (verified=%s)", rec.id, d_id, verified)
    return JobOutcome(job.id, rec.id, "done", result.reason, d, verified, result.to_json())


class _OriginalGone(Exception):
    pass
