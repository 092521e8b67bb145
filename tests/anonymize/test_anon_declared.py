"""The old flag (docs/anonymization.md, "declared anonymized"): ``anonymized =
true`` on a source or watch, or ``ingest --anonymized``, needs a written
reason; the reason is stored on the row, audited, and telemetry counts declared
footage apart from verified derivatives. Real config, real CLI, real catalog.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.app.settings import make_gatherer
from edge_agent.comms.telemetry import build_telemetry
from edge_agent.config.config import ConfigError, load_config
from edge_agent.core.model import utcnow
from edge_agent.store.catalog import open_catalog_from_config
from tests.support.mediagen import make_video

EDGE = [sys.executable, "-c", "from edge_agent.cli import main; raise SystemExit(main())"]
BASE = """
[device]
id = "gw-decl-01"
hw_profile = "generic-linux"
[storage]
root = "{root}"
catalog = "{catalog}"
[[locations]]
id = "gate"
kind = "premises"
signage = true
"""


def _config(tmp: Path, extra: str = "") -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text(
        BASE.format(root=tmp / "recordings", catalog=tmp / "catalog.db") + extra, encoding="utf-8"
    )
    return cfg


def _problems(tmp: Path, extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp, extra))
    return str(info.value)


def test_config_needs_a_reason_for_anonymized(tmp_path: Path) -> None:
    watch = f'[[watch]]\npath = "{tmp_path}/drop"\nlocation = "gate"\npurpose = "rnd"\n'
    assert "anonymized = true needs anonymized_reason" in _problems(
        tmp_path, watch + "anonymized = true\n"
    )
    assert "anonymized_reason is only for anonymized = true" in _problems(
        tmp_path, watch + 'anonymized_reason = "a thermal counting sensor"\n'
    )
    cfg = load_config(
        _config(tmp_path, watch + 'anonymized = true\nanonymized_reason = "thermal sensor"\n')
    )
    assert cfg.watch[0].anonymized_reason == "thermal sensor"


def test_ingest_declared_anonymized_stores_and_audits_the_reason(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    clip = make_video(tmp_path / "thermal.mp4", seconds=1.0)
    base = [*EDGE, "ingest", "--config", str(cfg), "--location", "gate", "--purpose", "rnd"]
    bare = subprocess.run([*base, "--anonymized", str(clip)], capture_output=True, text=True)
    assert bare.returncode == 2 and "--anonymized-reason" in bare.stderr
    assert clip.exists()  # refused before anything was touched

    reason = "thermal people counter: silhouettes only, no faces or plates"
    ok = subprocess.run(
        [*base, "--anonymized", "--anonymized-reason", reason, str(clip), "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    con = sqlite3.connect(tmp_path / "catalog.db")
    anon, stored, deadline = con.execute(
        "SELECT anonymized, anonymized_reason, deadline FROM recordings"
    ).fetchone()
    (data,) = con.execute("SELECT data FROM audit WHERE action = 'recording.added'").fetchone()
    con.close()
    assert (anon, stored, deadline) == (1, reason, None)
    assert json.loads(data)["anonymized_reason"] == reason

    config = load_config(cfg)
    with open_catalog_from_config(config) as cat:
        doc = build_telemetry(make_gatherer(config, cat).gather(utcnow())).model_dump()
    assert doc["anonymized"] == {"verified": 0, "unverified": 0, "declared": 1}
