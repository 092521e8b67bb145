"""``edge-agent doctor``: preflight checks, one line each, with the fix.

Run as root, it switches to the user that owns the agent's state (the owner
of the storage root, as the writing commands do): root can write where the
agent cannot, and a catalog opened by root would leave root-owned files the
agent then cannot open.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge_agent.app.doctor import DEFAULT_TIMEOUT, Level, failed, run_checks
from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    add_command,
    add_config_arg,
    add_json_arg,
    print_json,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "doctor",
        help="preflight: config, storage, free space, catalog, clock, broker, sources, signage",
        description=(
            "Check what the agent needs, one line per check: OK, WARN or FAIL with the fix. "
            "Exit 0 when nothing failed, 1 on any FAIL, 2 when the config is invalid."
        ),
        example=(
            "edge-agent doctor --config /etc/edge-agent/config.toml\n"
            "edge-agent doctor --config /etc/edge-agent/config.toml --json"
        ),
        func=cmd_doctor,
    )
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the broker and each camera (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--as-root",
        action="store_true",
        help="run the checks as root instead of as the owner of the agent's state",
    )


def _become_owner(config_path: Path) -> None:
    """As root, switch to the owner of the agent's state (shared with the writing
    commands: ``cli/_context.py``); say so, or say why not and go on as root."""
    if os.geteuid() != 0:
        return
    from edge_agent.cli._context import state_owner, switch_user, unreadable_code
    from edge_agent.config.config import ConfigError, load_config

    try:
        cfg = load_config(config_path, check_files=False)
    except ConfigError:
        return  # the checks report the config itself
    owner = state_owner(cfg)
    if owner is None or owner.uid == 0:
        return
    blocked = unreadable_code(owner)
    if blocked is not None:
        sys.stderr.write(
            f"doctor: {owner.name} cannot read {blocked} (this Python); checking as root, "
            "so 'storage writable' may pass where the agent's user cannot write\n"
        )
        return
    try:
        switch_user(owner)
    except OSError as exc:
        sys.stderr.write(
            f"doctor: cannot run as {owner.name} ({exc.strerror or exc}); checking as root, "
            "so 'storage writable' may pass where the agent's user cannot write\n"
        )
        return
    sys.stderr.write(f"doctor: running the checks as {owner.name}, the owner of the state\n")


def cmd_doctor(args: argparse.Namespace) -> int:
    if not args.as_root:
        _become_owner(args.config)
    checks = run_checks(args.config, timeout=args.timeout)
    bad_config = bool(checks) and checks[0].name == "config" and checks[0].level == Level.FAIL
    if args.json:
        print_json(
            {
                "ok": not failed(checks),
                "config": str(args.config),
                "checks": [c.doc() for c in checks],
            }
        )
    else:
        for check in checks:
            sys.stdout.write(check.line() + "\n")
        counts = {level: sum(c.level == level for c in checks) for level in Level}
        sys.stdout.write(
            f"doctor: {counts[Level.OK]} OK, {counts[Level.WARN]} WARN, {counts[Level.FAIL]} FAIL\n"
        )
    if bad_config:
        return EXIT_BAD_INPUT
    return EXIT_FAILURE if failed(checks) else EXIT_OK
