"""What the console shows, behind a small typed seam the daemon implements.

The console never reads the catalog or the daemon itself: the daemon hands
:func:`edge_agent.console.routes.mount_console` a :class:`ConsoleData` whose
methods compute each answer when a request asks (no background task: nobody
looking costs nothing, docs/console.md). Everything is plain JSON-ready data,
except the timeline rows (:class:`~edge_agent.console.timeline.Bar`/``Shade``)
and the still (JPEG bytes).

Hold writes arrive as a :class:`HoldRequest` already checked for shape (kind,
scope, times in UTC, bounded text); whether the location or recordings exist
is the provider's check, and it says no by raising :class:`Refused` with the
reason the installer reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from edge_agent.console.timeline import Bar, Shade
from edge_agent.core.model import HoldKind, parse_ts

__all__ = [
    "MAX_TEXT",
    "ConsoleData",
    "HoldRelease",
    "HoldRequest",
    "Refused",
    "parse_hold_release",
    "parse_hold_request",
]

MAX_TEXT = 200  # reason / by / ids: an audit line, not an essay
MAX_RECORDINGS = 100


class Refused(Exception):
    """A request the console cannot carry out as asked; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ConsoleData(Protocol):
    """The daemon's answers to the console's questions, each computed on request."""

    @property
    def liveview_enabled(self) -> bool:
        """True when the live view serves this device (the source cards link to it)."""
        ...

    async def overview(self) -> dict[str, Any]:
        """Device card: ``state``, ``reasons``, ``clock``, ``storage`` (with the
        free-space floor), ``broker`` connection, ``outbox``."""
        ...

    async def sources(self) -> list[dict[str, Any]]:
        """One dict per source: ``id``, ``location``, ``state``, ``reason``,
        ``last_segment``, ``bitrate``; ``live`` if the live view offers it."""
        ...

    async def still(self, source_id: str) -> bytes | None:
        """A JPEG of the source's latest keyframe, or None (unknown source, no picture).

        Only for sources the live view would show (signs up at the location):
        the console must not be a way round the live view's rule.
        :func:`edge_agent.console.still.hub_still` makes one from the PacketHub."""
        ...

    async def locations(self) -> list[str]:
        """Location ids, one timeline each."""
        ...

    async def timeline(
        self, location: str, t0: datetime, t1: datetime
    ) -> tuple[list[Bar], list[Shade]]:
        """Recordings and holds at ``location`` overlapping [t0, t1].

        Raises :class:`Refused` (404) for an unknown location."""
        ...

    async def holds(self) -> list[dict[str, Any]]:
        """Active holds, each as ``retention.holds.hold_doc`` makes them."""
        ...

    async def place_hold(self, request: HoldRequest) -> dict[str, Any]:
        """Place and audit a hold; its document. Raises :class:`Refused` with why not."""
        ...

    async def release_hold(self, release: HoldRelease) -> dict[str, Any]:
        """Release and audit a hold; its document. Raises :class:`Refused` with why not."""
        ...

    async def events(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent audit events, newest first."""
        ...

    async def doctor(self) -> list[dict[str, Any]]:
        """``doctor`` checks: ``name``, ``ok``, ``detail`` each."""
        ...


@dataclass(frozen=True)
class HoldRequest:
    kind: HoldKind
    reason: str
    by: str
    recording_ids: tuple[str, ...] = ()
    location: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class HoldRelease:
    hold_id: str
    reason: str
    by: str


def _text(doc: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None or value == "":
        if required:
            raise Refused(f"'{key}' is missing: say {key}")
        return None
    if not isinstance(value, str):
        raise Refused(f"'{key}' must be text, not {type(value).__name__}")
    value = value.strip()
    if not value and required:
        raise Refused(f"'{key}' is empty: say {key}")
    if len(value) > MAX_TEXT:
        raise Refused(f"'{key}' is longer than {MAX_TEXT} characters")
    if any(ord(c) < 32 for c in value):
        raise Refused(f"'{key}' contains control characters")
    return value or None


def _need(doc: Mapping[str, Any], key: str) -> str:
    value = _text(doc, key)
    assert value is not None  # _text raised for a missing required field
    return value


def _time(doc: Mapping[str, Any], key: str) -> datetime | None:
    text = _text(doc, key, required=False)
    if text is None:
        return None
    try:
        return parse_ts(text)
    except (ValueError, OverflowError) as exc:
        raise Refused(f"'{key}' is not an ISO 8601 time ({exc})") from None


def _only(doc: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(doc, dict):
        raise Refused("the body must be a JSON object")
    extra = sorted(str(k) for k in doc if k not in allowed)
    if extra:
        raise Refused(f"unknown field(s) {', '.join(extra)}; known: {', '.join(sorted(allowed))}")
    return doc


def parse_hold_request(doc: Any) -> HoldRequest:
    """A hold request from the page's JSON, or :class:`Refused` (400) with why."""
    fields = {"kind", "reason", "by", "recording_ids", "location", "from", "to", "until"}
    d = _only(doc, fields)
    kind_text = _need(d, "kind")
    try:
        kind = HoldKind(kind_text)
    except ValueError:
        known = ", ".join(k.value for k in HoldKind)
        raise Refused(f"'kind' {kind_text!r} is not one of {known}") from None
    raw_ids = d.get("recording_ids") or []
    if not isinstance(raw_ids, list) or not all(isinstance(i, str) for i in raw_ids):
        raise Refused("'recording_ids' must be a list of recording ids")
    if len(raw_ids) > MAX_RECORDINGS:
        raise Refused(f"at most {MAX_RECORDINGS} recording ids per hold")
    ids = tuple(i.strip() for i in raw_ids if i.strip())
    if any(len(i) > MAX_TEXT for i in ids):
        raise Refused(f"a recording id is longer than {MAX_TEXT} characters")
    location, start, end = _text(d, "location", required=False), _time(d, "from"), _time(d, "to")
    if ids and (location or start or end):
        raise Refused("a hold covers either recording ids or a location with a window, not both")
    if not ids:
        if not (location and start and end):
            raise Refused("a hold needs recording ids, or a location with 'from' and 'to'")
        if end < start:
            raise Refused("'to' is before 'from': swap them")
    until = _time(d, "until")
    return HoldRequest(kind, _need(d, "reason"), _need(d, "by"), ids, location, start, end, until)


def parse_hold_release(hold_id: str, doc: Any) -> HoldRelease:
    """A release from the page's JSON, or :class:`Refused` (400) with why."""
    d = _only(doc, {"reason", "by"})
    if not hold_id or len(hold_id) > MAX_TEXT:
        raise Refused("no such hold", 404)
    return HoldRelease(hold_id, _need(d, "reason"), _need(d, "by"))
