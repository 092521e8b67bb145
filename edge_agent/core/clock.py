"""The clock guard (docs/design/time.md): no deletion while the wall clock cannot be trusted.

:func:`evaluate_clock` is pure: it compares a :class:`ClockSample` with the
last trusted one (persisted by the caller, so the check also spans agent
restarts) and with the newest catalogued recording. Reading the real clock is
confined to ``edge_agent.host.sysclock``; tests use :class:`FakeClock`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from edge_agent.core.model import Recording, TimeSource, iso

__all__ = [
    "DEFAULT_BEHIND_TOLERANCE",
    "Clock",
    "ClockSample",
    "ClockVerdict",
    "FakeClock",
    "SyncEvidence",
    "command_evidence",
    "confirming_evidence",
    "evaluate_clock",
    "newest_trusted_start",
    "take_sample",
    "wall_step",
]

# Recording starts may be up to a few minutes ahead of the gateway's clock
# (timesource.DEFAULT_MAX_FUTURE), so "behind the newest recording" needs slack.
DEFAULT_BEHIND_TOLERANCE = timedelta(minutes=10)


@dataclass(frozen=True)
class ClockSample:
    wall: datetime
    boottime_s: float  # CLOCK_BOOTTIME: monotonic, counts suspend, restarts at boot
    boot_id: str
    synced: bool | None  # kernel NTP sync state; None = unknown


@dataclass(frozen=True)
class SyncEvidence:
    """Someone we trust says the wall clock was right at ``synced_at``.

    ``synced_at`` is read on the current wall clock (a flag file's mtime,
    chrony's reference time, a signed command's ``issued_at``); ``None`` means
    "right now" (the kernel's NTP flag, an installer's confirmation).
    Sources and why each is trusted: docs/design/time.md.
    """

    source: str  # kernel | timesyncd | chrony | command | installer
    synced_at: datetime | None
    detail: str

    def describe(self) -> str:
        if self.synced_at is None:
            return self.detail
        return f"{self.detail} at {iso(self.synced_at)}"


# A sync mapped onto CLOCK_BOOTTIME may land this far outside the window and
# still count: file mtimes and reference times are read to the second.
_EVIDENCE_SLACK_S = 2.0


def confirming_evidence(
    evidence: Iterable[SyncEvidence],
    current: ClockSample,
    reference: ClockSample | None,
) -> SyncEvidence | None:
    """The first evidence that vouches for the wall clock as it reads now, or None.

    A sync time is mapped onto CLOCK_BOOTTIME through the current wall clock.
    It counts only if it falls after the last trusted sample (the sync
    happened after whatever moved the clock) and not in the future. A manual
    step made *after* a sync shifts the mapped time out of that window: a step
    forward puts it before the reference, a step back puts it in the future
    (syncs repeat every few minutes, so one before the reference is recent).
    """
    for ev in evidence:
        if ev.synced_at is None:
            return ev
        age = (current.wall - ev.synced_at).total_seconds()
        synced_boot = current.boottime_s - age
        if synced_boot > current.boottime_s + _EVIDENCE_SLACK_S:
            continue
        if reference is not None and reference.boot_id == current.boot_id:
            if synced_boot < reference.boottime_s - _EVIDENCE_SLACK_S:
                continue
        elif synced_boot < 0:
            continue  # before this boot began
        return ev
    return None


def command_evidence(
    issued_at: datetime,
    current: ClockSample,
    reference: ClockSample | None,
    *,
    tolerance: timedelta,
    what: str,
) -> SyncEvidence | None:
    """A signed command's ``issued_at`` as evidence, or None when it cannot vouch.

    The centre signs ``issued_at`` on an NTP-disciplined clock: a command that
    arrives within ``tolerance`` of it shows the two clocks agree. It must not
    be older than the last trusted sample either, so an old signed command
    replayed to a clock set back to its time cannot confirm that clock.
    """
    if abs((current.wall - issued_at).total_seconds()) > tolerance.total_seconds():
        return None
    if reference is not None and issued_at < reference.wall - tolerance:
        return None
    return SyncEvidence("command", issued_at, what)


@dataclass(frozen=True)
class ClockVerdict:
    """``reference`` is the sample to persist for the next check.

    It only advances while the clock is trusted: after a jump, the next check
    still compares with the last good sample, so a clock that was set wrong
    stays untrusted until it is put right (or NTP sync is reported), instead
    of becoming the new normal one check later.
    """

    trusted: bool
    reason: str | None = None
    reference: ClockSample | None = None
    note: str | None = None  # e.g. a step accepted because NTP is synchronised
    # Set when this check accepted a step (or a doubtful clock) on evidence.
    accepted_step_s: float | None = None
    evidence: SyncEvidence | None = None


def newest_trusted_start(recordings: Iterable[Recording]) -> datetime | None:
    """Newest start among recordings whose time did not come from an untrusted clock."""
    starts = [r.start for r in recordings if r.tags.time_source is not TimeSource.UNTRUSTED]
    return max(starts, default=None)


def wall_step(
    before: tuple[float, float] | None, after: tuple[float, float], tolerance: float = 2.0
) -> float | None:
    """Seconds the wall clock was set by between two (wall, boottime) readings, or None.

    Boot time only ever advances with real time, so wall minus boot time is
    constant while nobody sets the clock; NTP slewing moves it by milliseconds.
    A change beyond ``tolerance`` is a step (``date -s``, NTP's first sync, an
    RTC read after resume): the clock guard must judge it now, not at its next
    scheduled pass.
    """
    if before is None:
        return None
    step = (after[0] - after[1]) - (before[0] - before[1])
    return step if abs(step) > tolerance else None


def evaluate_clock(
    current: ClockSample,
    previous: ClockSample | None,
    *,
    newest_recording_start: datetime | None,
    release_date: datetime,
    max_jump: timedelta,
    max_ahead_unsynced: timedelta,
    trust_rtc: bool,
    behind_tolerance: timedelta = DEFAULT_BEHIND_TOLERANCE,
    evidence: Iterable[SyncEvidence] = (),
) -> ClockVerdict:
    """Is the wall clock trustworthy enough to delete by it?

    Untrusted if any of:
    - it is before the release date (a lost clock restarting in 1970 or 2000);
    - it is before the newest trusted recording start, less ``behind_tolerance``;
    - within one boot, it moved more than ``max_jump`` against CLOCK_BOOTTIME
      since ``previous`` (the last trusted sample), unless ``evidence`` of a
      sync after that sample vouches for it (:func:`confirming_evidence`; the
      kernel's NTP flag counts as such): a step made by a synchronised time
      daemon is a correction, and the new wall time becomes the reference;
    - on the first check of a boot, it is more than ``max_ahead_unsynced`` ahead
      of the newest recording while the kernel says it is not synchronised,
      unless ``trust_rtc`` (isolated devices with a good RTC) or evidence.
    All reasons found are joined with "; ".
    """
    wall = current.wall.astimezone(UTC)
    reasons: list[str] = []
    note = None
    accepted: float | None = None
    evidence = list(evidence)
    if current.synced:
        evidence.insert(0, SyncEvidence("kernel", None, "the kernel reports NTP sync"))
    vouch = confirming_evidence(evidence, current, previous)
    if wall < release_date:
        reasons.append(f"wall clock {iso(wall)} is before release date {iso(release_date)}")
    if newest_recording_start is not None and wall < newest_recording_start - behind_tolerance:
        reasons.append(
            f"wall clock {iso(wall)} is before the newest recording start "
            f"{iso(newest_recording_start)}"
        )
    same_boot = previous is not None and previous.boot_id == current.boot_id
    if previous is not None and same_boot:
        elapsed = current.boottime_s - previous.boottime_s
        drift = (wall - previous.wall).total_seconds() - elapsed
        if elapsed < 0:
            reasons.append(
                f"CLOCK_BOOTTIME went back {-elapsed:.0f} s within boot {current.boot_id}; "
                "the saved clock state does not belong to this boot"
            )
        elif abs(drift) > max_jump.total_seconds():
            step = f"wall clock jumped {drift:+.0f} s against CLOCK_BOOTTIME"
            if vouch is not None:
                note = f"{step}; accepted: {vouch.describe()}"
                accepted = drift
            else:
                reasons.append(step)
    elif (
        newest_recording_start is not None
        and wall > newest_recording_start + max_ahead_unsynced
        and current.synced is False
        and not trust_rtc
        and vouch is None
    ):
        ahead = (wall - newest_recording_start).total_seconds()
        reasons.append(
            f"after reboot the wall clock {iso(wall)} is {ahead:.0f} s ahead of the newest "
            "recording and the kernel reports it unsynchronised "
            "(set trust_rtc for devices with a trusted RTC)"
        )
    if reasons:
        return ClockVerdict(False, "; ".join(reasons), previous, note, evidence=vouch)
    return ClockVerdict(True, None, current, note, accepted, vouch)


# -- the clock interface (the real one: edge_agent/host/sysclock.py) -----------


class Clock(Protocol):
    def now(self) -> datetime: ...

    def boottime(self) -> float: ...

    def boot_id(self) -> str: ...

    def synced(self) -> bool | None: ...


def take_sample(clock: Clock) -> ClockSample:
    return ClockSample(clock.now(), clock.boottime(), clock.boot_id(), clock.synced())


class FakeClock:
    """A settable clock for tests: move wall and boot time together or apart."""

    def __init__(
        self,
        wall: datetime,
        boottime: float = 1000.0,
        boot_id: str = "boot-1",
        synced: bool | None = True,
    ) -> None:
        self.wall = wall
        self.boot = boottime
        self.boot_id_value = boot_id
        self.synced_value = synced

    def now(self) -> datetime:
        return self.wall

    def boottime(self) -> float:
        return self.boot

    def boot_id(self) -> str:
        return self.boot_id_value

    def synced(self) -> bool | None:
        return self.synced_value

    def advance(self, seconds: float) -> None:
        """Time passes normally."""
        self.wall += timedelta(seconds=seconds)
        self.boot += seconds

    def jump_wall(self, seconds: float) -> None:
        """Someone sets the wall clock; boot time does not notice."""
        self.wall += timedelta(seconds=seconds)

    def reboot(self, boot_id: str, wall: datetime | None = None, downtime: float = 0.0) -> None:
        """A new boot: boot time restarts; the wall clock is whatever the RTC says."""
        self.boot_id_value = boot_id
        self.boot = 5.0
        self.wall = wall if wall is not None else self.wall + timedelta(seconds=downtime)
