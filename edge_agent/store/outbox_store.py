"""Durable event outbox in the catalog (the MQTT side drains it).

Events are written in the same transaction as the change they report, so an
event exists if and only if its change committed. ``seq`` comes from a counter
in ``meta`` bumped inside that transaction: a rollback gives the number back,
acknowledged (deleted) rows never free theirs, so receivers see a gap-free,
monotonic sequence per device across restarts.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge_agent.core.model import iso
from edge_agent.store.audit import canonical_json
from edge_agent.store.catalog import Catalog
from edge_agent.store.rows import from_epoch, to_epoch

NEXT_SEQ_KEY = "outbox_next_seq"
CLASSES = ("audit", "telemetry")
RESERVED_KEYS = frozenset({"id", "seq", "ts", "type"})


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    id: str
    ts: datetime
    type: str
    payload: dict[str, Any]
    cls: str = "audit"


def _uuid4s(n: int) -> list[str]:
    """``n`` event ids as ``uuid.uuid4()`` makes them, from one read of the OS's random
    source instead of one per id (batch deletions queue a thousand at a time)."""
    raw = os.urandom(16 * n)
    return [str(uuid.UUID(bytes=raw[i : i + 16], version=4)) for i in range(0, 16 * n, 16)]


class Outbox:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def enqueue(
        self, type: str, data: dict[str, Any], *, ts: datetime, cls: str = "audit"
    ) -> OutboxEntry:
        """Queue an event; inside an open ``catalog.transaction()`` it joins it."""
        if cls not in CLASSES:
            raise ValueError(f"outbox class {cls!r}: use one of {', '.join(CLASSES)}")
        clash = RESERVED_KEYS & data.keys()
        if clash:
            raise ValueError(
                f"event {type!r} data uses reserved key(s) {sorted(clash)}: rename them"
            )
        event_id = str(uuid.uuid4())
        cat = self.catalog
        with cat.transaction():
            seq = int(cat.get_meta(NEXT_SEQ_KEY) or 1)
            payload: dict[str, Any] = {"id": event_id, "seq": seq, "ts": iso(ts), "type": type}
            payload.update(json.loads(canonical_json(data)))
            cat.execute(
                "INSERT INTO outbox (seq, id, ts, type, class, payload, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, event_id, to_epoch(ts), type, cls, canonical_json(payload), time.time()),
            )
            cat.set_meta(NEXT_SEQ_KEY, str(seq + 1))
        return OutboxEntry(seq, event_id, ts, type, payload, cls)

    def enqueue_many(
        self, items: Sequence[tuple[str, dict[str, Any]]], *, ts: datetime, cls: str = "audit"
    ) -> list[OutboxEntry]:
        """Queue several ``(type, data)`` events with one insert; seq stays gap-free."""
        if cls not in CLASSES:
            raise ValueError(f"outbox class {cls!r}: use one of {', '.join(CLASSES)}")
        if not items:
            return []
        for type, data in items:
            if not RESERVED_KEYS.isdisjoint(data):
                clash = sorted(RESERVED_KEYS & data.keys())
                raise ValueError(f"event {type!r} data uses reserved key(s) {clash}: rename them")
        ts_text, ts_epoch, created = iso(ts), to_epoch(ts), time.time()
        ids = _uuid4s(len(items))
        cat = self.catalog
        out: list[OutboxEntry] = []
        with cat.transaction():
            seq = int(cat.get_meta(NEXT_SEQ_KEY) or 1)
            rows = []
            for (type, data), event_id in zip(items, ids, strict=True):
                # JSON-native data (see audit.prepare_entry): no normalising round trip.
                payload = {**data, "id": event_id, "seq": seq, "ts": ts_text, "type": type}
                rows.append((seq, event_id, ts_epoch, type, cls, canonical_json(payload), created))
                out.append(OutboxEntry(seq, event_id, ts, type, payload, cls))
                seq += 1
            cat.conn.executemany(
                "INSERT INTO outbox (seq, id, ts, type, class, payload, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            cat.set_meta(NEXT_SEQ_KEY, str(seq))
        return out

    def peek(self, limit: int = 100, *, cls: str | None = None) -> list[OutboxEntry]:
        """The oldest unacknowledged entries, in seq order."""
        sql = "SELECT seq, id, ts, type, payload, class FROM outbox"
        params: tuple[Any, ...] = ()
        if cls is not None:
            sql += " WHERE class = ?"
            params = (cls,)
        rows = self.catalog.query(sql + " ORDER BY seq LIMIT ?", (*params, int(limit)))
        return [
            OutboxEntry(int(r[0]), r[1], from_epoch(r[2]), r[3], json.loads(r[4]), r[5])
            for r in rows
        ]

    def ack(self, seqs: list[int] | tuple[int, ...] | set[int]) -> int:
        """Forget delivered entries; returns how many were still queued."""
        seq_list = sorted(set(seqs))
        done = 0
        with self.catalog.transaction():
            for i in range(0, len(seq_list), 500):
                chunk = seq_list[i : i + 500]
                cur = self.catalog.execute(
                    f"DELETE FROM outbox WHERE seq IN ({', '.join('?' * len(chunk))})", chunk
                )
                done += cur.rowcount
        return done

    def seqs(self, cls: str, *, before: float | None = None, limit: int | None = None) -> list[int]:
        """Seqs of class ``cls``, oldest first; ``before``: only ``ts`` earlier (epoch s)."""
        sql = "SELECT seq FROM outbox WHERE class = ?"
        params: list[Any] = [cls]
        if before is not None:
            sql += " AND ts < ?"
            params.append(before)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [int(r[0]) for r in self.catalog.query(sql, params)]

    def rows_after(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """``(seq, type, payload)`` of the entries after ``after``, in seq order (the publisher)."""
        rows = self.catalog.query(
            "SELECT seq, type, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def row(self, seq: int) -> tuple[int, str, str] | None:
        """One entry by ``seq``, or None once it is gone."""
        rows = self.catalog.query("SELECT seq, type, payload FROM outbox WHERE seq = ?", (seq,))
        return (int(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def depth(self) -> int:
        return int(self.catalog.query("SELECT COUNT(*) FROM outbox")[0][0])

    def oldest_age(self, now: datetime) -> float | None:
        """Seconds since the oldest queued event's ``ts``; None when empty."""
        value = self.catalog.query("SELECT ts FROM outbox ORDER BY seq LIMIT 1")
        if not value:
            return None
        return max(0.0, to_epoch(now) - float(value[0][0]))
