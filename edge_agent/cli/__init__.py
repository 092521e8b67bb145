"""The ``edge-agent`` command line: a thin layer over the library.

Subcommands live in ``*_cmd.py`` modules listed in ``COMMANDS``; each
parses, calls library functions and formats. Logs go to stderr so that
``--json`` output on stdout stays clean.

Only the module of the command being run is imported: ``edge-agent run`` is the
daemon, and every module it does not need (cryptography for ``keys``, the
doctor's checks, provisioning) would stay in its memory for months.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edge_agent import __version__
from edge_agent.cli._base import EXIT_BAD_INPUT, EXIT_FAILURE, CliError, error

# Top-level command -> the module that registers it (``--help`` order).
COMMANDS: dict[str, str] = {
    "config": "config_cmd",
    "profile": "profile_cmd",
    "recordings": "recordings_cmd",
    "audit": "audit_cmd",
    "ingest": "ingest_cmd",
    "demo": "demo_cmd",
    "run": "run_cmd",
    "keys": "keys_cmd",
    "command": "command_cmd",
    "status": "status_cmd",
    "hold": "hold_cmd",
    "erase": "erase_cmd",
    "export": "export_cmd",
    "report": "report_cmd",
    "retention": "retention_cmd",
    "clock": "clock_cmd",
    "reconcile": "reconcile_cmd",
    "catalog": "reconcile_cmd",
    "provision": "provision_cmd",
    "doctor": "doctor_cmd",
    "anonymize-file": "anonymize_cmd",
    "fleet": "fleet_cmd",
}
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMANDS.values()))


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (global options take no values), if known."""
    for token in argv:
        if token == "--":
            return None
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or with just ``only`` and its module's siblings."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description=(
            "Records, tags and enforces retention of video on a camera gateway, "
            "and reports over MQTT."
        ),
        epilog="Example:\n  edge-agent config check --config /etc/edge-agent/config.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in (COMMANDS[only],) if only in COMMANDS else COMMAND_MODULES:
        module = importlib.import_module(f"edge_agent.cli.{name}")
        module.register(sub)
    return parser


def prepare(command: str | None) -> None:
    """Process set-up that must come before the command's imports."""
    if command == "run":
        import os

        # Outside the unit (UMask=0027) an admin's umask must not make new
        # folders or files readable by every user.
        os.umask(os.umask(0o027) | 0o027)
        _raise_fd_limit()
        from edge_agent.host import lean, memtune

        memtune.tune()  # before the daemon's imports allocate and its threads start
        lean.for_daemon()


# What the unit sets (LimitNOFILE=): started by hand under a soft limit of 1024,
# the daemon takes as much of the hard limit as the unit would give it.
DAEMON_NOFILE = 4096


def _raise_fd_limit() -> None:
    import contextlib
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = DAEMON_NOFILE if hard == resource.RLIM_INFINITY else min(DAEMON_NOFILE, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        # A seccomp filter (the unit's ~@resources) refuses; the unit set it then.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: Sequence[str] | None = None) -> int:
    command = _command_of(sys.argv[1:] if argv is None else argv)
    prepare(command)
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except CliError as exc:
        error(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE
    except OSError as exc:
        error(f"{exc}")
        return EXIT_FAILURE
    return code


__all__ = ["COMMANDS", "EXIT_BAD_INPUT", "build_parser", "main", "prepare"]
