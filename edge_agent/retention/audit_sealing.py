"""Runs audit sealing (store/audit_archive.py) once an hour, off the event loop.

Sealing moves entries older than ``[retention] accountability_period`` out of
the catalog (docs/storage.md, accountability period). It only runs while the
clock is trusted: a wall clock running far ahead would otherwise seal entries
that are still inside the period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from edge_agent.core.model import Period
from edge_agent.store.audit_archive import ArchiveError, AuditArchiver, SealResult
from edge_agent.store.catalog import Catalog

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 3600.0


class AuditSealer:
    def __init__(
        self,
        catalog: Catalog,
        period: Period | None,
        *,
        now: Callable[[], datetime],
        clock_trusted: Callable[[], bool],
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self.archiver = AuditArchiver(catalog)
        self.period = period
        self.now = now
        self.clock_trusted = clock_trusted
        self.interval = interval
        self.last: SealResult | None = None

    def cutoff(self, now: datetime) -> datetime | None:
        if self.period is None:
            return None
        # The longest the period can be (calendar months at 31 days): sealing late is
        # harmless, sealing early is not.
        return now - timedelta(seconds=self.period.upper_bound_seconds())

    def seal_once(self, now: datetime | None = None) -> SealResult | None:
        now = now or self.now()
        cutoff = self.cutoff(now)
        if cutoff is None or not self.clock_trusted():
            return None
        res = self.archiver.seal(now, cutoff)
        if res.archives or res.completed_pending:
            log.info(
                "audit: sealed %d entries and %d tombstones into %d archives in %.1f s",
                res.entries,
                res.tombstones,
                res.archives + res.completed_pending,
                res.seconds,
            )
        self.last = res
        return res

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.seal_once)
            except (ArchiveError, OSError) as exc:
                log.error("audit sealing failed (retried in an hour): %s", exc)
            except Exception:
                log.exception("audit sealing failed; retried in an hour")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
