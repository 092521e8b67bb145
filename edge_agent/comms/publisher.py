"""Drain the durable outbox to ``{prefix}/{device}/events`` (QoS 1), in seq order.

An entry leaves the outbox only when the broker acknowledged its PUBLISH
(PUBACK, matched by mid). At most ``window`` entries are in flight, so paho
never holds a queue of its own; on a lost connection the in-flight entries
are simply read again from the outbox on the next connection (at least once,
``id`` for de-duplication). Acknowledgements are deleted in batches off the
event loop.

The outbox is capped by size and age. Telemetry-class entries go first, and
on their own once too old; audit-class entries only when the size cap cannot
be met otherwise, and never silently: the same transaction enqueues an
``alarm.outbox_overflow`` event naming the dropped seq ranges and writes an
audit entry (the audit log still holds the changes those events reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from edge_agent.comms.mqtt import MqttLink, NotConnected
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox
from edge_agent.store.rows import to_epoch

log = logging.getLogger(__name__)


class EventPayload(BaseModel):
    """An event on ``{prefix}/{device}/events``; type-specific fields sit beside these."""

    model_config = ConfigDict(extra="allow")

    id: str
    seq: int
    ts: str
    type: str


@dataclass(frozen=True)
class OutboxLimits:
    max_entries: int = 200_000
    max_age_seconds: float = 30 * 86400.0  # telemetry-class only


@dataclass(frozen=True)
class OverflowReport:
    dropped_telemetry: int
    dropped_audit: int
    seq_ranges: list[tuple[int, int]]


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def enforce_limits(
    catalog: Catalog, limits: OutboxLimits, now: datetime, *, actor: str = "agent"
) -> OverflowReport | None:
    """Trim the outbox to its caps; one transaction with the alarm and audit entry."""
    outbox = Outbox(catalog)
    with catalog.transaction():
        depth = outbox.depth()
        old = outbox.seqs("telemetry", before=to_epoch(now) - limits.max_age_seconds)
        remaining = depth - len(old)
        # One more than the excess: room for the alarm event itself.
        excess = remaining - limits.max_entries + 1 if remaining > limits.max_entries else 0
        tele: list[int] = []
        if excess:
            old_set = set(old)
            rows = outbox.seqs("telemetry", limit=len(old) + excess)
            tele = [s for s in rows if s not in old_set][:excess]
        audit_drop: list[int] = []
        if excess > len(tele):
            audit_drop = outbox.seqs("audit", limit=excess - len(tele))
        dropped = old + tele + audit_drop
        if not dropped:
            return None
        outbox.ack(dropped)
        report = OverflowReport(len(old) + len(tele), len(audit_drop), _ranges(dropped))
        data: dict[str, Any] = {
            "dropped_telemetry": report.dropped_telemetry,
            "dropped_audit": report.dropped_audit,
            "seq_ranges": [list(r) for r in report.seq_ranges],
            "max_entries": limits.max_entries,
            "max_age_seconds": limits.max_age_seconds,
        }
        outbox.enqueue("alarm.outbox_overflow", data, ts=now, cls="audit")
        AuditLog(catalog).append("outbox.overflow", actor=actor, data=data, ts=now)
    log.error(
        "outbox over its cap: dropped %d telemetry and %d audit events",
        report.dropped_telemetry,
        report.dropped_audit,
    )
    return report


class Publisher:
    """A daemon component: ``await run(stop)``."""

    name = "publisher"

    def __init__(
        self,
        catalog: Catalog,
        link: MqttLink,
        topic: str,
        *,
        now: Callable[[], datetime],
        window: int = 100,
        limits: OutboxLimits = OutboxLimits(),
        idle_poll: float = 0.2,
        ack_batch: int = 500,
        ack_delay: float = 0.05,
    ) -> None:
        self.catalog = catalog
        self.link = link
        self.topic = topic
        self._now = now
        self.window = window
        self.limits = limits
        self.idle_poll = idle_poll
        self.ack_batch = ack_batch
        self.ack_delay = ack_delay
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._acked: list[int] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._failed = False
        self.published = 0
        link.on_puback(self._on_puback)

    def wake(self) -> None:
        """New events were committed: look now rather than at the next poll."""
        self._wake.set()

    def _on_puback(self, mid: int, ok: bool) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return
        if ok:
            self._acked.append(seq)
            self.published += 1
        else:
            # The broker refused it (e.g. not authorised): keep it, try again later.
            self._failed = True
        self._progress.set()

    def _fetch(self, after: int, limit: int) -> list[tuple[int, str]]:
        return Outbox(self.catalog).payloads_after(after, limit)

    async def _flush(self) -> None:
        if self._acked:
            batch, self._acked = self._acked, []
            await asyncio.to_thread(Outbox(self.catalog).ack, batch)

    async def run(self, stop: asyncio.Event) -> None:
        last_limits = 0.0
        while not stop.is_set():
            if time.monotonic() - last_limits > 60:
                last_limits = time.monotonic()
                await asyncio.to_thread(enforce_limits, self.catalog, self.limits, self._now())
            if not self.link.connected:
                await self._flush()
                await _first(stop.wait(), self.link.wait_connected())
                continue
            await self._drain(stop)
        await self._flush()

    async def _drain(self, stop: asyncio.Event) -> None:
        """Publish while this connection lasts."""
        generation = self.link.generation
        self._inflight.clear()
        self._failed = False
        window = max(1, min(self.window, self.link.receive_maximum - 10))
        # A read-ahead of durable rows (they stay in the outbox until acked).
        buffer: deque[tuple[int, str]] = deque()
        fetched = 0
        last_flush = time.monotonic()
        while not stop.is_set() and self.link.connected and generation == self.link.generation:
            if self._failed:
                log.warning("broker refused an event; retrying in 5 s")
                await asyncio.sleep(5)
                return
            # Cleared before looking, so a PUBACK or wake during the work below
            # is not lost (it sets the event again and the wait returns at once).
            self._progress.clear()
            self._wake.clear()
            sent = 0
            # Keep the window full on every PUBACK: a stalled pipe leaves the broker's
            # small PUBACKs waiting on Nagle and delayed ACKs (tens of ms each round).
            while len(self._inflight) < window:
                if not buffer:
                    buffer.extend(self._fetch(fetched, max(4 * window, 400)))
                    if not buffer:
                        break
                    fetched = buffer[-1][0]
                seq, payload = buffer.popleft()
                try:
                    mid = self.link.publish(self.topic, payload, qos=1)
                except NotConnected:
                    return
                self._inflight[mid] = seq
                sent += 1
            if len(self._acked) >= self.ack_batch or (
                self._acked and time.monotonic() - last_flush > self.ack_delay
            ):
                await self._flush()
                last_flush = time.monotonic()
            if sent == 0 and not self._inflight:
                await self._flush()
                await _first(stop.wait(), self._wake.wait(), limit=self.idle_poll)
            elif sent == 0:
                await _first(self._progress.wait(), limit=0.5)
        # Entries still in flight are re-read on the next connection.
        self._inflight.clear()
        await self._flush()


async def _first(*aws: Any, limit: float | None = None) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
