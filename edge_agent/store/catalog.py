"""The catalog database: SQLite (WAL), migrated through sqlite-utils.

:class:`Catalog` is the one database object: opening, the wrong-disk marker,
migrations, transactions, meta. Rows are read and written through its focused
stores: ``catalog.recordings`` (store/recordings.py), ``catalog.holds``
(store/holds.py), ``catalog.requests`` (store/requests.py), ``catalog.anon_jobs``
(store/anon_jobs.py) and retention's queries ``catalog.schedule``
(store/schedule.py); rows become domain objects in store/rows.py only.

Threading: one connection per :class:`Catalog`, opened with
``check_same_thread=False`` and serialised by a re-entrant lock. Every statement
takes the lock, and :meth:`Catalog.transaction` holds it until commit, so the
daemon may call the catalog from ``asyncio.to_thread`` workers without two
threads ever interleaving statements on the connection. Other processes (the
CLI) open their own :class:`Catalog`; WAL lets them read while the daemon writes.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from edge_agent.core.model import iso
from edge_agent.host.fsutil import FILE_MODE, create_file, make_dirs
from edge_agent.store.anon_jobs import AnonJobStore
from edge_agent.store.errors import CatalogError, CatalogMismatch, UnknownRecord
from edge_agent.store.holds import HoldStore
from edge_agent.store.migrations import MigrationError, SchemaTooNew, apply_migrations, up_to_date
from edge_agent.store.recordings import RecordingStore
from edge_agent.store.requests import RequestStore
from edge_agent.store.schedule import RetentionSchedule

STORAGE_MARKER = ".edge-agent-storage"
log = logging.getLogger(__name__)

__all__ = [
    "STORAGE_MARKER",
    "Catalog",
    "CatalogError",
    "CatalogMismatch",
    "MigrationError",
    "SchemaTooNew",
    "UnknownRecord",
    "open_catalog_from_config",
]


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
        # Re-entrant: a transaction holds it while the row stores take it per statement.
        self.lock = threading.RLock()
        self._depth = 0
        # Callbacks to run after the outermost COMMIT, one list per nesting level
        # so that a rolled-back savepoint drops its own; keyed so a transaction
        # that appends many audit entries rewrites the head file once.
        self._after_commit: list[dict[str, Callable[[], None]]] = []
        # Anchor files (the audit head) rewritten at most every anchor_interval
        # seconds; see anchor(). 0: after every commit (the CLI, tests).
        self.anchor_interval = 0.0
        self._anchor_lock = threading.Lock()
        self._anchor_pending: dict[str, Callable[[], None]] = {}
        self._anchor_last: dict[str, float] = {}
        # "NORMAL": commits reach the WAL file but the disk only at a checkpoint,
        # so an anchor file is written after the WAL is synced (_sync_wal).
        self.synchronous = "NORMAL"
        self._closed = False
        # The row stores (one module each; docs/design/architecture.md, store).
        self.recordings = RecordingStore(self)
        self.holds = HoldStore(self)
        self.requests = RequestStore(self)
        self.schedule = RetentionSchedule(self)
        self.anon_jobs = AnonJobStore(self)

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
            catalog.synchronous = sync
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
            if self.recordings.has_live():
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
        self.flush_anchors()
        with self.lock:
            if not self._closed:
                self._closed = True
                self.conn.close()

    # -- anchor files --------------------------------------------------------

    def anchor(self, key: str, write: Callable[[], None]) -> None:
        """Rewrite an anchor file now, or, within ``anchor_interval`` of the last
        rewrite, leave the newest ``write`` pending for :meth:`flush_anchors`.

        Each rewrite is two fsyncs: once per commit they were a third of an
        adoption and held up every other catalog user (bench/adoption.py). A
        pending anchor lags its chain, which the audit verify accepts (a crash
        between commit and the file write looks the same); the daemon flushes
        every second and at shutdown (docs/design/architecture.md).
        """
        with self._anchor_lock:
            now = time.monotonic()
            last = self._anchor_last.get(key)
            if self.anchor_interval > 0 and last is not None and now - last < self.anchor_interval:
                self._anchor_pending[key] = write
                return
            self._anchor_pending.pop(key, None)
            self._anchor_last[key] = now
            try:
                self._sync_wal()
            except OSError:
                self._anchor_pending[key] = write  # the next flush tries again
                raise
            write()

    @property
    def anchors_pending(self) -> bool:
        return bool(self._anchor_pending)

    def flush_anchors(self) -> None:
        """Write every pending anchor file (blocking: fsyncs)."""
        with self._anchor_lock:
            pending, self._anchor_pending = self._anchor_pending, {}
            if pending:
                try:
                    self._sync_wal()
                except OSError:
                    # Unsynced commits must not be claimed: keep them for the next flush.
                    log.exception("catalog WAL not synced; audit head not written")
                    self._anchor_pending = {**pending, **self._anchor_pending}
                    return
            for key, write in pending.items():
                self._anchor_last[key] = time.monotonic()
                try:
                    write()
                except Exception:
                    log.exception("anchor %r not written", key)

    def _sync_wal(self) -> None:
        """Make every commit so far durable before an anchor file claims it.

        Under ``synchronous=NORMAL`` a commit is in the WAL file but reaches the
        disk only at the next checkpoint, which syncs the WAL first and the
        database after. A head file fsynced before that would, after a power
        cut, name entries the database no longer holds, and ``audit verify``
        would report a truncation that no one made. One fsync per anchor write
        (at most once a second in the daemon) closes that; a checkpoint that
        has already moved the frames into the database synced them itself.
        """
        if self.synchronous == "FULL":
            return  # every commit synced the WAL already
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # no WAL: everything is in the database file, synced by its checkpoint
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

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
        with self.lock:
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
        with self.lock:
            if self._depth == 0:
                fn()
            else:
                self._after_commit[-1][key] = fn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One statement under the lock; outside :meth:`transaction` it autocommits."""
        with self.lock:
            return self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """All rows of one read, fetched under the lock (for audit, outbox, tools)."""
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

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


def open_catalog_from_config(cfg: ConfigLike, *, create: bool = True) -> Catalog:
    return Catalog.open(
        Path(cfg.storage.catalog),
        device_id=cfg.device.id,
        storage_root=Path(cfg.storage.root),
        create=create,
    )
