"""hold / erase / retention / reconcile / catalog rebuild through the real command line."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from edge_agent.core.model import Purpose, RecState
from edge_agent.store.catalog import Catalog
from tests.support.cli import CliRunner
from tests.support.retention import NOW, adopt, env


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, list[str]]:
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

[[locations]]
id = "gate"
kind = "premises"
audio_room = false
signage = true

[[locations]]
id = "lab"
kind = "premises"
audio_room = false
signage = true
""",
        encoding="utf-8",
    )
    cat, settings = env(tmp_path)
    ids = [
        adopt(cat, settings, "old", start=NOW - timedelta(days=4), purpose=Purpose.SECURITY).id,
        adopt(cat, settings, "new", start=NOW - timedelta(hours=2), purpose=Purpose.SECURITY).id,
    ]
    cat.close()
    return cfg, ids


def test_hold_erase_plan_sweep(
    site: tuple[Path, list[str]], tmp_path: Path, cli: CliRunner
) -> None:
    cfg, (old, new) = site
    c = ("--config", str(cfg))
    frm, to = (NOW - timedelta(hours=3)).isoformat(), NOW.isoformat()

    r = cli("hold", "add", *c, "--location", "nowhere", "--from", frm, "--to", to,
            "--kind", "incident", "--reason", "x", "--by", "a")  # fmt: skip
    assert r.returncode == 2 and "known: gate, lab" in r.stderr
    r = cli("hold", "add", *c, "--location", "gate", "--from", frm, "--to", to,
            "--kind", "incident", "--reason", "case 9", "--by", "dpo", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    hold_id = json.loads(r.stdout)["id"]
    r = cli("hold", "list", *c, "--json")
    assert [h["id"] for h in json.loads(r.stdout)] == [hold_id]

    r = cli("erase", *c, "--location", "gate", "--from", frm, "--to", to,
            "--request-ref", "DSR-9", "--json")  # fmt: skip
    assert r.returncode == 1 and json.loads(r.stdout)["blocking_holds"] == [hold_id]
    r = cli("erase", *c, "--location", "gate", "--from", frm, "--to", to, "--request-ref", "DSR-9")
    assert r.returncode == 1 and hold_id in r.stderr and "blocked" in r.stdout

    r = cli("retention", "plan", *c, "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [d["id"] for d in plan["would_delete"]] == [old] and plan["clock"] == "trusted"
    r = cli("retention", "plan", *c, "--at", (NOW + timedelta(days=3)).isoformat(), "--json")
    plan = json.loads(r.stdout)
    assert plan["kept_by_hold"] == [{"id": new, "holds": [hold_id]}]

    r = cli("retention", "sweep", *c, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["deleted_ids"] == [old]

    r = cli("hold", "release", *c, hold_id, "--by", "dpo", "--reason", "closed")
    assert r.returncode == 0, r.stderr
    r = cli("erase", *c, "--location", "gate", "--from", frm, "--to", to,
            "--request-ref", "DSR-9", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [t["id"] for t in json.loads(r.stdout)["touched"]] == [new]
    with Catalog.open(
        tmp_path / "catalog.db", device_id="gw-test", storage_root=tmp_path / "rec"
    ) as cat:
        assert cat.recordings.get(new).state is RecState.DELETED  # type: ignore[union-attr]


def test_reconcile_rebuild_and_wrong_disk(
    site: tuple[Path, list[str]], tmp_path: Path, cli: CliRunner
) -> None:
    cfg, _ = site
    c = ("--config", str(cfg))
    r = cli("reconcile", *c, "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["changes"] == 0
    (tmp_path / "catalog.db").unlink()
    r = cli("catalog", "rebuild", *c, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["recordings"] == 2
    # Another disk under the same root: the catalog refuses, the CLI says so.
    marker = tmp_path / "rec" / ".edge-agent-storage"
    marker.write_text(json.dumps({"storage_id": "other", "device_id": "gw-test"}))
    r = cli("retention", "sweep", *c)
    assert r.returncode == 1 and "catalog does not match this disk" in r.stderr
    assert all(p.exists() for p in (tmp_path / "rec").rglob("*.mkv"))
