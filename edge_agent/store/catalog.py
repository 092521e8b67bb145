"""The recordings catalog: SQLite (WAL) through sqlite-utils.

Threading: one connection per :class:`Catalog`, opened with
``check_same_thread=False`` and serialised by a re-entrant lock. Every method
takes the lock, and :meth:`Catalog.transaction` holds it until commit, so the
daemon may call the catalog from ``asyncio.to_thread`` workers without two
threads ever interleaving statements on the connection. Other processes (the
CLI) open their own :class:`Catalog`; WAL lets them read while the daemon writes.

Times are stored as REAL epoch seconds (they sort and index correctly, unlike
ISO strings with optional fractions) and come back as aware UTC datetimes.

Wrong-disk protection: the storage root carries a marker file with a random
storage id that is also kept in ``meta``; a catalog refuses to open against a
different disk, or against a missing marker while it lists recordings (an
unmounted disk must never look like "every file was deleted").
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from edge_agent.core.location_drift import LocationFootage
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
    iso,
)
from edge_agent.host.fsutil import FILE_MODE, create_file, make_dirs
from edge_agent.store.migrations import MigrationError, SchemaTooNew, apply_migrations, up_to_date

STORAGE_MARKER = ".edge-agent-storage"
log = logging.getLogger(__name__)
LIVE_STATES: tuple[RecState, ...] = (RecState.ACTIVE, RecState.RESTRICTED)

__all__ = [
    "LIVE_STATES",
    "STORAGE_MARKER",
    "Catalog",
    "CatalogError",
    "CatalogMismatch",
    "MigrationError",
    "PurposeStats",
    "SchemaTooNew",
    "StoredRequest",
    "UnknownRecord",
    "open_catalog_from_config",
]


class CatalogError(Exception):
    """The catalog cannot be used as asked."""


class CatalogMismatch(CatalogError):
    """The catalog does not belong to this storage root or device."""


class UnknownRecord(CatalogError, KeyError):
    """No row with that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown record"


@dataclass(frozen=True)
class PurposeStats:
    """Live (active or restricted) recordings of one purpose."""

    count: int
    bytes: int
    oldest_start: datetime | None


@dataclass(frozen=True)
class StoredRequest:
    request: EraseRequest
    dry_run: bool
    receipt: dict[str, Any]
    created_at: datetime


def to_epoch(dt: datetime) -> float:
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: the catalog only stores aware UTC times")
    return dt.timestamp()


def from_epoch(x: float) -> datetime:
    return datetime.fromtimestamp(x, UTC)


def _opt_epoch(dt: datetime | None) -> float | None:
    return None if dt is None else to_epoch(dt)


def _opt_dt(x: float | None) -> datetime | None:
    return None if x is None else from_epoch(x)


_REC_COLUMNS = (
    'id, path, location, purpose, site, audio, anonymized, start, "end", start_iso, '
    "time_source, device, policy_version, deadline, size, sha256, source_sha256, state, "
    "source_id, added_at, updated_at"
)
# What a Recording needs, in the order _row_to_recording reads by position.
_REC_SELECT = (
    'SELECT id, path, location, purpose, site, audio, anonymized, start, "end", '
    "time_source, device, policy_version, deadline, size, sha256, source_sha256, state, "
    "source_id FROM recordings"
)
_PURPOSES = {p.value: p for p in Purpose}
_SITES = {s.value: s for s in Site}
_TIME_SOURCES = {t.value: t for t in TimeSource}
_STATES = {s.value: s for s in RecState}


def _rec_params(rec: Recording, now: float) -> tuple[Any, ...]:
    t = rec.tags
    return (
        rec.id,
        rec.path,
        t.location,
        str(t.purpose),
        str(t.site),
        int(t.audio),
        int(t.anonymized),
        to_epoch(t.start),
        to_epoch(t.end),
        iso(t.start),
        str(t.time_source),
        t.device,
        t.policy_version,
        _opt_epoch(rec.deadline),
        rec.size,
        rec.sha256,
        rec.source_sha256,
        str(rec.state),
        rec.source_id,
        now,
        now,
    )


