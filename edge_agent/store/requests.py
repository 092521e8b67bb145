"""The ``requests`` rows: data-subject erase/restrict requests and their receipts.

``Catalog.requests`` is a :class:`RequestStore`. A stored request (not a dry run)
stays in force for its window (docs/retention-policy.md): :meth:`RequestStore.standing`
is what retention/erasure.py applies to each recording catalogued later.
"""

from __future__ import annotations

import builtins
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edge_agent.core.model import EraseRequest, RequestMode
from edge_agent.store.rows import from_epoch, to_epoch

if TYPE_CHECKING:
    from edge_agent.store.catalog import Catalog

__all__ = ["RequestStore", "StoredRequest"]


@dataclass(frozen=True)
class StoredRequest:
    request: EraseRequest
    dry_run: bool
    receipt: dict[str, Any]
    created_at: datetime


class RequestStore:
    """Rows of the ``requests`` table; reach it as ``catalog.requests``."""

    def __init__(self, catalog: Catalog) -> None:
        self._cat = catalog

    def add(
        self,
        req: EraseRequest,
        *,
        dry_run: bool,
        receipt: dict[str, Any],
        at: datetime | None = None,
    ) -> None:
        self._cat.execute(
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

    def list(self, *, ref: str | None = None) -> list[StoredRequest]:
        sql = "SELECT * FROM requests"
        params: tuple[Any, ...] = ()
        if ref is not None:
            sql += " WHERE ref = ?"
            params = (ref,)
        out = []
        for row in self._cat.query(sql + " ORDER BY id", params):
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

    def standing(
        self, location: str, start: datetime, end: datetime
    ) -> builtins.list[EraseRequest]:
        """Requests (not dry runs) for ``location`` whose window meets [start, end].

        A request stays in force for its window: a recording catalogued after it
        ran is erased or restricted as it arrives. One entry per (ref, mode).
        """
        rows = self._cat.query(
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
