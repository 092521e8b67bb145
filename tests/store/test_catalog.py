"""The catalog on a real SQLite file: round-trips, queries, stats, outbox, wrong disk."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.core.model import (
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
from edge_agent.store.audit import canonical_json
from edge_agent.store.catalog import (
    STORAGE_MARKER,
    Catalog,
    CatalogError,
    CatalogMismatch,
    UnknownRecord,
)
from edge_agent.store.outbox_store import Outbox
from edge_agent.store.recordings import PurposeStats

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def rec(
    n: int,
    *,
    start: datetime | None = None,
    seconds: float = 60,
    location: str = "gate",
    purpose: Purpose = Purpose.SECURITY,
    deadline: datetime | None = None,
    state: RecState = RecState.ACTIVE,
    size: int = 1000,
) -> Recording:
    s = start if start is not None else T0 + timedelta(minutes=n)
    return Recording(
        id=f"r{n:06d}",
        path=f"{location}/{n:06d}.mp4",
        tags=Tags(
            location=location,
            purpose=purpose,
            site=Site.PREMISES,
            audio=False,
            anonymized=False,
            start=s,
            end=s + timedelta(seconds=seconds),
            time_source=TimeSource.RECORDER,
            device="gw-1",
        ),
        size=size,
        sha256=f"{n:064x}",
        state=state,
        deadline=deadline,
    )


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog.open(tmp_path / "cat.db", device_id="gw-1", storage_root=tmp_path / "rec")
    yield c
    c.close()


def test_pragmas(cat: Catalog) -> None:
    assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert cat.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert cat.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert cat.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_synchronous_full_option(tmp_path: Path) -> None:
    c = Catalog.open(
        tmp_path / "c.db", device_id="gw-1", storage_root=tmp_path / "r", synchronous="FULL"
    )
    assert c.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    c.close()


def test_recording_round_trip(cat: Catalog) -> None:
    r = Recording(
        id="abc",
        path="lab/2024/x.mkv",
        tags=Tags(
            location="lab",
            purpose=Purpose.RND,
            site=Site.EXTERNAL,
            audio=True,
            anonymized=True,
            start=datetime(2024, 8, 31, 23, 59, 59, 123456, tzinfo=UTC),
            end=datetime(2024, 9, 1, 0, 0, 59, 999999, tzinfo=UTC),
            time_source=TimeSource.CREATION_TIME,
            device="gw-1",
            policy_version="p-9",
        ),
        size=12345,
        sha256="f" * 64,
        state=RecState.RESTRICTED,
        deadline=datetime(2024, 10, 31, 23, 59, 59, 123456, tzinfo=UTC),
        source_id="cam-1",
        source_sha256="e" * 64,
    )
    cat.recordings.add(r)
    assert cat.recordings.get("abc") == r
    assert cat.recordings.find_by_path("lab/2024/x.mkv") == r
    assert cat.recordings.find_by_source_sha256("e" * 64) == r
    assert cat.recordings.get("nope") is None
    with pytest.raises(sqlite3.IntegrityError):
        cat.recordings.add(dataclasses.replace(r, id="other"))  # same path


def test_naive_datetime_refused(cat: Catalog) -> None:
    with pytest.raises(ValueError, match="naive"):
        cat.schedule.due(datetime(2024, 1, 1))


def test_hold_round_trip_and_release(cat: Catalog) -> None:
    h1 = Hold(
        id="h1",
        kind=HoldKind.INCIDENT,
        reason="break-in",
        placed_by="alice",
        placed_at=T0,
        recording_ids=("r1", "r2"),
    )
    h2 = Hold(
        id="h2",
        kind=HoldKind.RND_EXTENSION,
        reason="training set",
        placed_by="bob",
        placed_at=T0 + timedelta(hours=1),
        location="lab",
        window_start=T0,
        window_end=T0 + timedelta(days=1),
        expires=T0 + timedelta(days=90),
    )
    cat.holds.add(h1)
    cat.holds.add(h2)
    assert cat.holds.get("h1") == h1
    assert cat.holds.get("h2") == h2
    assert cat.holds.list() == [h1, h2]
    cat.holds.set_expiry("h2", T0 + timedelta(days=120))
    assert cat.holds.get("h2").expires == T0 + timedelta(days=120)  # type: ignore[union-attr]
    cat.holds.release("h1", by="carol", reason="closed", at=T0 + timedelta(days=2))
    assert [h.id for h in cat.holds.list()] == ["h2"]
    released = cat.holds.get("h1")
    assert released is not None and released.released_by == "carol"
    assert released.released_at == T0 + timedelta(days=2)
    assert [h.id for h in cat.holds.list(include_released=True)] == ["h1", "h2"]
    with pytest.raises(UnknownRecord, match="no open hold"):
        cat.holds.release("h1", by="x", reason="again", at=T0)


def test_requests(cat: Catalog) -> None:
    req = EraseRequest("REF-1", "gate", T0, T0 + timedelta(hours=1), RequestMode.RESTRICT)
    cat.requests.add(req, dry_run=True, receipt={"would_touch": ["r1"]}, at=T0)
    cat.requests.add(req, dry_run=False, receipt={"touched": ["r1"]}, at=T0)
    stored = cat.requests.list()
    assert [s.dry_run for s in stored] == [True, False]
    assert stored[0].request == req
    assert stored[1].receipt == {"touched": ["r1"]}
    assert cat.requests.list(ref="nope") == []


def test_due_for_deletion_ordering(cat: Catalog) -> None:
    deadlines = [5, 1, 3, None, 2, 4]
    recs = [
        rec(i, deadline=None if d is None else T0 + timedelta(hours=d))
        for i, d in enumerate(deadlines)
    ]
    cat.recordings.add_many(recs)
    cat.recordings.set_state("r000005", RecState.RESTRICTED)
    cat.recordings.set_state("r000004", RecState.DELETED, reason="retention", at=T0)
    due = cat.schedule.due(T0 + timedelta(hours=4))
    assert [r.id for r in due] == ["r000001", "r000002", "r000005"]
    assert [r.id for r in cat.schedule.due(T0 + timedelta(hours=9), limit=2)] == [
        "r000001",
        "r000002",
    ]
    assert cat.schedule.next_deadline() == T0 + timedelta(hours=1)
    cat.recordings.set_deadline("r000001", None)
    assert cat.schedule.next_deadline() == T0 + timedelta(hours=3)
    with pytest.raises(UnknownRecord):
        cat.recordings.set_deadline("missing", None)


def test_overlapping_closed_intervals(cat: Catalog) -> None:
    # a: [0, 60]  b: [60, 120]  c: [200, 260]  d: long [-3600, 30], elsewhere: other place
    cat.recordings.add_many(
        [
            rec(1, start=T0, seconds=60),
            rec(2, start=T0 + timedelta(seconds=60), seconds=60),
            rec(3, start=T0 + timedelta(seconds=200), seconds=60),
            rec(4, start=T0 - timedelta(hours=1), seconds=3630),
            rec(5, start=T0, seconds=60, location="lab"),
        ]
    )

    def ids(a: float, b: float) -> list[str]:
        return [
            r.id
            for r in cat.recordings.overlapping(
                "gate", T0 + timedelta(seconds=a), T0 + timedelta(seconds=b)
            )
        ]

    assert ids(60, 60) == ["r000001", "r000002"]  # touching both edges
    assert ids(120, 200) == ["r000002", "r000003"]
    assert ids(121, 199) == []
    assert ids(-10, 0) == ["r000004", "r000001"]
    assert ids(30, 30) == ["r000004", "r000001"]
    assert ids(31, 59) == ["r000001"]
    assert ids(260.5, 999) == []
    cat.recordings.set_state("r000001", RecState.DELETED)
    assert ids(31, 59) == []
    assert [
        r.id for r in cat.recordings.overlapping("gate", T0, T0, states=(RecState.DELETED,))
    ] == ["r000001"]


def test_list_recordings_filters(cat: Catalog) -> None:
    cat.recordings.add_many(
        [
            rec(1),
            rec(2, purpose=Purpose.RND, location="lab"),
            rec(3, state=RecState.RESTRICTED),
            rec(4),
        ]
    )
    assert [r.id for r in cat.recordings.list()] == ["r000001", "r000002", "r000004"]
    assert [r.id for r in cat.recordings.list(states=None)] == [
        "r000001",
        "r000002",
        "r000003",
        "r000004",
    ]
    assert [r.id for r in cat.recordings.list(location="lab")] == ["r000002"]
    assert [r.id for r in cat.recordings.list(purpose=Purpose.RND)] == ["r000002"]
    since = T0 + timedelta(minutes=3, seconds=30)
    assert [r.id for r in cat.recordings.list(since=since, states=None)] == ["r000003", "r000004"]
    until = T0 + timedelta(minutes=2)
    assert [r.id for r in cat.recordings.list(until=until)] == ["r000001", "r000002"]
    assert [r.id for r in cat.recordings.list(states=None, limit=1)] == ["r000001"]


def test_set_state_records_deletion(cat: Catalog) -> None:
    cat.recordings.add(rec(1))
    cat.recordings.set_state("r000001", RecState.DELETING, reason="retention")
    cat.recordings.set_state("r000001", RecState.DELETED, reason="retention", at=T0)
    row = cat.conn.execute(
        "SELECT state, deleted_at, delete_reason FROM recordings WHERE id='r000001'"
    ).fetchone()
    assert tuple(row) == ("deleted", T0.timestamp(), "retention")
    with pytest.raises(UnknownRecord, match="no recording with id 'zzz'"):
        cat.recordings.set_state("zzz", RecState.DELETED)


def test_summary_and_counts(cat: Catalog) -> None:
    cat.recordings.add_many(
        [
            rec(1, size=10),
            rec(2, size=20, purpose=Purpose.RND),
            rec(3, size=40, state=RecState.RESTRICTED),
            rec(4, size=80, state=RecState.DELETED),
        ]
    )
    summary = cat.recordings.summaries()
    assert summary[Purpose.SECURITY] == PurposeStats(2, 50, T0 + timedelta(minutes=1))
    assert summary[Purpose.RND] == PurposeStats(1, 20, T0 + timedelta(minutes=2))
    assert summary[Purpose.MARKETING] == PurposeStats(0, 0, None)
    counts = cat.recordings.counts()
    assert counts[RecState.ACTIVE] == 2
    assert counts[RecState.RESTRICTED] == 1
    assert counts[RecState.DELETED] == 1
    assert counts[RecState.MISSING] == 0


_ops = st.lists(
    st.tuples(
        st.sampled_from(["insert", "state", "delete", "resize", "repurpose"]),
        st.integers(0, 15),
        st.sampled_from(list(RecState)),
        st.sampled_from(list(Purpose)),
        st.integers(0, 10_000),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_purpose_stats_match_group_by(
    tmp_path: Path, ops: list[tuple[str, int, RecState, Purpose, int]]
) -> None:
    c = Catalog.open(tmp_path / "h.db", device_id="gw-1", storage_root=tmp_path / "rec")
    try:
        with c.transaction():
            c.execute("DELETE FROM recordings")
        present: set[int] = set()
        for op, n, state, purpose, size in ops:
            rid = f"r{n:06d}"
            if op == "insert" and n not in present:
                c.recordings.add(rec(n, state=state, purpose=purpose, size=size))
                present.add(n)
            elif op == "state" and n in present:
                c.recordings.set_state(rid, state)
            elif op == "delete" and n in present:
                c.execute("DELETE FROM recordings WHERE id = ?", (rid,))
                present.discard(n)
            elif op == "resize":
                c.execute("UPDATE recordings SET size = ? WHERE id = ?", (size, rid))
            elif op == "repurpose":
                c.execute("UPDATE recordings SET purpose = ? WHERE id = ?", (str(purpose), rid))
        expected = {
            (p, s): (n, b)
            for p, s, n, b in c.query(
                "SELECT purpose, state, COUNT(*), SUM(size) FROM recordings GROUP BY 1, 2"
            )
        }
        kept = {
            (p, s): (n, b)
            for p, s, n, b in c.query("SELECT purpose, state, count, bytes FROM purpose_stats")
            if n != 0 or b != 0
        }
        assert kept == expected
        summary = c.recordings.summaries()
        for p in Purpose:
            live = [
                r
                for r in c.recordings.list(purpose=p, states=(RecState.ACTIVE, RecState.RESTRICTED))
            ]
            assert summary[p].count == len(live)
            assert summary[p].bytes == sum(r.size for r in live)
            assert summary[p].oldest_start == (min(r.start for r in live) if live else None)
    finally:
        c.close()


def test_transaction_rollback_and_savepoint(cat: Catalog) -> None:
    with pytest.raises(RuntimeError), cat.transaction():
        cat.recordings.add(rec(1))
        raise RuntimeError("abort")
    assert cat.recordings.get("r000001") is None
    with cat.transaction():
        cat.recordings.add(rec(2))
        with pytest.raises(RuntimeError), cat.transaction():
            cat.recordings.add(rec(3))
            raise RuntimeError("inner")
        cat.recordings.add(rec(4))
    assert [r.id for r in cat.recordings.list()] == ["r000002", "r000004"]


def test_after_commit_hooks(cat: Catalog) -> None:
    ran: list[str] = []
    with pytest.raises(RuntimeError), cat.transaction():
        cat.after_commit("k", lambda: ran.append("rolled back"))
        raise RuntimeError
    with cat.transaction():
        cat.after_commit("k", lambda: ran.append("first"))
        cat.after_commit("k", lambda: ran.append("second"))
        with pytest.raises(RuntimeError), cat.transaction():
            cat.after_commit("inner", lambda: ran.append("inner rolled back"))
            raise RuntimeError
        assert ran == []
    assert ran == ["second"]


def test_failing_after_commit_hook_does_not_undo_or_raise(
    cat: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise OSError("disk full")

    with cat.transaction():
        cat.recordings.add(rec(1))
        cat.after_commit("k", boom)
    assert cat.recordings.get("r000001") is not None
    assert "after-commit hook 'k' failed" in caplog.text


def test_threads_share_one_catalog(cat: Catalog) -> None:
    errors: list[BaseException] = []

    def work(base: int) -> None:
        try:
            for i in range(50):
                with cat.transaction():
                    cat.recordings.add(rec(base + i))
                    cat.recordings.list(limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cat.recordings.counts()[RecState.ACTIVE] == 200


# -- outbox ------------------------------------------------------------------


def test_outbox_seq_gap_free_across_reopen_and_rollback(tmp_path: Path) -> None:
    path, root = tmp_path / "cat.db", tmp_path / "rec"
    c = Catalog.open(path, device_id="gw-1", storage_root=root)
    ob = Outbox(c)
    e1 = ob.enqueue("a", {"n": 1}, ts=T0)
    with c.transaction():
        c.recordings.add(rec(1))
        e2 = ob.enqueue("recording.added", {"recording_id": "r000001"}, ts=T0)
    with pytest.raises(sqlite3.IntegrityError), c.transaction():
        ob.enqueue("lost", {}, ts=T0)
        c.recordings.add(rec(1))  # duplicate: the whole transaction rolls back
    assert (e1.seq, e2.seq) == (1, 2)
    assert e2.payload["recording_id"] == "r000001"
    assert set(e2.payload) == {"id", "seq", "ts", "type", "recording_id"}
    assert e2.payload["ts"] == "2024-03-01T12:00:00Z"
    assert ob.ack([1, 2]) == 2
    assert ob.depth() == 0
    c.close()

    c = Catalog.open(path, device_id="gw-1", storage_root=root)
    ob = Outbox(c)
    e3 = ob.enqueue("b", {"when": T0}, ts=T0 + timedelta(seconds=5))
    assert e3.seq == 3
    assert e3.payload["when"] == "2024-03-01T12:00:00Z"
    ob.enqueue("t", {"cpu": 0.5}, ts=T0 + timedelta(seconds=6), cls="telemetry")
    assert [e.seq for e in ob.peek(10)] == [3, 4]
    assert [e.seq for e in ob.peek(10, cls="telemetry")] == [4]
    assert ob.peek(10)[0].payload == e3.payload
    assert ob.depth() == 2
    assert ob.oldest_age(T0 + timedelta(seconds=65)) == pytest.approx(60.0)
    assert ob.ack([3]) == 1
    assert ob.ack([3]) == 0
    c.close()


def test_outbox_rejects_reserved_keys_and_bad_class(cat: Catalog) -> None:
    ob = Outbox(cat)
    with pytest.raises(ValueError, match="reserved"):
        ob.enqueue("x", {"seq": 9}, ts=T0)
    with pytest.raises(ValueError, match="outbox class"):
        ob.enqueue("x", {}, ts=T0, cls="other")
    with pytest.raises(ValueError, match=r"reserved key\(s\) \['id', 'type'\]"):
        ob.enqueue_many([("ok", {"n": 1}), ("x", {"type": "y", "id": 2})], ts=T0)
    assert ob.oldest_age(T0) is None
    assert ob.depth() == 0  # nothing half-written by the refused calls


def test_outbox_batch_ids_and_payloads(cat: Catalog) -> None:
    ob = Outbox(cat)
    ob.enqueue("first", {}, ts=T0)
    got = ob.enqueue_many([("b", {"n": i, "text": "é"}) for i in range(300)], ts=T0)
    assert [e.seq for e in got] == list(range(2, 302))  # gap-free after the single one
    assert len({e.id for e in got}) == 300
    assert all(uuid.UUID(e.id).version == 4 and str(uuid.UUID(e.id)) == e.id for e in got)
    stored = {r[0]: r[2] for r in ob.rows_after(1, 1000)}
    for e in got:
        assert stored[e.seq] == canonical_json(e.payload)
        assert e.payload == {"n": e.payload["n"], "text": "é", "id": e.id, "seq": e.seq,
                             "ts": "2024-03-01T12:00:00Z", "type": "b"}  # fmt: skip


# -- identity / wrong disk -----------------------------------------------------


def test_marker_written_and_checked(tmp_path: Path) -> None:
    path, root = tmp_path / "cat.db", tmp_path / "rec"
    c = Catalog.open(path, device_id="gw-1", storage_root=root)
    marker = json.loads((root / STORAGE_MARKER).read_text())
    assert marker["device_id"] == "gw-1"
    assert marker["storage_id"] == c.get_meta("storage_root_id")
    assert c.get_meta("device_id") == "gw-1"
    c.close()
    Catalog.open(path, device_id="gw-1", storage_root=root).close()


def test_other_disk_is_a_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "cat.db"
    Catalog.open(path, device_id="gw-1", storage_root=tmp_path / "disk-a").close()
    other = Catalog.open(tmp_path / "b.db", device_id="gw-1", storage_root=tmp_path / "disk-b")
    other_id = other.get_meta("storage_root_id")
    other.close()
    mine = json.loads((tmp_path / "disk-a" / STORAGE_MARKER).read_text())["storage_id"]
    with pytest.raises(CatalogMismatch) as exc:
        Catalog.open(path, device_id="gw-1", storage_root=tmp_path / "disk-b")
    msg = str(exc.value)
    assert mine in msg and str(other_id) in msg
    assert "edge-agent catalog rebuild" in msg


def test_other_device_is_a_mismatch(tmp_path: Path) -> None:
    path, root = tmp_path / "cat.db", tmp_path / "rec"
    Catalog.open(path, device_id="gw-1", storage_root=root).close()
    with pytest.raises(CatalogMismatch, match=r"'gw-1' but the config says device\.id = 'gw-2'"):
        Catalog.open(path, device_id="gw-2", storage_root=root)
    # A fresh catalog on a disk marked for another device is refused too.
    with pytest.raises(CatalogMismatch, match="belongs to device 'gw-1', not 'gw-2'"):
        Catalog.open(tmp_path / "new.db", device_id="gw-2", storage_root=root)


def test_fresh_catalog_adopts_existing_marker(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    a = Catalog.open(tmp_path / "a.db", device_id="gw-1", storage_root=root)
    sid = a.get_meta("storage_root_id")
    a.close()
    b = Catalog.open(tmp_path / "b.db", device_id="gw-1", storage_root=root)
    assert b.get_meta("storage_root_id") == sid
    b.close()


def test_missing_marker_with_recordings_is_a_mismatch(tmp_path: Path) -> None:
    path, root = tmp_path / "cat.db", tmp_path / "rec"
    c = Catalog.open(path, device_id="gw-1", storage_root=root)
    c.close()
    (root / STORAGE_MARKER).unlink()
    # No recordings yet: the marker is simply written again.
    c = Catalog.open(path, device_id="gw-1", storage_root=root)
    assert (root / STORAGE_MARKER).exists()
    c.recordings.add(rec(1))
    c.close()
    (root / STORAGE_MARKER).unlink()
    with pytest.raises(CatalogMismatch, match="not mounted"):
        Catalog.open(path, device_id="gw-1", storage_root=root)
    assert not (root / STORAGE_MARKER).exists()


def test_corrupt_marker_is_a_mismatch(tmp_path: Path) -> None:
    path, root = tmp_path / "cat.db", tmp_path / "rec"
    Catalog.open(path, device_id="gw-1", storage_root=root).close()
    (root / STORAGE_MARKER).write_text("{not json")
    with pytest.raises(CatalogMismatch, match="not valid JSON"):
        Catalog.open(path, device_id="gw-1", storage_root=root)


def test_create_false_needs_existing_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no catalog at"):
        Catalog.open(tmp_path / "none.db", device_id="gw-1", storage_root=tmp_path, create=False)
    assert not (tmp_path / "none.db").exists()
