"""``edge-agent erase``: erase or restrict footage of a place and time window.

The rules are in docs/retention-policy.md.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    add_command,
    add_config_arg,
    add_json_arg,
    print_json,
)
from edge_agent.cli._context import check_location, load_cli_config, open_cli_catalog
from edge_agent.cli.recordings_cmd import utc_time
from edge_agent.core.model import EraseRequest, RequestMode, iso, utcnow
from edge_agent.retention.erasure import execute_request


def _print_receipt(doc: dict[str, Any]) -> None:
    w = sys.stdout.write
    verb = "erase" if doc["mode"] == "erase" else "restrict"
    w(f"receipt for request {doc['ref']} ({verb}, {doc['status']})\n")
    w(f"  location {doc['location']}, window {doc['from']} .. {doc['to']}, at {doc['at']}\n")
    w(f"  matched: {doc['matched_count']}\n")
    label = f"would {verb}" if doc["dry_run"] else ("erased" if verb == "erase" else "restricted")
    w(f"  {label}: {doc['touched_count']}\n")
    for line in doc["touched"]:
        w(f"    {line['id']}  {line['start']} .. {line['end']}  {line['path']}\n")
    for h in doc["held"]:
        w(f"  held: {h['id']} by {', '.join(h['holds'])}\n")
    for f in doc["failed"]:
        w(f"  not done: {f['id']}: {f['why']}\n")
    if doc["reason"]:
        w(f"  {doc['reason']}\n")


def _erase(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args.config)
    check_location(cfg, args.location)
    if args.to < args.from_:
        raise CliError(
            f"--to {iso(args.to)} is before --from {iso(args.from_)}: swap them", EXIT_BAD_INPUT
        )
    if not args.request_ref.strip():
        raise CliError("--request-ref is empty: give the request's reference", EXIT_BAD_INPUT)
    req = EraseRequest(
        ref=args.request_ref.strip(),
        location=args.location,
        start=args.from_,
        end=args.to,
        mode=RequestMode.RESTRICT if args.restrict else RequestMode.ERASE,
    )
    # A request stands for footage adopted later, so it is stored even on a device
    # whose daemon has not created the catalog yet (a dry run creates nothing).
    cat = open_cli_catalog(cfg, create=not args.dry_run)
    try:
        receipt = execute_request(
            cat,
            cfg.storage.root,
            req,
            dry_run=args.dry_run,
            actor=args.by or f"cli:{getpass.getuser()}",
            now=utcnow(),
        )
    finally:
        cat.close()
    doc = receipt.as_dict()
    if args.json:
        print_json(doc)
    else:
        _print_receipt(doc)
    if receipt.blocked:
        if not args.json:
            sys.stderr.write(
                f"edge-agent: erase stopped by hold(s) {', '.join(receipt.blocking_holds)}: "
                "release them first (edge-agent hold release ID --by NAME --reason TEXT)\n"
            )
        return EXIT_FAILURE
    return EXIT_FAILURE if receipt.failed else EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "erase",
        help="erase (or --restrict) footage of a location and time window; prints a receipt",
        description=(
            "Carry out a data-subject request: every recording at --location overlapping "
            "[--from, --to] is erased with the crash-safe deletion protocol, or with "
            "--restrict kept but excluded from listings, exports and the live view. "
            "--dry-run lists what would be touched. An erase that meets a hold changes "
            "nothing, names the hold and exits 1. The receipt is stored in the catalog."
        ),
        example=(
            "edge-agent erase --location gate --from 2026-11-20T10:00:00Z "
            "--to 2026-11-20T10:30:00Z --request-ref DSR-2026-042 --dry-run"
        ),
        func=_erase,
    )
    add_config_arg(p)
    p.add_argument("--location", required=True, help="location id from the config")
    p.add_argument("--from", dest="from_", required=True, type=utc_time, help="window start")
    p.add_argument("--to", required=True, type=utc_time, help="window end (ISO 8601)")
    p.add_argument("--request-ref", required=True, help="the request's reference (receipt key)")
    p.add_argument("--restrict", action="store_true", help="restrict instead of erasing")
    p.add_argument("--dry-run", action="store_true", help="list what would be touched only")
    p.add_argument("--by", help="who carries it out (default: cli:<user>)")
    add_json_arg(p)
