"""``edge-agent config check``: validate a config file before the daemon sees it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    add_command,
    add_config_arg,
    add_group,
    add_json_arg,
    print_json,
)
from edge_agent.config.config import ConfigError, load_config

if TYPE_CHECKING:
    from edge_agent.config.config import Config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(
        sub,
        "config",
        help="validate the configuration",
        example="edge-agent config check --config /etc/edge-agent/config.toml",
    )
    check = add_command(
        group,
        "check",
        help="validate a config file: exit 0, or 2 with one line per problem on stderr",
        example=(
            "edge-agent config check --config /etc/edge-agent/config.toml\n"
            "edge-agent config check --config site.toml --no-file-checks --json"
        ),
        func=cmd_check,
    )
    add_config_arg(check)
    add_json_arg(check)
    check.add_argument(
        "--no-file-checks",
        action="store_true",
        help="do not require key, certificate and token files to exist "
        "(checking a config meant for another machine)",
    )


def _footage_warnings(cfg: Config) -> list[str]:
    # Read-only: config check never creates, migrates or takes over a catalog.
    from edge_agent.core.location_drift import configured, location_drift
    from edge_agent.store.recordings import read_footage_by_location

    rows = read_footage_by_location(cfg.storage.catalog)
    return [d.message for d in location_drift(configured(cfg.locations), rows or [])]


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, check_files=not args.no_file_checks)
    except ConfigError as exc:
        if args.json:
            print_json({"ok": False, "path": str(args.config), "problems": exc.problems})
        for line in exc.problems:
            sys.stderr.write(f"{line}\n")
        return EXIT_BAD_INPUT
    warnings = cfg.warnings() + _footage_warnings(cfg)
    if args.json:
        print_json(
            {
                "ok": True,
                "path": str(args.config),
                "device": cfg.device.id,
                "hw_profile": cfg.profile.name,
                "locations": len(cfg.locations),
                "sources": len(cfg.sources),
                "watch": len(cfg.watch),
                "longer_than_notice": cfg.longer_than_notice(),
                "problems": [],
                "warnings": warnings,
            }
        )
    else:
        for line in warnings:
            sys.stderr.write(f"warning: {line}\n")
        sys.stdout.write(
            f"config OK: {args.config} (device {cfg.device.id}, profile {cfg.profile.name}; "
            f"locations: {len(cfg.locations)}, sources: {len(cfg.sources)}, "
            f"watched folders: {len(cfg.watch)})\n"
        )
    return EXIT_OK
