"""The clock guard's IO side: samples the clocks, persists the reference, assigns late deadlines.

:func:`edge_agent.clock.evaluate_clock` decides; this wrapper feeds it the
previous trusted sample from catalog ``meta`` (boot id, CLOCK_BOOTTIME, wall),
so a wall-clock jump is caught across agent restarts within one boot, and the
newest trusted recording start from the catalog. The last verdict is also kept
in ``meta`` so ``status`` in another process can report ``clock: untrusted``
with the reason.

When the clock is trusted, recordings made while it was not (``time_source =
untrusted``, no deadline) get their deadlines, audited. Their start was read
from a clock we did not trust, so it is used only if plausible (not before the
release date, not after now); otherwise the deadline counts from now, the
earliest moment we know the footage existed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from edge_agent import clock as clockmod
from edge_agent.audit import AuditLog
from edge_agent.catalog import Catalog
from edge_agent.model import NOTICE_PERIODS, RetentionPeriods, iso, parse_ts
from edge_agent.policy import deadline_for

__all__ = ["REFERENCE_KEY", "STATE_KEY", "ClockGuard", "ClockGuardSettings"]

log = logging.getLogger(__name__)

REFERENCE_KEY = "clock_reference"
STATE_KEY = "clock_state"


@dataclass(frozen=True)
class ClockGuardSettings:
    release_date: datetime
    max_jump: timedelta = timedelta(seconds=300)
    # After a reboot with the kernel unsynchronised, a wall clock this far past the
    # newest recording is doubted: a week covers a device left off over a holiday.
    max_ahead_unsynced: timedelta = timedelta(days=7)
    trust_rtc: bool = False
    periods: RetentionPeriods = NOTICE_PERIODS

    @classmethod
    def from_config(cls, cfg: Any) -> ClockGuardSettings:
        """From an ``edge_agent.config.Config``."""
        return cls(
            release_date=cfg.clock.release_date,
            max_jump=cfg.clock.max_jump,
            trust_rtc=cfg.clock.trust_rtc,
            periods=cfg.retention_periods(),
        )


def _sample_doc(s: clockmod.ClockSample) -> dict[str, Any]:
    return {
        "wall": iso(s.wall),
        "boottime_s": s.boottime_s,
        "boot_id": s.boot_id,
        "synced": s.synced,
    }


def _sample_from(doc: dict[str, Any]) -> clockmod.ClockSample:
    return clockmod.ClockSample(
        wall=parse_ts(str(doc["wall"])),
        boottime_s=float(doc["boottime_s"]),
        boot_id=str(doc["boot_id"]),
        synced=doc.get("synced"),
    )


class ClockGuard:
    def __init__(
        self,
        catalog: Catalog,
        clock: clockmod.Clock,
        settings: ClockGuardSettings,
        *,
        actor: str = "agent",
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        self.settings = settings
        self.actor = actor
        self.last: clockmod.ClockVerdict | None = None
        self._was_trusted: bool | None = None

    def _previous(self) -> clockmod.ClockSample | None:
        text = self.catalog.get_meta(REFERENCE_KEY)
        if not text:
            return None
        try:
            return _sample_from(json.loads(text))
        except (ValueError, KeyError, TypeError):
            # An unreadable reference is treated like a first start in this boot.
            log.warning("ignoring unreadable %s in catalog meta: %r", REFERENCE_KEY, text)
            return None

    def check(self, now: datetime | None = None, *, persist: bool = True) -> clockmod.ClockVerdict:
        """Sample the clocks, judge them, persist the reference and the verdict.

        ``now`` overrides the wall reading (tests and previews); boot time and
        sync state still come from the clock. ``persist=False`` only judges
        (``retention plan``): nothing is written, no deadlines are assigned.
        """
        sample = clockmod.take_sample(self.clock)
        if now is not None:
            sample = clockmod.ClockSample(now, sample.boottime_s, sample.boot_id, sample.synced)
        s = self.settings
        verdict = clockmod.evaluate_clock(
            sample,
            self._previous(),
            newest_recording_start=self.catalog.newest_trusted_start(),
            release_date=s.release_date,
            max_jump=s.max_jump,
            max_ahead_unsynced=s.max_ahead_unsynced,
            trust_rtc=s.trust_rtc,
        )
        if not persist:
            return verdict
        state = {
            "trusted": verdict.trusted,
            "reason": verdict.reason,
            "note": verdict.note,
            "checked_at": iso(sample.wall),
        }
        with self.catalog.transaction():
            if verdict.reference is not None:
                self.catalog.set_meta(REFERENCE_KEY, json.dumps(_sample_doc(verdict.reference)))
            previous_state = self.catalog.get_meta(STATE_KEY)
            self.catalog.set_meta(STATE_KEY, json.dumps(state, sort_keys=True))
            if self._changed(previous_state, verdict):
                action = "clock.trusted" if verdict.trusted else "clock.untrusted"
                AuditLog(self.catalog).append(
                    action, actor=self.actor, subject=None, data=state, ts=sample.wall
                )
        if verdict.trusted and self._was_trusted is not True:
            # On a return to trust, and once per start, settle recordings made without it.
            self.assign_late_deadlines(sample.wall)
        if not verdict.trusted and self._was_trusted is not False:
            log.warning("clock: untrusted (%s); deletion paused", verdict.reason)
        self._was_trusted = verdict.trusted
        self.last = verdict
        return verdict

    @staticmethod
    def _changed(previous_state: str | None, verdict: clockmod.ClockVerdict) -> bool:
        if previous_state is None:
            return not verdict.trusted
        try:
            return bool(json.loads(previous_state).get("trusted")) != verdict.trusted
        except ValueError:
            return True

    def assign_late_deadlines(self, now: datetime) -> int:
        """Give deadlines to recordings catalogued while the clock was untrusted."""
        audit = AuditLog(self.catalog)
        done = 0
        no_limit = 0  # anonymized footage without a limit keeps no deadline: page past it
        while True:
            recs = self.catalog.awaiting_deadline(limit=500, offset=no_limit)
            if not recs:
                return done
            with self.catalog.transaction():
                for rec in recs:
                    plausible = self.settings.release_date <= rec.start <= now
                    basis = rec.start if plausible else now
                    counted = rec if plausible else replace(rec, tags=replace(rec.tags, start=now))
                    dl = deadline_for(counted, self.settings.periods)
                    if dl is None:
                        no_limit += 1
                        continue
                    self.catalog.set_deadline(rec.id, dl)
                    why = "recorded while the clock was untrusted; " + (
                        "its start is plausible"
                        if plausible
                        else f"its start {iso(rec.start)} is implausible, counted from now"
                    )
                    audit.append(
                        "recording.deadline_set",
                        actor=self.actor,
                        subject=rec.id,
                        data={"deadline": iso(dl), "counted_from": iso(basis), "why": why},
                        ts=now,
                    )
                    done += 1
