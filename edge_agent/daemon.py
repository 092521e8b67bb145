"""``edge-agent run``: every component as a named task of one ``asyncio.TaskGroup``.

A component is anything with a ``name`` and ``async run(stop)`` that returns
soon after ``stop`` is set. Components stop in stages so that nothing is lost
on the way down: inputs first (adopters, later recorders), then the reporters
(publisher, telemetry, commands), then the MQTT link, which says ``offline``
itself before it disconnects. The first SIGTERM (or SIGINT) starts that, the
whole of it bounded by ``shutdown_timeout``; a second one cancels everything.
A component that crashes takes the daemon down (exit 1) so that systemd
restarts it whole rather than leaving a half-working agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from edge_agent import __version__
from edge_agent.adopter import FolderAdopter, WatchSpec
from edge_agent.catalog import Catalog, open_catalog_from_config
from edge_agent.command_dispatch import CommandDispatcher
from edge_agent.commands import TrustedKey, load_public_key
from edge_agent.config import Config, ConfigError, load_config
from edge_agent.intake import Intake
from edge_agent.model import utcnow
from edge_agent.mqtt import MqttLink, MqttSettings
from edge_agent.publisher import Publisher
from edge_agent.runtime import intake_settings, origin_for_watch
from edge_agent.status import StatusReporter, TelemetryReporter, ha_discovery
from edge_agent.telemetry import Gatherer, availability, build_telemetry

log = logging.getLogger(__name__)

STAGE_INPUT = 0
STAGE_REPORT = 1
STAGE_LINK = 2


class Component(Protocol):
    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass
class Slot:
    component: Component
    stage: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


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


class AdopterComponent:
    def __init__(self, adopter: FolderAdopter, lock: asyncio.Lock) -> None:
        self.adopter = adopter
        self.name = f"adopter:{adopter.spec.folder}"
        self._lock = lock

    async def run(self, stop: asyncio.Event) -> None:
        task = asyncio.create_task(self.adopter.run(), name=f"{self.name}/inner")
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # a crash propagates
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
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


def sd_notify(message: str) -> None:
    """systemd ``Type=notify`` readiness; nothing when not under systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), addr)


