"""The hash-chained audit log: every kind of tampering is found, at the right entry."""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core.model import Purpose
from edge_agent.store.audit import (
    GENESIS_HASH,
    AuditLog,
    _hashed_text,
    canonical_json,
    entry_hash,
    head_file_path,
    prepare_entry,
)
from edge_agent.store.catalog import Catalog

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
N = 10


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "cat.db", tmp_path / "rec"


@pytest.fixture
def log(paths: tuple[Path, Path]) -> Iterator[AuditLog]:
    cat = Catalog.open(paths[0], device_id="gw-1", storage_root=paths[1])
    audit = AuditLog(cat)
    for i in range(1, N + 1):
        audit.append(
            "hold.placed" if i % 2 else "recording.added",
            actor="tester",
            subject=f"s{i}",
            data={"i": i, "purpose": Purpose.RND, "when": T0, "note": "café"},
            ts=T0 + timedelta(seconds=i),
        )
    yield audit
    cat.close()


def _raw(paths: tuple[Path, Path]) -> sqlite3.Connection:
    conn = sqlite3.connect(str(paths[0]), isolation_level=None)
    return conn


def test_chain_and_hash_definition(log: AuditLog) -> None:
    entries = list(log.export())
    assert [e["seq"] for e in entries] == list(range(1, N + 1))
    assert entries[0]["prev_hash"] == GENESIS_HASH
    first = entries[0]
    assert first["data"] == {
        "i": 1,
        "purpose": "rnd",
        "when": "2024-03-01T12:00:00Z",
        "note": "café",
    }
    body = {k: first[k] for k in ("seq", "ts", "actor", "action", "subject", "data", "prev_hash")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert text == canonical_json(body)
    assert first["hash"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    for a, b in itertools.pairwise(entries):
        assert b["prev_hash"] == a["hash"]
    head = json.loads(log.head_path.read_text())
    assert head == {"seq": N, "hash": entries[-1]["hash"]}
    assert log.head() == (N, entries[-1]["hash"])


def test_intact_log_verifies(log: AuditLog) -> None:
    verdict = log.verify()
    assert verdict.ok and verdict.entries == N and verdict.first_bad_seq is None


def test_empty_log_verifies(tmp_path: Path) -> None:
    cat = Catalog.open(tmp_path / "c.db", device_id="gw-1", storage_root=tmp_path / "r")
    verdict = AuditLog(cat).verify()
    assert verdict.ok and verdict.entries == 0
    cat.close()


def test_export_since(log: AuditLog) -> None:
    since = T0 + timedelta(seconds=8)
    assert [e["seq"] for e in log.export(since)] == [8, 9, 10]


def test_append_joins_transaction_and_rolls_back(log: AuditLog) -> None:
    with pytest.raises(RuntimeError), log.catalog.transaction():
        log.append("x", actor="a", ts=T0)
        raise RuntimeError
    assert log.verify().ok
    assert log.head()[0] == N
    assert json.loads(log.head_path.read_text())["seq"] == N
    entry = log.append("y", actor="a", ts=T0)
    assert entry.seq == N + 1
    assert log.verify().ok


def test_edited_field_detected(log: AuditLog, paths: tuple[Path, Path]) -> None:
    _raw(paths).execute("UPDATE audit SET actor = 'mallory' WHERE seq = 4")
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 4 and "edited" in (v.reason or "")


def test_edited_data_detected(log: AuditLog, paths: tuple[Path, Path]) -> None:
    _raw(paths).execute("""UPDATE audit SET data = '{"i":7}' WHERE seq = 7""")
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 7


def test_deleted_middle_row_detected(log: AuditLog, paths: tuple[Path, Path]) -> None:
    _raw(paths).execute("DELETE FROM audit WHERE seq = 5")
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 5 and "missing" in (v.reason or "")
    assert v.entries == 4


def test_deleted_row_renumbered_detected(log: AuditLog, paths: tuple[Path, Path]) -> None:
    conn = _raw(paths)
    conn.execute("DELETE FROM audit WHERE seq = 5")
    conn.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 5")
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 5


def test_reordered_rows_detected(log: AuditLog, paths: tuple[Path, Path]) -> None:
    conn = _raw(paths)
    cols = "ts, ts_epoch, actor, action, subject, data, prev_hash, hash"
    r3 = conn.execute(f"SELECT {cols} FROM audit WHERE seq = 3").fetchone()
    r6 = conn.execute(f"SELECT {cols} FROM audit WHERE seq = 6").fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    conn.execute(f"UPDATE audit SET {sets} WHERE seq = 3", (*r6,))
    conn.execute(f"UPDATE audit SET {sets} WHERE seq = 6", (*r3,))
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 3


def test_rehashed_edit_detected_by_next_link(log: AuditLog, paths: tuple[Path, Path]) -> None:
    """An editor who recomputes the edited entry's own hash still breaks the next link."""
    from edge_agent.store.audit import entry_hash

    conn = _raw(paths)
    seq, ts, _actor, action, subject, data, prev = conn.execute(
        "SELECT seq, ts, actor, action, subject, data, prev_hash FROM audit WHERE seq = 6"
    ).fetchone()
    new_hash = entry_hash(seq, ts, "mallory", action, subject, json.loads(data), prev)
    conn.execute("UPDATE audit SET actor = 'mallory', hash = ? WHERE seq = 6", (new_hash,))
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 7 and "does not follow" in (v.reason or "")


def test_truncated_tail_detected(log: AuditLog, paths: tuple[Path, Path]) -> None:
    _raw(paths).execute("DELETE FROM audit WHERE seq > 8")
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 9 and "truncated" in (v.reason or "")


def test_truncated_tail_with_meta_rewritten_detected_by_side_file(
    log: AuditLog, paths: tuple[Path, Path]
) -> None:
    conn = _raw(paths)
    conn.execute("DELETE FROM audit WHERE seq > 8")
    h8 = conn.execute("SELECT hash FROM audit WHERE seq = 8").fetchone()[0]
    conn.execute("UPDATE meta SET value = '8' WHERE key = 'audit_head_seq'")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'audit_head_hash'", (h8,))
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 9
    assert str(head_file_path(paths[0])) in (v.reason or "")


def test_deleted_side_file_detected(log: AuditLog) -> None:
    log.head_path.unlink()
    v = log.verify()
    assert not v.ok and v.first_bad_seq is None and "missing" in (v.reason or "")
    # The next append writes it again and the log verifies.
    log.append("z", actor="a", ts=T0)
    assert log.verify().ok


def test_side_file_behind_by_a_crash_is_accepted(log: AuditLog) -> None:
    entries = list(log.export())
    log.head_path.write_text(json.dumps({"seq": N - 1, "hash": entries[N - 2]["hash"]}))
    assert log.verify().ok
    log.head_path.write_text(json.dumps({"seq": N - 1, "hash": "0" * 64}))
    v = log.verify()
    assert not v.ok and v.first_bad_seq == N - 1


def test_deleted_first_row_detected(log: AuditLog, paths: tuple[Path, Path]) -> None:
    _raw(paths).execute("DELETE FROM audit WHERE seq = 1")
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 1


def test_chain_survives_reopen(paths: tuple[Path, Path], log: AuditLog) -> None:
    log.catalog.close()
    cat = Catalog.open(paths[0], device_id="gw-1", storage_root=paths[1])
    again = AuditLog(cat)
    assert again.append("after.reopen", actor="a", ts=T0).seq == N + 1
    assert again.verify().ok
    log.catalog = cat  # the fixture closes this one


def test_append_many_continues_the_same_chain(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from edge_agent.store.catalog import Catalog

    root = tmp_path / "root"
    root.mkdir()
    cat = Catalog.open(tmp_path / "c.db", device_id="gw-1", storage_root=root)
    log = AuditLog(cat)
    ts = datetime(2026, 11, 29, tzinfo=UTC)
    log.append("first", actor="t", data={"n": 0}, ts=ts)
    entries = log.append_many(
        [prepare_entry("batch", f"r{i}", {"n": i, "text": "é"}) for i in range(1, 50)],
        actor="t",
        ts=ts,
    )
    log.append("last", actor="t", data={}, ts=ts)
    assert [e.seq for e in entries] == list(range(2, 51))
    verdict = log.verify()
    assert verdict.ok and verdict.entries == 51
    cat.close()


def _head_seq(log: AuditLog) -> int:
    return int(json.loads(log.head_path.read_text())["seq"])


def test_head_anchor_rewrites_coalesce_and_flush(paths: tuple[Path, Path]) -> None:
    # The daemon rewrites the head file at most once per anchor_interval (two
    # fsyncs each); a lagging head verifies, and flush/close bring it level.
    cat = Catalog.open(paths[0], device_id="gw-1", storage_root=paths[1])
    cat.anchor_interval = 3600.0
    audit = AuditLog(cat)
    audit.append("a", actor="t", ts=T0)
    assert _head_seq(audit) == 1 and not cat.anchors_pending
    for _ in range(5):
        audit.append("b", actor="t", ts=T0)
    assert _head_seq(audit) == 1 and cat.anchors_pending
    assert audit.verify().ok  # behind the chain, as after a crash
    cat.flush_anchors()
    assert _head_seq(audit) == 6 and not cat.anchors_pending
    audit.append("c", actor="t", ts=T0)
    assert _head_seq(audit) == 6
    cat.close()  # flushes
    assert _head_seq(audit) == 7


def test_truncation_beyond_a_lagging_head_is_still_found(paths: tuple[Path, Path]) -> None:
    cat = Catalog.open(paths[0], device_id="gw-1", storage_root=paths[1])
    cat.anchor_interval = 3600.0
    audit = AuditLog(cat)
    for _ in range(4):
        audit.append("a", actor="t", ts=T0)
    cat.flush_anchors()
    audit.append("b", actor="t", ts=T0)  # pending: the file says 4
    second = cat.query("SELECT hash FROM audit WHERE seq = 2")[0][0]
    cat.execute("DELETE FROM audit WHERE seq >= 3")  # and the catalog's own anchor with it:
    cat.set_meta("audit_head_seq", "2")
    cat.set_meta("audit_head_hash", second)
    verdict = AuditLog(cat).verify()
    assert not verdict.ok and "truncated" in (verdict.reason or "")
    cat.close()


def test_head_file_never_claims_commits_the_disk_may_not_hold(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # synchronous=NORMAL: a commit reaches the disk at the next checkpoint. The head
    # file is fsynced, so it must follow a sync of the WAL, or a power cut could leave
    # it naming entries the catalog lost, which verify reports as a truncation.
    import os

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    cat = Catalog.open(paths[0], device_id="gw-1", storage_root=paths[1])
    audit = AuditLog(cat)
    wal, head = f"{paths[0]}-wal", f".{audit.head_path.name}.tmp"
    for immediate in (True, False):
        cat.anchor_interval = 0.0 if immediate else 3600.0
        synced.clear()
        for _ in range(3):
            audit.append("a", actor="t", ts=T0)
        cat.flush_anchors()
        heads = [i for i, p in enumerate(synced) if Path(p).name.startswith(head)]
        assert heads, synced
        for i in heads:
            assert wal in synced[:i], (immediate, synced)
            assert synced[:i].count(wal) >= (heads.index(i) + 1), synced
    cat.close()


def test_head_waits_when_the_wal_cannot_be_synced(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cat = Catalog.open(paths[0], device_id="gw-1", storage_root=paths[1])
    audit = AuditLog(cat)
    audit.append("a", actor="t", ts=T0)
    assert _head_seq(audit) == 1

    def fail() -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(cat, "_sync_wal", fail)
    audit.append("b", actor="t", ts=T0)  # committed; its head is not claimed
    cat.flush_anchors()
    assert _head_seq(audit) == 1 and cat.anchors_pending
    assert audit.verify().ok
    monkeypatch.undo()
    cat.flush_anchors()
    assert _head_seq(audit) == 2 and not cat.anchors_pending
    cat.close()


_text = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(min_value=1, max_value=2**53),
    ts=_text,
    actor=_text,
    action=_text,
    subject=st.none() | _text,
    data=st.dictionaries(_text, st.none() | st.booleans() | st.integers() | _text, max_size=6),
    prev=_text,
)
def test_spliced_hash_text_is_the_canonical_document(
    seq: int, ts: str, actor: str, action: str, subject: str | None, data: dict[str, Any], prev: str
) -> None:
    # append_many hashes text built around the data's canonical text; verify (and an
    # outside checker) hashes canonical_json of the whole document: they must agree.
    doc = {"seq": seq, "ts": ts, "actor": actor, "action": action, "subject": subject,
           "data": data, "prev_hash": prev}  # fmt: skip
    spliced = _hashed_text(seq, ts, actor, action, subject, canonical_json(data), prev)
    assert spliced == canonical_json(doc)
    assert hashlib.sha256(spliced.encode("utf-8")).hexdigest() == entry_hash(
        seq, ts, actor, action, subject, data, prev
    )
