"""What most commands do first: load the config and open its catalog, with CLI errors.

Config problems exit 2 (one line each on stderr); a missing, foreign or too-new
catalog exits 1 with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.catalog import Catalog, CatalogError, CatalogMismatch, open_catalog_from_config
from edge_agent.cli._base import EXIT_BAD_INPUT, EXIT_FAILURE, CliError, error
from edge_agent.migrations import MigrationError


def load_cli_config(path: Path) -> Any:
    """The config, or CliError (exit 2) with one line per problem."""
    from edge_agent.config import ConfigError, load_config

    try:
        # Reading and maintenance commands do not need the key and certificate files.
        return load_config(path, check_files=False)
    except ConfigError as exc:
        problems = exc.problems or [str(exc)]
        for line in problems[:-1]:
            error(line)
        raise CliError(problems[-1], EXIT_BAD_INPUT) from None


def open_cli_catalog(cfg: Any, *, create: bool = False) -> Catalog:
    """The config's catalog; a catalog of another disk is shown as such (exit 1)."""
    try:
        return open_catalog_from_config(cfg, create=create)
    except CatalogMismatch as exc:
        raise CliError(f"catalog does not match this disk: {exc}", EXIT_FAILURE) from None
    except (CatalogError, MigrationError) as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None


def check_location(cfg: Any, location: str) -> None:
    known = sorted(loc.id for loc in cfg.locations)
    if location not in known:
        raise CliError(
            f"--location: unknown location {location!r} (known: {', '.join(known) or 'none'}); "
            "use a location id from the config",
            EXIT_BAD_INPUT,
        )
