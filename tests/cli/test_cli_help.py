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


def test_command_table_matches_what_modules_register() -> None:
    """``COMMANDS`` routes each command to the module that registers it."""
    from edge_agent.cli import COMMANDS

    full = build_parser()
    subs = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) == set(COMMANDS)
    for name in COMMANDS:
        alone = build_parser(only=name)
        action = next(a for a in alone._actions if isinstance(a, argparse._SubParsersAction))
        assert name in action.choices, name


def test_a_command_imports_only_its_own_module() -> None:
    # `run` is the daemon: what it imports stays resident for months.
    code = (
        "import sys\n"
        "from edge_agent.cli import build_parser\n"
        "build_parser(only='run')\n"
        "print(sorted(m for m in sys.modules if m.startswith('edge_agent.cli.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['edge_agent.cli._base', 'edge_agent.cli.run_cmd']"
