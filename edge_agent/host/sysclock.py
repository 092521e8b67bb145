"""The real clocks: wall time, CLOCK_BOOTTIME, the boot id and the kernel's NTP flag.

What :mod:`edge_agent.core.clock` evaluates, read from the host (adjtimex(2)
through libc, /proc for the boot id).
"""

from __future__ import annotations

import ctypes
import time
import uuid
from datetime import UTC, datetime

from edge_agent.host.libc import libc

__all__ = ["SystemClock", "kernel_clock_synced", "read_boot_id"]


def read_boot_id(path: str = "/proc/sys/kernel/random/boot_id") -> str | None:
    """The kernel's per-boot UUID, or None where there is none (not Linux)."""
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


class _Timex(ctypes.Structure):
    # Linux struct timex up to `tai`, then the kernel's eleven padding ints.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


def kernel_clock_synced() -> bool | None:
    """The kernel's NTP sync state via adjtimex(2) (read-only), or None if unavailable."""
    try:
        tx = _Timex()  # modes = 0: query only, needs no privilege
        state = libc().adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC


class SystemClock:
    """The real clocks. The boot id is read once: it cannot change while we run."""

    def __init__(self, *, kernel_flag: bool = True) -> None:
        self._kernel_flag = kernel_flag
        # Without /proc a fresh id per process makes every start look like a reboot,
        # which applies the stricter after-reboot check rather than none.
        self._boot_id = read_boot_id() or f"unknown-{uuid.uuid4()}"

    def now(self) -> datetime:
        return datetime.now(UTC)

    def boottime(self) -> float:
        clock_id = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
        return time.clock_gettime(clock_id)

    def boot_id(self) -> str:
        return self._boot_id

    def synced(self) -> bool | None:
        return kernel_clock_synced() if self._kernel_flag else None
