"""``edge-agent report holdings`` through the real CLI over real media and catalog."""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.core.model import Purpose
from tests.support.cli import CliRunner
from tests.support.exportenv import at, make_device


def test_holdings_show_recordings_derivatives_holds_and_restrictions(
    tmp_path: Path, cli: CliRunner
) -> None:
    dev = make_device(tmp_path / "dev")
    sec = dev.adopt("s", minute=0, seconds=1.0)
    anon = dev.adopt("a", minute=0, seconds=1.0, purpose=Purpose.MARKETING, anonymized=True)
    later = dev.adopt("l", minute=10)
    restricted = dev.adopt("r", minute=0, seconds=1.0, purpose=Purpose.RND)
    cfg = str(dev.config)
    hold = cli(
        "hold", "add", "--config", cfg, "--kind", "incident", "--reason", "theft at the gate",
        "--by", "dpo", "--recording", sec.id, "--json",
    )  # fmt: skip
    assert hold.returncode == 0, hold.stderr
    erase = cli(
        "erase", "--config", cfg, "--location", "gate", "--from", at(0), "--to", at(0.02),
        "--request-ref", "DSR-9", "--restrict", "--json",
    )  # fmt: skip
    assert erase.returncode == 0, erase.stderr
    assert json.loads(erase.stdout)["touched_count"] == 3  # a restriction is not stopped by holds

    res = cli(
        "report", "holdings", "--config", cfg, "--location", "gate", "--at", at(0.01), "--json"
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    ids = {r["id"]: r for r in doc["recordings"]}
    assert set(ids) == {sec.id, restricted.id} and later.id not in res.stdout
    assert [r["id"] for r in doc["derivatives"]] == [anon.id]
    # Restricted footage is hidden everywhere else; the DPO must still see it here.
    assert {r["state"] for r in [*doc["recordings"], *doc["derivatives"]]} == {"restricted"}
    assert ids[restricted.id]["purpose"] == "rnd" and ids[restricted.id]["deadline"]
    assert ids[sec.id]["held_by"] and "kept while held" in ids[sec.id]["goes"]
    assert [h["reason"] for h in doc["holds"]] == ["theft at the gate"]
    assert [r["request_ref"] for r in doc["restrictions"]] == ["DSR-9"]

    table = cli("report", "holdings", "--config", cfg, "--location", "gate", "--at", at(0.01))
    assert table.returncode == 0 and "restrictions: 1" in table.stdout and "DSR-9" in table.stdout
    none = cli(
        "report", "holdings", "--config", cfg, "--location", "gate", "--at", at(30), "--json"
    )
    assert json.loads(none.stdout)["recordings"] == []
    bad = cli("report", "holdings", "--config", cfg, "--location", "nowhere", "--at", at(0))
    assert bad.returncode == 2
