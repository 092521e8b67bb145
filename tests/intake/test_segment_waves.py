"""A wave of recorder segments catalogued in one transaction (edge_agent/intake/segments.py):
a row, an audit entry and a ``recording.added`` event each, in order per camera,
and one refused segment never keeps the others out."""

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
    Purpose,
    RecState,
    RequestMode,
    Site,
    Tags,
    TimeSource,
)
from edge_agent.intake.intake import PARTIAL_PREFIX, Intake, IntakeSettings, Origin, Segment
from edge_agent.retention.erasure import execute_request
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox
from tests.support.mediagen import make_video

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def origin(source_id: str, location: str = "gate") -> Origin:
    return Origin(
        location=location,
        site=Site.PREMISES,
        audio_room=False,
        signage=True,
        purpose=Purpose.SECURITY,
        source_id=source_id,
    )


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[tuple[Intake, Catalog, Path]]:
    root = tmp_path / "recordings"
    root.mkdir()
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test-01", storage_root=root)
    settings = IntakeSettings(
        device_id="gw-test-01",
        storage_root=root,
        quarantine_dir=tmp_path / "quarantine",
        periods=NOTICE_PERIODS,
    )
    clip = make_video(tmp_path / "clip.mkv", container="mkv", seconds=1)
    yield Intake(cat, settings), cat, clip
    cat.close()


def segment(
    intake: Intake, clip: Path, source_id: str, n: int, *, rec_id: str | None = None,
    location: str = "gate",
) -> Segment:  # fmt: skip
    """A closed segment as the recorder leaves it: real Matroska under its .partial- name."""
    start = T0 + timedelta(seconds=4 * n)
    tags = Tags(
        location=location,
        purpose=Purpose.SECURITY,
        site=Site.PREMISES,
        audio=False,
        anonymized=False,
        start=start,
        end=start + timedelta(seconds=4),
        time_source=TimeSource.RECORDER,
        device="gw-test-01",
        policy_version=POLICY_VERSION,
    )
    rid = rec_id or f"{source_id}-{n}".ljust(32, "0")
    final = intake.final_path(tags, rid, source_id, "mkv")
    path = final.with_name(PARTIAL_PREFIX + final.name)
    shutil.copyfile(clip, path)
    return Segment(path, tags, rid, origin(source_id, location))


def statements(cat: Catalog) -> list[str]:
    """Every SQL statement the catalog's connection runs from now on."""
    seen: list[str] = []
    cat.conn.set_trace_callback(seen.append)
    return seen


def added_events(cat: Catalog) -> list[tuple[str, str]]:
    """(source of the recording, recording id) of each recording.added event, in seq order."""
    out = []
    for e in Outbox(cat).peek(1000):
        if e.type == "recording.added":
            rec = cat.recordings.get(str(e.payload["recording_id"]))
            assert rec is not None and rec.source_id is not None
            out.append((rec.source_id, rec.id))
    return out


def test_a_wave_is_one_transaction_with_a_row_an_entry_and_an_event_each(env) -> None:
    intake, cat, clip = env
    # Three cameras that close their segments together, twice, interleaved.
    segs = [segment(intake, clip, cam, n) for n in range(2) for cam in ("cam-a", "cam-b", "cam-c")]
    sql = statements(cat)
    results = intake.register_segments(segs, NOW)
    cat.conn.set_trace_callback(None)

    assert [getattr(r, "id", r) for r in results] == [s.rec_id for s in segs]
    assert sum(s.startswith("BEGIN") for s in sql) == 1
    assert sum(s == "COMMIT" for s in sql) == 1
    for s in segs:
        row = cat.recordings.get(s.rec_id)
        assert row is not None and row.state is RecState.ACTIVE
        assert (intake.settings.storage_root / row.path).is_file()
        assert not s.path.exists()  # renamed to its final name
    entries = [e for e in AuditLog(cat).export() if e["action"] == "recording.added"]
    assert [e["subject"] for e in entries] == [s.rec_id for s in segs]
    assert AuditLog(cat).verify().ok
    events = added_events(cat)
    assert events == [(s.origin.source_id, s.rec_id) for s in segs]
    for cam in ("cam-a", "cam-b", "cam-c"):
        mine = [rid for src, rid in events if src == cam]
        assert mine == [f"{cam}-0".ljust(32, "0"), f"{cam}-1".ljust(32, "0")]


def test_a_refused_row_does_not_lose_the_others(env) -> None:
    intake, cat, clip = env
    (first,) = intake.register_segments([segment(intake, clip, "cam-a", 0)], NOW)
    assert not isinstance(first, Exception)
    # Same recording id as the row above, another start: the catalog refuses its row.
    dup = segment(intake, clip, "cam-b", 5, rec_id=first.id)
    wave = [segment(intake, clip, "cam-a", 1), dup, segment(intake, clip, "cam-c", 2)]

    results = intake.register_segments(wave, NOW)

    assert isinstance(results[1], Exception)
    assert [getattr(r, "id", None) for r in (results[0], results[2])] == [
        wave[0].rec_id,
        wave[2].rec_id,
    ]
    assert dup.path.exists(), "the refused segment waits under its .partial- name"
    assert not dup.path.with_name(dup.path.name.removeprefix(PARTIAL_PREFIX)).exists()
    assert len(cat.recordings.list()) == 3
    assert [rid for _, rid in added_events(cat)] == [first.id, wave[0].rec_id, wave[2].rec_id]
    verdict = AuditLog(cat).verify()
    assert verdict.ok and verdict.entries == 3


def test_a_standing_request_writes_its_entries_right_after_its_segment(env) -> None:
    intake, cat, clip = env
    req = EraseRequest("DSR-1", "gate", T0, T0 + timedelta(seconds=2), RequestMode.RESTRICT)
    execute_request(cat, intake.settings.storage_root, req, dry_run=False, actor="t", now=NOW)
    wave = [segment(intake, clip, "cam-a", 0), segment(intake, clip, "cam-b", 1, location="lab")]

    results = intake.register_segments(wave, NOW)

    assert [getattr(r, "state", r) for r in results] == [RecState.RESTRICTED, RecState.ACTIVE]
    actions = [(e["action"], e["subject"]) for e in AuditLog(cat).export()][1:]
    assert actions == [
        ("recording.added", wave[0].rec_id),
        ("recording.restricted", wave[0].rec_id),
        ("recording.added", wave[1].rec_id),
    ]
    assert AuditLog(cat).verify().ok
