"""Truthful storage messages: a floor larger than the disk, pause reasons, the disk mount."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.app.doctor import Level, run_checks
from edge_agent.config.storage_checks import NOTHING_DELETABLE
from edge_agent.core.clock import FakeClock
from edge_agent.core.model import NOTICE_PERIODS
from edge_agent.core.pressure import PAUSE_REASON
from edge_agent.retention.clockguard import ClockGuard, ClockGuardSettings
from edge_agent.retention.janitor import Janitor
from edge_agent.store.catalog import Catalog
from tests.support.cli import run_cli_config as cli
from tests.support.tmpfs import mounted_tmpfs

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB filesystem: the generic profile's 2 GiB floor cannot fit on it."""
    with mounted_tmpfs(tmp_path / "disk", "16m") as mnt:
        yield mnt


def write(tmp_path: Path, root: Path, *, profile: str, floor: str | None = None) -> Path:
    lines = [
        "[device]",
        'id = "gw-1"',
        f'hw_profile = "{profile}"',
        "[storage]",
        f'root = "{root}"',
        f'catalog = "{tmp_path / "catalog.db"}"',
        f'quarantine = "{tmp_path / "quarantine"}"',
    ]
    if floor is not None:
        lines.append(f'free_space_floor = "{floor}"')
    lines += ["[[locations]]", 'id = "gate"', 'kind = "premises"', "signage = true"]
    cfg = tmp_path / "agent.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def test_floor_larger_than_the_disk_is_a_config_error(tmp_path: Path, small_disk: Path) -> None:
    cfg = write(tmp_path, small_disk, profile="generic-linux")  # 2GiB floor, 16 MiB disk
    res = cli(cfg, "config", "check")
    assert res.returncode == 2, res.stdout + res.stderr
    line = next(x for x in res.stderr.splitlines() if x.startswith("storage.free_space_floor"))
    assert "'2GiB'" in line and "larger than the whole filesystem" in line, line
    assert "16.0 MiB" in line and 'set free_space_floor = "10%"' in line, line

    res = cli(cfg, "doctor", "--json")
    assert res.returncode != 0
    assert "larger than the whole filesystem" in res.stdout, res.stdout

    # A floor that fits is fine; a config meant for another machine is not measured.
    ok = write(tmp_path, small_disk, profile="generic-linux", floor="10%")
    assert cli(ok, "config", "check").returncode == 0
    assert cli(cfg, "config", "check", "--no-file-checks").returncode == 0


def test_doctor_says_the_recordings_disk_is_not_mounted(tmp_path: Path) -> None:
    root = tmp_path / "recordings"  # a folder on the root filesystem
    root.mkdir()
    cfg = write(tmp_path, root, profile="x86-gateway-hdd", floor="1MiB")
    checks = run_checks(cfg, timeout=0.5, fstab=tmp_path / "no-fstab")
    disk = [c for c in checks if c.name == "storage disk"]
    assert len(disk) == 1 and disk[0].level is Level.FAIL
    assert "not mounted" in disk[0].detail and "x86-gateway-hdd" in disk[0].detail
    assert "mount the recordings disk" in (disk[0].fix or "")
    # Profiles without an external disk do not ask for one.
    plain = write(tmp_path, root, profile="generic-linux", floor="1MiB")
    assert not [c for c in run_checks(plain, timeout=0.5) if c.name == "storage disk"]


def test_doctor_is_content_with_a_mounted_disk(tmp_path: Path, small_disk: Path) -> None:
    cfg = write(tmp_path, small_disk, profile="x86-gateway-hdd", floor="1MiB")
    checks = run_checks(cfg, timeout=0.5, fstab=tmp_path / "no-fstab")
    assert not [c for c in checks if c.name == "storage disk"]


# -- pause reasons say what is true --------------------------------------------------


def janitor(tmp_path: Path, *, free: int, total: int, floor: int) -> tuple[Janitor, Catalog]:
    root = tmp_path / "rec"
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-1", storage_root=root)
    guard = ClockGuard(
        cat, FakeClock(NOW, synced=True), ClockGuardSettings(release_date=NOW - timedelta(days=9))
    )
    j = Janitor(
        cat,
        root,
        periods=NOTICE_PERIODS,
        guard=guard,
        free_space=lambda: (free, total),
        floor_bytes=lambda _t: floor,
        fsync=False,
    )
    return j, cat


def test_nothing_held_is_not_called_held(tmp_path: Path) -> None:
    mib = 1024 * 1024
    j, cat = janitor(tmp_path, free=100 * mib, total=200 * mib, floor=2048 * mib)
    res = j.sweep_once(NOW)
    assert res.storage_full_held
    assert res.full_reason is not None and "larger than the whole disk" in res.full_reason
    assert PAUSE_REASON not in res.full_reason
    [(data,)] = cat.query("SELECT payload FROM outbox WHERE type = 'alarm.storage_full_held'")
    alarm = json.loads(data)
    assert alarm["held"] is False and alarm["held_recordings"] == 0
    assert "held footage" not in alarm["detail"]
    cat.close()

    j, cat = janitor(tmp_path / "b", free=10 * mib, total=200 * mib, floor=20 * mib)
    assert j.sweep_once(NOW).full_reason == NOTHING_DELETABLE
    cat.close()