def _row_to_recording(row: tuple[Any, ...]) -> Recording:
    # Positional access and dict lookups instead of sqlite3.Row names and Enum
    # calls: the retention sweep converts a thousand rows at a time.
    (rid, path, loc, purpose, site, audio, anon, start, end, tsrc, device, policy,
     deadline, size, sha, source_sha, state, source_id) = row  # fmt: skip
    tags = Tags(
        location=loc,
        purpose=_PURPOSES[purpose],
        site=_SITES[site],
        audio=bool(audio),
        anonymized=bool(anon),
        start=datetime.fromtimestamp(start, UTC),
        end=datetime.fromtimestamp(end, UTC),
        time_source=_TIME_SOURCES[tsrc],
        device=device,
        policy_version=policy,
    )
    return Recording(
        id=rid,
        path=path,
        tags=tags,
        size=size,
        sha256=sha,
        state=_STATES[state],
        deadline=None if deadline is None else datetime.fromtimestamp(deadline, UTC),
        source_id=source_id,
        source_sha256=source_sha,
    )


def _row_to_hold(row: sqlite3.Row) -> Hold:
    return Hold(
        id=row["id"],
        kind=HoldKind(row["kind"]),
        reason=row["reason"],
        placed_by=row["placed_by"],
        placed_at=from_epoch(row["placed_at"]),
        recording_ids=tuple(json.loads(row["recording_ids"])),
        location=row["location"],
        window_start=_opt_dt(row["window_start"]),
        window_end=_opt_dt(row["window_end"]),
        expires=_opt_dt(row["expires"]),
        released_at=_opt_dt(row["released_at"]),
        released_by=row["released_by"],
    )


