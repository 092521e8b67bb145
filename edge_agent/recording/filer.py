"""Closed segments and alarms from the recording threads, filed in order on the event loop.

The recorders' worker threads hand over each closed segment (and each
``alarm.*`` event) with :meth:`SegmentFiler.segment_closed` /
:meth:`SegmentFiler.alarm`, which never wait. :meth:`SegmentFiler.run` files
them in worker threads (:meth:`Intake.register_segment`: hashing, fsync,
SQLite), so a recording thread never waits for the disk or the catalog.
A segment that cannot be filed stays under its ``.partial-`` name and is
adopted at the next start (:mod:`edge_agent.recording.segment_recovery`).

Lanes: each source's segments and alarms are filed in order, in one of
:data:`LANES` lanes chosen by its id, and the lanes run side by side. Cameras
started together close their segments together; filed one at a time, 32 of
them queued 0.5 s behind each other (bench/recorder.py --streams), while one
segment's hashing and fsync can overlap another's catalog transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from edge_agent.intake.intake import Intake
from edge_agent.recording.run import ClosedSegment
from edge_agent.recording.segment_recovery import adopt_partial

if TYPE_CHECKING:
    from edge_agent.retention.storage_gate import StorageGate

# The manager's logger: these lines were its own and operators filter on it.
log = logging.getLogger("edge_agent.recording.recorder_manager")

__all__ = ["LANES", "SegmentFiler"]

LANES = 2  # filings side by side; SQLite still commits one at a time


@dataclass(frozen=True)
class _Alarm:
    type: str
    data: dict[str, object]
    at: datetime


class SegmentFiler:
    """The recording threads' hand-over point to intake and the outbox (one per manager)."""

    def __init__(self, intake: Intake, now: Callable[[], datetime]) -> None:
        self.intake = intake
        self._now = now
        self._queues: list[asyncio.Queue[ClosedSegment | _Alarm]] = [
            asyncio.Queue() for _ in range(LANES)
        ]
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the manager's run()
        self.gate: StorageGate | None = None  # storage lost or failing: do not file
        self.filed = 0  # segments catalogued since start
        self._count_lock = threading.Lock()  # the lanes' threads count into it

    def segment_closed(self, seg: ClosedSegment | _Alarm) -> None:
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
            loop.call_soon_threadsafe(queue.put_nowait, seg)

    def alarm(self, type: str, data: dict[str, object]) -> None:
        """Called from a recording thread: queued into the outbox in order with the segments."""
        self.segment_closed(_Alarm(type, data, self._now()))

    async def drained(self, within: float) -> None:
        """Wait up to ``within`` seconds until everything handed over is filed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues)), within)

    async def run(self) -> None:
        await asyncio.gather(*(self._lane(q) for q in self._queues))

    async def _lane(self, queue: asyncio.Queue[ClosedSegment | _Alarm]) -> None:
        while True:
            seg = await queue.get()
            try:
                await asyncio.to_thread(self._file_one, seg)
            except Exception:
                # Left under its .partial- name: adopted at the next start.
                log.exception("cannot file %s", getattr(seg, "path", seg))
            finally:
                queue.task_done()

    def _file_one(self, seg: ClosedSegment | _Alarm) -> None:
        now = self._now()
        if isinstance(seg, _Alarm):
            self.intake.outbox.enqueue(seg.type, seg.data, ts=seg.at)
            return
        why = self.gate.blocked() if self.gate is not None else None
        if why is not None:
            # Filed when the storage is back (recover_partials), if the file made it there.
            log.warning("segment %s not filed now (%s)", seg.path.name, why)
            return
        if seg.damaged:
            adopt_partial(seg.path, self.intake, now)
        else:
            self.intake.register_segment(seg.path, seg.tags, seg.rec_id, seg.origin, now)
        with self._count_lock:
            self.filed += 1
