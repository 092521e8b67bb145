"""The daemon's side of the storage gate: alarms, pausing, recovery (docs/storage.md).

Every monitor tick :meth:`StorageWatch.tick` has the gate look at the storage
root in a worker thread (a disk that hangs must not stall the event loop: a
look that takes longer than :data:`STALL_SECONDS` counts as an I/O error) and
acts on what changed, whoever noticed it (a recorder about to open a segment,
an adoption, the tick itself):

- storage lost, read-only or failing: every recorder is held (paused with the
  reason), adoption and the janitor stand still (they ask the gate
  themselves), and ``alarm.storage_lost`` / ``alarm.storage_readonly`` /
  ``alarm.storage_io_error`` is queued with the reason;
- the right disk back (or writable again): the recorders' last segments are
  filed, segments left on the disk are adopted, a reconcile runs (files that
  went away with the disk are marked ``missing``, never ``deleted``), then
  writes resume and ``alarm.cleared`` says what the reconcile found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.app.reconcile import reconcile
from edge_agent.recording.recorder import recover_partials
from edge_agent.retention.storage_gate import ALARMS, Change, Health, StorageGate, capture_identity
from edge_agent.store.outbox_store import Outbox

if TYPE_CHECKING:
    from edge_agent.intake.intake import Intake
    from edge_agent.recording.recorder_manager import RecorderManager
    from edge_agent.retention.janitor import Janitor
    from edge_agent.store.catalog import Catalog

log = logging.getLogger(__name__)

__all__ = ["STALL_SECONDS", "StorageWatch", "hold_reason", "watch_storage_root"]

STALL_SECONDS = 5.0
_WHAT = {
    Health.LOST: "storage lost",
    Health.READONLY: "storage read-only",
    Health.IO_ERROR: "storage failing",
}


def hold_reason(health: Health, reason: str | None) -> str:
    """The paused sources' reason and the status line for a storage problem."""
    return f"{_WHAT.get(health, str(health))}: {reason or 'unknown'}"


