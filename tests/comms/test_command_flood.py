"""A flood of unsigned junk against a real agent on a small, shared disk (issue 12).

The catalog and the recordings share a 32 MiB tmpfs whose free-space floor
sits 1 MiB under what is free when the agent starts, so very little growth
of anything would put it under the floor. 1,000 unsigned 100 KB messages go
to ``cmd/erase``, ``cmd/hold``, ``cmd/restrict`` and ``cmd/status`` as fast
as the broker takes them, interleaved with 1,000 small malformed ones (JSON
nested 5,000 deep: these are parsed, so they exercise the bounded queue and
the workers), with one valid signed command in the middle.

What must hold (the bounds are stated here and asserted):

- no recording is deleted: all of them are days before their deadline;
- the audit grows by at most ``AUDIT_ROWS`` entries and ``AUDIT_BYTES`` bytes
  of entry data (a rejection burst of 20 records, a summary per minute
  window, the signed command's own entries);
- the agent's resident memory stays under ``RSS_BOUND`` (and within
  ``RSS_GROWTH`` of where it started);
- the signed command is answered, accepted then done.

Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import psutil
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.cli import main as cli_main
from edge_agent.config.config import load_config
from edge_agent.core.commands import load_private_key, sign
from edge_agent.core.model import Purpose, RecState, iso, utcnow
from edge_agent.intake.intake import Intake
from edge_agent.intake.runtime import intake_settings, origin_for
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from tests.support.broker import Broker, Subscriber, start_agent, write_agent_config
from tests.support.mediagen import make_video
from tests.support.tmpfs import mounted_tmpfs

ROOT = "edge/gw-1"
MiB = 1024 * 1024
FLOOD = 1000
SIZE = 100_000
SMALL = b"[" * 5000
AUDIT_ROWS = 30
AUDIT_BYTES = 16 * 1024
RSS_BOUND = 200 * MiB
RSS_GROWTH = 40 * MiB


@pytest.fixture()
def disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", "32m") as mnt:
        yield mnt


def _audit(catalog: Path) -> tuple[int, int]:
    """(entries, bytes of entry data) read beside the running agent (WAL readers are fine)."""
    conn = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(length(data) + length(action) + length(actor) + "
            "coalesce(length(subject), 0) + 150), 0) FROM audit"
        ).fetchone()
        return int(row[0]), int(row[1])
    finally:
        conn.close()


def _free(path: Path) -> int:
    return psutil.disk_usage(str(path)).free


def test_a_flood_of_unsigned_junk_changes_nothing_and_a_signed_command_gets_through(
    tmp_path: Path, disk: Path, broker: Broker
) -> None:
    assert cli_main(["keys", "generate", "--out", str(tmp_path / "keys"), "--name", "central"]) == 0
    cfg_path = write_agent_config(disk, broker, trusted_keys=(tmp_path / "keys" / "central.pub",))
    cfg = load_config(cfg_path)
    cat = Catalog.open(cfg.storage.catalog, device_id="gw-1", storage_root=cfg.storage.root)
    now = utcnow()
    recs = []
    for i in range(4):
        clip = make_video(
            tmp_path / f"clip{i}.mkv",
            container="mkv",
            seconds=1.0,
            creation_time=now - timedelta(hours=i + 1),
        )
        res = Intake(cat, intake_settings(cfg)).adopt(
            clip, origin_for(cfg, "gate", Purpose.SECURITY), now
        )
        assert res.recording is not None, res
        recs.append(res.recording)
    cat.close()
    assert all(r.deadline is not None and r.deadline > now + timedelta(days=2) for r in recs)
    # The floor 1 MiB under what is free now: footage deleted for pressure would show.
    floor_kib = (_free(disk) - MiB) // 1024
    text = cfg_path.read_text().replace(
        'free_space_floor = "1MiB"', f'free_space_floor = "{floor_kib}KiB"'
    )
    cfg_path.write_text(text)

    sub = Subscriber(broker, [f"{ROOT}/cmd-result/#", f"{ROOT}/status", f"{ROOT}/events"])
    agent = start_agent(cfg_path, tmp_path / "agent.log")
    proc = psutil.Process(agent.pid)
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                peak[0] = max(peak[0], proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    try:
        sub.wait_for(f"{ROOT}/status", lambda g: any(p["state"] != "offline" for p in g))
        time.sleep(1.0)  # past start-up's own writes
        rss_before = proc.memory_info().rss
        rows_before, bytes_before = _audit(cfg.storage.catalog)
        free_before = _free(disk)

        key = load_private_key((tmp_path / "keys" / "central.key").read_bytes(), name="central")
        env = sign(
            key,
            device="gw-1",
            name="erase",
            args={
                "ref": "DSR-flood",
                "location": "gate",
                "start": iso(now - timedelta(hours=6)),
                "end": iso(now),
                "dry_run": True,
            },
            issued_at=utcnow(),
            ttl=timedelta(minutes=10),
        )
        signed = json.dumps(env.model_dump(mode="json")).encode()
        names = ("erase", "hold", "restrict", "status")
        # Envelopes whose text an older agent copied into the audit log (the name).
        junk = [
            json.dumps(
                {
                    "v": 1,
                    "id": f"junk-{n}",
                    "device": "gw-1",
                    "name": n * (SIZE // len(n)),
                    "issued_at": iso(now),
                    "expires_at": iso(now + timedelta(minutes=5)),
                }
            ).encode()
            for n in names
        ]

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        attacker = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        attacker.max_inflight_messages_set(100)
        attacker.connect("127.0.0.1", broker.port)
        attacker.loop_start()
        t0 = time.monotonic()
        infos = []
        for i in range(FLOOD):
            infos.append(
                attacker.publish(f"{ROOT}/cmd/{names[i % 4]}", junk[i % 4] + b" " * i, qos=1)
            )
            infos.append(attacker.publish(f"{ROOT}/cmd/{names[i % 4]}", SMALL, qos=1))
            if i == FLOOD // 2:
                infos.append(attacker.publish(f"{ROOT}/cmd/erase", signed, qos=1))
        for info in infos:
            info.wait_for_publish(30)
        flood_seconds = time.monotonic() - t0
        got = sub.wait_for(
            f"{ROOT}/cmd-result/{env.id}",
            lambda g: any(r["state"] in ("done", "failed") for r in g),
            timeout=30,
        )
        answered_after = time.monotonic() - t0
        attacker.loop_stop()
        attacker.disconnect()
        time.sleep(2.0)  # whatever was queued is worked off
        sampling.set()
        sampler.join(5)
        rss_after = proc.memory_info().rss
        rows_after, bytes_after = _audit(cfg.storage.catalog)
        free_after = _free(disk)
        assert agent.poll() is None, "the agent is still running"
    finally:
        sampling.set()
        sub.close()
        agent.terminate()
        try:
            agent.wait(20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)

    assert [r["state"] for r in got] == ["accepted", "done"], got
    assert got[-1]["result"]["touched_count"] == len(recs)  # a dry run: touched nothing
    print(
        f"\nflood: {FLOOD} x {SIZE} B + {FLOOD} x {len(SMALL)} B in {flood_seconds:.1f} s; "
        "signed erase answered after "
        f"{answered_after:.1f} s; audit +{rows_after - rows_before} entries, "
        f"+{bytes_after - bytes_before} B; RSS {rss_before / MiB:.0f} MiB before, "
        f"peak {peak[0] / MiB:.0f} MiB, {rss_after / MiB:.0f} MiB after; "
        f"disk free {free_before // 1024} KiB -> {free_after // 1024} KiB "
        f"(floor {floor_kib} KiB)"
    )
    assert rows_after - rows_before <= AUDIT_ROWS
    assert bytes_after - bytes_before <= AUDIT_BYTES
    assert peak[0] < RSS_BOUND and peak[0] - rss_before < RSS_GROWTH

    cat = Catalog.open(cfg.storage.catalog, device_id="gw-1", storage_root=cfg.storage.root)
    try:
        for r in recs:
            row = cat.recordings.get(r.id)
            assert row is not None and row.state is RecState.ACTIVE, row
            assert (cfg.storage.root / r.path).is_file()
        entries = list(AuditLog(cat).export())
        assert AuditLog(cat).verify().ok
    finally:
        cat.close()
    new = entries[rows_before:]
    actions = [e["action"] for e in new]
    assert not [a for a in actions if "delet" in a], actions
    rejected = [e for e in new if e["action"] == "command.rejected"]
    assert 1 <= len(rejected) <= 20
    assert {e["data"]["reason"] for e in rejected} <= {"too_large", "malformed"}
    # Nothing of the sender's text: fixed fields, the topic level escaped.
    assert all(len(json.dumps(e["data"])) < 300 for e in rejected)
    summaries = [e["data"] for e in new if e["action"] == "command.rejected_summary"]
    counted = sum(s["total"] for s in summaries)
    assert len(rejected) + counted == 2 * FLOOD, (len(rejected), summaries)
    assert "command.accepted" in actions
    # Disk pressure never acted (footage untouched), so no pressure alarm either way.
    assert datetime.now(UTC) < min(r.deadline for r in recs if r.deadline)
