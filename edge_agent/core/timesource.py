"""Where a recording's start time comes from (docs/design/time.md), as pure functions.

Cameras that lose their clock restart in 1970 or 2000, and files copied around
get fresh mtimes, so each candidate is checked for plausibility and the first
plausible one in order of preference wins; the catalog records which it was.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge_agent.core.model import TimeSource, iso

__all__ = [
    "DEFAULT_FLOOR",
    "DEFAULT_MAX_FUTURE",
    "MAX_RECORDING_SECONDS",
    "Rejected",
    "StartChoice",
    "choose_start",
    "implausible_reason",
    "parse_segment_name",
    "recording_end",
    "start_candidates",
    "time_from_epoch",
    "zone",
]

DEFAULT_FLOOR = datetime(2020, 1, 1, tzinfo=UTC)
DEFAULT_MAX_FUTURE = timedelta(minutes=5)
# Longer than any camera file or NVR export; a header or packet time beyond it is
# damage or a forgery, and would overflow the datetime arithmetic besides.
MAX_RECORDING_SECONDS = 31 * 86400.0


class Rejected(NamedTuple):
    source: TimeSource
    value: datetime | None
    why: str


@dataclass(frozen=True)
class StartChoice:
    start: datetime
    source: TimeSource
    rejected: tuple[Rejected, ...] = ()


def _aware(dt: datetime) -> datetime:
    # Container metadata is often naive; recorders and ffmpeg write it in UTC.
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def implausible_reason(
    value: datetime | None, now: datetime, *, floor: datetime, max_future: timedelta
) -> str | None:
    """Why ``value`` cannot be a recording start, or None if it is plausible."""
    if value is None:
        return "not available"
    try:
        value = _aware(value)
    except OverflowError:  # year 1 or 9999 with an offset: no instant at all
        return "outside the representable range"
    if value < floor:
        return f"{iso(value)} is before the floor {iso(floor)}"
    if value > now + max_future:
        ahead = (value - now).total_seconds()
        return f"{iso(value)} is {ahead:.0f} s ahead of now {iso(now)}"
    return None


def choose_start(
    candidates: Sequence[tuple[TimeSource, datetime | None]],
    now: datetime,
    *,
    floor: datetime = DEFAULT_FLOOR,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
) -> StartChoice:
    """The first plausible candidate, in the order given (recorder, creation_time, mtime).

    Plausible: present, not before ``floor``, not more than ``max_future`` after
    ``now``. If none is, the start is ``now`` marked ``TimeSource.UNTRUSTED``,
    and every rejection is returned with its reason for the log.
    """
    now = _aware(now)
    floor = _aware(floor)
    rejected: list[Rejected] = []
    for source, value in candidates:
        why = implausible_reason(value, now, floor=floor, max_future=max_future)
        if why is None and value is not None:
            return StartChoice(_aware(value), source, tuple(rejected))
        rejected.append(Rejected(source, value, why or "not available"))
    return StartChoice(now, TimeSource.UNTRUSTED, tuple(rejected))


# Date and time with optional separators, e.g. 20261129T083000Z,
# 2026-11-29T08-30-00Z, 2026-11-29 08:30:00.250+01:00, cam_20261129-083000,
# ch01_20261129083000, RecM01_20261129_083000_083500. The lookarounds keep it
# from starting or ending inside a longer run of digits.
_SEGMENT_RE = re.compile(
    r"(?<!\d)(?P<y>\d{4})(?P<ds>-?)(?P<mo>\d{2})(?P=ds)(?P<d>\d{2})"
    r"[T_ \-]?"
    r"(?P<h>\d{2})(?P<ts>[:\-.]?)(?P<mi>\d{2})(?P=ts)(?P<s>\d{2})"
    r"(?:[.,](?P<frac>\d{1,6}))?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?"
    r"(?!\d)",
    re.IGNORECASE,
)


def _offset(text: str | None) -> timezone:
    if not text or text.upper() == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def zone(name: str) -> tzinfo:
    """An IANA time zone (``Europe/Paris``); ``ValueError`` with the fix if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Paris or UTC)"
        ) from exc


def _local_to_utc(naive: datetime, tz: tzinfo) -> datetime:
    """A wall-clock reading in ``tz`` as UTC, the earlier instant when it is ambiguous.

    When clocks go back an hour repeats (two instants); when they go forward an
    hour is skipped (a DVR may still write it). Both readings are tried and the
    earlier wins: an earlier start gives an earlier deadline, so footage is never
    kept longer than the notice allows.
    """
    a = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    b = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return min(a, b)


def parse_segment_name(name: str, local_zone: tzinfo | None = None) -> datetime | None:
    """The start time encoded in a recorder's file name, or None.

    Understands the common NVR forms (basic or extended ISO 8601, ``-`` or
    ``_`` between date and time, ``-``/``:``/``.`` between time fields). A time
    with an offset is taken as written. Without one it is read in
    ``local_zone`` (the site's zone: most DVRs name files in local time),
    or as UTC when none is configured. The first valid date-time wins.
    """
    for m in _SEGMENT_RE.finditer(name):
        frac = (m["frac"] or "").ljust(6, "0")
        try:
            naive = datetime(
                int(m["y"]),
                int(m["mo"]),
                int(m["d"]),
                int(m["h"]),
                int(m["mi"]),
                int(m["s"]),
                int(frac),
            )
            if m["tz"] or local_zone is None:
                # an offset of 24 h or more raises ValueError too
                return naive.replace(tzinfo=_offset(m["tz"])).astimezone(UTC)
            return _local_to_utc(naive, local_zone)
        except (ValueError, OverflowError):
            # not a date, or year 1 / 9999 pushed out of range by its offset
            continue
    return None


def time_from_epoch(seconds: float) -> datetime | None:
    """An mtime (or any epoch seconds from outside) as aware UTC, or None if unrepresentable.

    ``touch -d`` can set a file's mtime to year 10000 or NaN-like extremes, which
    :meth:`datetime.fromtimestamp` answers with OverflowError, OSError or ValueError.
    """
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def recording_end(start: datetime, seconds: float) -> datetime:
    """``start`` plus a measured length; ValueError for a length no recording has."""
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_RECORDING_SECONDS:
        raise ValueError(
            f"a length of {seconds!r} s is not a recording's (0 to {MAX_RECORDING_SECONDS:.0f} s)"
        )
    try:
        return start + timedelta(seconds=seconds)
    except OverflowError as exc:
        raise ValueError(f"{iso(start)} + {seconds} s is out of range") from exc


def start_candidates(
    name: str,
    recorder: datetime | None,
    creation_time: datetime | None,
    mtime: float,
    local_zone: tzinfo | None = None,
) -> list[tuple[TimeSource, datetime | None]]:
    """What :func:`choose_start` weighs for a file, in order of preference.

    The recorder's own start if known, else a time in the file name (read in
    ``local_zone`` when it carries no offset); then the
    container's ``creation_time``; then the mtime. Anything unrepresentable
    is simply absent, so the next candidate is used.
    """
    return [
        (TimeSource.RECORDER, recorder or parse_segment_name(name, local_zone)),
        (TimeSource.CREATION_TIME, creation_time),
        (TimeSource.MTIME, time_from_epoch(mtime)),
    ]
