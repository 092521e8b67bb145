"""The privacy notice as pure functions (docs/retention-policy.md).

Deadlines, the audio rule, hold coverage and data-subject request matching.
Nothing here touches a file, a socket, the catalog or the real clock: every
decision takes ``now`` as an argument, so the same inputs always give the same
answer and the rules can be tested exhaustively. The retention plan built from
these rules lives in :mod:`edge_agent.core.retention_plan` and is re-exported here.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edge_agent.core.model import (
    NOTICE_PERIODS,
    EraseRequest,
    Hold,
    Period,
    Purpose,
    Recording,
    RecState,
    RequestMode,
    RetentionPeriods,
    Site,
)

__all__ = [
    "AudioDecision",
    "EraseDecision",
    "active_holds",
    "add_period",
    "adopted_audio_decision",
    "audio_decision",
    "deadline",
    "deadline_for",
    "erase_matches",
    "evaluate_erase",
    "hold_covers",
    "hold_is_active",
    "holds_covering",
    "is_longer",
    "longer_than_notice",
    "overlaps",
    "require_utc",
]


def require_utc(dt: datetime, what: str) -> datetime:
    """``dt`` in UTC; a naive value is refused, naming ``what``."""
    if dt.tzinfo is None:
        # A naive datetime means some caller lost the zone; guessing would shift deadlines.
        raise ValueError(f"{what} {dt.isoformat()} has no time zone: pass an aware UTC datetime")
    return dt.astimezone(UTC)


# -- deadlines ---------------------------------------------------------------


def add_period(start: datetime, period: Period) -> datetime:
    """``start`` plus calendar months (UTC, clamped to month end), then seconds.

    31 Aug + 6 mo = 28 Feb (29 in a leap year); 31 Mar + 1 mo = 30 Apr. The
    clamp never rounds up into the next month, so footage is never kept longer
    than the notice allows.
    """
    start = require_utc(start, "start")
    if period.months:
        index = start.year * 12 + (start.month - 1) + period.months
        year, month0 = divmod(index, 12)
        day = min(start.day, calendar.monthrange(year, month0 + 1)[1])
        start = start.replace(year=year, month=month0 + 1, day=day)
    return start + timedelta(seconds=period.seconds)


def deadline(
    purpose: Purpose,
    site: Site,
    anonymized: bool,
    start: datetime,
    periods: RetentionPeriods = NOTICE_PERIODS,
) -> datetime | None:
    """When footage started at ``start`` must be gone; None means no limit."""
    if anonymized:
        # Anonymized footage is no longer personal data; its limit is optional.
        return None if periods.anonymized is None else add_period(start, periods.anonymized)
    return add_period(start, periods.for_purpose(purpose, site))


def deadline_for(rec: Recording, periods: RetentionPeriods = NOTICE_PERIODS) -> datetime | None:
    """The deadline a recording should carry, from its tags.

    The catalog stores the result in ``Recording.deadline``; the retention plan
    only ever reads that stored value, so a deadline cannot move silently.
    """
    t = rec.tags
    return deadline(t.purpose, t.site, t.anonymized, t.start, periods)


# Four years, one of them leap: every combination of month lengths a start meets.
_SCAN_START = datetime(2023, 1, 1, tzinfo=UTC)
_SCAN_DAYS = 4 * 365 + 1


def is_longer(value: Period, notice: Period) -> bool:
    """True if, for some recording start, ``value`` keeps footage past ``notice``.

    Exact for calendar months, by the same :func:`add_period` deadlines use:
    ``183d`` is longer than ``6mo`` (six months from 1 September last 181
    days), ``59d`` is not longer than ``2mo`` (two months never last fewer
    than 59 days), ``72h`` equals ``3d``.
    """
    if value.months == notice.months or value.seconds == notice.seconds:
        return (value.months, value.seconds) > (notice.months, notice.seconds)
    for i in range(_SCAN_DAYS):
        start = _SCAN_START + timedelta(days=i)
        if add_period(start, value) > add_period(start, notice):
            return True
    return False


def longer_than_notice(
    periods: RetentionPeriods, notice: RetentionPeriods = NOTICE_PERIODS
) -> list[str]:
    """Names of the ``[retention]`` keys that keep footage longer than the notice."""
    names = ["security", "rnd_premises", "rnd_external", "marketing_premises", "marketing_external"]
    out = [n for n in names if is_longer(getattr(periods, n), getattr(notice, n))]
    if notice.anonymized is not None and (
        periods.anonymized is None or is_longer(periods.anonymized, notice.anonymized)
    ):
        out.append("anonymized")
    return out


# -- audio -------------------------------------------------------------------


@dataclass(frozen=True)
class AudioDecision:
    """Whether an audio track may be kept, and why (the reason goes to the audit log).

    ``strip`` is set for adopted files only: there is an audio stream that must
    be removed before the file is catalogued.
    """

    keep: bool
    reason: str
    strip: bool = False


def _room_reason(audio_room: bool, has_signage: bool) -> str | None:
    if not audio_room:
        return "location is not an audio room"
    if not has_signage:
        return "audio room has no signage"
    return None


def audio_decision(source_wants_audio: bool, audio_room: bool, has_signage: bool) -> AudioDecision:
    """For a recorder source: audio only if wanted, in an audio room, with signs."""
    if not source_wants_audio:
        return AudioDecision(False, "source does not ask for audio")
    why_not = _room_reason(audio_room, has_signage)
    if why_not:
        return AudioDecision(False, why_not)
    return AudioDecision(True, "audio room with signage")


def adopted_audio_decision(file_has_audio: bool, audio_room: bool, signage: bool) -> AudioDecision:
    """For an adopted file: keep its audio only in a signed audio room, else strip it."""
    if not file_has_audio:
        return AudioDecision(False, "file has no audio stream")
    why_not = _room_reason(audio_room, signage)
    if why_not:
        return AudioDecision(False, f"{why_not}: audio stream removed", strip=True)
    return AudioDecision(True, "audio room with signage")


# -- intervals and holds -------------------------------------------------------

_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    """Do two CLOSED intervals share at least one instant?

    Touching at an edge counts: a recording that ends at exactly 10:00 overlaps
    a request window that starts at 10:00. Both callers want the inclusive
    answer: for a data-subject request, erring toward erasure is the safe side;
    for a hold, erring toward keeping is. One microsecond apart does not overlap.
    """
    return a_start <= b_end and b_start <= a_end


def hold_is_active(hold: Hold, now: datetime) -> bool:
    """Not released and not expired. A hold is in force up to and including its expiry instant.

    ``placed_at`` is deliberately ignored: a plan previewed for a past instant
    still honours today's holds, because holds are hard.
    """
    if hold.released_at is not None:
        return False
    return hold.expires is None or now <= hold.expires


def hold_covers(hold: Hold, rec: Recording, now: datetime) -> bool:
    """Does an active hold protect this recording?

    Scope is the listed recording ids, or the hold's location with its window;
    a missing window edge is open-ended, so a location without a window holds
    everything recorded there.
    """
    if not hold_is_active(hold, now):
        return False
    if rec.id in hold.recording_ids:
        return True
    if hold.location is None or hold.location != rec.location:
        return False
    w_start = _EARLIEST if hold.window_start is None else hold.window_start
    w_end = _LATEST if hold.window_end is None else hold.window_end
    return overlaps(rec.start, rec.end, w_start, w_end)


def holds_covering(rec: Recording, holds: Sequence[Hold], now: datetime) -> tuple[str, ...]:
    """Ids of the active holds that protect ``rec``, sorted."""
    return tuple(sorted(h.id for h in holds if hold_covers(h, rec, now)))


def active_holds(holds: Sequence[Hold], now: datetime) -> list[Hold]:
    return [h for h in holds if hold_is_active(h, now)]


# -- data-subject requests ---------------------------------------------------

# MISSING rows still match: the receipt names them and the row gets closed.
_REQUEST_STATES = frozenset({RecState.ACTIVE, RecState.RESTRICTED, RecState.MISSING})


def erase_matches(req: EraseRequest, rec: Recording) -> bool:
    """Same location and the recording's span overlaps the request window (closed).

    Deleted recordings, and those already being deleted, never match.
    """
    return (
        rec.state in _REQUEST_STATES
        and rec.location == req.location
        and overlaps(rec.start, rec.end, req.start, req.end)
    )


@dataclass(frozen=True)
class EraseDecision:
    """What a request would do.

    ``matched``: every recording the request names, sorted by start then id.
    ``to_touch``: what to erase or restrict now (empty when ``blocked``).
    ``held``: matched recordings that an active hold protects, with those hold ids.
    ``blocked``: an erase met a hold, so nothing at all is erased (it stops and says
    so until the hold is released). A restrict is never blocked:
    restriction deletes nothing, keeps the footage for the hold's purpose, and
    delaying it would leave the data subject's footage exportable meanwhile, so
    it marks held recordings too and still reports ``held``.
    """

    request: EraseRequest
    matched: tuple[Recording, ...]
    to_touch: tuple[Recording, ...]
    held: tuple[tuple[str, tuple[str, ...]], ...]
    blocked: bool
    reason: str | None = None

    @property
    def blocking_holds(self) -> tuple[str, ...]:
        return tuple(sorted({h for _, ids in self.held for h in ids})) if self.blocked else ()


def evaluate_erase(
    req: EraseRequest, recordings: Sequence[Recording], holds: Sequence[Hold], now: datetime
) -> EraseDecision:
    if require_utc(req.end, "request end") < require_utc(req.start, "request start"):
        raise ValueError(
            f"request {req.ref}: window end {req.end.isoformat()} is before start "
            f"{req.start.isoformat()}: swap --from and --to"
        )
    matched = tuple(
        sorted((r for r in recordings if erase_matches(req, r)), key=lambda r: (r.start, r.id))
    )
    held = tuple((r.id, ids) for r in matched if (ids := holds_covering(r, holds, now)))
    if req.mode is RequestMode.ERASE:
        if held:
            hold_ids = sorted({h for _, ids in held for h in ids})
            reason = (
                f"erase {req.ref} stopped: {len(held)} of {len(matched)} matching recordings "
                f"are held by {', '.join(hold_ids)}; release the hold(s) first"
            )
            return EraseDecision(req, matched, (), held, True, reason)
        return EraseDecision(req, matched, matched, held, False)
    # Already restricted rows need no change; MISSING rows have no file left to restrict.
    to_touch = tuple(r for r in matched if r.state is RecState.ACTIVE)
    return EraseDecision(req, matched, to_touch, held, False)
