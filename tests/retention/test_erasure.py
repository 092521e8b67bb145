"""Data-subject requests over real, tagged media: erase, restrict, dry run, holds."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from edge_agent.core.model import EraseRequest, HoldKind, Purpose, RecState, RequestMode
from edge_agent.retention.erasure import execute_request
from edge_agent.retention.holds import place_hold, release_hold
from edge_agent.store.audit import AuditLog
from tests.support.retention import NOW, adopt, env

T = NOW - timedelta(hours=6)


def _setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    cat, settings = env(tmp_path)
    spec = {
        "before": (-10, Purpose.SECURITY, "gate"),
        "inside": (5, Purpose.SECURITY, "gate"),
        "edge": (30, Purpose.RND, "gate"),
        "after": (40, Purpose.SECURITY, "gate"),
        "other": (5, Purpose.SECURITY, "lab"),
    }
    recs = {
        name: adopt(cat, settings, name, start=T + timedelta(minutes=m), purpose=p, location=loc)
        for name, (m, p, loc) in spec.items()
    }
    req = EraseRequest("DSR-1", "gate", T, T + timedelta(minutes=30))
    return cat, settings, recs, req


def test_erase_deletes_exactly_the_overlapping_recordings_at_that_location(tmp_path: Path) -> None:
    cat, settings, recs, req = _setup(tmp_path)
    root = settings.storage_root
    dry = execute_request(cat, root, req, dry_run=True, actor="dpo", now=NOW)
    expected = [recs["inside"].id, recs["edge"].id]  # "edge" starts exactly at the window end
    assert [t["id"] for t in dry.touched] == expected
    assert all((root / r.path).exists() for r in recs.values())
    receipt = execute_request(cat, root, req, dry_run=False, actor="dpo", now=NOW)
    assert [t["id"] for t in receipt.touched] == expected and receipt.status == "done"
    for name, r in recs.items():
        gone = r.id in expected
        assert (root / r.path).exists() is not gone, name
        assert cat.recordings.get(r.id).state is (RecState.DELETED if gone else RecState.ACTIVE)  # type: ignore[union-attr]
    stored = cat.requests.list(ref="DSR-1")
    assert [s.dry_run for s in stored] == [True, False]
    assert stored[1].receipt == json.loads(json.dumps(receipt.as_dict()))
    actions = [e["action"] for e in AuditLog(cat).export()]
    assert actions.count("recording.deleted") == 2 and "erase.done" in actions
    assert "erase.previewed" in actions
    types = [r[0] for r in cat.query("SELECT type FROM outbox")]
    assert types.count("recording.deleted") == 2 and types.count("erase.done") == 1
    assert AuditLog(cat).verify().ok


def test_erase_that_meets_a_hold_stops_and_names_it(tmp_path: Path) -> None:
    cat, settings, recs, req = _setup(tmp_path)
    hold = place_hold(cat, kind=HoldKind.INCIDENT, reason="police", by="dpo", now=NOW,
                      recording_ids=[recs["edge"].id])  # fmt: skip
    receipt = execute_request(cat, settings.storage_root, req, dry_run=False, actor="dpo", now=NOW)
    assert receipt.blocked and receipt.blocking_holds == (hold.id,)
    assert hold.id in (receipt.reason or "") and receipt.touched == ()
    assert receipt.as_dict()["held"] == [{"id": recs["edge"].id, "holds": [hold.id]}]
    assert all((settings.storage_root / r.path).exists() for r in recs.values())
    assert cat.recordings.counts()[RecState.DELETED] == 0
    release_hold(cat, hold.id, by="dpo", reason="released for erasure", now=NOW)
    receipt = execute_request(cat, settings.storage_root, req, dry_run=False, actor="dpo", now=NOW)
    assert not receipt.blocked and len(receipt.touched) == 2


def test_restrict_marks_recordings_restricted(tmp_path: Path) -> None:
    cat, settings, recs, req = _setup(tmp_path)
    req = EraseRequest(req.ref, req.location, req.start, req.end, RequestMode.RESTRICT)
    hold = place_hold(cat, kind=HoldKind.INCIDENT, reason="police", by="dpo", now=NOW,
                      recording_ids=[recs["edge"].id])  # fmt: skip
    receipt = execute_request(cat, settings.storage_root, req, dry_run=False, actor="dpo", now=NOW)
    assert not receipt.blocked and [t["id"] for t in receipt.touched] == [
        recs["inside"].id,
        recs["edge"].id,
    ]
    assert receipt.as_dict()["held"][0]["holds"] == [hold.id]
    for r in (recs["inside"], recs["edge"]):
        assert cat.recordings.get(r.id).state is RecState.RESTRICTED  # type: ignore[union-attr]
        assert (settings.storage_root / r.path).exists()
    assert [x.id for x in cat.recordings.list(location="gate")] == [
        recs["before"].id,
        recs["after"].id,
    ]
    types = [r[0] for r in cat.query("SELECT type FROM outbox")]
    assert types.count("recording.restricted") == 2 and "restrict.done" in types
    # Erasing restricted footage later still works.
    erase = EraseRequest("DSR-2", "gate", req.start, req.end)
    hold_id = hold.id
    release_hold(cat, hold_id, by="dpo", reason="done", now=NOW)
    receipt = execute_request(
        cat, settings.storage_root, erase, dry_run=False, actor="dpo", now=NOW
    )
    assert len(receipt.touched) == 2
