"""Watched folders: notice files, wait until they are complete, adopt them.

One :class:`FolderAdopter` per ``[[watch]]`` entry. It scans at start (files
dropped while the agent was down), then reacts to inotify events and polls as
a fallback. Adoption itself runs in a worker thread through
:class:`edge_agent.intake.Intake`; the event loop only keeps the bookkeeping.
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

from edge_agent.intake import Intake, IntakeIOError, IntakeResult, Origin, Outcome
from edge_agent.stability import Observation, is_stable, observe, open_for_writing
from edge_agent.watch import Inotify, open_inotify, scan_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchSpec:
    folder: Path
    origin: Origin
    stable_seconds: float = 5.0
    poll_seconds: float = 2.0
    use_inotify: bool = True


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
        if self.paused:
            return results
        paths = await asyncio.to_thread(scan_folder, self.spec.folder)
        present = set(paths)
        for gone in [p for p in self._seen if p not in present]:
            del self._seen[gone]
        for path in paths:
            ready = await asyncio.to_thread(self._ready, path, force)
            if not ready:
                continue
            result = await self._adopt(path)
            if result is not None:
                results.append(result)
        return results

    def _ready(self, path: Path, force: bool) -> bool:
        try:
            st = path.lstat()
        except OSError:
            self._seen.pop(path, None)
            return False
        if (path, st.st_ino, st.st_mtime_ns) in self._refused:
            return False
        obs = observe(self._seen.get(path), st.st_size, st.st_mtime_ns, self._mono())
        self._seen[path] = obs
        if not force and not is_stable(obs, self._mono(), self.spec.stable_seconds):
            return False
        return not open_for_writing(path)

    async def _adopt(self, path: Path) -> IntakeResult | None:
        async with self._lock:
            try:
                result = await asyncio.to_thread(
                    self.intake.adopt, path, self.spec.origin, self._now(), within=self.spec.folder
                )
            except IntakeIOError as exc:
                self.stats.errors += 1
                self.stats.last_error = str(exc)
                log.error("adoption of %s postponed: %s", path, exc)
                return None
            except Exception as exc:  # one bad file must never stop the folder
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("adoption of %s failed unexpectedly", path)
                return None
        self._seen.pop(path, None)
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
