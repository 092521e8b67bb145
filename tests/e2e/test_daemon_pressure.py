"""A disk full of held footage, end to end: the real daemon on a real, small filesystem.

Everything on the disk is under an incident hold, so disk pressure cannot
delete anything. The daemon must say so (``alarm.storage_full_held``), pause
the lowest-priority camera while the other goes on, resume it once space
returns, and lose nothing on the way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.core.pressure import PAUSE_REASON
from edge_agent.media import media
from tests.support.broker import Broker, Subscriber
from tests.support.cli import run_cli_config as cli
from tests.support.daemon import ROOT, NotifySocket, segments, start, stop, wait_until, write_config
from tests.support.mediagen import make_video
from tests.support.tmpfs import mounted_tmpfs

MiB = 1024 * 1024
FLOOR = 24 * MiB
HIGH, LOW = "cam-door", "cam-yard"  # priorities 10 and 1: the yard is paused first
PAUSED = f"source {LOW}: paused ({PAUSE_REASON})"


@pytest.fixture()
def disk(tmp_path: Path) -> Iterator[Path]:
    """A real 48 MiB filesystem for the recordings."""
    with mounted_tmpfs(tmp_path / "disk", "48m") as mnt:
        yield mnt


def write_config_on(folder: Path, disk: Path, broker: Broker) -> Path:
    # Catalog and quarantine stay off the small disk: SQLite must never meet ENOSPC
    # here, only the recorders.
    return write_config(
        folder,
        [HIGH, LOW],
        broker=broker,
        root=disk / "recordings",
        floor=f"{FLOOR // MiB}MiB",
        priorities={HIGH: 10, LOW: 1},
    )


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def events_of(sub: Subscriber, kind: str) -> list[dict[str, Any]]:
    return [e for e in sub.payloads(f"{ROOT}/events") if e["type"] == kind]


def sources_now(sub: Subscriber) -> dict[str, dict[str, Any]]:
    docs = sub.payloads(f"{ROOT}/telemetry")
    return {s["id"]: s for s in docs[-1]["sources"]} if docs else {}


def test_held_footage_fills_the_disk_low_priority_pauses_and_resumes(
    tmp_path: Path, disk: Path, broker: Broker
) -> None:
    cfg = write_config_on(tmp_path, disk, broker)
    # One clip ingested first: it makes the catalog the hold needs. Its deadline is
    # days away, so the janitor sleeps its full minute: only the daemon's free-space
    # check can wake it in time.
    clip = make_video(
        tmp_path / "clip.mkv", container="mkv", seconds=1.0, creation_time=datetime.now(UTC)
    )
    res = cli(cfg, "ingest", str(clip), "--location", "gate", "--purpose", "security")
    assert res.returncode == 0, res.stderr
    now = datetime.now(UTC)
    # An ongoing incident: the window covers every recording this test makes.
    res = cli(
        cfg,
        "hold", "add", "--location", "gate",
        "--from", iso(now - timedelta(hours=1)), "--to", iso(now + timedelta(hours=1)),
        "--kind", "incident", "--reason", "break-in under investigation", "--by", "test",
        "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    hold_id = json.loads(res.stdout)["id"]

    topics = [f"{ROOT}/status", f"{ROOT}/events", f"{ROOT}/telemetry"]
    sub = Subscriber(broker, topics, client_id="pressure-1")
    notify = NotifySocket()
    log = tmp_path / "agent.log"
    agent = start(cfg, log, notify)
    ballast = disk / "ballast.bin"
    try:
        sub.wait_for(f"{ROOT}/status", lambda g: any(p["state"] == "online" for p in g))
        wait_until(
            lambda: all(len(segments(disk, s)) >= 1 for s in (HIGH, LOW)),
            what="both cameras recording",
        )

        # Fill the disk past the floor with something that is not footage.
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with open(ballast, "wb") as fh:
            fh.write(b"\xa5" * (free - FLOOR // 2))
        assert os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize < FLOOR

        full = sub.wait_for(
            f"{ROOT}/events",
            lambda g: any(e["type"] == "alarm.storage_full_held" for e in g),
            timeout=20,
        )
        alarm = next(e for e in full if e["type"] == "alarm.storage_full_held")
        assert alarm["floor_bytes"] == FLOOR and alarm["free_bytes"] < FLOOR
        assert alarm["held_recordings"] >= 3 and alarm["held_bytes"] > 0
        assert "free space below the floor: waking the janitor" in log.read_text()
        assert events_of(sub, "alarm.disk_pressure"), "disk pressure is reported as well"

        # The retained status says which source stopped and why; telemetry agrees.
        status = sub.wait_for(
            f"{ROOT}/status", lambda g: PAUSED in g[-1].get("reasons", []), timeout=15
        )[-1]
        assert status["state"] == "degraded"
        assert not any(r.startswith(f"source {HIGH}") for r in status["reasons"]), status
        sub.wait_for(
            f"{ROOT}/telemetry",
            lambda g: sources_now(sub).get(LOW, {}).get("state") == "paused",
            timeout=15,
        )
        srcs = sources_now(sub)
        assert srcs[LOW]["reason"] == PAUSE_REASON
        assert srcs[HIGH]["state"] == "recording"
        assert f"pausing source {LOW}: {PAUSE_REASON}" in log.read_text()
        assert f"pausing source {HIGH}" not in log.read_text()

        # The door camera goes on filing segments while the yard camera files none
        # (counted once the door has filed one more: the yard's cut segment is filed too).
        high = len(segments(disk, HIGH))
        wait_until(lambda: len(segments(disk, HIGH)) > high, what=f"{HIGH} to go on")
        low_paused = len(segments(disk, LOW))
        high_paused = len(segments(disk, HIGH))
        wait_until(
            lambda: len(segments(disk, HIGH)) >= high_paused + 2,
            timeout=15,
            what=f"{HIGH} to go on recording",
        )
        assert len(segments(disk, LOW)) == low_paused
        assert not [p for p in (disk / "recordings").rglob(".partial-*") if LOW in p.name]
        # systemd's one line says so too.
        notify.wait_for(
            lambda m: (
                "recording 1/2 sources" in m.get("STATUS", "")
                and f"paused {LOW}" in m.get("STATUS", "")
            ),
            timeout=15,
        )
        assert agent.poll() is None

        # Space comes back: the yard camera records again.
        ballast.unlink()
        sub.wait_for(
            f"{ROOT}/events",
            lambda g: any(
                e["type"] == "alarm.cleared" and e.get("alarm") == "storage_full_held" for e in g
            ),
            timeout=20,
        )
        wait_until(
            lambda: len(segments(disk, LOW)) >= low_paused + 2,
            timeout=15,
            what=f"{LOW} to record again",
        )
        sub.wait_for(
            f"{ROOT}/status",
            lambda g: g[-1]["state"] == "online" and not g[-1]["reasons"],
            timeout=15,
        )
        sub.wait_for(
            f"{ROOT}/telemetry",
            lambda g: [s["state"] for s in sources_now(sub).values()] == ["recording"] * 2,
            timeout=15,
        )
        assert f"resuming source {LOW}" in log.read_text()

        assert stop(agent) == 0
    finally:
        sub.close()
        notify.close()
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)
        ballast.unlink(missing_ok=True)

    # Nothing held was lost: every recording ever made is stored, whole, on disk.
    states = ("active", "deleting", "deleted", "missing", "restricted")
    res = cli(cfg, "recordings", "list", "--json", *(a for s in states for a in ("--state", s)))
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert rows and {r["state"] for r in rows} == {"active"}
    root = disk / "recordings"
    for r in rows:
        f = root / r["path"]
        assert f.is_file() and f.stat().st_size == r["size"], r
        assert media.sha256_file(f) == r["sha256"], r
    on_disk = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert on_disk == {r["path"] for r in rows}
    by_source = {s: sum(1 for r in rows if r["source_id"] == s) for s in (HIGH, LOW)}
    assert by_source[HIGH] >= 4 and by_source[LOW] >= 3, by_source

    res = cli(cfg, "hold", "list", "--json")
    assert res.returncode == 0 and [h["id"] for h in json.loads(res.stdout)] == [hold_id]
    res = cli(cfg, "audit", "verify")
    assert res.returncode == 0, res.stdout + res.stderr
    res = cli(cfg, "audit", "export")
    assert res.returncode == 0, res.stderr
    actions = [json.loads(line)["action"] for line in res.stdout.splitlines() if line.strip()]
    assert "hold.placed" in actions
    assert not [a for a in actions if "delet" in a], actions
    assert not events_of(sub, "recording.deleted")
