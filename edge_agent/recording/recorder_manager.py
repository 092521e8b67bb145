"""All configured sources: one recorder task each, reconnects, pause/resume, telemetry.

:class:`RecorderManager` is what the daemon runs::

    manager = RecorderManager(source_plans(cfg, ms), intake, storage_root)
    await manager.run(stop)          # returns after stop is set and segments are filed

Per source an asyncio task starts a worker thread per connection
(:meth:`Recorder.run_session`), waits for it, and reconnects with jittered
exponential backoff. Closed segments come back to the event loop and are
filed through :meth:`Intake.register_segments` in worker threads, a wave of
them per catalog transaction (synced together with ``fsync = "batched"``),
so the recording threads never wait for hashing, fsync or SQLite
(:mod:`edge_agent.recording.filer`).

Before any source starts, segments left behind by a crash are adopted
(:func:`~edge_agent.recording.recorder.recover_partials`).

Policy at the source: a location without signage does not record (state
``degraded``, reason named); audio only in a signed audio room. Audio that
cannot be recorded never stops video: the source records without it, reports
``degraded`` and an ``alarm.audio_dropped`` event says why (docs/audio.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from edge_agent.core.backoff import backoff_delay
from edge_agent.core.model import Tags, utcnow
from edge_agent.intake.intake import Intake
from edge_agent.recording.filer import SegmentFiler
from edge_agent.recording.recorder import (
    CONTAINER,
    Recorder,
    RecorderSettings,
    SessionResult,
    SourceStatus,
    State,
    recover_partials,
)

if TYPE_CHECKING:
    from edge_agent.recording.packethub import PacketHub
    from edge_agent.retention.storage_gate import StorageGate

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ManagerSettings:
    stall_seconds: float = 10.0  # no packet for this long: the source is restarted
    open_timeout: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    fail_after: int = 3  # consecutive failed attempts before the state says "failed"
    max_drift: float = 10.0
    shutdown_timeout: float = 20.0


@dataclass(frozen=True)
class SourcePlan:
    """One source as the manager runs it: built from the config in app/settings.py."""

    settings: RecorderSettings
    priority: int = 0

    @property
    def id(self) -> str:
        return self.settings.source_id


@dataclass(eq=False)
class _Handle:
    recorder: Recorder
    priority: int
    task: asyncio.Task[None] | None = None
    session_stop: threading.Event | None = None
    paused: str | None = None
    stopping: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def interrupt(self) -> None:
        if self.session_stop is not None:
            self.session_stop.set()
        self.wake.set()


class RecorderManager:
    def __init__(
        self,
        sources: Sequence[SourcePlan],
        intake: Intake,
        storage_root: Path,
        *,
        settings: ManagerSettings | None = None,
        now: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.storage_root = storage_root
        self.intake = intake
        self.settings = settings or ManagerSettings()
        self._now = now
        self._rng = rng
        self._handles: dict[str, _Handle] = {}
        self._order: list[str] = []
        # Closed segments and alarms from the recording threads, filed in order.
        self.filer = SegmentFiler(intake, now)
        # The live view's packet hub (edge_agent.recording.packethub), if any.
        self.hub: PacketHub | None = None
        self.recovered: list[str] = []  # ids adopted from a crash at start-up
        self._running = False
        # Storage lost or failing (edge_agent.app.storage_watch): every source waits.
        self.held: str | None = None
        for src in sources:
            self._add(src)

    # -- public API --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Adopt crash leftovers, record every source until ``stop``, file the last segments."""
        self.filer.loop = asyncio.get_running_loop()
        recs = await asyncio.to_thread(
            recover_partials, self.storage_root, self.intake, self._now()
        )
        self.recovered = [r.id for r in recs]
        if recs:
            log.info("adopted %d segment(s) left by an earlier run", len(recs))
        filer = asyncio.create_task(self.filer.run(), name="recorder-filer")
        watchdog = asyncio.create_task(self._watchdog(), name="recorder-watchdog")
        self._running = True
        try:
            for h in self._handles.values():
                self._launch(h)
            await stop.wait()
        finally:
            self._running = False
            watchdog.cancel()
            await self._stop_all()
            await self.filer.drained(self.settings.shutdown_timeout)
            filer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await filer
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    @property
    def filed(self) -> int:
        """Segments catalogued since start."""
        return self.filer.filed

    @property
    def gate(self) -> StorageGate | None:
        """Storage lost or failing: segments are not filed (edge_agent.app.storage_watch)."""
        return self.filer.gate

    @gate.setter
    def gate(self, gate: StorageGate | None) -> None:
        self.filer.gate = gate

    def snapshot(self) -> list[SourceStatus]:
        """Every configured source's state, in config order (for telemetry and ``status``)."""
        return [self._handles[i].recorder.status() for i in self._order if i in self._handles]

    def pause(self, source_id: str, reason: str) -> None:
        """Stop recording ``source_id`` (disk pressure, operator) until :meth:`resume`.

        The open segment is closed and filed; the state is ``paused`` with ``reason``.
        """
        h = self._handle(source_id)
        h.paused = reason
        h.interrupt()

    def resume(self, source_id: str) -> None:
        h = self._handle(source_id)
        h.paused = None
        h.wake.set()

    def hold(self, reason: str) -> None:
        """Stop every source at once (the storage is gone or failing) until :meth:`release`."""
        self.held = reason
        for h in self._handles.values():
            h.interrupt()

    def release(self) -> None:
        self.held = None
        for h in self._handles.values():
            h.wake.set()

    async def quiesce(self, within: float = 10.0) -> None:
        """Wait until no session runs and every closed segment is filed (bounded)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while any(h.session_stop is not None for h in self._handles.values()):
            if loop.time() >= end:
                return
            await asyncio.sleep(0.05)
        await self.filer.drained(max(0.1, end - loop.time()))

    def paused(self) -> dict[str, str]:
        return {i: h.paused for i, h in self._handles.items() if h.paused is not None}

    def attach_hub(self, hub: PacketHub) -> None:
        """Publish every source's recorded packets into ``hub`` (the live view).

        Call before :meth:`run`; sources added by a reload get it too. The hub
        keeps its viewers across reconnects and reloads: they are keyed by source id.
        """
        self.hub = hub
        for h in self._handles.values():
            h.recorder.hub = hub

    async def apply_config(self, sources: Sequence[SourcePlan]) -> None:
        """Switch to a new config (SIGHUP): stop removed or changed sources, start new ones.

        Unchanged sources keep recording without a cut.
        """
        wanted = {s.id: s for s in sources}
        for sid in list(self._handles):
            h = self._handles[sid]
            src = wanted.get(sid)
            if src is not None and src.settings == h.recorder.settings:
                h.priority = src.priority
                continue
            await self._stop_one(sid)
        self._order = [s.id for s in sources]
        for src in sources:
            if src.id not in self._handles:
                h = self._add(src)
                if self._running:
                    self._launch(h)

    # -- sources -------------------------------------------------------------------------

    def _handle(self, source_id: str) -> _Handle:
        h = self._handles.get(source_id)
        if h is None:
            known = ", ".join(self._order) or "none"
            raise KeyError(f"unknown source {source_id!r} (known: {known})")
        return h

    def _add(self, src: SourcePlan) -> _Handle:
        rs = src.settings
        intake = self.intake

        def segment_path(tags: Tags, rec_id: str) -> Path:
            # The intake owns the storage layout; the recorder only asks for a name.
            return intake.final_path(tags, rec_id, src.id, CONTAINER)

        rec = Recorder(
            rs,
            segment_path=segment_path,
            on_closed=self.filer.segment_closed,
            on_alarm=self.filer.alarm,
            now=self._now,
            clock_trusted=lambda: intake.clock_trusted,
            hub=self.hub,
        )
        h = _Handle(rec, src.priority)
        self._handles[src.id] = h
        if src.id not in self._order:
            self._order.append(src.id)
        return h

    def _launch(self, h: _Handle) -> None:
        if h.task is None:
            name = f"recorder-{h.recorder.settings.source_id}"
            h.task = asyncio.create_task(self._run_source(h), name=name)

    async def _stop_one(self, source_id: str) -> None:
        h = self._handles.pop(source_id)
        h.stopping = True
        h.interrupt()
        if h.task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(h.task), self.settings.shutdown_timeout)
        h.recorder.set_state(State.STOPPED)

    async def _stop_all(self) -> None:
        for h in self._handles.values():
            h.stopping = True
            h.interrupt()
        tasks = [h.task for h in self._handles.values() if h.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout)
            for t in pending:
                # A worker stuck in a read that ignores its timeout: give up on it; its
                # partial segment is adopted at the next start.
                log.error("%s did not stop in time", t.get_name())
                t.cancel()
        for h in self._handles.values():
            h.recorder.set_state(State.STOPPED)

    async def _run_source(self, h: _Handle) -> None:
        rec = h.recorder
        rs = rec.settings
        attempt = 0
        while not h.stopping:
            h.wake.clear()
            why = self.held or h.paused
            if why is not None:
                rec.set_state(State.PAUSED, why)
                await h.wake.wait()
                continue
            if not rs.origin.signage:
                rec.set_state(
                    State.DEGRADED,
                    f"location {rs.origin.location!r} has no signage: not recording "
                    "(put up signs, then set signage = true)",
                )
                await h.wake.wait()
                continue
            if attempt == 0:
                rec.set_state(State.STARTING)
            h.session_stop = threading.Event()
            result = await self._in_thread(
                rec.run_session, h.session_stop, name=f"rec-{rs.source_id}"
            )
            h.session_stop = None
            if h.stopping or h.paused is not None or self.held is not None:
                continue
            attempt = 1 if result.packets else attempt + 1
            delay = backoff_delay(
                attempt, self.settings.backoff_base, self.settings.backoff_cap, self._rng()
            )
            why = result.error or "source ended"
            failed = result.permanent or attempt > self.settings.fail_after
            rec.set_state(State.FAILED if failed else State.RECONNECTING, why)
            log.warning("%s: %s; reconnecting in %.1fs", rs.source_id, why, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(h.wake.wait(), delay)

    def _in_thread(
        self, fn: Callable[[threading.Event], SessionResult], arg: threading.Event, *, name: str
    ) -> asyncio.Future[SessionResult]:
        """Run ``fn`` in its own thread: a session can last days, so no pool slot is used."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SessionResult] = loop.create_future()

        def deliver(result: SessionResult) -> None:
            if not fut.done():
                fut.set_result(result)

        def target() -> None:
            try:
                result = fn(arg)
            except BaseException as exc:
                # A bug, not a camera problem: reported like a failed session and retried.
                log.exception("%s crashed", name)
                result = SessionResult(error=f"recorder crashed: {exc}")
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                loop.call_soon_threadsafe(deliver, result)

        threading.Thread(target=target, name=name, daemon=True).start()
        return fut

    async def _watchdog(self) -> None:
        """Restart a session that gets no packets although its read has not timed out."""
        limit = self.settings.stall_seconds * 1.5
        while True:
            await asyncio.sleep(1.0)
            for h in list(self._handles.values()):
                rec = h.recorder
                if (
                    h.session_stop is not None
                    and rec.is_recording()
                    and rec.seconds_since_packet() > limit
                ):
                    log.warning(
                        "%s: no packet for %.0fs, restarting the source",
                        rec.settings.source_id,
                        rec.seconds_since_packet(),
                    )
                    h.session_stop.set()
