"""The README's first command works on a machine with no camera and no broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_and_shows_the_rules(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "audio removed: not an audio room" in text
    assert "check: no recording outside lab-audio-1 has an audio stream" in text
    assert "-- retention plan" in text
    assert "quarantined notes.mp4" in text
    assert "recording.added" in text
    assert (tmp_path / "demo" / "catalog.db").exists()
