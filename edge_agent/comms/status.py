"""Availability on ``{prefix}/{device}/status``: online, degraded, offline.

Every connect gets a new session number, persisted in catalog meta
(``mqtt_session``) before the CONNECT so that the will the broker keeps for
that connection says ``offline`` with the very number ``online`` carried.
A dashboard can then tell an old ``offline`` from the current one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edge_agent.comms.mqtt import MqttLink, NotConnected, Will
from edge_agent.comms.telemetry import (
    Gatherer,
    Snapshot,
    TelemetryPayload,
    availability,
    build_telemetry,
    significant_change,
)
from edge_agent.core.model import iso
from edge_agent.store.catalog import Catalog

log = logging.getLogger(__name__)

SESSION_KEY = "mqtt_session"
State = Literal["online", "degraded", "offline"]


class StatusPayload(BaseModel):
    """Retained on ``{prefix}/{device}/status`` (QoS 1); the will carries ``offline``."""

    model_config = ConfigDict(extra="forbid")

    state: State
    session: int
    ts: str
    version: str
    reasons: list[str] = []


def status_bytes(
    state: State, session: int, ts: datetime, version: str, reasons: list[str]
) -> bytes:
    doc = StatusPayload(state=state, session=session, ts=iso(ts), version=version, reasons=reasons)
    return json.dumps(doc.model_dump(), sort_keys=True, separators=(",", ":")).encode()


def next_session(catalog: Catalog) -> int:
    with catalog.transaction():
        n = int(catalog.get_meta(SESSION_KEY) or 0) + 1
        catalog.set_meta(SESSION_KEY, str(n))
    return n


class StatusReporter:
    """Owns the status topic: the will, ``online``/``degraded`` and the final ``offline``."""

    def __init__(
        self,
        catalog: Catalog,
        topic: str,
        *,
        version: str,
        now: Callable[[], datetime],
    ) -> None:
        self.catalog = catalog
        self.topic = topic
        self.version = version
        self._now = now
        self.session = int(catalog.get_meta(SESSION_KEY) or 0)
        self.state: State = "online"
        self.reasons: list[str] = []
        self._published: tuple[State, tuple[str, ...], int] | None = None

    def will(self) -> Will:
        """Called before every CONNECT: a new session and its ``offline`` will."""
        self.session = next_session(self.catalog)
        payload = status_bytes("offline", self.session, self._now(), self.version, [])
        return Will(self.topic, payload, qos=1, retain=True)

    def set_availability(self, state: Literal["online", "degraded"], reasons: list[str]) -> bool:
        """Record the current state; True if it differs from what was last published."""
        self.state, self.reasons = state, list(reasons)
        return self._published != (self.state, tuple(self.reasons), self.session)

    async def publish_current(self, link: MqttLink) -> None:
        payload = status_bytes(self.state, self.session, self._now(), self.version, self.reasons)
        key = (self.state, tuple(self.reasons), self.session)
        link.publish(self.topic, payload, qos=1, retain=True)
        self._published = key
        log.info("status %s (session %d) %s", self.state, self.session, "; ".join(self.reasons))

    async def on_connect(self, link: MqttLink) -> None:
        await self.publish_current(link)

    async def publish_offline(self, link: MqttLink) -> None:
        """Clean shutdown: say ``offline`` ourselves (the will only fires on a lost connection)."""
        payload = status_bytes("offline", self.session, self._now(), self.version, [])
        try:
            ok = await link.publish_wait(self.topic, payload, qos=1, retain=True, wait=3.0)
        except NotConnected:
            ok = False
        if not ok:
            log.warning("could not publish offline status; the broker's will covers it")


class TelemetryReporter:
    """A daemon component: samples, publishes telemetry (retained, QoS 0) and availability.

    Samples every ``sample_seconds``; publishes at ``interval`` and, between
    intervals, when something significant changed. Availability goes out on
    ``status`` whenever its state or reasons change.
    """

    name = "telemetry"

    def __init__(
        self,
        gatherer: Gatherer,
        link: MqttLink,
        topic: str,
        status: StatusReporter,
        *,
        interval: float,
        now: Callable[[], datetime],
        sample_seconds: float = 5.0,
    ) -> None:
        self.gatherer = gatherer
        self.link = link
        self.topic = topic
        self.status = status
        self.interval = interval
        self._now = now
        self.sample_seconds = min(sample_seconds, interval)
        self._last: TelemetryPayload | None = None
        self._last_at = 0.0
        self._wake = asyncio.Event()
        link.on_connect(self._on_connect)

    async def _on_connect(self, _link: MqttLink) -> None:
        self._last = None  # publish a fresh one on every connection
        self._wake.set()

    async def sample(self) -> tuple[Snapshot, TelemetryPayload]:
        snap = await asyncio.to_thread(self.gatherer.gather, self._now())
        return snap, build_telemetry(snap)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._tick()
            except NotConnected:
                pass
            except Exception:
                log.exception("telemetry sample failed")
            self._wake.clear()
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waits, timeout=self.sample_seconds, return_when="FIRST_COMPLETED")
            for w in waits:
                w.cancel()

    async def _tick(self) -> None:
        snap, payload = await self.sample()
        state, reasons = availability(snap)
        changed = self.status.set_availability(state, reasons)
        if not self.link.connected:
            return
        if changed:
            await self.status.publish_current(self.link)
        due = time.monotonic() - self._last_at >= self.interval
        if due or significant_change(self._last, payload):
            self.link.publish(self.topic, payload.model_dump_json(), qos=0, retain=True)
            self._last, self._last_at = payload, time.monotonic()


_HA_AVAILABLE = "{{ 'offline' if value_json.state == 'offline' else 'online' }}"


def ha_discovery(prefix: str, device_id: str, version: str) -> list[tuple[str, str]]:
    """Home Assistant MQTT discovery configs (retained) for status and a few sensors."""
    root = f"{prefix}/{device_id}"
    device = {
        "identifiers": [f"edge-agent-{device_id}"],
        "name": device_id,
        "manufacturer": "edge-agent",
        "sw_version": version,
    }
    sensors: list[tuple[str, str, str, str | None, str | None]] = [
        ("status", "Status", f"{root}/status", "{{ value_json.state }}", None),
        ("cpu", "CPU", f"{root}/telemetry", "{{ value_json.health.cpu_percent }}", "%"),
        ("memory", "Memory", f"{root}/telemetry", "{{ value_json.health.memory_percent }}", "%"),
        (
            "temperature",
            "Temperature",
            f"{root}/telemetry",
            "{{ value_json.health.temperature_c }}",
            "°C",
        ),
        ("outbox", "Outbox depth", f"{root}/telemetry", "{{ value_json.outbox.depth }}", None),
        ("clock", "Clock", f"{root}/telemetry", "{{ value_json.clock.state }}", None),
    ]
    out = []
    for key, name, state_topic, template, unit in sensors:
        doc: dict[str, Any] = {
            "name": name,
            "unique_id": f"edge-agent-{device_id}-{key}",
            "state_topic": state_topic,
            "value_template": template,
            "availability_topic": f"{root}/status",
            "availability_template": _HA_AVAILABLE,
            "device": device,
        }
        if unit:
            doc["unit_of_measurement"] = unit
        out.append((f"homeassistant/sensor/{device_id}/{key}/config", json.dumps(doc)))
    return out
