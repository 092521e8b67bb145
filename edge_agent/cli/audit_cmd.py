"""``edge-agent audit verify|export|seal``: check, read and seal the audit log."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from edge_agent.cli._base import (
    EXIT_FAILURE,
    EXIT_OK,
    add_command,
    add_config_arg,
    add_group,
    add_json_arg,
    print_json,
    print_json_lines,
)
from edge_agent.cli._context import load_cli_config, open_cli_catalog
from edge_agent.cli.recordings_cmd import open_catalog_for_cli, utc_time
from edge_agent.store.audit import AuditLog, AuditUnreadable
from edge_agent.store.audit_archive import ArchiveError, AuditArchiver


def _verify(args: argparse.Namespace) -> int:
    cat = open_catalog_for_cli(args.config)
    try:
        verdict = AuditLog(cat).verify(newest_archive_only=args.quick)
    finally:
        cat.close()
    if args.json:
        print_json(
            {
                "ok": verdict.ok,
                "entries": verdict.entries,
                "first_bad_seq": verdict.first_bad_seq,
                "reason": verdict.reason,
            }
        )
    elif verdict.ok:
        sys.stdout.write(f"audit OK: {verdict.entries} entries\n")
    else:
        where = (
            f"entry {verdict.first_bad_seq}" if verdict.first_bad_seq is not None else "head anchor"
        )
        sys.stdout.write(
            f"audit FAILED at {where}: {verdict.reason} "
            f"({verdict.entries} entries verified before it)\n"
        )
    return EXIT_OK if verdict.ok else EXIT_FAILURE


def _export(args: argparse.Namespace) -> int:
    cat = open_catalog_for_cli(args.config)
    try:
        print_json_lines(AuditLog(cat).export(args.since))
    except AuditUnreadable as exc:
        sys.stderr.write(f"audit export stopped: {exc}\n")
        return EXIT_FAILURE
    finally:
        cat.close()
    return EXIT_OK


def _seal(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args.config)
    period = cfg.retention.accountability_period
    if period is None:
        sys.stdout.write("nothing to seal: [retention] accountability_period is not set\n")
        return EXIT_OK
    cat = open_cli_catalog(cfg)
    now = datetime.now(UTC)
    try:
        # As the daemon: the longest the period can be (docs/storage.md).
        cutoff = now - timedelta(seconds=period.upper_bound_seconds())
        res = AuditArchiver(cat).seal(now, cutoff, convert=args.vacuum)
    except (ArchiveError, OSError) as exc:
        sys.stderr.write(f"audit seal failed: {exc}\n")
        return EXIT_FAILURE
    finally:
        cat.close()
    if args.json:
        print_json(res.as_dict())
    else:
        sys.stdout.write(
            f"sealed {res.entries} entries and {res.tombstones} tombstones into "
            f"{res.archives} archives ({res.completed_pending} interrupted seals completed)\n"
        )
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(
        sub,
        "audit",
        help="check or export the tamper-evident audit log",
        example="edge-agent audit verify --config /etc/edge-agent/config.toml",
    )
    p = add_command(
        group,
        "verify",
        help="check the audit hash chain, its archives and its head anchors",
        description=(
            "Walk the audit archives and log and check every entry's hash, the link to "
            "the entry before it, each archive's SHA-256 and the head anchors (catalog "
            "meta and <catalog>.audit-head). "
            "Exits 0 when intact, 1 naming the first bad entry and why."
        ),
        example="edge-agent audit verify --config /etc/edge-agent/config.toml",
        func=_verify,
    )
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument(
        "--quick",
        action="store_true",
        help="read only the newest archive (the link to the live chain), not all of them",
    )
    p = add_command(
        group,
        "export",
        help="print audit entries as JSON lines",
        description="Print audit entries in order, one JSON object per line, with their hashes.",
        example=(
            "edge-agent audit export --config /etc/edge-agent/config.toml "
            "--since 2024-05-01T00:00:00Z > audit.jsonl"
        ),
        func=_export,
    )
    add_config_arg(p)
    p.add_argument("--since", type=utc_time, help="only entries at or after this time (ISO 8601)")
    p = add_command(
        group,
        "seal",
        help="seal entries older than the accountability period into archive files",
        description=(
            "Write audit entries and tombstones older than [retention] "
            "accountability_period to compressed archive files next to the catalog, "
            "then remove them from it (the daemon does this hourly). Uses the wall "
            "clock as it is: run it only when the clock is right."
        ),
        example="edge-agent audit seal --config /etc/edge-agent/config.toml",
        func=_seal,
    )
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument(
        "--vacuum",
        action="store_true",
        help="switch an older catalog to incremental vacuum (one full VACUUM; stop the agent)",
    )
