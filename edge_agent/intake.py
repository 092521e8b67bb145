"""The one path by which a file becomes a catalogued recording.

Adopted files (watched folders, ``edge-agent ingest``) and the recorder's own
closed segments both end here, so tagging, the audio rule, the catalog row, the
audit entry and the outbox event are written the same way for every recording.

Crash safety: output is written under a hidden temporary name in its final
folder, fsynced, then renamed; the catalog row, audit entry and event are
written in one transaction after the rename; the source is removed last. A
crash therefore leaves the original, the finished file, or both (reconcile
re-adopts a finished file without a row from its embedded tags), never
neither, and never a row pointing at a half-written file.

Synchronous on purpose: callers run it in a worker thread.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from edge_agent import media
from edge_agent.audit import AuditLog
from edge_agent.catalog import Catalog
from edge_agent.fsutil import fsync_dir, fsync_file
from edge_agent.model import (
    POLICY_VERSION,
    Purpose,
    Recording,
    RecState,
    RetentionPeriods,
    Site,
    Tags,
    TimeSource,
    iso,
)
from edge_agent.outbox_store import Outbox
from edge_agent.policy import adopted_audio_decision, deadline
from edge_agent.timesource import StartChoice, choose_start, parse_segment_name, zone

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
FILE_MODE = 0o640
DIR_MODE = 0o750


class Outcome(StrEnum):
    ADOPTED = "adopted"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    REFUSED = "refused"


@dataclass(frozen=True)
class Origin:
    """Where a file comes from and what it is for (from a watch or a source)."""

    location: str
    site: Site
    audio_room: bool
    signage: bool
    purpose: Purpose
    anonymized: bool = False
    source_id: str | None = None
    wants_audio: bool = True
    recorder_start: datetime | None = None
    name_timezone: str | None = None  # IANA zone of offset-less names (None: UTC)


@dataclass(frozen=True)
class IntakeSettings:
    device_id: str
    storage_root: Path
    quarantine_dir: Path
    periods: RetentionPeriods
    start_floor: datetime = datetime(2020, 1, 1, tzinfo=UTC)
    max_future: timedelta = timedelta(minutes=5)
    fsync: bool = True
    reader_gid: int | None = None
    max_streams: int = 16


@dataclass(frozen=True)
class IntakeResult:
    outcome: Outcome
    source: str
    reason: str | None = None
    recording: Recording | None = None
    audio_removed: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "outcome": str(self.outcome),
            "source": self.source,
            "reason": self.reason,
            "audio_removed": self.audio_removed,
        }
        if self.recording is not None:
            r = self.recording
            doc["recording"] = {
                "id": r.id,
                "path": r.path,
                "location": r.tags.location,
                "purpose": str(r.tags.purpose),
                "site": str(r.tags.site),
                "audio": r.tags.audio,
                "anonymized": r.tags.anonymized,
                "start": iso(r.tags.start),
                "end": iso(r.tags.end),
                "time_source": str(r.tags.time_source),
                "deadline": iso(r.deadline) if r.deadline else None,
                "size": r.size,
            }
        return doc


class Intake:
    """Carries out adoption decisions against one catalog and storage root."""

    def __init__(
        self,
        catalog: Catalog,
        settings: IntakeSettings,
        *,
        clock_trusted: bool = True,
        actor: str = "agent",
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        self.audit = AuditLog(catalog)
        self.outbox = Outbox(catalog)
        self.clock_trusted = clock_trusted
        self.actor = actor

    # -- safety checks -------------------------------------------------------

    def check_path(self, path: Path, *, within: Path | None = None) -> str | None:
        """Why this path must not be touched, or None when it is safe to adopt."""
        if ".." in path.parts:
            return "path_escape: path contains '..'"
        try:
            st = path.lstat()
        except FileNotFoundError:
            return "missing: file disappeared before adoption"
        except OSError as exc:
            return f"unreadable: {exc.strerror}"
        if stat.S_ISLNK(st.st_mode):
            return "symlink: symlinks are refused (they may point outside the storage root)"
        if not stat.S_ISREG(st.st_mode):
            return "not_regular: only regular files are adopted"
        if within is not None:
            try:
                path.resolve().relative_to(within.resolve())
            except ValueError:
                return f"path_escape: {path} is outside {within}"
        if not os.access(path, os.R_OK):
            return "unreadable: permission denied"
        return None

    # -- adoption ------------------------------------------------------------

    def adopt(
        self, path: Path, origin: Origin, now: datetime, *, within: Path | None = None
    ) -> IntakeResult:
        """Adopt one file: probe, audio rule, tag/strip, rename, catalog, audit, event."""
        src = str(path)
        refusal = self.check_path(path, within=within)
        if refusal is not None:
            # Moving a symlink or a path outside our folders is itself unsafe: refuse in place.
            self._audit_only("recording.refused", src, refusal, now)
            return IntakeResult(Outcome.REFUSED, src, refusal)
        try:
            source_sha = media.sha256_file(path)
        except OSError as exc:
            reason = f"unreadable: {exc.strerror or exc}"
            return self.quarantine(path, reason, now)
        existing = self.catalog.find_by_source_sha256(source_sha)
        if existing is not None:
            return self._drop_duplicate(path, existing, now)
        try:
            probe = media.probe(path, max_streams=self.settings.max_streams)
            video_packets = media.count_packets(path, "video")
        except media.MediaError as exc:
            return self.quarantine(path, f"{exc.reason}: {exc.message}", now)

        st = path.stat()
        start_choice = self._choose_start(path, origin, probe.creation_time, st.st_mtime, now)
        duration = probe.duration or 0.0
        keep_audio = adopted_audio_decision(
            probe.has_audio and origin.wants_audio, origin.audio_room, origin.signage
        ).keep and media.can_keep_audio(probe)
        rec_id = uuid.uuid4().hex
        tags = Tags(
            location=origin.location,
            purpose=origin.purpose,
            site=origin.site,
            audio=keep_audio and probe.has_audio,
            anonymized=origin.anonymized,
            start=start_choice.start,
            end=start_choice.start + timedelta(seconds=duration),
            time_source=start_choice.source,
            device=self.settings.device_id,
            policy_version=POLICY_VERSION,
        )
        container = media.output_container_for(probe, drop_audio=not keep_audio)
        final = self.final_path(tags, rec_id, path.stem, container)
        tmp = final.with_name(f"{PARTIAL_PREFIX}{final.name}")
        file_tags = media.encode_tags(tags, recording_id=rec_id, source_sha256=source_sha)
        mux_tags = dict(file_tags)
        if probe.creation_time is None:
            # TS and some camera files carry none; keep the chosen start inside the file.
            # Muxers reformat it, so it is not part of what verify compares.
            mux_tags["creation_time"] = iso(tags.start)
        try:
            media.remux(path, tmp, tags=mux_tags, drop_audio=not keep_audio, container=container)
            media.verify(probe, video_packets, tmp, expect_audio=tags.audio, tags=file_tags)
        except media.MediaError as exc:
            tmp.unlink(missing_ok=True)
            if exc.reason == "write_failed":
                # Disk full or I/O error on our side: the file is fine, retry later.
                raise IntakeIOError(f"cannot write {tmp}: {exc}") from exc
            return self.quarantine(path, f"{exc.reason}: {exc.message}", now)
        except OSError as exc:
            # Disk full or similar: the original stays where it is and is retried later.
            tmp.unlink(missing_ok=True)
            raise IntakeIOError(f"cannot write {tmp}: {exc}") from exc
        rec = self._install(
            tmp,
            final,
            tags,
            rec_id,
            source_sha,
            origin,
            now,
            extra={"audio_removed": probe.has_audio and not keep_audio, "from": src},
        )
        self._remove_source(path)
        return IntakeResult(
            Outcome.ADOPTED, src, recording=rec, audio_removed=probe.has_audio and not keep_audio
        )

    def register_segment(
        self, path: Path, tags: Tags, rec_id: str, origin: Origin, now: datetime
    ) -> Recording:
        """Catalogue a closed recorder segment that already carries its tags.

        The recorder wrote it under a temporary name in its final folder; the
        file is not rewritten a second time.
        """
        sha = media.sha256_file(path)
        final = path.with_name(path.name.removeprefix(PARTIAL_PREFIX))
        return self._install(path, final, tags, rec_id, sha, origin, now, extra={}, file_sha=sha)

    # -- internals -----------------------------------------------------------

    def _choose_start(
        self,
        path: Path,
        origin: Origin,
        creation_time: datetime | None,
        mtime: float,
        now: datetime,
    ) -> StartChoice:
        tz = zone(origin.name_timezone) if origin.name_timezone else None
        recorder = origin.recorder_start or parse_segment_name(path.name, tz)
        candidates = [
            (TimeSource.RECORDER, recorder),
            (TimeSource.CREATION_TIME, creation_time),
            (TimeSource.MTIME, datetime.fromtimestamp(mtime, UTC)),
        ]
        return choose_start(
            candidates, now, floor=self.settings.start_floor, max_future=self.settings.max_future
        )

    def final_path(self, tags: Tags, rec_id: str, stem: str, container: str) -> Path:
        day = tags.start.astimezone(UTC)
        folder = (
            self.settings.storage_root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / tags.location
        )
        safe_stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80]
        name = f"{day:%Y%m%dT%H%M%SZ}_{safe_stem}_{rec_id[:8]}.{container}"
        self._make_dirs(folder)
        return folder / name

    def _make_dirs(self, folder: Path) -> None:
        root = self.settings.storage_root
        missing = []
        p = folder
        while p != root and not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(mode=DIR_MODE, exist_ok=True)
            if self.settings.reader_gid is not None:
                os.chown(d, -1, self.settings.reader_gid)
            if self.settings.fsync:
                fsync_dir(d.parent)

    def _install(
        self,
        tmp: Path,
        final: Path,
        tags: Tags,
        rec_id: str,
        source_sha: str,
        origin: Origin,
        now: datetime,
        *,
        extra: dict[str, object],
        file_sha: str | None = None,
    ) -> Recording:
        os.chmod(tmp, FILE_MODE)
        if self.settings.reader_gid is not None:
            os.chown(tmp, -1, self.settings.reader_gid)
        if self.settings.fsync:
            fsync_file(tmp)
        size = tmp.stat().st_size
        # A recorder segment is its own source: its hash is already known.
        sha = file_sha or media.sha256_file(tmp)
        os.rename(tmp, final)
        if self.settings.fsync:
            fsync_dir(final.parent)
        trusted = self.clock_trusted and tags.time_source is not TimeSource.UNTRUSTED
        dl = deadline(tags.purpose, tags.site, tags.anonymized, tags.start, self.settings.periods)
        rec = Recording(
            id=rec_id,
            path=str(final.relative_to(self.settings.storage_root)),
            tags=tags,
            size=size,
            sha256=sha,
            state=RecState.ACTIVE,
            deadline=dl if trusted else None,
            source_id=origin.source_id,
            source_sha256=source_sha,
        )
        event = {
            "recording_id": rec.id,
            "path": rec.path,
            "location": tags.location,
            "purpose": str(tags.purpose),
            "site": str(tags.site),
            "audio": tags.audio,
            "start": iso(tags.start),
            "end": iso(tags.end),
            "time_source": str(tags.time_source),
            "deadline": iso(dl) if (dl and trusted) else None,
            "size": size,
        }
        with self.catalog.transaction():
            self.catalog.add_recording(rec)
            self.audit.append(
                "recording.added", actor=self.actor, subject=rec.id, data={**event, **extra}, ts=now
            )
            self.outbox.enqueue("recording.added", event, ts=now)
            if extra.get("audio_removed"):
                self.outbox.enqueue(
                    "recording.audio_removed",
                    {
                        "recording_id": rec.id,
                        "location": tags.location,
                        "reason": "not an audio room",
                    },
                    ts=now,
                )
        log.info("adopted %s as %s (%s)", extra.get("from", final.name), rec.id, rec.path)
        return rec

    def _remove_source(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        if self.settings.fsync:
            fsync_dir(path.parent)

    def _drop_duplicate(self, path: Path, existing: Recording, now: datetime) -> IntakeResult:
        reason = f"duplicate: same content as recording {existing.id}"
        with self.catalog.transaction():
            self.audit.append(
                "recording.duplicate",
                actor=self.actor,
                subject=existing.id,
                data={"source": str(path)},
                ts=now,
            )
        # Byte-identical to a catalogued recording: a kept copy would escape retention.
        self._remove_source(path)
        return IntakeResult(Outcome.DUPLICATE, str(path), reason, recording=existing)

    def quarantine(self, path: Path, reason: str, now: datetime) -> IntakeResult:
        qdir = self.settings.quarantine_dir
        qdir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        safe = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in path.name)[:120]
        dest = qdir / f"{stamp}_{safe}"
        reason_doc = {"source": str(path), "reason": reason, "ts": iso(now)}
        try:
            shutil.move(str(path), dest)
        except OSError as exc:
            reason = f"{reason}; could not move to quarantine: {exc.strerror or exc}"
            self._audit_only("recording.quarantine_failed", str(path), reason, now)
            return IntakeResult(Outcome.REFUSED, str(path), reason)
        with open(dest.with_name(dest.name + ".reason.json"), "w", encoding="utf-8") as fh:
            json.dump(reason_doc, fh, indent=2)
            fh.write("\n")
        if self.settings.fsync:
            fsync_dir(qdir)
        self._audit_only("recording.quarantined", str(path), reason, now, extra={"to": str(dest)})
        log.warning("quarantined %s: %s", path, reason)
        return IntakeResult(Outcome.QUARANTINED, str(path), reason, notes=(str(dest),))

    def _audit_only(
        self,
        action: str,
        source: str,
        reason: str,
        now: datetime,
        *,
        extra: dict[str, object] | None = None,
    ) -> None:
        data: dict[str, object] = {"source": source, "reason": reason, **(extra or {})}
        with self.catalog.transaction():
            self.audit.append(action, actor=self.actor, subject=None, data=data, ts=now)
            self.outbox.enqueue(action, data, ts=now)


class IntakeIOError(Exception):
    """Storage failed (disk full, I/O error); the source is left untouched for a retry."""
