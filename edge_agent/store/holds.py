"""The ``holds`` rows (docs/retention-policy.md: incident holds and R&D extensions).

``Catalog.holds`` is a :class:`HoldStore`; :func:`salvage_holds` reads them from a
catalog moved aside by ``catalog rebuild``.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.core.model import Hold
from edge_agent.store.errors import UnknownRecord
from edge_agent.store.rows import HOLD_COLUMNS, hold_params, opt_epoch, row_to_hold, to_epoch

if TYPE_CHECKING:
    from edge_agent.store.catalog import Catalog

__all__ = ["HoldStore", "salvage_holds"]


class HoldStore:
    """Rows of the ``holds`` table; reach it as ``catalog.holds``."""

    def __init__(self, catalog: Catalog) -> None:
        self._cat = catalog

    def add(self, h: Hold) -> None:
        self._cat.execute(
            f"INSERT INTO holds ({HOLD_COLUMNS}) VALUES ({', '.join('?' * 12)})",
            hold_params(h),
        )

    def get(self, id: str) -> Hold | None:
        rows = self._cat.query(f"SELECT {HOLD_COLUMNS} FROM holds WHERE id = ?", (id,))
        return row_to_hold(rows[0]) if rows else None

    def list(self, *, include_released: bool = False) -> list[Hold]:
        sql = f"SELECT {HOLD_COLUMNS} FROM holds"
        if not include_released:
            sql += " WHERE released_at IS NULL"
        return [row_to_hold(r) for r in self._cat.query(sql + " ORDER BY placed_at, id")]

    def set_expiry(self, id: str, expires: datetime | None) -> None:
        """Extend (or shorten) an open hold."""
        cur = self._cat.execute(
            "UPDATE holds SET expires = ? WHERE id = ? AND released_at IS NULL",
            (opt_epoch(expires), id),
        )
        if cur.rowcount == 0:
            raise UnknownRecord(f"no open hold with id {id!r} in {self._cat.path}")

    def release(self, id: str, *, by: str, reason: str, at: datetime) -> None:
        cur = self._cat.execute(
            "UPDATE holds SET released_at = ?, released_by = ?, release_reason = ? "
            "WHERE id = ? AND released_at IS NULL",
            (to_epoch(at), by, reason, id),
        )
        if cur.rowcount == 0:
            raise UnknownRecord(f"no open hold with id {id!r} in {self._cat.path}")


def salvage_holds(old: Path) -> tuple[list[Hold], str | None]:
    """Holds readable from a moved-aside catalog, read-only, and a note if some were not.

    Holds are hard to recreate (docs/operator-guide.md, ``catalog rebuild``): take every
    one that reads, and say what went wrong instead of raising.
    """
    try:
        conn = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
        try:
            rows = conn.execute(f"SELECT {HOLD_COLUMNS} FROM holds").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [], f"holds could not be read from {old} ({exc}): place them again"
    out = []
    for r in rows:
        try:
            out.append(row_to_hold(r))
        except (ValueError, TypeError) as exc:
            return out, f"a hold in {old} is unreadable ({exc}): check `hold list`"
    return out, None
