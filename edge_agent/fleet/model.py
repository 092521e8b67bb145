"""What the fleet dashboard knows: one row per device, bounded, built from MQTT payloads.

No IO: ``apply`` takes a topic and the raw payload bytes, and every payload
that cannot be used is a counted verdict (``rejected``), never an exception.
Memory is bounded whatever arrives: at most ``max_devices`` devices (later
ones are counted, not kept), ``events_per_device`` recent events per device
and ``recent_events`` across the fleet, each payload at most ``max_payload``
bytes (docs/fleet.md).
"""

from __future__ import annotations

import json
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

KINDS = ("status", "telemetry", "events")
STATES = ("online", "degraded", "offline", "unknown")
MAX_ID = 64  # characters of a device id kept (a topic level)


@dataclass
class Device:
    id: str
    state: str = "unknown"
    session: int | None = None
    reasons: list[str] = field(default_factory=list)
    version: str | None = None
    last_seen: float = 0.0  # wall clock (epoch s) of the last message
    clock: str | None = None
    clock_reason: str | None = None
    overdue: int = 0
    audio_outside: int | None = None
    storage_free_pct: float | None = None
    storage_free_bytes: int | None = None
    failing_sources: list[str] = field(default_factory=list)
    outbox_depth: int | None = None
    outbox_held: int | None = None
    site: str | None = None
    last_seq: int | None = None
    # (seq, ts, type, received): tuples with the type interned, about 200 bytes each.
    events: deque[tuple[int | None, str, str, float]] = field(
        default_factory=lambda: deque(maxlen=20)
    )

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "session": self.session,
            "reasons": self.reasons,
            "version": self.version,
            "last_seen": self.last_seen,
            "clock": self.clock,
            "clock_reason": self.clock_reason,
            "overdue": self.overdue,
            "audio_outside": self.audio_outside,
            "storage_free_pct": self.storage_free_pct,
            "storage_free_bytes": self.storage_free_bytes,
            "failing_sources": self.failing_sources,
            "outbox_depth": self.outbox_depth,
            "outbox_held": self.outbox_held,
            "site": self.site,
            "last_seq": self.last_seq,
        }


