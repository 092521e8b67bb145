"""Do a folder's file names run a whole number of hours off their mtimes? The pure rule.

DVRs name files by the local time of the site (``cam1_20261128_101500.mp4``).
Read as UTC (no ``name_timezone`` on the watch) such names are off by the
site's UTC offset, a whole number of hours, and so is every deadline. The
mtime (when the DVR last wrote the file, normally the end of the recording)
tells the truth within a recording's length, so a folder whose recent names
all sit the same whole number of hours away from their mtimes is named in
another zone than the one configured. The folder scan is
``edge_agent.config.name_clock``; ``doctor`` reports it as a warning.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from datetime import datetime

MIN_FILES = 3  # fewer recent names say nothing
AGREEMENT = 0.8  # share of names that must show the same offset
# A file's mtime is its end: up to this long after the start its name gives.
MAX_RECORDING = 45 * 60
_SLACK = 5 * 60  # mtime a little before the named start (clock skew between DVR parts)


def hour_offset(pairs: Sequence[tuple[datetime, datetime]]) -> int | None:
    """Whole hours the names run behind (+) or ahead (-) of the mtimes, if they agree.

    ``pairs`` are (time read from the name, mtime). None when too few pairs,
    when they disagree among themselves, or when the names are right (0).
    """
    offsets: list[int] = []
    for named, mtime in pairs:
        diff = (mtime - named).total_seconds()
        hours = round((diff - MAX_RECORDING / 2) / 3600)
        rest = diff - hours * 3600
        if -_SLACK <= rest <= MAX_RECORDING:
            offsets.append(hours)
    if len(offsets) < MIN_FILES or len(offsets) < AGREEMENT * len(pairs):
        return None
    hours, count = collections.Counter(offsets).most_common(1)[0]
    if hours == 0 or count < AGREEMENT * len(pairs):
        return None
    return hours


def advice(folder: str, hours: int, configured: str | None) -> tuple[str, str]:
    """(detail, fix) for a folder whose names are ``hours`` off."""
    ahead = "behind" if hours > 0 else "ahead of"
    read = f"read in {configured}" if configured else "read as UTC"
    detail = (
        f"{folder}: recent file names ({read}) are {abs(hours)} h {ahead} the files' "
        "modification times: start times and deadlines would be off by as much"
    )
    fix = (
        'set name_timezone = "<IANA zone of the DVR, e.g. Europe/Paris>" on this [[watch]]'
        if not configured
        else "check name_timezone and the DVR's clock"
    )
    return detail, fix
