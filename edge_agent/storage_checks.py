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
from pathlib import Path

from edge_agent.pressure import PAUSE_REASON
from edge_agent.profiles import SpaceFloor

__all__ = ["floor_problem", "full_reason", "human", "mount_problem", "storage_mount"]

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


def storage_mount(root: Path) -> Path:
    """The mount point of the filesystem holding ``root`` (its nearest existing ancestor)."""
    p = Path(os.path.abspath(root))
    while not p.exists():
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


def mount_problem(root: Path, *, external: bool, profile: str) -> str | None:
    """A doctor line when ``root`` should be on its own disk but is on the system's."""
    if not external:
        return None
    if storage_mount(root) != Path("/"):
        return None
    return (
        f"hardware profile {profile} records to an external disk, but storage root {root} "
        "is on the root filesystem: the recordings disk is not mounted, so the agent would "
        "fill the system disk"
    )
