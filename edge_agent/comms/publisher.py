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

A publish the broker refuses never wedges the outbox (docs/brokers.md). On
MQTT 5 the broker says so in the PUBACK ("not authorized", 0x87); a 3.1.1
broker either drops the message (nothing to see) or closes the connection,
and then the entries that were in flight are sent again one at a time until
the one the broker closes the connection on is found. Either way the refused
event's topic is held: its events stay in the outbox, are counted, and are
not sent again until a probe (its oldest event, with exponential backoff from
5 s to 10 min) is accepted; everything else keeps flowing in seq order. Each
hold raises ``alarm.publish_refused`` once and ``alarm.cleared`` when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from edge_agent.comms.mqtt import MqttLink, NotConnected
from edge_agent.core.backoff import backoff_delay
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


REFUSED_RETRY_BASE = 5.0
REFUSED_RETRY_CAP = 600.0
# A connection lost this soon after the only publish in flight is taken as the
# broker's answer to it (3.1.1 brokers that close the connection on a refusal).
LOSS_BLAME_SECONDS = 3.0


@dataclass
class _Hold:
    """A topic the broker refused: its events wait in the outbox for a probe."""

    reason: str
    attempts: int = 1
    retry_at: float = 0.0
    probing: bool = False


@dataclass(frozen=True)
class _Sent:
    seq: int
    topic: str
    at: float
    probe: bool


