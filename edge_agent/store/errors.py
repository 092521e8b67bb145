"""What the catalog raises; re-exported by store/catalog.py."""

from __future__ import annotations

__all__ = ["CatalogError", "CatalogMismatch", "UnknownRecord"]


class CatalogError(Exception):
    """The catalog cannot be used as asked."""


class CatalogMismatch(CatalogError):
    """The catalog does not belong to this storage root or device."""


class UnknownRecord(CatalogError, KeyError):
    """No row with that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown record"
