"""Adapters that give the daemon's parts the ``name`` and ``run(stop)`` of a component.

See :class:`~edge_agent.app.supervisor.Component` and docs/design/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from edge_agent.comms.mqtt import MqttLink
from edge_agent.comms.status import StatusReporter
from edge_agent.intake.adopter import FolderAdopter

__all__ = ["AdopterComponent", "FnComponent", "LinkComponent", "until_stopped"]


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
