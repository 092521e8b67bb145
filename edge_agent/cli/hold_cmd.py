"""``edge-agent hold add|list|release|extend``: holds stop deletion (docs/retention-policy.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

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
from edge_agent.cli._context import check_location, load_cli_config, open_cli_catalog
from edge_agent.cli.recordings_cmd import utc_time
from edge_agent.core.model import Hold, HoldKind, utcnow
from edge_agent.retention.holds import HoldError, extend_hold, hold_doc, place_hold, release_hold
from edge_agent.store.catalog import Catalog

if TYPE_CHECKING:
    from edge_agent.config.config import Config


def _add(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args.config)
    window = (args.location, args.from_, args.to)
    if args.recording and any(v is not None for v in window):
        raise CliError("use --recording, or --location with --from and --to, not both", 2)
    if not args.recording:
        if any(v is None for v in window):
            raise CliError(
                "a hold needs --recording ID (repeatable) or all of --location, --from, --to",
                EXIT_BAD_INPUT,
            )
        check_location(cfg, args.location)
    hold = _change(
        args,
        cfg,
        lambda cat: place_hold(
            cat,
            kind=HoldKind(args.kind),
            reason=args.reason,
            by=args.by,
            now=utcnow(),
            recording_ids=args.recording or (),
            location=args.location,
            start=args.from_,
            end=args.to,
            until=args.until,
        ),
    )
    if not args.json:
        sys.stdout.write(f"placed {hold.id} ({hold.kind})\n")
    return EXIT_OK


def _change(args: argparse.Namespace, cfg: Config, op: Callable[[Catalog], Hold]) -> Hold:
    """Run one hold change on the catalog; bad input exits 2; ``--json`` prints the hold."""
    # A writing command creates the catalog on a provisioned device whose daemon has
    # not run yet: a hold placed before the first start must not be refused.
    cat = open_cli_catalog(cfg, create=True)
    try:
        hold = op(cat)
    except HoldError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    finally:
        cat.close()
    if args.json:
        print_json(hold_doc(hold))
    return hold


def _list(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args.config)
    cat = open_cli_catalog(cfg)
    try:
        holds = cat.holds.list(include_released=args.all)
    finally:
        cat.close()
    docs = [hold_doc(h) for h in holds]
    if args.json:
        print_json(docs)
        return EXIT_OK
    for d in docs:
        scope = (
            "recordings " + ", ".join(d["recording_ids"])
            if d["recording_ids"]
            else f"{d['location']} {d['from']}..{d['to']}"
        )
        state = f"released {d['released_at']} by {d['released_by']}" if d["released_at"] else "open"
        sys.stdout.write(
            f"{d['id']}  {d['kind']}  {scope}  until {d['until'] or '-'}  {state}  "
            f"by {d['placed_by']}: {d['reason']}\n"
        )
    sys.stdout.write(f"{len(docs)} hold(s)\n")
    return EXIT_OK


def _release(args: argparse.Namespace) -> int:
    hold = _change(
        args,
        load_cli_config(args.config),
        lambda cat: release_hold(cat, args.hold_id, by=args.by, reason=args.reason, now=utcnow()),
    )
    if not args.json:
        sys.stdout.write(f"released {hold.id}\n")
    return EXIT_OK


def _extend(args: argparse.Namespace) -> int:
    hold = _change(
        args,
        load_cli_config(args.config),
        lambda cat: extend_hold(
            cat, args.hold_id, until=args.until, by=args.by, reason=args.reason, now=utcnow()
        ),
    )
    if not args.json:
        sys.stdout.write(f"{hold.id} now held until {hold_doc(hold)['until']}\n")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(
        sub,
        "hold",
        help="place, list, extend and release holds (held footage is never deleted)",
        example="edge-agent hold list --config /etc/edge-agent/config.toml",
    )
    p = add_command(
        group,
        "add",
        help="place a hold on recordings or on a location and time window",
        description=(
            "Place a hold: nothing deletes held footage (retention, disk pressure, erase). "
            "Scope is --recording ID (repeatable) or --location with --from and --to. "
            "Audited as hold.placed."
        ),
        example=(
            "edge-agent hold add --location gate --from 2026-11-20T10:00:00Z "
            "--to 2026-11-20T11:00:00Z --kind incident --reason 'theft report 117' --by alice"
        ),
        func=_add,
    )
    add_config_arg(p)
    p.add_argument("--recording", action="append", metavar="ID", help="recording id (repeatable)")
    p.add_argument("--location", help="location id from the config")
    p.add_argument("--from", dest="from_", type=utc_time, help="window start (ISO 8601)")
    p.add_argument("--to", type=utc_time, help="window end (ISO 8601)")
    p.add_argument("--kind", required=True, choices=[k.value for k in HoldKind])
    p.add_argument("--reason", required=True, help="why (shown in the audit log)")
    p.add_argument("--by", required=True, help="who places it")
    p.add_argument("--until", type=utc_time, help="expiry (ISO 8601); default: until released")
    add_json_arg(p)

    p = add_command(
        group,
        "list",
        help="list open holds (--all: released too)",
        example="edge-agent hold list --json",
        func=_list,
    )
    add_config_arg(p)
    p.add_argument("--all", action="store_true", help="include released holds")
    add_json_arg(p)

    p = add_command(
        group,
        "release",
        help="release a hold (audited); its footage becomes deletable again",
        example="edge-agent hold release hold-1a2b3c4d5e6f --by alice --reason 'case closed'",
        func=_release,
    )
    add_config_arg(p)
    p.add_argument("hold_id", metavar="ID")
    p.add_argument("--by", required=True)
    p.add_argument("--reason", required=True)
    add_json_arg(p)

    p = add_command(
        group,
        "extend",
        help="move a hold's expiry (audited)",
        example=(
            "edge-agent hold extend hold-1a2b3c4d5e6f --until 2027-01-31T00:00:00Z "
            "--by alice --reason 'investigation continues'"
        ),
        func=_extend,
    )
    add_config_arg(p)
    p.add_argument("hold_id", metavar="ID")
    p.add_argument("--until", type=utc_time, required=True, help="new expiry (ISO 8601)")
    p.add_argument("--by", required=True)
    p.add_argument("--reason", required=True)
    add_json_arg(p)
