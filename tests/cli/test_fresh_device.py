"""Writing commands work on a provisioned device whose daemon has never run.

Reading commands still refuse to create a catalog (docs/operator-guide.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import CliRunner
from tests.support.cli import run_cli as _cli


def _provision(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "rec").mkdir()
    out = _cli(
        "provision",
        "--profile",
        "generic-linux",
        "--device-id",
        "gw-fresh-01",
        "--broker",
        "mqtt://127.0.0.1:1883",
        "--location",
        "gate:premises:signage",
        "--source",
        "cam:testsrc://?size=320x240:gate:security",
        "--storage-root",
        str(tmp_path / "rec"),
        "--catalog",
        str(tmp_path / "state" / "catalog.db"),
        "--out",
        str(tmp_path / "etc" / "config.toml"),
    )
    assert out.returncode == 0, out.stderr
    return tmp_path / "etc" / "config.toml"


def test_reading_commands_do_not_create_a_catalog(tmp_path: Path, cli: CliRunner) -> None:
    cfg = _provision(tmp_path)
    for args in (("recordings", "list"), ("hold", "list"), ("retention", "plan")):
        out = cli(*args, "--config", str(cfg))
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert "no catalog" in out.stderr
    dry = cli(
        "erase",
        "--config",
        str(cfg),
        "--location",
        "gate",
        "--from",
        "2026-12-01T00:00:00Z",
        "--to",
        "2026-12-01T01:00:00Z",
        "--request-ref",
        "DSR-1",
        "--dry-run",
    )
    assert dry.returncode == 1 and "no catalog" in dry.stderr
    st = cli("status", "--config", str(cfg), "--json")
    assert st.returncode == 1, st.stderr
    doc = json.loads(st.stdout)
    assert doc["state"] == "not running" and any("no catalog yet" in r for r in doc["reasons"])
    assert not (tmp_path / "state" / "catalog.db").exists()
    assert not (tmp_path / "rec" / ".edge-agent-storage").exists()


def test_hold_and_erase_work_before_the_first_start(tmp_path: Path, cli: CliRunner) -> None:
    cfg = _provision(tmp_path)
    hold = cli(
        "hold",
        "add",
        "--config",
        str(cfg),
        "--location",
        "gate",
        "--from",
        "2026-12-01T00:00:00Z",
        "--to",
        "2026-12-02T00:00:00Z",
        "--kind",
        "incident",
        "--reason",
        "theft report 117",
        "--by",
        "installer",
        "--json",
    )
    assert hold.returncode == 0, hold.stderr
    assert json.loads(hold.stdout)["location"] == "gate"
    erase = cli(
        "erase",
        "--config",
        str(cfg),
        "--location",
        "gate",
        "--from",
        "2026-11-01T00:00:00Z",
        "--to",
        "2026-11-01T01:00:00Z",
        "--request-ref",
        "DSR-2",
        "--json",
    )
    assert erase.returncode == 0, erase.stderr
    listed = cli("hold", "list", "--config", str(cfg), "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1
    audit = cli("audit", "verify", "--config", str(cfg))
    assert audit.returncode == 0, audit.stdout + audit.stderr
