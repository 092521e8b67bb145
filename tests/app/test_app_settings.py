"""app/settings.py: the one place a config becomes the components' settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from edge_agent.app.settings import (
    clockguard_settings,
    janitor_settings,
    load_trusted_keys,
    mqtt_settings,
)
from edge_agent.config.config import Config, ConfigError, parse_config
from edge_agent.core.clock import FakeClock
from edge_agent.core.model import utcnow
from edge_agent.retention.janitor import Janitor
from edge_agent.store.catalog import open_catalog_from_config


def _config(tmp_path: Path, extra: str = "") -> Config:
    return parse_config(
        f"""
[device]
id = "gw-set"
hw_profile = "generic-linux"
[storage]
root = "{tmp_path / "rec"}"
catalog = "{tmp_path / "catalog.db"}"
free_space_floor = "5%"
[clock]
kernel_flag = false
chronyc = ""
timesync_flag = "{tmp_path / "synced"}"
untrusted_alarm_after_seconds = 90
command_tolerance_seconds = 30
{extra}[[locations]]
id = "gate"
kind = "premises"
signage = true
""",
        tmp_path,
        check_files=False,
    )


def test_janitor_and_clock_guard_settings_carry_the_config(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    g = clockguard_settings(cfg)
    assert g.sources.chronyc is None  # "" turns chrony off
    assert g.sources.timesyncd_flag == tmp_path / "synced"
    assert g.alarm_after == timedelta(seconds=90)
    assert g.command_tolerance == timedelta(seconds=30)
    assert g.periods == cfg.retention_periods()
    j = janitor_settings(cfg)
    assert j.guard == g and not j.kernel_flag
    assert j.storage_root == cfg.storage.root and j.quarantine_dir == cfg.quarantine_dir
    assert j.free_space_floor.bytes_for(1000) == cfg.free_space_floor_bytes(1000) == 50


def test_a_janitor_from_settings_uses_them(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    cat = open_catalog_from_config(cfg)
    try:
        clock = FakeClock(utcnow(), synced=True)
        janitor = Janitor.from_settings(janitor_settings(cfg), cat, clock=clock)
        assert janitor.guard.clock is clock
        assert janitor.floor_bytes(2000) == 100
        assert janitor.storage_root == cfg.storage.root
    finally:
        cat.close()


def test_mqtt_settings_read_the_password_file_and_say_why_not(tmp_path: Path) -> None:
    mqtt = '[mqtt]\nurl = "mqtt://broker.local:1884"\nusername = "gw"\npassword_file = "mqtt.pw"\n'
    cfg = _config(tmp_path, mqtt)
    with pytest.raises(ValueError, match=r"mqtt.password_file: cannot read .*mqtt.pw"):
        mqtt_settings(cfg)
    (tmp_path / "mqtt.pw").write_text("s3cret\n", encoding="utf-8")
    s = mqtt_settings(cfg)
    assert (s.host, s.port, s.client_id) == ("broker.local", 1884, "edge-agent-gw-set")
    assert s.username == "gw" and s.password == "s3cret"
    assert "s3cret" not in repr(s)
    with pytest.raises(ValueError, match=r"no \[mqtt\] section"):
        mqtt_settings(_config(tmp_path))


def test_an_unusable_trusted_key_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "central.pem"
    bad.write_text("not a key", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"commands.trusted_keys\[0\]: cannot use"):
        load_trusted_keys((bad,))
