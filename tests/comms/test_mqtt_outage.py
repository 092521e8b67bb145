"""Nothing lost while the broker is away: 1,000 events across a broker outage and an agent restart.

The outage lasts ``EDGE_MQTT_OUTAGE_S`` seconds (default 30, as the issue asks;
set it lower for a quick local run).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from edge_agent.core.model import utcnow
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox
from tests.support.broker import Broker, Subscriber, start_agent, write_agent_config

OUTAGE_S = float(os.environ.get("EDGE_MQTT_OUTAGE_S", "30"))
EVENTS = 1000


def _produce(catalog: Path, root: Path, first: int, n: int) -> list[str]:
    cat = Catalog.open(catalog, device_id="gw-1", storage_root=root)
    try:
        outbox = Outbox(cat)
        ids = []
        for i in range(first, first + n):
            # One transaction per event, like real changes: no batching luck.
            ids.append(outbox.enqueue("test.outage", {"n": i}, ts=utcnow()).id)
        return ids
    finally:
        cat.close()


def test_broker_outage_with_agent_restart_loses_nothing(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    cfg = write_agent_config(tmp_path, broker)
    log = tmp_path / "agent.log"
    agent = start_agent(cfg, log)
    fleet = Subscriber(
        broker, ["edge/gw-1/events", "edge/gw-1/status"], client_id="fleet", persistent=True
    )
    try:
        fleet.wait_for("edge/gw-1/status", lambda g: any(p["state"] == "online" for p in g))
        time.sleep(1.5)  # the broker autosaves the persistent subscription every second
        broker.kill()
        outage_start = time.monotonic()

        ids = _produce(tmp_path / "catalog.db", tmp_path / "recordings", 0, EVENTS // 2)
        agent.send_signal(signal.SIGTERM)  # restart the agent while the broker is away
        assert agent.wait(15) == 0, log.read_text()
        agent = start_agent(cfg, log)
        ids += _produce(tmp_path / "catalog.db", tmp_path / "recordings", EVENTS // 2, EVENTS // 2)

        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_start)))
        broker.start()

        wanted = set(ids)
        events = fleet.wait_for(
            "edge/gw-1/events",
            lambda g: wanted <= {e["id"] for e in g},
            timeout=60 + OUTAGE_S,
        )
        by_id = {e["id"]: e for e in events}
        seqs = sorted(by_id[i]["seq"] for i in ids)
        assert seqs == list(range(seqs[0], seqs[0] + EVENTS)), "seq not contiguous"
        assert [by_id[i]["n"] for i in ids] == list(range(EVENTS))
        # Everything acknowledged has left the outbox.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cat = Catalog.open(
                tmp_path / "catalog.db", device_id="gw-1", storage_root=tmp_path / "recordings"
            )
            depth = Outbox(cat).depth()
            cat.close()
            if depth == 0:
                break
            time.sleep(0.2)
        assert depth == 0
        # The restarted agent came back online with a newer session.
        sessions = [p["session"] for p in fleet.payloads("edge/gw-1/status")]
        assert max(sessions) > min(sessions)
    finally:
        fleet.close()
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(15)
        broker.stop()
