"""Plain domain data shared by every layer.

Frozen dataclasses and string enums only: no IO, no asyncio, no sqlite. Policy
functions take and return these; IO modules convert rows and payloads to them.
All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

POLICY_VERSION = "notice-2024-1"


class Purpose(StrEnum):
    SECURITY = "security"
    RND = "rnd"
    MARKETING = "marketing"


class Site(StrEnum):
    PREMISES = "premises"
    EXTERNAL = "external"


class RecState(StrEnum):
    ACTIVE = "active"
    DELETING = "deleting"
    DELETED = "deleted"
    MISSING = "missing"
    RESTRICTED = "restricted"


# States whose file is on disk and governed by retention (docs/retention-policy.md):
# the one list the catalog's SQL, its partial index and the retention plan share.
LIVE_STATES: tuple[RecState, ...] = (RecState.ACTIVE, RecState.RESTRICTED)


class TimeSource(StrEnum):
    """Where a recording's start time came from (docs/design/time.md, in order of preference)."""

    RECORDER = "recorder"  # segment name or stream timestamp
    CREATION_TIME = "creation_time"  # container metadata
    MTIME = "mtime"  # the watched file's modification time
    UNTRUSTED = "untrusted"  # wall clock was untrusted when recorded


class HoldKind(StrEnum):
    INCIDENT = "incident"
    RND_EXTENSION = "rnd_extension"


class RequestMode(StrEnum):
    ERASE = "erase"
    RESTRICT = "restrict"


_DURATION_RE = re.compile(r"^\s*(\d+)\s*(s|min|h|d|w|mo|y)\s*$")


