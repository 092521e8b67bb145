"""Watched folders: notice files, wait until they are complete, adopt them.

One :class:`FolderAdopter` per ``[[watch]]`` entry. It scans at start (files
dropped while the agent was down), then reacts to inotify events and polls as
a fallback. Adoption itself runs in stage threads
(:mod:`edge_agent.intake.pipeline`) through :class:`edge_agent.intake.intake.Intake`;
the event loop only starts a pass and collects what happened.

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
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from edge_agent.core.stability import Observation, is_stable, observe
from edge_agent.intake.intake import (
    Examined,
    Intake,
    IntakeIOError,
    IntakeResult,
    Origin,
    Outcome,
)
from edge_agent.intake.intake_source import SourceChanged, display_name
from edge_agent.intake.pipeline import Hooks, Pipeline
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
        # Five stage threads, one file per stage (intake/pipeline.py): a backlog
        # keeps both cores busy, and hashing and fsync wait outside the GIL.
        # A file's readiness is checked just before its read starts.
        if not paths:
            return results
        return await self._run_pipeline(paths, lambda p: self._ready(p, force))

    async def _run_pipeline(
        self, paths: list[Path], ready: Callable[[Path], tuple[int, int, int, int] | None]
    ) -> list[IntakeResult]:
        loop = asyncio.get_running_loop()

        def locked(fn: Callable[[], IntakeResult]) -> IntakeResult:
            # The lock all watched folders share is the event loop's.
            asyncio.run_coroutine_threadsafe(self._lock.acquire(), loop).result()
            try:
                return fn()
            finally:
                loop.call_soon_threadsafe(self._lock.release)

        def examine(path: Path, ident: tuple[int, int, int, int]) -> Examined | IntakeResult:
            return self.intake.examine(
                path, self.spec.origin, self._now(), within=self.spec.folder, expect=ident[:2]
            )

        def finished(path: Path, result: IntakeResult) -> None:
            self._done(path, result)
            if self._on_result is not None:
                loop.call_soon_threadsafe(self._on_result, result)

        hooks = Hooks(
            ready=ready, examine=examine, failed=self._failed, finished=finished,
            locked=locked, now=self._now,
        )  # fmt: skip
        pipe = Pipeline(self.intake, hooks, paths)
        # Its own thread, not the loop's executor: a pass over a backlog takes long.
        task = pipe.start(loop, name=f"adopt:{self.spec.folder.name}")
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # Each file in flight finishes its step (it may write to the catalog) and
            # is dropped: copies removed, sources closed.
            pipe.stop()
            with contextlib.suppress(BaseException):
                await task
            raise

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

    async def _adopt(self, path: Path, ident: tuple[int, int, int, int]) -> IntakeResult | None:
        """Adopt one file whose readiness is known (``ident``) through the stages."""
        results = await self._run_pipeline([path], lambda _p: ident)
        return results[0] if results else None

    def _failed(
        self, path: Path, ident: tuple[int, int, int, int], exc: BaseException
    ) -> IntakeResult | None:
        """A stage failed on ``path``: postpone it, or quarantine it after max_tries
        (from a stage thread)."""
        shown = display_name(path)
        if isinstance(exc, SourceChanged):
            # Swapped after it was watched: watch the new file become stable first.
            log.warning("%s", exc)
            self._seen.pop(path, None)
            return None
        if isinstance(exc, IntakeIOError):
            self.stats.errors += 1
            self.stats.last_error = display_name(str(exc))
            self._postpone(path, ident, self.stats.last_error, counts=False)
            log.error("adoption of %s postponed: %s", shown, self.stats.last_error)
            return None
        # One bad file must never stop the folder.
        self.stats.errors += 1
        why = f"{type(exc).__name__}: {display_name(str(exc))}"[:_REASON_MAX]
        self.stats.last_error = why
        log.error("adoption of %s failed: %s", shown, why, exc_info=exc)
        trouble = self._postpone(path, ident, why, counts=True)
        if trouble.tries < self.spec.max_tries:
            return None
        reason = f"adoption_failed: {trouble.tries} tries, last: {why}"
        try:
            return self.intake.quarantine(path, reason, self._now(), ident=ident[:2])
        except Exception:
            log.exception("cannot quarantine %s", shown)
            return None

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

    def _done(self, path: Path, result: IntakeResult) -> None:
        """Bookkeeping of one outcome (from a stage thread)."""
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
                st = path.lstat()
                self._refused.add((path, st.st_ino, st.st_mtime_ns))
