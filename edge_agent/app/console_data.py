"""The console's questions answered from the running daemon (docs/console.md).

Everything is computed when the page asks, in a worker thread where it touches
SQLite or PyAV: an idle console costs nothing. Holds are placed and released
through retention/holds.py, so the console's writes are audited exactly like
the CLI's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_agent.app.status import AgentStatus
from edge_agent.config.config import Config
from edge_agent.console.data import HoldRelease, HoldRequest, Refused
from edge_agent.console.still import Stills
from edge_agent.console.timeline import Bar, Shade
from edge_agent.core.model import RecState
from edge_agent.recording.packethub import PacketHub
from edge_agent.retention.holds import HoldError, hold_doc, place_hold, release_hold
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog

__all__ = ["DaemonConsoleData"]

MAX_BARS = 2000  # a 30-day window of 10 s segments is thinned, not sent whole


class DaemonConsoleData:
    def __init__(
        self,
        *,
        catalog: Catalog,
        status: AgentStatus,
        config: Callable[[], Config],
        hub: PacketHub | None,
        liveview: bool,
        now: Callable[[], datetime],
    ) -> None:
        self.catalog = catalog
        self.status = status
        self._config = config
        self._stills = Stills(hub) if hub is not None else None
        self._liveview = liveview
        self.now = now

    @property
    def liveview_enabled(self) -> bool:
        return self._liveview

    async def overview(self) -> dict[str, Any]:
        doc = await self.status.control_doc()
        t = doc["telemetry"]
        return {
            "state": doc["state"],
            "reasons": doc["reasons"],
            "clock": t["clock"],
            "storage": t["health"]["storage"],
            "free_space_floor_bytes": doc.get("free_space_floor_bytes"),
            "broker": doc["mqtt"],
            "outbox": t["outbox"],
            "recordings": t["recordings"],
            "retention": t["retention"],
            "overdue_judged": doc["overdue_judged"],
            "device": t["device"],
            "version": t["version"],
        }

    async def sources(self) -> list[dict[str, Any]]:
        cfg = self._config()
        signed = {loc.id for loc in cfg.locations if loc.signage}
        out = []
        for s in self.status.manager.snapshot():
            d = s.as_dict()
            d["last_segment"] = d.get("last_segment_end")
            d["bitrate"] = d.get("bitrate_bps")
            d["live"] = self._liveview and s.location in signed
            out.append(d)
        return out

    async def still(self, source_id: str) -> bytes | None:
        if self._stills is None:
            return None
        cfg = self._config()
        signed = {loc.id for loc in cfg.locations if loc.signage}
        # The console must not show a picture the live view would refuse.
        if not any(s.id == source_id and s.location in signed for s in cfg.sources):
            return None
        return await self._stills.get(source_id)

    async def locations(self) -> list[str]:
        cfg = self._config()
        known = [loc.id for loc in cfg.locations]
        held = await asyncio.to_thread(self.catalog.recordings.locations)
        return known + sorted(set(held) - set(known))

    async def timeline(
        self, location: str, t0: datetime, t1: datetime
    ) -> tuple[list[Bar], list[Shade]]:
        if location not in await self.locations():
            raise Refused(f"unknown location {location!r}", 404)

        def read() -> tuple[list[Bar], list[Shade]]:
            recs = self.catalog.recordings.list(
                location=location,
                since=t0,
                until=t1,
                states=(RecState.ACTIVE, RecState.RESTRICTED),
                limit=MAX_BARS,
            )
            bars = [
                Bar(
                    r.id,
                    str(r.tags.purpose),
                    r.start,
                    r.end,
                    r.deadline,
                    restricted=r.state is RecState.RESTRICTED,
                    derivative=r.tags.anonymized,
                )
                for r in recs
            ]
            shades = []
            for h in self.catalog.holds.list():
                if h.location == location and h.window_start is not None:
                    shades.append(Shade(h.id, h.window_start, h.window_end, h.reason))
                elif h.recording_ids:
                    mine = [r for r in recs if r.id in h.recording_ids]
                    if mine:
                        start = min(r.start for r in mine)
                        end = max(r.end for r in mine)
                        shades.append(Shade(h.id, start, end, h.reason))
            return bars, shades

        return await asyncio.to_thread(read)

    async def holds(self) -> list[dict[str, Any]]:
        holds = await asyncio.to_thread(self.catalog.holds.list)
        return [hold_doc(h) for h in holds]

    async def place_hold(self, request: HoldRequest) -> dict[str, Any]:
        def place() -> dict[str, Any]:
            try:
                h = place_hold(
                    self.catalog,
                    kind=request.kind,
                    reason=request.reason,
                    by=f"console:{request.by}",
                    now=self.now(),
                    recording_ids=request.recording_ids,
                    location=request.location,
                    start=request.start,
                    end=request.end,
                    until=request.until,
                )
            except HoldError as e:
                raise Refused(str(e)) from None
            return hold_doc(h)

        return await asyncio.to_thread(place)

    async def release_hold(self, release: HoldRelease) -> dict[str, Any]:
        def rel() -> dict[str, Any]:
            try:
                h = release_hold(
                    self.catalog,
                    release.hold_id,
                    by=f"console:{release.by}",
                    reason=release.reason,
                    now=self.now(),
                )
            except HoldError as e:
                raise Refused(str(e), 404 if "unknown" in str(e) else 400) from None
            return hold_doc(h)

        return await asyncio.to_thread(rel)

    async def events(self, limit: int) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            return [
                {k: e[k] for k in ("seq", "ts", "actor", "action", "subject", "data")}
                for e in AuditLog(self.catalog).recent(limit)
            ]

        return await asyncio.to_thread(read)

    async def doctor(self) -> list[dict[str, Any]]:
        path = self._config().path
        if path is None:
            return []
        from edge_agent.app.doctor import Level, run_checks

        checks = await asyncio.to_thread(run_checks, Path(path), timeout=3.0, now=self.now())
        return [
            {
                "name": c.name,
                "ok": c.level is not Level.FAIL,
                "level": str(c.level),
                "detail": c.detail,
            }
            for c in checks
        ]
