"""What intake takes and gives: origins, settings, results (:mod:`edge_agent.intake.intake`).

Kept apart so the recorder, reconcile and the CLI can name them without the
adoption machinery, and so intake.py stays about adoption.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from edge_agent.core.model import Purpose, Recording, RetentionPeriods, Site, Tags, recording_doc
from edge_agent.intake.intake_source import TRANSIENT_ERRNOS, Source
from edge_agent.media import media

PARTIAL_PREFIX = ".partial-"
FILE_MODE = 0o640
DIR_MODE = 0o750
# What an intake result shows of its recording (docs/mqtt.md), through core's recording_doc.
_OUTCOME_FIELDS = ("id", "path", "location", "purpose", "site", "audio", "anonymized",
                   "start", "end", "time_source", "deadline", "size")  # fmt: skip


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
    anonymized_reason: str | None = None  # why declared anonymized (docs/anonymization.md)


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
    # [storage] fsync = "batched": recorder segments wait under their .partial- names and
    # are made durable together by one syncfs this often (edge_agent.recording.filer).
    # None ("always"): each is fsynced as it is filed. Nothing else is batched.
    segment_sync_seconds: float | None = None


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
            doc["recording"] = recording_doc(self.recording, _OUTCOME_FIELDS)
        return doc


@dataclass
class Examined:
    """A source opened, hashed and read, not yet adopted (:meth:`Intake.complete`)."""

    source: Source
    origin: Origin
    source_sha: str
    probe: media.ProbeResult
    scan: media.PacketScan

    def close(self) -> None:
        self.source.close()


@dataclass
class Written:
    """An examined source remuxed under its temporary name and verified, not yet
    catalogued (:meth:`Intake.seal`, then :meth:`Intake.commit`). Owns ``examined``."""

    examined: Examined
    tmp: Path
    final: Path
    tags: Tags
    rec_id: str
    truncated: bool
    audio_removed: bool
    extra: dict[str, object]
    sealed: tuple[int, str] | None = None  # size and sha256, once fsynced and hashed

    def discard(self) -> None:
        """Remove the copy (the source stays for a retry) and close the source."""
        with contextlib.suppress(OSError):
            self.tmp.unlink()
        self.examined.close()


def _transient(exc: BaseException | None) -> bool:
    """Our side ran short (descriptors, memory): the file is not to blame."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


class IntakeIOError(Exception):
    """Storage failed (disk full, I/O error); the source is left untouched for a retry."""
