"""``edge-agent run`` as systemd runs it: real subprocesses, a real mosquitto, a fake notify socket.

Plus the pure parts the daemon is built from: reload planning, the disk
pressure valve, health checks and the restart supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from edge_agent.app.health import HealthReading, HealthSettings, OutboxProgress, problems
from edge_agent.app.reload import effective_config, plan_reload
from edge_agent.app.supervisor import Failure, RestartPolicy, Supervised
from edge_agent.config.config import parse_config
from edge_agent.core.pressure import PressureValve
from tests.support.broker import REPO, Broker, Subscriber, free_port
from tests.support.daemon import (
    ROOT,
    NotifySocket,
    segments,
    start,
    stop,
    wait_until,
    write_config,
)
from tests.support.mediagen import make_video

# -- helpers -----------------------------------------------------------------------------


def audit_actions(cfg: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "audit", "export", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    ).stdout
    return [json.loads(line)["action"] for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.stop()


# -- the daemon as a process --------------------------------------------------------------


def test_notify_watchdog_and_bounded_sigterm(tmp_path: Path, broker: Broker) -> None:
    cfg = write_config(tmp_path, ["cam1"], broker=broker)
    notify = NotifySocket()
    sub = Subscriber(broker, [f"{ROOT}/status"], client_id="daemon-1")
    agent = start(cfg, tmp_path / "agent.log", notify, "--shutdown-timeout", "6")
    try:
        ready = notify.wait_for(lambda m: m.get("READY") == "1")
        assert "sources" in notify.messages[ready].get("STATUS", "")
        notify.wait_for(lambda m: m.get("WATCHDOG") == "1")
        sub.wait_for(f"{ROOT}/status", lambda g: any(p["state"] == "online" for p in g))
        wait_until(lambda: len(segments(tmp_path, "cam1")) >= 1, what="a segment")
        # WATCHDOG every second (half of WATCHDOG_USEC) and a periodic STATUS summary.
        notify.wait_for(lambda m: "recording 1/1 sources" in m.get("STATUS", ""))
        assert notify.count("WATCHDOG") >= 2
        status = next(
            m["STATUS"] for m in notify.messages if "recording 1/1" in m.get("STATUS", "")
        )
        assert "clock trusted" in status and "mqtt connected" in status and "outbox" in status

        t0 = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0
        assert time.monotonic() - t0 < 6 + 1.5
        notify.wait_for(lambda m: m.get("STOPPING") == "1", timeout=1)
        bye = sub.wait_for(f"{ROOT}/status", lambda g: g[-1]["state"] == "offline")[-1]
        assert bye["reasons"] == []
        # Nothing left under a .partial- name: the last segment was filed on the way down.
        assert not list((tmp_path / "recordings").rglob(".partial-*"))
    finally:
        sub.close()
        notify.close()
        if agent.poll() is None:
            agent.kill()


def test_sighup_adds_a_source_and_rejects_a_broken_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, ["cam1"])
    log = tmp_path / "agent.log"
    notify = NotifySocket()
    agent = start(cfg, log, notify)
    try:
        notify.wait_for(lambda m: m.get("READY") == "1")
        wait_until(lambda: len(segments(tmp_path, "cam1")) >= 1, what="cam1 recording")

        write_config(tmp_path, ["cam1", "cam2"])
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: len(segments(tmp_path, "cam2")) >= 1, what="cam2 recording")
        assert agent.poll() is None  # same process: no restart
        reloading = notify.wait_for(lambda m: m.get("RELOADING") == "1")
        notify.wait_for(lambda m: m.get("READY") == "1" and notify.messages.index(m) > reloading)

        cfg.write_text(cfg.read_text().replace("segment_seconds = 2", "segment_seconds = 1"))
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: "config reload rejected" in log.read_text(), what="rejection log")
        text = log.read_text()
        assert "sources[0].segment_seconds" in text, text[-2000:]
        # Both sources go on recording under the old config.
        before = {s: len(segments(tmp_path, s)) for s in ("cam1", "cam2")}
        wait_until(
            lambda: all(len(segments(tmp_path, s)) > before[s] for s in before),
            timeout=10,
            what="recording to go on",
        )
        assert agent.poll() is None
        assert stop(agent) == 0
    finally:
        notify.close()
        if agent.poll() is None:
            agent.kill()
    write_config(tmp_path, ["cam1", "cam2"])
    actions = audit_actions(cfg)
    assert "config.reloaded" in actions and "config.reload_rejected" in actions


def _live_sources(port: int, token: str) -> dict[str, bool]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/sources", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            doc = json.load(resp)
    except (urllib.error.URLError, OSError):
        return {}  # not listening yet
    return {s["id"]: s["live"] for s in doc["sources"]}


def test_liveview_gets_packets_from_the_recorders_also_after_sighup(tmp_path: Path) -> None:
    """The recorders publish into the live view's hub; a source added by a reload too."""
    token = "daemon-test-token-0123456789abcdef"
    port = free_port()
    extra = f'[liveview]\nlisten = "127.0.0.1:{port}"\ntoken = "{token}"\n'
    cfg = write_config(tmp_path, ["cam1"], extra=extra)
    log = tmp_path / "agent.log"
    agent = start(cfg, log)
    try:
        wait_until(lambda: _live_sources(port, token) == {"cam1": True}, what="cam1 live")
        write_config(tmp_path, ["cam1", "cam2"], extra=extra)
        agent.send_signal(signal.SIGHUP)
        both = {"cam1": True, "cam2": True}
        wait_until(lambda: _live_sources(port, token) == both, what="cam2 live after SIGHUP")
        assert stop(agent) == 0
    finally:
        if agent.poll() is None:
            agent.kill()


