"""Every command is documented: help text and a runnable example."""

from __future__ import annotations

import argparse
import subprocess
import sys

from edge_agent.cli import build_parser


def _leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    for action in subs:
        helps = {c.dest: c.help for c in action._choices_actions}
        for name, child in action.choices.items():
            assert helps.get(name), f"{' '.join((*path, name))}: no help text"
            found.extend(_leaf_parsers(child, (*path, name)))
    return found


def test_every_command_has_help_and_example() -> None:
    leaves = _leaf_parsers(build_parser())
    assert leaves, "no commands registered"
    for path, parser in leaves:
        name = " ".join(path)
        assert parser.epilog and "Example:" in parser.epilog, f"{name}: no example"
        assert f"edge-agent {name}" in parser.epilog, f"{name}: example does not run it"
        assert parser.description, f"{name}: no description"


def test_help_runs_as_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "--help"], capture_output=True, text=True, check=True
    )
    assert "edge-agent" in out.stdout
    assert out.stderr == ""
