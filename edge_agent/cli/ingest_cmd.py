"""``edge-agent ingest``: adopt files once, through the same path as watched folders."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    add_command,
    add_config_arg,
    add_json_arg,
    error,
    print_json,
)
from edge_agent.cli._context import act_as_agent, load_cli_config, open_cli_catalog
from edge_agent.core.model import Purpose, iso, utcnow

EXAMPLE = (
    "edge-agent ingest --config /etc/edge-agent/config.toml "
    "--location gate --purpose security /srv/drop/cam-gate/*.mp4"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "ingest",
        help="adopt media files once: tag, strip audio outside audio rooms, catalogue",
        description=(
            "Adopt files into the storage root exactly as a watched folder would. "
            "The original is consumed (moved in, or to quarantine with a reason): "
            "a copy left outside would escape retention."
        ),
        example=EXAMPLE,
        func=run_ingest,
    )
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files to adopt")
    p.add_argument("--location", required=True, help="location id from the config")
    p.add_argument(
        "--purpose", required=True, choices=[x.value for x in Purpose], help="why it was recorded"
    )
    p.add_argument(
        "--anonymized",
        action="store_true",
        help="declare the footage anonymous without the process (needs --anonymized-reason)",
    )
    p.add_argument(
        "--anonymized-reason",
        help="why this footage holds no personal data (stored and audited); "
        "to anonymize footage use `edge-agent anonymize`",
    )


def run_ingest(args: argparse.Namespace) -> int:
    from edge_agent.intake.intake import Intake, IntakeIOError, Outcome
    from edge_agent.intake.runtime import intake_settings, origin_for

    reason = (args.anonymized_reason or "").strip() or None
    if args.anonymized and (reason is None or len(reason) < 8):
        # It exempts footage from every retention limit (docs/anonymization.md).
        raise CliError(
            "--anonymized needs --anonymized-reason (at least 8 characters: why this footage "
            "holds no personal data); or ingest it normally and run `edge-agent anonymize`",
            EXIT_BAD_INPUT,
        )
    if reason is not None and not args.anonymized:
        raise CliError("--anonymized-reason goes with --anonymized", EXIT_BAD_INPUT)
    cfg = load_cli_config(args.config)
    try:
        origin = origin_for(
            cfg,
            args.location,
            Purpose(args.purpose),
            anonymized=args.anonymized,
            anonymized_reason=reason,
        )
    except KeyError as exc:
        raise CliError(f"--location: {exc.args[0]}", EXIT_BAD_INPUT) from None
    owner = act_as_agent(cfg)
    if owner is not None:
        _check_consumable(args.paths, owner.name)
    catalog = open_cli_catalog(cfg, create=True)
    results = []
    failed = False
    with catalog:
        intake = Intake(catalog, intake_settings(cfg), actor="cli:ingest")
        for path in args.paths:
            try:
                result = intake.adopt(path, origin, utcnow())
            except IntakeIOError as exc:
                error(f"{path}: {exc} (left in place; free space and retry)")
                failed = True
                continue
            results.append(result)
            if result.outcome not in (Outcome.ADOPTED, Outcome.DUPLICATE):
                failed = True
            if not args.json:
                _print_line(result)
    if args.json:
        print_json({"results": [r.as_dict() for r in results], "ts": iso(utcnow())})
    return EXIT_FAILURE if failed else EXIT_OK


def _consumable(path: Path) -> bool:
    try:
        path.stat()
    except FileNotFoundError:
        return True  # intake reports a missing file itself
    except OSError:
        return False  # a folder on the way that the agent's user cannot enter
    return os.access(path, os.R_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def _check_consumable(paths: list[Path], user: str) -> None:
    """Ingest moves each original away; after switching from root to the agent's
    user that user must be able to read it and remove it from its folder."""
    bad = [p for p in paths if not _consumable(p)]
    if bad:
        shown = " ".join(str(p) for p in bad)
        raise CliError(
            f"{shown}: {user}, who runs the agent, cannot read it or remove it from its "
            f"folder (ingest consumes the original): chown {user}: {shown} and its folder, "
            "or move it to a folder the agent can write",
            EXIT_FAILURE,
        )


def _print_line(result: object) -> None:
    from edge_agent.intake.intake import IntakeResult

    assert isinstance(result, IntakeResult)
    if result.recording is not None:
        rec = result.recording
        audio = "audio kept" if rec.tags.audio else "no audio"
        if result.audio_removed:
            audio = "audio removed"
        sys.stdout.write(
            f"{result.outcome}: {result.source} -> {rec.path} "
            f"[{rec.tags.location} {rec.tags.purpose} {rec.tags.site} {audio}; "
            f"start {iso(rec.tags.start)} from {rec.tags.time_source}; "
            f"deadline {iso(rec.deadline) if rec.deadline else 'none'}]\n"
        )
    else:
        sys.stdout.write(f"{result.outcome}: {result.source}: {result.reason}\n")
