"""The catalog's row stores: the statements retention, erasure and reconcile moved into store/,
the salvage of holds from a moved-aside catalog, and the one Recording-to-dict."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.core.model import (
    LIVE_STATES,
    RECORDING_FIELDS,
    Hold,
    HoldKind,
    Purpose,
    Recording,
    RecState,
    Site,
    Tags,
    TimeSource,
    recording_doc,
)
from edge_agent.store.catalog import Catalog
from edge_agent.store.holds import salvage_holds

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def rec(
    n: int, *, deadline: datetime | None = None, state: RecState = RecState.ACTIVE
) -> Recording:
    start = T0 + timedelta(minutes=n)
    return Recording(
        id=f"r{n}",
        path=f"gate/{n}.mkv",
        tags=Tags(
            location="gate",
            purpose=Purpose.SECURITY,
            site=Site.PREMISES,
            audio=True,
            anonymized=False,
            start=start,
            end=start + timedelta(seconds=90.5),
            time_source=TimeSource.RECORDER,
            device="gw-1",
        ),
        size=100 * n,
        sha256=f"{n:064x}",
        state=state,
        deadline=deadline,
        source_id="cam-1",
    )


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog.open(tmp_path / "cat.db", device_id="gw-1", storage_root=tmp_path / "rec")
    yield c
    c.close()


def test_restrict_only_touches_active_rows(cat: Catalog) -> None:
    cat.recordings.add_many([rec(1), rec(2, state=RecState.MISSING)])
    assert cat.recordings.restrict("r1", reason="data-subject request DSR-1", at=T0)
    assert not cat.recordings.restrict("r1", reason="again", at=T0)  # already restricted
    assert not cat.recordings.restrict("r2", reason="missing", at=T0)
    assert not cat.recordings.restrict("nope", reason="unknown", at=T0)
    r1 = cat.recordings.get("r1")
    assert r1 is not None and r1.state is RecState.RESTRICTED
    row = cat.query("SELECT state_reason, updated_at FROM recordings WHERE id = 'r1'")[0]
    assert (row[0], row[1]) == ("data-subject request DSR-1", T0.timestamp())


def test_deletion_steps(cat: Catalog) -> None:
    live = ("active", "restricted")
    recs = [rec(n) for n in range(1, 1201)]  # more than two 500-row statements
    recs[1] = rec(2, state=RecState.MISSING)
    recs[2] = rec(3, state=RecState.RESTRICTED)
    cat.recordings.add_many(recs)
    ids = [f"r{n}" for n in range(1, 1201)] + ["ghost"]
    rows = [(i, "retention", f"deadline of {i} passed") for i in ids]
    with cat.transaction():
        marked = cat.recordings.mark_deleting(rows, at=T0, from_states=live)
    # Only rows still in a live state are marked: not the missing one, not the ghost.
    assert marked == set(ids) - {"r2", "ghost"}
    with cat.transaction():  # a second pass finds nothing left to mark
        assert cat.recordings.mark_deleting(rows, at=T0, from_states=live) == set()
    assert cat.recordings.deleting_reasons(["r1", "r2", "r1100"]) == {
        "r1": ("retention", "deadline of r1 passed"),
        "r1100": ("retention", "deadline of r1100 passed"),  # each row its own, in every chunk
    }
    assert cat.recordings.deleting_reasons([]) == {}
    assert cat.recordings.counts()[RecState.DELETING] == 1199  # the stats triggers ran per row
    closed = cat.recordings.mark_deleted(ids, at=T0 + timedelta(seconds=1))
    assert closed == marked
    assert cat.recordings.mark_deleted(ids, at=T0 + timedelta(seconds=2)) == set()
    row = cat.query("SELECT state, deleted_at, delete_reason FROM recordings WHERE id = 'r1'")[0]
    assert tuple(row) == ("deleted", (T0 + timedelta(seconds=1)).timestamp(), "retention")
    assert cat.recordings.deleting_reasons(["r1"]) == {}
    counts = cat.recordings.counts()
    assert (counts[RecState.DELETED], counts[RecState.DELETING], counts[RecState.MISSING]) == (
        1199,
        0,
        1,
    )


def test_overdue_counts_live_rows_past_their_deadline(cat: Catalog) -> None:
    assert cat.schedule.overdue(T0) == (0, None)
    cat.recordings.add_many(
        [
            rec(1, deadline=T0 - timedelta(days=2)),
            rec(2, deadline=T0 - timedelta(days=1), state=RecState.RESTRICTED),
            rec(3, deadline=T0 - timedelta(days=3), state=RecState.DELETED),
            rec(4, deadline=T0 + timedelta(days=1)),
            rec(5),
        ]
    )
    assert cat.schedule.overdue(T0) == (2, T0 - timedelta(days=2))
    assert cat.schedule.count_due(T0) == 2
    assert cat.schedule.next_deadline() == T0 - timedelta(days=2)
    assert cat.schedule.next_deadline_after(T0) == T0 + timedelta(days=1)
    assert [r.id for r in cat.schedule.due(T0)] == ["r1", "r2"]
    assert [r.id for r in cat.schedule.pressure_page(10)] == ["r1", "r2", "r4", "r5"]
    assert cat.recordings.has_live()


def test_salvage_holds_reads_a_moved_aside_catalog(tmp_path: Path, cat: Catalog) -> None:
    hold = Hold(
        id="h1",
        kind=HoldKind.INCIDENT,
        reason="break-in",
        placed_by="alice",
        placed_at=T0,
        location="gate",
        window_start=T0,
        window_end=T0 + timedelta(hours=1),
    )
    cat.holds.add(hold)
    assert salvage_holds(cat.path) == ([hold], None)
    cat.execute("UPDATE holds SET recording_ids = 'not json' WHERE id = 'h1'")
    holds, note = salvage_holds(cat.path)
    assert holds == [] and note is not None and "unreadable" in note
    broken = tmp_path / "not-a-catalog.db"
    sqlite3.connect(broken).close()
    holds, note = salvage_holds(broken)
    assert holds == [] and note is not None and "place them again" in note


def test_recording_doc_is_the_one_json_form() -> None:
    r = rec(7, deadline=T0 + timedelta(days=30))
    doc = recording_doc(r)
    assert tuple(doc) == RECORDING_FIELDS
    assert doc["start"] == "2024-03-01T12:07:00Z" and doc["duration_s"] == 90.5
    assert (doc["purpose"], doc["site"], doc["state"]) == ("security", "premises", "active")
    assert doc["deadline"] == "2024-03-31T12:00:00Z"
    json.dumps(doc)  # JSON-ready as it is
    event = recording_doc(r, ("id", "path", "deadline"), id_key="recording_id")
    assert list(event.items()) == [
        ("recording_id", "r7"),
        ("path", "gate/7.mkv"),
        ("deadline", "2024-03-31T12:00:00Z"),
    ]
    assert recording_doc(rec(8), ("deadline",)) == {"deadline": None}


def test_live_states_are_the_ones_retention_governs() -> None:
    assert set(LIVE_STATES) == {RecState.ACTIVE, RecState.RESTRICTED}


def test_audio_outside_audio_rooms_counts_live_rows_only(cat: Catalog) -> None:
    cat.recordings.add_many([rec(1), rec(2), rec(3, state=RecState.DELETED)])
    assert cat.recordings.audio_outside({"gate"}) == 0  # gate is an audio room
    assert cat.recordings.audio_outside({"lab"}) == 2  # the deleted one no longer counts
