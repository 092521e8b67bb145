"""Do a watched folder's file names tell the same time as the files' mtimes?

The doctor's check: scans each watched folder for recently modified files
with a dated name and applies the rule in ``edge_agent.core.name_clock``,
which also says why such names drift.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.core.name_clock import advice, hour_offset
from edge_agent.core.timesource import parse_segment_name, zone

if TYPE_CHECKING:
    from edge_agent.config.config import Config

__all__ = ["check_watch_names", "recent_pairs"]

SCAN_LIMIT = 5000  # directory entries looked at per folder
RECENT = 50


def recent_pairs(
    folder: Path, tz: tzinfo | None, limit: int = RECENT
) -> list[tuple[datetime, datetime]]:
    """(name time, mtime) of the ``limit`` most recently modified files with a dated name."""
    found: list[tuple[datetime, datetime]] = []
    seen = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            seen += 1
            if seen > SCAN_LIMIT:
                break
            named = parse_segment_name(name, tz)
            if named is None:
                continue
            try:
                mtime = os.stat(os.path.join(dirpath, name)).st_mtime
            except OSError:
                continue
            found.append((named, datetime.fromtimestamp(mtime, UTC)))
        if seen > SCAN_LIMIT:
            break
    found.sort(key=lambda p: p[1], reverse=True)
    return found[:limit]


def check_watch_names(cfg: Config) -> list[tuple[str, str]]:
    """(detail, fix) for every watched folder whose names disagree with their mtimes."""
    out: list[tuple[str, str]] = []
    for watch in cfg.watch:
        tz = zone(watch.name_timezone) if watch.name_timezone else None
        if not watch.path.is_dir():
            continue  # doctor's watch check already says so
        hours = hour_offset(recent_pairs(watch.path, tz))
        if hours is not None:
            out.append(advice(str(watch.path), hours, watch.name_timezone))
    return out
