"""When a recording is anonymized, and whether its job may still run (pure).

docs/anonymization.md, "jobs" and "policy": the ``[anonymize]`` policy picks
recordings once catalogued or some days before their deadline; a job whose
original is gone, restricted or past its deadline fails with that reason (the
deadline wins over a waiting job).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from edge_agent.core.model import Purpose, Recording, RecState

__all__ = ["AnonPolicy", "choose", "original_verdict", "pause_reason", "policy_wants"]


@dataclass(frozen=True)
class AnonPolicy:
    on: str | None  # None | "catalogued" | "before_deadline"
    days_before: int = 7
    purposes: tuple[Purpose, ...] = ()  # empty: all
    locations: tuple[str, ...] = ()  # empty: all


def original_verdict(rec: Recording | None, now: datetime) -> str | None:
    """Why a job for ``rec`` cannot run now (None: it can)."""
    if rec is None:
        return "original not in the catalog"
    if rec.state is RecState.RESTRICTED:
        # Processing of restricted footage is limited to keeping it (docs/retention-policy.md).
        return "original is restricted by a data-subject request"
    if rec.state is not RecState.ACTIVE:
        return f"original is {rec.state} (deleted at its deadline or by a request)"
    if rec.deadline is not None and rec.deadline <= now:
        return "original reached its deadline before the job ran"
    if rec.tags.anonymized:
        return "recording is already anonymized"
    return None


def choose(
    recs: Sequence[Recording], now: datetime
) -> tuple[list[Recording], list[dict[str, str]]]:
    """Which of ``recs`` a request (CLI, command) may anonymize, and why not the others."""
    chosen: list[Recording] = []
    refused: list[dict[str, str]] = []
    for rec in recs:
        why = original_verdict(rec, now)
        if why is None and rec.derived_from is not None:
            why = "a derivative is not anonymized again"
        if why is None:
            chosen.append(rec)
        else:
            refused.append({"id": rec.id, "why": why})
    return chosen, refused


def policy_wants(policy: AnonPolicy, rec: Recording, now: datetime) -> bool:
    """Whether the policy asks for ``rec`` now (the caller skips ones with a job)."""
    if policy.on is None or rec.derived_from is not None:
        return False
    if original_verdict(rec, now) is not None:
        return False
    if policy.purposes and rec.tags.purpose not in policy.purposes:
        return False
    if policy.locations and rec.location not in policy.locations:
        return False
    if policy.on == "catalogued":
        return True
    if policy.on == "before_deadline":
        return rec.deadline is not None and rec.deadline - timedelta(days=policy.days_before) <= now
    return False


def pause_reason(
    *,
    clock_trusted: bool,
    disk_pressure: bool,
    storage_full: bool,
    storage_unavailable: str | None,
    free_bytes: int | None,
    floor_bytes: int | None,
) -> str | None:
    """Why the anonymization worker waits now (None: it may run).

    Recording comes first: a derivative takes disk space the janitor would have
    to free from footage, so the worker waits while free space is under twice
    the floor; without a trusted clock no deadline (R's or D's) can be set.
    """
    if not clock_trusted:
        return "clock untrusted"
    if storage_unavailable:
        return f"storage unavailable: {storage_unavailable}"
    if storage_full or disk_pressure:
        return "disk pressure"
    if free_bytes is None or floor_bytes is None:
        return "storage not checked yet"  # the janitor's first pass comes first
    if free_bytes < 2 * floor_bytes:
        return "free space under twice the floor"
    return None
