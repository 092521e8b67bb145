"""``edge-agent run``: the daemon."""

from __future__ import annotations

import argparse

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    CliError,
    add_command,
    add_config_arg,
    error,
)
from edge_agent.config.config import Config, ConfigError
from edge_agent.store.catalog import CatalogError
from edge_agent.store.migrations import MigrationError


def _run(args: argparse.Namespace) -> int:
    import logging

    from edge_agent.app import daemon
    from edge_agent.config.config import load_config

    # The daemon's log is its journal: INFO unless asked for less.
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    try:
        cfg = load_config(args.config)
        _log_warnings(cfg)
        return daemon.main(cfg, shutdown_timeout=args.shutdown_timeout)
    except ConfigError as exc:
        problems = exc.problems or [str(exc)]
        for line in problems[:-1]:
            error(line)
        raise CliError(problems[-1], EXIT_BAD_INPUT) from None
    except (CatalogError, MigrationError) as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None


def _log_warnings(cfg: Config) -> None:
    """The same warnings as ``config check`` (world-readable secrets, clear-text
    passwords, a live view open to the network), once at start in the journal."""
    import logging

    for line in cfg.warnings():
        logging.getLogger("edge_agent.config.config").warning("config: %s", line)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "run",
        help="run the agent (adopt, record, report over MQTT) until stopped",
        description=(
            "Run the daemon: recorders, watched folders, retention janitor, MQTT (status, "
            "telemetry, events, commands) and the live view as supervised tasks of one "
            "event loop; a failing component is restarted with backoff. Start-up finishes "
            "interrupted deletions, adopts crash leftovers and reconciles before READY=1. "
            "SIGTERM stops it gracefully within --shutdown-timeout (inputs first, then "
            "publishing offline); a second SIGTERM stops it at once. SIGHUP reloads the "
            "config (an invalid file is rejected and the running config stays). "
            "Exit codes: 0 stopped gracefully, 1 forced stop or failure (also a catalog "
            "from another disk), 2 bad config."
        ),
        example="edge-agent run --config /etc/edge-agent/config.toml",
        func=_run,
    )
    add_config_arg(p)
    p.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds a graceful stop may take before late parts are cancelled (default 10)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 1.0 <= value <= 600.0:
        raise argparse.ArgumentTypeError(f"{value:g} s is out of range (give 1 to 600)")
    return value
