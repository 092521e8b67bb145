"""Where a recording's start time comes from (SPEC §2), as pure functions.

Cameras that lose their clock restart in 1970 or 2000, and files copied around
get fresh mtimes, so each candidate is checked for plausibility and the first
plausible one in order of preference wins; the catalog records which it was.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple

from edge_agent.model import TimeSource, iso

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


def parse_segment_name(name: str) -> datetime | None:
    """The start time encoded in a recorder's file name, or None.

    Understands the common NVR forms (basic or extended ISO 8601, ``-`` or
    ``_`` between date and time, ``-``/``:``/``.`` between time fields). A time
    without an offset is taken as UTC, which is what recorders configured per
    the install guide write. The first valid date-time in the name wins.
    """
    for m in _SEGMENT_RE.finditer(name):
        frac = (m["frac"] or "").ljust(6, "0")
        try:
            dt = datetime(
                int(m["y"]),
                int(m["mo"]),
                int(m["d"]),
                int(m["h"]),
                int(m["mi"]),
                int(m["s"]),
                int(frac),
                tzinfo=_offset(m["tz"]),  # an offset of 24 h or more raises too
            )
        except ValueError:
            continue
        try:
            return dt.astimezone(UTC)
        except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
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
    name: str, recorder: datetime | None, creation_time: datetime | None, mtime: float
) -> list[tuple[TimeSource, datetime | None]]:
    """What :func:`choose_start` weighs for a file, in order of preference.

    The recorder's own start if known, else a time in the file name; then the
    container's ``creation_time``; then the mtime. Anything unrepresentable
    is simply absent, so the next candidate is used.
    """
    return [
        (TimeSource.RECORDER, recorder or parse_segment_name(name)),
        (TimeSource.CREATION_TIME, creation_time),
        (TimeSource.MTIME, time_from_epoch(mtime)),
    ]