class Publisher:
    """A daemon component: ``await run(stop)``.

    ``route`` maps an event type to its topic (default: every event on ``topic``).
    """

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
        route: Callable[[str], str] | None = None,
        rng: random.Random | None = None,
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
        self._route = route or (lambda _type: topic)
        self._rng = rng or random.Random()
        self._inflight: dict[int, _Sent] = {}  # mid -> what was sent
        self._acked: list[int] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        # Refusals: held topics, the events they hold (seq -> topic), probes due.
        self._holds: dict[str, _Hold] = {}
        self._held: dict[int, str] = {}
        self._due: list[tuple[float, str]] = []
        self._ready: deque[int] = deque()  # released by a hold that ended
        self._suspects: set[int] = set()  # in flight when a connection was lost
        self._alarms: list[tuple[str, dict[str, Any]]] = []
        self.published = 0
        self.refusals = 0  # PUBACKs (or closed connections) refusing a publish
        link.on_puback(self._on_puback)

    def wake(self) -> None:
        """New events were committed: look now rather than at the next poll."""
        self._wake.set()

    def refused_counts(self) -> tuple[int, int]:
        """(refusals since start, events held now): for telemetry."""
        return self.refusals, len(self._held)

    # -- refusals --------------------------------------------------------------

    def _on_puback(self, mid: int, ok: bool) -> None:
        sent = self._inflight.pop(mid, None)
        if sent is None:
            return
        self._suspects.discard(sent.seq)
        if ok:
            self._acked.append(sent.seq)
            self.published += 1
            self._held.pop(sent.seq, None)
            if sent.probe:
                self._release(sent.topic)
        else:
            self._refused(sent, "not authorized or refused by the broker (PUBACK)")
        self._progress.set()

    def _refused(self, sent: _Sent, reason: str) -> None:
        self.refusals += 1
        self._held[sent.seq] = sent.topic
        hold = self._holds.get(sent.topic)
        if hold is None:
            hold = self._holds[sent.topic] = _Hold(reason)
            log.warning("broker refused a publish on %s (%s): holding it", sent.topic, reason)
            self._alarms.append(
                (
                    "alarm.publish_refused",
                    {"topic": sent.topic, "reason": reason, "first_seq": sent.seq},
                )
            )
        elif sent.probe:
            hold.attempts += 1
            hold.probing = False
        else:
            return  # one more of a held topic's events that were in flight
        delay = backoff_delay(
            hold.attempts, REFUSED_RETRY_BASE, REFUSED_RETRY_CAP, self._rng.random()
        )
        hold.retry_at = time.monotonic() + delay
        heapq.heappush(self._due, (hold.retry_at, sent.topic))

    def _release(self, topic: str) -> None:
        """A probe on a held topic was accepted: its other events go out now, in order."""
        hold = self._holds.pop(topic, None)
        if hold is None:
            return
        seqs = sorted(s for s, t in self._held.items() if t == topic)
        for s in seqs:
            del self._held[s]
        self._ready.extend(seqs)
        log.info("broker accepts %s again: releasing %d held events", topic, len(seqs))
        self._alarms.append(
            ("alarm.cleared", {"alarm": "publish_refused", "topic": topic, "held": len(seqs)})
        )

    def _probe(self) -> tuple[int, str, str] | None:
        """The oldest held event of a topic whose retry is due, or None."""
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            at, topic = heapq.heappop(self._due)
            hold = self._holds.get(topic)
            if hold is None or hold.probing or hold.retry_at != at:
                continue  # stale entry
            for seq in sorted(s for s, t in self._held.items() if t == topic):
                row = self._row(seq)
                if row is not None:
                    hold.probing = True
                    return row
                del self._held[seq]  # dropped from the outbox by its caps meanwhile
            self._holds.pop(topic, None)
        return None

    def _blame_loss(self) -> None:
        """The connection was lost: was it the broker's answer to one publish?"""
        sent = list(self._inflight.values())
        self._inflight.clear()
        for s in sent:
            hold = self._holds.get(s.topic)
            if s.probe and hold is not None:
                hold.probing = False
                heapq.heappush(self._due, (hold.retry_at, s.topic))
        lost_at = self.link.lost_at or time.monotonic()
        lone = len(sent) == 1 and (sent[0].probe or sent[0].seq in self._suspects)
        if lone and lost_at - sent[0].at < LOSS_BLAME_SECONDS:
            self._suspects.discard(sent[0].seq)
            self._refused(sent[0], "the broker closed the connection on this publish")
        elif sent:
            # Send these one at a time on the next connection to find the culprit.
            self._suspects = {s.seq for s in sent if not s.probe}

    async def _raise_alarms(self) -> None:
        if self._alarms:
            alarms, self._alarms = self._alarms, []
            await asyncio.to_thread(
                Outbox(self.catalog).enqueue_many, alarms, ts=self._now(), cls="audit"
            )
            self._wake.set()

    # -- the outbox ------------------------------------------------------------

    def _fetch(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        return Outbox(self.catalog).rows_after(after, limit)

    def _row(self, seq: int) -> tuple[int, str, str] | None:
        return Outbox(self.catalog).row(seq)

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
            await self._raise_alarms()
            if not self.link.connected:
                await self._flush()
                await _first(stop.wait(), self.link.wait_connected())
                continue
            await self._drain(stop)
        await self._flush()

    def _next(
        self, buffer: deque[tuple[int, str, str]], fetched: int, window: int
    ) -> tuple[tuple[int, str, str] | None, int, bool]:
        """The next entry to send: a due probe, a released event, then the outbox in order."""
        probe = self._probe()
        if probe is not None:
            return probe, fetched, True
        while self._ready:
            row = self._row(self._ready.popleft())
            if row is not None:
                return row, fetched, False
        while True:
            if not buffer:
                buffer.extend(self._fetch(fetched, max(4 * window, 400)))
                if not buffer:
                    return None, fetched, False
                fetched = buffer[-1][0]
            row = buffer.popleft()
            if self._suspects and row[0] > max(self._suspects):
                self._suspects.clear()  # the suspects are gone from the outbox
            if row[0] not in self._held:
                return row, fetched, False

    async def _drain(self, stop: asyncio.Event) -> None:
        """Publish while this connection lasts."""
        generation = self.link.generation
        self._inflight.clear()
        self._ready.clear()  # re-read from the outbox, in order, on this connection
        window = max(1, min(self.window, self.link.receive_maximum - 10))
        # A read-ahead of durable rows (they stay in the outbox until acked).
        buffer: deque[tuple[int, str, str]] = deque()
        fetched = 0
        last_flush = time.monotonic()
        while not stop.is_set() and self.link.connected and generation == self.link.generation:
            # Cleared before looking, so a PUBACK or wake during the work below
            # is not lost (it sets the event again and the wait returns at once).
            self._progress.clear()
            self._wake.clear()
            sent = skipped = 0
            # Keep the window full on every PUBACK: a stalled pipe leaves the broker's
            # small PUBACKs waiting on Nagle and delayed ACKs (tens of ms each round).
            # After a lost connection, one at a time until the suspects are through.
            while len(self._inflight) < (1 if self._suspects else window):
                row, fetched, probe = self._next(buffer, fetched, window)
                if row is None:
                    break
                seq, type_, payload = row
                topic = self._held.get(seq) or self._route(type_)
                if topic in self._holds and not probe:
                    self._held[seq] = topic  # a held topic: wait for its probe
                    skipped += 1
                    if skipped >= 1000:
                        break  # a long run of held events: let the loop breathe
                    continue
                try:
                    mid = self.link.publish(topic, payload, qos=1)
                except NotConnected:
                    break
                self._inflight[mid] = _Sent(seq, topic, time.monotonic(), probe)
                sent += 1
            await self._raise_alarms()
            if len(self._acked) >= self.ack_batch or (
                self._acked and time.monotonic() - last_flush > self.ack_delay
            ):
                await self._flush()
                last_flush = time.monotonic()
            if skipped >= 1000:
                await asyncio.sleep(0)
            elif sent == 0 and not self._inflight:
                await self._flush()
                await _first(stop.wait(), self._wake.wait(), limit=self.idle_poll)
            elif sent == 0:
                await _first(self._progress.wait(), limit=0.5)
        # Entries still in flight are re-read on the next connection.
        if not stop.is_set():
            self._blame_loss()
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
