"""Closed segments and alarms from the recording threads, filed in order on the event loop.

The recorders' worker threads hand over each closed segment (and each
``alarm.*`` event) with :meth:`SegmentFiler.segment_closed` /
:meth:`SegmentFiler.alarm`, which never wait. :meth:`SegmentFiler.run` files
them one at a time in a worker thread (:meth:`Intake.register_segment`:
hashing, fsync, SQLite), so a recording thread never waits for the disk or
the catalog. A segment that cannot be filed stays under its ``.partial-``
name and is adopted at the next start (:mod:`edge_agent.recording.segment_recovery`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

__all__ = ["SegmentFiler"]


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
        self._queue: asyncio.Queue[ClosedSegment | _Alarm] = asyncio.Queue()
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the manager's run()
        self.gate: StorageGate | None = None  # storage lost or failing: do not file
        self.filed = 0  # segments catalogued since start

    def segment_closed(self, seg: ClosedSegment | _Alarm) -> None:
        """Called from a recording thread."""
        if isinstance(seg, ClosedSegment) and seg.damaged and self.gate is not None:
            self.gate.suspect()  # a write failed: is it the disk?
        loop = self.loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._queue.put_nowait, seg)

    def alarm(self, type: str, data: dict[str, object]) -> None:
        """Called from a recording thread: queued into the outbox in order with the segments."""
        self.segment_closed(_Alarm(type, data, self._now()))

    async def drained(self, within: float) -> None:
        """Wait up to ``within`` seconds until everything handed over is filed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), within)

    async def run(self) -> None:
        while True:
            seg = await self._queue.get()
            try:
                await asyncio.to_thread(self._file_one, seg)
            except Exception:
                # Left under its .partial- name: adopted at the next start.
                log.exception("cannot file %s", getattr(seg, "path", seg))
            finally:
                self._queue.task_done()

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
        self.filed += 1