class StorageWatch:
    def __init__(
        self,
        gate: StorageGate,
        *,
        catalog: Catalog,
        manager: RecorderManager,
        intake: Intake,
        now: Callable[[], datetime],
        wake: Callable[[], None],
    ) -> None:
        self.gate = gate
        self.catalog = catalog
        self.manager = manager
        self.intake = intake
        self.now = now
        self.wake = wake
        self.last_recovery: dict[str, Any] | None = None
        self._look: asyncio.Task[Any] | None = None
        self._look_started = 0.0
        self._stall_said = False
        self._recovery: asyncio.Task[None] | None = None
        self._cleared_alarm: str | None = None  # the alarm the running recovery clears
        self._problem: str | None = None  # a recovery that could not finish

    # -- the tick --------------------------------------------------------------------------

    async def tick(self) -> None:
        mono = time.monotonic()
        if self._look is not None and self._look.done():
            if not self._look.cancelled() and self._look.exception() is not None:
                log.error("storage look failed: %s", self._look.exception())
            self._look, self._stall_said = None, False
        if self._look is None:
            self._look = asyncio.create_task(asyncio.to_thread(self.gate.poll), name="storage/look")
            self._look_started = mono
        elif mono - self._look_started > STALL_SECONDS and not self._stall_said:
            self._stall_said = True
            self.gate.stalled(STALL_SECONDS)
        # A cheap look finishes within the tick: act on it now, not a second later.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._look), 0.2)
        for change in self.gate.take_changes():
            await self._act(change)

    async def _act(self, c: Change) -> None:
        if c.new is not Health.OK:
            why = hold_reason(c.new, c.reason)
            self.manager.hold(why)
            if c.new is c.old:
                return  # a new reason for the same problem: no second alarm
            log.error("%s: recording and adoption paused, nothing is deleted", why)
            if c.old is not Health.OK:
                await self._event("alarm.cleared", {"alarm": ALARMS[c.old].removeprefix("alarm.")})
            await self._event(ALARMS[c.new], {"reason": c.reason, **self._where()})
            return
        if c.recover and (self._recovery is None or self._recovery.done()):
            self._cleared_alarm = ALARMS.get(c.old, "alarm.storage_lost")
            self._recovery = asyncio.create_task(self._recover(), name="storage/recover")

    async def _recover(self) -> None:
        root = self.gate.root
        log.info("storage at %s is back: filing, adopting and reconciling before recording", root)
        await self.manager.quiesce()
        now = self.now()
        try:
            adopted = await asyncio.to_thread(recover_partials, root, self.intake, now)
            rep = await asyncio.to_thread(
                reconcile, self.catalog, root, self.intake.settings,
                dry_run=False, force=False, now=now, actor="agent",
            )  # fmt: skip
        except Exception as exc:
            log.exception("recovery after the storage came back failed")
            self._problem = f"reconcile after the storage came back failed: {exc}"
            summary: dict[str, Any] = {"error": str(exc)}
        else:
            self._problem = (
                f"reconcile after the storage came back refused: {rep.refused}"
                if rep.refused
                else None
            )
            summary = {
                "adopted_partials": len(adopted),
                "readopted": len(rep.readopted),
                "missing": len(rep.missing),
                "missing_ids": [m.get("id") for m in rep.missing][:50],
                "reconcile_refused": rep.refused,
            }
            if rep.missing:
                log.warning(
                    "%d recording(s) went away with the disk: marked missing (not deleted)",
                    len(rep.missing),
                )
        self.last_recovery = summary
        self.gate.release()
        if self.gate.blocked() is not None:
            return  # lost again meanwhile: stay held; the next change says why
        self.manager.release()
        name = (self._cleared_alarm or "alarm.storage_lost").removeprefix("alarm.")
        log.info("storage OK again: recording and adoption resume (%s)", summary)
        await self._event("alarm.cleared", {"alarm": name, **self._where(), **summary})

    # -- reporting -------------------------------------------------------------------------

    def reasons(self) -> list[str]:
        out = []
        why = self.gate.blocked()
        if why is not None:
            h = self.gate.health
            text = hold_reason(h, self.gate.reason) if h is not Health.OK else why
            wait = self.gate.retry_in()
            more = f"; trying again in {wait:.0f} s" if wait else ""
            out.append(f"{text}; recording and adoption paused{more}")
        if self._problem is not None:
            out.append(self._problem)
        return out

    def _where(self) -> dict[str, Any]:
        return {"storage_root": str(self.gate.root), "storage_id": self.gate.expected.storage_id}

    async def _event(self, name: str, data: dict[str, Any]) -> None:
        await asyncio.to_thread(Outbox(self.catalog).enqueue, name, data, ts=self.now())
        self.wake()

    async def close(self) -> None:
        for task in (self._look, self._recovery):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def watch_storage_root(
    root: Path,
    catalog: Catalog,
    *,
    manager: RecorderManager,
    intake: Intake,
    janitor: Janitor,
    now: Callable[[], datetime],
    wake: Callable[[], None],
    retry: tuple[float, float],
) -> StorageWatch | str:
    """Hold the storage root to the disk the catalog just accepted, or say why it cannot.

    The one gate is shared by everything that writes or deletes there (docs/storage.md).
    """
    storage_id = catalog.get_meta("storage_root_id")
    try:
        if storage_id is None:
            raise OSError("the catalog names no storage id")
        identity = capture_identity(root, str(storage_id))
    except OSError as exc:
        log.error("cannot watch the storage root %s: %s", root, exc)
        return f"storage root {root} cannot be watched: {exc}"
    gate = StorageGate(root, identity, retry_base=retry[0], retry_cap=retry[1])
    intake.gate = manager.gate = janitor.gate = gate
    return StorageWatch(gate, catalog=catalog, manager=manager, intake=intake, now=now, wake=wake)
