"""Footage outlives its place in the config: compare the two, as a pure function.

A location removed from the config (a room decommissioned), or whose kind or
audio flag changed, may still hold footage until its deadline. That footage
keeps the tags and deadline it was recorded with (nothing is recomputed), and
every command that names a location for existing footage (erase, restrict,
hold, recordings list) still accepts it; only recording and adoption need a
configured location. See docs/retention-policy.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from edge_agent.core.model import Site, iso

__all__ = ["Drift", "LocationFootage", "configured", "location_drift", "merge_footage"]


@dataclass(frozen=True)
class LocationFootage:
    """Live recordings of one location with one (site, audio) combination."""

    location: str
    site: Site
    audio: bool
    count: int
    last_deadline: datetime | None
    undated: int = 0  # no deadline yet (untrusted clock) or no limit (anonymized)


@dataclass(frozen=True)
class Drift:
    location: str
    kind: str  # removed | kind_changed | audio_changed
    count: int
    last_deadline: datetime | None
    undated: int
    message: str

    def as_dict(self) -> dict[str, object]:
        return {
            "location": self.location,
            "kind": self.kind,
            "count": self.count,
            "last_deadline": iso(self.last_deadline) if self.last_deadline else None,
            "undated": self.undated,
        }


def _until(last: datetime | None, undated: int) -> str:
    parts = []
    if last is not None:
        parts.append(f"the last deadline is {iso(last)}")
    if undated:
        parts.append(f"{undated} without a deadline yet")
    return "; ".join(parts) or "no deadline yet"


def merge_footage(rows: Iterable[LocationFootage]) -> dict[str, list[LocationFootage]]:
    out: dict[str, list[LocationFootage]] = {}
    for r in rows:
        out.setdefault(r.location, []).append(r)
    return out


def _sum(rows: list[LocationFootage]) -> tuple[int, datetime | None, int]:
    deadlines = [r.last_deadline for r in rows if r.last_deadline is not None]
    return sum(r.count for r in rows), max(deadlines, default=None), sum(r.undated for r in rows)


class _ConfiguredLocation(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> Site: ...
    @property
    def audio_room(self) -> bool: ...


def configured(locations: Iterable[_ConfiguredLocation]) -> dict[str, tuple[Site, bool]]:
    """``{id: (kind, audio_room)}`` from a config's ``locations``."""
    return {loc.id: (Site(loc.kind), bool(loc.audio_room)) for loc in locations}


def location_drift(
    configured: Mapping[str, tuple[Site, bool]], footage: Iterable[LocationFootage]
) -> list[Drift]:
    """What an operator must be told: ``configured`` maps id to (kind, audio_room)."""
    out: list[Drift] = []
    for loc, rows in sorted(merge_footage(footage).items()):
        rows = [r for r in rows if r.count > 0]
        if not rows:
            continue
        if loc not in configured:
            n, last, undated = _sum(rows)
            out.append(
                Drift(
                    loc,
                    "removed",
                    n,
                    last,
                    undated,
                    f"locations: {loc!r} is no longer configured but holds {n} recording(s) "
                    f"({_until(last, undated)}); they keep their tags and deadlines, and "
                    "erase, restrict, hold and recordings list still accept the location",
                )
            )
            continue
        kind, audio_room = configured[loc]
        other_site = [r for r in rows if r.site is not kind]
        if other_site:
            n, last, undated = _sum(other_site)
            was = ", ".join(sorted({str(r.site) for r in other_site}))
            out.append(
                Drift(
                    loc,
                    "kind_changed",
                    n,
                    last,
                    undated,
                    f"locations: {loc!r} is now {kind} but {n} recording(s) were made as "
                    f"{was}; they keep the tags and deadlines they were recorded with "
                    f"({_until(last, undated)})",
                )
            )
        with_audio = [r for r in rows if r.audio]
        if with_audio and not audio_room:
            n, last, undated = _sum(with_audio)
            out.append(
                Drift(
                    loc,
                    "audio_changed",
                    n,
                    last,
                    undated,
                    f"locations: {loc!r} is no longer an audio room but {n} recording(s) "
                    f"there hold audio recorded while it was; they are kept as recorded "
                    f"({_until(last, undated)})",
                )
            )
    return out
