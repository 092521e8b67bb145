"""A signed command vouches for the clock when its issued_at agrees with it; a far one does not.

A real agent and broker. The test machine's clock cannot be stepped, so the
guard's stored reference is moved two hours back before the agent starts
(what the catalog holds after the wall clock jumped two hours forward), and
adjtimex is off as under ProtectClock=yes.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from edge_agent.cli import main as cli_main
from edge_agent.config.config import load_config
from edge_agent.core.clock import ClockSample, command_evidence
from edge_agent.core.commands import load_private_key, sign
from edge_agent.core.model import Purpose, utcnow
from edge_agent.intake.intake import Intake
from edge_agent.intake.runtime import intake_settings, origin_for
from edge_agent.store.catalog import Catalog
from tests.support.broker import Broker, Subscriber, start_agent, write_agent_config
from tests.support.clockstep import step_forward
from tests.support.commands import _publish
from tests.support.mediagen import make_video

ROOT = "edge/gw-1"


@pytest.fixture
def agent(tmp_path: Any) -> Iterator[dict[str, Any]]:
    broker = Broker(tmp_path / "broker")
    broker.start()
    assert cli_main(["keys", "generate", "--out", str(tmp_path / "keys"), "--name", "central"]) == 0
    cfg_path = write_agent_config(tmp_path, broker, trusted_keys=(tmp_path / "keys/central.pub",))
    with open(cfg_path, "a", encoding="utf-8") as fh:
        fh.write(
            f'\n[clock]\nkernel_flag = false\nchronyc = ""\ntimesync_flag = "{tmp_path / "none"}"\n'
        )
    cfg = load_config(cfg_path)
    cat = Catalog.open(cfg.storage.catalog, device_id="gw-1", storage_root=cfg.storage.root)
    clip = make_video(tmp_path / "old.mp4", seconds=0.5, creation_time=utcnow() - timedelta(days=4))
    rec = Intake(cat, intake_settings(cfg)).adopt(
        clip, origin_for(cfg, "gate", Purpose.SECURITY), utcnow()
    )
    assert rec.recording is not None
    step_forward(cat, hours=2)
    cat.close()
    proc = start_agent(cfg_path, tmp_path / "agent.log")
    sub = Subscriber(broker, [f"{ROOT}/cmd-result/#", f"{ROOT}/telemetry", f"{ROOT}/events"])
    key = load_private_key((tmp_path / "keys/central.key").read_bytes(), name="central")
    yield {"broker": broker, "sub": sub, "key": key, "rid": rec.recording.id}
    sub.close()
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    broker.stop()


def _confirm(a: dict[str, Any], cmd_id: str, issued: Any) -> dict[str, Any]:
    env = sign(
        a["key"],
        device="gw-1",
        name="clock-confirm",
        args={"reason": "checked by the fleet operator"},
        issued_at=issued,
        ttl=timedelta(hours=1),
        cmd_id=cmd_id,
    )
    _publish(a["broker"], "clock-confirm", json.dumps(env.model_dump(mode="json")))
    got = a["sub"].wait_for(
        f"{ROOT}/cmd-result/{cmd_id}", lambda g: any(r["state"] in ("done", "failed") for r in g)
    )
    return next(r for r in got if r["state"] in ("done", "failed"))


def test_clock_confirm_with_matching_issued_at_resumes_deletion(agent: dict[str, Any]) -> None:
    sub = agent["sub"]
    sub.wait_for(f"{ROOT}/telemetry", lambda g: any(t["clock"]["state"] == "untrusted" for t in g))
    far = _confirm(agent, "cc-far", utcnow() - timedelta(minutes=20))
    assert far["state"] == "failed" and "not confirmed" in far["reason"]
    near = _confirm(agent, "cc-near", utcnow())
    assert near["state"] == "done", near
    assert near["result"]["clock"] == "trusted"
    events = sub.wait_for(
        f"{ROOT}/events",
        lambda g: any(e["type"] == "recording.deleted" for e in g),
        timeout=20,
    )
    steps = [e for e in events if e["type"] == "clock.step_accepted"]
    assert len(steps) == 1 and steps[0]["source"] == "command"
    assert abs(steps[0]["step_s"] - 7200) < 60
    deleted = [e for e in events if e["type"] == "recording.deleted"]
    assert deleted[0]["recording_id"] == agent["rid"]


# -- the pure rule ----------------------------------------------------------------

NOW = utcnow().replace(microsecond=0)
REF = ClockSample(NOW - timedelta(hours=2), 100.0, "b", None)
TOL = timedelta(seconds=120)


@pytest.mark.parametrize(
    ("issued_offset_s", "ok"),
    [(0, True), (-119, True), (119, True), (-121, False), (1200, False), (-86400, False)],
)
def test_command_time_counts_only_within_the_tolerance(issued_offset_s: int, ok: bool) -> None:
    cur = ClockSample(NOW, 200.0, "b", None)
    issued = NOW + timedelta(seconds=issued_offset_s)
    assert (command_evidence(issued, cur, REF, tolerance=TOL, what="x") is not None) is ok


def test_an_old_command_replayed_to_a_clock_set_back_cannot_confirm_it() -> None:
    # Trusted at NOW; someone sets the clock back a day and replays a command
    # signed a day ago: it agrees with the wrong clock, but predates the reference.
    ref = ClockSample(NOW, 100.0, "b", None)
    cur = ClockSample(NOW - timedelta(days=1), 160.0, "b", None)
    issued = NOW - timedelta(days=1)
    assert command_evidence(issued, cur, ref, tolerance=TOL, what="x") is None
