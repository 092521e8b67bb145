"""Reconcile and rebuild with real tagged media: re-adopt, missing, partials, half rule."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from edge_agent.app.reconcile import rebuild, reconcile
from edge_agent.core.model import Purpose, RecState
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from tests.support.mediagen import make_video
from tests.support.recordings import MakeRecording, intake_settings
from tests.support.retention import NOW, adopt, env


def _old(p: Path) -> None:
    t = time.time() - 3600
    os.utime(p, (t, t))


def test_reconcile_readopts_marks_missing_and_cleans_partials(
    tmp_path: Path, catalog: Catalog, make_recording: MakeRecording
) -> None:
    settings = intake_settings(tmp_path)
    root = settings.storage_root
    recs = [
        make_recording(f"c{i}", start=NOW - timedelta(hours=i + 1), purpose=Purpose.RND)
        for i in range(6)
    ]
    # One row lost (file stays), one file lost (row stays).
    catalog.execute("DELETE FROM recordings WHERE id = ?", (recs[0].id,))
    (root / recs[1].path).unlink()
    untagged = root / "2026" / "stray.mkv"
    make_video(untagged, container="mkv", seconds=0.3)
    partial = root / (recs[2].path + ".x")
    partial = partial.with_name(".partial-abandoned.mkv")
    partial.write_bytes(b"half")
    for p in (root / recs[0].path, untagged, partial):
        _old(p)

    dry = reconcile(catalog, root, settings, dry_run=True, force=False, now=NOW)
    assert [r["id"] for r in dry.readopted] == [recs[0].id]
    assert [r["id"] for r in dry.missing] == [recs[1].id]
    assert catalog.recordings.get(recs[0].id) is None and partial.exists()

    rep = reconcile(catalog, root, settings, dry_run=False, force=False, now=NOW)
    assert rep.refused is None
    back = catalog.recordings.get(recs[0].id)
    assert back is not None and back.tags == recs[0].tags and back.deadline == recs[0].deadline
    assert catalog.recordings.get(recs[1].id).state is RecState.MISSING  # type: ignore[union-attr]
    assert rep.untagged == ["2026/stray.mkv"] and untagged.exists()
    assert not partial.exists()
    actions = [e["action"] for e in AuditLog(catalog).export()]
    assert "recording.readopted" in actions and "recording.missing" in actions
    types = [r[0] for r in catalog.query("SELECT type FROM outbox")]
    assert "recording.missing" in types
    assert AuditLog(catalog).verify().ok


def test_reconcile_refuses_when_half_the_catalog_would_change(
    tmp_path: Path, catalog: Catalog, make_recording: MakeRecording
) -> None:
    settings = intake_settings(tmp_path)
    root = settings.storage_root
    recs = [
        make_recording(f"c{i}", start=NOW - timedelta(hours=i + 1), purpose=Purpose.RND)
        for i in range(4)
    ]
    for r in recs[:3]:
        (root / r.path).unlink()
    rep = reconcile(catalog, root, settings, dry_run=False, force=False, now=NOW)
    assert rep.refused and "--force" in rep.refused
    assert catalog.recordings.counts()[RecState.MISSING] == 0
    rep = reconcile(catalog, root, settings, dry_run=False, force=True, now=NOW)
    assert rep.refused is None and catalog.recordings.counts()[RecState.MISSING] == 3


def test_rebuild_keeps_old_catalog_and_holds(tmp_path: Path) -> None:
    from edge_agent.core.model import HoldKind
    from edge_agent.retention.holds import place_hold

    cat, settings = env(tmp_path)
    recs = [
        adopt(cat, settings, f"c{i}", start=NOW - timedelta(hours=i + 1), purpose=Purpose.SECURITY)
        for i in range(3)
    ]
    hold = place_hold(cat, kind=HoldKind.INCIDENT, reason="x", by="a", now=NOW,
                      recording_ids=[recs[0].id])  # fmt: skip
    cat.close()
    rep = rebuild(tmp_path / "catalog.db", settings.storage_root, settings, now=NOW)
    assert rep.recordings == 3 and rep.holds_recovered == 1
    assert any(".lost-" in p for p in rep.moved_aside)
    assert all(Path(p).exists() for p in rep.moved_aside)
    cat, _ = env(tmp_path)
    assert cat.holds.get(hold.id) is not None
    assert {r.id for r in cat.recordings.list()} == {r.id for r in recs}
    assert AuditLog(cat).verify().ok
