"""A device with real, catalogued media for export and holdings tests (and bench/export.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.core.model import NOTICE_PERIODS, Purpose, Recording, Site
from edge_agent.intake.intake import Intake, IntakeSettings, Origin
from edge_agent.store.catalog import Catalog
from tests.support.cli import run_cli as run  # noqa: F401
from tests.support.mediagen import make_video

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=2)


@dataclass
class Device:
    root: Path
    config: Path

    @property
    def storage(self) -> Path:
        return self.root / "rec"

    @property
    def catalog_path(self) -> Path:
        return self.root / "state" / "catalog.db"

    def open(self) -> Catalog:
        return Catalog.open(self.catalog_path, device_id="gw-test", storage_root=self.storage)

    def settings(self) -> IntakeSettings:
        return IntakeSettings(
            device_id="gw-test",
            storage_root=self.storage,
            quarantine_dir=self.root / "quarantine",
            periods=NOTICE_PERIODS,
            fsync=False,
        )

    def adopt(
        self,
        name: str,
        *,
        minute: int,
        purpose: Purpose = Purpose.SECURITY,
        location: str = "gate",
        anonymized: bool = False,
        seconds: float = 0.4,
        bit_rate: int | None = None,
        size: tuple[int, int] = (320, 240),
    ) -> Recording:
        src = self.root / "drop" / f"{name}.mkv"
        src.parent.mkdir(parents=True, exist_ok=True)
        make_video(
            src,
            container="mkv",
            seconds=seconds,
            creation_time=T0 + timedelta(minutes=minute),
            bit_rate=bit_rate,
            size=size,
        )
        origin = Origin(location, Site.PREMISES, False, True, purpose, anonymized=anonymized)
        cat = self.open()
        try:
            res = Intake(cat, self.settings()).adopt(src, origin, NOW)
        finally:
            cat.close()
        assert res.recording is not None, res.reason
        return res.recording


def make_device(root: Path, *, marketing_originals: bool = False) -> Device:
    (root / "state").mkdir(parents=True, exist_ok=True)
    (root / "rec").mkdir(parents=True, exist_ok=True)
    cfg = root / "config.toml"
    cfg.write_text(
        f"""
[device]
id = "gw-test"
hw_profile = "generic-linux"

[storage]
root = "{root / "rec"}"
catalog = "{root / "state" / "catalog.db"}"

[[locations]]
id = "gate"
kind = "premises"

[[locations]]
id = "lab"
kind = "premises"
audio_room = true
signage = true

[export]
marketing_originals = {"true" if marketing_originals else "false"}
""",
        encoding="utf-8",
    )
    dev = Device(root, cfg)
    dev.open().close()
    return dev


def at(minute: float) -> str:
    """The ISO time ``minute`` minutes after the first recording's hour."""
    return (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
