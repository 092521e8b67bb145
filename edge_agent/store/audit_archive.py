"""Sealing old audit entries and tombstones into compressed, hash-anchored archives.

A year of an eight-camera device leaves tens of millions of audit entries and
millions of tombstones in the catalog (docs/storage.md, "The accountability
period and audit archives"). Entries and tombstones older than the
accountability period are written to ``<catalog>.audit-archive/audit-<first>-<last>.jsonl.gz``
(gzip, one JSON document a line: a header, the audit entries, the tombstone
rows), fsynced, and only then removed from the catalog in one transaction that
also moves the "sealed" anchor in ``meta`` and appends an ``audit.sealed`` entry
naming the file and its SHA-256. So:

- the live chain starts from the archive's last hash (its first entry's
  ``prev_hash`` is the sealed anchor), and the chain through every archive and
  the live rows is the same chain the entries were written in;
- each archive file is anchored by the ``audit.sealed`` entry that follows it in
  the chain, which covers the tombstones too (they carry no hash of their own);
- a crash after the file is written and before the transaction leaves the rows
  in the catalog and an archive beyond the anchor ("pending"): nothing is lost,
  verify reads the rows, and the next seal completes it from the file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from edge_agent.core.model import iso
from edge_agent.host.fsutil import fsync_dir, make_dirs
from edge_agent.store.audit import (
    GENESIS_HASH,
    SEALED_HASH_KEY,
    SEALED_SEQ_KEY,
    AuditEntry,
    AuditLog,
    canonical_json,
)
from edge_agent.store.catalog import Catalog
from edge_agent.store.rows import to_epoch

log = logging.getLogger(__name__)

FORMAT = "edge-agent-audit-archive/1"
SEALED_ACTION = "audit.sealed"
ACTOR = "audit-archive"
# An archive holds at most this many entries: bounded memory when reading one,
# bounded transaction when removing its rows (a day of eight cameras is ~23,000;
# as Python objects 20,000 entries take tens of MB while they are sealed).
MAX_ENTRIES = 20_000
_NAME_RE = re.compile(r"^audit-(\d{12})-(\d{12})\.jsonl\.gz$")
_GZIP_LEVEL = 6


class ArchiveError(Exception):
    """An archive cannot be read or does not fit the chain; ``seq`` is where."""

    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


@dataclass(frozen=True)
class SealResult:
    archives: int = 0
    entries: int = 0
    tombstones: int = 0
    completed_pending: int = 0
    freed_pages: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "archives": self.archives,
            "entries": self.entries,
            "tombstones": self.tombstones,
            "completed_pending": self.completed_pending,
            "freed_pages": self.freed_pages,
            "seconds": round(self.seconds, 3),
        }


def archive_dir(catalog_path: Path) -> Path:
    return catalog_path.with_name(catalog_path.name + ".audit-archive")


def archive_name(first: int, last: int) -> str:
    return f"audit-{first:012d}-{last:012d}.jsonl.gz"


def sealed_point(cat: Catalog) -> tuple[int, str]:
    """(seq, hash) of the last sealed entry; (0, zeros) before the first seal."""
    seq_text = cat.get_meta(SEALED_SEQ_KEY)
    if not seq_text:
        return 0, GENESIS_HASH
    return int(seq_text), cat.get_meta(SEALED_HASH_KEY) or ""


def list_archives(directory: Path) -> list[tuple[int, int, Path]]:
    """(first_seq, last_seq, path) of every archive file, in seq order."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        m = _NAME_RE.match(name)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), directory / name))
    return sorted(out)