@dataclass(frozen=True, order=True)
class Period:
    """A retention period: calendar months plus a fixed number of seconds.

    Months and seconds are kept apart because a calendar month has no fixed
    length; comparison across the two kinds uses :meth:`upper_bound_seconds`.
    """

    months: int = 0
    seconds: int = 0

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse ``72h``, ``3d``, ``2w``, ``6mo``, ``1y``, ``90s``, ``30min``.

        Raises ValueError with the accepted forms in the message.
        """
        m = _DURATION_RE.match(text)
        if not m:
            raise ValueError(
                f"bad duration {text!r}: use a whole number and a unit, "
                "one of s, min, h, d, w, mo, y (e.g. 72h, 3d, 6mo)"
            )
        n, unit = int(m.group(1)), m.group(2)
        if unit == "mo":
            return cls(months=n)
        if unit == "y":
            return cls(months=12 * n)
        mult = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[unit]
        return cls(seconds=n * mult)

    def upper_bound_seconds(self) -> int:
        """Longest this period can last (31-day months), for comparisons."""
        return self.months * 31 * 86400 + self.seconds

    def lower_bound_seconds(self) -> int:
        """Shortest this period can last (28-day months)."""
        return self.months * 28 * 86400 + self.seconds

    def __str__(self) -> str:
        if self.months and not self.seconds:
            return f"{self.months}mo"
        if not self.months and self.seconds % 86400 == 0 and self.seconds:
            return f"{self.seconds // 86400}d"
        if not self.months and self.seconds % 3600 == 0 and self.seconds:
            return f"{self.seconds // 3600}h"
        if not self.months:
            return f"{self.seconds}s"
        return f"{self.months}mo+{self.seconds}s"


@dataclass(frozen=True)
class RetentionPeriods:
    """How long footage may be kept, from recording start. Defaults = the notice."""

    security: Period = Period(seconds=3 * 86400)
    rnd_premises: Period = Period(months=6)
    rnd_external: Period = Period(months=2)
    marketing_premises: Period = Period(months=6)
    marketing_external: Period = Period(months=2)
    anonymized: Period | None = None  # None = no limit

    def for_purpose(self, purpose: Purpose, site: Site) -> Period:
        if purpose is Purpose.SECURITY:
            return self.security
        if purpose is Purpose.RND:
            return self.rnd_premises if site is Site.PREMISES else self.rnd_external
        return self.marketing_premises if site is Site.PREMISES else self.marketing_external


NOTICE_PERIODS = RetentionPeriods()


@dataclass(frozen=True)
class Tags:
    """What every recording carries, in the catalog and in its container."""

    location: str
    purpose: Purpose
    site: Site
    audio: bool
    anonymized: bool
    start: datetime
    end: datetime
    time_source: TimeSource
    device: str
    policy_version: str = POLICY_VERSION


@dataclass(frozen=True)
class Recording:
    id: str
    path: str  # relative to the storage root
    tags: Tags
    size: int
    sha256: str
    state: RecState = RecState.ACTIVE
    deadline: datetime | None = None  # None = no limit, or not yet known
    source_id: str | None = None
    # Hash of the file as it arrived, before tagging/stripping: identifies re-adoption.
    source_sha256: str | None = None
    # The recording this one is an anonymized derivative of (docs/anonymization.md).
    derived_from: str | None = None

    @property
    def start(self) -> datetime:
        return self.tags.start

    @property
    def end(self) -> datetime:
        return self.tags.end

    @property
    def location(self) -> str:
        return self.tags.location


@dataclass(frozen=True)
class Hold:
    """Stops deletion. Scope is either recording ids or a location + window."""

    id: str
    kind: HoldKind
    reason: str
    placed_by: str
    placed_at: datetime
    recording_ids: tuple[str, ...] = ()
    location: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    expires: datetime | None = None
    released_at: datetime | None = None
    released_by: str | None = None


@dataclass(frozen=True)
class EraseRequest:
    """A data-subject request: a place and a time window."""

    ref: str
    location: str
    start: datetime
    end: datetime
    mode: RequestMode = RequestMode.ERASE
    # Erasure also takes the anonymized derivatives of what it matches unless
    # the request keeps them (docs/retention-policy.md).
    keep_derivatives: bool = False


def utcnow() -> datetime:
    return datetime.now(UTC)


MAX_TS_TEXT = 64  # longer than any ISO 8601 form; bounds work on input from outside


def parse_ts(text: str) -> datetime:
    """ISO 8601 to aware UTC; a naive value is taken as UTC.

    Times arrive from commands, file tags and names: whatever the text, the only
    failure is a ``ValueError`` with a reason (an offset that moves year 1 or
    9999 out of range raises ``OverflowError`` inside :mod:`datetime`).
    """
    if not isinstance(text, str):
        raise ValueError(f"{type(text).__name__} is not an ISO 8601 time")
    if len(text) > MAX_TS_TEXT:
        raise ValueError(f"time text of {len(text)} characters (at most {MAX_TS_TEXT})")
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.astimezone(UTC)
    except ArithmeticError as exc:
        raise ValueError(f"{text!r} is outside the representable range ({exc})") from None


def iso(dt: datetime) -> str:
    """UTC ISO 8601 with a Z suffix, microseconds kept only when present."""
    # Hot: twice per planned deletion and per audit entry (bench/retention.py). An
    # aware UTC time ends in "+00:00": cut it instead of converting and copying; the
    # default timespec already keeps microseconds only when present.
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    return dt.isoformat()[:-6] + "Z"


ZERO = timedelta(0)


# -- a recording as JSON -----------------------------------------------------------

_DOC_FIELDS: dict[str, Callable[[Recording], Any]] = {
    "id": lambda r: r.id,
    "path": lambda r: r.path,
    "location": lambda r: r.tags.location,
    "purpose": lambda r: str(r.tags.purpose),
    "site": lambda r: str(r.tags.site),
    "audio": lambda r: r.tags.audio,
    "anonymized": lambda r: r.tags.anonymized,
    "start": lambda r: iso(r.tags.start),
    "end": lambda r: iso(r.tags.end),
    "duration_s": lambda r: round((r.tags.end - r.tags.start).total_seconds(), 3),
    "time_source": lambda r: str(r.tags.time_source),
    "device": lambda r: r.tags.device,
    "policy_version": lambda r: r.tags.policy_version,
    "deadline": lambda r: iso(r.deadline) if r.deadline else None,
    "size": lambda r: r.size,
    "sha256": lambda r: r.sha256,
    "state": lambda r: str(r.state),
    "source_id": lambda r: r.source_id,
}
RECORDING_FIELDS: tuple[str, ...] = tuple(_DOC_FIELDS)


def recording_doc(
    rec: Recording, fields: Sequence[str] = RECORDING_FIELDS, *, id_key: str = "id"
) -> dict[str, Any]:
    """``rec`` as JSON-ready data (times ISO 8601 UTC), in the order of ``fields``.

    The one Recording-to-dict: CLI output, audit entries, receipts and MQTT events
    (docs/mqtt.md) pick their fields from here so a field is spelled and
    formatted the same everywhere. Events name the id ``recording_id`` (``id_key``).
    """
    return {(id_key if f == "id" else f): _DOC_FIELDS[f](rec) for f in fields}
