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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.app.settings import mqtt_settings
from edge_agent.comms.command_dispatch import CommandDispatcher
from edge_agent.comms.mqtt import InMessage, MqttLink
from edge_agent.config.config import Config, load_config
from edge_agent.core.commands import CommandResult, TrustedKey, sign
from edge_agent.core.model import iso, utcnow
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.command_results import INTERRUPTED, ResultStore
from tests.support.broker import Broker, Subscriber, write_agent_config

ROOT = "edge/gw-1"
REPLY = f"{ROOT}/reply/dashboard"


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
    settings = dataclasses.replace(mqtt_settings(cfg), reconnect_max=1.0)
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
        response_topic=REPLY,
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
    topics = [f"{ROOT}/cmd-result/#", REPLY]
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
        assert len(cat.holds.list()) == 1
        [pending] = ResultStore(cat).pending()
        assert (pending.cmd_id, pending.response_topic) == (result.id, REPLY)
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
            sub.wait_for, REPLY, lambda g: any(r["id"] == result.id for r in g), 10
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
    decision = disp._decide_and_record(msg, "hold", utcnow(), None)
    cmd_id = decision.verdict.cmd_id
    assert decision.verdict.accepted and cmd_id

    closed = ResultStore(cat).close_interrupted(utcnow())
    assert closed == [cmd_id]
    assert ResultStore(cat).close_interrupted(utcnow()) == []  # once
    assert cat.holds.list() == []  # not run again
    [pending] = ResultStore(cat).pending()
    doc = json.loads(pending.payload)
    assert doc["state"] == "failed" and doc["reason"] == INTERRUPTED
    actions = [e["action"] for e in AuditLog(cat).export()]
    assert actions[-2:] == ["command.accepted", "command.interrupted"]
    assert AuditLog(cat).verify().ok

    # The broker delivers it again (dup): answered from the store, still not run.
    again = asyncio.run(disp.handle(dataclasses.replace(msg, dup=True)))
    assert again.state == "failed" and again.reason == INTERRUPTED
    assert cat.holds.list() == []


def test_migration_marks_results_sent_before_it_as_acked(tmp_path: Path) -> None:
    from sqlite_utils import Database

    from edge_agent.store.migrations import MIGRATIONS, apply_migrations

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


@pytest.mark.parametrize("reply", ["foo/#", "edge/gw-1/events", "a/+/b", "x\x00y"])
async def test_a_stored_result_with_a_bad_response_topic_cannot_crash_the_component(
    env: dict[str, Any], reply: str
) -> None:
    """Issue 12, item 3: a result stored by an older agent with a wildcard reply topic.

    Re-publishing it on every start made paho raise and the component crash-loop.
    Now the answer goes to cmd-result only and is marked sent.
    """
    broker, cat = env["broker"], env["cat"]
    now = utcnow()
    cat.execute(
        "INSERT INTO commands (id, name, key_id, digest, received_at, expires_at, state, "
        "response_topic, correlation) VALUES ('old-1', 'status', NULL, 'd', ?, ?, 'accepted', "
        "?, NULL)",
        (int(now.timestamp()), int(now.timestamp()) + 600, reply),
    )
    ResultStore(cat).store(
        CommandResult(id="old-1", name="status", state="done", result={}, ts=iso(now))
    )
    broker.start()
    sub = Subscriber(broker, [f"{ROOT}/cmd-result/#", "#"], client_id="dash-2")
    disp = _dispatcher(env["cfg"], cat, env["key"])
    stop = asyncio.Event()
    tasks = [asyncio.create_task(disp.link.run(stop)), asyncio.create_task(disp.run(stop))]
    try:
        got = await asyncio.to_thread(
            sub.wait_for, f"{ROOT}/cmd-result/old-1", lambda g: len(g) >= 1, 15
        )
        assert got[0]["state"] == "done"
        for _ in range(100):
            if not ResultStore(cat).pending():
                break
            await asyncio.sleep(0.05)
        assert ResultStore(cat).pending() == []
        assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
        if "#" not in reply and "+" not in reply and "\x00" not in reply:
            assert not sub.payloads(reply), "nothing goes to a topic outside the reply prefix"
    finally:
        sub.close()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


def _raw(payload: bytes, acks: list[int], *, name: str = "erase", mid: int = 1) -> InMessage:
    return InMessage(
        topic=f"{ROOT}/cmd/{name}",
        payload=payload,
        qos=1,
        mid=mid,
        dup=False,
        response_topic=None,
        correlation_data=None,
        _ack=lambda: acks.append(mid),
    )


async def test_a_poison_message_is_acked_audited_and_answered_once(env: dict[str, Any]) -> None:
    """Issue 12, item 2: deep nesting raised RecursionError out of the handler."""
    cat = env["cat"]
    disp = _dispatcher(env["cfg"], cat, env["key"])
    acks: list[int] = []
    result = await disp.handle(_raw(b"[" * 10_000, acks))
    assert result is not None and (result.state, result.reason) == ("rejected", "malformed")
    assert acks == [1]
    [entry] = [e for e in AuditLog(cat).export() if e["action"] == "command.rejected"]
    assert entry["subject"] is None
    assert entry["data"]["size"] == 10_000 and entry["data"]["reason"] == "malformed"


def test_receipt_is_bounded_and_signed_looking_messages_go_first(env: dict[str, Any]) -> None:
    """Issue 12, item 2: one task per message became two bounded lanes.

    Nothing runs the workers here, so every message past the lane's depth must be
    acknowledged at once (never held against the broker's in-flight window).
    """
    cat, key = env["cat"], env["key"]
    disp = _dispatcher(env["cfg"], cat, key)
    acks: list[int] = []
    for i in range(500):
        disp._on_message(_raw(b'{"junk": %d}' % i, acks, mid=i))
    assert disp.queued == disp.queue_depth
    assert len(acks) == 500 - disp.queue_depth  # the overflow, acked and counted
    big = [_raw(b"x" * 100_000, acks, mid=1000 + i) for i in range(50)]
    for m in big:
        disp._on_message(m)
    assert len(acks) == 500 - disp.queue_depth + 50  # too large: acked at receipt
    signed = _hold_message(key)
    disp._on_message(signed)
    assert disp._lanes[0] and disp._lanes[0][0].msg is signed  # its own lane, first
    summary = disp._limiter.due(1e12, force=True)
    assert summary is not None
    assert summary.counts == {"busy": 500 - disp.queue_depth, "too_large": 50}
