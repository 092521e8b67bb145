"""The one path by which a file becomes a catalogued recording.

Adopted files (watched folders, ``edge-agent ingest``) and the recorder's own
closed segments both end here, so tagging, the audio rule, the catalog row, the
audit entry and the outbox event are written the same way for every recording.

Crash safety: output is written under a hidden temporary name in its final
folder, fsynced, then renamed; the catalog row, audit entry and event are
written in one transaction after the rename; the source is removed last. A
crash therefore leaves the original, the finished file, or both (reconcile
re-adopts a finished file without a row from its embedded tags), never
neither, and never a row pointing at a half-written file. A failure that is
not a crash (the catalog refuses the row, a full disk) removes the copy again
in the same step: the source is still there to be retried, and storage never
holds a file that no row, and so no deadline, governs.

The source is opened once, by descriptor (:mod:`edge_agent.intake.intake_source`):
what is hashed, probed and remuxed is the inode that was checked. Names from
the disk reach catalog, audit, events and logs only as
:func:`~edge_agent.intake.intake_source.display_name` text.

Synchronous on purpose: callers run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.core.model import POLICY_VERSION, Recording, Tags, iso
from edge_agent.core.policy import adopted_audio_decision
from edge_agent.core.timesource import recording_end
from edge_agent.host.fsutil import fsync_dir
from edge_agent.intake.intake_source import Source, display_name, first_look, open_source
from edge_agent.intake.intake_types import (
    DIR_MODE,
    FILE_MODE,
    PARTIAL_PREFIX,
    Examined,
    IntakeIOError,
    IntakeResult,
    IntakeSettings,
    Origin,
    Outcome,
    Written,
    _transient,
)
from edge_agent.intake.placement import (
    added_event,
    choose_recording_start,
    final_path,
    move_into_place,
    new_recording,
    seal_file,
)
from edge_agent.intake.quarantine import move_aside, still_there
from edge_agent.intake.segments import Segment, file_segments
from edge_agent.media import media
from edge_agent.retention.erasure import Standing, apply_standing, finish_standing
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox

if TYPE_CHECKING:
    from edge_agent.media.media_worker import MediaWorker
    from edge_agent.retention.storage_gate import StorageGate

log = logging.getLogger(__name__)

# The types moved to intake_types.py; callers keep importing them from here.
__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "PARTIAL_PREFIX",
    "Examined",
    "Intake",
    "IntakeIOError",
    "IntakeResult",
    "IntakeSettings",
    "Origin",
    "Outcome",
    "Segment",
    "Written",
]


def _tags_differ(
    start: datetime, header: float | None, told: media.PacketScan, read: media.PacketScan
) -> bool:
    """Whether the packets as read give other tags (end, truncated) than as told."""
    if told.truncated(header) != read.truncated(header):
        return True
    try:
        return recording_end(start, told.seconds) != recording_end(start, read.seconds)
    except ValueError:
        return True


class Intake:
    """Carries out adoption decisions against one catalog and storage root."""

    # The running daemon's (edge_agent.retention.storage_gate): nothing is written to a storage
    # root that is not the disk the agent started on, or that fails. None in the CLI.
    gate: StorageGate | None = None
    # The running daemon's (edge_agent.media.media_worker): files from outside are
    # probed and remuxed in a child process, so one that crashes or hangs FFmpeg
    # costs a verdict, not the daemon. None: in this process (the CLI, tests).
    media_worker: MediaWorker | None = None

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
        """A cheap first look by name; :func:`open_source` decides on the descriptor."""
        return first_look(path)

    # -- adoption ------------------------------------------------------------

    def adopt(
        self,
        path: Path,
        origin: Origin,
        now: datetime,
        *,
        within: Path | None = None,
        expect: tuple[int, int] | None = None,
    ) -> IntakeResult:
        """Adopt one file: probe, audio rule, tag/strip, rename, catalog, audit, event."""
        found = self.examine(path, origin, now, within=within, expect=expect)
        if isinstance(found, IntakeResult):
            return found
        try:
            return self.complete(found, now)
        finally:
            found.close()

    def examine(
        self,
        path: Path,
        origin: Origin,
        now: datetime,
        *,
        within: Path | None = None,
        expect: tuple[int, int] | None = None,
    ) -> Examined | IntakeResult:
        """Open once, hash, probe and scan the packets; only reads (and refusals).

        The slow part of an adoption, so a watched folder runs it outside the
        lock all folders share. Raises :class:`SourceChanged` when ``expect``
        no longer matches. The caller closes the result.
        """
        shown = display_name(path)
        refusal = self.check_path(path, within=within)
        try:
            opened = open_source(path, within=within, expect=expect) if refusal is None else refusal
        except OSError as exc:  # out of descriptors or memory: retry later
            raise IntakeIOError(f"cannot open {shown}: {exc.strerror or exc}") from exc
        if isinstance(opened, str):
            # Moving a symlink or a path outside our folders is itself unsafe: refuse in place.
            self._audit_only("recording.refused", shown, opened, now)
            return IntakeResult(Outcome.REFUSED, shown, opened)
        try:
            sha = opened.sha256()
            # An MP4's scan is predicted from its index and measured by the remux.
            probe, scan = self._probe_and_scan(opened, predict=True)
        except OSError as exc:
            if _transient(exc):
                opened.close()
                raise IntakeIOError(f"cannot read {shown}: {exc.strerror or exc}") from exc
            return self._quarantine_open(opened, f"unreadable: {exc.strerror or exc}", now)
        except media.MediaError as exc:
            if _transient(exc.__cause__):
                opened.close()
                raise IntakeIOError(f"cannot read {shown}: {exc.message}") from exc
            return self._quarantine_open(opened, f"{exc.reason}: {exc.message}", now)
        except BaseException:
            opened.close()
            raise
        return Examined(opened, origin, sha, probe, scan)

    def complete(self, ex: Examined, now: datetime) -> IntakeResult:
        """:meth:`write` then :meth:`commit` (closes ``ex``)."""
        written = self.write(ex, now)
        if isinstance(written, IntakeResult):
            return written
        try:
            self.seal(written)
        except BaseException:
            written.discard()
            raise
        result = self.commit(written, now)
        if result.outcome is Outcome.ADOPTED:
            self.release(written)
        return result

    def write(self, ex: Examined, now: datetime) -> Written | IntakeResult:
        """Decide the tags, then remux and verify the copy under its temporary name:
        the slow part of :meth:`complete`, which writes nothing to the catalog but a
        quarantine's audit entry, so a watched folder runs it outside the lock all
        folders share. A :class:`Written` owns ``ex``; any other outcome closes it."""
        try:
            written = self._write(ex, now)
        except BaseException:
            ex.close()
            raise
        if isinstance(written, IntakeResult):
            ex.close()
        return written

    def _write(self, ex: Examined, now: datetime) -> Written | IntakeResult:
        self._check_storage()
        src, origin, probe = ex.source, ex.origin, ex.probe
        # Checked again under the lock by commit(); this one only spares the remux.
        existing = self.catalog.recordings.find_by_source_sha256(ex.source_sha)
        if existing is not None:
            return self._drop_duplicate(src, existing, now)
        start_choice = choose_recording_start(
            self.settings, src.path, origin, probe.creation_time, src.st, now
        )
        keep_audio = adopted_audio_decision(
            probe.has_audio and origin.wants_audio, origin.audio_room, origin.signage
        ).keep and media.can_keep_audio(probe)
        rec_id = uuid.uuid4().hex
        container = media.output_container_for(probe, drop_audio=not keep_audio)
        scan = ex.scan
        if not scan.measured:
            try:
                recording_end(start_choice.start, scan.seconds)
            except ValueError:
                # An index that claims an absurd length: judge the packets themselves.
                read = self._measure(src)
                if isinstance(read, str):
                    return self._quarantine_src(src, read, now)
                scan = read
        while True:
            try:
                # The end is where the packets end, not what the header claims.
                end = recording_end(start_choice.start, scan.seconds)
            except ValueError as exc:
                return self._quarantine_src(src, f"{media.Reason.ABSURD_METADATA}: {exc}", now)
            truncated = scan.truncated(probe.duration)
            tags = Tags(
                location=origin.location,
                purpose=origin.purpose,
                site=origin.site,
                audio=keep_audio and probe.has_audio,
                anonymized=origin.anonymized,
                start=start_choice.start,
                end=end,
                time_source=start_choice.source,
                device=self.settings.device_id,
                policy_version=POLICY_VERSION,
            )
            final = self.final_path(tags, rec_id, src.path.stem, container)
            tmp = final.with_name(f"{PARTIAL_PREFIX}{final.name}")
            file_tags = media.encode_tags(tags, recording_id=rec_id, source_sha256=ex.source_sha)
            if truncated:
                file_tags[media.TRUNCATED_TAG] = "true"
            mux_tags = dict(file_tags)
            if probe.creation_time is None:
                # TS and some camera files carry none; keep the chosen start inside the
                # file. Muxers reformat it, so it is not part of what verify compares.
                mux_tags["creation_time"] = iso(tags.start)
            try:
                made = self._remux(
                    src, tmp, tags=mux_tags, drop_audio=not keep_audio,
                    container=container, scan=not scan.measured,
                )  # fmt: skip
                if made.scan is not None:
                    # The tags above came from the index; the packets have the last
                    # word. Rarely they disagree: write the copy again with theirs.
                    measured, scan = scan, made.scan
                    if _tags_differ(start_choice.start, probe.duration, measured, scan):
                        log.info("%s: packets differ from the index; writing again", src.shown)
                        tmp.unlink(missing_ok=True)
                        continue
                media.verify(
                    probe, scan.video_packets, tmp, expect_audio=tags.audio, tags=file_tags
                )
            except media.MediaError as exc:
                tmp.unlink(missing_ok=True)
                if exc.reason == "write_failed":
                    # Disk full or I/O error on our side: the file is fine, retry later.
                    raise IntakeIOError(f"cannot write {tmp}: {exc}") from exc
                return self._quarantine_src(src, f"{exc.reason}: {exc.message}", now)
            except OSError as exc:
                # Disk full or similar: the original stays where it is, retried later.
                tmp.unlink(missing_ok=True)
                raise IntakeIOError(f"cannot write {tmp}: {exc}") from exc
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            break
        audio_removed = probe.has_audio and not keep_audio
        extra: dict[str, object] = {"audio_removed": audio_removed, "from": src.shown}
        if truncated:
            extra["header_seconds"] = probe.duration
        return Written(ex, tmp, final, tags, rec_id, truncated, audio_removed, extra)

    def _probe_and_scan(
        self, src: Source, *, predict: bool
    ) -> tuple[media.ProbeResult, media.PacketScan]:
        worker = self.media_worker
        if worker is None:
            return media.probe_and_scan(
                src.proc, max_streams=self.settings.max_streams, predict=predict
            )
        return worker.probe_and_scan(
            src.fd, src.proc, max_streams=self.settings.max_streams, predict=predict
        )

    def _remux(
        self, src: Source, tmp: Path, *, tags: dict[str, str], drop_audio: bool,
        container: str, scan: bool,
    ) -> media.RemuxResult:  # fmt: skip
        worker = self.media_worker
        if worker is None:
            return media.remux(
                src.proc, tmp, tags=tags, drop_audio=drop_audio, container=container, scan=scan
            )
        return worker.remux(
            src.fd, tmp, tags=tags, drop_audio=drop_audio, container=container, scan=scan
        )

    def _measure(self, src: Source) -> media.PacketScan | str:
        """The source's packets read on their own; a quarantine reason if they cannot be."""
        try:
            if self.media_worker is not None:
                return self._probe_and_scan(src, predict=False)[1]
            return media.scan_packets(src.proc)
        except media.MediaError as exc:
            if _transient(exc.__cause__):
                raise IntakeIOError(f"cannot read {src.shown}: {exc.message}") from exc
            return f"{exc.reason}: {exc.message}"

    def seal(self, w: Written) -> None:
        """Mode, fsync and hash of the copy (the third stage of a watched folder's
        pipeline, see :mod:`edge_agent.intake.adopter`); leaves ``w`` open."""
        try:
            w.sealed = seal_file(w.tmp, self.settings, None)
        except OSError as exc:
            raise IntakeIOError(f"cannot write {w.tmp}: {exc}") from exc

    def commit(self, w: Written, now: datetime) -> IntakeResult:
        """Duplicate check, rename into place and catalogue: the short step a watched
        folder runs under the shared lock, once :meth:`seal` has sealed ``w``. An
        adopted file's source is removed by :meth:`release`; every other outcome
        closes ``w`` here."""
        src = w.examined.source
        try:
            if w.sealed is None:
                raise ValueError("commit() of a copy that seal() has not sealed")
            self._check_storage()
            existing = self.catalog.recordings.find_by_source_sha256(w.examined.source_sha)
            if existing is not None:
                w.tmp.unlink(missing_ok=True)
                result = self._drop_duplicate(src, existing, now)
                w.discard()
                return result
            try:
                rec = self._install(
                    w.tmp, w.final, w.tags, w.rec_id, w.examined.source_sha,
                    w.examined.origin, now, extra=w.extra, truncated=w.truncated,
                    sealed=w.sealed,
                )  # fmt: skip
            except (OSError, sqlite3.OperationalError) as exc:
                # The copy is already gone again (_install); the source waits for a retry.
                raise IntakeIOError(f"cannot catalogue {src.shown}: {exc}") from exc
        except BaseException:
            w.discard()
            raise
        notes = ("truncated",) if w.truncated else ()
        return IntakeResult(
            Outcome.ADOPTED, src.shown, recording=rec, audio_removed=w.audio_removed, notes=notes
        )

    def release(self, w: Written) -> None:
        """Remove an adopted source and close it: last, after :meth:`commit`, and
        outside the shared lock (freeing its blocks takes a while on some disks).
        A crash before this leaves the source, which comes back as a duplicate."""
        try:
            self._remove_source(w.examined.source)
        finally:
            w.discard()  # after the rename the temporary name is gone: only closes

    def _check_storage(self) -> None:
        if self.gate is not None:
            try:
                self.gate.check()
            except OSError as exc:  # the source stays where it is, retried later
                raise IntakeIOError(f"storage unavailable: {exc.strerror}") from exc

    def register_segment(
        self, path: Path, tags: Tags, rec_id: str, origin: Origin, now: datetime
    ) -> Recording:
        """Catalogue a closed recorder segment that already carries its tags.

        The recorder wrote it under a temporary name in its final folder; the
        file is not rewritten a second time. It is the only copy of that
        footage, so a failure leaves it under that name (crash recovery files it).
        """
        (result,) = self.register_segments([Segment(path, tags, rec_id, origin)], now)
        if isinstance(result, Exception):
            raise result
        return result

    def register_segments(
        self, segments: Sequence[Segment], now: datetime, *, synced: bool = False
    ) -> list[Recording | Exception]:
        """Catalogue a wave of closed segments in one transaction (one by one if it is
        refused); a result per segment, in order (:mod:`edge_agent.intake.segments`).
        ``synced``: their bytes were made durable by one ``syncfs`` already."""
        return file_segments(self, segments, now, synced=synced)

    # -- internals -----------------------------------------------------------

    def final_path(self, tags: Tags, rec_id: str, stem: str, container: str) -> Path:
        return final_path(self.settings, self.gate, tags, rec_id, stem, container)

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
        truncated: bool,
        sealed: tuple[int, str],
    ) -> Recording:
        """Rename into place and catalogue in one step: if anything fails once the copy
        exists (the catalog, encoding, a full disk), a copy of a source that still
        exists is removed again, so storage never holds an uncatalogued orphan."""
        placed = tmp
        try:
            rec, standing = self._place_and_catalogue(
                tmp, final, tags, rec_id, source_sha, origin, now, extra, truncated, sealed
            )
        except BaseException:
            for candidate in (tmp, final):
                with contextlib.suppress(OSError):
                    candidate.unlink()
                    placed = candidate
            if self.settings.fsync:
                with contextlib.suppress(OSError):
                    fsync_dir(placed.parent)
            raise
        try:
            rec = finish_standing(
                self.catalog, self.settings.storage_root, standing,
                actor=self.actor, now=now, fsync=self.settings.fsync,
            )  # fmt: skip
        except Exception:
            # The row is `deleting`: finish_interrupted completes it at the next sweep.
            log.exception("erasing %s on arrival is unfinished", rec.id)
        log.info("adopted %s as %s (%s)", extra.get("from", final.name), rec.id, rec.path)
        return rec

    def _place_and_catalogue(
        self,
        tmp: Path,
        final: Path,
        tags: Tags,
        rec_id: str,
        source_sha: str,
        origin: Origin,
        now: datetime,
        extra: dict[str, object],
        truncated: bool,
        sealed: tuple[int, str],
    ) -> tuple[Recording, Standing]:
        size, sha = sealed  # seal() did mode, fsync and hash
        move_into_place(tmp, final, self.settings)
        rec = new_recording(
            self.settings, final, tags, rec_id, size, sha, origin, source_sha,
            clock_trusted=self.clock_trusted,
        )  # fmt: skip
        event = added_event(rec)
        if truncated:
            event["truncated"] = True
        with self.catalog.transaction():
            self.catalog.recordings.add(rec)
            if tags.anonymized and origin.anonymized_reason:  # stored and audited
                self.catalog.recordings.set_anonymized_reason(rec.id, origin.anonymized_reason)
                extra = {**extra, "anonymized_reason": origin.anonymized_reason}
            if truncated:
                self.catalog.recordings.mark_truncated(rec.id)
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
            # Requests in force for this window apply before anyone can see the row.
            standing = apply_standing(self.catalog, rec, actor=self.actor, now=now)
        return standing.rec, standing

    def _remove_source(self, src: Source) -> None:
        if not src.still_named():
            log.warning("%s changed after adoption; not removed", src.shown)
            return
        try:
            src.path.unlink()
        except FileNotFoundError:
            return
        if self.settings.fsync:
            fsync_dir(src.path.parent)

    def _drop_duplicate(self, src: Source, existing: Recording, now: datetime) -> IntakeResult:
        reason = f"duplicate: same content as recording {existing.id}"
        with self.catalog.transaction():
            self.audit.append(
                "recording.duplicate",
                actor=self.actor,
                subject=existing.id,
                data={"source": src.shown},
                ts=now,
            )
        # Byte-identical to a catalogued recording: a kept copy would escape retention.
        self._remove_source(src)
        return IntakeResult(Outcome.DUPLICATE, src.shown, reason, recording=existing)

    def _quarantine_open(self, src: Source, reason: str, now: datetime) -> IntakeResult:
        with src:
            return self._quarantine_src(src, reason, now)

    def _quarantine_src(self, src: Source, reason: str, now: datetime) -> IntakeResult:
        return self.quarantine(src.path, reason, now, ident=src.ident)

    def quarantine(
        self,
        path: Path,
        reason: str,
        now: datetime,
        *,
        ident: tuple[int, int] | None = None,
    ) -> IntakeResult:
        """Move ``path`` aside with a reason file; ``ident``: only if it is still that inode."""
        shown = display_name(path)
        if not still_there(path, ident):
            why = f"{reason}; not quarantined: the file was replaced or removed meanwhile"
            self._audit_only("recording.quarantine_failed", shown, why, now)
            return IntakeResult(Outcome.REFUSED, shown, why)
        moved = move_aside(
            path, shown, reason, now, self.settings.quarantine_dir, fsync=self.settings.fsync
        )
        if isinstance(moved, str):
            reason = f"{reason}; {moved}"
            self._audit_only("recording.quarantine_failed", shown, reason, now)
            return IntakeResult(Outcome.REFUSED, shown, reason)
        self._audit_only("recording.quarantined", shown, reason, now, extra={"to": moved.name})
        log.warning("quarantined %s: %s", shown, reason)
        return IntakeResult(Outcome.QUARANTINED, shown, reason, notes=(str(moved),))

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
