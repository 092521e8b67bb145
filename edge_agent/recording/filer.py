"""Closed segments and alarms from the recording threads, filed in order on the event loop.

The recorders' worker threads hand over each closed segment (and each
``alarm.*`` event) with :meth:`SegmentFiler.segment_closed` /
:meth:`SegmentFiler.alarm`, which never wait. :meth:`SegmentFiler.run` files
them in worker threads (:meth:`Intake.register_segments`: hashing, fsync,
SQLite), so a recording thread never waits for the disk or the catalog.
A segment that cannot be filed stays under its ``.partial-`` name and is
adopted at the next start (:mod:`edge_agent.recording.segment_recovery`).

Lanes: each source's segments and alarms are filed in order, in one of
:data:`LANES` lanes chosen by its id, and the lanes run side by side. Cameras
started together close their segments together; filed one at a time, 32 of
them queued 0.5 s behind each other (bench/recorder.py --streams), while one
segment's hashing and fsync can overlap another's catalog transaction.

Waves: a lane takes everything already queued (up to :data:`WAVE`) and
catalogues its segments in one transaction (:mod:`edge_agent.intake.segments`);
32 transactions at once were a fifth of the recorder's CPU at 32 streams.

``[storage] fsync = "batched"`` (SD cards, spinning disks): closed segments
wait under their ``.partial-`` names, and every ``fsync_batch_seconds`` one
``syncfs`` of the storage root makes them all durable before their wave is
filed without an fsync per file; no row is written before that sync. Alarms
wait with the segments they are queued between, so each source's events keep
their order. :meth:`SegmentFiler.drained` syncs and files what waits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from edge_agent.host import fsutil
from edge_agent.intake.intake import Intake, Segment
from edge_agent.recording.run import ClosedSegment
from edge_agent.recording.segment_recovery import adopt_partial

if TYPE_CHECKING:
    from edge_agent.retention.storage_gate import StorageGate

# The manager's logger: these lines were its own and operators filter on it.
log = logging.getLogger("edge_agent.recording.recorder_manager")

__all__ = ["LANES", "WAVE", "SegmentFiler", "plan_wave"]

LANES = 2  # filings side by side; SQLite still commits one at a time
WAVE = 32  # segments per catalog transaction: a short hold of the catalog lock


@dataclass(frozen=True)
class _Alarm:
    type: str
    data: dict[str, object]
    at: datetime


Item = ClosedSegment | _Alarm
# A step of a wave: healthy segments catalogued together, or one item on its own.
Step = list[ClosedSegment] | ClosedSegment | _Alarm


def plan_wave(items: Sequence[Item]) -> list[Step]:
    """Pure: the steps that file ``items`` in their order.

    Healthy segments next to each other go into one transaction; an alarm (an
    outbox event) and a damaged segment (probed and measured first, as crash
    recovery does) are filed alone, in their place, so nothing of one source
    overtakes anything of the same source.
    """
    steps: list[Step] = []
    for item in items:
        if isinstance(item, ClosedSegment) and not item.damaged:
            last = steps[-1] if steps else None
            if isinstance(last, list):
                last.append(item)
            else:
                steps.append([item])
        else:
            steps.append(item)
    return steps


def _take(queue: asyncio.Queue[Item], limit: int | None) -> list[Item]:
    items: list[Item] = []
    while not queue.empty() and (limit is None or len(items) < limit):
        items.append(queue.get_nowait())
    return items


class SegmentFiler:
    """The recording threads' hand-over point to intake and the outbox (one per manager)."""

    def __init__(self, intake: Intake, now: Callable[[], datetime]) -> None:
        self.intake = intake
        self._now = now
        self._queues: list[asyncio.Queue[Item]] = [asyncio.Queue() for _ in range(LANES)]
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the manager's run()
        self.gate: StorageGate | None = None  # storage lost or failing: do not file
        self.filed = 0  # segments catalogued since start
        self.syncs = 0  # syncfs calls made ("batched")
        self._count_lock = threading.Lock()  # the lanes' threads count into it
        self._queued = asyncio.Event()  # something waits in a lane ("batched")
        self._nudge = asyncio.Event()  # drained() wants the waiting ones filed now
        self._draining = 0

    @property
    def batch_seconds(self) -> float | None:
        """None: each segment is fsynced as it is filed (``fsync = "always"``)."""
        return self.intake.settings.segment_sync_seconds

    def segment_closed(self, seg: Item) -> None:
        """Called from a recording thread."""
        if isinstance(seg, ClosedSegment) and seg.damaged and self.gate is not None:
            self.gate.suspect()  # a write failed: is it the disk?
        loop = self.loop
        if loop is None:
            return
        if isinstance(seg, ClosedSegment):
            source = seg.origin.source_id or ""
        else:
            source = str(seg.data.get("source_id", ""))
        queue = self._queues[zlib.crc32(source.encode()) % LANES]
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._put, queue, seg)

    def _put(self, queue: asyncio.Queue[Item], item: Item) -> None:
        queue.put_nowait(item)
        self._queued.set()

    def alarm(self, type: str, data: dict[str, object]) -> None:
        """Called from a recording thread: queued into the outbox in order with the segments."""
        self.segment_closed(_Alarm(type, data, self._now()))

    async def drained(self, within: float) -> None:
        """Wait up to ``within`` seconds until everything handed over is filed
        (with ``fsync = "batched"``: synced and filed now, not at the next batch)."""
        self._draining += 1
        self._nudge.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues)), within)
        finally:
            self._draining -= 1

    async def run(self) -> None:
        seconds = self.batch_seconds
        if seconds is None:
            await asyncio.gather(*(self._lane(q) for q in self._queues))
        else:
            await self._batched(seconds)

    async def _lane(self, queue: asyncio.Queue[Item]) -> None:
        while True:
            wave = [await queue.get()]
            wave += _take(queue, WAVE - 1)
            try:
                await self._file_wave(wave, synced=False)
            finally:
                for _ in wave:
                    queue.task_done()

    async def _batched(self, seconds: float) -> None:
        """Every ``seconds`` (at once while draining): one syncfs, then every lane's wave."""
        loop = asyncio.get_running_loop()
        while True:
            await self._queued.wait()
            due = loop.time() + seconds
            while not self._draining and (left := due - loop.time()) > 0:
                self._nudge.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudge.wait(), left)
            self._queued.clear()
            # Taken before the sync: only what was closed before it started is covered.
            waves = [_take(q, None) for q in self._queues]
            if not any(waves):
                continue
            try:
                blocked = await self._sync()
                await asyncio.gather(*(self._file_synced(w, blocked) for w in waves if w))
            finally:
                for q, w in zip(self._queues, waves, strict=True):
                    for _ in w:
                        q.task_done()

    async def _sync(self) -> str | None:
        """One syncfs of the storage root; why the segments cannot be filed, if so."""
        why = self.gate.blocked() if self.gate is not None else None
        if why is not None:
            return why
        try:
            await asyncio.to_thread(fsutil.syncfs, self.intake.settings.storage_root)
        except OSError as exc:
            if self.gate is not None:
                self.gate.suspect()
            return f"cannot sync the storage: {exc.strerror or exc}"
        self.syncs += 1
        return None

    async def _file_synced(self, items: list[Item], blocked: str | None) -> None:
        for i in range(0, len(items), WAVE):
            await self._file_wave(items[i : i + WAVE], synced=True, blocked=blocked)

    async def _file_wave(
        self, wave: list[Item], *, synced: bool, blocked: str | None = None
    ) -> None:
        try:
            await asyncio.to_thread(self._file_steps, wave, synced, blocked)
        except Exception:
            # Left under their .partial- names: adopted at the next start.
            log.exception("cannot file %d item(s)", len(wave))

    def _file_steps(self, wave: list[Item], synced: bool, blocked: str | None) -> None:
        now = self._now()
        for step in plan_wave(wave):
            try:
                self._file_step(step, now, synced, blocked)
            except Exception:
                # Left under its .partial- name: adopted at the next start.
                log.exception("cannot file %s", _name(step))

    def _file_step(self, step: Step, now: datetime, synced: bool, blocked: str | None) -> None:
        if isinstance(step, _Alarm):
            self.intake.outbox.enqueue(step.type, step.data, ts=step.at)
            return
        why = blocked or (self.gate.blocked() if self.gate is not None else None)
        if why is not None:
            # Filed when the storage is back (recover_partials), if the file made it there.
            log.warning("segment(s) %s not filed now (%s)", _name(step), why)
            return
        if isinstance(step, ClosedSegment):  # damaged: measured from its packets
            adopt_partial(step.path, self.intake, now)
            filed = 1
        else:
            segs = [Segment(s.path, s.tags, s.rec_id, s.origin) for s in step]
            results = self.intake.register_segments(segs, now, synced=synced)
            filed = 0
            for seg, res in zip(step, results, strict=True):
                if isinstance(res, Exception):
                    log.error("cannot file %s: %s", seg.path.name, res)
                else:
                    filed += 1
        with self._count_lock:
            self.filed += filed


def _name(step: Step) -> str:
    if isinstance(step, list):
        return ", ".join(s.path.name for s in step)
    return step.path.name if isinstance(step, ClosedSegment) else step.type
