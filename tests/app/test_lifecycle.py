"""The daemon's lifecycle in process: staged shutdown, its bound, a forced stop, SIGHUP.

The subprocess tests in test_daemon.py check the same through real signals;
these pin the order and the bounds of :class:`Lifecycle` itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from edge_agent.app.components import FnComponent
from edge_agent.app.lifecycle import STAGE_INPUT, STAGE_LINK, STAGE_MAINT, Lifecycle
from edge_agent.app.supervisor import Failure, RestartPolicy


class Harness:
    def __init__(self, shutdown_timeout: float = 2.0) -> None:
        self.events: list[str] = []
        self.failures: list[Failure] = []
        self.hups = 0
        self.lc = Lifecycle(
            shutdown_timeout=shutdown_timeout,
            restart=RestartPolicy(base=0.05, cap=0.1),
            hard_exit=False,
            on_failure=self._failed,
            on_hup=self._hup,
            ready_status=lambda: "ready",
        )

    async def _failed(self, f: Failure) -> None:
        self.failures.append(f)

    async def _reload(self) -> dict[str, Any]:
        self.hups += 1
        return {}

    def _hup(self) -> Any:
        return self._reload()

    def polite(self, name: str, stage: int, linger: float = 0.0) -> None:
        async def run(stop: asyncio.Event) -> None:
            self.events.append(f"start {name}")
            await stop.wait()
            await asyncio.sleep(linger)
            self.events.append(f"stop {name}")

        self.lc.add(FnComponent(name, run), stage)

    def stubborn(self, name: str, stage: int) -> None:
        async def run(stop: asyncio.Event) -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.events.append(f"cancelled {name}")
                raise

        self.lc.add(FnComponent(name, run), stage)


async def _until(cond: Any, within: float = 5.0) -> None:
    end = time.monotonic() + within
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


async def test_stages_stop_in_order_and_exit_0() -> None:
    h = Harness()
    # Registered out of order: the stage, not the order of adding, decides.
    h.polite("link", STAGE_LINK)
    h.polite("janitor", STAGE_MAINT)
    h.polite("recorder", STAGE_INPUT, linger=0.1)
    run = asyncio.create_task(h.lc.run())
    await _until(lambda: len(h.events) == 3)
    assert h.lc.names() == ["link", "janitor", "recorder"]
    h.lc.request_stop()
    assert h.lc.stopping
    assert await asyncio.wait_for(run, 5.0) == 0
    assert h.events[3:] == ["stop recorder", "stop janitor", "stop link"]


async def test_a_component_that_ignores_stop_is_cancelled_within_the_bound() -> None:
    h = Harness(shutdown_timeout=1.0)
    h.stubborn("stuck", STAGE_INPUT)
    h.polite("link", STAGE_LINK)
    run = asyncio.create_task(h.lc.run())
    await _until(lambda: "start link" in h.events)
    t0 = time.monotonic()
    h.lc.request_stop()
    assert await asyncio.wait_for(run, 5.0) == 0
    took = time.monotonic() - t0
    # The inputs get the bound less the reserve kept for the link's offline message.
    assert took < 1.5
    assert h.events.index("cancelled stuck") < h.events.index("stop link")


async def test_a_second_stop_cancels_everything_and_exits_1() -> None:
    h = Harness(shutdown_timeout=30.0)
    h.stubborn("stuck", STAGE_INPUT)
    run = asyncio.create_task(h.lc.run())
    await _until(lambda: h.lc.names() == ["stuck"] and h.lc.slots[0].task is not None)
    h.lc.request_stop()
    await asyncio.sleep(0.1)
    assert not run.done()
    h.lc.request_stop()
    assert await asyncio.wait_for(run, 5.0) == 1
    assert "cancelled stuck" in h.events


async def test_stop_before_run_returns_at_once_and_signals_are_removed() -> None:
    h = Harness()
    h.polite("recorder", STAGE_INPUT)
    h.lc.install_signals()
    h.lc.request_stop()  # a SIGTERM during start-up recovery
    assert await h.lc.run() == 0
    assert h.events == []
    loop = asyncio.get_running_loop()
    assert not loop.remove_signal_handler(signal.SIGTERM)


async def test_sighup_spawns_a_reload_and_is_ignored_while_stopping() -> None:
    h = Harness()
    h.polite("recorder", STAGE_INPUT)
    run = asyncio.create_task(h.lc.run())
    await _until(lambda: h.events == ["start recorder"])
    os.kill(os.getpid(), signal.SIGHUP)
    await _until(lambda: h.hups == 1)
    h.lc.request_stop()
    os.kill(os.getpid(), signal.SIGHUP)
    assert await asyncio.wait_for(run, 5.0) == 0
    assert h.hups == 1


async def test_a_component_added_while_running_starts_and_stop_slot_removes_it() -> None:
    h = Harness()
    h.polite("recorder", STAGE_INPUT)
    run = asyncio.create_task(h.lc.run())
    await _until(lambda: h.events == ["start recorder"])
    h.polite("adopter", STAGE_INPUT)
    await _until(lambda: "start adopter" in h.events)
    await h.lc.stop_slot(h.lc.slots[1])
    assert h.lc.names() == ["recorder"] and "stop adopter" in h.events
    h.lc.request_stop()
    assert await asyncio.wait_for(run, 5.0) == 0
