"""Holds: placing, extending, releasing; validation; each audited with an event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.core.model import HoldKind, Purpose, Recording, Site, Tags, TimeSource
from edge_agent.retention.holds import HoldError, extend_hold, place_hold, release_hold
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture
def cat(tmp_path: Path) -> Catalog:
    c = Catalog.open(tmp_path / "catalog.db", device_id="gw-test", storage_root=tmp_path / "rec")
    tags = Tags("gate", Purpose.SECURITY, Site.PREMISES, False, False, NOW, NOW,
                TimeSource.RECORDER, "gw-test")  # fmt: skip
    c.recordings.add(Recording("r1", "a/r1.mkv", tags, 1, "0" * 64))
    return c


def _events(cat: Catalog) -> list[dict[str, object]]:
    return [json.loads(r[0]) for r in cat.query("SELECT payload FROM outbox ORDER BY seq")]


def test_place_extend_release_are_audited_with_events(cat: Catalog) -> None:
    h = place_hold(cat, kind=HoldKind.INCIDENT, reason="theft", by="alice", now=NOW,
                   recording_ids=["r1"])  # fmt: skip
    assert cat.holds.get(h.id) == h
    until = NOW + timedelta(days=30)
    h2 = extend_hold(cat, h.id, until=until, by="bob", reason="still open", now=NOW)
    assert h2.expires == until
    h3 = release_hold(cat, h.id, by="carol", reason="closed", now=NOW + timedelta(days=1))
    assert h3.released_by == "carol" and cat.holds.list() == []
    assert [h.id for h in cat.holds.list(include_released=True)] == [h.id]
    entries = list(AuditLog(cat).export())
    assert [e["action"] for e in entries] == ["hold.placed", "hold.extended", "hold.released"]
    assert [e["actor"] for e in entries] == ["alice", "bob", "carol"]
    assert entries[2]["data"]["release_reason"] == "closed"
    events = _events(cat)
    assert [e["type"] for e in events] == ["hold.placed", "hold.extended", "hold.released"]
    assert all(e["hold_id"] == h.id for e in events)
    assert AuditLog(cat).verify().ok


def test_window_hold(cat: Catalog) -> None:
    h = place_hold(cat, kind=HoldKind.RND_EXTENSION, reason="needed for R&D", by="r&d",
                   now=NOW, location="gate", start=NOW - timedelta(hours=1), end=NOW)  # fmt: skip
    assert h.location == "gate" and h.window_end == NOW and h.recording_ids == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a scope"),
        ({"recording_ids": ["r1"], "location": "gate"}, "not both"),
        ({"recording_ids": ["nope"]}, "unknown recording id(s) nope"),
        ({"location": "gate", "start": NOW, "end": NOW - timedelta(hours=1)}, "swap them"),
        ({"location": "gate", "start": NOW}, "needs a scope"),
        ({"recording_ids": ["r1"], "until": NOW - timedelta(days=1)}, "not in the future"),
        ({"recording_ids": ["r1"], "reason": " "}, "reason is empty"),
    ],
)
def test_bad_holds_are_refused_and_change_nothing(
    cat: Catalog, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"kind": HoldKind.INCIDENT, "reason": "x", "by": "a", "now": NOW}
    args.update(kwargs)
    with pytest.raises(HoldError, match=message.replace("(", r"\(").replace(")", r"\)")):
        place_hold(cat, **args)  # type: ignore[arg-type]
    assert cat.holds.list() == [] and list(AuditLog(cat).export()) == []


def test_release_twice_and_unknown(cat: Catalog) -> None:
    h = place_hold(cat, kind=HoldKind.INCIDENT, reason="x", by="a", now=NOW, recording_ids=["r1"])
    release_hold(cat, h.id, by="a", reason="done", now=NOW)
    with pytest.raises(HoldError, match="already released"):
        release_hold(cat, h.id, by="a", reason="done", now=NOW)
    with pytest.raises(HoldError, match="unknown hold 'hold-x'"):
        extend_hold(cat, "hold-x", until=None, by="a", reason="r", now=NOW)
