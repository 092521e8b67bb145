"""Ordered catalog schema migrations.

Each :class:`Migration` runs in its own ``BEGIN IMMEDIATE`` transaction together
with the row that records it in ``_migrations``, so a crash leaves the schema
either before or after a step, never half-way. A catalog whose newest recorded
step is unknown to this code is refused: an older agent must not write to a
schema it does not understand (e.g. after a downgrade).

New steps go at the end of :data:`MIGRATIONS` with the next version number;
released steps are never edited.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Database = Any  # sqlite_utils.Database: the library ships no type hints


class MigrationError(Exception):
    """The schema cannot be brought to the version this code expects."""


class SchemaTooNew(MigrationError):
    """The catalog was written by a newer edge-agent."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Database], None]


def _initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE recordings (
            id TEXT PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            location TEXT NOT NULL,
            purpose TEXT NOT NULL,
            site TEXT NOT NULL,
            audio INTEGER NOT NULL,
            anonymized INTEGER NOT NULL,
            start REAL NOT NULL,
            "end" REAL NOT NULL,
            start_iso TEXT NOT NULL,
            time_source TEXT NOT NULL,
            device TEXT NOT NULL,
            policy_version TEXT NOT NULL,
            deadline REAL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            source_sha256 TEXT,
            state TEXT NOT NULL DEFAULT 'active'
                CHECK (state IN ('active', 'deleting', 'deleted', 'missing', 'restricted')),
            state_reason TEXT,
            source_id TEXT,
            added_at REAL NOT NULL,
            deleted_at REAL,
            delete_reason TEXT,
            updated_at REAL NOT NULL
        );
        -- Only rows retention still governs; the query repeats this WHERE so the
        -- planner can walk the index in deadline order and stop at LIMIT. The state
        -- list is core's LIVE_STATES as store/rows.py spells it (LIVE_STATES_SQL);
        -- history is frozen here, so changing LIVE_STATES needs a migration that
        -- recreates this index (tests/store/test_migrations.py checks they agree).
        CREATE INDEX idx_recordings_due ON recordings(deadline)
            WHERE state IN ('active', 'restricted') AND deadline IS NOT NULL;
        CREATE INDEX idx_recordings_loc_start ON recordings(location, start);
        CREATE INDEX idx_recordings_loc_end ON recordings(location, "end");
        CREATE INDEX idx_recordings_sha256 ON recordings(sha256);
        CREATE INDEX idx_recordings_source_sha256 ON recordings(source_sha256)
            WHERE source_sha256 IS NOT NULL;
        CREATE INDEX idx_recordings_purpose_state_start ON recordings(purpose, state, start);
        CREATE INDEX idx_recordings_state_start ON recordings(state, start);

        CREATE TABLE holds (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('incident', 'rnd_extension')),
            reason TEXT NOT NULL,
            placed_by TEXT NOT NULL,
            placed_at REAL NOT NULL,
            recording_ids TEXT NOT NULL DEFAULT '[]',
            location TEXT,
            window_start REAL,
            window_end REAL,
            expires REAL,
            released_at REAL,
            released_by TEXT,
            release_reason TEXT
        );
        CREATE INDEX idx_holds_open ON holds(placed_at) WHERE released_at IS NULL;

        CREATE TABLE requests (
            id INTEGER PRIMARY KEY,
            ref TEXT NOT NULL,
            mode TEXT NOT NULL CHECK (mode IN ('erase', 'restrict')),
            location TEXT NOT NULL,
            window_start REAL NOT NULL,
            window_end REAL NOT NULL,
            created_at REAL NOT NULL,
            dry_run INTEGER NOT NULL,
            receipt TEXT NOT NULL
        );
        CREATE INDEX idx_requests_ref ON requests(ref);

        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            ts_epoch REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT,
            data TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX idx_audit_ts ON audit(ts_epoch);

        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            ts REAL NOT NULL,
            type TEXT NOT NULL,
            class TEXT NOT NULL CHECK (class IN ('audit', 'telemetry')),
            payload TEXT NOT NULL,
            created_at REAL NOT NULL
        );

        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT
        );
        """
    )


def _purpose_stats(db: Database) -> None:
    # A GROUP BY over a million rows takes far longer than a telemetry tick should,
    # so per-(purpose, state) count and bytes are kept by triggers; summaries sum a
    # handful of rows instead.
    db.executescript(
        """
        CREATE TABLE purpose_stats (
            purpose TEXT NOT NULL,
            state TEXT NOT NULL,
            count INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (purpose, state)
        );
        INSERT INTO purpose_stats(purpose, state, count, bytes)
            SELECT purpose, state, COUNT(*), COALESCE(SUM(size), 0)
            FROM recordings GROUP BY purpose, state;

        CREATE TRIGGER recordings_stats_insert AFTER INSERT ON recordings BEGIN
            INSERT INTO purpose_stats(purpose, state, count, bytes)
                VALUES (NEW.purpose, NEW.state, 1, NEW.size)
                ON CONFLICT(purpose, state) DO UPDATE
                SET count = count + 1, bytes = bytes + excluded.bytes;
        END;

        CREATE TRIGGER recordings_stats_delete AFTER DELETE ON recordings BEGIN
            UPDATE purpose_stats SET count = count - 1, bytes = bytes - OLD.size
                WHERE purpose = OLD.purpose AND state = OLD.state;
        END;

        CREATE TRIGGER recordings_stats_update AFTER UPDATE OF purpose, state, size ON recordings
        BEGIN
            UPDATE purpose_stats SET count = count - 1, bytes = bytes - OLD.size
                WHERE purpose = OLD.purpose AND state = OLD.state;
            INSERT INTO purpose_stats(purpose, state, count, bytes)
                VALUES (NEW.purpose, NEW.state, 1, NEW.size)
                ON CONFLICT(purpose, state) DO UPDATE
                SET count = count + 1, bytes = bytes + excluded.bytes;
        END;

        -- Longest recording ever catalogued: bounds window lookups so they can
        -- use the (location, start) index instead of scanning a location's history.
        INSERT INTO meta(key, value)
            SELECT 'max_duration_s', COALESCE(MAX("end" - start), 0) FROM recordings;
        CREATE TRIGGER recordings_max_duration AFTER INSERT ON recordings
        WHEN NEW."end" - NEW.start > (SELECT CAST(value AS REAL) FROM meta
                                       WHERE key = 'max_duration_s')
        BEGIN
            UPDATE meta SET value = NEW."end" - NEW.start WHERE key = 'max_duration_s';
        END;
        CREATE TRIGGER recordings_max_duration_update AFTER UPDATE OF start, "end" ON recordings
        WHEN NEW."end" - NEW.start > (SELECT CAST(value AS REAL) FROM meta
                                       WHERE key = 'max_duration_s')
        BEGIN
            UPDATE meta SET value = NEW."end" - NEW.start WHERE key = 'max_duration_s';
        END;
        """
    )


def _commands(db: Database) -> None:
    # Replay memory for MQTT commands: an id is kept until its command expires,
    # with the verdict and result so a broker re-delivery can be answered again.
    db.executescript(
        """
        CREATE TABLE commands (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            key_id TEXT,
            digest TEXT NOT NULL,
            received_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            state TEXT NOT NULL,
            reason TEXT,
            result TEXT
        );
        CREATE INDEX idx_commands_expires ON commands(expires_at);
        """
    )


def _command_results(db: Database) -> None:
    # Results are kept until the broker acknowledges them (published again after
    # an outage or a restart), with the MQTT 5 response topic and correlation data
    # to answer on. Results stored before this step were already sent once.
    db.executescript(
        """
        ALTER TABLE commands ADD COLUMN response_topic TEXT;
        ALTER TABLE commands ADD COLUMN correlation BLOB;
        ALTER TABLE commands ADD COLUMN result_acked INTEGER NOT NULL DEFAULT 0;
        UPDATE commands SET result_acked = 1 WHERE result IS NOT NULL;
        CREATE INDEX idx_commands_unacked ON commands(received_at)
            WHERE result IS NOT NULL AND result_acked = 0;
        """
    )


def _truncated_and_standing(db: Database) -> None:
    # A file whose header promised more than its packets hold is catalogued with
    # the measured end and this flag, not passed off as whole. Standing requests
    # are looked up by location for every new recording.
    db.executescript(
        """
        ALTER TABLE recordings ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX idx_requests_standing ON requests(location, window_start)
            WHERE dry_run = 0;
        """
    )


def _anonymization(db: Database) -> None:
    # Derivatives (docs/anonymization.md): D points at its original R so erasure
    # finds R's derivatives, and keeps the verification figures (JSON) and, for
    # footage declared anonymized without the process, the written reason. Jobs
    # live here so a crash or a restart resumes them.
    db.executescript(
        """
        ALTER TABLE recordings ADD COLUMN derived_from TEXT;
        ALTER TABLE recordings ADD COLUMN anonymization TEXT;
        ALTER TABLE recordings ADD COLUMN anonymized_reason TEXT;
        ALTER TABLE requests ADD COLUMN keep_derivatives INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX idx_recordings_derived_from ON recordings(derived_from)
            WHERE derived_from IS NOT NULL;
        -- Footage declared anonymized by a person (telemetry counts it apart).
        CREATE INDEX idx_recordings_declared ON recordings(state)
            WHERE anonymized = 1 AND derived_from IS NULL;

        CREATE TABLE anon_jobs (
            id INTEGER PRIMARY KEY,
            recording_id TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
            requested_by TEXT NOT NULL,
            origin TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            derivative_id TEXT,
            staging TEXT,
            reason TEXT,
            result TEXT
        );
        -- At most one open job per recording: a second request joins the first.
        CREATE UNIQUE INDEX idx_anon_jobs_open ON anon_jobs(recording_id)
            WHERE state IN ('queued', 'running');
        CREATE INDEX idx_anon_jobs_state ON anon_jobs(state, id);
        CREATE INDEX idx_anon_jobs_recording ON anon_jobs(recording_id);
        """
    )


MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema", _initial),
    Migration(2, "purpose stats and duration bound", _purpose_stats),
    Migration(3, "command replay memory", _commands),
    Migration(4, "durable command results", _command_results),
    Migration(5, "truncated flag, standing request lookup", _truncated_and_standing),
    Migration(6, "derivatives and anonymization jobs", _anonymization),
]


def known_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return max((m.version for m in migrations), default=0)


def up_to_date(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> bool:
    """True when every known migration is recorded (read-only, plain sqlite3).

    A newer schema is not "up to date": :func:`apply_migrations` then refuses it.
    """
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
    ).fetchone()
    if exists is None:
        return False
    versions = {int(r[0]) for r in conn.execute("SELECT version FROM _migrations")}
    return versions == {m.version for m in migrations}


def applied_versions(db: Database) -> dict[int, str]:
    rows = db.execute("SELECT version, name FROM _migrations ORDER BY version").fetchall()
    return {int(v): str(n) for v, n in rows}


def _check_registry(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)) or any(v <= 0 for v in versions):
        raise MigrationError(
            f"migration registry is not strictly increasing positive versions: {versions}"
        )


def apply_migrations(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """Bring the schema up to date; return the steps applied now (in order).

    ``db.conn`` must be in autocommit mode (``isolation_level=None``) and not in a
    transaction: each step gets its own ``BEGIN IMMEDIATE`` so that two processes
    opening the same catalog at once apply every step exactly once.
    """
    _check_registry(migrations)
    conn = db.conn
    if conn.in_transaction:
        raise MigrationError("migrations must start outside a transaction")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    newest_known = known_version(migrations)
    done = applied_versions(db)
    newest_done = max(done, default=0)
    if newest_done > newest_known:
        raise SchemaTooNew(
            f"catalog schema version {newest_done} ({done[newest_done]!r}) is newer than "
            f"this edge-agent knows (up to {newest_known}): run the edge-agent version "
            "that wrote it, or restore a catalog backup made for this version"
        )
    applied: list[Migration] = []
    for migration in migrations:
        if migration.version in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it between our read and our lock.
            row = conn.execute(
                "SELECT 1 FROM _migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if row is None:
                migration.apply(db)
                conn.execute(
                    "INSERT INTO _migrations(version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )
                applied.append(migration)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, Exception) and not isinstance(exc, MigrationError):
                raise MigrationError(
                    f"migration {migration.version} ({migration.name!r}) failed: {exc}"
                ) from exc
            raise
    return applied
