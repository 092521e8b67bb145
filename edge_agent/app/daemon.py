"""``edge-agent run``: every component as a supervised, named task of one ``asyncio.TaskGroup``.

Start-up, in order: open the catalog (a catalog from another disk or device
stops here with exit 1), finish deletions a crash interrupted, judge the
clock (new recordings are marked untrusted while it is not), adopt recorder
segments a crash left behind, reconcile disk against catalog (it refuses by
itself when more than half would change: the agent then runs degraded,
saying why), and only then ``READY=1``.

Components (recorders, adopters, janitor, telemetry, publisher, commands,
MQTT, live view and the monitor) each run under
:class:`~edge_agent.app.supervisor.Supervised`: a failure is logged, queued as an
``alarm.component_failed`` event, shown as a degraded reason, and the
component restarts with jittered backoff while the others go on.

They stop in stages so that nothing is lost on the way down: inputs first
(recorders and adopters file what they have in flight), then the janitor and
telemetry, then the publisher and commands, then the MQTT link (which says
``offline`` before it disconnects), then the live view. The first SIGTERM (or
SIGINT) starts that, the whole of it bounded by ``shutdown_timeout``; what is
late is cancelled (a cut segment is adopted at the next start). A second
signal cancels everything at once. Exit codes: 0 after a graceful stop, 1
when forced (second signal, or the shutdown overran its bound by more than
:data:`HARD_EXIT_GRACE` seconds and the process was ended with ``os._exit``).

SIGHUP reloads the config (:mod:`edge_agent.app.reload`). The monitor task sends
systemd ``STATUS=`` lines and ``WATCHDOG=1`` while :mod:`edge_agent.app.health`
passes, keeps the intake's clock trust in step with the clock guard, and
pauses the lowest-priority sources while the disk is full of held footage
(:mod:`edge_agent.core.pressure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent import __version__
from edge_agent.app.health import HealthReading, HealthSettings, LagProbe, OutboxProgress, problems
from edge_agent.app.reconcile import reconcile
from edge_agent.app.reload import Reloader, ReloadPlan
from edge_agent.app.storage_watch import StorageWatch
from edge_agent.app.supervisor import Component, Failure, RestartPolicy, Supervised
from edge_agent.comms.command_dispatch import ClockHooks, CommandDispatcher
from edge_agent.comms.mqtt import MqttLink, MqttSettings
from edge_agent.comms.publisher import Publisher
from edge_agent.comms.status import StatusReporter, TelemetryReporter, ha_discovery
from edge_agent.comms.telemetry import (
    ClockState,
    Gatherer,
    RetentionSnapshot,
    SourceState,
    availability,
    build_telemetry,
)
from edge_agent.config.config import Config, ConfigError, Watch, load_config
from edge_agent.core.clock import Clock, wall_step
from edge_agent.core.commands import TrustedKey, load_public_key
from edge_agent.core.model import utcnow
from edge_agent.core.pressure import PAUSE_REASON, PressureValve
from edge_agent.host import memtune, sdnotify
from edge_agent.intake.adopter import FolderAdopter, WatchSpec
from edge_agent.intake.intake import Intake
from edge_agent.intake.runtime import intake_settings, origin_for_watch
from edge_agent.recording.recorder import recover_partials
from edge_agent.recording.recorder_manager import ManagerSettings, RecorderManager
from edge_agent.retention.deletion import finish_interrupted
from edge_agent.retention.janitor import Janitor
from edge_agent.retention.storage_gate import RETRY_BASE, RETRY_CAP, StorageGate, capture_identity
from edge_agent.store.catalog import Catalog, open_catalog_from_config
from edge_agent.store.command_results import ResultStore
from edge_agent.store.outbox_store import Outbox

if TYPE_CHECKING:
    from edge_agent.liveview.liveview import LiveView
    from edge_agent.recording.packethub import PacketHub

log = logging.getLogger(__name__)

__all__ = ["Agent", "Component", "load_trusted_keys", "main", "make_gatherer", "run_agent"]

STAGE_INPUT = 0  # recorders, adopters
STAGE_MAINT = 1  # janitor, telemetry, monitor
STAGE_REPORT = 2  # publisher, commands
STAGE_LINK = 3  # MQTT (publishes offline itself)
STAGE_VIEW = 4  # live view and its packet taps
HARD_EXIT_GRACE = 2.0  # past the shutdown bound, os._exit(1)


def load_trusted_keys(paths: tuple[Path, ...]) -> dict[str, TrustedKey]:
    keys: dict[str, TrustedKey] = {}
    for i, path in enumerate(paths):
        try:
            key = load_public_key(path.read_bytes(), name=path.stem)
        except (OSError, ValueError) as exc:
            problem = (
                f"commands.trusted_keys[{i}]: cannot use {path} ({exc}; give an Ed25519 "
                "public key PEM made by `edge-agent keys generate`)"
            )
            raise ConfigError([problem]) from None
        keys[key.id] = key
    return keys


# -- component adapters ----------------------------------------------------------------


class FnComponent:
    """A component from a name and a ``run(stop)`` coroutine function."""

    def __init__(self, name: str, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self.name = name
        self._run = run

    async def run(self, stop: asyncio.Event) -> None:
        await self._run(stop)


async def until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event, name: str) -> None:
    """Run ``work`` (which runs until cancelled) until ``stop``; its failure propagates."""
    task = asyncio.create_task(work, name=name)
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()


class AdopterComponent:
    def __init__(self, adopter: FolderAdopter, lock: asyncio.Lock) -> None:
        self.adopter = adopter
        self.name = f"adopter:{adopter.spec.folder}"
        self._lock = lock

    async def run(self, stop: asyncio.Event) -> None:
        await until_stopped(self.adopter.run(), stop, f"{self.name}/inner")
        # An adoption already in its worker thread finishes under this lock.
        async with self._lock:
            pass


class LinkComponent:
    name = "mqtt"

    def __init__(self, link: MqttLink, status: StatusReporter) -> None:
        self.link = link
        self.status = status

    async def run(self, stop: asyncio.Event) -> None:
        await self.link.run(stop, before_disconnect=self.status.publish_offline)


@dataclass(eq=False)
class Slot:
    component: Component
    stage: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    runner: Supervised | None = None
    task: asyncio.Task[None] | None = None


def make_gatherer(cfg: Config, catalog: Catalog) -> Gatherer:
    return Gatherer(
        catalog=catalog,
        device_id=cfg.device.id,
        version=__version__,
        paths=[cfg.storage.root, cfg.storage.catalog.parent],
        sensor=cfg.profile.temperature_sensor,
        longer_than_notice=tuple(cfg.longer_than_notice()),
        free_floor=cfg.free_space_floor_bytes,
    )


def _check_keys(cfg: Config) -> None:
    load_trusted_keys(cfg.commands.trusted_keys)  # raises ConfigError


def _hard_exit(why: str) -> None:
    log.critical("%s: exiting now", why)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(1)


# -- the agent -------------------------------------------------------------------------


class Agent:
    def __init__(
        self,
        cfg: Config,
        catalog: Catalog,
        *,
        now: Callable[[], datetime] = utcnow,
        clock: Clock | None = None,
        shutdown_timeout: float = 10.0,
        restart: RestartPolicy | None = None,
        health: HealthSettings | None = None,
        status_interval: float = 10.0,
        hard_exit: bool = False,
        storage_retry: tuple[float, float] = (RETRY_BASE, RETRY_CAP),
    ) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.now = now
        self.shutdown_timeout = shutdown_timeout
        self.restart = restart or RestartPolicy()
        self.health = health or HealthSettings()
        self.status_interval = status_interval
        self.hard_exit = hard_exit
        self.slots: list[Slot] = []
        self._tg: asyncio.TaskGroup | None = None
        self._misc: set[asyncio.Task[Any]] = set()
        self._term = asyncio.Event()
        self._forced = False
        self._signals: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.startup_reasons: list[str] = []
        self.health_problems: list[str] = []
        self.recordings = 0
        self.outbox_depth = 0
        self._outbox_stalled: float | None = None
        self.intake = Intake(catalog, intake_settings(cfg))
        self.janitor = Janitor.from_config(cfg, catalog, clock=clock, on_alarm=self._on_alarm)
        self._clock_offset: tuple[float, float] | None = None
        self._clock_recheck_at = 0.0
        stop_budget = max(1.0, shutdown_timeout * 0.6)
        self.manager = RecorderManager(
            cfg, self.intake, settings=ManagerSettings(shutdown_timeout=stop_budget), now=now
        )
        self.valve = PressureValve()
        self.publisher: Publisher | None = None
        self.dispatcher: CommandDispatcher | None = None
        self.link: MqttLink | None = None
        self.liveview: LiveView | None = None
        self.hub: PacketHub | None = None
        self._watch_slots: dict[str, Slot] = {}
        self._tap_slots: dict[str, Slot] = {}
        self._adopt_lock = asyncio.Lock()
        self.storage = self._watch_storage(storage_retry)
        self.gatherer = make_gatherer(cfg, catalog)
        self.gatherer.retention = self._retention
        self.gatherer.sources = self._sources
        self.gatherer.clock = self._clock
        self.gatherer.extra = self.degraded_reasons
        self.reloader = Reloader(
            catalog,
            lambda: self.cfg,
            self._apply_reload,
            now=now,
            validate=_check_keys,
            ready_status=self.status_line,
        )

    def _watch_storage(self, retry: tuple[float, float]) -> StorageWatch | None:
        """Hold the storage root to the disk the catalog just accepted (docs/storage.md)."""
        root = Path(self.cfg.storage.root)
        storage_id = self.catalog.get_meta("storage_root_id")
        try:
            if storage_id is None:
                raise OSError("the catalog names no storage id")
            identity = capture_identity(root, str(storage_id))
        except OSError as exc:
            log.error("cannot watch the storage root %s: %s", root, exc)
            self.startup_reasons.append(f"storage root {root} cannot be watched: {exc}")
            return None
        gate = StorageGate(root, identity, retry_base=retry[0], retry_cap=retry[1])
        self.intake.gate = self.manager.gate = self.janitor.gate = gate
        return StorageWatch(
            gate,
            catalog=self.catalog,
            manager=self.manager,
            intake=self.intake,
            now=self.now,
            wake=self._wake_publisher,
        )

    # -- start-up recovery ---------------------------------------------------------------

    async def recover(self) -> None:
        """Everything before READY=1: interrupted deletions, clock, crash leftovers, reconcile."""
        cfg, cat, root = self.cfg, self.catalog, Path(self.cfg.storage.root)
        now = self.now()
        done = await asyncio.to_thread(finish_interrupted, cat, root, now, actor="agent")
        if done.deleted:
            log.info("finished %d deletion(s) a crash interrupted", len(done.deleted))
        closed = await asyncio.to_thread(ResultStore(cat).close_interrupted, now)
        if closed:
            log.warning("closed %d command(s) a stop interrupted as failed", len(closed))
        verdict = await asyncio.to_thread(self.janitor.guard.check)
        self.intake.clock_trusted = verdict.trusted
        # Recorder segments first: reconcile would remove their .partial- files.
        recs = await asyncio.to_thread(recover_partials, root, self.intake, now)
        if recs:
            log.info("adopted %d segment(s) left by an earlier run", len(recs))
        try:
            rep = await asyncio.to_thread(
                reconcile,
                cat,
                root,
                intake_settings(cfg),
                dry_run=False,
                force=False,
                now=now,
                actor="agent",
            )
        except Exception as exc:
            log.exception("start-up reconcile failed; running without it")
            self.startup_reasons.append(f"start-up reconcile failed: {exc}")
        else:
            if rep.refused:
                log.error("start-up reconcile refused: %s", rep.refused)
                self.startup_reasons.append(f"start-up reconcile refused: {rep.refused}")
            elif rep.changes or rep.partials_removed or rep.reappeared:
                log.info(
                    "start-up reconcile: %d re-adopted, %d missing, %d found again, "
                    "%d partial file(s) removed",
                    len(rep.readopted),
                    len(rep.missing),
                    len(rep.reappeared),
                    len(rep.partials_removed),
                )
        await self._follow_locations(self.cfg)
        await self._sample()

    async def _follow_locations(self, cfg: Config) -> None:
        """Warn about footage the config no longer describes (docs/retention-policy.md)."""
        from edge_agent.core.location_drift import configured, location_drift

        try:
            rows = await asyncio.to_thread(self.catalog.footage_by_location)
        except Exception:
            log.exception("cannot compare the config's locations with the catalog")
            return
        drift = location_drift(configured(cfg.locations), rows)
        for d in drift:
            log.warning("%s", d.message)
        self.gatherer.location_drift = tuple(d.as_dict() for d in drift)

    # -- building --------------------------------------------------------------------------

    def add(self, component: Component, stage: int = STAGE_REPORT) -> Slot:
        """Register a component; started with the others (or at once if already running)."""
        slot = Slot(component, stage)
        self.slots.append(slot)
        if self._tg is not None:
            self._start(slot)
        return slot

    def build(self) -> None:
        cfg = self.cfg
        if cfg.liveview is not None:
            self._build_liveview(cfg)
        self.add(FnComponent("recorders", self.manager.run), STAGE_INPUT)
        for w in cfg.watch:
            self._add_watch(w)
        self.add(FnComponent("janitor", self.janitor.run), STAGE_MAINT)
        self.add(FnComponent("monitor", self._monitor), STAGE_MAINT)
        if cfg.mqtt is not None:
            self._build_mqtt(cfg)

    def _add_watch(self, w: Watch) -> None:
        spec = WatchSpec(
            w.path,
            origin_for_watch(self.cfg, w),
            stable_seconds=w.stable_seconds,
            poll_seconds=w.poll_seconds,
            use_inotify=not w.poll,
        )
        adopter = FolderAdopter(
            spec,
            self.intake,
            now=self.now,
            on_result=lambda _r: self._wake_publisher(),
            lock=self._adopt_lock,
        )
        comp = AdopterComponent(adopter, self._adopt_lock)
        self._watch_slots[str(w.path)] = self.add(comp, STAGE_INPUT)

    def _build_liveview(self, cfg: Config) -> None:
        # aiortc and aiohttp load only here: a device without [liveview] stays small.
        from edge_agent.liveview.liveview import LiveView, sources_from_config
        from edge_agent.recording.packethub import PacketHub

        assert cfg.liveview is not None
        self.hub = PacketHub()
        self.liveview = LiveView(cfg.liveview, sources_from_config(cfg), self.hub)
        for src in cfg.sources:
            self._add_tap(src.id)
        self.add(FnComponent("liveview", self.liveview.run), STAGE_VIEW)

    def _add_tap(self, source_id: str) -> None:
        from edge_agent.recording.packethub import attach_to_recorder

        hub, manager, name = self.hub, self.manager, f"packethub:{source_id}"
        assert hub is not None

        async def run(stop: asyncio.Event) -> None:
            await until_stopped(attach_to_recorder(hub, manager, [source_id]), stop, name)

        self._tap_slots[source_id] = self.add(FnComponent(name, run), STAGE_VIEW)

    def _build_mqtt(self, cfg: Config) -> None:
        assert cfg.mqtt is not None and cfg.topic_root is not None
        cat, root = self.catalog, cfg.topic_root
        status = StatusReporter(cat, f"{root}/status", version=__version__, now=self.now)
        link = self.link = MqttLink(MqttSettings.from_config(cfg), will=status.will)
        link.on_connect(status.on_connect)
        if cfg.mqtt.ha_discovery:
            messages = ha_discovery(cfg.mqtt.topic_prefix, cfg.device.id, __version__)

            async def discovery(link: MqttLink) -> None:
                for topic, payload in messages:
                    link.publish(topic, payload, qos=1, retain=True)

            link.on_connect(discovery)
        self.publisher = Publisher(cat, link, f"{root}/events", now=self.now)
        self.gatherer.refused = self.publisher.refused_counts
        telemetry = TelemetryReporter(
            self.gatherer,
            link,
            f"{root}/telemetry",
            status,
            interval=cfg.mqtt.telemetry_interval_seconds,
            now=self.now,
        )

        async def reload_command() -> dict[str, Any]:
            return await self.reloader.reload(actor="command")

        self.dispatcher = CommandDispatcher(
            cat,
            link,
            root,
            device_id=cfg.device.id,
            trusted=load_trusted_keys(cfg.commands.trusted_keys),
            storage_root=cfg.storage.root,
            now=self.now,
            locations=frozenset(loc.id for loc in cfg.locations),
            status=self.status_doc,
            reload=reload_command,
            max_payload=cfg.commands.max_payload,
            queue_depth=cfg.commands.queue_depth,
            workers=cfg.commands.workers,
            reply_prefix=cfg.commands.reply_prefix_for(root),
            clock=ClockHooks(offer=self._offer_clock_evidence, confirm=self._confirm_clock),
        )
        self.add(telemetry, STAGE_MAINT)
        self.add(self.publisher, STAGE_REPORT)
        self.add(self.dispatcher, STAGE_REPORT)
        self.add(LinkComponent(link, status), STAGE_LINK)

    # -- the clock guard as commands reach it -------------------------------------------

    def _offer_clock_evidence(self, issued_at: datetime, what: str) -> None:
        self.janitor.guard.offer_command_time(issued_at, what)
        if self.janitor.guard.last is not None and not self.janitor.guard.last.trusted:
            self.janitor.poke()

    def _confirm_clock(
        self, issued_at: datetime, actor: str, reason: str, what: str
    ) -> dict[str, Any]:
        # A worker thread: the guard writes the catalog.
        from edge_agent.retention.clockguard import ClockAcceptError

        guard = self.janitor.guard
        try:
            v = guard.confirm_by_command(issued_at, actor=actor, reason=reason, what=what)
        except ClockAcceptError as exc:
            raise ValueError(str(exc)) from None
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.janitor.poke)
        return {
            "clock": "trusted" if v.trusted else "untrusted",
            "reason": v.reason,
            "evidence": guard.describe_evidence(v, cached=False),
        }

    # -- providers for telemetry, status and systemd ------------------------------------

    def _retention(self, now: datetime) -> RetentionSnapshot:
        st = self.janitor.status(now)
        if st.last_sweep is None:
            from edge_agent.comms.telemetry import catalog_retention

            return catalog_retention(self.catalog, now)
        return RetentionSnapshot(st.next_deadline, st.overdue_count, st.worst_overdue_seconds)

    def _sources(self) -> list[SourceState]:
        return [SourceState(s.id, s.state, s.reason) for s in self.manager.snapshot()]

    def _clock(self) -> ClockState:
        guard = self.janitor.guard
        v = guard.last
        if v is None:
            return ClockState()
        return ClockState(
            v.trusted,
            v.reason,
            guard.describe_evidence(v),
            guard.paused_since_cached(),
        )

    def degraded_reasons(self) -> list[str]:
        """The daemon's own reasons; telemetry adds sources, clock, disk and outbox."""
        out = self.storage.reasons() if self.storage is not None else []
        out += self.startup_reasons
        out += [r for s in self.slots if s.runner and (r := s.runner.reason())]
        out += [f"health: {p}" for p in self.health_problems]
        return out

    def status_line(self) -> str:
        """The one line systemd shows (``STATUS=``)."""
        snaps = self.manager.snapshot()
        recording = sum(1 for s in snaps if s.state == "recording")
        trusted = self.intake.clock_trusted
        parts = [
            f"recording {recording}/{len(snaps)} sources",
            f"{self.recordings} recordings",
            "clock trusted" if trusted else "clock untrusted",
        ]
        if self.link is not None:
            parts.append("mqtt connected" if self.link.connected else "mqtt disconnected")
        parts.append(f"outbox {self.outbox_depth}")
        paused = self.manager.paused()
        if paused:
            parts.append(f"paused {', '.join(sorted(paused))}")
        reasons = self.degraded_reasons()
        if reasons:
            more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
            parts.append(f"degraded: {reasons[0]}{more}")
        return ", ".join(parts)

    async def status_doc(self) -> dict[str, Any]:
        snap = await asyncio.to_thread(self.gatherer.gather, self.now())
        state, reasons = availability(snap)
        return {
            "state": state,
            "reasons": reasons,
            "telemetry": build_telemetry(snap).model_dump(mode="json"),
        }

    def _wake_publisher(self) -> None:
        if self.publisher is not None:
            self.publisher.wake()

    def _on_alarm(self, _name: str, _data: dict[str, Any]) -> None:
        # The janitor queued the event itself (from its worker thread).
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_publisher)

    async def _component_failed(self, f: Failure) -> None:
        if not f.report:
            return
        data = {
            "component": f.component,
            "error": f.error,
            "attempt": f.attempt,
            "failures_total": f.total,
            "restart_in_seconds": round(f.restart_in, 1),
        }
        await asyncio.to_thread(
            Outbox(self.catalog).enqueue, "alarm.component_failed", data, ts=self.now()
        )
        self._wake_publisher()

    # -- the monitor: systemd status and watchdog, clock trust, disk pressure -------------

    async def _sample(self) -> None:
        def read() -> tuple[int, int, bool]:
            count = sum(s.count for s in self.catalog.summary_by_purpose().values())
            depth = Outbox(self.catalog).depth()
            try:
                free, total = self.janitor.free_space()
                short = free < self.janitor.floor_bytes(total)
            except OSError:
                short = False  # the janitor's own pass reports an unreadable disk
            memtune.trim()  # with the status cadence: cheap, and RSS stays flat for months
            return count, depth, short

        self.recordings, self.outbox_depth, short = await asyncio.to_thread(read)
        last = self.janitor.last
        # A disk the catalog holds under the floor is the janitor's storage_budget alarm,
        # not footage pressure: it checks again every pressure_sleep without a poke.
        if short and not (last and (last.disk_pressure or last.storage_budget)):
            # The janitor sleeps until its next deadline (up to a minute); cameras
            # fill a disk faster than that, so pressure wakes it now.
            log.warning("free space below the floor: waking the janitor")
            self.janitor.poke()

    async def _monitor(self, stop: asyncio.Event) -> None:
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
                        sdnotify.status(self.status_line())
                    sampler = None
                if sampler is None and mono >= next_status:
                    sampler = asyncio.create_task(self._sample(), name="monitor/sample")
                    next_status = mono + self.status_interval
                beat = self.janitor.heartbeat or started
                reading = HealthReading(
                    loop_lag=probe.worst(),
                    janitor_silent=mono - beat,
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
                if interval and not found:
                    sdnotify.watchdog()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), tick)
        finally:
            probe_task.cancel()
            if sampler is not None:
                sampler.cancel()
            if self.storage is not None:
                await self.storage.close()

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
            sources=[(s.id, s.priority) for s in self.cfg.sources],
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

    # -- reload ----------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        return await self.reloader.reload()

    async def _apply_reload(self, cfg: Config, plan: ReloadPlan) -> None:
        self.cfg = cfg
        await self._follow_locations(cfg)
        if plan.trusted_keys_changed and self.dispatcher is not None:
            self.dispatcher.trusted = load_trusted_keys(cfg.commands.trusted_keys)
        if self.dispatcher is not None:
            self.dispatcher.locations = frozenset(loc.id for loc in cfg.locations)
            self.dispatcher.reply_prefix = cfg.commands.reply_prefix_for(self.dispatcher.root)
        if plan.sources_added or plan.sources_removed or plan.sources_changed:
            for sid in plan.sources_removed:
                slot = self._tap_slots.pop(sid, None)
                if slot is not None:
                    await self._stop_slot(slot)
            await self.manager.apply_config(cfg)
            if self.liveview is not None:
                from edge_agent.liveview.liveview import sources_from_config

                self.liveview.sources = {s.id: s for s in sources_from_config(cfg) if s.signage}
                for sid in plan.sources_added:
                    self._add_tap(sid)
        for path in plan.watches_removed + plan.watches_changed:
            slot = self._watch_slots.pop(path, None)
            if slot is not None:
                await self._stop_slot(slot)
        start = set(plan.watches_added + plan.watches_changed)
        for w in cfg.watch:
            if str(w.path) in start:
                self._add_watch(w)

    def _on_sighup(self) -> None:
        if self._term.is_set():
            log.info("SIGHUP during shutdown: ignored")
            return
        log.info("SIGHUP: reloading %s", self.cfg.path)
        self._spawn(self.reloader.reload(), "reload")

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("%s failed", name)

        if self._tg is None:
            coro.close()
            return
        task = self._tg.create_task(guarded(), name=name)
        self._misc.add(task)
        task.add_done_callback(self._misc.discard)

    # -- running ---------------------------------------------------------------------------

    def _start(self, slot: Slot) -> None:
        assert self._tg is not None
        slot.runner = Supervised(
            slot.component, policy=self.restart, on_failure=self._component_failed
        )
        slot.task = self._tg.create_task(slot.runner.run(slot.stop), name=slot.component.name)

    async def _stop_slot(self, slot: Slot) -> None:
        slot.stop.set()
        if slot.task is not None and not slot.task.done():
            await asyncio.wait({slot.task}, timeout=self.shutdown_timeout)
            if not slot.task.done():
                log.error("component %s did not stop in time: cancelled", slot.component.name)
                slot.task.cancel()
        with contextlib.suppress(ValueError):
            self.slots.remove(slot)

    def install_signals(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._signals = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]

    def remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals = []

    @property
    def stopping(self) -> bool:
        return self._term.is_set()

    def request_stop(self) -> None:
        if self._term.is_set():
            log.warning("second stop signal: cancelling everything now")
            self._forced = True
            for slot in self.slots:
                if slot.task is not None:
                    slot.task.cancel()
            for task in list(self._misc):
                task.cancel()
            if self.hard_exit:
                self._arm_hard_exit(HARD_EXIT_GRACE, "forced stop did not finish")
            return
        log.info("stopping (send the signal again to force)")
        if self.hard_exit:
            self._arm_hard_exit(self.shutdown_timeout + HARD_EXIT_GRACE, "shutdown overran")
        self._term.set()

    @staticmethod
    def _arm_hard_exit(after: float, why: str) -> None:
        timer = threading.Timer(after, _hard_exit, (f"{why} ({after:.0f} s)",))
        timer.daemon = True
        timer.start()

    async def run(self) -> int:
        """Start every component; return the exit code once stopped."""
        if self._loop is None:
            self.install_signals()
        try:
            if self._term.is_set():
                log.info("stopped during start-up recovery")
                return 0
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                sdnotify.ready(self.status_line())
                for slot in list(self.slots):
                    self._start(slot)
                tg.create_task(self._shutdown(), name="shutdown")
                log.info("edge-agent %s running: %s", __version__, ", ".join(self.names()))
        except* asyncio.CancelledError:
            if not self._forced:
                raise
        finally:
            self._tg = None
            self.remove_signals()
        return 1 if self._forced else 0

    def names(self) -> list[str]:
        return [s.component.name for s in self.slots]

    async def _shutdown(self) -> None:
        await self._term.wait()
        sdnotify.stopping("stopping: filing in-flight recordings, then publishing offline")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        # Kept back from the inputs for the publisher's last events and the offline status.
        reserve = min(3.0, self.shutdown_timeout * 0.3)
        for stage in sorted({s.stage for s in self.slots}):
            slots = [s for s in self.slots if s.stage == stage]
            for s in slots:
                s.stop.set()
            limit = deadline - reserve if stage <= STAGE_MAINT else deadline
            tasks = [s.task for s in slots if s.task is not None and not s.task.done()]
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.1, limit - loop.time()))
            for s in slots:
                if s.task is not None and not s.task.done():
                    log.error("component %s did not stop in time: cancelled", s.component.name)
                    s.task.cancel()
        for task in list(self._misc):
            task.cancel()


async def run_agent(cfg: Config, *, shutdown_timeout: float = 10.0, hard_exit: bool = False) -> int:
    catalog = await asyncio.to_thread(open_catalog_from_config, cfg)
    try:
        agent = Agent(cfg, catalog, shutdown_timeout=shutdown_timeout, hard_exit=hard_exit)
        agent.install_signals()
        await agent.recover()
        agent.build()
        return await agent.run()
    finally:
        catalog.close()


def main(config_path: Path, *, shutdown_timeout: float = 10.0) -> int:
    """Load the config and run until stopped (raises ConfigError on a bad config)."""
    cfg = load_config(config_path)
    load_trusted_keys(cfg.commands.trusted_keys)  # a bad key is a config error, exit 2
    return asyncio.run(run_agent(cfg, shutdown_timeout=shutdown_timeout, hard_exit=True))
