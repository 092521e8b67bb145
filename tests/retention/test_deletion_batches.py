"""Batch deletion (docs/design/deletion.md): one audit entry and one event per
recording whatever happens between batches, and the unlink helpers."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.core.clock import FakeClock
from edge_agent.core.model import (
    NOTICE_PERIODS,
    Purpose,
    Recording,
    RecState,
    Site,
    Tags,
    TimeSource,
    iso,
)
from edge_agent.retention import janitor as janitor_mod
from edge_agent.retention.clockguard import ClockGuard, ClockGuardSettings
from edge_agent.retention.deletion import (
    _UNLINK_JOBS,
    Doomed,
    _rm_commands,
    finish_interrupted,
    unlink_marked,
)
from edge_agent.retention.janitor import Janitor
from edge_agent.store.audit import AuditLog, canonical_json
from edge_agent.store.catalog import Catalog
from tests.support.retention import NOW, RELEASE

N = 250
BATCH = 100


class Crash(Exception):
    """Stands for the process dying: nothing after it runs."""


def expired(root: Path, n: int) -> list[Recording]:
    """``n`` expired security recordings with real 64-byte files, 100 per folder."""
    recs = []
    for i in range(n):
        start = NOW - timedelta(days=5, seconds=-i)
        rel = f"{start:%Y/%m/%d}/loc-{i // 100}/r{i:04d}.mkv"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * 64)
        tags = Tags(f"loc-{i // 100}", Purpose.SECURITY, Site.PREMISES, False, False, start,
                    start + timedelta(seconds=1), TimeSource.RECORDER, "gw-test")  # fmt: skip
        recs.append(Recording(f"r{i:04d}", rel, tags, 64, "0" * 64,
                              deadline=start + timedelta(days=3)))  # fmt: skip
    return recs


def make_janitor(cat: Catalog, root: Path) -> Janitor:
    guard = ClockGuard(cat, FakeClock(NOW, synced=True), ClockGuardSettings(release_date=RELEASE))
    return Janitor(cat, root, periods=NOTICE_PERIODS, guard=guard,
                   free_space=lambda: (1 << 40, 1 << 41), batch=BATCH, fsync=False)  # fmt: skip


def test_a_crash_between_batches_loses_no_audit_entry_or_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "rec"
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test", storage_root=root)
    recs = {r.id: r for r in expired(root, N)}
    cat.recordings.add_many(recs.values())

    # The first batch closes; the process dies closing the second, by when the third
    # is already marked and unlinked (the janitor pipelines batches).
    real = janitor_mod.record_deleted
    calls = 0

    def dies_after_one(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(janitor_mod, "record_deleted", dies_after_one)
    with pytest.raises(Crash):
        make_janitor(cat, root).sweep_once(NOW)
    counts = cat.recordings.counts()
    assert (counts[RecState.DELETED], counts[RecState.DELETING]) == (BATCH, N - BATCH)
    assert AuditLog(cat).verify().ok
    monkeypatch.undo()

    # The restart finishes the interrupted batches before anything else.
    assert len(finish_interrupted(cat, root, NOW + timedelta(minutes=1), fsync=False).deleted) == (
        N - BATCH
    )
    assert make_janitor(cat, root).sweep_once(NOW).deleted == []
    assert cat.recordings.counts()[RecState.DELETED] == N
    assert [p for p in root.rglob("*.mkv")] == []

    verdict = AuditLog(cat).verify()
    assert verdict.ok and verdict.entries == N, verdict.reason
    audit = cat.query(
        "SELECT seq, subject, data FROM audit WHERE action = 'recording.deleted' ORDER BY seq"
    )
    events = cat.query(
        "SELECT seq, payload FROM outbox WHERE type = 'recording.deleted' ORDER BY seq"
    )
    assert sorted(r["subject"] for r in audit) == sorted(recs)  # each exactly once
    assert [r["seq"] for r in events] == list(range(events[0]["seq"], events[0]["seq"] + N))
    payloads = {}
    for row in events:
        assert row["payload"] == canonical_json(json.loads(row["payload"]))  # stored canonical
        payload = json.loads(row["payload"])
        assert payload["seq"] == row["seq"] and payload["type"] == "recording.deleted"
        payloads[payload["recording_id"]] = payload
    assert sorted(payloads) == sorted(recs)
    for row in audit:
        rec = recs[row["subject"]]
        data = json.loads(row["data"])
        assert row["data"] == canonical_json(data)
        # What a deletion's entry and event have always carried (docs/mqtt.md).
        expected = {
            "recording_id": rec.id,
            "path": rec.path,
            "location": rec.location,
            "purpose": "security",
            "start": iso(rec.start),
            "end": iso(rec.end),
            "deadline": iso(rec.deadline) if rec.deadline else None,
            "size": 64,
            "reason": "retention",
        }
        assert {k: data[k] for k in expected} == expected
        assert f"deadline {expected['deadline']} has passed" in data["detail"]
        event = payloads[rec.id]
        assert {k: event[k] for k in expected} == expected
        assert event["deleted_at"] == data["deleted_at"]
        assert set(event) == {*expected, "deleted_at", "id", "seq", "ts", "type"}
        assert set(data) == {*expected, "deleted_at", "detail"}
    cat.close()


def test_rm_command_lines_cover_every_path_and_stay_short() -> None:
    short = [f"/srv/video/2026/01/01/gate/{i:05d}.mkv" for i in range(1000)]
    cmds = _rm_commands(short)
    assert len(cmds) == _UNLINK_JOBS  # one per job when the lines are short
    long = [f"/srv/video/{'é' * 150}/{i:05d}.mkv" for i in range(1000)]  # 300+ bytes each
    for paths, got in ((short, cmds), (long, _rm_commands(long))):
        assert all(cmd[:3] == ["rm", "-f", "--"] for cmd in got)
        assert [p for cmd in got for p in cmd[3:]] == paths  # all of them, in order
        assert max(sum(len(p.encode()) + 1 for p in cmd[3:]) for cmd in got) <= 64 * 1024
    assert _rm_commands([]) == []


def test_files_go_without_the_rm_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "rec"
    recs = expired(root, 150)  # above the bulk threshold
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))  # no rm to start
    done = unlink_marked(root, [Doomed(r, "retention", "test") for r in recs], fsync=False)
    assert len(done.done) == 150 and done.failed == []
    assert list(root.rglob("*.mkv")) == []
