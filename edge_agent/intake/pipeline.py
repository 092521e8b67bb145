"""A watched folder's pass: five stage threads handing files over by queue.

Each file goes read (hash, probe, packet scan) → write (remux, verify) → seal
(mode, fsync, hash of the copy) → commit (catalog, under the lock all watched
folders share) → release (remove the source), one file per stage at a time,
so a backlog keeps both cores busy (docs/design/architecture.md, "Adoption").

The stages used to be coroutines handing each file to a worker thread per
step: every step was two thread wake-ups and a turn of the event loop, which
on a busy loop cost more than a step's own work (bench/adoption.py: 16 ms
per file, against 13 ms with queues between threads). Here the loop only
starts a pass and collects its results; the threads block on bounded queues.

Stopping (the pass is cancelled): the read stage takes no new file, and
every later stage drops what reaches it instead of working on it: a copy is
removed, a source closed. :meth:`Pipeline.run` returns only when every
stage thread has ended, so nothing touches the catalog after the caller
goes on.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.intake.intake import Examined, Intake, IntakeResult, Outcome, Written

log = logging.getLogger("edge_agent.intake.adopter")  # the lines the adopter logged before

Ident = tuple[int, int, int, int]  # device, inode, size, mtime_ns
_DEPTH = 1  # files waiting between two stages (besides the one each stage holds)
_END = object()


class _Stopped(Exception):
    """The pass was stopped before this step began."""


@dataclass(frozen=True)
class _Item:
    order: int  # the file's place in the pass, for results in folder order
    path: Path
    ident: Ident
    value: Any  # Examined, then Written


@dataclass(frozen=True)
class Hooks:
    """What a pass needs from its adopter (all called from stage threads)."""

    ready: Callable[[Path], Ident | None]  # complete and due, else None
    examine: Callable[[Path, Ident], Examined | IntakeResult]
    failed: Callable[[Path, Ident, BaseException], IntakeResult | None]  # a verdict, or later
    finished: Callable[[Path, IntakeResult], None]  # bookkeeping of one outcome
    locked: Callable[[Callable[[], IntakeResult]], IntakeResult]  # run under the shared lock
    now: Callable[[], Any]


class Pipeline:
    """One pass over ``paths``: :meth:`run` blocks until every file is through."""

    def __init__(self, intake: Intake, hooks: Hooks, paths: list[Path]) -> None:
        self.intake = intake
        self.hooks = hooks
        self.paths = paths
        self._stopping = threading.Event()
        self._results: list[tuple[int, IntakeResult]] = []
        self._lock = threading.Lock()
        # Adopted files between commit and release (one stage thread on each side).
        self._adopted: dict[int, IntakeResult] = {}

    def start(self, loop: asyncio.AbstractEventLoop, *, name: str) -> asyncio.Future[Any]:
        """:meth:`run` in a thread of its own; the future has its results."""
        fut: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not fut.done():
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

        def runner() -> None:
            try:
                value = self.run()
            except BaseException as exc:
                loop.call_soon_threadsafe(settle, False, exc)
            else:
                loop.call_soon_threadsafe(settle, True, value)

        threading.Thread(target=runner, name=name, daemon=True).start()
        return fut

    def stop(self) -> None:
        """Take no new file; drop what is in flight (from any thread)."""
        self._stopping.set()

    def run(self) -> list[IntakeResult]:
        self._queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=_DEPTH) for _ in range(4)]
        self._threads: list[threading.Thread] = []
        try:
            self._read(self._queues[0])
        finally:
            if self._threads:
                self._queues[0].put(_END)
                for t in self._threads:
                    t.join()
        return [r for _, r in sorted(self._results, key=lambda x: x[0])]

    def _begin(self) -> None:
        """Start the stage threads, at the first file read: a pass that finds nothing
        ready (a file still growing, one refused in place) starts none."""
        if self._threads:
            return
        stages = [
            (self._write, _discard_examined),
            (self._seal, _discard_written),
            (self._commit, _discard_written),
            (self._release, _discard_written),
        ]
        for i, (work, drop) in enumerate(stages):
            out = self._queues[i + 1] if i + 1 < len(self._queues) else None
            t = threading.Thread(
                target=self._stage, args=(self._queues[i], out, work, drop),
                name=f"adopt-{work.__name__.strip('_')}", daemon=True,
            )  # fmt: skip
            t.start()
            self._threads.append(t)

    # -- stages --------------------------------------------------------------

    def _read(self, out: queue.Queue[Any]) -> None:
        for order, path in enumerate(self.paths):
            if self._stopping.is_set():
                return
            try:
                self._read_one(order, path, out)
            except Exception:
                log.exception("adoption of %s: reading failed", path)

    def _read_one(self, order: int, path: Path, out: queue.Queue[Any]) -> None:
        ident = self.hooks.ready(path)
        if ident is None:
            return
        try:
            found = self.hooks.examine(path, ident)
        except Exception as exc:
            self._failed(order, path, ident, exc)
            return
        if isinstance(found, IntakeResult):
            self._finish(order, path, found)
            return
        try:
            self._begin()
        except BaseException:
            found.close()
            raise
        out.put(_Item(order, path, ident, found))

    def _stage(
        self,
        inq: queue.Queue[Any],
        out: queue.Queue[Any] | None,
        work: Callable[[_Item], _Item | IntakeResult | None],
        drop: Callable[[Any], None],
    ) -> None:
        try:
            while (item := inq.get()) is not _END:
                try:
                    self._step(item, out, work, drop)
                except Exception:
                    # Bookkeeping failed (a log, a lstat): this thread must live on, or
                    # the stage before it would wait for ever on a full queue.
                    log.exception("adoption of %s: stage failed", item.path)
        finally:
            if out is not None:
                out.put(_END)

    def _step(
        self,
        item: _Item,
        out: queue.Queue[Any] | None,
        work: Callable[[_Item], _Item | IntakeResult | None],
        drop: Callable[[Any], None],
    ) -> None:
        if self._stopping.is_set():
            drop(item.value)
            return
        try:
            nxt = work(item)
        except _Stopped:
            drop(item.value)
            return
        except Exception as exc:
            drop(item.value)  # each Intake step closes what it owns on failure; again is safe
            self._failed(item.order, item.path, item.ident, exc)
            return
        if isinstance(nxt, _Item) and out is not None:
            out.put(nxt)
        elif isinstance(nxt, IntakeResult):
            self._finish(item.order, item.path, nxt)

    def _write(self, item: _Item) -> _Item | IntakeResult:
        written = self.intake.write(item.value, self.hooks.now())
        if isinstance(written, IntakeResult):
            return written
        return _Item(item.order, item.path, item.ident, written)

    def _seal(self, item: _Item) -> _Item:
        self.intake.seal(item.value)
        return item

    def _commit(self, item: _Item) -> _Item | IntakeResult:
        w: Written = item.value

        def commit() -> IntakeResult:
            if self._stopping.is_set():  # stopped while waiting for the lock
                raise _Stopped
            return self.intake.commit(w, self.hooks.now())

        result = self.hooks.locked(commit)
        if result.outcome is not Outcome.ADOPTED:
            return result  # commit() closed it
        self._adopted[item.order] = result
        return item

    def _release(self, item: _Item) -> IntakeResult:
        self.intake.release(item.value)
        return self._adopted.pop(item.order)

    # -- outcomes ------------------------------------------------------------

    def _failed(self, order: int, path: Path, ident: Ident, exc: BaseException) -> None:
        result = self.hooks.failed(path, ident, exc)
        if result is not None:
            self._finish(order, path, result)

    def _finish(self, order: int, path: Path, result: IntakeResult) -> None:
        self.hooks.finished(path, result)
        with self._lock:
            self._results.append((order, result))


def _discard_examined(value: Any) -> None:
    if isinstance(value, Examined):
        value.close()


def _discard_written(value: Any) -> None:
    if isinstance(value, Written):
        value.discard()
