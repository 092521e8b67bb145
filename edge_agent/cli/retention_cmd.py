"""``edge-agent retention plan|sweep``, plus config/catalog helpers the retention commands share."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from edge_agent.cli._base import (
    EXIT_FAILURE,
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

if TYPE_CHECKING:
    pass

__all__ = ["check_location", "load_cli_config", "open_cli_catalog", "register"]


# -- retention plan ------------------------------------------------------------


def _plan(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args.config)
    cat = open_cli_catalog(cfg)
    try:
        from edge_agent.app.settings import janitor_settings
        from edge_agent.retention.janitor import Janitor
        from edge_agent.retention.preview import retention_preview

        janitor = Janitor.from_settings(janitor_settings(cfg), cat)
        doc = retention_preview(janitor, args.at or utcnow(), args.limit)
    finally:
        cat.close()
    if args.json:
        print_json(doc)
        return EXIT_OK
    w = sys.stdout.write
    w(f"retention plan at {doc['at']}\n")
    w(
        f"clock: {doc['clock']}"
        + (f" ({doc['clock_reason']})" if doc["clock_reason"] else "")
        + "\n"
    )
    if doc["blocked"]:
        w(f"blocked: {doc['blocked']}\n")
    w(f"would delete: {doc['would_delete_count']} recording(s)\n")
    for d in doc["would_delete"]:
        w(f"  {d['id']}  {d['reason']}  deadline {d['deadline']}  {d['detail']}\n")
    w(f"kept by hold: {len(doc['kept_by_hold'])}\n")
    for k in doc["kept_by_hold"]:
        w(f"  {k['id']}  held by {', '.join(k['holds'])}\n")
    w(f"next deadline: {doc['next_deadline'] or '-'}\n")
    for u in doc["upcoming"]:
        w(f"  {u['deadline']}  {u['id']}  {u['location']}  {u['purpose']}\n")
    if doc["awaiting_deadline"]:
        w(f"awaiting a deadline (recorded under an untrusted clock): {doc['awaiting_deadline']}\n")
    pressure = "yes" if doc["disk_pressure"] else "no"
    w(f"free space: {doc['free_bytes']} B, floor {doc['floor_bytes']} B, pressure: {pressure}\n")
    return EXIT_OK


def _sweep(args: argparse.Namespace) -> int:
    from edge_agent.app.settings import janitor_settings
    from edge_agent.retention.janitor import Janitor

    cfg = load_cli_config(args.config)
    cat = open_cli_catalog(cfg)
    try:
        janitor = Janitor.from_settings(janitor_settings(cfg), cat)
        janitor.actor = "cli"
        janitor.batch = args.batch
        res = janitor.sweep_once()
    finally:
        cat.close()
    doc = res.as_dict()
    if args.json:
        print_json(doc)
        return EXIT_OK
    w = sys.stdout.write
    w(
        f"clock: {doc['clock']}"
        + (f" ({doc['clock_reason']})" if doc["clock_reason"] else "")
        + "\n"
    )
    w(
        f"deleted: {doc['deleted_retention']} for retention, {doc['deleted_pressure']} for disk "
        f"pressure ({doc['bytes_freed']} B freed); finished {doc['finished_interrupted']} "
        "interrupted deletion(s)\n"
    )
    w(f"kept by hold: {len(doc['kept_by_hold'])}; overdue left: {doc['overdue_count']}\n")
    if doc["failed"]:
        w(f"failed: {len(doc['failed'])} (see the log)\n")
    if doc["storage_full_held"]:
        w("storage full of held footage: recording must stop (alarm raised)\n")
    w(f"next deadline: {doc['next_deadline'] or '-'}\n")
    return EXIT_FAILURE if res.failed else EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(
        sub,
        "retention",
        help="preview or run the retention janitor",
        example="edge-agent retention plan --config /etc/edge-agent/config.toml",
    )
    p = add_command(
        group,
        "plan",
        help="what would be deleted at a time, when and why, and what holds keep",
        description=(
            "Preview the retention plan without changing anything: recordings past their "
            "deadline at --at (default now), those kept by holds (with hold ids), the next "
            "deadlines, the clock state and free space against the floor."
        ),
        example="edge-agent retention plan --at 2026-12-01T00:00:00Z --json",
        func=_plan,
    )
    add_config_arg(p)
    p.add_argument("--at", type=utc_time, help="plan for this time (ISO 8601, default now)")
    p.add_argument("--limit", type=int, default=1000, help="list at most this many deletions")
    add_json_arg(p)
    p = add_command(
        group,
        "sweep",
        help="run one janitor pass now (deletes what is due)",
        description=(
            "Finish interrupted deletions, then delete every unheld recording past its "
            "deadline, and under the free-space floor the unheld ones nearest their "
            "deadline, with the crash-safe protocol. Nothing is deleted while the clock "
            "is untrusted."
        ),
        example="edge-agent retention sweep --config /etc/edge-agent/config.toml --json",
        func=_sweep,
    )
    add_config_arg(p)
    p.add_argument("--batch", type=int, default=500, help="recordings per transaction")
    add_json_arg(p)
