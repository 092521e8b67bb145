"""The janitor: carries out the retention plan, continuously.

The rules: docs/retention-policy.md; the protocol: docs/design/deletion.md.

Each pass (:meth:`Janitor.sweep_once`, synchronous) finishes interrupted
deletions, asks the clock guard, then pages through the catalog's due
recordings (never the whole catalog) and lets the pure
:func:`edge_agent.core.retention_plan.plan` decide each page; the decisions are
carried out with :mod:`edge_agent.retention.deletion`. Below the free-space floor it
pages through live recordings in pressure order the same way. Held footage is
never chosen, and the deletion protocol re-checks holds inside its transaction.

:meth:`Janitor.run` sleeps until the next deadline or hold expiry (capped, so
a clock check and new footage are never far away), or until :meth:`poke`, and
does every SQLite, unlink and fsync call in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.config.profiles import SpaceFloor
from edge_agent.config.storage_checks import full_reason
from edge_agent.core.model import Period, Recording, RetentionPeriods, iso, parse_ts
from edge_agent.core.policy import active_holds, holds_covering
from edge_agent.core.pressure import PAUSE_REASON, storage_budget
from edge_agent.core.retention_plan import DeletionReason, plan
from edge_agent.retention.clockguard import ClockGuard, ClockGuardSettings
from edge_agent.retention.deletion import (
    DeletionOutcome,
    Doomed,
    Records,
    Unlinked,
    delete_recordings,
    finish_interrupted,
    mark_deleting,
    prepare_records,
    record_deleted,
    unlink_marked,
)
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox

if TYPE_CHECKING:
    from edge_agent.core.clock import Clock
    from edge_agent.retention.storage_gate import StorageGate

__all__ = ["Janitor", "JanitorSettings", "JanitorStatus", "SweepResult"]

log = logging.getLogger(__name__)

AlarmCallback = Callable[[str, dict[str, Any]], None]
QUARANTINE_REASON_SUFFIX = ".reason.json"


@dataclass
class SweepResult:
    at: datetime
    clock_trusted: bool
    clock_reason: str | None = None
    deleted_retention: list[str] = field(default_factory=list)
    deleted_pressure: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    finished_interrupted: int = 0
    kept_by_hold: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    overdue_count: int = 0  # unheld and past deadline after this pass (clock untrusted, failures)
    worst_overdue_seconds: float = 0.0
    max_lateness_seconds: float = 0.0  # how late the latest deletion of this pass was
    next_deadline: datetime | None = None
    next_wake: datetime | None = None
    free_bytes: int | None = None
    floor_bytes: int | None = None
    disk_pressure: bool = False
    storage_full_held: bool = False
    quarantine_purged: list[str] = field(default_factory=list)
    catalog_bytes: int | None = None  # on the storage filesystem; never charged to footage
    storage_budget: bool = False  # the catalog, not footage, fills a disk (an alarm)
    storage_budget_why: str | None = None
    full_reason: str | None = None  # why recording pauses while storage_full_held
    storage_unavailable: str | None = None  # the pass did nothing: the disk is gone or failing

    @property
    def deleted(self) -> list[str]:
        return self.deleted_retention + self.deleted_pressure

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "clock": "trusted" if self.clock_trusted else "untrusted",
            "clock_reason": self.clock_reason,
            "deleted_retention": len(self.deleted_retention),
            "deleted_pressure": len(self.deleted_pressure),
            "deleted_ids": self.deleted,
            "bytes_freed": self.bytes_freed,
            "finished_interrupted": self.finished_interrupted,
            "kept_by_hold": [{"id": i, "holds": list(h)} for i, h in self.kept_by_hold],
            "skipped": [{"id": i, "why": w} for i, w in self.skipped],
            "failed": [{"id": i, "why": w} for i, w in self.failed],
            "overdue_count": self.overdue_count,
            "worst_overdue_seconds": round(self.worst_overdue_seconds, 3),
            "max_lateness_seconds": round(self.max_lateness_seconds, 3),
            "next_deadline": iso(self.next_deadline) if self.next_deadline else None,
            "next_wake": iso(self.next_wake) if self.next_wake else None,
            "free_bytes": self.free_bytes,
            "floor_bytes": self.floor_bytes,
            "disk_pressure": self.disk_pressure,
            "storage_full_held": self.storage_full_held,
            "quarantine_purged": self.quarantine_purged,
            "catalog_bytes": self.catalog_bytes,
            "storage_budget": self.storage_budget,
        }


@dataclass(frozen=True)
class JanitorStatus:
    """What telemetry and ``status`` report about retention."""

    clock_trusted: bool | None
    clock_reason: str | None
    overdue_count: int
    worst_overdue_seconds: float
    next_deadline: datetime | None
    disk_pressure: bool
    storage_full_held: bool
    free_bytes: int | None
    floor_bytes: int | None
    last_sweep: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "clock": None
            if self.clock_trusted is None
            else ("trusted" if self.clock_trusted else "untrusted"),
            "clock_reason": self.clock_reason,
            "overdue_count": self.overdue_count,
            "worst_overdue_seconds": round(self.worst_overdue_seconds, 3),
            "next_deadline": iso(self.next_deadline) if self.next_deadline else None,
            "disk_pressure": self.disk_pressure,
            "storage_full_held": self.storage_full_held,
            "free_bytes": self.free_bytes,
            "floor_bytes": self.floor_bytes,
            "last_sweep": iso(self.last_sweep) if self.last_sweep else None,
        }


def disk_free(root: Path) -> Callable[[], tuple[int, int]]:
    """(free, total) bytes of the filesystem holding ``root``, for unprivileged writers."""

    def read() -> tuple[int, int]:
        usage = shutil.disk_usage(root)
        return usage.free, usage.total

    return read


def catalog_space(catalog_path: Path, root: Path) -> Callable[[], tuple[int, int | None]]:
    """(bytes of the catalog's files on the storage filesystem, free bytes of the
    catalog's filesystem when it is another one)."""

    def read() -> tuple[int, int | None]:
        try:
            same = catalog_path.parent.stat().st_dev == root.stat().st_dev
        except OSError:
            return 0, None
        if not same:
            return 0, shutil.disk_usage(catalog_path.parent).free
        total = 0
        for suffix in ("", "-wal", "-shm", ".audit-head"):
            try:
                total += catalog_path.with_name(catalog_path.name + suffix).stat().st_blocks * 512
            except OSError:
                continue
        return total, None

    return read


@dataclass(frozen=True)
class JanitorSettings:
    """What the janitor takes from the config (made in ``edge_agent.app.settings``)."""

    storage_root: Path
    periods: RetentionPeriods
    guard: ClockGuardSettings
    free_space_floor: SpaceFloor
    quarantine_dir: Path | None = None
    kernel_flag: bool = True  # the system clock's: trust the kernel's "synchronised" flag


class Janitor:
    def __init__(
        self,
        catalog: Catalog,
        storage_root: Path,
        *,
        periods: RetentionPeriods,
        guard: ClockGuard,
        free_space: Callable[[], tuple[int, int]] | None = None,
        floor_bytes: Callable[[int], int] = lambda total: 0,
        catalog_space: Callable[[], tuple[int, int | None]] | None = None,
        on_alarm: AlarmCallback | None = None,
        quarantine_dir: Path | None = None,
        quarantine_period: Period | None = None,
        batch: int = 500,
        fsync: bool = True,
        actor: str = "janitor",
        max_sleep: float = 60.0,
        pressure_sleep: float = 10.0,
    ) -> None:
        self.catalog = catalog
        self.storage_root = Path(storage_root)
        self.periods = periods
        self.guard = guard
        self.free_space = free_space or disk_free(self.storage_root)
        self.floor_bytes = floor_bytes
        self.catalog_space = catalog_space or (lambda: (0, None))
        self.on_alarm = on_alarm
        self.quarantine_dir = quarantine_dir
        # Quarantined files are footage of unknown purpose: the shortest period applies.
        self.quarantine_period = quarantine_period or periods.security
        self.batch = batch
        self.fsync = fsync
        self.actor = actor
        self.max_sleep = max_sleep
        self.pressure_sleep = pressure_sleep
        self.last: SweepResult | None = None
        # time.monotonic() when the loop last finished a pass (failed or not): the
        # daemon's watchdog checks that retention is still being looked after.
        self.heartbeat: float | None = None
        self._wake: asyncio.Event | None = None
        # The daemon's: while the storage root is not the right, writable disk, nothing
        # on it is deleted and no row is marked (docs/storage.md).
        self.gate: StorageGate | None = None

    def _unavailable(self) -> str | None:
        return self.gate.blocked() if self.gate is not None else None

    @classmethod
    def from_settings(
        cls,
        settings: JanitorSettings,
        catalog: Catalog,
        *,
        clock: Clock | None = None,
        on_alarm: AlarmCallback | None = None,
    ) -> Janitor:
        """Build with its clock guard (real clocks and disk unless given).

        ``edge_agent.app.settings.janitor_settings`` turns the config into ``settings``.
        """
        from edge_agent.host.sysclock import SystemClock

        clock = clock or SystemClock(kernel_flag=settings.kernel_flag)
        guard = ClockGuard(catalog, clock, settings.guard)
        return cls(
            catalog,
            settings.storage_root,
            periods=settings.periods,
            guard=guard,
            floor_bytes=settings.free_space_floor.bytes_for,
            catalog_space=catalog_space(catalog.path, settings.storage_root),
            on_alarm=on_alarm,
            quarantine_dir=settings.quarantine_dir,
        )

    # -- properties for the recorder manager and telemetry ---------------------

    @property
    def storage_full_held(self) -> bool:
        """Only held footage is left and space is still short: stop low-priority sources."""
        return self.last.storage_full_held if self.last else False

    def status(self, now: datetime | None = None) -> JanitorStatus:
        last = self.last
        now = now or datetime.now(UTC)
        verdict = self.guard.last
        worst = last.worst_overdue_seconds if last else 0.0
        overdue = last.overdue_count if last else 0
        if last and last.next_deadline and last.next_deadline < now:
            # A deadline passed since the last pass and the janitor has not woken yet.
            worst = max(worst, (now - last.next_deadline).total_seconds())
            overdue = max(overdue, 1)
        return JanitorStatus(
            clock_trusted=verdict.trusted if verdict else None,
            clock_reason=verdict.reason if verdict else None,
            overdue_count=overdue,
            worst_overdue_seconds=worst,
            next_deadline=last.next_deadline if last else None,
            disk_pressure=last.disk_pressure if last else False,
            storage_full_held=last.storage_full_held if last else False,
            free_bytes=last.free_bytes if last else None,
            floor_bytes=last.floor_bytes if last else None,
            last_sweep=last.at if last else None,
        )

    # -- one pass --------------------------------------------------------------

    def sweep_once(self, now: datetime | None = None) -> SweepResult:
        now = now or self.guard.clock.now()
        why = self._unavailable()
        if why is not None:
            log.warning("janitor: storage unavailable (%s): nothing deleted or marked", why)
            last = self.last
            v = self.guard.last
            res = SweepResult(now, v.trusted if v else True, v.reason if v else None)
            if last is not None:  # pressure state stands until the disk can be looked at
                res.storage_full_held, res.full_reason = last.storage_full_held, last.full_reason
            res.storage_unavailable = why
            self.last = res
            return res
        finished = finish_interrupted(
            self.catalog, self.storage_root, now, actor=self.actor, fsync=self.fsync
        )
        verdict = self.guard.check(now)
        res = SweepResult(now, verdict.trusted, verdict.reason)
        res.finished_interrupted = len(finished.deleted)
        holds = self.catalog.holds.list()
        self._retention(res, holds, now)
        self._pressure(res, holds, now)
        if verdict.trusted:
            self._purge_quarantine(res, now)
        res.next_deadline = self.catalog.schedule.next_deadline_after(now)
        expiries = [h.expires for h in active_holds(holds, now) if h.expires is not None]
        wakes = [t for t in (*expiries, res.next_deadline) if t is not None and t > now]
        res.next_wake = min(wakes, default=None)
        self._alarms(res, now)
        self.last = res
        if res.deleted or res.quarantine_purged:
            log.info(
                "janitor: deleted %d for retention, %d for disk pressure, purged %d quarantined",
                len(res.deleted_retention),
                len(res.deleted_pressure),
                len(res.quarantine_purged),
            )
        return res

    def _delete(self, recs: dict[str, Recording], planned: list[Any], now: datetime) -> Any:
        doomed = [Doomed(recs[d.recording_id], str(d.reason), d.detail) for d in planned]
        return delete_recordings(
            self.catalog, self.storage_root, doomed, actor=self.actor, now=now, fsync=self.fsync
        )

    def _retention(self, res: SweepResult, holds: list[Any], now: datetime) -> None:
        # Pipelined: while a worker unlinks batch N (kernel time, no catalog access), this
        # thread closes batch N-1's rows and marks batch N+1. The protocol's order holds
        # per batch: rows are `deleting` before their files go, and closed only after
        # their files are gone and the folders fsynced.
        offset = 0
        pending: tuple[Future[Unlinked], DeletionOutcome, Records] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="janitor-unlink") as pool:
            try:
                while True:
                    page = self.catalog.schedule.due_page(now, self.batch, offset)
                    if not page or self._unavailable() is not None:
                        return
                    p = plan(
                        page,
                        holds,
                        now,
                        clock_trusted=res.clock_trusted,
                        clock_reason=res.clock_reason,
                    )
                    res.kept_by_hold += p.kept_by_hold
                    if not res.clock_trusted:
                        # Nothing is deleted; one page gives the worst case (pages are in
                        # deadline order), a count gives the rest without walking them all.
                        res.worst_overdue_seconds = p.worst_overdue_seconds
                        res.overdue_count = self.catalog.schedule.count_due(now) - len(
                            p.kept_by_hold
                        )
                        return
                    res.max_lateness_seconds = max(
                        res.max_lateness_seconds, p.worst_overdue_seconds
                    )
                    recs = {r.id: r for r in page}
                    doomed = [
                        Doomed(recs[d.recording_id], str(d.reason), d.detail) for d in p.deletions
                    ]
                    out = DeletionOutcome()
                    marked = mark_deleting(self.catalog, doomed, now=now, out=out)
                    future = pool.submit(unlink_marked, self.storage_root, marked, fsync=self.fsync)
                    # Made while the files go: when unlinking is the slower side, this
                    # thread would only be waiting.
                    records = prepare_records(marked, now)
                    if pending is not None:
                        self._close_batch(res, *pending, now)
                    pending = (future, out, records)
                    # Marked rows left the due set; held and skipped ones stay in it.
                    offset += len(page) - len(marked)
            finally:
                if pending is not None:
                    self._close_batch(res, *pending, now)

    def _close_batch(
        self,
        res: SweepResult,
        future: Future[Unlinked],
        out: DeletionOutcome,
        records: Records,
        now: datetime,
    ) -> None:
        done = record_deleted(
            self.catalog, self.storage_root, future.result(), actor=self.actor, now=now,
            fsync=self.fsync, records=records,
        )  # fmt: skip
        out.merge(done)
        res.deleted_retention += out.deleted
        res.bytes_freed += out.bytes_freed
        res.skipped += out.skipped
        res.failed += out.failed
        res.overdue_count += len(out.failed)

    def _pressure(self, res: SweepResult, holds: list[Any], now: datetime) -> None:
        free, total = self.free_space()
        floor = self.floor_bytes(total)
        cat_bytes, cat_fs_free = self.catalog_space()
        budget = storage_budget(
            free=free, floor=floor, catalog_bytes=cat_bytes, catalog_fs_free=cat_fs_free
        )
        res.free_bytes, res.floor_bytes, res.catalog_bytes = free, floor, cat_bytes
        res.storage_budget, res.storage_budget_why = budget.alarm, budget.why
        # From here on "free" is as footage sees it: the catalog's bytes are not its to pay.
        free = budget.footage_free
        if free >= floor:
            return
        res.disk_pressure = True
        if not res.clock_trusted:
            return
        offset = 0
        held = 0
        while free < floor:
            if self._unavailable() is not None:
                return
            page = self.catalog.schedule.pressure_page(self.batch, offset)
            if not page:
                res.storage_full_held = True
                res.full_reason = full_reason(held=held, floor=floor, total=total)
                break
            p = plan(page, holds, now, clock_trusted=True, free_bytes=free, floor_bytes=floor)
            held += sum(1 for r in page if holds_covering(r, holds, now))
            chosen = [d for d in p.deletions if d.reason is DeletionReason.DISK_PRESSURE]
            if not chosen:
                offset += len(page)
                continue
            out = self._delete({r.id: r for r in page}, chosen, now)
            res.deleted_pressure += out.deleted
            res.bytes_freed += out.bytes_freed
            res.skipped += out.skipped
            res.failed += out.failed
            free, total = self.free_space()
            res.free_bytes = free
            free += cat_bytes
            floor = self.floor_bytes(total)
            # Still short means every unheld row of the page was chosen.
            offset += len(page) - len(out.deleted)
        res.floor_bytes = floor

    def _alarms(self, res: SweepResult, now: datetime) -> None:
        was_full = self.last.storage_full_held if self.last else False
        base = {"free_bytes": res.free_bytes, "floor_bytes": res.floor_bytes}
        if res.disk_pressure and (
            res.deleted_pressure or not (self.last and self.last.disk_pressure)
        ):
            self._alarm(
                "alarm.disk_pressure",
                {
                    **base,
                    "deleted": len(res.deleted_pressure),
                    "bytes_freed": res.bytes_freed,
                    "clock": "trusted" if res.clock_trusted else "untrusted",
                },
                now,
            )
        if res.storage_full_held and not was_full:
            held = len({i for i, _ in res.kept_by_hold})
            # Everything left is held (if anything is): the live totals are the held footage.
            stats = list(self.catalog.recordings.summaries().values())
            any_held = res.full_reason == PAUSE_REASON
            self._alarm(
                "alarm.storage_full_held",
                {
                    **base,
                    "detail": f"{res.full_reason}; recording stops, lowest priority first",
                    "held": any_held,
                    "held_due": held,
                    "held_recordings": sum(s.count for s in stats) if any_held else 0,
                    "held_bytes": sum(s.bytes for s in stats) if any_held else 0,
                },
                now,
            )
        elif was_full and not res.storage_full_held:
            self._alarm("alarm.cleared", {**base, "alarm": "storage_full_held"}, now)
        was_budget = self.last.storage_budget if self.last else False
        if res.storage_budget and not was_budget:
            self._alarm(
                "alarm.storage_budget",
                {**base, "catalog_bytes": res.catalog_bytes, "detail": res.storage_budget_why},
                now,
            )
        elif was_budget and not res.storage_budget:
            self._alarm("alarm.cleared", {**base, "alarm": "storage_budget"}, now)

    def _alarm(self, name: str, data: dict[str, Any], now: datetime) -> None:
        log.warning("%s: %s", name, data)
        Outbox(self.catalog).enqueue(name, data, ts=now)
        if self.on_alarm is not None:
            try:
                self.on_alarm(name, data)
            except Exception:
                log.exception("alarm callback failed for %s", name)

    # -- quarantine ------------------------------------------------------------

    def _purge_quarantine(self, res: SweepResult, now: datetime) -> None:
        qdir = self.quarantine_dir
        if qdir is None or not qdir.is_dir():
            return
        limit = now - timedelta(seconds=self.quarantine_period.lower_bound_seconds())
        audit = AuditLog(self.catalog)
        for path in sorted(qdir.iterdir()):
            if path.name.endswith(QUARANTINE_REASON_SUFFIX) or not path.is_file():
                continue
            born = self._quarantine_age_basis(path)
            if born > limit:
                continue
            sidecar = path.with_name(path.name + QUARANTINE_REASON_SUFFIX)
            try:
                path.unlink()
                sidecar.unlink(missing_ok=True)
            except OSError as exc:
                log.error("cannot purge quarantined %s: %s", path, exc)
                continue
            data = {
                "file": path.name,
                "counted_from": iso(born),
                "period": str(self.quarantine_period),
            }
            with self.catalog.transaction():
                audit.append("quarantine.purged", actor=self.actor, subject=None, data=data, ts=now)
                Outbox(self.catalog).enqueue("quarantine.purged", data, ts=now)
            res.quarantine_purged.append(path.name)

    @staticmethod
    def _quarantine_age_basis(path: Path) -> datetime:
        """The earliest time the file is known to have existed: its mtime or quarantine time.

        The file is footage of unknown age, so the earlier (stricter) time counts.
        """
        times = [datetime.fromtimestamp(path.stat().st_mtime, UTC)]
        sidecar = path.with_name(path.name + QUARANTINE_REASON_SUFFIX)
        try:
            doc = json.loads(sidecar.read_text(encoding="utf-8"))
            times.append(parse_ts(str(doc["ts"])))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return min(times)

    # -- continuous operation --------------------------------------------------

    def poke(self) -> None:
        """Wake the running janitor now (call from the event loop's thread)."""
        if self._wake is not None:
            self._wake.set()

    def sleep_seconds(self, res: SweepResult | None, now: datetime) -> float:
        cap = self.max_sleep
        if res is None:
            return cap
        if res.disk_pressure or res.storage_full_held or res.storage_budget:
            cap = min(cap, self.pressure_sleep)
        if not res.clock_trusted or res.next_wake is None:
            return cap
        # A hair past the deadline so that `deadline <= now` holds when we wake.
        return max(0.0, min(cap, (res.next_wake - now).total_seconds() + 0.05))

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self._wake = asyncio.Event()
        while not stop.is_set():
            res: SweepResult | None
            # Cleared before the pass: a poke during the pass triggers another one.
            self._wake.clear()
            try:
                res = await asyncio.to_thread(self.sweep_once)
            except Exception:
                log.exception("janitor pass failed; retrying after a pause")
                res = None
            self.heartbeat = time.monotonic()
            delay = self.sleep_seconds(res, self.guard.clock.now())
            waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in waiters:
                    t.cancel()
