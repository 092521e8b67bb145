"""What the running agent says about itself: systemd ``STATUS=``, degraded reasons, telemetry.

:class:`AgentStatus` reads the parts the daemon wired (recorder manager,
janitor and its clock guard, storage watch, monitor, lifecycle) and never
changes them; it is also the provider of the telemetry gatherer's retention,
sources and clock figures (docs/design/architecture.md).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from edge_agent.app.lifecycle import Lifecycle
from edge_agent.app.monitor import Monitor
from edge_agent.app.storage_watch import StorageWatch
from edge_agent.comms.mqtt import MqttLink
from edge_agent.comms.telemetry import (
    ClockState,
    Gatherer,
    RetentionSnapshot,
    Snapshot,
    SourceState,
    availability,
    build_telemetry,
)
from edge_agent.core.model import iso
from edge_agent.intake.intake import Intake
from edge_agent.recording.recorder_manager import RecorderManager
from edge_agent.retention.janitor import Janitor
from edge_agent.store.catalog import Catalog

__all__ = ["AgentStatus", "agent_header", "judge_overdue"]


def agent_header(started_monotonic: float) -> dict[str, Any]:
    """Who answers on the control socket: pid, uptime and start time."""
    up = time.monotonic() - started_monotonic
    return {
        "running": True,
        "pid": os.getpid(),
        "uptime_s": round(up, 1),
        "started_at": iso(datetime.fromtimestamp(time.time() - up, tz=UTC)),
    }


def judge_overdue(telemetry: dict[str, Any], clock_trusted: bool) -> bool:
    """Whether the overdue figures in ``telemetry`` mean anything; zeroes them if not.

    Deadlines judged against a clock the guard does not trust are no finding:
    ten years ahead, every recording would look ten years overdue
    (docs/design/time.md).
    """
    if not clock_trusted:
        telemetry["retention"].update(overdue_count=0, worst_overdue_seconds=0.0)
    return clock_trusted


class AgentStatus:
    def __init__(
        self,
        catalog: Catalog,
        *,
        janitor: Janitor,
        intake: Intake,
        manager: RecorderManager,
        storage: StorageWatch | None,
        monitor: Monitor,
        lifecycle: Lifecycle,
        gatherer: Gatherer,
        startup_reasons: list[str],
        now: Callable[[], datetime],
    ) -> None:
        self.catalog = catalog
        self.janitor = janitor
        self.intake = intake
        self.manager = manager
        self.storage = storage
        self.monitor = monitor
        self.lifecycle = lifecycle
        self.gatherer = gatherer
        # Shared with the daemon, which appends while it starts.
        self.startup_reasons = startup_reasons
        self.now = now
        self.link: MqttLink | None = None  # set once MQTT is wired
        gatherer.retention = self.retention
        gatherer.sources = self.sources
        gatherer.clock = self.clock
        gatherer.extra = self.degraded_reasons

    # -- providers for telemetry ---------------------------------------------------------

    def retention(self, now: datetime) -> RetentionSnapshot:
        st = self.janitor.status(now)
        if st.last_sweep is None:
            from edge_agent.comms.telemetry import catalog_retention

            return catalog_retention(self.catalog, now)
        return RetentionSnapshot(st.next_deadline, st.overdue_count, st.worst_overdue_seconds)

    def sources(self) -> list[SourceState]:
        return [SourceState(s.id, s.state, s.reason) for s in self.manager.snapshot()]

    def clock(self) -> ClockState:
        guard = self.janitor.guard
        v = guard.last
        if v is None:
            return ClockState()
        return ClockState(
            v.trusted,
            v.reason,
            guard.describe_evidence(v),
            guard.paused_since_cached(),
        )

    # -- the daemon's own view -----------------------------------------------------------

    def degraded_reasons(self) -> list[str]:
        """The daemon's own reasons; telemetry adds sources, clock, disk and outbox."""
        out = self.storage.reasons() if self.storage is not None else []
        out += self.startup_reasons
        out += self.lifecycle.reasons()
        out += [f"health: {p}" for p in self.monitor.health_problems]
        return out

    def status_line(self) -> str:
        """The one line systemd shows (``STATUS=``)."""
        snaps = self.manager.snapshot()
        recording = sum(1 for s in snaps if s.state == "recording")
        trusted = self.intake.clock_trusted
        parts = [
            f"recording {recording}/{len(snaps)} sources",
            f"{self.monitor.recordings} recordings",
            "clock trusted" if trusted else "clock untrusted",
        ]
        if self.link is not None:
            parts.append("mqtt connected" if self.link.connected else "mqtt disconnected")
        parts.append(f"outbox {self.monitor.outbox_depth}")
        paused = self.manager.paused()
        if paused:
            parts.append(f"paused {', '.join(sorted(paused))}")
        reasons = self.degraded_reasons()
        if reasons:
            more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
            parts.append(f"degraded: {reasons[0]}{more}")
        return ", ".join(parts)

    async def control_doc(self) -> dict[str, Any]:
        """What the control socket answers (``edge-agent status``, docs/operator-guide.md)."""
        from edge_agent.comms.status import SESSION_KEY

        def read() -> tuple[Snapshot, int]:
            snap = self.gatherer.gather(self.now())
            return snap, int(self.catalog.get_meta(SESSION_KEY) or 0)

        snap, session = await asyncio.to_thread(read)
        state, reasons = availability(snap)
        telemetry = build_telemetry(snap).model_dump(mode="json")
        judged = judge_overdue(telemetry, snap.clock.trusted)
        link = self.link
        return {
            "state": state,
            "reasons": reasons,
            "agent": agent_header(self.gatherer.started),
            "mqtt": {
                "configured": link is not None,
                "connected": bool(link and link.connected),
                "session": session,
            },
            "sources": [s.as_dict() for s in self.manager.snapshot()],
            "jobs": [],
            "overdue_judged": judged,
            "free_space_floor_bytes": snap.free_floor_bytes,
            "telemetry": telemetry,
        }

    async def status_doc(self) -> dict[str, Any]:
        """The ``status`` command's answer: availability and the telemetry document."""
        snap = await asyncio.to_thread(self.gatherer.gather, self.now())
        state, reasons = availability(snap)
        return {
            "state": state,
            "reasons": reasons,
            "telemetry": build_telemetry(snap).model_dump(mode="json"),
        }
