"""The daemon's lifecycle: one object owns the TaskGroup, the signals and the way down.

Modelled on uvicorn's ``Server``: components are registered as :class:`Slot`
entries with a stage, each runs under
:class:`~edge_agent.app.supervisor.Supervised` in one ``asyncio.TaskGroup``.

They stop in stages so that nothing is lost on the way down: inputs first
(recorders and adopters file what they have in flight), then the janitor and
telemetry, then the publisher and commands, then the MQTT link (which says
``offline`` before it disconnects), then the live view. The first SIGTERM (or
SIGINT) starts that, the whole of it bounded by ``shutdown_timeout``; what is
late is cancelled (a cut segment is adopted at the next start). A second
signal cancels everything at once. Exit codes: 0 after a graceful stop, 1
when forced (second signal, or the shutdown overran its bound by more than
:data:`HARD_EXIT_GRACE` seconds and the process was ended with ``os._exit``).
SIGHUP hands a reload to the daemon (docs/design/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from edge_agent import __version__
from edge_agent.app.supervisor import Component, Failure, RestartPolicy, Supervised
from edge_agent.host import sdnotify

log = logging.getLogger(__name__)

__all__ = [
    "HARD_EXIT_GRACE",
    "STAGE_INPUT",
    "STAGE_LINK",
    "STAGE_MAINT",
    "STAGE_REPORT",
    "STAGE_VIEW",
    "Lifecycle",
    "Slot",
]

STAGE_INPUT = 0  # recorders, adopters
STAGE_MAINT = 1  # janitor, telemetry, monitor
STAGE_REPORT = 2  # publisher, commands
STAGE_LINK = 3  # MQTT (publishes offline itself)
STAGE_VIEW = 4  # live view
HARD_EXIT_GRACE = 2.0  # past the shutdown bound, os._exit(1)


@dataclass(eq=False)
class Slot:
    component: Component
    stage: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    runner: Supervised | None = None
    task: asyncio.Task[None] | None = None


def _hard_exit(why: str) -> None:
    log.critical("%s: exiting now", why)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(1)


class Lifecycle:
    """Start, supervise and stop the registered components; own the signal handlers."""

    def __init__(
        self,
        *,
        shutdown_timeout: float,
        restart: RestartPolicy,
        hard_exit: bool,
        on_failure: Callable[[Failure], Awaitable[None]],
        on_hup: Callable[[], Coroutine[Any, Any, Any]],
        ready_status: Callable[[], str],
    ) -> None:
        self.shutdown_timeout = shutdown_timeout
        self.restart = restart
        self.hard_exit = hard_exit
        self.slots: list[Slot] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._on_failure = on_failure
        self._on_hup = on_hup
        self._ready_status = ready_status
        self._tg: asyncio.TaskGroup | None = None
        self._misc: set[asyncio.Task[Any]] = set()
        self._term = asyncio.Event()
        self._forced = False
        self._signals: list[int] = []

    # -- registering -----------------------------------------------------------------

    def add(self, component: Component, stage: int) -> Slot:
        """Register a component; started with the others (or at once if already running)."""
        slot = Slot(component, stage)
        self.slots.append(slot)
        if self._tg is not None:
            self._start(slot)
        return slot

    def names(self) -> list[str]:
        return [s.component.name for s in self.slots]

    def reasons(self) -> list[str]:
        """Why a supervised component is degraded (failing, restarting)."""
        return [r for s in self.slots if s.runner and (r := s.runner.reason())]

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run a one-off task (a reload) in the group; its failure is logged, not fatal."""

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

    def _start(self, slot: Slot) -> None:
        assert self._tg is not None
        slot.runner = Supervised(slot.component, policy=self.restart, on_failure=self._on_failure)
        slot.task = self._tg.create_task(slot.runner.run(slot.stop), name=slot.component.name)

    async def stop_slot(self, slot: Slot) -> None:
        """Stop one component (a reload removed it) within the shutdown bound."""
        slot.stop.set()
        if slot.task is not None and not slot.task.done():
            await asyncio.wait({slot.task}, timeout=self.shutdown_timeout)
            if not slot.task.done():
                log.error("component %s did not stop in time: cancelled", slot.component.name)
                slot.task.cancel()
        with contextlib.suppress(ValueError):
            self.slots.remove(slot)

    # -- signals -------------------------------------------------------------------------

    def install_signals(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._signals = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]

    def remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals = []

    def _on_sighup(self) -> None:
        if self._term.is_set():
            log.info("SIGHUP during shutdown: ignored")
            return
        self.spawn(self._on_hup(), "reload")

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
        # A thread, not the loop: a loop wedged by a stuck component must still end.
        timer = threading.Timer(after, _hard_exit, (f"{why} ({after:.0f} s)",))
        timer.daemon = True
        timer.start()

    # -- running -------------------------------------------------------------------------

    async def run(self) -> int:
        """Start every component; return the exit code once stopped."""
        if self.loop is None:
            self.install_signals()
        try:
            if self._term.is_set():
                log.info("stopped during start-up recovery")
                return 0
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                sdnotify.ready(self._ready_status())
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
