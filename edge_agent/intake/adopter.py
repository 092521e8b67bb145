"""Watched folders: notice files, wait until they are complete, adopt them.

One :class:`FolderAdopter` per ``[[watch]]`` entry. It scans at start (files
dropped while the agent was down), then reacts to inotify events and polls as
a fallback. Adoption itself runs in a worker thread through
:class:`edge_agent.intake.intake.Intake`; the event loop only keeps the bookkeeping.

Reading a file (open, hash, probe, packet scan) runs outside the lock all
watched folders share; only the duplicate check, remux and catalogue step
takes it, so a slow or hostile file in one folder never stalls the others.
A file whose adoption fails unexpectedly is retried after ``retry_seconds``
(doubling, at most :data:`MAX_RETRY_SECONDS`) and quarantined with the reason
after ``max_tries`` attempts; a storage failure (disk full) is retried with the
same back-off but never counts against the file.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from edge_agent.core.stability import Observation, is_stable, observe
from edge_agent.intake.intake import (
    Examined,
    Intake,
    IntakeIOError,
    IntakeResult,
    Origin,
    Outcome,
    Written,
)
from edge_agent.intake.intake_source import SourceChanged, display_name
from edge_agent.intake.stability import open_for_writing_anywhere
from edge_agent.intake.watch import Inotify, open_inotify, scan_folder

log = logging.getLogger(__name__)

MAX_TRIES = 3  # unexpected failures before a file is quarantined
RETRY_SECONDS = 30.0  # first wait after a failure; doubles per failure
MAX_RETRY_SECONDS = 600.0
# A file must also be stable for stable_seconds, so a sweep of /proc this old still
# catches a writer that holds a file open without writing (stability.py).
WRITERS_MAX_AGE = 1.0
_REASON_MAX = 300

T = TypeVar("T")


@dataclass(frozen=True)
class WatchSpec:
    folder: Path
    origin: Origin
    stable_seconds: float = 5.0
    poll_seconds: float = 2.0
    use_inotify: bool = True
    max_tries: int = MAX_TRIES
    retry_seconds: float = RETRY_SECONDS


@dataclass(frozen=True)
class _Trouble:
    """Failed attempts at one file as it was (a changed file starts afresh)."""

    ident: tuple[int, int, int, int]  # device, inode, size, mtime_ns
    tries: int  # unexpected failures (storage failures do not count)
    failures: int  # every failure: sets the back-off
    retry_at: float  # monotonic
    last: str


@dataclass
class AdopterStats:
    adopted: int = 0
    quarantined: int = 0
    refused: int = 0
    duplicates: int = 0
    errors: int = 0
    last_error: str | None = None


_WINDOW = 5  # files in flight: one per stage


class _Stages:
    """One pass's gates: one file at a time reads, writes, seals, releases its source;
    commits take the lock all watched folders share."""

    def __init__(self) -> None:
        self.read = asyncio.Semaphore(1)
        self.write = asyncio.Semaphore(1)
        self.seal = asyncio.Semaphore(1)
        self.release = asyncio.Semaphore(1)


class FolderAdopter:
    """Adopts complete files from one folder; owned by the daemon's TaskGroup."""

    def __init__(
        self,
        spec: WatchSpec,
        intake: Intake,
        *,
        now: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        on_result: Callable[[IntakeResult], None] | None = None,
        lock: asyncio.Lock | None = None,
    ) -> None:
        self.spec = spec
        self.intake = intake
        self._now = now
        self._mono = monotonic
        self._on_result = on_result
        self._seen: dict[Path, Observation] = {}
        # Files refused in place (symlinks, ...) keyed by identity, so they are not retried forever.
        self._refused: set[tuple[Path, int, int]] = set()
        self._writers_seen: tuple[float, frozenset[tuple[int, int]]] | None = None
        self._trouble: dict[Path, _Trouble] = {}
        self._lock = lock or asyncio.Lock()
        self._wake = asyncio.Event()
        self.stats = AdopterStats()
        self.paused = False

    async def run(self) -> None:
        ino: Inotify | None = None
        if self.spec.use_inotify:
            ino = open_inotify([self.spec.folder])
        try:
            if ino is not None:
                ino.start()
            async with asyncio.TaskGroup() as tg:
                if ino is not None:
                    tg.create_task(self._pump(ino), name=f"inotify:{self.spec.folder}")
                tg.create_task(self._loop(), name=f"adopt:{self.spec.folder}")
        finally:
            if ino is not None:
                ino.close()

    async def _pump(self, ino: Inotify) -> None:
        while True:
            path = await ino.get()
            if path is not None:
                self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self.pass_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.spec.poll_seconds)
            self._wake.clear()

    async def pass_once(self, *, force: bool = False) -> list[IntakeResult]:
        """Look at the folder once; adopt whatever is complete. Returns what happened."""
        results: list[IntakeResult] = []
        gate = self.intake.gate
        if self.paused or (gate is not None and gate.blocked() is not None):
            return results
        paths = await asyncio.to_thread(scan_folder, self.spec.folder)
        present = set(paths)
        for gone in [p for p in self._seen if p not in present]:
            del self._seen[gone]
        for gone in [p for p in self._trouble if p not in present]:
            del self._trouble[gone]
        self._refused = {r for r in self._refused if r[0] in present}
        # A pipeline of five stages, each in a worker thread, one file per stage: read
        # (hash, probe, packet scan), write (remux, verify), seal (fsync and hash of
        # the copy), commit (catalog, under the lock all watched folders share) and
        # release (remove the source). A backlog keeps both cores busy, and hashing
        # and fsync wait outside the GIL (bench/adoption.py).
        # A file's readiness is checked just before its read starts, as before.
        stages = _Stages()
        window: collections.deque[asyncio.Task[IntakeResult | None]] = collections.deque()
        todo = iter(paths)
        try:
            while True:
                while len(window) < _WINDOW and (path := next(todo, None)) is not None:
                    window.append(asyncio.ensure_future(self._run_file(path, force, stages)))
                if not window:
                    break
                result = await window[0]
                window.popleft()
                if result is not None:
                    results.append(result)
        finally:
            # Cancelled: each file in flight waits for its worker thread (it may write
            # to the catalog, see _in_thread) and closes its source and its copy.
            for task in window:
                task.cancel()
            await asyncio.gather(*window, return_exceptions=True)
        return results

    async def _run_file(self, path: Path, force: bool, stages: _Stages) -> IntakeResult | None:
        await stages.read.acquire()
        try:
            ident = await asyncio.to_thread(self._ready, path, force)
        except BaseException:
            stages.read.release()
            raise
        if ident is None:
            stages.read.release()
            return None
        return await self._adopt(path, ident, stages)

    def _read(
        self, path: Path, ident: tuple[int, int, int, int]
    ) -> asyncio.Future[Examined | IntakeResult]:
        return asyncio.ensure_future(
            _in_thread(
                self.intake.examine,
                path,
                self.spec.origin,
                self._now(),
                within=self.spec.folder,
                expect=ident[:2],
            )
        )

    def _ready(self, path: Path, force: bool) -> tuple[int, int, int, int] | None:
        """The identity of ``path`` if it is complete and due for an attempt, else None."""
        try:
            st = path.lstat()
        except OSError:
            self._seen.pop(path, None)
            return None
        if (path, st.st_ino, st.st_mtime_ns) in self._refused:
            return None
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        trouble = self._trouble.get(path)
        if trouble is not None:
            if trouble.ident != ident:
                del self._trouble[path]
            elif self._mono() < trouble.retry_at:
                return None
        obs = observe(
            self._seen.get(path), st.st_size, st.st_mtime_ns, self._mono(), ident=ident[:2]
        )
        self._seen[path] = obs
        if not force and not is_stable(obs, self._mono(), self.spec.stable_seconds):
            return None
        return None if ident[:2] in self._writers() else ident

    def _writers(self) -> frozenset[tuple[int, int]]:
        """Files open for writing, swept at most every :data:`WRITERS_MAX_AGE` seconds."""
        now = self._mono()
        if self._writers_seen is None or now - self._writers_seen[0] > WRITERS_MAX_AGE:
            self._writers_seen = (now, open_for_writing_anywhere())
        return self._writers_seen[1]

    async def _adopt(
        self, path: Path, ident: tuple[int, int, int, int], stages: _Stages | None = None
    ) -> IntakeResult | None:
        """Adopt one file through the stages; ``stages`` given: its read gate is held."""
        shown = display_name(path)
        if stages is None:
            stages = _Stages()
            await stages.read.acquire()
        try:
            result = await self._through_stages(path, ident, stages)
        except SourceChanged as exc:
            # Swapped after it was watched: watch the new file become stable first.
            log.warning("%s", exc)
            self._seen.pop(path, None)
            return None
        except IntakeIOError as exc:
            self.stats.errors += 1
            self.stats.last_error = display_name(str(exc))
            self._postpone(path, ident, self.stats.last_error, counts=False)
            log.error("adoption of %s postponed: %s", shown, self.stats.last_error)
            return None
        except Exception as exc:  # one bad file must never stop the folder
            self.stats.errors += 1
            why = f"{type(exc).__name__}: {display_name(str(exc))}"[:_REASON_MAX]
            self.stats.last_error = why
            log.error("adoption of %s failed: %s", shown, why, exc_info=True)
            trouble = self._postpone(path, ident, why, counts=True)
            if trouble.tries < self.spec.max_tries:
                return None
            reason = f"adoption_failed: {trouble.tries} tries, last: {why}"
            try:
                result = await _in_thread(
                    self.intake.quarantine, path, reason, self._now(), ident=ident[:2]
                )
            except Exception:
                log.exception("cannot quarantine %s", shown)
                return None
        return await self._done(path, result)

    async def _through_stages(
        self, path: Path, ident: tuple[int, int, int, int], stages: _Stages
    ) -> IntakeResult:
        try:
            found = await _finish_read(self._read(path, ident))
        finally:
            stages.read.release()
        if isinstance(found, IntakeResult):
            return found
        try:
            async with stages.write:
                written = await _in_thread(
                    self.intake.write, found, self._now(), orphan=_discard_written
                )
        except BaseException:
            found.close()  # write() hands it on or closes it; this covers a cancelled wait
            raise
        if isinstance(written, IntakeResult):
            return written
        try:
            async with stages.seal:
                await _in_thread(self.intake.seal, written)
            async with self._lock:
                result = await _in_thread(self.intake.commit, written, self._now())
            if result.outcome is Outcome.ADOPTED:
                async with stages.release:
                    await _in_thread(self.intake.release, written)
            return result
        finally:
            written.discard()  # commit() or release() did; this covers a cancelled wait

    def _postpone(
        self, path: Path, ident: tuple[int, int, int, int], why: str, *, counts: bool
    ) -> _Trouble:
        old = self._trouble.get(path)
        same = old is not None and old.ident == ident
        tries = (old.tries if old is not None and same else 0) + int(counts)
        failures = (old.failures if old is not None and same else 0) + 1
        wait = min(MAX_RETRY_SECONDS, self.spec.retry_seconds * 2 ** min(failures - 1, 16))
        trouble = _Trouble(ident, tries, failures, self._mono() + wait, why)
        self._trouble[path] = trouble
        return trouble

    async def _done(self, path: Path, result: IntakeResult) -> IntakeResult:
        self._seen.pop(path, None)
        self._trouble.pop(path, None)
        if result.outcome is Outcome.ADOPTED:
            self.stats.adopted += 1
        elif result.outcome is Outcome.QUARANTINED:
            self.stats.quarantined += 1
        elif result.outcome is Outcome.DUPLICATE:
            self.stats.duplicates += 1
        else:
            self.stats.refused += 1
            with contextlib.suppress(OSError):
                st = await asyncio.to_thread(path.lstat)
                self._refused.add((path, st.st_ino, st.st_mtime_ns))
        if self._on_result is not None:
            self._on_result(result)
        return result


def _discard_written(written: object) -> None:
    if isinstance(written, Written):
        written.discard()


def _close_examined(found: object) -> None:
    if isinstance(found, Examined):
        found.close()


async def _finish_read(
    reading: asyncio.Future[Examined | IntakeResult],
) -> Examined | IntakeResult:
    """The read's result; cancelled, the read is still waited for and its source closed."""
    try:
        return await asyncio.shield(reading)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            _close_examined(await reading)
        raise


async def _in_thread(
    fn: Callable[..., T],
    *args: Any,
    orphan: Callable[[T], None] | None = None,
    **kwargs: Any,
) -> T:
    """Run ``fn`` in a worker thread that a cancellation waits for.

    A worker thread cannot be stopped; returning before it ends would let it
    write to a catalog that is being closed. ``orphan`` gets what the thread
    returned when nobody is left to take it (a copy to remove, a source to close).
    """
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            result = await task
            if orphan is not None:
                orphan(result)
        raise
