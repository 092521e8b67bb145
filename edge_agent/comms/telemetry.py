"""Telemetry: a snapshot of the device, and the payload built from it.

:func:`build_telemetry`, :func:`availability` and :func:`significant_change`
are pure. Reading the machine (:func:`read_host`, psutil) and the catalog
(:func:`gather`) are small IO functions meant for ``asyncio.to_thread``.
Retention and source states come from provider callables so the janitor and
the recorder manager plug in without this module knowing them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import psutil
from pydantic import BaseModel, ConfigDict

from edge_agent.config.profiles import TemperatureSensor
from edge_agent.core.model import Purpose, iso
from edge_agent.store.catalog import Catalog
from edge_agent.store.exports import count_exports
from edge_agent.store.outbox_store import Outbox
from edge_agent.store.recordings import PurposeStats

# Outbox depth / age beyond which the device reports itself degraded.
BACKLOG_DEPTH = 10_000
BACKLOG_AGE_S = 3600.0


# -- snapshot (plain data) ------------------------------------------------------


@dataclass(frozen=True)
class MountStats:
    mount: str
    total: int
    used: int
    free: int


@dataclass(frozen=True)
class HostStats:
    cpu_percent: float
    memory_total: int
    memory_used: int
    memory_percent: float
    load: tuple[float, float, float]
    mounts: tuple[MountStats, ...]
    temperature_c: float | None
    uptime_s: float


@dataclass(frozen=True)
class RetentionSnapshot:
    next_deadline: datetime | None = None
    overdue_count: int = 0
    worst_overdue_seconds: float = 0.0


@dataclass(frozen=True)
class SourceState:
    id: str
    state: str  # recording | stopped | failed | no_signage | ...
    reason: str | None = None

    @property
    def failing(self) -> bool:
        return self.state not in ("recording", "idle", "stopped")


@dataclass(frozen=True)
class ClockState:
    trusted: bool = True
    reason: str | None = None
    evidence: str | None = None  # what vouches for the clock, e.g. "timesyncd synchronised at T"
    paused_since: datetime | None = None  # deletion paused since (wall clock then)


@dataclass(frozen=True)
class Snapshot:
    ts: datetime
    device_id: str
    version: str
    host: HostStats
    recordings: Mapping[Purpose, PurposeStats]
    retention: RetentionSnapshot
    outbox_depth: int
    outbox_oldest_age_s: float | None
    clock: ClockState = ClockState()
    sources: tuple[SourceState, ...] = ()
    longer_than_notice: tuple[str, ...] = ()
    location_drift: tuple[Mapping[str, object], ...] = ()
    storage_mount: str | None = None  # the mount holding the recordings
    free_floor_bytes: int | None = None
    agent_uptime_s: float = 0.0
    extra_reasons: tuple[str, ...] = field(default_factory=tuple)
    exports: int = 0  # export.created entries in the audit (docs/export.md)
    outbox_refused: tuple[int, int] = (0, 0)  # publisher: (refusals, events held)


# -- payload models (their JSON Schemas live in schemas/) ---------------------------


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MountPayload(_Payload):
    mount: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    used_percent: float


class HealthPayload(_Payload):
    cpu_percent: float
    memory_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    load_1m: float
    load_5m: float
    load_15m: float
    storage: list[MountPayload]
    temperature_c: float | None
    uptime_s: float


class PurposePayload(_Payload):
    count: int
    bytes: int
    oldest_start: str | None


class LocationDriftPayload(_Payload):
    """Footage at a location removed from the config, or whose kind or audio flag changed."""

    location: str
    kind: Literal["removed", "kind_changed", "audio_changed"]
    count: int
    last_deadline: str | None
    undated: int


class RetentionPayload(_Payload):
    next_deadline: str | None
    overdue_count: int
    worst_overdue_seconds: float
    longer_than_notice: list[str]
    location_drift: list[LocationDriftPayload] = []


class SourcePayload(_Payload):
    id: str
    state: str
    reason: str | None


class OutboxPayload(_Payload):
    depth: int
    oldest_age_seconds: float | None
    # Publishes the broker refused since the agent started, and the events held
    # back because their topic was refused (docs/brokers.md).
    refused: int = 0
    held: int = 0


class ClockPayload(_Payload):
    state: Literal["trusted", "untrusted"]
    reason: str | None
    evidence: str | None = None
    deletion_paused_since: str | None = None


class TelemetryPayload(_Payload):
    """Retained on ``{prefix}/{device}/telemetry`` (QoS 0)."""

    ts: str
    device: str
    version: str
    agent_uptime_s: float
    health: HealthPayload
    recordings: dict[str, PurposePayload]
    retention: RetentionPayload
    sources: list[SourcePayload]
    outbox: OutboxPayload
    clock: ClockPayload
    exports: int = 0


# -- pure functions --------------------------------------------------------------


def build_telemetry(s: Snapshot) -> TelemetryPayload:
    h = s.host
    return TelemetryPayload(
        ts=iso(s.ts),
        device=s.device_id,
        version=s.version,
        agent_uptime_s=round(s.agent_uptime_s, 1),
        health=HealthPayload(
            cpu_percent=round(h.cpu_percent, 1),
            memory_percent=round(h.memory_percent, 1),
            memory_used_bytes=h.memory_used,
            memory_total_bytes=h.memory_total,
            load_1m=round(h.load[0], 2),
            load_5m=round(h.load[1], 2),
            load_15m=round(h.load[2], 2),
            storage=[
                MountPayload(
                    mount=m.mount,
                    total_bytes=m.total,
                    used_bytes=m.used,
                    free_bytes=m.free,
                    used_percent=round(100.0 * m.used / m.total, 1) if m.total else 0.0,
                )
                for m in h.mounts
            ],
            temperature_c=None if h.temperature_c is None else round(h.temperature_c, 1),
            uptime_s=round(h.uptime_s, 1),
        ),
        recordings={
            str(p): PurposePayload(
                count=st.count,
                bytes=st.bytes,
                oldest_start=iso(st.oldest_start) if st.oldest_start else None,
            )
            for p, st in sorted(s.recordings.items())
        },
        retention=RetentionPayload(
            next_deadline=iso(s.retention.next_deadline) if s.retention.next_deadline else None,
            overdue_count=s.retention.overdue_count,
            worst_overdue_seconds=round(s.retention.worst_overdue_seconds, 1),
            longer_than_notice=list(s.longer_than_notice),
            location_drift=[LocationDriftPayload.model_validate(d) for d in s.location_drift],
        ),
        sources=[SourcePayload(id=x.id, state=x.state, reason=x.reason) for x in s.sources],
        outbox=OutboxPayload(
            depth=s.outbox_depth,
            oldest_age_seconds=None
            if s.outbox_oldest_age_s is None
            else round(s.outbox_oldest_age_s, 1),
            refused=s.outbox_refused[0],
            held=s.outbox_refused[1],
        ),
        clock=ClockPayload(
            state="trusted" if s.clock.trusted else "untrusted",
            reason=s.clock.reason,
            evidence=s.clock.evidence,
            deletion_paused_since=iso(s.clock.paused_since) if s.clock.paused_since else None,
        ),
        exports=s.exports,
    )


def availability(s: Snapshot) -> tuple[Literal["online", "degraded"], list[str]]:
    """``online``, or ``degraded`` with one reason per problem (docs/mqtt.md)."""
    reasons: list[str] = []
    for src in s.sources:
        if src.failing:
            reasons.append(
                f"source {src.id}: {src.state}" + (f" ({src.reason})" if src.reason else "")
            )
    if not s.clock.trusted:
        reasons.append(f"clock untrusted: {s.clock.reason or 'unknown reason'}")
    if s.free_floor_bytes is not None and s.storage_mount is not None:
        for m in s.host.mounts:
            if m.mount == s.storage_mount and m.free < s.free_floor_bytes:
                reasons.append(
                    f"disk pressure: {m.free} bytes free on {m.mount}, floor {s.free_floor_bytes}"
                )
    age = s.outbox_oldest_age_s or 0.0
    if s.outbox_depth > BACKLOG_DEPTH or age > BACKLOG_AGE_S:
        reasons.append(f"outbox backing up: {s.outbox_depth} events, oldest {age:.0f} s")
    reasons.extend(s.extra_reasons)
    return ("degraded" if reasons else "online"), reasons


def significant_change(prev: TelemetryPayload | None, new: TelemetryPayload) -> bool:
    """Worth publishing before the next interval: states changed, not mere gauges."""
    if prev is None:
        return True
    if prev.clock != new.clock or prev.sources != new.sources:
        return True
    if prev.retention.overdue_count != new.retention.overdue_count:
        return True
    old_mounts = {m.mount: m.used_percent for m in prev.health.storage}
    for m in new.health.storage:
        if abs(old_mounts.get(m.mount, -100.0) - m.used_percent) >= 5.0:
            return True
    return (prev.outbox.depth > BACKLOG_DEPTH) != (new.outbox.depth > BACKLOG_DEPTH)


# -- IO: reading the machine and the catalog --------------------------------------------


def mount_of(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def read_temperature(sensor: TemperatureSensor | None) -> float | None:
    if sensor is None or not hasattr(psutil, "sensors_temperatures"):
        return None
    try:
        entries = psutil.sensors_temperatures().get(sensor.name, [])
    except (OSError, RuntimeError):
        return None
    for entry in entries:
        if sensor.label is None or entry.label == sensor.label:
            return float(entry.current)
    return None


def read_host(paths: Sequence[Path], sensor: TemperatureSensor | None) -> HostStats:
    """psutil readings (blocking: call through ``asyncio.to_thread``)."""
    mounts: list[MountStats] = []
    seen: set[Path] = set()
    for path in paths:
        mount = mount_of(path)
        if mount in seen:
            continue
        seen.add(mount)
        try:
            du = psutil.disk_usage(str(mount))
        except OSError:
            continue
        mounts.append(MountStats(str(mount), du.total, du.used, du.free))
    mem = psutil.virtual_memory()
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return HostStats(
        cpu_percent=float(psutil.cpu_percent(interval=None)),
        memory_total=int(mem.total),
        memory_used=int(mem.total - mem.available),
        memory_percent=float(mem.percent),
        load=(float(load[0]), float(load[1]), float(load[2])),
        mounts=tuple(mounts),
        temperature_c=read_temperature(sensor),
        uptime_s=max(0.0, time.time() - psutil.boot_time()),
    )


def catalog_retention(catalog: Catalog, now: datetime) -> RetentionSnapshot:
    """What the catalog alone says: the janitor may provide a richer one."""
    count, oldest = catalog.schedule.overdue(now)
    return RetentionSnapshot(
        next_deadline=catalog.schedule.next_deadline(),
        overdue_count=count,
        worst_overdue_seconds=0.0 if oldest is None else (now - oldest).total_seconds(),
    )


@dataclass
class Gatherer:
    """Collects a :class:`Snapshot`; every dependency is injected."""

    catalog: Catalog
    device_id: str
    version: str
    paths: Sequence[Path]
    sensor: TemperatureSensor | None = None
    longer_than_notice: tuple[str, ...] = ()
    # Refreshed by the daemon at start and on reload: a GROUP BY over the catalog.
    location_drift: tuple[Mapping[str, object], ...] = ()
    free_floor: Callable[[int], int] | None = None  # total bytes -> floor bytes
    retention: Callable[[datetime], RetentionSnapshot] | None = None
    sources: Callable[[], Sequence[SourceState]] | None = None
    clock: Callable[[], ClockState] | None = None
    # Further degraded reasons from the daemon (failed components, health checks).
    extra: Callable[[], Sequence[str]] | None = None
    refused: Callable[[], tuple[int, int]] | None = None  # Publisher.refused_counts
    started: float = field(default_factory=time.monotonic)

    def gather(self, now: datetime) -> Snapshot:
        """Blocking (psutil, SQLite): call through ``asyncio.to_thread``."""
        host = read_host(self.paths, self.sensor)
        outbox = Outbox(self.catalog)
        storage_mount = str(mount_of(self.paths[0])) if self.paths else None
        floor = None
        if self.free_floor is not None and storage_mount is not None:
            for m in host.mounts:
                if m.mount == storage_mount:
                    floor = self.free_floor(m.total)
        retention = self.retention(now) if self.retention else catalog_retention(self.catalog, now)
        return Snapshot(
            ts=now,
            device_id=self.device_id,
            version=self.version,
            host=host,
            recordings=self.catalog.recordings.summaries(),
            retention=retention,
            outbox_depth=outbox.depth(),
            outbox_oldest_age_s=outbox.oldest_age(now),
            clock=self.clock() if self.clock else ClockState(),
            sources=tuple(self.sources()) if self.sources else (),
            longer_than_notice=self.longer_than_notice,
            location_drift=self.location_drift,
            storage_mount=storage_mount,
            free_floor_bytes=floor,
            agent_uptime_s=time.monotonic() - self.started,
            extra_reasons=tuple(self.extra()) if self.extra else (),
            exports=count_exports(self.catalog),
            outbox_refused=self.refused() if self.refused else (0, 0),
        )
