"""Local-time file names: ``name_timezone`` on watches and sources, and doctor's warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.config.config import ConfigError, parse_config
from edge_agent.core.name_clock import advice, hour_offset
from edge_agent.core.policy import deadline
from edge_agent.intake.adopter import FolderAdopter, WatchSpec
from edge_agent.intake.intake import Intake, Outcome
from edge_agent.intake.runtime import intake_settings, origin_for_source, origin_for_watch
from edge_agent.store.catalog import Catalog
from tests.support.mediagen import make_video

PARIS_WATCH = """
[device]
id = "gw-tz"
hw_profile = "generic-linux"
[storage]
root = "rec"
catalog = "catalog.db"
[[locations]]
id = "gate"
kind = "premises"
signage = true
[[watch]]
path = "drop"
location = "gate"
purpose = "security"
{watch_extra}
[[sources]]
id = "cam"
url = "testsrc://"
location = "gate"
purpose = "security"
{source_extra}
"""


def config_text(watch_extra: str = "", source_extra: str = "") -> str:
    return PARIS_WATCH.format(watch_extra=watch_extra, source_extra=source_extra)


def test_name_timezone_is_validated_and_reaches_the_origin(tmp_path: Path) -> None:
    (tmp_path / "drop").mkdir()
    zone = 'name_timezone = "Europe/Paris"'
    cfg = parse_config(config_text(zone, 'name_timezone = "America/New_York"'), tmp_path)
    assert origin_for_watch(cfg, cfg.watch[0]).name_timezone == "Europe/Paris"
    assert origin_for_source(cfg, cfg.sources[0]).name_timezone == "America/New_York"
    plain = parse_config(config_text(), tmp_path)
    assert origin_for_watch(plain, plain.watch[0]).name_timezone is None
    with pytest.raises(ConfigError) as info:
        parse_config(config_text('name_timezone = "Paris"'), tmp_path)
    (line,) = info.value.problems
    assert line.startswith("watch[0].name_timezone") and "Europe/Paris" in line, line
    assert "remove name_timezone" in line


# Paris: CET (+1) in winter, CEST (+2) in summer; on 2026-10-25 02:00-03:00 happens twice.
CASES = [
    ("cam1_20260715_101500.mp4", datetime(2026, 7, 15, 8, 15, tzinfo=UTC)),  # summer
    ("cam1_20260115_101500.mp4", datetime(2026, 1, 15, 9, 15, tzinfo=UTC)),  # winter
    # The repeated hour: the earlier instant (still CEST), never the later one.
    ("cam1_20261025_023000.mp4", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
]


async def test_paris_names_adopted_through_a_watch_get_utc_starts_and_deadlines(
    tmp_path: Path,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    cfg = parse_config(config_text('name_timezone = "Europe/Paris"'), tmp_path)
    cat = Catalog.open(cfg.storage.catalog, device_id="gw-tz", storage_root=cfg.storage.root)
    try:
        intake = Intake(cat, intake_settings(cfg))
        for i, (name, _) in enumerate(CASES):  # distinct content: no duplicates
            make_video(drop / name, seconds=1 + 0.2 * i, size=(64, 48))
        spec = WatchSpec(drop, origin_for_watch(cfg, cfg.watch[0]), stable_seconds=0.1)
        adopter = FolderAdopter(spec, intake, now=lambda: datetime.now(UTC))
        results = await adopter.pass_once(force=True)
        assert [r.outcome for r in results] == [Outcome.ADOPTED] * 3, results
        recs = {r.tags.start: r for r in cat.recordings.list()}
        periods = cfg.retention_periods()
        for name, utc in CASES:
            rec = recs.get(utc)
            assert rec is not None, (name, sorted(recs))
            assert rec.tags.time_source.value == "recorder"
            want = deadline(rec.tags.purpose, rec.tags.site, False, utc, periods)
            assert rec.deadline == want, (name, rec.deadline, want)
    finally:
        cat.close()


def test_hour_offset_is_a_pure_decision() -> None:
    t = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    # Names in Paris winter time read as UTC: one hour ahead of mtimes (ends of 10 min files).
    pairs = [(t + timedelta(hours=1, minutes=10 * i), t + timedelta(minutes=10 * i + 10))
             for i in range(6)]  # fmt: skip
    assert hour_offset(pairs) == -1
    right = [(t + timedelta(minutes=10 * i), t + timedelta(minutes=10 * i + 10)) for i in range(6)]
    assert hour_offset(right) is None
    assert hour_offset(pairs[:2]) is None  # too few to say
    mixed = pairs[:3] + [(a, b + timedelta(hours=5)) for a, b in right[:3]]
    assert hour_offset(mixed) is None
    detail, fix = advice("/srv/dvr", -1, None)
    assert "1 h ahead of" in detail and "name_timezone" in fix


def test_doctor_warns_on_local_time_names_without_name_timezone(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (tmp_path / "rec").mkdir()
    # Files a Paris DVR wrote over the last hours: named in local time (CET), mtime = end.
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    for i in range(5):
        start = end - timedelta(minutes=15 * (i + 1))
        local = start + timedelta(hours=1)
        f = drop / f"cam1_{local:%Y%m%d_%H%M%S}.bin"
        f.write_bytes(b"x")
        mtime = (start + timedelta(minutes=15)).timestamp()
        os.utime(f, (mtime, mtime))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def names_check(text: str) -> list[dict[str, str]]:
        cfg = tmp_path / "config.toml"
        cfg.write_text(text.replace("[[sources]]", "[[sourcesX]]").split("[[sourcesX]]")[0])
        out = subprocess.run(
            [sys.executable, "-m", "edge_agent", "doctor", "--config", str(cfg), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        checks: list[dict[str, str]] = json.loads(out.stdout)["checks"]
        return [c for c in checks if c["name"] == "watch names"]

    (warned,) = names_check(config_text())
    assert warned["level"] == "WARN" and "1 h ahead of" in warned["detail"], warned
    assert 'name_timezone = "' in warned["fix"]
    # The same names read in the right zone (a fixed UTC+1, whatever the season): quiet.
    assert names_check(config_text('name_timezone = "Etc/GMT-1"')) == []
