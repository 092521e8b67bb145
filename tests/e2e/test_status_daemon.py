"""``edge-agent status`` against a running daemon: what it sees, and when it is gone.

A real RTSP server that asks for a password, the daemon as a subprocess, and
the CLI as another; the wall clock is moved with libfaketime for the daemon
only (its monotonic clocks stay real, as after a step on a device).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import rtsp_server
from tests.support.broker import REPO, free_port
from tests.support.daemon import start, stop, wait_until
from tests.support.mediagen import make_video

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
TESTSRC = "testsrc://?size=160x120&rate=10&bitrate=100k&gop=1"


def _config(tmp: Path, extra_sources: str = "") -> Path:
    path = tmp / "agent.toml"
    path.write_text(
        f"""
[device]
id = "gw-status"
hw_profile = "generic-linux"
[storage]
root = "{tmp / "rec"}"
catalog = "{tmp / "state" / "catalog.db"}"
free_space_floor = "1MiB"
[clock]
kernel_flag = false
chronyc = ""
timesync_flag = "{tmp / "no-timesyncd"}"
[[locations]]
id = "gate"
kind = "premises"
signage = true
[[sources]]
id = "cam-ok"
url = "{TESTSRC}"
location = "gate"
purpose = "security"
segment_seconds = 2
{extra_sources}
""",
        encoding="utf-8",
    )
    (tmp / "rec").mkdir(exist_ok=True)
    return path


def status(cfg: Path, env: dict[str, str] | None = None) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    base = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    js = subprocess.run(
        [sys.executable, "-m", "edge_agent", "status", "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=base,
        check=False,
    )
    text = subprocess.run(
        [sys.executable, "-m", "edge_agent", "status", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=base,
        check=False,
    )
    assert js.returncode in (0, 1), js.stderr
    return js.returncode, json.loads(js.stdout), text.stdout


def _source(doc: dict, sid: str) -> dict:  # type: ignore[type-arg]
    return next(s for s in doc["sources"] if s["id"] == sid)


def test_wrong_camera_password_shows_and_a_stopped_agent_is_not_running(tmp_path: Path) -> None:
    why = rtsp_server.available()
    if why:
        pytest.skip(why)
    clip = make_video(tmp_path / "clip.mkv", container="mkv", seconds=4.0, size=(160, 120))
    port = free_port()
    camera = rtsp_server.start(port, clip, audio=False, user="admin:right")
    wrong = f"rtsp://admin:wrong@127.0.0.1:{port}/cam"
    cfg = _config(
        tmp_path,
        f'[[sources]]\nid = "cam-x"\nurl = "{wrong}"\nlocation = "gate"\npurpose = "security"\n',
    )
    proc = start(cfg, tmp_path / "agent.log")
    try:

        def sees_401() -> bool:
            _, doc, _ = status(cfg)
            return bool(doc.get("agent", {}).get("running")) and "401" in str(
                _source(doc, "cam-x").get("reason")
            )

        wait_until(sees_401, timeout=60, what="status showing cam-x's 401")
        rc, doc, text = status(cfg)
        assert doc["agent"]["pid"] == proc.pid
        assert rc == 1 and doc["state"] == "degraded"
        assert _source(doc, "cam-x")["state"] in ("failed", "reconnecting")
        assert any("cam-x" in r and "401" in r for r in doc["reasons"])
        assert "source     cam-x:" in text and "401" in text
        assert "wrong" not in json.dumps(doc)  # the password never reaches the output
        wait_until(lambda: status(cfg)[1]["sources"][0]["state"] == "recording", timeout=30)
    finally:
        assert stop(proc) == 0
        camera.kill()
        camera.wait(5)
    rc, doc, text = status(cfg)
    assert rc == 1 and doc["state"] == "not running"
    assert doc["agent"]["running"] is False
    assert {s["id"]: s["state"] for s in doc["sources"]} == {
        "cam-ok": "not running",
        "cam-x": "not running",
    }
    assert "agent      not running" in text and "online" not in text
    assert not (tmp_path / "state" / "control.sock").exists()


@pytest.mark.parametrize(
    ("fake", "why"),
    [("@1970-01-02 00:00:00", "before release date"), ("+3650d", "jumped")],
    ids=["1970", "plus-10-years"],
)
def test_an_untrusted_clock_is_no_overdue_finding(tmp_path: Path, fake: str, why: str) -> None:
    if not FAKETIME_LIB.exists():
        pytest.skip("libfaketime missing: apt-get install faketime")
    cfg = _config(tmp_path)
    # A first run at the true time leaves recordings due in 3 days and the clock's reference.
    first = start(cfg, tmp_path / "agent.log")
    try:

        def recorded() -> bool:
            t = status(cfg)[1]["telemetry"]  # None until the daemon has made its catalog
            return t is not None and t["recordings"]["security"]["count"] >= 1

        wait_until(recorded)
    finally:
        assert stop(first) == 0
    faked = {
        "LD_PRELOAD": str(FAKETIME_LIB),
        "FAKETIME": fake,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }
    os.environ.update(faked)
    try:
        proc = start(cfg, tmp_path / "agent-faked.log")
    finally:
        for k in faked:
            os.environ.pop(k)
    try:
        wait_until(lambda: status(cfg)[1].get("agent", {}).get("running") is True, timeout=30)
        rc, doc, text = status(cfg)
        t = doc["telemetry"]
        assert rc == 1
        assert t["clock"]["state"] == "untrusted" and why in t["clock"]["reason"]
        assert doc["overdue_judged"] is False
        assert t["retention"]["overdue_count"] == 0
        assert "overdue not judged: clock untrusted" in text
        # The CLI judges the same with the daemon stopped.
    finally:
        assert stop(proc) == 0
    rc, doc, _ = status(cfg, faked)
    assert rc == 1 and doc["state"] == "not running"
    assert doc["telemetry"]["clock"]["state"] == "untrusted"
    assert doc["overdue_judged"] is False and doc["telemetry"]["retention"]["overdue_count"] == 0
