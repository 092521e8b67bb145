"""The README's first command tells the notice's whole story, on a machine with no
camera and no broker, and a test reads every step's outcome from ``--json``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.broker import free_port

ANON = importlib.util.find_spec("onnxruntime") is not None


def test_demo_tells_the_whole_story(tmp_path: Path) -> None:
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "demo", "--dir", str(tmp_path / "demo"), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        # A closed loopback port: the demo must say its events stay queued.
        env={**os.environ, "EDGE_AGENT_DEMO_BROKER": f"127.0.0.1:{free_port()}"},
        check=False,
    )
    wall = time.monotonic() - t0
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    steps = {s["n"]: s["outcome"] for s in doc["steps"]}
    assert doc["steps"][0]["title"] == "Two cameras and a watched folder"
    assert len(steps) == 9 and doc["ok"] is True

    cams = steps[1]
    assert cams["recorded_segments"] >= 2 and cams["quarantined"] == 1
    assert cams["audio_outside_audio_rooms"] == 0 and cams["audio_in_audio_rooms"] >= 1

    outside = steps[2]  # 2 calendar months, not the premises' 6
    for purpose in ("marketing", "rnd"):
        assert outside[purpose]["site"] == "external"
        assert 59 <= outside[purpose]["days_kept"] <= 62

    sweep = steps[3]
    assert sweep["deleted"] == sweep["expected_deleted"]
    assert sweep["kept_by_hold"] == sweep["expected_kept"]

    requests = steps[4]
    assert requests["erased"] == requests["expected_erased"]
    assert requests["restricted"] == requests["expected_restricted"]

    anon = steps[5]
    if ANON:
        assert anon["built"] and anon["verified"] and anon["residuals"] == 0
        assert anon["derivative_deadline"] is None and anon["original_deadline"] is not None
        assert anon["derived_from"] == anon["original"]
        assert anon["audio_in_derivative"] is False
        assert Path(anon["before"]).stat().st_size > 1000
        assert Path(anon["after"]).stat().st_size > 1000
    else:
        assert anon == {"built": False, "why": "the anonymize extra is not installed"}

    export = steps[6]
    assert export["status"] == "done" and export["verified"] is True and export["files"] >= 1
    assert export["left_out"] == {"marketing_original": 1}

    clock = steps[7]
    assert clock["deleted"] == 0 and clock["clock_trusted"] is False
    assert "before release date" in clock["reason"] and clock["trusted_again"] is True

    assert steps[8]["shown"] is True and steps[8]["url"].endswith("/console")

    summary = steps[9]
    assert summary["past_deadline"] == 0
    assert summary["audio_outside_audio_rooms"] == 0
    assert summary["audit_verified"] is True
    assert summary["events_queued"] > 0 and summary["events_published"] == 0
    assert wall < 45, f"the demo took {wall:.1f} s"
    assert "== 9. Compliance summary" in out.stderr  # the prose goes to stderr with --json


def test_demo_prose_without_json(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "demo", "--seconds", "0", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "EDGE_AGENT_DEMO_BROKER": f"127.0.0.1:{free_port()}"},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "notice: audio is recorded only in rooms marked as audio rooms" in out.stdout
    assert "recordings with audio outside audio rooms: 0" in out.stdout
