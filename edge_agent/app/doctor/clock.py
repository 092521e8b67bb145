"""Doctor checks of the clock: synchronised now, and at boot before the agent starts.

See docs/design/time.md.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime
from pathlib import Path

from edge_agent.app.doctor.model import Check, fail, ok, warn
from edge_agent.config.config import Config
from edge_agent.host.sysclock import kernel_clock_synced

__all__ = [
    "check_clock",
    "check_rtc_or_wait_sync",
    "timedatectl_synced",
    "wait_sync_enabled",
]

# -- clock ---------------------------------------------------------------------------------


def timedatectl_synced() -> bool | None:
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    if out.returncode != 0 or value not in ("yes", "no"):
        return None  # no systemd running (containers)
    return value == "yes"


def check_clock(cfg: Config, now: datetime) -> Check:
    """The wall clock, and each source of evidence the clock guard can use (docs/design/time.md)."""
    from edge_agent.retention.timesync import chrony_evidence, timesyncd_evidence

    name = "clock"
    release = cfg.clock.release_date
    stamp = f"{now:%Y-%m-%dT%H:%M:%SZ}"
    if now < release:
        return fail(
            name,
            f"{stamp} is before this release ({release:%Y-%m-%d}): the clock is wrong",
            "set the time (timedatectl set-ntp true, or date -s) and check the RTC battery",
        )
    flag = cfg.clock.timesync_flag
    timesyncd = timesyncd_evidence(flag) if flag is not None else None
    chrony = chrony_evidence(cfg.clock.chronyc) if cfg.clock.chronyc else None
    views: dict[str, tuple[bool | None, str]] = {
        "timedatectl": (timedatectl_synced(), "timedatectl"),
        "timesyncd": (
            True if timesyncd else None,
            timesyncd.describe() if timesyncd else "timesyncd",
        ),
        "chrony": (True if chrony else None, chrony.describe() if chrony else "chrony"),
        "kernel": (
            kernel_clock_synced() if cfg.clock.kernel_flag else None,
            "kernel NTP sync",
        ),
    }
    synced = [text for v, text in views.values() if v is True]
    unsynced = [k for k, (v, _) in views.items() if v is False]
    if synced:
        return ok(name, f"{stamp}, synchronised ({'; '.join(synced)})")
    if cfg.clock.trust_rtc:
        return ok(name, f"{stamp}, not known to be synchronised; clock.trust_rtc = true")
    fix = (
        "enable NTP (timedatectl set-ntp true, or chrony); on an isolated device with a "
        "battery-backed RTC set clock.trust_rtc = true"
    )
    if unsynced:
        return warn(name, f"{stamp} plausible but not synchronised (per {unsynced[0]})", fix)
    return warn(name, f"{stamp} plausible; synchronisation state unknown", fix)


def wait_sync_enabled(unit: str = "systemd-time-wait-sync.service") -> bool | None:
    """Whether the boot waits for the first time sync; None where systemd cannot say."""
    exe = shutil.which("systemctl")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "is-enabled", unit], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    state = out.stdout.strip()
    if state in ("enabled", "enabled-runtime", "static", "alias", "indirect"):
        return True
    if state in ("disabled", "masked", "masked-runtime", "not-found"):
        return False
    return None


def check_rtc_or_wait_sync(
    cfg: Config,
    *,
    rtc_dir: Path = Path("/sys/class/rtc"),
    wait_sync: bool | None = None,
) -> Check:
    """A board without an RTC boots with a stale clock; waiting for sync avoids the step."""
    name = "clock-boot"
    try:
        has_rtc = any(rtc_dir.iterdir())
    except OSError:
        has_rtc = False
    if has_rtc:
        return ok(name, f"a real-time clock keeps the time across reboots ({rtc_dir})")
    if wait_sync is None:
        wait_sync = wait_sync_enabled()
    if wait_sync:
        return ok(name, "no RTC, but the boot waits for the first time sync")
    if cfg.clock.trust_rtc:
        return warn(
            name,
            "clock.trust_rtc = true, but no real-time clock was found",
            "set clock.trust_rtc = false unless the device has a battery-backed RTC",
        )
    return warn(
        name,
        "no real-time clock and the boot does not wait for time sync: after each boot the "
        "clock is stepped once NTP answers, and deletion pauses until that step is confirmed",
        "systemctl enable systemd-time-wait-sync.service (or chrony's chrony-wait.service), "
        "or fit an RTC",
    )
