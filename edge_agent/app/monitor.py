"""The daemon's monitor task: systemd status and watchdog, clock trust, disk pressure.

Once a second it ticks the storage watch, keeps the intake's clock trust in
step with the clock guard (a wall-clock step has the janitor judge at once),
pauses the lowest-priority sources while the disk is full of held footage
(:mod:`edge_agent.core.pressure`), and sends ``WATCHDOG=1`` only while
:mod:`edge_agent.app.health` passes. Every ``status_interval`` it samples the
catalog off the loop and sends the systemd ``STATUS=`` line.
See docs/design/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from edge_agent.app.health import HealthReading, HealthSettings, LagProbe, OutboxProgress, problems
from edge_agent.app.storage_watch import StorageWatch
from edge_agent.comms.command_exec import ClockHooks
from edge_agent.comms.mqtt import MqttLink
from edge_agent.comms.publisher import Publisher
from edge_agent.core.clock import wall_step
from edge_agent.core.pressure import PAUSE_REASON, PressureValve
from edge_agent.host import memtune, sdnotify
from edge_agent.intake.intake import Intake
from edge_agent.recording.recorder_manager import RecorderManager
from edge_agent.retention.janitor import Janitor
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox

log = logging.getLogger(__name__)

__all__ = ["Monitor", "command_clock_hooks"]


class Monitor:
    """The ``monitor`` component; its figures feed the status line."""

    name = "monitor"

    def __init__(
        self,
        catalog: Catalog,
        *,
        janitor: Janitor,
        intake: Intake,
        manager: RecorderManager,
        storage: StorageWatch | None,
        health: HealthSettings,
        status_interval: float,
        sources: Callable[[], list[tuple[str, int]]],
        status_line: Callable[[], str],
    ) -> None:
        self.catalog = catalog
        self.janitor = janitor
        self.intake = intake
        self.manager = manager
        self.storage = storage
        self.health = health
        self.status_interval = status_interval
        self._sources = sources
        self._status_line = status_line
        # Set by the daemon once MQTT is wired: the outbox is judged only with a link.
        self.link: MqttLink | None = None
        self.publisher: Publisher | None = None
        self.recordings = 0
        self.outbox_depth = 0
        self.health_problems: list[str] = []
        self.valve = PressureValve()
        self._outbox_stalled: float | None = None
        self._clock_offset: tuple[float, float] | None = None
        self._clock_recheck_at = 0.0

    async def sample(self) -> None:
        """Count recordings and the outbox, and wake the janitor if the disk is short."""
        janitor = self.janitor

        def read() -> tuple[int, int, bool]:
            count = sum(s.count for s in self.catalog.recordings.summaries().values())
            depth = Outbox(self.catalog).depth()
            try:
                free, total = janitor.free_space()
                short = free < janitor.floor_bytes(total)
            except OSError:
                short = False  # the janitor's own pass reports an unreadable disk
            memtune.trim()  # with the status cadence: cheap, and RSS stays flat for months
            return count, depth, short

        self.recordings, self.outbox_depth, short = await asyncio.to_thread(read)
        last = janitor.last
        # A disk the catalog holds under the floor is the janitor's storage_budget alarm,
        # not footage pressure: it checks again every pressure_sleep without a poke.
        if short and not (last and (last.disk_pressure or last.storage_budget)):
            # The janitor sleeps until its next deadline (up to a minute); cameras
            # fill a disk faster than that, so pressure wakes it now.
            log.warning("free space below the floor: waking the janitor")
            janitor.poke()

    async def run(self, stop: asyncio.Event) -> None:
        interval = sdnotify.watchdog_interval()
        tick = min(1.0, interval / 2) if interval else 1.0
        probe = LagProbe(self.health.lag_probe, self.health.lag_window)
        outbox = OutboxProgress(time.monotonic())
        started = time.monotonic()
        sampler: asyncio.Task[None] | None = None
        next_status = 0.0
        probe_task = asyncio.create_task(probe.run(), name="monitor/lag")
        try:
            while not stop.is_set():
                if self.storage is not None:
                    await self.storage.tick()
                mono = time.monotonic()
                self._watch_clock_steps()
                self._follow_clock()
                self._relieve_pressure()
                if sampler is not None and sampler.done():
                    if not sampler.cancelled() and sampler.exception() is None:
                        self._outbox_stalled = self._outbox_check(outbox, mono)
                        sdnotify.status(self._status_line())
                    sampler = None
                if sampler is None and mono >= next_status:
                    sampler = asyncio.create_task(self.sample(), name="monitor/sample")
                    next_status = mono + self.status_interval
                if self.catalog.anchors_pending:
                    await asyncio.to_thread(self.catalog.flush_anchors)
                worker = self.intake.media_worker
                if worker is not None and worker.pid is not None:
                    await asyncio.to_thread(worker.stop_if_idle)
                self._judge_health(probe, mono - (self.janitor.heartbeat or started))
                if interval and not self.health_problems:
                    sdnotify.watchdog()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), tick)
        finally:
            probe_task.cancel()
            if sampler is not None:
                sampler.cancel()
            if self.storage is not None:
                await self.storage.close()

    def _judge_health(self, probe: LagProbe, janitor_silent: float) -> None:
        reading = HealthReading(
            loop_lag=probe.worst(),
            janitor_silent=janitor_silent,
            janitor_limit=self.health.janitor_factor * self.janitor.max_sleep,
            outbox_stalled=self._outbox_stalled,
        )
        found = problems(reading, self.health)
        if found != self.health_problems:
            if found:
                log.error("health check failing, withholding WATCHDOG=1: %s", found)
            else:
                log.info("health checks pass again")
            self.health_problems = found

    def _outbox_check(self, progress: OutboxProgress, mono: float) -> float | None:
        if self.link is None or self.publisher is None:
            return None
        return progress.observe(
            mono,
            connected=self.link.connected,
            depth=self.outbox_depth,
            published=self.publisher.published,
        )

    def _watch_clock_steps(self) -> None:
        # The janitor judges the clock on each pass, up to a minute apart; a step
        # seen here has it judge now, so the intake stops trusting a clock that was
        # just set wrong within a second instead of tagging a minute of segments.
        clock = self.janitor.guard.clock
        reading = (clock.now().timestamp(), clock.boottime())
        step = wall_step(self._clock_offset, reading)
        self._clock_offset = reading
        if step is not None:
            log.warning("wall clock stepped by %+.1f s: re-checking it now", step)
            self.janitor.poke()
            return
        # While untrusted, evidence of a sync (a flag file, `clock accept` from a shell)
        # may appear at any time: judge again each status tick, not a minute later.
        v = self.janitor.guard.last
        mono = time.monotonic()
        if v is not None and not v.trusted and mono >= self._clock_recheck_at:
            self._clock_recheck_at = mono + self.status_interval
            self.janitor.poke()

    def _follow_clock(self) -> None:
        v = self.janitor.guard.last
        if v is not None and v.trusted != self.intake.clock_trusted:
            self.intake.clock_trusted = v.trusted
            if v.trusted:
                log.info("clock trusted again: new recordings get deadlines")
            else:
                log.warning("clock untrusted (%s): new recordings are marked so", v.reason)

    def _relieve_pressure(self) -> None:
        last = self.janitor.last
        pause, resume = self.valve.step(
            full=self.janitor.storage_full_held,
            sweep=last.at if last else None,
            free_bytes=last.free_bytes if last else None,
            sources=self._sources(),
        )
        why = (last.full_reason if last else None) or PAUSE_REASON
        for sid in pause:
            log.warning("pausing source %s: %s", sid, why)
            with contextlib.suppress(KeyError):
                self.manager.pause(sid, why)
        for sid in resume:
            log.info("resuming source %s: storage no longer full", sid)
            with contextlib.suppress(KeyError):
                self.manager.resume(sid)


def command_clock_hooks(
    janitor: Janitor, loop: Callable[[], asyncio.AbstractEventLoop | None]
) -> ClockHooks:
    """The clock guard as signed commands reach it (docs/design/time.md)."""
    guard = janitor.guard

    def offer(issued_at: datetime, what: str) -> None:
        guard.offer_command_time(issued_at, what)
        if guard.last is not None and not guard.last.trusted:
            janitor.poke()

    def confirm(issued_at: datetime, actor: str, reason: str, what: str) -> dict[str, Any]:
        # A worker thread: the guard writes the catalog.
        from edge_agent.retention.clockguard import ClockAcceptError

        try:
            v = guard.confirm_by_command(issued_at, actor=actor, reason=reason, what=what)
        except ClockAcceptError as exc:
            raise ValueError(str(exc)) from None
        running = loop()
        if running is not None:
            with contextlib.suppress(RuntimeError):
                running.call_soon_threadsafe(janitor.poke)
        return {
            "clock": "trusted" if v.trusted else "untrusted",
            "reason": v.reason,
            "evidence": guard.describe_evidence(v, cached=False),
        }

    return ClockHooks(offer=offer, confirm=confirm)
