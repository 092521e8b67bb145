"""Requests outlive their moment (issue 12, item 7): an erase or restrict stays in
force for its window, so footage catalogued later is erased or restricted as it
arrives, audited against the same request reference."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.core.model import (
    NOTICE_PERIODS,
    POLICY_VERSION,
    EraseRequest,
    Hold,
    HoldKind,
    Purpose,
    Recording,
    RecState,
    RequestMode,
    Site,
    Tags,
    TimeSource,
)
from edge_agent.intake.intake import PARTIAL_PREFIX, Intake, IntakeSettings, Origin, Outcome
from edge_agent.media import media
from edge_agent.retention.erasure import execute_request, standing_verdict
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import STORAGE_MARKER, Catalog
from edge_agent.store.outbox_store import Outbox
from tests.support.mediagen import make_video

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
GATE = Origin(
    location="gate", site=Site.PREMISES, audio_room=False, signage=True, purpose=Purpose.SECURITY
)


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[tuple[Intake, Catalog, Path, Path]]:
    root = tmp_path / "recordings"
    root.mkdir()
    drop = tmp_path / "drop"
    drop.mkdir()
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test-01", storage_root=root)
    settings = IntakeSettings(
        device_id="gw-test-01",
        storage_root=root,
        quarantine_dir=tmp_path / "quarantine",
        periods=NOTICE_PERIODS,
        fsync=False,
    )
    yield Intake(cat, settings), cat, drop, root
    cat.close()


def request(cat: Catalog, root: Path, ref: str, mode: RequestMode, *, hours: int = 1) -> None:
    req = EraseRequest(ref, "gate", T0, T0 + timedelta(hours=hours), mode)
    receipt = execute_request(cat, root, req, dry_run=False, actor="dpo", now=NOW)
    assert receipt.status == "done" and receipt.matched == ()


def clip(drop: Path, name: str, start: datetime) -> Path:
    return make_video(drop / name, container="mkv", seconds=1, creation_time=start)


def stored(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name != STORAGE_MARKER]


def test_erase_in_force_erases_an_adopted_file_as_it_arrives(env) -> None:
    intake, cat, drop, root = env
    request(cat, root, "DSR-7", RequestMode.ERASE)
    src = clip(drop, "late.mkv", T0 + timedelta(minutes=10))
    outside = clip(drop, "after.mkv", T0 + timedelta(hours=2))

    result = intake.adopt(src, GATE, NOW)
    assert result.outcome is Outcome.ADOPTED
    assert result.recording is not None and result.recording.state is RecState.DELETED
    row = cat.recordings.get(result.recording.id)
    assert row is not None and row.state is RecState.DELETED
    assert not src.exists() and stored(root) == []

    log = list(AuditLog(cat).export())
    applied = [e for e in log if e["action"] == "erase.applied"]
    assert [e["subject"] for e in applied] == ["DSR-7"]
    assert applied[0]["data"]["recording_id"] == row.id
    deleted = [e for e in log if e["action"] == "recording.deleted"]
    assert len(deleted) == 1 and "DSR-7" in deleted[0]["data"]["detail"]
    # Never seen active: the adoption and the erase are one transaction, in order.
    actions = [e["action"] for e in log if e["subject"] in (row.id, "DSR-7")]
    assert actions[-3:] == ["recording.added", "erase.applied", "recording.deleted"]
    assert "recording.deleted" in [e.type for e in Outbox(cat).peek(1000)]

    # Outside the window nothing happens.
    other = intake.adopt(outside, GATE, NOW)
    assert other.recording is not None and other.recording.state is RecState.ACTIVE
    assert len(stored(root)) == 1


def test_restrict_in_force_restricts_an_adopted_file(env) -> None:
    intake, cat, drop, root = env
    request(cat, root, "DSR-8", RequestMode.RESTRICT)
    result = intake.adopt(clip(drop, "late.mkv", T0 + timedelta(minutes=5)), GATE, NOW)
    assert result.recording is not None
    row = cat.recordings.get(result.recording.id)
    assert row is not None and row.state is RecState.RESTRICTED
    assert result.recording.state is RecState.RESTRICTED
    entries = [e for e in AuditLog(cat).export() if e["action"] == "recording.restricted"]
    assert len(entries) == 1 and entries[0]["data"]["request_ref"] == "DSR-8"
    assert len(stored(root)) == 1


def test_erase_beats_restrict_and_a_hold_stops_the_erase(env) -> None:
    intake, cat, drop, root = env
    request(cat, root, "DSR-R", RequestMode.RESTRICT)
    request(cat, root, "DSR-E", RequestMode.ERASE)
    first = intake.adopt(clip(drop, "a.mkv", T0 + timedelta(minutes=1)), GATE, NOW)
    assert first.recording is not None and first.recording.state is RecState.DELETED
    cat.holds.add(
        Hold(
            id="incident-1",
            kind=HoldKind.INCIDENT,
            reason="break-in",
            placed_by="ops",
            placed_at=NOW,
            location="gate",
            window_start=T0,
            window_end=T0 + timedelta(hours=1),
        )
    )
    held = intake.adopt(clip(drop, "b.mkv", T0 + timedelta(minutes=2)), GATE, NOW)
    assert held.recording is not None
    row = cat.recordings.get(held.recording.id)
    # The hold keeps it; the restrict still applies.
    assert row is not None and row.state is RecState.RESTRICTED
    entries = [e for e in AuditLog(cat).export() if e["action"] == "erase.held"]
    assert entries[0]["subject"] == "DSR-E" and entries[0]["data"]["holds"] == ["incident-1"]


def test_dry_run_is_not_in_force(env) -> None:
    intake, cat, drop, root = env
    req = EraseRequest("DSR-DRY", "gate", T0, T0 + timedelta(hours=1))
    execute_request(cat, root, req, dry_run=True, actor="dpo", now=NOW)
    result = intake.adopt(clip(drop, "a.mkv", T0 + timedelta(minutes=1)), GATE, NOW)
    assert result.recording is not None and result.recording.state is RecState.ACTIVE


def test_recorder_segment_closing_after_the_erase_is_erased(env, tmp_path: Path) -> None:
    intake, cat, _drop, root = env
    request(cat, root, "DSR-9", RequestMode.ERASE)
    start = T0 + timedelta(minutes=30)
    tags = Tags(
        location="gate",
        purpose=Purpose.SECURITY,
        site=Site.PREMISES,
        audio=False,
        anonymized=False,
        start=start,
        end=start + timedelta(seconds=1),
        time_source=TimeSource.RECORDER,
        device="gw-test-01",
        policy_version=POLICY_VERSION,
    )
    made = make_video(tmp_path / "seg.mkv", container="mkv", seconds=1)
    final = intake.final_path(tags, "f" * 32, "cam-gate", "mkv")
    segment = final.with_name(PARTIAL_PREFIX + final.name)
    shutil.move(made, segment)
    rec = intake.register_segment(segment, tags, "f" * 32, GATE, NOW)
    assert rec.state is RecState.DELETED
    assert not segment.exists() and not final.exists()
    row = cat.recordings.get("f" * 32)
    assert row is not None and row.state is RecState.DELETED


def test_standing_verdict_is_a_pure_rule() -> None:
    def rec(state: RecState = RecState.ACTIVE) -> Recording:
        tags = Tags(
            "gate", Purpose.SECURITY, Site.PREMISES, False, False, T0, T0 + timedelta(minutes=1),
            TimeSource.RECORDER, "d",
        )  # fmt: skip
        return Recording("r1", "p", tags, 1, "x", state=state)

    erase = EraseRequest("E", "gate", T0, T0 + timedelta(hours=1))
    restrict = EraseRequest("R", "gate", T0, T0 + timedelta(hours=1), RequestMode.RESTRICT)
    elsewhere = EraseRequest("X", "lab", T0, T0 + timedelta(hours=1))
    later = EraseRequest("L", "gate", T0 + timedelta(hours=2), T0 + timedelta(hours=3))
    assert standing_verdict(rec(), [restrict, erase], [], NOW).action == "erase"
    assert standing_verdict(rec(), [restrict], [], NOW).ref == "R"
    assert standing_verdict(rec(), [elsewhere, later], [], NOW).action == "none"
    hold = Hold("h", HoldKind.INCIDENT, "r", "ops", NOW, recording_ids=("r1",))
    v = standing_verdict(rec(), [erase], [hold], NOW)
    assert v.action == "none" and v.held == (("E", ("h",)),)


def test_media_tags_of_an_erased_arrival_are_gone_with_it(env) -> None:
    """The hash of the adopted source is kept for re-adoption checks: the same file
    dropped again is a duplicate of the erased row, not a fresh recording."""
    intake, cat, drop, root = env
    request(cat, root, "DSR-10", RequestMode.ERASE)
    src = clip(drop, "a.mkv", T0 + timedelta(minutes=1))
    copy = shutil.copy(src, drop.parent / "copy.mkv")
    sha = media.sha256_file(src)
    intake.adopt(src, GATE, NOW)
    again = intake.adopt(Path(copy), GATE, NOW)
    assert again.outcome is Outcome.DUPLICATE
    assert cat.recordings.find_by_source_sha256(sha) is not None and stored(root) == []


def test_reconcile_readoption_meets_the_request_in_force(env) -> None:
    from edge_agent.app.reconcile import reconcile

    intake, cat, drop, root = env
    first = intake.adopt(clip(drop, "a.mkv", T0 + timedelta(minutes=3)), GATE, NOW)
    assert first.recording is not None
    # The catalog lost the row (restored from an old backup): the file is on disk only.
    cat.execute("DELETE FROM recordings")
    request(cat, root, "DSR-11", RequestMode.ERASE)
    rep = reconcile(cat, root, intake.settings, dry_run=False, force=True, now=NOW, grace=0.0)
    assert len(rep.readopted) == 1
    row = cat.recordings.get(first.recording.id)
    assert row is not None and row.state is RecState.DELETED
    assert stored(root) == []


def test_recording_catalogued_while_the_erase_ran_is_erased(env) -> None:
    """The request is matched, then stored: a row committed in between is caught."""
    intake, cat, drop, root = env
    rec = intake.adopt(clip(drop, "a.mkv", T0 + timedelta(minutes=4)), GATE, NOW).recording
    assert rec is not None
    original = cat.recordings.overlapping
    calls = []

    def overlapping_before_the_row(*args, **kwargs):  # the first lookup misses the new row
        calls.append(args)
        found = original(*args, **kwargs)
        return [r for r in found if r.id != rec.id] if len(calls) == 1 else found

    cat.recordings.overlapping = overlapping_before_the_row  # type: ignore[method-assign]
    req = EraseRequest("DSR-12", "gate", T0, T0 + timedelta(hours=1))
    execute_request(cat, root, req, dry_run=False, actor="dpo", now=NOW)
    row = cat.recordings.get(rec.id)
    assert row is not None and row.state is RecState.DELETED
    assert stored(root) == []
