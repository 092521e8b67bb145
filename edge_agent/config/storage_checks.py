"""What is true about the storage disk, said plainly (docs/storage.md).

Pure functions, for the janitor's pause reason, ``config check`` and ``doctor``:

- :func:`full_reason`: why recording pauses when the disk stays below its
  free-space floor. "Storage full of held footage" only when held footage is
  what is left; otherwise that nothing is deletable yet, or that the floor can
  never be met because it is larger than the disk.
- :func:`floor_problem`: a free-space floor as large as the whole filesystem
  (the generic profile's 2 GiB on a 200 MB disk) is a config error with a fix.
- :func:`mount_problem`: a hardware profile that records to an external disk
  (``external_storage = true``) whose storage root is on the system disk.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.config.profiles import SpaceFloor
from edge_agent.core.pressure import PAUSE_REASON

if TYPE_CHECKING:
    from edge_agent.config.config import Config

__all__ = [
    "config_problems",
    "floor_problem",
    "full_reason",
    "human",
    "mount_problem",
    "storage_mount",
]

NOTHING_DELETABLE = "storage below its free-space floor and nothing is deletable yet"


def human(n: int) -> str:
    for unit, mult in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= mult:
            return f"{n / mult:.1f} {unit}"
    return f"{n} B"


def full_reason(*, held: int, floor: int, total: int | None) -> str:
    """The pause reason when the disk stays below ``floor`` and nothing more can go."""
    if total is not None and floor >= total:
        return (
            f"free-space floor {human(floor)} is larger than the whole disk ({human(total)}): "
            "lower storage.free_space_floor"
        )
    if held > 0:
        return PAUSE_REASON
    return NOTHING_DELETABLE


def floor_problem(floor: SpaceFloor, total: int, root: Path) -> str | None:
    """A config-check line when ``floor`` can never be met on a filesystem of ``total``."""
    need = floor.bytes_for(total)
    if need < total:
        return None
    suggest = "10%" if total < 20 * 1024**3 else "5%"
    return (
        f"storage.free_space_floor: '{floor}' ({human(need)}) is larger than the whole "
        f"filesystem of storage.root {root} ({human(total)}): the agent would delete every "
        f'unheld recording and pause recording (set free_space_floor = "{suggest}" under '
        "[storage], or use a bigger disk)"
    )


def config_problems(cfg: Config) -> list[str]:
    """``config check`` lines that need the machine: the floor against the real disk."""
    root = cfg.storage.root
    if not root.is_dir():
        return []  # not mounted yet, or made at first start: nothing to measure
    try:
        total = shutil.disk_usage(root).total
    except OSError:
        return []
    line = floor_problem(cfg.free_space_floor(), total, root)
    return [line] if line else []


def storage_mount(root: Path) -> Path:
    """The mount point of the filesystem holding ``root`` (its nearest existing ancestor)."""
    p = Path(os.path.abspath(root))
    while not p.exists():
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


def mount_problem(root: Path, *, external: bool, profile: str) -> tuple[str, str] | None:
    """(detail, fix) for doctor when ``root`` should be on its own disk but is on the
    system's: the recordings disk is not mounted, or not where the config says."""
    if not external:
        return None
    if storage_mount(root) != Path("/"):
        return None
    return (
        f"hardware profile {profile} records to its own disk, but storage root {root} is on "
        "the root filesystem: the recordings disk is not mounted there, and the agent "
        "would fill the system disk",
        f"mount the recordings disk at {root} (or a folder above it) and add it to "
        "/etc/fstab; the unit waits for it (RequiresMountsFor=)",
    )
