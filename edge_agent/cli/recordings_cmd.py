"""``edge-agent recordings list``: what the catalog holds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    CliError,
    add_command,
    add_config_arg,
    add_group,
    add_json_arg,
    print_json,
)
from edge_agent.cli._context import load_cli_config, open_cli_catalog
from edge_agent.core.model import Purpose, Recording, RecState, iso, parse_ts, recording_doc
from edge_agent.store.catalog import Catalog


def utc_time(text: str) -> Any:
    """argparse type for ISO 8601 times (naive = UTC)."""
    try:
        return parse_ts(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2024-05-01T00:00:00Z)"
        ) from None


def open_catalog_for_cli(config_path: Path) -> Catalog:
    """Load the config and open its existing catalog, or raise CliError."""
    return open_cli_catalog(load_cli_config(config_path))


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _print_table(recs: list[Recording]) -> None:
    header = ("START", "DUR", "LOCATION", "PURPOSE", "STATE", "SIZE", "DEADLINE", "ID", "PATH")
    rows = [
        (
            iso(r.start),
            f"{(r.end - r.start).total_seconds():.0f}s",
            r.location,
            str(r.tags.purpose),
            str(r.state),
            _human_size(r.size),
            iso(r.deadline) if r.deadline else "-",
            r.id,
            r.path,
        )
        for r in recs
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        sys.stdout.write("\n")
    sys.stdout.write(f"{len(recs)} recording(s)\n")


def _list(args: argparse.Namespace) -> int:
    if args.since and args.until and args.since > args.until:
        raise CliError(
            f"--since {iso(args.since)} is after --until {iso(args.until)}: swap them",
            EXIT_BAD_INPUT,
        )
    if args.state:
        states = tuple(dict.fromkeys(RecState(s) for s in args.state))
    else:
        states = (RecState.ACTIVE,)
    if args.include_restricted and RecState.RESTRICTED not in states:
        states = (*states, RecState.RESTRICTED)
    cat = open_catalog_for_cli(args.config)
    try:
        recs = cat.recordings.list(
            location=args.location,
            purpose=Purpose(args.purpose) if args.purpose else None,
            since=args.since,
            until=args.until,
            states=states,
            limit=args.limit,
        )
    finally:
        cat.close()
    if args.json:
        print_json([recording_doc(r) for r in recs])
    else:
        _print_table(recs)
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(
        sub,
        "recordings",
        help="inspect catalogued recordings",
        example="edge-agent recordings list --config /etc/edge-agent/config.toml",
    )
    p = add_command(
        group,
        "list",
        help="list recordings (active only unless --state/--include-restricted)",
        description=(
            "List catalogued recordings, oldest first. --since/--until select "
            "recordings that overlap the interval. Restricted recordings (data-subject "
            "restriction) are left out unless asked for."
        ),
        example=(
            "edge-agent recordings list --config /etc/edge-agent/config.toml "
            "--location gate --since 2024-05-01T00:00:00Z --json"
        ),
        func=_list,
    )
    add_config_arg(p)
    p.add_argument("--location", help="only this location id")
    p.add_argument("--purpose", choices=[x.value for x in Purpose], help="only this purpose")
    p.add_argument("--since", type=utc_time, help="ending at or after this time (ISO 8601)")
    p.add_argument("--until", type=utc_time, help="starting at or before this time (ISO 8601)")
    p.add_argument(
        "--state",
        action="append",
        choices=[x.value for x in RecState],
        help="only recordings in this state (repeatable; default: active)",
    )
    p.add_argument(
        "--include-restricted", action="store_true", help="also list restricted recordings"
    )
    p.add_argument("--limit", type=int, help="at most this many rows")
    add_json_arg(p)
