"""Telemetry payloads (pure), availability reasons, host reading, outbox caps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.comms.publisher import OutboxLimits, enforce_limits
from edge_agent.comms.status import status_bytes
from edge_agent.comms.telemetry import (
    ClockState,
    HostStats,
    MountStats,
    RetentionSnapshot,
    Snapshot,
    SourceState,
    TelemetryPayload,
    availability,
    build_telemetry,
    read_host,
    significant_change,
)
from edge_agent.config.profiles import TemperatureSensor
from edge_agent.core.model import Purpose
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox
from edge_agent.store.recordings import PurposeStats

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
HOST = HostStats(
    cpu_percent=12.34,
    memory_total=8_000,
    memory_used=2_000,
    memory_percent=25.0,
    load=(0.5, 0.4, 0.3),
    mounts=(MountStats("/data", 1000, 900, 100),),
    temperature_c=51.26,
    uptime_s=3600.0,
)


def _snap(**kw: object) -> Snapshot:
    base: dict[str, object] = {
        "ts": NOW,
        "device_id": "gw-1",
        "version": "0.1.0",
        "host": HOST,
        "recordings": {
            Purpose.SECURITY: PurposeStats(3, 3000, NOW - timedelta(days=1)),
            Purpose.RND: PurposeStats(0, 0, None),
        },
        "retention": RetentionSnapshot(NOW + timedelta(hours=2), 0, 0.0),
        "outbox_depth": 4,
        "outbox_oldest_age_s": 1.5,
        "storage_mount": "/data",
        "free_floor_bytes": 50,
        "longer_than_notice": ("rnd_premises",),
    }
    base.update(kw)
    return Snapshot(**base)  # type: ignore[arg-type]


def test_payload_fields() -> None:
    p = build_telemetry(_snap())
    doc = json.loads(p.model_dump_json())
    assert doc["health"]["temperature_c"] == 51.3
    assert doc["health"]["storage"] == [
        {"mount": "/data", "total_bytes": 1000, "used_bytes": 900, "free_bytes": 100,
         "used_percent": 90.0}
    ]  # fmt: skip
    assert doc["recordings"]["security"] == {
        "count": 3, "bytes": 3000, "oldest_start": "2026-11-01T10:00:00Z"
    }  # fmt: skip
    assert doc["retention"]["next_deadline"] == "2026-11-02T12:00:00Z"
    assert doc["retention"]["longer_than_notice"] == ["rnd_premises"]
    assert doc["outbox"] == {"depth": 4, "oldest_age_seconds": 1.5, "refused": 0, "held": 0}
    assert doc["clock"] == {
        "state": "trusted",
        "reason": None,
        "evidence": None,
        "deletion_paused_since": None,
    }
    TelemetryPayload.model_validate(doc)


def test_availability_reasons() -> None:
    assert availability(_snap()) == ("online", [])
    state, reasons = availability(
        _snap(
            clock=ClockState(False, "wall clock before release date"),
            sources=(SourceState("cam-1", "failed", "connection refused"),),
            free_floor_bytes=200,
            outbox_depth=20_000,
        )
    )
    assert state == "degraded"
    assert [r.split(":")[0] for r in reasons] == [
        "source cam-1", "clock untrusted", "disk pressure", "outbox backing up"
    ]  # fmt: skip


def test_significant_change() -> None:
    a = build_telemetry(_snap())
    assert significant_change(None, a)
    assert not significant_change(a, build_telemetry(_snap(outbox_depth=5)))
    assert significant_change(a, build_telemetry(_snap(clock=ClockState(False, "jump"))))


def test_read_host_real_machine(tmp_path: Path) -> None:
    host = read_host([tmp_path, tmp_path], TemperatureSensor(name="no-such-sensor"))
    assert len(host.mounts) == 1 and host.mounts[0].total > 0
    assert host.memory_total > 0 and host.uptime_s > 0 and host.temperature_c is None


def test_status_payload() -> None:
    doc = json.loads(status_bytes("offline", 7, NOW, "0.1.0", []))
    assert doc == {"state": "offline", "session": 7, "ts": "2026-11-02T10:00:00Z",
                   "version": "0.1.0", "reasons": []}  # fmt: skip


def test_outbox_cap_drops_telemetry_first_and_never_audit_silently(tmp_path: Path) -> None:
    cat = Catalog.open(tmp_path / "c.db", device_id="gw-1", storage_root=tmp_path / "r")
    ob = Outbox(cat)
    for i in range(6):
        ob.enqueue("recording.added", {"i": i}, ts=NOW, cls="audit")
        ob.enqueue("sample", {"i": i}, ts=NOW, cls="telemetry")
    report = enforce_limits(cat, OutboxLimits(max_entries=8), NOW)
    assert report is not None and report.dropped_telemetry == 5 and report.dropped_audit == 0
    left = ob.peek(100)
    assert [e.type for e in left].count("sample") == 1
    assert left[-1].type == "alarm.outbox_overflow"
    # Only audit-class left to drop: they go, but the alarm and the audit log say which.
    report = enforce_limits(cat, OutboxLimits(max_entries=3), NOW)
    assert report is not None and report.dropped_audit > 0
    alarm = ob.peek(100)[-1]
    assert alarm.type == "alarm.outbox_overflow" and alarm.payload["dropped_audit"] > 0
    assert [e["action"] for e in AuditLog(cat).export()].count("outbox.overflow") == 2
    # Telemetry-class entries also expire by age.
    ob.enqueue("sample", {"old": True}, ts=NOW - timedelta(days=40), cls="telemetry")
    report = enforce_limits(cat, OutboxLimits(max_entries=100), NOW)
    assert report is not None and report.dropped_telemetry == 1
    cat.close()