def _short(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _find(doc: Any, key: str, depth: int = 0) -> Any:
    """The first value under ``key`` anywhere in ``doc`` (a few levels deep)."""
    if depth > 3 or not isinstance(doc, dict):
        return None
    if key in doc:
        return doc[key]
    for value in doc.values():
        found = _find(value, key, depth + 1)
        if found is not None:
            return found
    return None


class Fleet:
    """Every device seen on ``{prefix}/+/status|telemetry|events``."""

    def __init__(
        self,
        prefix: str = "edge",
        *,
        max_devices: int = 100_000,
        events_per_device: int = 20,
        recent_events: int = 200,
        max_payload: int = 64 * 1024,
    ) -> None:
        self.prefix = prefix
        self.max_devices = max_devices
        self.events_per_device = events_per_device
        self.max_payload = max_payload
        self.devices: dict[str, Device] = {}
        self.recent: deque[tuple[str, int | None, str, str, float]] = deque(maxlen=recent_events)
        self.rejected: dict[str, int] = {}
        self.messages = 0

    def _reject(self, why: str) -> None:
        self.rejected[why] = self.rejected.get(why, 0) + 1

    def apply(self, topic: str, payload: bytes, now: float) -> str | None:
        """Take one message; returns the id of the device it changed, or None (a verdict)."""
        self.messages += 1
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != self.prefix or parts[2] not in KINDS:
            self._reject("topic")
            return None
        device_id, kind = parts[1], parts[2]
        if not device_id or len(device_id) > MAX_ID:
            self._reject("device_id")
            return None
        if len(payload) > self.max_payload:
            self._reject("too_large")
            return None
        if not payload:
            return None  # a retained message being cleared
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            self._reject("malformed")
            return None
        if not isinstance(doc, dict):
            self._reject("malformed")
            return None
        device = self.devices.get(device_id)
        if device is None:
            if len(self.devices) >= self.max_devices:
                self._reject("too_many_devices")
                return None
            device = self.devices[device_id] = Device(
                device_id, events=deque(maxlen=self.events_per_device)
            )
        device.last_seen = now
        if kind == "status":
            self._status(device, doc)
        elif kind == "telemetry":
            self._telemetry(device, doc)
        else:
            self._event(device, doc, now)
        return device_id

    def _status(self, d: Device, doc: dict[str, Any]) -> None:
        state = doc.get("state")
        d.state = state if state in STATES else "unknown"
        d.session = _int(doc.get("session"))
        reasons = doc.get("reasons")
        d.reasons = [_short(r) for r in reasons[:10]] if isinstance(reasons, list) else []
        d.version = _short(doc.get("version"), 32) if doc.get("version") else d.version
        if isinstance(doc.get("site"), str):
            d.site = _short(doc["site"], 64)

    def _telemetry(self, d: Device, doc: dict[str, Any]) -> None:
        clock = doc.get("clock")
        if isinstance(clock, dict):
            state = clock.get("state")
            d.clock = state if state in ("trusted", "untrusted") else None
            d.clock_reason = _short(clock["reason"]) if clock.get("reason") else None
        retention = doc.get("retention")
        if isinstance(retention, dict):
            d.overdue = _int(retention.get("overdue_count")) or 0
        # Audio kept outside audio rooms (must be 0): shown when the agent reports it.
        d.audio_outside = _int(_find(doc, "audio_outside_audio_rooms"))
        health = doc.get("health")
        mounts = health.get("storage") if isinstance(health, dict) else None
        if isinstance(mounts, list) and mounts and isinstance(mounts[0], dict):
            used = mounts[0].get("used_percent")
            d.storage_free_pct = round(100.0 - used, 1) if isinstance(used, int | float) else None
            d.storage_free_bytes = _int(mounts[0].get("free_bytes"))
        sources = doc.get("sources")
        if isinstance(sources, list):
            d.failing_sources = [
                _short(s.get("id"), 64)
                for s in sources[:256]
                # The agent's own rule (comms.telemetry.SourceState.failing).
                if isinstance(s, dict) and s.get("state") not in ("recording", "idle", "stopped")
            ][:20]
        outbox = doc.get("outbox")
        if isinstance(outbox, dict):
            d.outbox_depth = _int(outbox.get("depth"))
            d.outbox_held = _int(outbox.get("held"))
        if isinstance(doc.get("site"), str):
            d.site = _short(doc["site"], 64)
        if isinstance(doc.get("version"), str):
            d.version = _short(doc["version"], 32)

    def _event(self, d: Device, doc: dict[str, Any], now: float) -> None:
        seq = _int(doc.get("seq"))
        if seq is not None and (d.last_seq is None or seq > d.last_seq):
            d.last_seq = seq
        brief = (seq, _short(doc.get("ts"), 40), sys.intern(_short(doc.get("type"), 64)), now)
        d.events.append(brief)
        self.recent.append((d.id, *brief))

    # -- views --------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        counts = dict.fromkeys(STATES, 0)
        overdue = audio = 0
        for d in self.devices.values():
            counts[d.state] += 1
            overdue += d.overdue
            audio += d.audio_outside or 0
        return {
            "devices": len(self.devices),
            "states": counts,
            "overdue": overdue,
            "audio_outside": audio,
            "messages": self.messages,
            "rejected": dict(self.rejected),
        }

    def rows(
        self, *, state: str | None = None, site: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        out = []
        for d in self.devices.values():
            if (state is None or d.state == state) and (site is None or d.site == site):
                out.append(d.row())
                if len(out) >= limit:
                    break
        return out

    def device(self, device_id: str) -> dict[str, Any] | None:
        d = self.devices.get(device_id)
        if d is None:
            return None
        events = [{"seq": e[0], "ts": e[1], "type": e[2], "received": e[3]} for e in d.events]
        return {**d.row(), "events": events}
