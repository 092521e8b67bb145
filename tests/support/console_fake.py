"""A console provider made of plain data, and a real aiohttp server around the console.

The provider stands in for the daemon's data (what the console shows is not
under test here, how it is served is); stills come from a real PacketHub fed
by the real test source (libx264), turned into JPEG by the console's encoder.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from edge_agent.console.data import HoldRelease, HoldRequest, Refused
from edge_agent.console.routes import mount_console
from edge_agent.console.still import Stills
from edge_agent.console.timeline import Bar, Shade
from edge_agent.core.model import iso
from edge_agent.media.testsrc import open_testsrc
from edge_agent.recording.packethub import PacketHub, pump
from tests.support.broker import free_port
from tests.support.liveview import URL

TOKEN = "console-test-token-0123456789"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LOCATIONS = ["gate", "lab"]
# What a camera or a config could put in a reason: the page must show it as text.
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


def _bars() -> list[tuple[str, Bar]]:
    out = []
    for i in range(6):  # gate: six 10-minute security recordings in the last 6 hours
        start = NOW - timedelta(hours=6 - i)
        out.append(("gate", Bar(f"rec-g{i}", "security", start, start + timedelta(minutes=10),
                                start + timedelta(hours=72))))  # fmt: skip
    lab_start = NOW - timedelta(hours=3)
    out.append(("lab", Bar("rec-l0", "rnd", lab_start, lab_start + timedelta(minutes=30),
                           NOW + timedelta(days=30), restricted=True)))  # fmt: skip
    out.append(("lab", Bar("rec-old", "rnd", NOW - timedelta(days=3), NOW - timedelta(days=3)
                           + timedelta(minutes=5), NOW + timedelta(days=27))))  # fmt: skip
    return out


@contextlib.contextmanager
def live_hub(source_id: str = "cam-lab") -> Iterator[PacketHub]:
    """A PacketHub fed by the real test source (libx264, a keyframe every second)."""
    hub = PacketHub()
    stop = threading.Event()
    src = open_testsrc(URL)
    t = threading.Thread(target=pump, args=(hub, source_id, src, stop), daemon=True)
    t.start()
    try:
        yield hub
    finally:
        stop.set()
        t.join(5)
        src.close()


@dataclass
class FakeData:
    hub: PacketHub | None = None
    liveview: bool = True
    calls: list[tuple[str, Any]] = field(default_factory=list)
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail: bool = False
    stills: Stills | None = None

    def __post_init__(self) -> None:
        if self.hub is not None:
            self.stills = Stills(self.hub)

    @property
    def liveview_enabled(self) -> bool:
        return self.liveview

    async def overview(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("catalog is on fire /secret/path")
        return {
            "state": "degraded",
            "reasons": ["cam-x: failed (401 Unauthorized)"],
            "clock": {"trusted": True, "reason": "ntp synchronised"},
            "storage": {"free_bytes": 52_000_000_000, "floor_bytes": 2_000_000_000},
            "broker": {"connected": True, "session": "persistent"},
            "outbox": {"pending": 3},
        }

    async def sources(self) -> list[dict[str, Any]]:
        return [
            {"id": "cam-lab", "location": "lab", "state": "recording", "reason": None,
             "last_segment": iso(NOW - timedelta(seconds=8)), "bitrate": 1_050_000},
            {"id": "cam-x", "location": "gate", "state": "failed",
             "reason": f"401 Unauthorized {HOSTILE}", "last_segment": None, "bitrate": None},
        ]  # fmt: skip

    async def still(self, source_id: str) -> bytes | None:
        self.calls.append(("still", source_id))
        if self.stills is None or source_id != "cam-lab":
            return None
        return await self.stills.get(source_id)

    async def locations(self) -> list[str]:
        return list(LOCATIONS)

    async def timeline(
        self, location: str, t0: datetime, t1: datetime
    ) -> tuple[list[Bar], list[Shade]]:
        if location not in LOCATIONS:
            raise Refused(f"no location {location!r}", 404)
        bars = [b for loc, b in _bars() if loc == location and b.end >= t0 and b.start <= t1]
        shades = [
            Shade(h["id"], datetime.fromisoformat(h["from"]), datetime.fromisoformat(h["to"]),
                  h["reason"])
            for h in self.held.values() if h["location"] == location
        ]  # fmt: skip
        return bars, shades

    async def holds(self) -> list[dict[str, Any]]:
        return list(self.held.values())

    async def place_hold(self, request: HoldRequest) -> dict[str, Any]:
        self.calls.append(("place_hold", request))
        if request.location is not None and request.location not in LOCATIONS:
            raise Refused(f"no location {request.location!r} in the config", 404)
        doc = {
            "id": f"hold-{uuid.uuid4().hex[:12]}",
            "kind": str(request.kind),
            "reason": request.reason,
            "placed_by": request.by,
            "placed_at": iso(NOW),
            "recording_ids": list(request.recording_ids),
            "location": request.location,
            "from": iso(request.start) if request.start else None,
            "to": iso(request.end) if request.end else None,
            "until": iso(request.until) if request.until else None,
        }
        self.held[doc["id"]] = doc
        return doc

    async def release_hold(self, release: HoldRelease) -> dict[str, Any]:
        self.calls.append(("release_hold", release))
        doc = self.held.pop(release.hold_id, None)
        if doc is None:
            raise Refused(f"no active hold {release.hold_id!r}", 404)
        return {**doc, "released_by": release.by}

    async def events(self, limit: int) -> list[dict[str, Any]]:
        rows = [{"ts": iso(NOW - timedelta(minutes=i)), "action": "segment.closed",
                 "subject": f"rec-g{i}", "actor": "agent"} for i in range(5)]  # fmt: skip
        return rows[:limit]

    async def doctor(self) -> list[dict[str, Any]]:
        return [
            {"name": "storage marker", "ok": True, "detail": "/srv/video/.edge-agent"},
            {"name": "clock", "ok": True, "detail": "synchronised"},
            {"name": "cam-x reachable", "ok": False, "detail": f"401 Unauthorized {HOSTILE}"},
        ]


@contextlib.asynccontextmanager
async def console_server(data: FakeData) -> AsyncIterator[str]:
    """A real aiohttp server on a free loopback port with the console mounted; its base URL."""
    app = web.Application(client_max_size=64 * 1024)  # as the live view's
    mount_console(app, data, TOKEN, now=lambda: NOW)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
