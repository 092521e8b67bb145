"""Simulated devices for the dashboard's tests and ``bench/fleet.py``.

The payloads are the agent's own: status from ``comms.status.status_bytes``,
telemetry from ``comms.telemetry.build_telemetry`` over a snapshot, events in
the outbox's shape checked by ``comms.publisher.EventPayload``; only the
numbers in them are made up. Devices share a few MQTT connections (a broker
sees fewer connections than a real fleet); a device that needs a will of its
own gets its own connection.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent import __version__
from edge_agent.comms.publisher import EventPayload
from edge_agent.comms.status import status_bytes
from edge_agent.comms.telemetry import (
    ClockState,
    HostStats,
    MountStats,
    RetentionSnapshot,
    Snapshot,
    SourceState,
    build_telemetry,
)
from edge_agent.core.model import Purpose, iso, utcnow
from edge_agent.store.recordings import PurposeStats

EVENT_TYPES = ("recording.added", "recording.deleted", "hold.placed", "alarm.disk_pressure")


@dataclass
class SimDevice:
    id: str
    overdue: int = 0
    clock_trusted: bool = True
    failing_source: bool = False
    session: int = 1
    seq: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def status(self, state: str = "online", reasons: list[str] | None = None) -> bytes:
        return status_bytes(state, self.session, utcnow(), __version__, reasons or [])  # type: ignore[arg-type]

    def telemetry(self, now: datetime | None = None) -> bytes:
        now = now or utcnow()
        total = 500 * 2**30
        used = int(total * (0.3 + 0.5 * self.rng.random()))
        snap = Snapshot(
            ts=now,
            device_id=self.id,
            version=__version__,
            host=HostStats(
                cpu_percent=round(5 + 30 * self.rng.random(), 1),
                memory_total=4 * 2**30,
                memory_used=2**30,
                memory_percent=25.0,
                load=(0.5, 0.4, 0.3),
                mounts=(MountStats("/srv/recordings", total, used, total - used),),
                temperature_c=48.5,
                uptime_s=86400.0,
            ),
            recordings={
                Purpose.SECURITY: PurposeStats(700, 300 * 2**30, now - timedelta(days=3)),
                Purpose.RND: PurposeStats(40, 20 * 2**30, now - timedelta(days=90)),
            },
            retention=RetentionSnapshot(
                now + timedelta(hours=1), self.overdue, 60.0 * self.overdue
            ),
            outbox_depth=self.rng.randrange(3),
            outbox_oldest_age_s=0.2,
            clock=ClockState(self.clock_trusted, None if self.clock_trusted else "no time source"),
            sources=(
                SourceState("cam-1", "recording"),
                SourceState("cam-2", "failed" if self.failing_source else "recording"),
            ),
            storage_mount="/srv/recordings",
        )
        return build_telemetry(snap).model_dump_json().encode()

    def event(self, type_: str | None = None) -> bytes:
        self.seq += 1
        doc = EventPayload.model_validate(
            {
                "id": str(uuid.uuid4()),
                "seq": self.seq,
                "ts": iso(utcnow()),
                "type": type_ or self.rng.choice(EVENT_TYPES),
                "recording_id": str(uuid.uuid4()),
                "location": "gate",
            }
        )
        return json.dumps(doc.model_dump(), separators=(",", ":")).encode()


def _client(host: str, port: int, client_id: str, will: tuple[str, bytes] | None) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port, keepalive=5)
    client.loop_start()
    return client


class Simulator:
    """``n`` devices under ``prefix`` publishing over ``connections`` shared clients."""

    def __init__(
        self,
        host: str,
        port: int,
        n: int,
        *,
        prefix: str = "edge",
        connections: int = 4,
        seed: int = 1,
    ) -> None:
        rng = random.Random(seed)
        self.prefix = prefix
        self.host, self.port = host, port
        self.devices = [
            SimDevice(
                f"sim-{i:06d}",
                overdue=1 if i % 50 == 7 else 0,
                clock_trusted=i % 40 != 3,
                failing_source=i % 25 == 5,
                rng=random.Random(rng.random()),
            )
            for i in range(n)
        ]
        tag = uuid.uuid4().hex[:6]
        self.clients = [_client(host, port, f"sim-{tag}-{k}", None) for k in range(connections)]
        self._own: dict[str, paho.Client] = {}
        self._lock = threading.Lock()
        self.sent = 0
        self.bytes = 0

    def topic(self, device: SimDevice, kind: str) -> str:
        return f"{self.prefix}/{device.id}/{kind}"

    def publish(self, device: SimDevice, kind: str, payload: bytes, *, retain: bool) -> None:
        client = self._own.get(device.id) or self.clients[hash(device.id) % len(self.clients)]
        qos = 0 if kind == "telemetry" else 1
        client.publish(self.topic(device, kind), payload, qos=qos, retain=retain)
        with self._lock:
            self.sent += 1
            self.bytes += len(payload) + len(self.topic(device, kind))

    def own_connection(self, device: SimDevice) -> None:
        """A connection of its own with the agent's will (``offline``, retained)."""
        will = (self.topic(device, "status"), device.status("offline"))
        self._own[device.id] = _client(self.host, self.port, f"sim-own-{device.id}", will)

    def kill(self, device: SimDevice) -> None:
        """Drop the device's own connection without DISCONNECT: the broker sends the will."""
        client = self._own.pop(device.id)
        client.loop_stop()
        sock = client.socket()
        if sock is not None:
            sock.close()

    def announce(self) -> None:
        """Every device: status online and one telemetry, both retained."""
        for d in self.devices:
            self.publish(d, "status", d.status("online"), retain=True)
            self.publish(d, "telemetry", d.telemetry(), retain=True)

    def close(self) -> None:
        for client in [*self.clients, *self._own.values()]:
            client.loop_stop()
            client.disconnect()