class Agent:
    def __init__(
        self,
        cfg: Config,
        catalog: Catalog,
        *,
        now: Callable[[], datetime] = utcnow,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.now = now
        self.shutdown_timeout = shutdown_timeout
        self.slots: list[Slot] = []
        self._term = asyncio.Event()
        self._forced = False
        self.publisher: Publisher | None = None
        self.dispatcher: CommandDispatcher | None = None
        self.gatherer = make_gatherer(cfg, catalog)

    def add(self, component: Component, stage: int = STAGE_REPORT) -> None:
        """Register a component (recorder manager, janitor, live view, ...)."""
        self.slots.append(Slot(component, stage))

    def build(self) -> None:
        cfg, cat = self.cfg, self.catalog
        intake = Intake(cat, intake_settings(cfg))
        lock = asyncio.Lock()
        for w in cfg.watch:
            spec = WatchSpec(
                w.path,
                origin_for_watch(cfg, w),
                stable_seconds=w.stable_seconds,
                poll_seconds=w.poll_seconds,
                use_inotify=not w.poll,
            )
            adopter = FolderAdopter(
                spec, intake, now=self.now, on_result=lambda _r: self._wake_publisher(), lock=lock
            )
            self.add(AdopterComponent(adopter, lock), STAGE_INPUT)
        if cfg.mqtt is not None:
            self._build_mqtt(cfg, cat)

    def _build_mqtt(self, cfg: Config, cat: Catalog) -> None:
        assert cfg.mqtt is not None and cfg.topic_root is not None
        root = cfg.topic_root
        status = StatusReporter(cat, f"{root}/status", version=__version__, now=self.now)
        link = MqttLink(MqttSettings.from_config(cfg), will=status.will)
        link.on_connect(status.on_connect)
        if cfg.mqtt.ha_discovery:
            messages = ha_discovery(cfg.mqtt.topic_prefix, cfg.device.id, __version__)

            async def discovery(link: MqttLink) -> None:
                for topic, payload in messages:
                    link.publish(topic, payload, qos=1, retain=True)

            link.on_connect(discovery)
        self.publisher = Publisher(cat, link, f"{root}/events", now=self.now)
        telemetry = TelemetryReporter(
            self.gatherer,
            link,
            f"{root}/telemetry",
            status,
            interval=cfg.mqtt.telemetry_interval_seconds,
            now=self.now,
        )
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
            reload=self.reload,
        )
        self.add(self.publisher, STAGE_REPORT)
        self.add(telemetry, STAGE_REPORT)
        self.add(self.dispatcher, STAGE_REPORT)
        self.add(LinkComponent(link, status), STAGE_LINK)

    def _wake_publisher(self) -> None:
        if self.publisher is not None:
            self.publisher.wake()

    async def status_doc(self) -> dict[str, Any]:
        snap = await asyncio.to_thread(self.gatherer.gather, self.now())
        state, reasons = availability(snap)
        return {
            "state": state,
            "reasons": reasons,
            "telemetry": build_telemetry(snap).model_dump(mode="json"),
        }

    async def reload(self) -> dict[str, Any]:
        """Re-read the config: trusted keys take effect now, other changes at restart."""
        if self.cfg.path is None:
            return {"reloaded": False, "reason": "config was not loaded from a file"}
        try:
            fresh = await asyncio.to_thread(load_config, self.cfg.path)
            keys = load_trusted_keys(fresh.commands.trusted_keys)
        except ConfigError as exc:
            return {"reloaded": False, "reason": "; ".join(exc.problems)}
        if self.dispatcher is not None:
            self.dispatcher.trusted = keys
        return {
            "reloaded": True,
            "trusted_keys": sorted(k.name for k in keys.values()),
            "restart_needed": fresh.model_dump(exclude={"commands"})
            != self.cfg.model_dump(exclude={"commands"}),
        }

    # -- running -----------------------------------------------------------------

    def request_stop(self) -> None:
        if self._term.is_set():
            log.warning("second stop signal: cancelling everything now")
            self._forced = True
            for slot in self.slots:
                if slot.task is not None:
                    slot.task.cancel()
            return
        log.info("stopping (send the signal again to force)")
        self._term.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            async with asyncio.TaskGroup() as tg:
                for slot in self.slots:
                    slot.task = tg.create_task(
                        slot.component.run(slot.stop), name=slot.component.name
                    )
                tg.create_task(self._shutdown(), name="shutdown")
                sd_notify("READY=1")
                log.info("edge-agent %s running: %s", __version__, ", ".join(self.names()))
        except* asyncio.CancelledError:
            if not self._forced:
                raise
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return 1 if self._forced else 0

    def names(self) -> list[str]:
        return [s.component.name for s in self.slots]

    async def _shutdown(self) -> None:
        await self._term.wait()
        sd_notify("STOPPING=1")
        deadline = loop_time() + self.shutdown_timeout
        for stage in sorted({s.stage for s in self.slots}):
            slots = [s for s in self.slots if s.stage == stage]
            for s in slots:
                s.stop.set()
            tasks = [s.task for s in slots if s.task is not None and not s.task.done()]
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.1, deadline - loop_time()))
        late = [s for s in self.slots if s.task is not None and not s.task.done()]
        for s in late:
            log.error("component %s did not stop in time: cancelled", s.component.name)
            assert s.task is not None
            s.task.cancel()


def loop_time() -> float:
    return asyncio.get_running_loop().time()


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


async def run_agent(cfg: Config, *, shutdown_timeout: float = 10.0) -> int:
    catalog = await asyncio.to_thread(open_catalog_from_config, cfg)
    try:
        agent = Agent(cfg, catalog, shutdown_timeout=shutdown_timeout)
        agent.build()
        return await agent.run()
    finally:
        catalog.close()


def main(config_path: Path) -> int:
    """Load the config and run until stopped (raises ConfigError on a bad config)."""
    cfg = load_config(config_path)
    return asyncio.run(run_agent(cfg))
