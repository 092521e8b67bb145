"""Hash-chained, append-only audit log in the catalog.

Each entry's hash covers its own content and the previous entry's hash, so an
edited, removed or reordered entry breaks the chain from that point. Cutting
entries off the end keeps a valid chain, so the head (last seq and hash) is
anchored twice: in ``meta`` (same transaction as the entry) and in a side file
``<catalog>.audit-head`` written after commit (tmp + fsync + rename). A crash
between commit and that write leaves the file one transaction behind, which
:meth:`AuditLog.verify` accepts as long as it names an entry that is still in
the chain; a head file *ahead* of the chain means entries were cut off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

from edge_agent.core.model import iso
from edge_agent.store.catalog import Catalog, _write_json_atomic
from edge_agent.store.rows import to_epoch

GENESIS_HASH = "0" * 64
HEAD_SEQ_KEY = "audit_head_seq"
HEAD_HASH_KEY = "audit_head_hash"
# Last entry sealed into an archive file (store/audit_archive.py): the live chain
# starts after it.
SEALED_SEQ_KEY = "audit_sealed_seq"
SEALED_HASH_KEY = "audit_sealed_hash"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: str  # ISO 8601 UTC, exactly as hashed
    actor: str
    action: str
    subject: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "data": self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class AuditVerdict:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"audit data value {value!r} ({type(value).__name__}) is not JSON")


# One encoder for every call: ``json.dumps`` with these options builds a new one each
# time, which was a third of the cost of a batch deletion's JSON (docs/scale.md).
_CANONICAL = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_json_default,
)
_string = _CANONICAL.encode  # a str encodes as a JSON string, exactly as inside a document


def canonical_json(doc: Any) -> str:
    """Sorted keys, no spaces, UTF-8 kept as is: the form that is hashed."""
    return _CANONICAL.encode(doc)


def entry_hash(
    seq: int,
    ts: str,
    actor: str,
    action: str,
    subject: str | None,
    data: dict[str, Any],
    prev_hash: str,
) -> str:
    doc = {
        "seq": seq,
        "ts": ts,
        "actor": actor,
        "action": action,
        "subject": subject,
        "data": data,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


def _hashed_text(
    seq: int, ts: str, actor: str, action: str, subject: str | None, data: str, prev_hash: str
) -> str:
    """What :func:`entry_hash` hashes, built around ``data`` already in canonical text.

    Equal to ``canonical_json`` of that document (tests/store/test_audit.py checks it
    on arbitrary text): its keys in sorted order, each value encoded as the encoder
    would. Batch deletions use it so each entry's data is encoded once, not twice.
    """
    subj = "null" if subject is None else _string(subject)
    return (
        f'{{"action":{_string(action)},"actor":{_string(actor)},"data":{data},'
        f'"prev_hash":{_string(prev_hash)},"seq":{int(seq)},"subject":{subj},'
        f'"ts":{_string(ts)}}}'
    )


class PreparedEntry(NamedTuple):
    """An entry for :meth:`AuditLog.append_many`; make it with :func:`prepare_entry`.

    Its data is already canonical text, so callers can encode a batch before
    their transaction and the catalog lock is not held while they do.
    """

    action: str
    subject: str | None
    data: dict[str, Any]
    text: str  # canonical_json(data)


def prepare_entry(action: str, subject: str | None, data: dict[str, Any]) -> PreparedEntry:
    """``data`` must be JSON-native (str, numbers, bool, None, lists, dicts): its
    canonical text then re-hashes identically when ``verify`` reads it back, with
    no normalising round trip."""
    return PreparedEntry(action, subject, data, canonical_json(data))


def head_file_path(catalog_path: Path) -> Path:
    return catalog_path.with_name(catalog_path.name + ".audit-head")


class AuditLog:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.head_path = head_file_path(catalog.path)

    def append(
        self,
        action: str,
        *,
        actor: str,
        subject: str | None = None,
        data: dict[str, Any] | None = None,
        ts: datetime,
    ) -> AuditEntry:
        """Add an entry; inside an open ``catalog.transaction()`` it joins it."""
        # Normalise through JSON once so the stored text re-hashes identically.
        clean: dict[str, Any] = json.loads(canonical_json(data or {}))
        ts_text = iso(ts)
        cat = self.catalog
        with cat.transaction():
            seq_text = cat.get_meta(HEAD_SEQ_KEY)
            seq = int(seq_text) + 1 if seq_text else 1
            prev = cat.get_meta(HEAD_HASH_KEY) or GENESIS_HASH
            digest = entry_hash(seq, ts_text, actor, action, subject, clean, prev)
            cat.conn.execute(
                "INSERT INTO audit (seq, ts, ts_epoch, actor, action, subject, data, "
                "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    ts_text,
                    to_epoch(ts),
                    actor,
                    action,
                    subject,
                    canonical_json(clean),
                    prev,
                    digest,
                ),
            )
            cat.set_meta(HEAD_SEQ_KEY, str(seq))
            cat.set_meta(HEAD_HASH_KEY, digest)
            cat.after_commit("audit-head", lambda: self._anchor_head(seq, digest))
        return AuditEntry(seq, ts_text, actor, action, subject, clean, prev, digest)

    def append_many(
        self, entries: Sequence[PreparedEntry], *, actor: str, ts: datetime
    ) -> list[AuditEntry]:
        """Add several entries with one insert and one head update.

        Same chain as calling :meth:`append` for each in order; used by batch
        deletions, where per-entry statements dominate the cost. The entries'
        data was encoded when they were prepared, so the transaction (and the
        catalog lock) only chains, hashes and inserts.
        """
        if not entries:
            return []
        ts_text = iso(ts)
        ts_epoch = to_epoch(ts)
        cat = self.catalog
        out: list[AuditEntry] = []
        with cat.transaction():
            seq_text = cat.get_meta(HEAD_SEQ_KEY)
            seq = int(seq_text) if seq_text else 0
            prev = cat.get_meta(HEAD_HASH_KEY) or GENESIS_HASH
            rows = []
            for e in entries:
                seq += 1
                hashed = _hashed_text(seq, ts_text, actor, e.action, e.subject, e.text, prev)
                digest = hashlib.sha256(hashed.encode("utf-8")).hexdigest()
                rows.append(
                    (seq, ts_text, ts_epoch, actor, e.action, e.subject, e.text, prev, digest)
                )
                out.append(
                    AuditEntry(seq, ts_text, actor, e.action, e.subject, e.data, prev, digest)
                )
                prev = digest
            cat.conn.executemany(
                "INSERT INTO audit (seq, ts, ts_epoch, actor, action, subject, data, "
                "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            last_seq, last_hash = seq, prev
            cat.set_meta(HEAD_SEQ_KEY, str(last_seq))
            cat.set_meta(HEAD_HASH_KEY, last_hash)
            cat.after_commit("audit-head", lambda: self._anchor_head(last_seq, last_hash))
        return out

    def _anchor_head(self, seq: int, digest: str) -> None:
        self.catalog.anchor("audit-head", lambda: self._write_head(seq, digest))

    def _write_head(self, seq: int, digest: str) -> None:
        _write_json_atomic(self.head_path, {"seq": seq, "hash": digest})

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest entry as anchored in meta; (0, zeros) when empty."""
        seq_text = self.catalog.get_meta(HEAD_SEQ_KEY)
        if not seq_text:
            return 0, GENESIS_HASH
        return int(seq_text), self.catalog.get_meta(HEAD_HASH_KEY) or ""

    def _rows(self, since: datetime | None = None) -> Iterator[AuditEntry]:
        # Read in pages so a long log neither holds the catalog lock for the whole
        # walk nor sits in memory.
        where = "seq > ?"
        extra: tuple[Any, ...] = ()
        if since is not None:
            where += " AND ts_epoch >= ?"
            extra = (to_epoch(since),)
        last = 0
        while True:
            rows = self.catalog.query(
                "SELECT seq, ts, actor, action, subject, data, prev_hash, hash FROM audit "
                f"WHERE {where} ORDER BY seq LIMIT 5000",
                (last, *extra),
            )
            if not rows:
                return
            for r in rows:
                yield AuditEntry(int(r[0]), r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])
            last = int(rows[-1][0])

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` newest entries, newest first (the console's event list)."""
        rows = self.catalog.query(
            "SELECT seq, ts, actor, action, subject, data, prev_hash, hash FROM audit "
            "ORDER BY seq DESC LIMIT ?",
            (max(0, limit),),
        )
        return [
            AuditEntry(int(r[0]), r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]).as_dict()
            for r in rows
        ]

    def _chain(
        self, newest_only: bool = False
    ) -> tuple[Iterator[AuditEntry], dict[str, str], tuple[int, str]]:
        """Archived entries then live ones, the archive hashes as they are read, and
        the (seq, hash) the first entry follows."""
        # Imported here: audit_archive builds on this module.
        from edge_agent.store.audit_archive import archived_entries

        archived, hashes, start = archived_entries(self.catalog, newest_only=newest_only)
        return itertools.chain(archived, self._rows()), hashes, start

    def export(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Entries in seq order as dicts, archives first (``since`` filters on the time)."""
        from edge_agent.store.audit_archive import ArchiveError

        entries, _, _ = self._chain()
        floor = None if since is None else iso(since)
        try:
            for entry in entries:
                # ISO 8601 UTC text with one format compares in time order.
                if floor is None or entry.ts >= floor:
                    yield entry.as_dict()
        except ArchiveError as exc:
            raise AuditUnreadable(exc.reason) from None

    def verify(self, *, newest_archive_only: bool = False) -> AuditVerdict:
        """Walk archives and live chain, then check both head anchors.

        ``newest_archive_only`` checks the live chain and its link through the newest
        archive only: a time that stays flat as archives accumulate (the daily check;
        the full walk grows with the history, docs/storage.md).
        """
        from edge_agent.store.audit_archive import SEALED_ACTION, ArchiveError

        head_file = self._read_head_file()
        file_seq = head_file[0] if isinstance(head_file, tuple) else 0
        hash_at_file_seq: str | None = None
        anchored: set[str] = set()
        count = 0
        try:
            entries, archive_hashes, (count, prev_hash) = self._chain(newest_archive_only)
            for e in entries:
                bad = _check_entry(e, count, prev_hash)
                if bad is not None:
                    return self._in_archive(bad, e.seq)
                skip = newest_archive_only and e.data.get("file") not in archive_hashes
                if e.action == SEALED_ACTION and not skip:
                    bad = _check_seal(e, count, archive_hashes)
                    if bad is not None:
                        return bad
                    anchored.add(str(e.data.get("file")))
                if e.seq == file_seq:
                    hash_at_file_seq = e.hash
                prev_hash = e.hash
                count += 1
        except ArchiveError as exc:
            return _bad(count, exc.seq, exc.reason)
        unanchored = sorted(set(archive_hashes) - anchored)
        if unanchored:
            return _bad(count, None, f"archive {unanchored[0]} has no audit.sealed entry naming it")
        return (
            self._check_meta_head(count, prev_hash)
            or self._check_head_file(count, head_file, hash_at_file_seq)
            or AuditVerdict(True, count)
        )

    def _in_archive(self, bad: AuditVerdict, seq: int) -> AuditVerdict:
        """``bad``, naming the archive file that holds entry ``seq`` when one does."""
        from edge_agent.store.audit_archive import archive_dir, list_archives

        for first, last, path in list_archives(archive_dir(self.catalog.path)):
            if first <= seq <= last:
                return dataclasses.replace(bad, reason=f"{bad.reason} (in archive {path.name})")
        return bad

    def _check_meta_head(self, last_seq: int, last_hash: str) -> AuditVerdict | None:
        seq_text = self.catalog.get_meta(HEAD_SEQ_KEY)
        if seq_text is None:
            if last_seq == 0:
                return None
            return _bad(
                last_seq,
                None,
                "the head anchor in the catalog meta table is missing: it was deleted",
            )
        meta_seq = int(seq_text)
        if meta_seq > last_seq:
            return _bad(
                last_seq,
                last_seq + 1,
                f"entries {last_seq + 1}..{meta_seq} are missing at the end "
                f"(the catalog head anchor says {meta_seq}): the log was truncated",
            )
        if meta_seq < last_seq:
            return _bad(
                last_seq,
                meta_seq + 1,
                f"entries after {meta_seq} are beyond the catalog head anchor: "
                "they were added outside edge-agent",
            )
        if self.catalog.get_meta(HEAD_HASH_KEY) != last_hash:
            return _bad(
                last_seq, last_seq, f"entry {last_seq} does not match the catalog head anchor"
            )
        return None

    def _read_head_file(self) -> tuple[int, str] | str | None:
        """(seq, hash), None when absent, or why it cannot be read."""
        try:
            doc = json.loads(self.head_path.read_text(encoding="utf-8"))
            return int(doc["seq"]), str(doc["hash"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            return f"{type(exc).__name__}: {exc}"

    def _check_head_file(
        self, last_seq: int, head_file: tuple[int, str] | str | None, hash_at_seq: str | None
    ) -> AuditVerdict | None:
        if head_file is None:
            if last_seq == 0:
                return None
            return _bad(
                last_seq,
                None,
                f"head anchor file {self.head_path} is missing, so a truncated log cannot "
                "be ruled out: restore it from a backup",
            )
        if isinstance(head_file, str):
            return _bad(
                last_seq, None, f"head anchor file {self.head_path} is unreadable ({head_file})"
            )
        file_seq, file_hash = head_file
        if file_seq > last_seq:
            return _bad(
                last_seq,
                last_seq + 1,
                f"entries {last_seq + 1}..{file_seq} are missing at the end "
                f"({self.head_path} says {file_seq}): the log was truncated",
            )
        # Behind the chain is allowed (crash between commit and the file write), but
        # the entry it names must still be the one it anchored.
        if file_seq > 0 and hash_at_seq != file_hash:
            return _bad(
                last_seq,
                file_seq,
                f"entry {file_seq} does not match {self.head_path}: the log was rewritten",
            )
        return None


class AuditUnreadable(Exception):
    """An archive of the log cannot be read (export stops; verify names it)."""


def _check_entry(e: AuditEntry, count: int, prev_hash: str) -> AuditVerdict | None:
    expected = count + 1
    if e.seq != expected:
        return _bad(
            count,
            expected,
            f"entry {expected} is missing (entry {e.seq} follows entry "
            f"{expected - 1}): entries were removed",
        )
    recomputed = entry_hash(e.seq, e.ts, e.actor, e.action, e.subject, e.data, e.prev_hash)
    if recomputed != e.hash:
        return _bad(
            count,
            e.seq,
            f"entry {e.seq} ({e.action}) does not match its hash: it was edited "
            "or moved from another position",
        )
    if e.prev_hash != prev_hash:
        return _bad(
            count,
            e.seq,
            f"entry {e.seq} ({e.action}) does not follow entry {e.seq - 1}: "
            "entries were removed, replaced or reordered",
        )
    return None


def _check_seal(e: AuditEntry, count: int, archive_hashes: dict[str, str]) -> AuditVerdict | None:
    """An ``audit.sealed`` entry anchors its archive file's SHA-256 in the chain."""
    name = str(e.data.get("file"))
    got = archive_hashes.get(name)
    if got is None:
        return _bad(count, e.seq, f"archive {name} (sealed by entry {e.seq}) is missing")
    if got != e.data.get("sha256"):
        return _bad(
            count,
            e.seq,
            f"archive {name} does not match the SHA-256 in entry {e.seq}: it was altered",
        )
    return None


def _bad(entries: int, seq: int | None, reason: str) -> AuditVerdict:
    return AuditVerdict(False, entries, seq, reason)
