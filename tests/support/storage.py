"""Test helpers shared by several test modules (first written in test_storage_lost.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.broker import Subscriber
from tests.support.cli import run_cli_config as cli
from tests.support.daemon import ROOT


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def events(sub: Subscriber, kind: str) -> list[dict[str, Any]]:
    return [e for e in sub.payloads(f"{ROOT}/events") if e["type"] == kind]


def rows(cfg: Path) -> list[dict[str, Any]]:
    states = ("active", "deleting", "deleted", "missing", "restricted")
    res = cli(cfg, "recordings", "list", "--json", *(a for s in states for a in ("--state", s)))
    assert res.returncode == 0, res.stderr
    out: list[dict[str, Any]] = json.loads(res.stdout)
    return out
