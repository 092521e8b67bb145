"""``edge-agent report holdings``: what the device holds of a place at a moment (docs/export.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edge_agent.cli._base import (
    EXIT_OK,
    add_command,
    add_config_arg,
    add_group,
    add_json_arg,
    print_json,
)
from edge_agent.cli._context import check_location, load_cli_config, open_cli_catalog
from edge_agent.cli.recordings_cmd import utc_time
from edge_agent.core.model import utcnow


def _print(doc: dict[str, Any]) -> None:
    w = sys.stdout.write
    w(f"holdings at {doc['location']} on {doc['at']} (asked {doc['asked_at']})\n")
    for title, key in (("recordings", "recordings"), ("anonymized derivatives", "derivatives")):
        w(f"{title}: {len(doc[key])}\n")
        for r in doc[key]:
            w(
                f"  {r['id']}  {r['start']} .. {r['end']}  {r['purpose']} ({r['state']})"
                f"  {r['goes']}\n"
            )
    w(f"holds: {len(doc['holds'])}\n")
    for h in doc["holds"]:
        until = h["until"] or "until released"
        w(f"  {h['id']}  {h['kind']}: {h['reason']} (by {h['placed_by']}, until {until})\n")
    w(f"restrictions: {len(doc['restrictions'])}\n")
    for r in doc["restrictions"]:
        w(f"  {r['request_ref']}  {r['from']} .. {r['to']}\n")


def _holdings(args: argparse.Namespace) -> int:
    from edge_agent.export.holdings import holdings, holdings_doc

    cfg = load_cli_config(args.config)
    check_location(cfg, args.location)
    now = utcnow()
    cat = open_cli_catalog(cfg)
    try:
        doc = holdings_doc(holdings(cat, args.location, args.at, now), args.location, args.at, now)
    finally:
        cat.close()
    if args.json:
        print_json(doc)
    else:
        _print(doc)
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(
        sub,
        "report",
        help="reports for the data-protection officer",
        example="edge-agent report holdings --location gate --at 2026-11-20T10:15:00Z",
    )
    p = add_command(
        group,
        "holdings",
        help="what is held of a location at a moment, why, and when it goes",
        description=(
            "Recordings and anonymized derivatives of --location that cover --at (restricted "
            "ones included), with purpose, deadline and the holds keeping them; the holds and "
            "restrictions that cover that place and moment."
        ),
        example="edge-agent report holdings --location gate --at 2026-11-20T10:15:00Z --json",
        func=_holdings,
    )
    add_config_arg(p)
    p.add_argument("--location", required=True, help="location id")
    p.add_argument("--at", required=True, type=utc_time, help="the moment (ISO 8601)")
    add_json_arg(p)
