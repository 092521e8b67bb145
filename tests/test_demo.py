"""The README's first command works on a machine with no camera and no broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.broker import free_port


def test_demo_runs_and_shows_the_rules(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "demo",
            "--seconds",
            "6",
            "--dir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        # A closed loopback port: the demo must say its events stay queued.
        env={**os.environ, "EDGE_AGENT_DEMO_BROKER": f"127.0.0.1:{free_port()}"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "audio removed: not an audio room" in text
    assert "check: no recording outside lab-audio-1 has an audio stream" in text
    assert "-- retention plan" in text
    assert "quarantined notes.mp4" in text
    assert "recording.added" in text
    assert "-- recording two virtual cameras" in text
    assert "they stay queued in the durable outbox" in text
    # Recorded segments from both cameras are catalogued; only the audio room keeps audio.
    lines = [ln for ln in text.splitlines() if ln.startswith(("gate ", "lab-audio-1 "))]
    assert any(ln.startswith("lab-audio-1") and ln.endswith("video,audio") for ln in lines)
    assert all(ln.endswith("video") for ln in lines if ln.startswith("gate "))
    assert (tmp_path / "demo" / "catalog.db").exists()