class _HashingReader(io.RawIOBase):
    """Hands the compressed bytes to gzip while hashing them: each file is read once."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._fh.read(len(b))
        self.digest.update(data)
        n = len(data)
        b[:n] = data
        return n


@dataclass
class ArchiveRead:
    """Filled in while :func:`read_archive` is consumed."""

    header: dict[str, Any]
    file: IO[bytes]  # closed by the iterator at its end, or by the caller who stops early
    sha256: str = ""
    tombstones: int = 0


def read_archive(
    path: Path, *, want_tombstones: bool = False
) -> tuple[ArchiveRead, Generator[Any, None, None]]:
    """Open ``path``; the iterator yields AuditEntry (and tombstone dicts if asked).

    Raises ArchiveError for anything that is not a whole archive of this format
    (a flipped byte fails gzip's CRC or the JSON or, at worst, an entry hash).
    """
    fh = open(path, "rb")  # noqa: SIM115 - closed by the generator
    raw = _HashingReader(fh)
    gz = gzip.GzipFile(fileobj=io.BufferedReader(raw, 1 << 16), mode="rb")
    text = io.TextIOWrapper(gz, encoding="utf-8")
    try:
        header = json.loads(text.readline())
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} file")
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        fh.close()
        raise ArchiveError(None, f"archive {path.name} is unreadable ({exc})") from None
    info = ArchiveRead(header, fh)

    def rows() -> Generator[Any, None, None]:
        try:
            for line in text:
                doc = json.loads(line)
                if "a" in doc:
                    a = doc["a"]
                    yield AuditEntry(
                        int(a["seq"]),
                        a["ts"],
                        a["actor"],
                        a["action"],
                        a["subject"],
                        a["data"],
                        a["prev_hash"],
                        a["hash"],
                    )
                elif "t" in doc:
                    info.tombstones += 1
                    if want_tombstones:
                        yield doc["t"]
            # Drain to the gzip trailer so its CRC and length are checked.
            while raw.read(1 << 16):
                pass
            info.sha256 = raw.digest.hexdigest()
        except (OSError, EOFError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ArchiveError(
                None, f"archive {path.name} is damaged ({type(exc).__name__}: {exc})"
            ) from None
        finally:
            fh.close()

    return info, rows()


class AuditArchiver:
    """Seals; run it in a worker thread (file IO, SQLite, gzip)."""

    def __init__(self, catalog: Catalog, *, max_entries: int = MAX_ENTRIES) -> None:
        self.catalog = catalog
        self.audit = AuditLog(catalog)
        self.directory = archive_dir(catalog.path)
        self.max_entries = max_entries

    def seal(
        self, now: datetime, cutoff: datetime, *, vacuum: bool = True, convert: bool = False
    ) -> SealResult:
        """Seal everything older than ``cutoff`` (the caller checks the clock is trusted).

        ``vacuum`` hands freed pages back where the catalog allows it cheaply
        (incremental auto-vacuum); ``convert`` switches a catalog without it once,
        with a full VACUUM (see :meth:`reclaim`).
        """
        t0 = time.perf_counter()
        pending = self.complete_pending(now)
        archives = entries = tombstones = 0
        while True:
            done = self._seal_one(now, cutoff)
            if done is None:
                break
            archives += 1
            entries += done[0]
            tombstones += done[1]
        freed = self.reclaim(convert=convert) if vacuum and (archives or pending) else 0
        return SealResult(archives, entries, tombstones, pending, freed, time.perf_counter() - t0)

    # -- one archive ---------------------------------------------------------

    def _seal_one(self, now: datetime, cutoff: datetime) -> tuple[int, int] | None:
        cat = self.catalog
        sealed_seq, sealed_hash = sealed_point(cat)
        first = sealed_seq + 1
        limit_seq = sealed_seq + self.max_entries
        # The first entry at or after the cutoff ends the sealable prefix: entries are
        # sealed in chain order, so one stamped late by a clock step holds back the rest.
        row = cat.query(
            "SELECT seq FROM audit WHERE seq >= ? AND seq <= ? AND ts_epoch >= ? "
            "ORDER BY seq LIMIT 1",
            (first, limit_seq, to_epoch(cutoff)),
        )
        stop = int(row[0][0]) - 1 if row else limit_seq
        rows = cat.query(
            "SELECT seq, ts, actor, action, subject, data, prev_hash, hash FROM audit "
            "WHERE seq >= ? AND seq <= ? ORDER BY seq",
            (first, stop),
        )
        if not rows:
            return None
        entries = [
            AuditEntry(int(r[0]), r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])
            for r in rows
        ]
        if entries[0].seq != first or entries[0].prev_hash != sealed_hash:
            raise ArchiveError(
                first, f"audit entry {first} does not follow the sealed anchor: not sealing"
            )
        # Tombstones: start < cutoff bounds the walk of idx_recordings_state_start.
        cut = to_epoch(cutoff)
        tomb_rows = cat.query(
            "SELECT * FROM recordings WHERE state = 'deleted' AND start < ? "
            "AND deleted_at < ? ORDER BY start LIMIT ?",
            (cut, cut, self.max_entries),
        )
        tombs = [dict(r) for r in tomb_rows]
        path, sha = self._write(entries, tombs, now)
        self._apply(path, sha, entries[0].seq, entries[-1], [t["id"] for t in tombs], now)
        return len(entries), len(tombs)

    def _write(
        self, entries: list[AuditEntry], tombs: list[dict[str, Any]], now: datetime
    ) -> tuple[Path, str]:
        make_dirs(self.directory)
        first, last = entries[0], entries[-1]
        header = {
            "format": FORMAT,
            "first_seq": first.seq,
            "last_seq": last.seq,
            "prev_hash": first.prev_hash,
            "last_hash": last.hash,
            "entries": len(entries),
            "tombstones": len(tombs),
            "sealed_at": iso(now),
        }
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0) as gz:
            lines = [canonical_json(header)]
            lines.extend(canonical_json({"a": e.as_dict()}) for e in entries)
            lines.extend(canonical_json({"t": t}) for t in tombs)
            gz.write(("\n".join(lines) + "\n").encode("utf-8"))
        data = buf.getvalue()
        path = self.directory / archive_name(first.seq, last.seq)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(self.directory)
        return path, hashlib.sha256(data).hexdigest()

    def _apply(
        self,
        path: Path,
        sha: str,
        first_seq: int,
        last: AuditEntry,
        tomb_ids: list[str],
        now: datetime,
    ) -> None:
        """Remove what ``path`` holds and move the anchor, in one transaction."""
        cat = self.catalog
        with cat.transaction():
            cat.execute("DELETE FROM audit WHERE seq >= ? AND seq <= ?", (first_seq, last.seq))
            for i in range(0, len(tomb_ids), 500):
                chunk = tomb_ids[i : i + 500]
                cat.execute(
                    f"DELETE FROM recordings WHERE state = 'deleted' AND id IN "
                    f"({','.join('?' * len(chunk))})",
                    chunk,
                )
            cat.set_meta(SEALED_SEQ_KEY, str(last.seq))
            cat.set_meta(SEALED_HASH_KEY, last.hash)
            self.audit.append(
                SEALED_ACTION,
                actor=ACTOR,
                subject=path.name,
                data={
                    "file": path.name,
                    "sha256": sha,
                    "first_seq": first_seq,
                    "last_seq": last.seq,
                    "last_hash": last.hash,
                    "tombstones": len(tomb_ids),
                },
                ts=now,
            )

    # -- crash recovery ------------------------------------------------------

    def complete_pending(self, now: datetime) -> int:
        """Finish seals whose file was written but whose rows were not yet removed."""
        done = 0
        for first, _last, path in list_archives(self.directory):
            sealed_seq, sealed_hash = sealed_point(self.catalog)
            if first <= sealed_seq:
                continue
            try:
                info, rows = read_archive(path, want_tombstones=True)
                entries: list[AuditEntry] = []
                tomb_ids: list[str] = []
                for item in rows:
                    if isinstance(item, AuditEntry):
                        entries.append(item)
                    else:
                        tomb_ids.append(str(item["id"]))
                self._check_pending(entries, sealed_seq, sealed_hash)
            except ArchiveError as exc:
                # Not ours to trust: set aside (kept for inspection), rows stay live.
                log.error("audit archive %s set aside: %s", path.name, exc.reason)
                os.replace(path, path.with_name(path.name + ".rejected"))
                continue
            self._apply(path, info.sha256, entries[0].seq, entries[-1], tomb_ids, now)
            done += 1
        return done

    def _check_pending(self, entries: list[AuditEntry], sealed_seq: int, sealed_hash: str) -> None:
        if not entries or entries[0].seq != sealed_seq + 1 or entries[0].prev_hash != sealed_hash:
            raise ArchiveError(None, "it does not start at the sealed anchor")
        last = entries[-1]
        row = self.catalog.query("SELECT hash FROM audit WHERE seq = ?", (last.seq,))
        if not row or row[0][0] != last.hash:
            raise ArchiveError(last.seq, f"entry {last.seq} differs from the catalog's")

    # -- space ---------------------------------------------------------------

    def reclaim(self, *, convert: bool = False) -> int:
        """Give free pages back to the filesystem; returns how many were freed.

        Needs incremental auto-vacuum. A catalog without it is switched only when
        ``convert`` is asked (``audit seal --vacuum``): that is a full VACUUM, a copy
        of the live rows holding the catalog for as long as it takes (minutes on an
        SD card), too long for the daemon. Without it the freed pages are reused by
        new rows, so the file stops growing at its size after the first period.
        """
        cat = self.catalog
        mode = int(cat.query("PRAGMA auto_vacuum")[0][0])
        before = int(cat.query("PRAGMA page_count")[0][0])
        if mode == 2:
            cat.execute("PRAGMA incremental_vacuum")
        elif convert:
            cat.execute("PRAGMA auto_vacuum=INCREMENTAL")
            cat.execute("VACUUM")
        else:
            return 0
        # The file shrinks at checkpoint; a busy reader only delays that.
        cat.query("PRAGMA wal_checkpoint(TRUNCATE)")
        after = int(cat.query("PRAGMA page_count")[0][0])
        return max(0, before - after)


def archived_entries(
    catalog: Catalog, *, newest_only: bool = False
) -> tuple[Iterator[AuditEntry], dict[str, str], tuple[int, str]]:
    """Entries of the applied archives in chain order, file name -> SHA-256, and
    the (seq, hash) the first yielded entry follows.

    The map fills in as the iterator is consumed. Archives beyond the sealed
    anchor are pending (their rows are still live) and are left out.
    ``newest_only`` reads just the newest archive: the link from the live chain
    to the archives, in a time that does not grow with the history.
    """
    sealed_seq, _ = sealed_point(catalog)
    files = [a for a in list_archives(archive_dir(catalog.path)) if a[0] <= sealed_seq]
    hashes: dict[str, str] = {}
    start = (0, GENESIS_HASH)
    if newest_only and files:
        files = files[-1:]
        info, _ = read_archive(files[0][2])
        info.file.close()
        start = (files[0][0] - 1, str(info.header.get("prev_hash")))

    def walk() -> Iterator[AuditEntry]:
        expected = start[0] + 1
        for first, last, path in files:
            if first != expected:
                raise ArchiveError(
                    expected,
                    f"entries {expected}..{first - 1} are missing: no archive holds them "
                    "(an archive file was removed)",
                )
            info, rows = read_archive(path)
            n = 0
            for e in rows:
                n += 1
                yield e
            h = info.header
            if (h.get("first_seq"), h.get("last_seq"), h.get("entries")) != (first, last, n):
                raise ArchiveError(first, f"archive {path.name} does not hold what it says")
            hashes[path.name] = info.sha256
            expected = last + 1
        if expected - 1 != sealed_seq:
            raise ArchiveError(
                expected,
                f"entries {expected}..{sealed_seq} are sealed but no archive holds them "
                "(an archive file was removed)",
            )

    return walk(), hashes, start
