"""Rights outlive the config: footage of a location removed from the config keeps its rules.

Footage is made in ``old-lab`` (R&D, kept 6 months), then the room is
decommissioned and removed from the config. Erase, restrict, hold and
recordings list still accept it; the janitor still deletes it at its
deadline; config check, doctor, status, a reload and telemetry say so.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.core.location_drift import LocationFootage, location_drift
from edge_agent.core.model import Purpose, RecState, Site
from edge_agent.store.catalog import Catalog
from tests.support.cli import CliRunner
from tests.support.retention import NOW, adopt, env

T = datetime(2026, 6, 1, tzinfo=UTC)


def _config(tmp_path: Path, *, with_old_lab: bool, old_lab_kind: str = "premises") -> Path:
    cfg = tmp_path / "config.toml"
    old = (
        f'[[locations]]\nid = "old-lab"\nkind = "{old_lab_kind}"\nsignage = true\n'
        if with_old_lab
        else ""
    )
    cfg.write_text(
        f"""
[device]
id = "gw-test"
hw_profile = "generic-linux"
[storage]
root = "{tmp_path / "rec"}"
catalog = "{tmp_path / "catalog.db"}"
free_space_floor = "1MiB"
[[locations]]
id = "gate"
kind = "premises"
signage = true
{old}""",
        encoding="utf-8",
    )
    return cfg


def _footage(tmp_path: Path) -> tuple[str, str]:
    cat, settings = env(tmp_path)
    recent = adopt(
        cat, settings, "lab", start=NOW - timedelta(hours=1), purpose=Purpose.RND,
        location="old-lab",
    ).id  # fmt: skip
    # Made 7 months ago: past its 6-month deadline.
    due = adopt(
        cat, settings, "lab-old", start=NOW - timedelta(days=214), purpose=Purpose.RND,
        location="old-lab",
    ).id  # fmt: skip
    cat.close()
    return recent, due


# -- the pure rule ---------------------------------------------------------------------


def test_removed_changed_and_unchanged_locations() -> None:
    rows = [
        LocationFootage("old-lab", Site.PREMISES, False, 3, T, 1),
        LocationFootage("gate", Site.PREMISES, False, 5, T),
        LocationFootage("yard", Site.PREMISES, False, 2, T),
        LocationFootage("booth", Site.PREMISES, True, 4, T),
    ]
    configured = {
        "gate": (Site.PREMISES, False),
        "yard": (Site.EXTERNAL, False),
        "booth": (Site.PREMISES, False),
    }
    found = {(d.location, d.kind): d for d in location_drift(configured, rows)}
    assert set(found) == {
        ("old-lab", "removed"),
        ("yard", "kind_changed"),
        ("booth", "audio_changed"),
    }
    removed = found[("old-lab", "removed")]
    assert removed.count == 3 and removed.undated == 1
    assert "3 recording(s)" in removed.message and "2026-06-01T00:00:00Z" in removed.message
    assert "keep the tags and deadlines" in found[("yard", "kind_changed")].message
    assert (
        location_drift(configured, [LocationFootage("gate", Site.PREMISES, False, 0, None)]) == []
    )


# -- through the real CLI --------------------------------------------------------------


def test_removed_location_keeps_its_rights(tmp_path: Path, cli: CliRunner) -> None:
    recent, due = _footage(tmp_path)
    cfg = _config(tmp_path, with_old_lab=False)
    c = ("--config", str(cfg))

    r = cli("config", "check", *c)
    assert r.returncode == 0, r.stderr
    assert "'old-lab' is no longer configured but holds 2 recording(s)" in r.stderr
    assert "the last deadline is" in r.stderr

    r = cli("doctor", *c, "--json")
    checks = json.loads(r.stdout)["checks"]
    assert any(ch["name"] == "locations" and "old-lab" in ch["detail"] for ch in checks), checks

    r = cli("recordings", "list", *c, "--location", "old-lab", "--json")
    assert r.returncode == 0, r.stderr
    assert {x["id"] for x in json.loads(r.stdout)} >= {recent, due}

    frm = (NOW - timedelta(hours=2)).isoformat()
    to = NOW.isoformat()
    r = cli("hold", "add", *c, "--location", "old-lab", "--from", frm, "--to", to,
            "--kind", "incident", "--reason", "case 4", "--by", "dpo", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    hold_id = json.loads(r.stdout)["id"]
    r = cli("hold", "release", *c, hold_id, "--reason", "closed", "--by", "dpo")
    assert r.returncode == 0, r.stderr

    r = cli("erase", *c, "--location", "old-lab", "--from", frm, "--to", to,
            "--request-ref", "DSR-9", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    receipt = json.loads(r.stdout)
    assert receipt["status"] == "done"
    assert [x["id"] for x in receipt["touched"]] == [recent]

    r = cli("erase", *c, "--location", "nowhere", "--from", frm, "--to", to,
            "--request-ref", "DSR-10")  # fmt: skip
    assert r.returncode == 2 and "known: gate, old-lab" in r.stderr

    r = cli("retention", "sweep", *c, "--json")
    assert r.returncode == 0, r.stderr
    assert due in json.loads(r.stdout)["deleted_ids"]
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test", storage_root=tmp_path / "rec")
    try:
        for rid in (recent, due):
            assert cat.recordings.get(rid).state is RecState.DELETED  # type: ignore[union-attr]
    finally:
        cat.close()
    r = cli("audit", "verify", *c)
    assert r.returncode == 0, r.stdout + r.stderr


def test_kind_change_keeps_the_recorded_deadline(tmp_path: Path, cli: CliRunner) -> None:
    recent, _ = _footage(tmp_path)
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test", storage_root=tmp_path / "rec")
    before = cat.recordings.get(recent).deadline  # type: ignore[union-attr]
    cat.close()
    cfg = _config(tmp_path, with_old_lab=True, old_lab_kind="external")
    r = cli("config", "check", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "'old-lab' is now external but 2 recording(s) were made as premises" in r.stderr
    r = cli("retention", "sweep", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test", storage_root=tmp_path / "rec")
    try:
        rec = cat.recordings.get(recent)
        assert rec is not None and rec.deadline == before  # 6 months, not recomputed to 2
        assert rec.state is RecState.ACTIVE
    finally:
        cat.close()


# -- a running agent, reloaded --------------------------------------------------------


async def test_reload_that_removes_a_location_warns_and_keeps_commands_working(
    tmp_path: Path,
) -> None:
    from edge_agent.app.daemon import Agent
    from edge_agent.config.config import load_config
    from edge_agent.core.clock import FakeClock
    from edge_agent.store.catalog import open_catalog_from_config

    _footage(tmp_path)
    path = _config(tmp_path, with_old_lab=True)
    cfg = load_config(path)
    catalog = await asyncio.to_thread(open_catalog_from_config, cfg)
    agent = Agent(cfg, catalog, clock=FakeClock(datetime.now(UTC), synced=True))
    try:
        await agent.recover()
        assert agent.gatherer.location_drift == ()
        _config(tmp_path, with_old_lab=False)  # the installer decommissions the room
        doc = await agent.reloader.reload()
        assert doc["reloaded"], doc
        drift = agent.gatherer.location_drift
        assert [d["location"] for d in drift] == ["old-lab"] and drift[0]["count"] == 2
        snap = await asyncio.to_thread(agent.gatherer.gather, datetime.now(UTC))
        from edge_agent.comms.telemetry import build_telemetry

        payload = build_telemetry(snap).model_dump(mode="json")
        assert payload["retention"]["location_drift"][0]["kind"] == "removed"
    finally:
        catalog.close()
