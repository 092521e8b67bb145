"""Where evidence of good time comes from on a real device (docs/design/time.md).

The kernel's NTP flag needs adjtimex(2), which the hardened unit forbids
(``ProtectClock=yes`` blocks even the read-only query), so the guard also
reads what the time daemons leave behind: systemd-timesyncd touches a flag
file on every synchronisation, and chrony answers ``chronyc tracking``. Each
source yields a :class:`~edge_agent.core.clock.SyncEvidence` with the time of its
last sync; :func:`edge_agent.core.clock.confirming_evidence` decides whether it
vouches for the clock as it reads now. Paths are settings so tests provide
their own.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.core.clock import SyncEvidence

__all__ = ["TIMESYNCD_FLAG", "TimeSyncSources", "chrony_evidence", "timesyncd_evidence"]

log = logging.getLogger(__name__)

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
_CHRONY_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class TimeSyncSources:
    timesyncd_flag: Path | None = TIMESYNCD_FLAG
    chronyc: str | None = "chronyc"  # a command name or path; None turns chrony off

    def gather(self, *, slow: bool) -> list[SyncEvidence]:
        """Evidence from every source; ``slow`` adds the ones that run a process."""
        found: list[SyncEvidence] = []
        if self.timesyncd_flag is not None:
            ev = timesyncd_evidence(self.timesyncd_flag)
            if ev is not None:
                found.append(ev)
        if slow and self.chronyc:
            ev = chrony_evidence(self.chronyc)
            if ev is not None:
                found.append(ev)
        return found


def timesyncd_evidence(flag: Path) -> SyncEvidence | None:
    try:
        mtime = flag.stat().st_mtime
    except OSError:
        return None
    try:
        at = datetime.fromtimestamp(mtime, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return SyncEvidence("timesyncd", at, "systemd-timesyncd synchronised")


def chrony_evidence(chronyc: str) -> SyncEvidence | None:
    exe = shutil.which(chronyc)
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-c", "-n", "tracking"],
            capture_output=True,
            text=True,
            timeout=_CHRONY_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("chronyc tracking failed: %s", exc)
        return None
    if out.returncode != 0:
        return None
    return parse_chrony_tracking(out.stdout)


def parse_chrony_tracking(text: str) -> SyncEvidence | None:
    """Evidence from ``chronyc -c tracking`` output, or None if chrony is not synchronised.

    CSV fields: reference id, name, stratum, reference time (Unix seconds, the
    last clock update from a source), ..., leap status last.
    """
    fields = text.strip().split(",")
    if len(fields) < 14:
        return None
    leap = fields[-1].strip()
    try:
        stratum = int(fields[2])
        ref_time = float(fields[3])
    except ValueError:
        return None
    if leap == "Not synchronised" or ref_time <= 0 or not 0 < stratum < 16:
        return None
    try:
        at = datetime.fromtimestamp(ref_time, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return SyncEvidence("chrony", at, f"chrony synchronised (stratum {stratum})")
