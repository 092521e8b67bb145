"""What a recording source reports: its state and figures (telemetry, ``status``).

The recorder's worker thread writes :class:`LiveFigures` under the
recorder's lock; :class:`SourceStatus` is the frozen snapshot the rest of
the agent reads (docs/design/architecture.md, recording).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from edge_agent.core.model import iso

__all__ = ["LiveFigures", "SourceStatus", "State"]


class State:
    STARTING = "starting"
    RECORDING = "recording"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    # Not recording because policy forbids it (no signage), or recording video
    # without the audio it should have (the reason says why).
    DEGRADED = "degraded"
    PAUSED = "paused"  # stopped on purpose (disk pressure, operator)
    STOPPED = "stopped"


@dataclass(frozen=True)
class SourceStatus:
    """One source as telemetry reports it."""

    id: str
    url: str  # redacted
    location: str
    state: str
    reason: str | None = None
    since: datetime | None = None
    audio: bool = False  # audio is being recorded
    last_segment_start: datetime | None = None
    last_segment_end: datetime | None = None
    segments: int = 0
    reconnects: int = 0
    bitrate_bps: int | None = None
    clock_drift_seconds: float | None = None
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "url": self.url,
            "location": self.location,
            "state": self.state,
            "reason": self.reason,
            "since": iso(self.since) if self.since else None,
            "audio": self.audio,
            "last_segment_start": iso(self.last_segment_start) if self.last_segment_start else None,
            "last_segment_end": iso(self.last_segment_end) if self.last_segment_end else None,
            "segments": self.segments,
            "reconnects": self.reconnects,
            "bitrate_bps": self.bitrate_bps,
            "clock_drift_seconds": self.clock_drift_seconds,
            "warnings": list(self.warnings),
        }


@dataclass
class LiveFigures:
    """Mutable per-source figures, written by the worker, read by ``Recorder.status()``."""

    state: str = State.STARTING
    reason: str | None = None
    since: datetime | None = None
    last_segment_start: datetime | None = None
    last_segment_end: datetime | None = None
    segments: int = 0
    reconnects: int = 0
    bitrate_bps: int | None = None
    drift: float | None = None
    warnings: dict[str, str] = field(default_factory=dict)
    last_packet: float = 0.0  # monotonic
    audio: bool = False  # the open segment records audio
    recording: bool = False  # a session is writing segments (also when degraded)
