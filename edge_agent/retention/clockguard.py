"""The clock guard's IO side: samples the clocks, persists the reference, assigns late deadlines.

:func:`edge_agent.core.clock.evaluate_clock` decides; this wrapper feeds it the
previous trusted sample from catalog ``meta`` (boot id, CLOCK_BOOTTIME, wall),
so a wall-clock jump is caught across agent restarts within one boot, and the
newest trusted recording start from the catalog. The last verdict is also kept
in ``meta`` so ``status`` in another process can report ``clock: untrusted``
with the reason.

A step is accepted once evidence of a sync after it appears (the kernel flag,
timesyncd's flag file, chrony; :mod:`edge_agent.retention.timesync`), an installer runs
``clock accept`` or a signed command confirms the time (:meth:`ClockGuard.accept`);
each acceptance is audited as ``clock.step_accepted``. Untrusted for longer
than ``alarm_after`` raises ``alarm.clock_untrusted`` once, then daily.

When the clock is trusted, recordings made while it was not (``time_source =
untrusted``, no deadline) get their deadlines, audited. Their start was read
from a clock we did not trust, so it is used only if plausible (not before the
release date, not after now); otherwise the deadline counts from now, the
earliest moment we know the footage existed.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from edge_agent.core import clock as clockmod
from edge_agent.core.model import NOTICE_PERIODS, RetentionPeriods, iso, parse_ts
from edge_agent.core.policy import deadline_for
from edge_agent.retention.timesync import TimeSyncSources
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox

__all__ = [
    "REFERENCE_KEY",
    "STATE_KEY",
    "ClockAcceptError",
    "ClockGuard",
    "ClockGuardSettings",
    "alarm_due",
]

log = logging.getLogger(__name__)

REFERENCE_KEY = "clock_reference"
STATE_KEY = "clock_state"
# What the reference rests on since the last accepted step ("timesyncd synchronised
# at T", "confirmed on site by alice"): shown while no source vouches right now.
BASIS_KEY = "clock_basis"


@dataclass(frozen=True)
class ClockGuardSettings:
    release_date: datetime
    max_jump: timedelta = timedelta(seconds=300)
    # After a reboot with the kernel unsynchronised, a wall clock this far past the
    # newest recording is doubted: a week covers a device left off over a holiday.
    max_ahead_unsynced: timedelta = timedelta(days=7)
    trust_rtc: bool = False
    periods: RetentionPeriods = NOTICE_PERIODS
    sources: TimeSyncSources = field(default_factory=TimeSyncSources)
    alarm_after: timedelta = timedelta(hours=6)
    alarm_repeat: timedelta = timedelta(days=1)
    command_tolerance: timedelta = timedelta(seconds=120)


class ClockAcceptError(ValueError):
    """The clock cannot be accepted as it reads (before the release date or recordings)."""


def alarm_due(
    untrusted_for: float, since_last_alarm: float | None, *, after: float, repeat: float
) -> bool:
    """Raise ``alarm.clock_untrusted`` once ``after`` seconds untrusted, then every ``repeat``."""
    if untrusted_for < after:
        return False
    return since_last_alarm is None or since_last_alarm >= repeat


def _parse_or_none(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_ts(text)
    except ValueError:
        return None


def _offset(s: clockmod.ClockSample) -> float:
    """Wall minus boot time: constant while nobody sets the clock."""
    return s.wall.timestamp() - s.boottime_s


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
        self._paused_since: datetime | None = None
        self._basis: str | None = None
        # issued_at of signed commands received since the last check (event loop in,
        # janitor thread out); a few are enough, the newest matter.
        self._offered: list[tuple[datetime, str]] = []
        self._offered_lock = threading.Lock()

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
        previous = self._previous()
        newest = self.catalog.schedule.newest_trusted_start()
        sources = self.settings.sources
        cheap = self._command_evidence(sample, previous) + sources.gather(slow=False)
        verdict = self._judge(sample, previous, newest, cheap)
        if not verdict.trusted and sources.chronyc:
            # chronyc is a process: asked only when the cheap sources did not settle it.
            verdict = self._judge(sample, previous, newest, cheap + sources.gather(slow=True))
        if not persist:
            return verdict
        old = self._state()
        state: dict[str, Any] = {
            "trusted": verdict.trusted,
            "reason": verdict.reason,
            "note": verdict.note,
            "evidence": verdict.evidence.describe() if verdict.evidence else None,
            "checked_at": iso(sample.wall),
        }
        with self.catalog.transaction():
            if verdict.trusted and verdict.reference is not None:
                # Untrusted keeps the stored reference as it is: rewriting it here could
                # undo a `clock accept` made by another process since it was read.
                self.catalog.set_meta(REFERENCE_KEY, json.dumps(_sample_doc(verdict.reference)))
            if verdict.accepted_step_s is not None and previous is not None:
                self._audit_step(previous, sample, verdict, self.actor)
            if not verdict.trusted:
                self._untrusted_bookkeeping(sample, old, state, verdict)
            elif old.get("alarm_at_boottime") is not None:
                Outbox(self.catalog).enqueue(
                    "alarm.cleared",
                    {"alarm": "clock_untrusted", "evidence": state["evidence"]},
                    ts=sample.wall,
                )
            self.catalog.set_meta(STATE_KEY, json.dumps(state, sort_keys=True))
            if self._changed(old or None, verdict):
                action = "clock.trusted" if verdict.trusted else "clock.untrusted"
                keys = ("trusted", "reason", "note", "evidence", "checked_at")
                data = {k: state[k] for k in keys}
                AuditLog(self.catalog).append(
                    action, actor=self.actor, subject=None, data=data, ts=sample.wall
                )
        if verdict.trusted and self._was_trusted is not True:
            # On a return to trust, and once per start, settle recordings made without it.
            self.assign_late_deadlines(sample.wall)
        if not verdict.trusted and self._was_trusted is not False:
            log.warning("clock: untrusted (%s); deletion paused", verdict.reason)
        if verdict.accepted_step_s is not None:
            log.warning("clock: %s", verdict.note)
        self._was_trusted = verdict.trusted
        self._paused_since = None if verdict.trusted else _parse_or_none(state.get("since"))
        self._basis = self.catalog.get_meta(BASIS_KEY)
        self.last = verdict
        return verdict

    def offer_command_time(self, issued_at: datetime, what: str) -> None:
        """A valid signed command's ``issued_at``: evidence at the next check."""
        with self._offered_lock:
            self._offered = [*self._offered[-7:], (issued_at, what)]

    def _command_evidence(
        self, sample: clockmod.ClockSample, previous: clockmod.ClockSample | None
    ) -> list[clockmod.SyncEvidence]:
        with self._offered_lock:
            offered, self._offered = self._offered, []
        found = []
        for issued_at, what in reversed(offered):
            ev = clockmod.command_evidence(
                issued_at, sample, previous, tolerance=self.settings.command_tolerance, what=what
            )
            if ev is not None:
                found.append(ev)
        return found

    def confirm_by_command(
        self, issued_at: datetime, *, actor: str, reason: str, what: str
    ) -> clockmod.ClockVerdict:
        """A signed ``clock-confirm``: accepted only if its ``issued_at`` agrees with the clock."""
        sample = clockmod.take_sample(self.clock)
        tol = self.settings.command_tolerance
        ev = clockmod.command_evidence(
            issued_at, sample, self._previous(), tolerance=tol, what=what
        )
        if ev is None:
            off = (sample.wall - issued_at).total_seconds()
            raise ClockAcceptError(
                f"issued_at {iso(issued_at)} is {off:+.0f} s from the device clock "
                f"{iso(sample.wall)} (tolerance {tol.total_seconds():.0f} s), or older than "
                "the last trusted check: not confirmed"
            )
        return self.accept(actor=actor, reason=reason, evidence=ev)

    def paused_since_cached(self) -> datetime | None:
        """:meth:`paused_since` as of the last check, without touching the catalog."""
        return self._paused_since

    def describe_evidence(
        self, verdict: clockmod.ClockVerdict, *, cached: bool = True
    ) -> str | None:
        """What vouches for the clock now, else what the last accepted step rested on."""
        if verdict.evidence is not None:
            return verdict.evidence.describe()
        return self._basis if cached else self.catalog.get_meta(BASIS_KEY)

    def _judge(
        self,
        sample: clockmod.ClockSample,
        previous: clockmod.ClockSample | None,
        newest: datetime | None,
        evidence: list[clockmod.SyncEvidence],
    ) -> clockmod.ClockVerdict:
        s = self.settings
        return clockmod.evaluate_clock(
            sample,
            previous,
            newest_recording_start=newest,
            release_date=s.release_date,
            max_jump=s.max_jump,
            max_ahead_unsynced=s.max_ahead_unsynced,
            trust_rtc=s.trust_rtc,
            evidence=evidence,
        )

    def _state(self) -> dict[str, Any]:
        text = self.catalog.get_meta(STATE_KEY)
        if not text:
            return {}
        try:
            doc = json.loads(text)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def _untrusted_bookkeeping(
        self,
        sample: clockmod.ClockSample,
        old: dict[str, Any],
        state: dict[str, Any],
        verdict: clockmod.ClockVerdict,
    ) -> None:
        """Carry "paused since" forward and raise the alarm when it has lasted too long."""
        continuing = old.get("trusted") is False and old.get("since") is not None
        same_boot = old.get("boot_id") == sample.boot_id
        if continuing:
            state["since"] = old["since"]
            since_boot = old.get("since_boottime") if same_boot else None
        else:
            state["since"] = iso(sample.wall)
            since_boot = sample.boottime_s
        state["boot_id"] = sample.boot_id
        state["since_boottime"] = since_boot
        # Measured on CLOCK_BOOTTIME: the wall clock is the thing in doubt. Across a
        # reboot the count starts again from the first check of the new boot.
        if since_boot is None:
            state["since_boottime"] = since_boot = sample.boottime_s
        untrusted_for = max(0.0, sample.boottime_s - float(since_boot))
        last = old.get("alarm_at_boottime") if same_boot else None
        state["alarm_at_boottime"] = last
        since_last = None if last is None else sample.boottime_s - float(last)
        s = self.settings
        if alarm_due(
            untrusted_for,
            since_last,
            after=s.alarm_after.total_seconds(),
            repeat=s.alarm_repeat.total_seconds(),
        ):
            state["alarm_at_boottime"] = sample.boottime_s
            data = {
                "reason": verdict.reason,
                "since": state["since"],
                "untrusted_for_s": round(untrusted_for),
                "would_be_due": self.catalog.schedule.count_due(sample.wall),
                "fix": "let NTP sync (timedatectl set-ntp true), or confirm the time with "
                "`edge-agent clock accept --reason ...` or a signed clock-confirm command",
            }
            log.warning("alarm.clock_untrusted: %s", data)
            Outbox(self.catalog).enqueue("alarm.clock_untrusted", data, ts=sample.wall)

    def _audit_step(
        self,
        previous: clockmod.ClockSample,
        current: clockmod.ClockSample,
        verdict: clockmod.ClockVerdict,
        actor: str,
        reason: str | None = None,
    ) -> None:
        ev = verdict.evidence
        data = {
            "step_s": round(_offset(current) - _offset(previous), 3),
            "old_offset_s": round(_offset(previous), 3),
            "new_offset_s": round(_offset(current), 3),
            "evidence": ev.describe() if ev else None,
            "source": ev.source if ev else None,
            "reason": reason,
        }
        AuditLog(self.catalog).append(
            "clock.step_accepted", actor=actor, subject=None, data=data, ts=current.wall
        )
        basis = f"{data['evidence'] or 'accepted'}; step of {data['step_s']:+.0f} s accepted at "
        self.catalog.set_meta(BASIS_KEY, basis + iso(current.wall))
        Outbox(self.catalog).enqueue("clock.step_accepted", data, ts=current.wall)

    def accept(
        self, *, actor: str, reason: str, evidence: clockmod.SyncEvidence
    ) -> clockmod.ClockVerdict:
        """Re-base the guard on the wall clock as it reads now (an installer, a fleet operator).

        Refused when the clock reads before the release date or before the newest
        trusted recording: those are not steps to confirm but a clock to set.
        """
        sample = clockmod.take_sample(self.clock)
        s = self.settings
        if sample.wall < s.release_date:
            raise ClockAcceptError(
                f"the clock reads {iso(sample.wall)}, before this release "
                f"({iso(s.release_date)}); set the time first (timedatectl set-time)"
            )
        newest = self.catalog.schedule.newest_trusted_start()
        if newest is not None and sample.wall < newest - clockmod.DEFAULT_BEHIND_TOLERANCE:
            raise ClockAcceptError(
                f"the clock reads {iso(sample.wall)}, before the newest recording "
                f"{iso(newest)}; set the time first"
            )
        previous = self._previous()
        with self.catalog.transaction():
            self.catalog.set_meta(REFERENCE_KEY, json.dumps(_sample_doc(sample)))
            v = clockmod.ClockVerdict(True, None, sample, evidence=evidence)
            self._audit_step(previous or sample, sample, v, actor, reason)
        return self.check()

    def paused_since(self) -> datetime | None:
        """When deletion was paused, as the wall clock read then; None while trusted."""
        st = self._state()
        return None if st.get("trusted") is not False else _parse_or_none(st.get("since"))

    @staticmethod
    def _changed(old: dict[str, Any] | None, verdict: clockmod.ClockVerdict) -> bool:
        if old is None:
            return not verdict.trusted
        return bool(old.get("trusted")) != verdict.trusted

    def assign_late_deadlines(self, now: datetime) -> int:
        """Give deadlines to recordings catalogued while the clock was untrusted."""
        audit = AuditLog(self.catalog)
        done = 0
        no_limit = 0  # anonymized footage without a limit keeps no deadline: page past it
        while True:
            recs = self.catalog.schedule.awaiting_deadline(limit=500, offset=no_limit)
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
                    self.catalog.recordings.set_deadline(rec.id, dl)
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
