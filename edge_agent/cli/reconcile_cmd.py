"""``edge-agent reconcile`` and ``edge-agent catalog rebuild``: disk against catalog."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from edge_agent.cli._base import (
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    add_command,
    add_config_arg,
    add_group,
    add_json_arg,
    print_json,
)
from edge_agent.cli._context import act_as_agent, load_cli_config, open_cli_catalog
from edge_agent.core.model import utcnow
from edge_agent.intake.intake import IntakeSettings

if TYPE_CHECKING:
    from edge_agent.config.config import Config


def _settings(cfg: Config) -> IntakeSettings:
    from edge_agent.app.settings import intake_settings

    try:
        return intake_settings(cfg)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None


def _reconcile(args: argparse.Namespace) -> int:
    from edge_agent.app.reconcile import reconcile

    cfg = load_cli_config(args.config)
    settings = _settings(cfg)
    cat = open_cli_catalog(cfg)
    try:
        rep = reconcile(
            cat,
            cfg.storage.root,
            settings,
            dry_run=args.dry_run,
            force=args.force,
            now=utcnow(),
            actor="cli",
        )
    finally:
        cat.close()
    doc = rep.as_dict()
    if args.json:
        print_json(doc)
    else:
        w = sys.stdout.write
        w(f"catalogued live recordings: {rep.live_rows}\n")
        verb = "would re-adopt" if args.dry_run or rep.refused else "re-adopted"
        w(f"{verb} from embedded tags: {len(rep.readopted)}\n")
        for r in rep.readopted[:50]:
            w(f"  {r['id']}  {r['path']}\n")
        verb = "would mark" if args.dry_run or rep.refused else "marked"
        w(f"{verb} missing (file gone): {len(rep.missing)}\n")
        for r in rep.missing[:50]:
            w(f"  {r['id']}  {r['path']}\n")
        if rep.reappeared:
            w(f"found again: {len(rep.reappeared)}\n")
        if rep.untagged:
            w(f"untagged media left in place (not ours, not deleted): {len(rep.untagged)}\n")
            for p in rep.untagged[:50]:
                w(f"  {p}\n")
        for u in rep.unreadable[:50]:
            w(f"unreadable: {u['path']}: {u['why']}\n")
        for c in rep.conflicts[:50]:
            w(f"conflict: {c['path']}: {c['why']}\n")
        if rep.partials_removed:
            verb = "would remove" if args.dry_run or rep.refused else "removed"
            w(f"{verb} abandoned partial files: {len(rep.partials_removed)}\n")
    if rep.refused:
        sys.stderr.write(f"edge-agent: {rep.refused}\n")
        return EXIT_FAILURE
    return EXIT_OK


def _rebuild(args: argparse.Namespace) -> int:
    from edge_agent.app.reconcile import rebuild

    cfg = load_cli_config(args.config)
    settings = _settings(cfg)
    act_as_agent(cfg)  # rebuild creates the catalog itself: as the agent, not root
    rep = rebuild(
        cfg.storage.catalog,
        cfg.storage.root,
        settings,
        now=utcnow(),
        actor="cli",
    )
    # The new catalog must open cleanly against this disk before we say it worked.
    open_cli_catalog(cfg).close()
    if args.json:
        print_json(rep.as_dict())
        return EXIT_OK
    w = sys.stdout.write
    for p in rep.moved_aside:
        w(f"moved aside (kept): {p}\n")
    w(f"rebuilt {rep.catalog}: {rep.recordings} recording(s) from embedded tags\n")
    w(f"holds recovered from the old catalog: {rep.holds_recovered}\n")
    if rep.untagged:
        w(f"untagged media left in place: {len(rep.untagged)}\n")
    for u in rep.unreadable[:50]:
        w(f"unreadable: {u['path']}: {u['why']}\n")
    for c in rep.conflicts[:50]:
        w(f"conflict: {c['path']}: {c['why']}\n")
    for n in rep.notes:
        w(f"note: {n}\n")
    return EXIT_FAILURE if rep.notes else EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "reconcile",
        help="compare disk and catalog: re-adopt tagged files, mark missing rows",
        description=(
            "Files without a catalog row are re-adopted from their embedded tags (never "
            "deleted); untagged media is reported and left in place; rows whose file is "
            "gone become 'missing'; abandoned .partial-* files older than a minute are "
            "removed. If more than half of the catalog would change, nothing is changed "
            "and the command exits 1 unless --force."
        ),
        example="edge-agent reconcile --dry-run --config /etc/edge-agent/config.toml",
        func=_reconcile,
    )
    add_config_arg(p)
    p.add_argument("--dry-run", action="store_true", help="report only, change nothing")
    p.add_argument("--force", action="store_true", help="apply even if over half would change")
    add_json_arg(p)

    group = add_group(
        sub,
        "catalog",
        help="catalog maintenance",
        example="edge-agent catalog rebuild --config /etc/edge-agent/config.toml",
    )
    p = add_command(
        group,
        "rebuild",
        help="rebuild a lost or corrupt catalog from the files' embedded tags",
        description=(
            "Stop the agent first. The old catalog (and its WAL and audit head) is moved "
            "aside, never deleted; a new catalog is built from every tagged file under the "
            "storage root with its id and tags, deadlines recomputed, open holds copied "
            "over when the old catalog is still readable. Audited as catalog.rebuilt."
        ),
        example="edge-agent catalog rebuild --config /etc/edge-agent/config.toml --json",
        func=_rebuild,
    )
    add_config_arg(p)
    add_json_arg(p)
