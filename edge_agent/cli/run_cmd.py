"""``edge-agent run``: the daemon."""

from __future__ import annotations

import argparse

from edge_agent.catalog import CatalogError
from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    CliError,
    add_command,
    add_config_arg,
    error,
)
from edge_agent.config import ConfigError
from edge_agent.migrations import MigrationError


def _run(args: argparse.Namespace) -> int:
    import logging

    from edge_agent import daemon

    # The daemon's log is its journal: INFO unless asked for less.
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    try:
        return daemon.main(args.config)
    except ConfigError as exc:
        problems = exc.problems or [str(exc)]
        for line in problems[:-1]:
            error(line)
        raise CliError(problems[-1], EXIT_BAD_INPUT) from None
    except (CatalogError, MigrationError) as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "run",
        help="run the agent (adopt, record, report over MQTT) until stopped",
        description=(
            "Run the daemon: watched folders, MQTT (status, telemetry, events, commands) "
            "as tasks of one event loop. SIGTERM stops it gracefully within 10 s "
            "(publishing offline first); a second SIGTERM stops it at once."
        ),
        example="edge-agent run --config /etc/edge-agent/config.toml",
        func=_run,
    )
    add_config_arg(p)
