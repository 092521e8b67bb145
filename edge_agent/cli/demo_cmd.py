"""``edge-agent demo``: a self-contained demo in a temporary folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_agent.cli._base import add_command


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "demo",
        help="the privacy notice's whole story on this machine, in a temporary folder",
        example="edge-agent demo\nedge-agent demo --keep",
        func=run,
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary folder afterwards")
    p.add_argument("--dir", type=Path, help="work in this (empty) folder instead of a temp one")
    p.add_argument(
        "--seconds", type=float, default=12.0, help="how long the virtual cameras record (0: skip)"
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON document with every step's outcome on stdout"
    )


def run(args: argparse.Namespace) -> int:
    from edge_agent.app.demo import run_demo

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    return run_demo(
        keep=args.keep, workdir=args.dir, record_seconds=args.seconds, as_json=args.json
    )
