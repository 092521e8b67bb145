"""Ordered schema migrations: applied once, in order, recorded; newer schemas refused."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from edge_agent.core.model import LIVE_STATES
from edge_agent.store.catalog import Catalog
from edge_agent.store.migrations import (
    MIGRATIONS,
    Migration,
    MigrationError,
    SchemaTooNew,
    applied_versions,
    apply_migrations,
)
from edge_agent.store.rows import LIVE_STATES_SQL


def _db(path: Path) -> Any:
    conn = sqlite3.connect(str(path), isolation_level=None)
    return Database(conn, execute_plugins=False)


def test_applied_in_order_and_recorded(tmp_path: Path) -> None:
    calls: list[int] = []

    def step(n: int) -> Migration:
        def apply(db: Any) -> None:
            calls.append(n)
            db.execute(f"CREATE TABLE t{n} (x)")

        return Migration(n, f"step {n}", apply)

    db = _db(tmp_path / "m.db")
    applied = apply_migrations(db, [step(1), step(2), step(3)])
    assert [m.version for m in applied] == [1, 2, 3]
    assert calls == [1, 2, 3]
    assert applied_versions(db) == {1: "step 1", 2: "step 2", 3: "step 3"}
    rows = db.execute("SELECT applied_at FROM _migrations").fetchall()
    assert all(r[0] > 0 for r in rows)

    # Re-running is a no-op; a new step at the end is applied alone.
    assert apply_migrations(db, [step(1), step(2), step(3)]) == []
    assert [m.version for m in apply_migrations(db, [step(1), step(2), step(3), step(4)])] == [4]
    assert calls == [1, 2, 3, 4]


def test_failing_step_rolls_back_alone(tmp_path: Path) -> None:
    def good(db: Any) -> None:
        db.execute("CREATE TABLE good (x)")

    def bad(db: Any) -> None:
        db.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    db = _db(tmp_path / "m.db")
    with pytest.raises(MigrationError, match=r"migration 2 \('bad'\) failed: boom"):
        apply_migrations(db, [Migration(1, "good", good), Migration(2, "bad", bad)])
    assert applied_versions(db) == {1: "good"}
    assert "good" in db.table_names()
    assert "half" not in db.table_names()
    assert not db.conn.in_transaction


def test_registry_must_increase(tmp_path: Path) -> None:
    db = _db(tmp_path / "m.db")
    noop = lambda db: None  # noqa: E731
    with pytest.raises(MigrationError, match="strictly increasing"):
        apply_migrations(db, [Migration(2, "b", noop), Migration(1, "a", noop)])


def test_catalog_open_is_idempotent(tmp_path: Path) -> None:
    path, root = tmp_path / "cat.db", tmp_path / "rec"
    cat = Catalog.open(path, device_id="gw-1", storage_root=root)
    assert cat.schema_version() == MIGRATIONS[-1].version
    versions = applied_versions(cat.db)
    assert list(versions) == [m.version for m in MIGRATIONS]
    cat.close()
    cat = Catalog.open(path, device_id="gw-1", storage_root=root)
    assert applied_versions(cat.db) == versions
    cat.close()


def test_too_new_schema_is_refused(tmp_path: Path) -> None:
    path, root = tmp_path / "cat.db", tmp_path / "rec"
    Catalog.open(path, device_id="gw-1", storage_root=root).close()
    conn = sqlite3.connect(str(path))
    conn.execute("INSERT INTO _migrations VALUES (999, 'from the future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew, match=r"schema version 999 .* newer than this edge-agent"):
        Catalog.open(path, device_id="gw-1", storage_root=root)


def test_due_index_matches_the_live_states(tmp_path: Path) -> None:
    """The deadline queries repeat the partial index's WHERE; both come from LIVE_STATES.

    A change to core's LIVE_STATES needs a migration recreating idx_recordings_due:
    an old index would no longer match the queries pinned to it.
    """
    with Catalog.open(tmp_path / "cat.db", device_id="gw-1", storage_root=tmp_path) as cat:
        (sql,) = cat.query("SELECT sql FROM sqlite_master WHERE name = 'idx_recordings_due'")[0]
        assert f"state IN {LIVE_STATES_SQL}" in sql
        derived = "(" + ", ".join(f"'{s}'" for s in LIVE_STATES) + ")"
        assert derived == LIVE_STATES_SQL
        # Pinned with INDEXED BY: SQLite refuses the query if the index cannot serve it.
        assert cat.schedule.count_due(datetime.now(UTC)) == 0
        assert cat.schedule.pressure_page(10) == []
