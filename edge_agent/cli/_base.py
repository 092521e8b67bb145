"""Shared plumbing for CLI subcommands: registration, exit codes, output.

Each ``edge_agent/cli/*_cmd.py`` module exposes ``register(sub)`` and adds its
subcommands with :func:`add_command`, which insists on help text and an
example so that ``tests/cli/test_cli_help.py`` can fail on undocumented commands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

DEFAULT_CONFIG = "/etc/edge-agent/config.toml"

Handler = Callable[[argparse.Namespace], int]
SubParsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CliError(Exception):
    """An error to show the user as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    example: str,
    func: Handler | None = None,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add a documented subcommand. ``example`` is one or more command lines."""
    examples = "\n".join(f"  {line}" for line in example.strip().splitlines())
    parser = sub.add_parser(
        name,
        help=help,
        description=description or help,
        epilog=f"Example:\n{examples}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if func is not None:
        parser.set_defaults(func=func)
    return parser


def add_group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    example: str,
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """A command with subcommands of its own (``hold add``, ``audit verify``)."""
    parser = add_command(sub, name, help=help, example=example)
    inner = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    inner.required = True
    return inner


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=Path(os.environ.get("EDGE_AGENT_CONFIG", DEFAULT_CONFIG)),
        help=f"config file (default: $EDGE_AGENT_CONFIG or {DEFAULT_CONFIG})",
    )


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")


def print_json(doc: Any) -> None:
    """The only way commands write JSON: one document, nothing else on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def print_json_lines(docs: Any) -> None:
    for doc in docs:
        sys.stdout.write(json.dumps(doc, sort_keys=True, default=str) + "\n")


def error(message: str) -> None:
    sys.stderr.write(f"edge-agent: {message}\n")
