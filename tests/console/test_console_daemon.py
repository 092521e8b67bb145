"""The console served by the real daemon: its data is the agent's, its writes are audited.

The page itself is driven in Chromium by tests/console/test_console_browser.py; here the
daemon runs as a subprocess and the routes are asked over loopback HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.broker import REPO, free_port
from tests.support.daemon import segments, start, stop, wait_until, write_config

TOKEN = "console-daemon-token-0123456789"


def _call(port: int, path: str, body: dict[str, Any] | None = None, token: str = TOKEN) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        data = resp.read()
        kind = resp.headers.get("Content-Type", "")
    return json.loads(data) if "json" in kind else data


def _status(port: int, path: str, token: str) -> int:
    try:
        _call(port, path, token=token)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


def test_console_on_the_daemon(tmp_path: Path) -> None:
    port = free_port()
    extra = f'[liveview]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'
    cfg = write_config(tmp_path, ["cam1"], extra=extra)
    agent = start(cfg, tmp_path / "agent.log")
    try:
        wait_until(lambda: len(segments(tmp_path, "cam1")) >= 2, timeout=40, what="segments")
        wait_until(lambda: _status(port, "/console/api/overview", TOKEN) == 200, what="console")
        for path in ("/console", "/console/api/overview", "/console/api/still/cam1"):
            assert _status(port, path, "wrong-token-0123456789") == 401
        overview = _call(port, "/console/api/overview")
        assert overview["device"] == "gw-1" and overview["clock"]["state"] == "trusted"
        sources = _call(port, "/console/api/sources")["sources"]
        assert [(s["id"], s["state"], s["live"]) for s in sources] == [("cam1", "recording", True)]
        jpeg = _call(port, "/console/api/still/cam1")
        assert jpeg[:2] == b"\xff\xd8"  # a JPEG of the latest keyframe
        assert _call(port, "/console/api/locations")["locations"] == ["gate"]

        def bars() -> int:
            svg = _call(port, "/console/api/timeline/gate?window=6h")
            root = ET.fromstring(svg)
            ns = "{http://www.w3.org/2000/svg}"
            return sum(1 for e in root.iter(f"{ns}rect") if "bar" in (e.get("class") or ""))

        wait_until(lambda: bars() >= 2, what="bars on the timeline")
        now = datetime.now(UTC)
        placed = _call(
            port,
            "/console/api/holds",
            {
                "kind": "incident",
                "reason": "theft report 117",
                "by": "installer",
                "location": "gate",
                "from": (now - timedelta(hours=1)).isoformat(),
                "to": now.isoformat(),
            },
        )["hold"]
        svg = _call(port, "/console/api/timeline/gate?window=6h").decode()
        assert f'data-id="{placed["id"]}"' in svg
        _call(port, f"/console/api/holds/{placed['id']}/release", {"reason": "closed", "by": "x"})
        events = _call(port, "/console/api/events?limit=50")
        actions = [e["action"] for e in events["events"]]
        assert "hold.placed" in actions and "hold.released" in actions
        assert stop(agent) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    verify = subprocess.run(
        [sys.executable, "-m", "edge_agent", "audit", "verify", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
