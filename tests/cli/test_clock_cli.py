"""``edge-agent clock show|accept`` through the real command line.

The test machine's clock cannot be stepped, so the step is made the other way
round: the guard's stored reference is moved two hours back, which is what the
catalog holds after the wall clock jumped two hours forward within this boot.
adjtimex is off (``kernel_flag = false``, as under ProtectClock=yes).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

from edge_agent.core.model import Purpose, RecState
from edge_agent.store.catalog import Catalog
from tests.support.cli import CliRunner
from tests.support.clockstep import step_forward
from tests.support.retention import NOW, adopt, env


def _site(tmp_path: Path) -> tuple[Path, str]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"""
[device]
id = "gw-test"
hw_profile = "generic-linux"
[storage]
root = "{tmp_path / "rec"}"
catalog = "{tmp_path / "catalog.db"}"
free_space_floor = "1MiB"
[clock]
kernel_flag = false
chronyc = ""
timesync_flag = "{tmp_path / "no-timesyncd"}"
[[locations]]
id = "gate"
kind = "premises"
signage = true
""",
        encoding="utf-8",
    )
    cat, settings = env(tmp_path)
    rid = adopt(cat, settings, "old", start=NOW - timedelta(days=4), purpose=Purpose.SECURITY).id
    step_forward(cat, hours=2)
    cat.close()
    return cfg, rid


def test_clock_accept_resumes_deletion_and_is_audited(tmp_path: Path, cli: CliRunner) -> None:
    cfg, rid = _site(tmp_path)
    c = ("--config", str(cfg))
    r = cli("clock", "show", *c, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["clock"] == "untrusted" and "jumped" in doc["reason"]

    r = cli("retention", "sweep", *c, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["deleted_retention"] == 0  # due, but the clock is in doubt
    r = cli("status", *c, "--json")
    assert r.returncode == 1, r.stderr  # no daemon: "not running", never "online"
    doc = json.loads(r.stdout)
    assert doc["state"] == "not running"
    assert doc["telemetry"]["clock"]["state"] == "untrusted"
    assert doc["telemetry"]["clock"]["deletion_paused_since"] is not None
    assert any("clock untrusted" in reason for reason in doc["reasons"])

    r = cli("clock", "accept", *c, "--reason", "")
    assert r.returncode == 2 and "--reason" in r.stderr
    r = cli("clock", "accept", *c, "--reason", "checked against the GPS clock", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["clock"] == "trusted"
    r = cli("status", *c)
    assert "clock      trusted" in r.stdout and "evidence: confirmed on site by" in r.stdout

    time.sleep(0.1)
    r = cli("retention", "sweep", *c, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["deleted_ids"] == [rid]
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test", storage_root=tmp_path / "rec")
    try:
        assert cat.recordings.get(rid).state is RecState.DELETED  # type: ignore[union-attr]
    finally:
        cat.close()
    r = cli("audit", "export", *c)
    entries = [json.loads(line) for line in r.stdout.splitlines()]
    step = [e for e in entries if e["action"] == "clock.step_accepted"]
    assert len(step) == 1
    assert step[0]["actor"].startswith("user:")
    assert step[0]["data"]["reason"] == "checked against the GPS clock"
    assert abs(step[0]["data"]["step_s"] - 7200) < 60
    r = cli("audit", "verify", *c)
    assert r.returncode == 0, r.stdout + r.stderr
