"""Doctor checks of the storage, the catalog, and the locations that hold footage.

See docs/storage.md for what the storage checks protect against.
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import datetime
from pathlib import Path

from edge_agent.app.doctor.model import Check, fail, ok, warn
from edge_agent.config.config import Config

__all__ = [
    "check_catalog",
    "check_free_space",
    "check_location_drift",
    "check_storage_mounted",
    "check_storage_writable",
    "fstab_mount_points",
    "mount_point",
]

# -- storage ------------------------------------------------------------------------


def mount_point(path: Path) -> Path:
    """The mount point holding ``path`` (its nearest existing ancestor's)."""
    p = Path(os.path.abspath(path))
    while not p.exists():
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


def fstab_mount_points(fstab: Path = Path("/etc/fstab")) -> list[Path]:
    try:
        text = fstab.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and fields[1].startswith("/"):
            points.append(Path(fields[1].replace("\\040", " ")))
    return points


def check_storage_mounted(root: Path, fstab: Path = Path("/etc/fstab")) -> Check:
    name = "storage mounted"
    if not root.is_dir():
        return fail(
            name,
            f"storage root {root} does not exist",
            f"mount the recordings disk there or create it: mkdir -p {root}",
        )
    mp = mount_point(root)
    # A disk listed in fstab for a folder above the root, but not mounted: the
    # agent would fill the empty mount point on the system disk.
    for point in fstab_mount_points(fstab):
        above = root == point or point in root.parents
        if point != Path("/") and above and not os.path.ismount(point):
            return fail(
                name,
                f"{point} is in /etc/fstab but not mounted; {root} is on the filesystem of {mp}",
                f"mount it (mount {point}) and check the disk",
            )
    if mp == Path("/"):
        return warn(
            name,
            f"{root} is on the root filesystem",
            "fine for a single-disk device; if recordings belong on a separate disk, mount "
            "it and point storage.root there",
        )
    return ok(name, f"{root} is on the filesystem mounted at {mp}")


def check_storage_writable(root: Path) -> Check:
    name = "storage writable"
    probe = root / f".edge-agent-doctor-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"edge-agent doctor probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        probe.unlink(missing_ok=True)
        return fail(
            name,
            f"cannot write, fsync and remove a file in {root}: {exc.strerror or exc}",
            f"give the agent's user write access (chown edge-agent: {root}), or remount "
            "the disk read-write",
        )
    return ok(name, f"wrote, synced and removed a probe file in {root}")


def check_free_space(cfg: Config) -> Check:
    name = "free space"
    root = cfg.storage.root
    try:
        usage = shutil.disk_usage(root)
    except OSError as exc:
        return fail(name, f"cannot read free space of {root}: {exc}", "mount the storage")
    floor = cfg.free_space_floor_bytes(usage.total)
    text = (
        f"{_human(usage.free)} free of {_human(usage.total)}; floor "
        f"{cfg.free_space_floor()} = {_human(floor)}"
    )
    if usage.free < floor:
        return fail(
            name,
            text,
            "free space on the disk, use a bigger disk, or lower storage.free_space_floor "
            "(below the floor the agent deletes the oldest unheld recordings)",
        )
    if usage.free < 2 * floor:
        return warn(name, text, "less than twice the floor: plan more space")
    return ok(name, text)


def _human(n: int) -> str:
    for unit, mult in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= mult:
            return f"{n / mult:.1f} {unit}"
    return f"{n} B"


# -- catalog ---------------------------------------------------------------------------


def check_catalog(cfg: Config, now: datetime) -> list[Check]:
    from edge_agent.store.catalog import Catalog, CatalogError, CatalogMismatch, MigrationError

    name = "catalog"
    path = cfg.storage.catalog
    if not path.exists():
        return [ok(name, f"no catalog at {path} yet; the agent creates it on first start")]
    try:
        catalog = Catalog.open(
            path, device_id=cfg.device.id, storage_root=cfg.storage.root, create=False
        )
    except CatalogMismatch as exc:
        return [fail(name, f"does not belong to this disk or device: {exc}", "see the message")]
    except (CatalogError, MigrationError, OSError) as exc:
        return [fail(name, f"cannot open {path}: {exc}", "check the path and its permissions")]
    try:
        newest = catalog.schedule.newest_trusted_start()
    finally:
        catalog.close()
    out = [ok(name, f"{path} belongs to device {cfg.device.id} and this disk")]
    if newest is not None and newest > now:
        out.append(
            fail(
                "clock",
                f"now ({now:%Y-%m-%dT%H:%M:%SZ}) is before the newest recording "
                f"({newest:%Y-%m-%dT%H:%M:%SZ})",
                "set the clock (enable NTP); the agent deletes nothing until it is right",
            )
        )
    return out


# -- locations that hold footage -----------------------------------------------------------


def check_location_drift(cfg: Config) -> list[Check]:
    """Footage at a location the config no longer has, or whose kind or audio flag changed."""
    from edge_agent.core.location_drift import configured, location_drift
    from edge_agent.store.recordings import read_footage_by_location

    rows = read_footage_by_location(cfg.storage.catalog)
    if rows is None:
        return []
    drift = location_drift(configured(cfg.locations), rows)
    if not drift:
        return [ok("locations", "every location with footage is configured as recorded")]
    fix = (
        "nothing to do if intended: the footage keeps its tags and deadlines; erase or "
        "restrict it by location and time if it should go sooner"
    )
    return [warn("locations", d.message, fix) for d in drift]
