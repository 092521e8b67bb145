"""The daemon's storage watch, in process: a disk that hangs, then answers again."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.app import storage_watch
from edge_agent.app.daemon import Agent
from edge_agent.config.config import parse_config
from edge_agent.retention.storage_gate import Health, StorageGate
from edge_agent.store.catalog import open_catalog_from_config


async def _until(pred: Callable[[], object], within: float = 10.0) -> None:
    end = time.monotonic() + within
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


def _alarms(agent: Agent) -> list[tuple[str, dict[str, object]]]:
    rows = agent.catalog.query("SELECT type, payload FROM outbox WHERE type LIKE 'alarm.%'")
    return [(r[0], json.loads(r[1])) for r in rows]


async def test_a_hanging_disk_is_an_io_error_then_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_watch, "STALL_SECONDS", 0.5)
    cfg = parse_config(
        f"""
[device]
id = "gw-hang"
hw_profile = "generic-linux"
[storage]
root = "{tmp_path / "recordings"}"
catalog = "{tmp_path / "catalog.db"}"
free_space_floor = "1MiB"
[[locations]]
id = "gate"
kind = "premises"
signage = true
""",
        tmp_path,
    )
    catalog = await asyncio.to_thread(open_catalog_from_config, cfg)
    agent = Agent(cfg, catalog, status_interval=1.0)
    assert agent.storage is not None
    gate: StorageGate = agent.storage.gate
    answer = threading.Event()

    def hanging_probe(_root: Path) -> int | None:
        answer.wait(20)
        return None

    gate._probe = hanging_probe
    try:
        await agent.recover()
        agent.build()
        run = asyncio.create_task(agent.run())
        gate.suspect()  # as after a failed write: the next look writes a probe, which hangs
        await _until(lambda: agent.manager.held is not None)
        assert gate.health is Health.IO_ERROR
        assert "does not answer" in (agent.manager.held or "")
        assert any("storage failing" in r for r in agent.degraded_reasons())
        await _until(lambda: any(t == "alarm.storage_io_error" for t, _ in _alarms(agent)))
        # The event loop went on meanwhile: the status line is answered at once.
        t0 = time.perf_counter()
        agent.status_line()
        assert time.perf_counter() - t0 < 0.05
        answer.set()  # the disk answers, and the probe succeeds
        await _until(lambda: gate.blocked() is None and agent.manager.held is None)
        cleared = [d for t, d in _alarms(agent) if t == "alarm.cleared"]
        assert cleared and cleared[-1]["alarm"] == "storage_io_error"
        assert cleared[-1]["reconcile_refused"] is None
        assert not [r for r in agent.degraded_reasons() if "storage" in r]
        agent.request_stop()
        assert await asyncio.wait_for(run, 15) == 0
    finally:
        answer.set()
        catalog.close()
