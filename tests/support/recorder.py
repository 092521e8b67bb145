"""Test helpers shared by several test modules (first written in test_recorder.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from edge_agent.app.settings import source_plans
from edge_agent.config.config import Config, parse_config
from edge_agent.core.model import Recording
from edge_agent.intake.intake import Intake
from edge_agent.intake.runtime import intake_settings
from edge_agent.recording.recorder_manager import (
    ManagerSettings,
    RecorderManager,
)
from edge_agent.store.catalog import Catalog

FAST = ManagerSettings(
    stall_seconds=2.0, open_timeout=5.0, backoff_base=0.2, backoff_cap=1.0, shutdown_timeout=10
)


def make_cfg(tmp: Path, sources: str, storage: str = "") -> Config:
    """``storage``: extra ``[storage]`` keys, e.g. the fsync policy."""
    text = f"""
[device]
id = "gw-test"
hw_profile = "generic-linux"
[storage]
root = "{tmp / "rec"}"
catalog = "{tmp / "catalog.db"}"
{storage}
[[locations]]
id = "lab"
kind = "premises"
audio_room = true
signage = true
[[locations]]
id = "gate"
kind = "premises"
signage = true
[[locations]]
id = "unsigned"
kind = "external"
{sources}
"""
    return parse_config(text, tmp)


def source(
    sid: str,
    url: str,
    location: str,
    *,
    seconds: int = 2,
    audio: bool = True,
    transport: str | None = None,
) -> str:
    return f"""
[[sources]]
id = "{sid}"
url = "{url}"
location = "{location}"
purpose = "rnd"
audio = {"true" if audio else "false"}
segment_seconds = {seconds}
""" + (f'rtsp_transport = "{transport}"\n' if transport is not None else "")


@dataclass
class Rig:
    cfg: Config
    catalog: Catalog
    intake: Intake
    manager: RecorderManager

    def recordings(self, source_id: str | None = None) -> list[Recording]:
        recs = sorted(self.catalog.recordings.list(), key=lambda r: r.tags.start)
        return [r for r in recs if source_id is None or r.source_id == source_id]

    def path(self, rec: Recording) -> Path:
        return Path(self.cfg.storage.root) / rec.path


def open_rig(
    tmp: Path, sources: str, settings: ManagerSettings = FAST, *, storage: str = ""
) -> Rig:
    cfg = make_cfg(tmp, sources, storage)
    cat = Catalog.open(tmp / "catalog.db", device_id="gw-test", storage_root=tmp / "rec")
    intake = Intake(cat, intake_settings(cfg))
    return Rig(
        cfg,
        cat,
        intake,
        RecorderManager(source_plans(cfg, settings), intake, cfg.storage.root, settings=settings),
    )


@asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[RecorderManager]:
    stop = asyncio.Event()
    task = asyncio.create_task(rig.manager.run(stop))
    try:
        yield rig.manager
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(cond: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def state(rig: Rig, sid: str) -> str:
    return next(s.state for s in rig.manager.snapshot() if s.id == sid)


def kinds(doc: dict[str, object]) -> list[str]:
    streams = doc["streams"]
    assert isinstance(streams, list)
    return [s["codec_type"] for s in streams]
