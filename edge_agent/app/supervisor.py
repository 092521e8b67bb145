"""Restart-with-backoff for the daemon's components.

Every component runs under :class:`Supervised`: if its ``run(stop)`` raises
(or returns although nobody asked it to stop) the failure is logged with its
traceback, reported through ``on_failure`` (the daemon queues an
``alarm.component_failed`` event) and the component is started again after a
jittered exponential backoff. One broken part of the agent (a watch folder
on a dead share, a live-view port taken) must never stop the recorders.

Cancellation is not a failure: it propagates at once. A run that lasted
``stable_after`` seconds resets the backoff, so a component that fails once a
day restarts after a second, not after the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from edge_agent.core.backoff import backoff_delay

log = logging.getLogger(__name__)

__all__ = [
    "Component",
    "ComponentRecord",
    "Failure",
    "RestartPolicy",
    "Supervised",
    "describe",
]


class Component(Protocol):
    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass(frozen=True)
class RestartPolicy:
    base: float = 1.0
    cap: float = 60.0
    stable_after: float = 60.0  # a run this long resets the backoff and clears the report
    event_interval: float = 600.0  # one alarm event per streak, then at most this often


@dataclass(frozen=True)
class Failure:
    """One failure, as handed to ``on_failure``."""

    component: str
    error: str
    attempt: int  # consecutive failures, this one included
    total: int  # failures since the agent started
    restart_in: float
    report: bool  # worth an alarm event (first of a streak, or event_interval passed)


@dataclass
class ComponentRecord:
    """What the daemon reports about one supervised component."""

    name: str
    failures: int = 0  # consecutive
    total_failures: int = 0
    last_error: str | None = None
    started_at: float | None = None  # monotonic, of the current run
    restart_at: float | None = None  # monotonic, while waiting to restart

    def reason(self, now: float, stable_after: float) -> str | None:
        """A degraded reason while the component is failing or not yet stable again."""
        if not self.failures:
            return None
        if self.restart_at is not None:
            wait = max(0.0, self.restart_at - now)
            return (
                f"component {self.name} failed ({self.failures}x in a row: {self.last_error}); "
                f"restarting in {wait:.0f} s"
            )
        if self.started_at is not None and now - self.started_at < stable_after:
            return f"component {self.name} restarted after a failure ({self.last_error})"
        return None


def describe(exc: BaseException) -> str:
    """One line naming the real error(s), not the TaskGroup that wrapped them."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


FailureHook = Callable[[Failure], Awaitable[None]]


class Supervised:
    """Runs ``component`` until ``stop``, restarting it whenever it fails."""

    def __init__(
        self,
        component: Component,
        *,
        policy: RestartPolicy = RestartPolicy(),
        on_failure: FailureHook | None = None,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.component = component
        self.name = component.name
        self.policy = policy
        self.on_failure = on_failure
        self._rng = rng
        self._clock = clock
        self.record = ComponentRecord(component.name)
        self._last_event = float("-inf")

    async def run(self, stop: asyncio.Event) -> None:
        rec, policy = self.record, self.policy
        while not stop.is_set():
            rec.started_at, rec.restart_at = self._clock(), None
            caught: BaseException | None = None
            try:
                await self.component.run(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                caught = exc
                error = describe(exc)
            else:
                if stop.is_set():
                    return
                error = "stopped by itself without being asked to"
            now = self._clock()
            if rec.failures and now - rec.started_at >= policy.stable_after:
                rec.failures = 0  # the previous streak ended with a long healthy run
            rec.failures += 1
            rec.total_failures += 1
            rec.last_error = error
            delay = backoff_delay(rec.failures, policy.base, policy.cap, self._rng())
            rec.restart_at = now + delay
            report = rec.failures == 1 or now - self._last_event >= policy.event_interval
            if report:
                self._last_event = now
            # The traceback once per streak: a component failing every minute for a
            # day must not bury the journal.
            log.error(
                "component %s failed (%d in a row): %s; restarting in %.1f s",
                self.name,
                rec.failures,
                error,
                delay,
                exc_info=caught if report else None,
            )
            if self.on_failure is not None:
                failure = Failure(self.name, error, rec.failures, rec.total_failures, delay, report)
                try:
                    await self.on_failure(failure)
                except Exception:
                    log.exception("reporting the failure of %s failed", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        rec.restart_at = None

    def reason(self) -> str | None:
        return self.record.reason(self._clock(), self.policy.stable_after)
