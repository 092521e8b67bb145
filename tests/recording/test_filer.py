"""The recorder's filer (edge_agent/recording/filer.py): waves of closed segments,
alarms in their place, and the ``[storage] fsync`` policy ("always" fsyncs each
segment; "batched" files them only after one syncfs of the storage root)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.config.config import Config
from edge_agent.core.model import POLICY_VERSION, Purpose, Site, Tags, TimeSource
from edge_agent.host import fsutil
from edge_agent.intake.intake import PARTIAL_PREFIX, Intake, Origin
from edge_agent.intake.runtime import intake_settings, origin_for_source
from edge_agent.recording.filer import SegmentFiler, _Alarm, plan_wave
from edge_agent.recording.recorder import find_partials
from edge_agent.recording.run import ClosedSegment
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox
from tests.support.mediagen import make_video
from tests.support.recorder import make_cfg, open_rig, running, source

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
CAMS = ("cam-a", "cam-b", "cam-c", "cam-d")
Rows = Callable[[], int]


def config(tmp: Path, storage: str) -> Config:
    sources = "".join(
        f'[[sources]]\nid = "{c}"\nurl = "file:///dev/null"\nlocation = "gate"\n'
        'purpose = "security"\naudio = false\n'
        for c in CAMS
    )
    return make_cfg(tmp, sources, storage)


@dataclass
class Rig:
    intake: Intake
    catalog: Catalog
    filer: SegmentFiler
    clip: Path
    origins: dict[str, Origin] = field(default_factory=dict)
    made: int = 0

    def segment(self, cam: str) -> ClosedSegment:
        """A segment the recorder just closed: real Matroska under its .partial- name."""
        self.made += 1
        start = T0 + timedelta(seconds=4 * self.made)
        tags = Tags(
            "gate", Purpose.SECURITY, Site.PREMISES, False, False,
            start, start + timedelta(seconds=4), TimeSource.RECORDER, "gw-test", POLICY_VERSION,
        )  # fmt: skip
        rec_id = f"{cam}-{self.made}".ljust(32, "0")
        final = self.intake.final_path(tags, rec_id, cam, "mkv")
        path = final.with_name(PARTIAL_PREFIX + final.name)
        shutil.copyfile(self.clip, path)
        return ClosedSegment(path, tags, rec_id, self.origins[cam], "segment_seconds")

    def hand_over(self, items: list[ClosedSegment]) -> None:
        """From a recording thread, as the recorders do."""
        t = threading.Thread(target=lambda: [self.filer.segment_closed(i) for i in items])
        t.start()
        t.join()

    def rows(self) -> int:
        return len(self.catalog.recordings.list())


@asynccontextmanager
async def rig(tmp: Path, storage: str = "") -> AsyncIterator[Rig]:
    cfg = config(tmp, storage)
    cat = Catalog.open(tmp / "catalog.db", device_id="gw-test", storage_root=tmp / "rec")
    intake = Intake(cat, intake_settings(cfg))
    filer = SegmentFiler(intake, lambda: datetime.now(UTC))
    filer.loop = asyncio.get_running_loop()
    r = Rig(intake, cat, filer, make_video(tmp / "clip.mkv", container="mkv", seconds=1))
    r.origins = {s.id: origin_for_source(cfg, s) for s in cfg.sources}
    task = asyncio.create_task(filer.run())
    try:
        yield r
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        cat.close()


@pytest.fixture()
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths handed to os.fsync (recorded, then the real fsync runs)."""
    seen: list[str] = []
    real = os.fsync

    def recording_fsync(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    yield seen


@pytest.fixture()
def syncfs_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[[Rows], list[tuple[float, int]]]:
    """Each syncfs of the storage root (recorded, then the real one runs): when, and
    how many rows the catalog had at that moment (``rows`` counts them)."""
    calls: list[tuple[float, int]] = []
    real = fsutil.syncfs
    count: list[Rows] = []

    def recording_syncfs(path: Path) -> None:
        calls.append((time.monotonic(), count[0]() if count else -1))
        real(path)

    monkeypatch.setattr(fsutil, "syncfs", recording_syncfs)

    def attach(rows: Rows) -> list[tuple[float, int]]:
        count.append(rows)
        return calls

    return attach


async def until(cond: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_a_wave_keeps_alarms_and_damaged_segments_in_their_place() -> None:
    def seg(name: str, damaged: bool = False) -> ClosedSegment:
        return ClosedSegment(Path(name), None, name, None, "x", damaged)  # type: ignore[arg-type]

    a, b, c, d = seg("a"), seg("b"), seg("c", damaged=True), seg("d")
    alarm = _Alarm("alarm.audio_dropped", {}, T0)
    assert plan_wave([a, b, alarm, c, d]) == [[a, b], alarm, c, [d]]
    assert plan_wave([]) == []


async def test_segments_closed_together_are_filed_in_order_with_alarms_between(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    async with rig(tmp_path) as r:
        first = [r.segment(c) for c in CAMS]
        second = [r.segment(c) for c in CAMS]
        r.hand_over(first)
        r.filer.alarm("alarm.audio_dropped", {"source_id": "cam-a", "reason": "test"})
        r.hand_over(second)
        await r.filer.drained(20)

        assert r.rows() == 8 and r.filer.filed == 8
        events = Outbox(r.catalog).peek(100)
        # Per camera: its segments' events in order, cam-a's alarm between its two.
        for cam in CAMS:
            mine = [
                e.type if e.type != "recording.added" else e.payload["recording_id"]
                for e in events
                if e.payload.get("source_id") == cam
                or str(e.payload.get("recording_id", "")).startswith(cam)
            ]
            want = [s.rec_id for s in first if s.origin.source_id == cam]
            want += ["alarm.audio_dropped"] if cam == "cam-a" else []
            want += [s.rec_id for s in second if s.origin.source_id == cam]
            assert mine == want, cam
        assert AuditLog(r.catalog).verify().ok
        # "always" (the generic-linux profile): each segment fsynced, under its .partial- name.
        for s in first + second:
            assert str(s.path) in fsyncs


async def test_always_from_the_config_fsyncs_every_segment(
    tmp_path: Path, fsyncs: list[str], syncfs_calls: Callable[[Rows], list[tuple[float, int]]]
) -> None:
    async with rig(tmp_path, 'fsync = "always"') as r:
        calls = syncfs_calls(r.rows)
        assert r.filer.batch_seconds is None
        segs = [r.segment(c) for c in CAMS]
        r.hand_over(segs)
        await until(lambda: r.rows() == len(segs), 20, "every segment filed")
        assert [s for s in segs if str(s.path) not in fsyncs] == []
        assert calls == []


async def test_batched_files_only_after_one_syncfs_within_the_batch(
    tmp_path: Path, fsyncs: list[str], syncfs_calls: Callable[[Rows], list[tuple[float, int]]]
) -> None:
    batch = 1.0
    async with rig(tmp_path, f'fsync = "batched"\nfsync_batch_seconds = {batch}') as r:
        calls = syncfs_calls(r.rows)
        assert r.filer.batch_seconds == batch
        segs = [r.segment(c) for c in CAMS] + [r.segment(c) for c in CAMS]
        handed = time.monotonic()
        r.hand_over(segs)
        await asyncio.sleep(batch / 2)
        assert r.rows() == 0, "nothing is filed before the batch's sync"
        assert all(s.path.exists() for s in segs), "they wait under their .partial- names"
        await until(lambda: r.rows() == len(segs), batch + 5, "the batch filed")
        filed = time.monotonic()

        assert len(calls) == 1, "one syncfs for the whole wave"
        synced_at, rows_then = calls[0]
        assert rows_then == 0, "no row before the sync"
        assert batch * 0.9 <= synced_at - handed <= batch + 2
        assert filed - handed <= batch + 5
        assert [s for s in segs if str(s.path) in fsyncs] == [], "no fsync per segment"
        assert AuditLog(r.catalog).verify().ok


async def test_drained_syncs_and_files_what_waits_at_once(
    tmp_path: Path, syncfs_calls: Callable[[Rows], list[tuple[float, int]]]
) -> None:
    async with rig(tmp_path, 'fsync = "batched"\nfsync_batch_seconds = 600') as r:
        calls = syncfs_calls(r.rows)
        segs = [r.segment(c) for c in CAMS]
        r.hand_over(segs)
        r.filer.alarm("alarm.audio_dropped", {"source_id": "cam-b", "reason": "test"})
        await asyncio.sleep(0.2)
        assert r.rows() == 0
        started = time.monotonic()
        await r.filer.drained(20)
        assert time.monotonic() - started < 10
        assert r.rows() == len(segs) and len(calls) == 1 and calls[0][1] == 0
        types = [e.type for e in Outbox(r.catalog).peek(100)]
        assert types.count("recording.added") == len(segs) and "alarm.audio_dropped" in types


async def test_a_recorder_with_the_batched_policy_files_after_each_sync(
    tmp_path: Path, fsyncs: list[str], syncfs_calls: Callable[[Rows], list[tuple[float, int]]]
) -> None:
    small = "testsrc://?size=160x120&rate=25&bitrate=150k&gop=1"
    rig = open_rig(
        tmp_path,
        source("cam-a", small, "gate", audio=False) + source("cam-b", small, "gate", audio=False),
        storage='fsync = "batched"\nfsync_batch_seconds = 1.5',
    )
    calls = syncfs_calls(lambda: len(rig.recordings()))
    async with running(rig) as m:
        await until(lambda: len(rig.recordings()) >= 4, 20, "four segments filed")
        assert len(calls) >= 1 and calls[0][1] == 0, "the first rows came after a sync"
        assert m.filer.syncs == len(calls)
    # The stop synced and filed the open segments: nothing is left under .partial- names.
    assert not list(find_partials(Path(rig.cfg.storage.root)))
    recs = rig.recordings()
    assert len(calls) < len(recs), "one sync for several segments"
    assert [f for f in fsyncs if PARTIAL_PREFIX in f] == [], "no segment fsynced on its own"
    assert AuditLog(rig.catalog).verify().ok
    rig.catalog.close()
