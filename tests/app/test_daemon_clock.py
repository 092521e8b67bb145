"""A wall-clock step reaches the intake within seconds, not at the janitor's next pass.

The agent runs in-process with a settable clock (the only fake: nobody may set
the test machine's real clock); catalog, janitor, intake and monitor are real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.app.daemon import Agent
from edge_agent.config.config import Config, parse_config
from edge_agent.core.clock import FakeClock, wall_step
from edge_agent.store.catalog import open_catalog_from_config


@given(
    wall=st.floats(1e9, 4e9),
    boot=st.floats(0, 1e7),
    elapsed=st.floats(0, 1e6),
    drift=st.floats(-1.9, 1.9),
)
def test_time_passing_with_slew_is_no_step(
    wall: float, boot: float, elapsed: float, drift: float
) -> None:
    after = (wall + elapsed + drift, boot + elapsed)
    assert wall_step((wall, boot), after) is None


@given(
    wall=st.floats(1e9, 4e9),
    boot=st.floats(0, 1e7),
    elapsed=st.floats(0, 1e5),
    step=st.one_of(st.floats(2.5, 1e9), st.floats(-1e9, -2.5)),
)
def test_a_set_clock_is_a_step_of_its_size(
    wall: float, boot: float, elapsed: float, step: float
) -> None:
    found = wall_step((wall, boot), (wall + elapsed + step, boot + elapsed))
    assert found is not None and abs(found - step) < 1e-3 * max(1.0, abs(step))


def test_first_reading_is_never_a_step() -> None:
    assert wall_step(None, (1e9, 5.0)) is None


async def test_clock_set_back_is_distrusted_within_seconds(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    catalog = await asyncio.to_thread(open_catalog_from_config, cfg)
    # Not NTP-synchronised: a step must then be judged, not accepted.
    clock = FakeClock(datetime.now(UTC), boottime=100.0, synced=None)
    agent = Agent(cfg, catalog, clock=clock, status_interval=1.0)
    try:
        await agent.recover()
        agent.build()
        run = asyncio.create_task(agent.run())
        await _until(lambda: agent.intake.clock_trusted and agent.janitor.heartbeat is not None)
        # The janitor has nothing due: its next pass is a minute away.
        assert agent.janitor.max_sleep >= 60
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        clock.jump_wall(-2 * 3600)  # someone sets the clock two hours back
        await _until(lambda: not agent.intake.clock_trusted, within=5.0)
        assert time.monotonic() - t0 < 3.0
        verdict = agent.janitor.guard.last
        assert verdict is not None and not verdict.trusted and verdict.reason
        agent.request_stop()
        assert await asyncio.wait_for(run, 15) == 0
    finally:
        catalog.close()


def _config(tmp_path: Path, extra: str = "") -> Config:
    return parse_config(
        f"""
[device]
id = "gw-clock"
hw_profile = "generic-linux"
[storage]
root = "{tmp_path / "recordings"}"
catalog = "{tmp_path / "catalog.db"}"
free_space_floor = "1MiB"
{extra}[[locations]]
id = "gate"
kind = "premises"
signage = true
""",
        tmp_path,
    )


async def _until(pred: Callable[[], object], within: float = 10.0) -> None:
    # Polls state that the agent's own tasks change; there is no event to wait on.
    for _ in range(int(within / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_untrusted_clock_alarms_then_recovers_on_sync_evidence(tmp_path: Path) -> None:
    """A +2 h step with adjtimex unavailable: untrusted, the alarm after the configured
    time, then trusted again within a tick of timesyncd's flag file appearing."""
    import os

    from edge_agent.store.audit import AuditLog

    flag = tmp_path / "synchronized"
    cfg = _config(
        tmp_path,
        f'[clock]\ntimesync_flag = "{flag}"\nchronyc = ""\nuntrusted_alarm_after_seconds = 30\n',
    )
    catalog = await asyncio.to_thread(open_catalog_from_config, cfg)
    clock = FakeClock(datetime.now(UTC), boottime=100.0, synced=None)
    agent = Agent(cfg, catalog, clock=clock, status_interval=0.5)

    def outbox(kind: str) -> int:
        return int(catalog.query("SELECT COUNT(*) FROM outbox WHERE type = ?", (kind,))[0][0])

    try:
        await agent.recover()
        agent.build()
        run = asyncio.create_task(agent.run())
        await _until(lambda: agent.intake.clock_trusted and agent.janitor.heartbeat is not None)
        clock.jump_wall(2 * 3600)  # NTP steps the clock; no sync evidence yet
        await _until(lambda: not agent.intake.clock_trusted, within=5.0)
        clock.advance(20)
        await asyncio.sleep(1.5)
        assert not agent.intake.clock_trusted and outbox("alarm.clock_untrusted") == 0
        clock.advance(15)  # 35 s untrusted by CLOCK_BOOTTIME: past the 30 s setting
        await _until(lambda: outbox("alarm.clock_untrusted") == 1, within=5.0)
        flag.touch()
        os.utime(flag, (clock.wall.timestamp(),) * 2)
        t0 = time.monotonic()
        await _until(lambda: agent.intake.clock_trusted, within=5.0)
        assert time.monotonic() - t0 < 3.5  # a monitor tick (1 s) plus one janitor pass
        actions = [e["action"] for e in AuditLog(catalog).export()]
        assert "clock.step_accepted" in actions
        assert outbox("alarm.cleared") == 1
        agent.request_stop()
        assert await asyncio.wait_for(run, 15) == 0
    finally:
        catalog.close()
