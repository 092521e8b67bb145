"""The real command line as a subprocess: ``python -m edge_agent ...`` from the repo root."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The `cli` fixture's type: run_cli itself.
CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would; this checkout's code wins over any installed one.

    stdin is empty unless given, so that no command can wait on a terminal.
    """
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        input=stdin if stdin is not None else "",
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        check=False,
    )


def run_cli_config(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`run_cli` for a command that takes the daemon's config: ``... --config cfg``."""
    return run_cli(*args, "--config", str(cfg))
