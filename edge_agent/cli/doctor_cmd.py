"""``edge-agent doctor``: preflight checks, one line each, with the fix.

Run as root, it re-runs itself as the user that owns the agent's state (the
owner of the catalog, or of its folder): root can write where the agent
cannot, and a catalog opened by root would leave root-owned files the agent
then cannot open.
"""

from __future__ import annotations

import argparse
import os
import pwd
import subprocess
import sys
from pathlib import Path

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    add_command,
    add_config_arg,
    add_json_arg,
    print_json,
)
from edge_agent.doctor import DEFAULT_TIMEOUT, Level, failed, run_checks

_AS_OWNER_ENV = "EDGE_AGENT_DOCTOR_AS_OWNER"


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


def _state_owner(config_path: Path) -> int | None:
    """The uid owning the catalog (or its folder), if not ours and we are root."""
    if os.geteuid() != 0 or os.environ.get(_AS_OWNER_ENV):
        return None
    from edge_agent.config import ConfigError, load_config

    try:
        cfg = load_config(config_path, check_files=False)
    except ConfigError:
        return None
    for candidate in (cfg.storage.catalog, cfg.storage.catalog.parent):
        try:
            uid = candidate.stat().st_uid
        except OSError:
            continue
        return uid if uid != 0 else None
    return None


def _rerun_as(uid: int, args: argparse.Namespace) -> int | None:
    """The exit code of doctor re-run as ``uid``, or None if it could not be started."""
    user = pwd.getpwuid(uid)
    sys.stderr.write(f"doctor: running the checks as {user.pw_name}, the owner of the state\n")
    argv = [sys.executable, "-m", "edge_agent", "doctor", "--config", str(args.config)]
    argv += ["--timeout", str(args.timeout)] + (["--json"] if args.json else [])
    env = {**os.environ, _AS_OWNER_ENV: "1", "HOME": user.pw_dir}
    try:
        return subprocess.run(
            argv,
            user=uid,
            group=user.pw_gid,
            extra_groups=os.getgrouplist(user.pw_name, user.pw_gid),
            env=env,
            check=False,
        ).returncode
    except OSError as exc:
        sys.stderr.write(
            f"doctor: cannot run as {user.pw_name} ({exc.strerror or exc}); checking as root, "
            "so 'storage writable' may pass where the agent's user cannot write\n"
        )
        return None


def cmd_doctor(args: argparse.Namespace) -> int:
    if not args.as_root:
        owner = _state_owner(args.config)
        code = _rerun_as(owner, args) if owner is not None else None
        if code is not None:
            return code
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
