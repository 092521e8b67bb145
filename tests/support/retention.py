"""Test helpers shared by several test modules (first written in test_janitor.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edge_agent.core.model import (
    NOTICE_PERIODS,
    Purpose,
    Recording,
    Site,
)
from edge_agent.intake.intake import Intake, IntakeSettings, Origin
from edge_agent.store.catalog import Catalog
from tests.support.mediagen import make_video

NOW = datetime.now(UTC).replace(microsecond=0)


RELEASE = datetime(2026, 1, 1, tzinfo=UTC)


def env(tmp_path: Path) -> tuple[Catalog, IntakeSettings]:
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test", storage_root=tmp_path / "rec")
    settings = IntakeSettings(
        device_id="gw-test",
        storage_root=tmp_path / "rec",
        quarantine_dir=tmp_path / "quarantine",
        periods=NOTICE_PERIODS,
        fsync=False,
    )
    return cat, settings


def adopt(
    cat: Catalog,
    settings: IntakeSettings,
    name: str,
    *,
    start: datetime,
    purpose: Purpose,
    location: str = "gate",
    anonymized: bool = False,
) -> Recording:
    src = settings.storage_root.parent / "drop" / f"{name}.mkv"
    src.parent.mkdir(parents=True, exist_ok=True)
    make_video(src, container="mkv", seconds=0.4, creation_time=start)
    origin = Origin(location, Site.PREMISES, False, True, purpose, anonymized=anonymized)
    res = Intake(cat, settings).adopt(src, origin, NOW)
    assert res.recording is not None, res.reason
    return res.recording
