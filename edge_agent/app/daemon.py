"""``edge-agent run``: the daemon's wiring; every component a supervised task of one group.

:class:`Agent` builds the parts from the config (settings through
:mod:`edge_agent.app.settings`) and hands them to the modules that run them:

* :mod:`edge_agent.app.recovery`: start-up recovery, before ``READY=1``;
* :mod:`edge_agent.app.lifecycle`: the TaskGroup, signals, staged shutdown
  within ``shutdown_timeout``, hard exit (exit 0 graceful, 1 forced);
* :mod:`edge_agent.app.monitor`: systemd status and watchdog, clock trust, disk
  pressure;
* :mod:`edge_agent.app.status`: the status line, degraded reasons, telemetry
  providers;
* :mod:`edge_agent.app.reload`: SIGHUP and the ``reload`` command; the plan is
  applied here, since applying it is wiring (components added and removed).

Components (recorders, adopters, janitor, telemetry, publisher, commands,
MQTT, live view and the monitor) each run under
:class:`~edge_agent.app.supervisor.Supervised`: a failure is logged, queued as an
``alarm.component_failed`` event, shown as a degraded reason, and the
component restarts with jittered backoff while the others go on.
See docs/design/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent import __version__
from edge_agent.app.components import AdopterComponent, FnComponent, LinkComponent
from edge_agent.app.health import HealthSettings
from edge_agent.app.lifecycle import (
    STAGE_INPUT,
    STAGE_LINK,
    STAGE_MAINT,
    STAGE_REPORT,
    STAGE_VIEW,
    Lifecycle,
    Slot,
)
from edge_agent.app.monitor import Monitor, command_clock_hooks
from edge_agent.app.recovery import follow_locations, recover
from edge_agent.app.reload import Reloader, ReloadPlan
from edge_agent.app.settings import (
    check_keys,
    intake_settings,
    janitor_settings,
    load_trusted_keys,
    make_gatherer,
    mqtt_settings,
    source_plans,
    view_sources,
)
from edge_agent.app.status import AgentStatus
from edge_agent.app.storage_watch import watch_storage_root
from edge_agent.app.supervisor import Component, Failure, RestartPolicy
from edge_agent.comms.command_dispatch import CommandDispatcher
from edge_agent.comms.mqtt import MqttLink
from edge_agent.comms.publisher import Publisher
from edge_agent.comms.status import StatusReporter, TelemetryReporter, ha_discovery
from edge_agent.config.config import Config, Watch
from edge_agent.core.clock import Clock
from edge_agent.core.model import utcnow
from edge_agent.intake.adopter import FolderAdopter, WatchSpec
from edge_agent.intake.intake import Intake
from edge_agent.intake.runtime import origin_for_watch
from edge_agent.media.media_worker import MediaWorker
from edge_agent.recording.recorder_manager import ManagerSettings, RecorderManager
from edge_agent.retention.janitor import Janitor
from edge_agent.retention.storage_gate import RETRY_BASE, RETRY_CAP
from edge_agent.store.catalog import Catalog, open_catalog_from_config
from edge_agent.store.outbox_store import Outbox

if TYPE_CHECKING:
    from aiohttp import web

    from edge_agent.liveview.liveview import LiveView
    from edge_agent.recording.packethub import PacketHub

log = logging.getLogger(__name__)

__all__ = ["Agent", "main", "run_agent"]


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
        self.startup_reasons: list[str] = []
        self.intake = Intake(catalog, intake_settings(cfg))
        self.janitor = Janitor.from_settings(
            janitor_settings(cfg), catalog, clock=clock, on_alarm=self._on_alarm
        )
        stop_budget = max(1.0, shutdown_timeout * 0.6)
        self._manager_settings = ManagerSettings(shutdown_timeout=stop_budget)
        self.manager = RecorderManager(
            source_plans(cfg, self._manager_settings),
            self.intake,
            cfg.storage.root,
            settings=self._manager_settings,
            now=now,
        )
        self.publisher: Publisher | None = None
        self.dispatcher: CommandDispatcher | None = None
        self.link: MqttLink | None = None
        self.liveview: LiveView | None = None
        self.hub: PacketHub | None = None
        self._watch_slots: dict[str, Slot] = {}
        self._adopt_lock = asyncio.Lock()
        self.lifecycle = Lifecycle(
            shutdown_timeout=shutdown_timeout,
            restart=restart or RestartPolicy(),
            hard_exit=hard_exit,
            on_failure=self._component_failed,
            on_hup=self._on_sighup,
            ready_status=self.status_line,
        )
        watch = watch_storage_root(
            Path(cfg.storage.root),
            catalog,
            manager=self.manager,
            intake=self.intake,
            janitor=self.janitor,
            now=now,
            wake=self._wake_publisher,
            retry=storage_retry,
        )
        if isinstance(watch, str):
            self.startup_reasons.append(watch)
        self.storage = None if isinstance(watch, str) else watch
        self.monitor = Monitor(
            catalog,
            janitor=self.janitor,
            intake=self.intake,
            manager=self.manager,
            storage=self.storage,
            health=health or HealthSettings(),
            status_interval=status_interval,
            sources=lambda: [(s.id, s.priority) for s in self.cfg.sources],
            status_line=self.status_line,
        )
        self.gatherer = make_gatherer(cfg, catalog)
        self.status = AgentStatus(
            catalog,
            janitor=self.janitor,
            intake=self.intake,
            manager=self.manager,
            storage=self.storage,
            monitor=self.monitor,
            lifecycle=self.lifecycle,
            gatherer=self.gatherer,
            startup_reasons=self.startup_reasons,
            now=now,
        )
        self.reloader = Reloader(
            catalog,
            lambda: self.cfg,
            self._apply_reload,
            now=now,
            validate=check_keys,
            ready_status=self.status_line,
        )

    async def recover(self) -> None:
        """Everything before READY=1 (:mod:`edge_agent.app.recovery`), then a first sample."""
        self.startup_reasons += await recover(
            self.catalog,
            Path(self.cfg.storage.root),
            intake=self.intake,
            guard=self.janitor.guard,
            settings=intake_settings(self.cfg),
            now=self.now(),
        )
        await follow_locations(self.catalog, self.cfg.locations, self.gatherer)
        await self.monitor.sample()

    # -- building --------------------------------------------------------------------------

    def add(self, component: Component, stage: int = STAGE_REPORT) -> Slot:
        """Register a component; started with the others (or at once if already running)."""
        return self.lifecycle.add(component, stage)

    def build(self) -> None:
        cfg = self.cfg
        if cfg.liveview is not None:
            self._build_liveview(cfg)
        self.add(FnComponent("recorders", self.manager.run), STAGE_INPUT)
        for w in cfg.watch:
            self._add_watch(w)
        self.add(FnComponent("janitor", self.janitor.run), STAGE_MAINT)
        self._add_sealer(cfg)
        self.add(self.monitor, STAGE_MAINT)
        self._add_control(cfg)
        if cfg.mqtt is not None:
            self._build_mqtt(cfg)
        if cfg.anonymize.enabled:  # docs/anonymization.md: one low-priority worker
            from edge_agent.app.anon_worker import attach

            self.add(attach(self), STAGE_MAINT)

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
        from edge_agent.liveview.liveview import LiveView
        from edge_agent.recording.packethub import PacketHub

        assert cfg.liveview is not None
        self.hub = PacketHub()
        mount = self._console_mount(self.hub) if cfg.liveview.console else None
        self.liveview = LiveView(cfg.liveview, view_sources(cfg), self.hub, mount=mount)
        self.manager.attach_hub(self.hub)  # the recorders publish straight into it
        self.add(FnComponent("liveview", self.liveview.run), STAGE_VIEW)

    def _add_sealer(self, cfg: Config) -> None:
        # Old audit entries and tombstones go to archive files (docs/storage.md).
        from edge_agent.retention.audit_sealing import AuditSealer

        guard = self.janitor.guard
        sealer = AuditSealer(
            self.catalog,
            cfg.retention.accountability_period,
            now=self.now,
            clock_trusted=lambda: guard.last is not None and guard.last.trusted,
        )
        self.add(FnComponent("audit-sealer", sealer.run), STAGE_MAINT)

    def _add_control(self, cfg: Config) -> None:
        from edge_agent.app.control import ControlServer

        control = ControlServer(cfg.control_socket, self.status.control_doc)
        self.add(FnComponent("control", control.run), STAGE_MAINT)

    def _console_mount(self, hub: PacketHub) -> Callable[[web.Application, str], None]:
        # Imported only with the console on: an agent without it loads none of it.
        from edge_agent.app.console_data import DaemonConsoleData
        from edge_agent.console.routes import mount_console

        data = DaemonConsoleData(
            catalog=self.catalog,
            status=self.status,
            config=lambda: self.cfg,
            hub=hub,
            liveview=True,
            now=self.now,
        )

        def mount(app: web.Application, token: str) -> None:
            mount_console(app, data, token, now=self.now)

        return mount

    def _build_mqtt(self, cfg: Config) -> None:
        assert cfg.mqtt is not None and cfg.topic_root is not None
        cat, root = self.catalog, cfg.topic_root
        status = StatusReporter(cat, f"{root}/status", version=__version__, now=self.now)
        link = self.link = MqttLink(mqtt_settings(cfg), will=status.will)
        self.monitor.link = self.status.link = link
        link.on_connect(status.on_connect)
        if cfg.mqtt.ha_discovery:
            messages = ha_discovery(cfg.mqtt.topic_prefix, cfg.device.id, __version__)

            async def discovery(link: MqttLink) -> None:
                for topic, payload in messages:
                    link.publish(topic, payload, qos=1, retain=True)

            link.on_connect(discovery)
        self.publisher = self.monitor.publisher = Publisher(
            cat, link, f"{root}/events", now=self.now
        )
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
            status=self.status.status_doc,
            reload=reload_command,
            max_payload=cfg.commands.max_payload,
            queue_depth=cfg.commands.queue_depth,
            workers=cfg.commands.workers,
            reply_prefix=cfg.commands.reply_prefix_for(root),
            clock=command_clock_hooks(self.janitor, lambda: self.lifecycle.loop),
        )
        self.add(telemetry, STAGE_MAINT)
        self.add(self.publisher, STAGE_REPORT)
        self.add(self.dispatcher, STAGE_REPORT)
        self.add(LinkComponent(link, status), STAGE_LINK)

    # -- status (:mod:`edge_agent.app.status`) and alarms ---------------------------------

    def status_line(self) -> str:
        return self.status.status_line()

    def degraded_reasons(self) -> list[str]:
        return self.status.degraded_reasons()

    def _wake_publisher(self) -> None:
        if self.publisher is not None:
            self.publisher.wake()

    def _on_alarm(self, _name: str, _data: dict[str, Any]) -> None:
        # The janitor queued the event itself (from its worker thread).
        loop = self.lifecycle.loop
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

    # -- reload ----------------------------------------------------------------------------

    def _on_sighup(self) -> Coroutine[Any, Any, dict[str, Any]]:
        log.info("SIGHUP: reloading %s", self.cfg.path)
        return self.reloader.reload()

    async def _apply_reload(self, cfg: Config, plan: ReloadPlan) -> None:
        self.cfg = cfg
        await follow_locations(self.catalog, cfg.locations, self.gatherer)
        if plan.trusted_keys_changed and self.dispatcher is not None:
            self.dispatcher.trusted = load_trusted_keys(cfg.commands.trusted_keys)
        if self.dispatcher is not None:
            self.dispatcher.locations = frozenset(loc.id for loc in cfg.locations)
            self.dispatcher.reply_prefix = cfg.commands.reply_prefix_for(self.dispatcher.root)
        if plan.sources_added or plan.sources_removed or plan.sources_changed:
            await self.manager.apply_config(source_plans(cfg, self._manager_settings))
            if self.liveview is not None:
                self.liveview.sources = {s.id: s for s in view_sources(cfg) if s.signage}
        for path in plan.watches_removed + plan.watches_changed:
            slot = self._watch_slots.pop(path, None)
            if slot is not None:
                await self.lifecycle.stop_slot(slot)
        start = set(plan.watches_added + plan.watches_changed)
        for w in cfg.watch:
            if str(w.path) in start:
                self._add_watch(w)

    # -- running (:mod:`edge_agent.app.lifecycle`) -----------------------------------------

    def install_signals(self) -> None:
        self.lifecycle.install_signals()

    def request_stop(self) -> None:
        self.lifecycle.request_stop()

    async def run(self) -> int:
        """Start every component; return the exit code once stopped."""
        return await self.lifecycle.run()


# Seconds between rewrites of the audit head file while entries arrive quickly
# (Catalog.anchor): one per commit was two fsyncs per adopted file or segment.
ANCHOR_INTERVAL = 1.0


async def run_agent(cfg: Config, *, shutdown_timeout: float = 10.0, hard_exit: bool = False) -> int:
    catalog = await asyncio.to_thread(open_catalog_from_config, cfg)
    # The monitor flushes a pending audit head every tick, close() at the end.
    catalog.anchor_interval = ANCHOR_INTERVAL
    # Files from watched folders are probed and remuxed in a child process, started
    # on the first one and stopped by the monitor when idle (media/media_worker.py).
    worker = MediaWorker()
    try:
        agent = Agent(cfg, catalog, shutdown_timeout=shutdown_timeout, hard_exit=hard_exit)
        agent.intake.media_worker = worker
        agent.install_signals()
        await agent.recover()
        agent.build()
        return await agent.run()
    finally:
        await asyncio.to_thread(worker.close)  # every adopter has stopped by now
        catalog.close()


def main(cfg: Config, *, shutdown_timeout: float = 10.0) -> int:
    """Run until stopped (raises ConfigError on a trusted key that cannot be used)."""
    load_trusted_keys(cfg.commands.trusted_keys)  # a bad key is a config error, exit 2
    return asyncio.run(run_agent(cfg, shutdown_timeout=shutdown_timeout, hard_exit=True))
