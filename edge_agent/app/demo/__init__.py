"""``edge-agent demo``: the privacy notice's whole story on a fresh machine, in a temporary folder.

No camera and no broker needed: virtual cameras, a watched folder, holds,
requests, an anonymized derivative, a signed export and the clock guard, each
as a titled step (story.py); ``--json`` gives every step's outcome as data.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from edge_agent.app.demo.story import Demo

__all__ = ["Demo", "run_demo"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(
    keep: bool = False,
    workdir: Path | None = None,
    out: TextIO = sys.stdout,
    record_seconds: float = 12,
    *,
    as_json: bool = False,
) -> int:
    own = workdir is None
    wd = workdir or Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    # With --json the prose goes to stderr and stdout carries one document.
    prose = sys.stderr if as_json else out
    try:
        doc = Demo(wd, prose, record_seconds, keep=keep or not own, port=_free_port()).run()
        failed = [s["title"] for s in doc["steps"] if s["outcome"].get("error")]
        doc["ok"] = not failed
        if as_json:
            out.write(json.dumps(doc, indent=2) + "\n")
        return 0 if not failed else 1
    finally:
        if own and not keep:
            shutil.rmtree(wd, ignore_errors=True)
        elif own:
            prose.write(f"\nkept {wd} (config.toml, recordings/, state/catalog.db)\n")
