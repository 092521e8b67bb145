"""Command results survive an outage and a stop: stored first, published until acked.

Real parts: a mosquitto the test starts late (the outage), the agent's own
MqttLink and CommandDispatcher, a real catalog and signed commands. The
command message is handed to the dispatcher directly while the broker is down,
as the broker would have delivered it just before going away.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from broker import Broker, Subscriber, write_agent_config
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.audit import AuditLog
from edge_agent.catalog import Catalog
from edge_agent.command_dispatch import CommandDispatcher
from edge_agent.command_results import INTERRUPTED, ResultStore
from edge_agent.commands import TrustedKey, sign
from edge_agent.config import Config, load_config
from edge_agent.model import utcnow
from edge_agent.mqtt import InMessage, MqttLink, MqttSettings

ROOT = "edge/gw-1"


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    broker = Broker(tmp_path / "broker")  # not started: the broker is down
    cfg = load_config(write_agent_config(tmp_path, broker))
    cat = Catalog.open(cfg.storage.catalog, device_id="gw-1", storage_root=cfg.storage.root)
    key = Ed25519PrivateKey.generate()
    yield {"broker": broker, "cfg": cfg, "cat": cat, "key": key}
    cat.close()
    broker.stop()


def _dispatcher(cfg: Config, cat: Catalog, key: Ed25519PrivateKey) -> CommandDispatcher:
    settings = dataclasses.replace(MqttSettings.from_config(cfg), reconnect_max=1.0)
    trusted = TrustedKey("central", key.public_key())
    return CommandDispatcher(
        cat,
        MqttLink(settings),
        ROOT,
        device_id="gw-1",
        trusted={trusted.id: trusted},
        storage_root=Path(cfg.storage.root),
        now=utcnow,
        locations=frozenset({"gate"}),
    )


def _hold_message(
    key: Ed25519PrivateKey, *, dup: bool = False, cmd_id: str | None = None
) -> InMessage:
    now = utcnow()
    env = sign(
        key,
        device="gw-1",
        name="hold",
        args={
            "kind": "incident",
            "reason": "break-in under investigation",
            "location": "gate",
            "start": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        issued_at=now,
        ttl=timedelta(minutes=10),
        cmd_id=cmd_id,
    )
    return InMessage(
        topic=f"{ROOT}/cmd/hold",
        payload=json.dumps(env.model_dump(mode="json")).encode(),
        qos=1,
        mid=1,
        dup=False,
        response_topic="dashboard/replies",
        correlation_data=b"corr-42",
        _ack=lambda: None,
    )


async def test_a_result_made_during_an_outage_arrives_when_the_broker_returns(
    env: dict[str, Any],
) -> None:
    broker, cat = env["broker"], env["cat"]
    broker.start()
    # A dashboard with a persistent session: what is published while it reconnects
    # is queued for it by the broker, so the test does not race the agent.
    topics = [f"{ROOT}/cmd-result/#", "dashboard/replies"]
    sub = Subscriber(broker, topics, client_id="dash", persistent=True)
    disp = _dispatcher(env["cfg"], cat, env["key"])
    stop = asyncio.Event()
    tasks = [asyncio.create_task(disp.link.run(stop)), asyncio.create_task(disp.run(stop))]
    try:
        await asyncio.wait_for(disp.link.wait_connected(), 10)
        broker.stop()  # the outage; SIGTERM saves the dashboard's session
        for _ in range(200):
            if not disp.link.connected:
                break
            await asyncio.sleep(0.05)
        assert not disp.link.connected

        # The command arrived just before the broker went away.
        result = await disp.handle(_hold_message(env["key"]))
        assert result.state == "done", result
        assert len(cat.list_holds()) == 1
        [pending] = ResultStore(cat).pending()
        assert (pending.cmd_id, pending.response_topic) == (result.id, "dashboard/replies")
        assert pending.correlation == b"corr-42"

        broker.start()
        done = await asyncio.to_thread(
            sub.wait_for,
            f"{ROOT}/cmd-result/{result.id}",
            lambda g: any(r["state"] == "done" for r in g),
            30,
        )
        assert done[-1]["result"] == result.result
        replies = await asyncio.to_thread(
            sub.wait_for, "dashboard/replies", lambda g: any(r["id"] == result.id for r in g), 10
        )
        assert replies[-1]["state"] == "done"
        for _ in range(100):
            if not ResultStore(cat).pending():
                break
            await asyncio.sleep(0.05)
        assert ResultStore(cat).pending() == []  # acked: not sent again
    finally:
        sub.close()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


def test_a_command_cut_short_by_a_stop_is_failed_audited_and_not_run_again(
    env: dict[str, Any],
) -> None:
    cat = env["cat"]
    disp = _dispatcher(env["cfg"], cat, env["key"])
    msg = _hold_message(env["key"])
    # Steps 1-2 happened (accepted, audited, acked to the broker); the agent then died.
    decision = disp._decide_and_record(msg, "hold", utcnow())
    cmd_id = decision.verdict.cmd_id
    assert decision.verdict.accepted and cmd_id

    closed = ResultStore(cat).close_interrupted(utcnow())
    assert closed == [cmd_id]
    assert ResultStore(cat).close_interrupted(utcnow()) == []  # once
    assert cat.list_holds() == []  # not run again
    [pending] = ResultStore(cat).pending()
    doc = json.loads(pending.payload)
    assert doc["state"] == "failed" and doc["reason"] == INTERRUPTED
    actions = [e["action"] for e in AuditLog(cat).export()]
    assert actions[-2:] == ["command.accepted", "command.interrupted"]
    assert AuditLog(cat).verify().ok

    # The broker delivers it again (dup): answered from the store, still not run.
    again = asyncio.run(disp.handle(dataclasses.replace(msg, dup=True)))
    assert again.state == "failed" and again.reason == INTERRUPTED
    assert cat.list_holds() == []


def test_migration_marks_results_sent_before_it_as_acked(tmp_path: Path) -> None:
    from sqlite_utils import Database

    from edge_agent.migrations import MIGRATIONS, apply_migrations

    conn = sqlite3.connect(str(tmp_path / "old.db"), isolation_level=None)
    db = Database(conn, execute_plugins=False)
    apply_migrations(db, [m for m in MIGRATIONS if m.version <= 3])
    conn.execute(
        "INSERT INTO commands (id, name, digest, received_at, expires_at, state, result) "
        "VALUES ('old', 'hold', 'd', 1, 2, 'done', '{}'), ('open', 'hold', 'd', 1, 2, "
        "'accepted', NULL)"
    )
    apply_migrations(db, MIGRATIONS)
    rows = dict(conn.execute("SELECT id, result_acked FROM commands").fetchall())
    assert rows == {"old": 1, "open": 0}
