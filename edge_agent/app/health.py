"""Health checks that gate systemd's ``WATCHDOG=1``.

systemd kills and restarts a ``Type=notify`` service whose pings stop. A ping
therefore means more than "the process exists": the event loop answers in
time, the janitor's loop still turns (retention is a legal duty, not a
nicety), and while the broker is connected the outbox drains. Any failed
check withholds the ping and becomes a degraded reason; if it lasts longer
than ``WatchdogSec`` systemd restarts the agent, which is the cure for a
wedged loop or a stuck worker thread.

:func:`problems` is pure; :class:`LagProbe` and :class:`OutboxProgress` are
the small stateful parts that feed it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["HealthReading", "HealthSettings", "LagProbe", "OutboxProgress", "problems"]


@dataclass(frozen=True)
class HealthSettings:
    max_loop_lag: float = 5.0  # seconds a callback may wait for the loop
    lag_probe: float = 0.25  # the probe's sleep
    lag_window: float = 30.0  # lag is the worst seen over this window
    janitor_factor: float = 10.0  # janitor loop silent for this many max_sleeps: unhealthy
    outbox_stall: float = 300.0  # connected, events waiting and no PUBACK for this long


@dataclass(frozen=True)
class HealthReading:
    loop_lag: float
    janitor_silent: float | None  # seconds since the janitor loop last turned; None: no janitor
    janitor_limit: float
    outbox_stalled: float | None  # seconds stalled while connected; None: MQTT off


def problems(r: HealthReading, s: HealthSettings) -> list[str]:
    """One line per failed check; empty means healthy (WATCHDOG=1 may be sent)."""
    out: list[str] = []
    if r.loop_lag > s.max_loop_lag:
        out.append(f"event loop blocked for {r.loop_lag:.1f} s (limit {s.max_loop_lag:.0f} s)")
    if r.janitor_silent is not None and r.janitor_silent > r.janitor_limit:
        out.append(
            f"janitor has not run for {r.janitor_silent:.0f} s (limit {r.janitor_limit:.0f} s)"
        )
    if r.outbox_stalled is not None and r.outbox_stalled > s.outbox_stall:
        out.append(
            f"outbox not draining for {r.outbox_stalled:.0f} s although connected "
            f"(limit {s.outbox_stall:.0f} s)"
        )
    return out


class LagProbe:
    """Measures how late the event loop runs a timer: the worst over a sliding window."""

    def __init__(
        self,
        interval: float = 0.25,
        window: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, at: float, lag: float) -> None:
        self._samples.append((at, lag))
        while self._samples and self._samples[0][0] < at - self.window:
            self._samples.popleft()

    def worst(self) -> float:
        return max((lag for _, lag in self._samples), default=0.0)

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            before = self._clock()
            await asyncio.sleep(self.interval)
            after = self._clock()
            self.add(after, max(0.0, after - before - self.interval))


class OutboxProgress:
    """How long the outbox has waited with the broker connected and nothing acknowledged."""

    def __init__(self, now: float) -> None:
        self._ok_at = now
        self._published = -1

    def observe(self, now: float, *, connected: bool, depth: int, published: int) -> float:
        """Feed a sample; returns the seconds stalled so far (0 while fine)."""
        if not connected or depth == 0 or published != self._published:
            self._ok_at = now
        self._published = published
        return now - self._ok_at