def test_second_sigterm_forces_exit_1(tmp_path: Path, broker: Broker) -> None:
    cfg = write_config(tmp_path, ["cam1"], broker=broker)
    log = tmp_path / "agent.log"
    sub = Subscriber(broker, [f"{ROOT}/status"], client_id="daemon-2")
    agent = start(cfg, log)
    assert broker.proc is not None
    try:
        sub.wait_for(f"{ROOT}/status", lambda g: any(p["state"] != "offline" for p in g))
        # A frozen broker holds the shutdown at "publish offline and wait for PUBACK".
        broker.proc.send_signal(signal.SIGSTOP)
        agent.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping (send the signal again" in log.read_text(), what="stop")
        t0 = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(5) == 1
        assert time.monotonic() - t0 < 3
        assert "second stop signal" in log.read_text()
    finally:
        broker.proc.send_signal(signal.SIGCONT)
        sub.close()
        if agent.poll() is None:
            agent.kill()


def test_a_failing_component_is_restarted_and_reported(tmp_path: Path, broker: Broker) -> None:
    watch = tmp_path / "drop"
    watch.mkdir()
    cfg = write_config(tmp_path, ["cam1"], broker=broker, watch=watch)
    sub = Subscriber(broker, [f"{ROOT}/status", f"{ROOT}/events"], client_id="daemon-3")
    agent = start(cfg, tmp_path / "agent.log")
    try:
        sub.wait_for(f"{ROOT}/status", lambda g: any(p["state"] == "online" for p in g))
        # The watched folder becomes a file: the adopter cannot list it and fails.
        watch.rmdir()
        watch.write_text("not a folder")

        def failed(g: list[dict[str, object]]) -> bool:
            return any(e["type"] == "alarm.component_failed" for e in g)

        events = sub.wait_for(f"{ROOT}/events", failed)
        alarm = next(e for e in events if e["type"] == "alarm.component_failed")
        assert alarm["component"] == f"adopter:{watch}" and "NotADirectoryError" in str(
            alarm["error"]
        )
        degraded = sub.wait_for(
            f"{ROOT}/status",
            lambda g: any("component adopter" in r for r in g[-1].get("reasons", [])),  # type: ignore[attr-defined]
        )[-1]
        assert degraded["state"] == "degraded"
        # The rest of the agent is unaffected: the camera still records.
        n = len(segments(tmp_path, "cam1"))
        wait_until(lambda: len(segments(tmp_path, "cam1")) > n, what="recording to go on")

        # The folder comes back: the restarted adopter picks up a dropped file.
        watch.unlink()
        watch.mkdir()
        clip = make_video(tmp_path / "clip.mp4", seconds=1.0, audio=None)
        os.rename(clip, watch / "clip.mp4")
        wait_until(lambda: not (watch / "clip.mp4").exists(), timeout=20, what="adoption")
        assert agent.poll() is None
        # Files from outside are read in a child (media/media_worker.py). Killed as a
        # crashing demuxer would be, it costs nothing but a new child for the next file.
        children = [c for c in psutil.Process(agent.pid).children() if _media_child(c)]
        assert children
        for child in children:
            child.kill()
            child.wait(5)
        clip = make_video(tmp_path / "clip2.mp4", seconds=1.0, audio=None)
        os.rename(clip, watch / "clip2.mp4")
        wait_until(lambda: not (watch / "clip2.mp4").exists(), timeout=20, what="adoption")
        children = [c for c in psutil.Process(agent.pid).children() if _media_child(c)]
        assert children
        assert agent.poll() is None
        assert stop(agent) == 0
        for child in children:
            child.wait(5)  # no child outlives the agent (raises if it does)
    finally:
        sub.close()
        if agent.poll() is None:
            agent.kill()


def _media_child(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "edge_agent.media.media_child" in proc.cmdline()
    return False


# -- pure parts ---------------------------------------------------------------------------

BASE = """
[device]
id = "gw-1"
hw_profile = "generic-linux"
[storage]
root = "/srv/rec"
catalog = "/srv/catalog.db"
[[locations]]
id = "gate"
kind = "premises"
signage = true
[[sources]]
id = "cam1"
url = "rtsp://10.0.0.5/stream"
location = "gate"
purpose = "security"
[[watch]]
path = "/srv/drop"
location = "gate"
purpose = "security"
"""


def _cfg(text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, Path("/srv"), check_files=False)


def test_plan_reload_sorts_live_changes_from_restart_ones() -> None:
    old = _cfg(BASE)
    new = _cfg(
        BASE.replace('id = "gw-1"', 'id = "gw-2"').replace("/srv/drop", "/srv/drop2")
        + '[[sources]]\nid = "cam2"\nurl = "rtsp://10.0.0.6/s"\nlocation = "gate"\n'
        'purpose = "security"\n'
    )
    plan = plan_reload(old, new)
    assert plan.sources_added == ["cam2"] and not plan.sources_changed
    assert plan.watches_added == ["/srv/drop2"] and plan.watches_removed == ["/srv/drop"]
    assert plan.needs_restart == ["device"]
    eff = effective_config(old, new)
    assert eff.device.id == "gw-1" and [s.id for s in eff.sources] == ["cam1", "cam2"]
    # Signs coming down changes every source and watch at that location.
    off = _cfg(BASE.replace("signage = true", "signage = false"))
    plan = plan_reload(old, off)
    assert plan.sources_changed == ["cam1"] and plan.watches_changed == ["/srv/drop"]
    assert not plan_reload(old, _cfg(BASE)).changed


def test_pressure_valve_stops_lowest_priority_until_disk_stops_filling() -> None:
    v = PressureValve(tolerance_bytes=0)
    srcs = [("a", 5), ("b", 1), ("c", 3)]
    assert v.step(full=False, sweep=1, free_bytes=100, sources=srcs) == ([], [])
    assert v.step(full=True, sweep=2, free_bytes=100, sources=srcs) == (["b"], [])
    assert v.step(full=True, sweep=2, free_bytes=90, sources=srcs) == ([], [])  # same pass
    assert v.step(full=True, sweep=3, free_bytes=90, sources=srcs) == (["c"], [])  # still filling
    assert v.step(full=True, sweep=4, free_bytes=90, sources=srcs) == ([], [])  # stable: hold
    assert v.step(full=False, sweep=5, free_bytes=900, sources=srcs) == ([], ["b", "c"])


def test_health_checks() -> None:
    s = HealthSettings(max_loop_lag=1.0, outbox_stall=10.0)
    ok = HealthReading(loop_lag=0.1, janitor_silent=5.0, janitor_limit=600, outbox_stalled=0.0)
    assert problems(ok, s) == []
    bad = HealthReading(loop_lag=3.0, janitor_silent=700, janitor_limit=600, outbox_stalled=11)
    assert len(problems(bad, s)) == 3
    p = OutboxProgress(0.0)
    assert p.observe(5.0, connected=True, depth=3, published=0) == 0.0
    assert p.observe(20.0, connected=True, depth=3, published=0) == 15.0
    assert p.observe(21.0, connected=True, depth=3, published=1) == 0.0  # a PUBACK came
    assert p.observe(40.0, connected=False, depth=3, published=1) == 0.0  # offline is no stall


async def test_supervisor_restarts_with_backoff_and_propagates_cancel() -> None:
    runs: list[float] = []
    failures: list[Failure] = []
    third = asyncio.Event()

    class Flaky:
        name = "flaky"

        async def run(self, stop: asyncio.Event) -> None:
            runs.append(time.monotonic())
            if len(runs) == 3:
                third.set()
            if len(runs) < 3:
                raise RuntimeError(f"boom {len(runs)}")
            await stop.wait()

    async def on_failure(f: Failure) -> None:
        failures.append(f)

    sup = Supervised(
        Flaky(), policy=RestartPolicy(base=0.05, cap=0.2), on_failure=on_failure, rng=lambda: 1.0
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sup.run(stop))
    await asyncio.wait_for(third.wait(), 2)
    assert [f.attempt for f in failures] == [1, 2]
    assert failures[0].error == "RuntimeError: boom 1" and failures[0].report
    assert not failures[1].report  # one event per streak
    assert runs[2] - runs[1] >= 0.09  # 0.05 * 2
    assert sup.reason() is not None and "restarted after a failure" in str(sup.reason())
    stop.set()
    await asyncio.wait_for(task, 1)

    task = asyncio.create_task(Supervised(Flaky()).run(asyncio.Event()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
