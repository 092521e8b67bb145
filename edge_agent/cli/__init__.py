"""The ``edge-agent`` command line: a thin layer over the library.

Subcommands live in ``*_cmd.py`` modules listed in ``COMMAND_MODULES``; each
parses, calls library functions and formats. Logs go to stderr so that
``--json`` output on stdout stays clean.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edge_agent import __version__
from edge_agent.cli._base import EXIT_BAD_INPUT, EXIT_FAILURE, CliError, error

COMMAND_MODULES: tuple[str, ...] = (
    "config_cmd",
    "profile_cmd",
    "recordings_cmd",
    "audit_cmd",
    "ingest_cmd",
    "demo_cmd",
    "run_cmd",
    "keys_cmd",
    "command_cmd",
    "status_cmd",
    "hold_cmd",
    "erase_cmd",
    "retention_cmd",
    "reconcile_cmd",
    "provision_cmd",
    "doctor_cmd",
)


def build_parser() -> argparse.ArgumentParser:
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
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"edge_agent.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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


__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]
