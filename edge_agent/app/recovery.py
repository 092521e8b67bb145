"""Start-up recovery: everything the daemon does before ``READY=1``.

In order: finish deletions a crash interrupted, close commands a stop
interrupted, judge the clock (new recordings are marked untrusted while it is
not), adopt recorder segments a crash left behind, reconcile disk against
catalog (it refuses by itself when more than half would change: the agent
then runs degraded, saying why). See docs/design/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from edge_agent.app.reconcile import reconcile
from edge_agent.comms.telemetry import Gatherer
from edge_agent.config.config import Location
from edge_agent.intake.intake import Intake, IntakeSettings
from edge_agent.recording.recorder import recover_partials
from edge_agent.retention.clockguard import ClockGuard
from edge_agent.retention.deletion import finish_interrupted
from edge_agent.store.catalog import Catalog
from edge_agent.store.command_results import ResultStore

log = logging.getLogger(__name__)

__all__ = ["follow_locations", "recover"]


async def recover(
    catalog: Catalog,
    root: Path,
    *,
    intake: Intake,
    guard: ClockGuard,
    settings: IntakeSettings,
    now: datetime,
) -> list[str]:
    """Repair what an earlier run left; return the reasons the agent starts degraded."""
    reasons: list[str] = []
    done = await asyncio.to_thread(finish_interrupted, catalog, root, now, actor="agent")
    if done.deleted:
        log.info("finished %d deletion(s) a crash interrupted", len(done.deleted))
    closed = await asyncio.to_thread(ResultStore(catalog).close_interrupted, now)
    if closed:
        log.warning("closed %d command(s) a stop interrupted as failed", len(closed))
    verdict = await asyncio.to_thread(guard.check)
    intake.clock_trusted = verdict.trusted
    # Recorder segments first: reconcile would remove their .partial- files.
    recs = await asyncio.to_thread(recover_partials, root, intake, now)
    if recs:
        log.info("adopted %d segment(s) left by an earlier run", len(recs))
    try:
        rep = await asyncio.to_thread(
            reconcile,
            catalog,
            root,
            settings,
            dry_run=False,
            force=False,
            now=now,
            actor="agent",
        )
    except Exception as exc:
        log.exception("start-up reconcile failed; running without it")
        reasons.append(f"start-up reconcile failed: {exc}")
    else:
        if rep.refused:
            log.error("start-up reconcile refused: %s", rep.refused)
            reasons.append(f"start-up reconcile refused: {rep.refused}")
        elif rep.changes or rep.partials_removed or rep.reappeared:
            log.info(
                "start-up reconcile: %d re-adopted, %d missing, %d found again, "
                "%d partial file(s) removed",
                len(rep.readopted),
                len(rep.missing),
                len(rep.reappeared),
                len(rep.partials_removed),
            )
    return reasons


async def follow_locations(
    catalog: Catalog, locations: Iterable[Location], gatherer: Gatherer
) -> None:
    """Warn about footage the config no longer describes (docs/retention-policy.md)."""
    from edge_agent.core.location_drift import configured, location_drift

    try:
        rows = await asyncio.to_thread(catalog.recordings.footage)
    except Exception:
        log.exception("cannot compare the config's locations with the catalog")
        return
    drift = location_drift(configured(locations), rows)
    for d in drift:
        log.warning("%s", d.message)
    gatherer.location_drift = tuple(d.as_dict() for d in drift)