def _write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # the marker and the audit head: 0640 whatever the umask
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Catalog:
    """Use :meth:`open`; the constructor takes an already prepared connection."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self._db: Any = None
        self._lock = threading.RLock()
        self._depth = 0
        # Callbacks to run after the outermost COMMIT, one list per nesting level
        # so that a rolled-back savepoint drops its own; keyed so a transaction
        # that appends many audit entries rewrites the head file once.
        self._after_commit: list[dict[str, Callable[[], None]]] = []
        self._closed = False

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        device_id: str,
        storage_root: Path,
        create: bool = True,
        synchronous: str = "NORMAL",
    ) -> Catalog:
        """Open (and migrate) the catalog at ``path`` for ``storage_root``.

        Raises :class:`CatalogError` if ``create`` is false and there is no catalog,
        :class:`SchemaTooNew` for a catalog from a newer agent, and
        :class:`CatalogMismatch` when catalog, disk marker and device id disagree.
        """
        path = Path(path)
        sync = synchronous.upper()
        if sync not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous={synchronous!r}: use NORMAL or FULL")
        if not path.exists():
            if not create:
                raise CatalogError(
                    f"no catalog at {path}: check storage.catalog in the config, "
                    "or start the agent once (edge-agent run) to create it"
                )
            make_dirs(path.parent)
            # SQLite would create it 0644 & ~umask; its -wal and -shm take this mode.
            create_file(path)
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=5.0
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=5000")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise CatalogError(f"{path}: could not switch to WAL (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute("PRAGMA foreign_keys=ON")
            catalog = cls(path, conn)
            if not up_to_date(conn):
                apply_migrations(catalog.db)
            catalog._check_identity(device_id, Path(storage_root))
        except BaseException:
            conn.close()
            raise
        return catalog

    @property
    def db(self) -> Any:
        """The sqlite-utils view of the connection (migrations, maintenance).

        Built on first use: a daemon whose catalog is up to date never imports
        sqlite-utils and its dependencies (about 9 MiB of resident memory).
        """
        if self._db is None:
            from sqlite_utils import Database

            self._db = Database(self.conn, execute_plugins=False)
        return self._db

    def _check_identity(self, device_id: str, storage_root: Path) -> None:
        marker_path = storage_root / STORAGE_MARKER
        fix = (
            f"mount the right disk at {storage_root}, point storage.catalog at that "
            "disk's catalog, or run `edge-agent catalog rebuild` to build a catalog "
            "for this disk"
        )
        if self.get_meta("storage_root_id") is None:
            # First open. The write lock keeps two processes opening a new catalog at
            # once from each minting a storage id.
            with self.transaction():
                if self.get_meta("storage_root_id") is None:
                    self._claim_storage(device_id, storage_root, self._read_marker(marker_path))
                    return
        marker = self._read_marker(marker_path)
        meta_storage = self.get_meta("storage_root_id")
        meta_device = self.get_meta("device_id")
        if meta_device != device_id:
            raise CatalogMismatch(
                f"catalog {self.path} belongs to device {meta_device!r} but the config says "
                f"device.id = {device_id!r}: fix device.id or use this device's catalog"
            )
        if marker is None:
            live = self.conn.execute(
                "SELECT 1 FROM recordings WHERE state != 'deleted' LIMIT 1"
            ).fetchone()
            if live is not None:
                raise CatalogMismatch(
                    f"catalog {self.path} belongs to storage {meta_storage} but {marker_path} "
                    f"is missing, so the disk is probably not mounted (the catalog lists "
                    f"recordings; refusing to treat them as gone): {fix}"
                )
            make_dirs(storage_root)
            _write_json_atomic(
                marker_path,
                {"storage_id": meta_storage, "device_id": device_id, "created": iso(_now())},
            )
            return
        if marker.get("storage_id") != meta_storage:
            raise CatalogMismatch(
                f"catalog {self.path} belongs to storage {meta_storage} but the disk at "
                f"{storage_root} is storage {marker.get('storage_id')}: {fix}"
            )
        if marker.get("device_id") != device_id:
            raise CatalogMismatch(
                f"storage {meta_storage} at {storage_root} is marked for device "
                f"{marker.get('device_id')!r}, not {device_id!r}: {fix}"
            )

    def _claim_storage(
        self, device_id: str, storage_root: Path, marker: dict[str, Any] | None
    ) -> None:
        marker_path = storage_root / STORAGE_MARKER
        if marker is not None:
            # A disk that outlived its catalog: adopt its identity (rebuild case).
            if marker.get("device_id") != device_id:
                raise CatalogMismatch(
                    f"storage {marker.get('storage_id')} at {storage_root} belongs to "
                    f"device {marker.get('device_id')!r}, not {device_id!r}: mount this "
                    "device's disk, or fix device.id in the config"
                )
            storage_id = str(marker["storage_id"])
        else:
            storage_id = uuid.uuid4().hex
            make_dirs(storage_root)
            _write_json_atomic(
                marker_path,
                {"storage_id": storage_id, "device_id": device_id, "created": iso(_now())},
            )
        self.set_meta("device_id", device_id)
        self.set_meta("storage_root_id", storage_id)
        if self.get_meta("created_at") is None:
            self.set_meta("created_at", iso(_now()))

    @staticmethod
    def _read_marker(marker_path: Path) -> dict[str, Any] | None:
        try:
            text = marker_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise CatalogMismatch(
                f"storage marker {marker_path} is not valid JSON ({exc}): restore it from "
                "a backup or run `edge-agent catalog rebuild`"
            ) from exc
        if not isinstance(doc, dict) or "storage_id" not in doc:
            raise CatalogMismatch(
                f"storage marker {marker_path} has no storage_id: restore it from a backup "
                "or run `edge-agent catalog rebuild`"
            )
        return doc

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Catalog]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; nested use is a savepoint.

        Holds the catalog lock throughout. Callbacks registered with
        :meth:`after_commit` run after the outermost commit, never after a rollback.
        """
        with self._lock:
            if self._depth == 0:
                self.conn.execute("BEGIN IMMEDIATE")
            else:
                self.conn.execute(f"SAVEPOINT sp{self._depth}")
            self._depth += 1
            self._after_commit.append({})
            try:
                yield self
            except BaseException:
                self._depth -= 1
                self._after_commit.pop()
                if self._depth == 0:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                elif self.conn.in_transaction:
                    self.conn.execute(f"ROLLBACK TO sp{self._depth}")
                    self.conn.execute(f"RELEASE sp{self._depth}")
                raise
            self._depth -= 1
            hooks = self._after_commit.pop()
            if self._depth > 0:
                self.conn.execute(f"RELEASE sp{self._depth}")
                self._after_commit[-1].update(hooks)
                return
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            for key, hook in hooks.items():
                try:
                    hook()
                except Exception:
                    # The change is committed; failing here would invite a retry
                    # that duplicates it. The hook's owner must tolerate a miss
                    # (the audit head file may lag, which verify accepts).
                    log.exception("after-commit hook %r failed", key)

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def after_commit(self, key: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the current transaction commits (now if there is none)."""
        with self._lock:
            if self._depth == 0:
                fn()
            else:
                self._after_commit[-1][key] = fn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One statement under the lock; outside :meth:`transaction` it autocommits."""
        with self._lock:
            return self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """All rows of one read, fetched under the lock (for audit, outbox, tools)."""
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    # -- recordings --------------------------------------------------------

    def _recordings(self, where: str, params: Sequence[Any] = ()) -> list[Recording]:
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = None
            rows = cur.execute(f"{_REC_SELECT} {where}", params).fetchall()
        return [_row_to_recording(r) for r in rows]

    def _one(self, where: str, params: Sequence[Any]) -> Recording | None:
        found = self._recordings(where + " LIMIT 1", params)
        return found[0] if found else None

    def add_recording(self, rec: Recording) -> None:
        self.add_recordings([rec])

    def add_recordings(self, recs: Iterable[Recording]) -> int:
        """Insert many rows in one transaction (bulk adoption, rebuild)."""
        now = time.time()
        placeholders = ", ".join("?" * 21)
        with self.transaction():
            cur = self.conn.executemany(
                f"INSERT INTO recordings ({_REC_COLUMNS}) VALUES ({placeholders})",
                (_rec_params(r, now) for r in recs),
            )
            return int(cur.rowcount)

    def get_recording(self, id: str) -> Recording | None:
        return self._one("WHERE id = ?", (id,))

    def find_by_sha256(self, sha: str) -> Recording | None:
        return self._one("WHERE sha256 = ? ORDER BY added_at", (sha,))

    def find_by_source_sha256(self, sha: str) -> Recording | None:
        """The recording adopted from a file with this content (before tagging)."""
        return self._one("WHERE source_sha256 = ? ORDER BY added_at", (sha,))

    def find_by_path(self, rel: str) -> Recording | None:
        return self._one("WHERE path = ?", (rel,))

    def list_recordings(
        self,
        *,
        location: str | None = None,
        purpose: Purpose | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        states: Sequence[RecState] | None = (RecState.ACTIVE,),
        limit: int | None = None,
    ) -> list[Recording]:
        """Recordings overlapping [since, until] (either bound optional), by start.

        ``states=None`` means every state.
        """
        where: list[str] = []
        params: list[Any] = []
        if location is not None:
            where.append("location = ?")
            params.append(location)
        if purpose is not None:
            where.append("purpose = ?")
            params.append(str(purpose))
        if since is not None:
            where.append('"end" >= ?')
            params.append(to_epoch(since))
        if until is not None:
            where.append("start <= ?")
            params.append(to_epoch(until))
        if states is not None:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(str(s) for s in states)
        sql = "WHERE " + " AND ".join(where) if where else ""
        sql += " ORDER BY start, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return self._recordings(sql, params)

    def due_for_deletion(self, now: datetime, limit: int = 1000) -> list[Recording]:
        """Active or restricted recordings whose deadline is at or before ``now``.

        Ordered by deadline. Pinned to the partial index: without ANALYZE statistics
        the planner may prefer a state index and sort every due row.
        """
        return self._recordings(
            "INDEXED BY idx_recordings_due "
            "WHERE state IN ('active', 'restricted') AND deadline IS NOT NULL "
            "AND deadline <= ? ORDER BY deadline LIMIT ?",
            (to_epoch(now), int(limit)),
        )

    def next_deadline(self) -> datetime | None:
        rows = self.query(
            "SELECT MIN(deadline) FROM recordings INDEXED BY idx_recordings_due "
            "WHERE state IN ('active', 'restricted') AND deadline IS NOT NULL"
        )
        value = rows[0][0]
        return None if value is None else from_epoch(value)

    def overlapping(
        self,
        location: str,
        start: datetime,
        end: datetime,
        states: Sequence[RecState] = LIVE_STATES,
    ) -> list[Recording]:
        """Recordings at ``location`` whose [start, end] meets [start, end] (closed)."""
        lo, hi = to_epoch(start), to_epoch(end)
        # No recording is longer than max_duration_s, so one that overlaps must start
        # within that distance before the window: keeps the index range narrow. The
        # extra millisecond absorbs float rounding of end - start.
        max_dur = float(self.get_meta("max_duration_s") or 0.0) + 0.001
        placeholders = ", ".join("?" * len(states))
        return self._recordings(
            "INDEXED BY idx_recordings_loc_start "
            "WHERE location = ? AND start >= ? AND start <= ? "
            f'AND "end" >= ? AND state IN ({placeholders}) ORDER BY start, id',
            (location, lo - max_dur, hi, lo, *(str(s) for s in states)),
        )

    def set_state(
        self,
        id: str,
        state: RecState,
        *,
        reason: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Move a recording to ``state``; DELETED also stamps ``deleted_at``."""
        at_s = to_epoch(at) if at is not None else time.time()
        deleting = state in (RecState.DELETING, RecState.DELETED)
        cur = self.execute(
            "UPDATE recordings SET state = ?, state_reason = ?, updated_at = ?, "
            "deleted_at = CASE WHEN ? THEN ? ELSE deleted_at END, "
            "delete_reason = CASE WHEN ? THEN ? ELSE delete_reason END WHERE id = ?",
            (
                str(state),
                reason,
                at_s,
                state is RecState.DELETED,
                at_s,
                deleting,
                reason,
                id,
            ),
        )
        if cur.rowcount == 0:
            raise UnknownRecord(f"no recording with id {id!r} in {self.path}")

    def set_deadline(self, id: str, deadline: datetime | None) -> None:
        cur = self.execute(
            "UPDATE recordings SET deadline = ?, updated_at = ? WHERE id = ?",
            (_opt_epoch(deadline), time.time(), id),
        )
        if cur.rowcount == 0:
            raise UnknownRecord(f"no recording with id {id!r} in {self.path}")

    def has_location(self, location: str) -> bool:
        """Whether any recording, live or gone, was catalogued at ``location``."""
        with self._lock:
            row = self.conn.execute(
                "SELECT 1 FROM recordings WHERE location = ? LIMIT 1", (location,)
            ).fetchone()
        return row is not None

    def footage_locations(self) -> list[str]:
        """Every location with a catalogued recording, sorted."""
        with self._lock:
            rows = self.conn.execute("SELECT DISTINCT location FROM recordings").fetchall()
        return sorted(str(r[0]) for r in rows)

    def footage_by_location(self) -> list[LocationFootage]:
        """Live recordings per (location, site, audio): what the config must still honour."""
        with self._lock:
            return _footage_by_location(self.conn)

    def summary_by_purpose(self) -> dict[Purpose, PurposeStats]:
        """Count, bytes and oldest start of live recordings, for every purpose."""
        live = tuple(str(s) for s in LIVE_STATES)
        out: dict[Purpose, PurposeStats] = {}
        with self._lock:
            totals = {
                row[0]: (int(row[1]), int(row[2]))
                for row in self.conn.execute(
                    "SELECT purpose, SUM(count), SUM(bytes) FROM purpose_stats "
                    "WHERE state IN (?, ?) GROUP BY purpose",
                    live,
                )
            }
            for purpose in Purpose:
                oldest: float | None = None
                for state in live:
                    # One MIN per (purpose, state): each is a single index probe.
                    value = self.conn.execute(
                        "SELECT MIN(start) FROM recordings WHERE purpose = ? AND state = ?",
                        (str(purpose), state),
                    ).fetchone()[0]
                    if value is not None and (oldest is None or value < oldest):
                        oldest = value
                count, nbytes = totals.get(str(purpose), (0, 0))
                out[purpose] = PurposeStats(count, nbytes, _opt_dt(oldest))
        return out

    def count_by_state(self) -> dict[RecState, int]:
        rows = self.query("SELECT state, SUM(count) FROM purpose_stats GROUP BY state")
        counts = {s: 0 for s in RecState}
        for state, n in rows:
            counts[RecState(state)] = int(n)
        return counts

    # -- holds -------------------------------------------------------------

    def add_hold(self, h: Hold) -> None:
        self.execute(
            "INSERT INTO holds (id, kind, reason, placed_by, placed_at, recording_ids, "
            "location, window_start, window_end, expires, released_at, released_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                h.id,
                str(h.kind),
                h.reason,
                h.placed_by,
                to_epoch(h.placed_at),
                json.dumps(list(h.recording_ids)),
                h.location,
                _opt_epoch(h.window_start),
                _opt_epoch(h.window_end),
                _opt_epoch(h.expires),
                _opt_epoch(h.released_at),
                h.released_by,
            ),
        )

    def get_hold(self, id: str) -> Hold | None:
        rows = self.query("SELECT * FROM holds WHERE id = ?", (id,))
        return _row_to_hold(rows[0]) if rows else None

    def list_holds(self, *, include_released: bool = False) -> list[Hold]:
        sql = "SELECT * FROM holds"
        if not include_released:
            sql += " WHERE released_at IS NULL"
        return [_row_to_hold(r) for r in self.query(sql + " ORDER BY placed_at, id")]

    def set_hold_expiry(self, id: str, expires: datetime | None) -> None:
        """Extend (or shorten) an open hold."""
        cur = self.execute(
            "UPDATE holds SET expires = ? WHERE id = ? AND released_at IS NULL",
            (_opt_epoch(expires), id),
        )
        if cur.rowcount == 0:
            raise UnknownRecord(f"no open hold with id {id!r} in {self.path}")

    def release_hold(self, id: str, *, by: str, reason: str, at: datetime) -> None:
        cur = self.execute(
            "UPDATE holds SET released_at = ?, released_by = ?, release_reason = ? "
            "WHERE id = ? AND released_at IS NULL",
            (to_epoch(at), by, reason, id),
        )
        if cur.rowcount == 0:
            raise UnknownRecord(f"no open hold with id {id!r} in {self.path}")

    # -- requests ----------------------------------------------------------

    def add_request(
        self,
        req: EraseRequest,
        *,
        dry_run: bool,
        receipt: dict[str, Any],
        at: datetime | None = None,
    ) -> None:
        self.execute(
            "INSERT INTO requests (ref, mode, location, window_start, window_end, "
            "created_at, dry_run, receipt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                req.ref,
                str(req.mode),
                req.location,
                to_epoch(req.start),
                to_epoch(req.end),
                to_epoch(at) if at is not None else time.time(),
                int(dry_run),
                json.dumps(receipt, sort_keys=True, default=str),
            ),
        )

    def list_requests(self, *, ref: str | None = None) -> list[StoredRequest]:
        sql = "SELECT * FROM requests"
        params: tuple[Any, ...] = ()
        if ref is not None:
            sql += " WHERE ref = ?"
            params = (ref,)
        out = []
        for row in self.query(sql + " ORDER BY id", params):
            req = EraseRequest(
                ref=row["ref"],
                location=row["location"],
                start=from_epoch(row["window_start"]),
                end=from_epoch(row["window_end"]),
                mode=RequestMode(row["mode"]),
            )
            out.append(
                StoredRequest(
                    req,
                    bool(row["dry_run"]),
                    json.loads(row["receipt"]),
                    from_epoch(row["created_at"]),
                )
            )
        return out

    def standing_requests(
        self, location: str, start: datetime, end: datetime
    ) -> list[EraseRequest]:
        """Requests (not dry runs) for ``location`` whose window meets [start, end].

        A request stays in force for its window: a recording catalogued after it
        ran is erased or restricted as it arrives. One entry per (ref, mode).
        """
        rows = self.query(
            "SELECT ref, mode, location, window_start, window_end FROM requests "
            "WHERE dry_run = 0 AND location = ? AND window_start <= ? AND window_end >= ? "
            "ORDER BY id",
            (location, to_epoch(end), to_epoch(start)),
        )
        out: dict[tuple[str, str], EraseRequest] = {}
        for row in rows:
            out.setdefault(
                (row[0], row[1]),
                EraseRequest(
                    ref=row[0],
                    location=row[2],
                    start=from_epoch(row[3]),
                    end=from_epoch(row[4]),
                    mode=RequestMode(row[1]),
                ),
            )
        return list(out.values())

    def mark_truncated(self, id: str) -> None:
        """Flag a recording whose packets end before its header said."""
        cur = self.execute(
            "UPDATE recordings SET truncated = 1, updated_at = ? WHERE id = ?", (time.time(), id)
        )
        if cur.rowcount == 0:
            raise UnknownRecord(f"no recording with id {id!r} in {self.path}")

    def is_truncated(self, id: str) -> bool:
        rows = self.query("SELECT truncated FROM recordings WHERE id = ?", (id,))
        return bool(rows and rows[0][0])

    # -- meta --------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return None if not rows or rows[0][0] is None else str(rows[0][0])

    def set_meta(self, key: str, value: str | None) -> None:
        self.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def schema_version(self) -> int:
        rows = self.query("SELECT MAX(version) FROM _migrations")
        return int(rows[0][0] or 0)

    # -- retention enforcement (janitor, clock guard, reconcile) -------------

    def due_page(self, now: datetime, limit: int, offset: int = 0) -> list[Recording]:
        """Like :meth:`due_for_deletion`, skipping the first ``offset`` due rows.

        The janitor pages past held recordings this way: deleted rows leave the
        due set, held ones stay, so the offset is the number of held rows seen.
        """
        return self._recordings(
            "INDEXED BY idx_recordings_due "
            "WHERE state IN ('active', 'restricted') AND deadline IS NOT NULL "
            "AND deadline <= ? ORDER BY deadline LIMIT ? OFFSET ?",
            (to_epoch(now), int(limit), int(offset)),
        )

    def next_deadline_after(self, now: datetime) -> datetime | None:
        """Earliest deadline of a live recording that is still in the future."""
        rows = self.query(
            "SELECT MIN(deadline) FROM recordings INDEXED BY idx_recordings_due "
            "WHERE state IN ('active', 'restricted') AND deadline IS NOT NULL AND deadline > ?",
            (to_epoch(now),),
        )
        return _opt_dt(rows[0][0])

    def upcoming_deadlines(self, after: datetime, limit: int = 10) -> list[Recording]:
        """Live recordings whose deadline is after ``after``, soonest first."""
        return self._recordings(
            "INDEXED BY idx_recordings_due WHERE state IN ('active', 'restricted') "
            "AND deadline IS NOT NULL AND deadline > ? ORDER BY deadline LIMIT ?",
            (to_epoch(after), int(limit)),
        )

    def count_due(self, now: datetime) -> int:
        rows = self.query(
            "SELECT COUNT(*) FROM recordings INDEXED BY idx_recordings_due "
            "WHERE state IN ('active', 'restricted') AND deadline IS NOT NULL AND deadline <= ?",
            (to_epoch(now),),
        )
        return int(rows[0][0])

    def pressure_page(self, limit: int, offset: int = 0) -> list[Recording]:
        """Live recordings in disk-pressure order: nearest deadline first, no deadline last."""
        with_deadline = self._recordings(
            "INDEXED BY idx_recordings_due "
            "WHERE state IN ('active', 'restricted') AND deadline IS NOT NULL "
            "ORDER BY deadline LIMIT ? OFFSET ?",
            (int(limit), int(offset)),
        )
        if len(with_deadline) >= limit:
            return with_deadline
        n_dated = int(
            self.query(
                "SELECT COUNT(*) FROM recordings INDEXED BY idx_recordings_due "
                "WHERE state IN ('active', 'restricted') AND deadline IS NOT NULL"
            )[0][0]
        )
        rest = self._recordings(
            "WHERE state IN ('active', 'restricted') AND deadline IS NULL "
            "ORDER BY start, id LIMIT ? OFFSET ?",
            (int(limit) - len(with_deadline), max(0, int(offset) - n_dated)),
        )
        return with_deadline + rest

    def newest_trusted_start(self) -> datetime | None:
        """Newest start of any recording (deleted ones too) not timed by an untrusted clock.

        Walks the (state, start) index backwards per state, so it costs a few probes.
        """
        newest: float | None = None
        for state in RecState:
            rows = self.query(
                "SELECT start FROM recordings INDEXED BY idx_recordings_state_start "
                "WHERE state = ? AND time_source != 'untrusted' ORDER BY start DESC LIMIT 1",
                (str(state),),
            )
            if rows and (newest is None or rows[0][0] > newest):
                newest = float(rows[0][0])
        return _opt_dt(newest)

    def recordings_in_state(self, state: RecState, limit: int = 1000) -> list[Recording]:
        return self._recordings(
            "INDEXED BY idx_recordings_state_start WHERE state = ? ORDER BY start LIMIT ?",
            (str(state), int(limit)),
        )

    def awaiting_deadline(self, limit: int = 1000, offset: int = 0) -> list[Recording]:
        """Live recordings made under an untrusted clock that have no deadline yet."""
        return self._recordings(
            "WHERE state IN ('active', 'restricted') AND deadline IS NULL "
            "AND time_source = 'untrusted' ORDER BY start, id LIMIT ? OFFSET ?",
            (int(limit), int(offset)),
        )

    def path_states(self) -> dict[str, tuple[str, RecState]]:
        """``path -> (id, state)`` of every row not yet deleted (reconcile's view of disk)."""
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = None
            rows = cur.execute(
                "SELECT path, id, state FROM recordings WHERE state != 'deleted'"
            ).fetchall()
        return {r[0]: (r[1], _STATES[r[2]]) for r in rows}


def _now() -> datetime:
    return datetime.now(UTC)


class _DeviceLike(Protocol):
    @property
    def id(self) -> str: ...


class _StorageLike(Protocol):
    @property
    def root(self) -> Path: ...

    @property
    def catalog(self) -> Path: ...


class ConfigLike(Protocol):
    """The part of ``edge_agent.config.config.Config`` the catalog needs."""

    @property
    def device(self) -> _DeviceLike: ...

    @property
    def storage(self) -> _StorageLike: ...


def _footage_by_location(conn: sqlite3.Connection) -> list[LocationFootage]:
    rows = conn.execute(
        "SELECT location, site, audio, COUNT(*), MAX(deadline), SUM(deadline IS NULL) "
        "FROM recordings WHERE state IN (?, ?) GROUP BY location, site, audio",
        tuple(str(s) for s in LIVE_STATES),
    ).fetchall()
    return [
        LocationFootage(str(loc), Site(site), bool(audio), int(n), _opt_dt(last), int(undated or 0))
        for loc, site, audio, n, last, undated in rows
    ]


def read_footage_by_location(path: Path) -> list[LocationFootage] | None:
    """:meth:`Catalog.footage_by_location` through a read-only connection, or None.

    For ``config check`` and ``doctor``: they must not create, migrate or take
    ownership of a catalog. None when there is no readable catalog yet.
    """
    if not Path(path).is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        return _footage_by_location(conn)
    except (sqlite3.Error, ValueError):
        return None
    finally:
        conn.close()


def open_catalog_from_config(cfg: ConfigLike, *, create: bool = True) -> Catalog:
    return Catalog.open(
        Path(cfg.storage.catalog),
        device_id=cfg.device.id,
        storage_root=Path(cfg.storage.root),
        create=create,
    )
