"""The brokers fleets run, each started (or found) by the test: what the agent needs works.

One scenario per broker kind (docs/brokers.md has the table): the retained
status and telemetry, every event with ``seq`` gap-free, a signed command
answered on ``cmd-result/{id}`` (and on MQTT 5 on the response topic with the
correlation data), the retained topics for a late subscriber, and the will
(``offline``) when the agent dies.

- mosquitto 2, MQTT 5, TLS with client certificates, a per-device ACL;
- RabbitMQ's MQTT plugin (3.1.1): the machine's RabbitMQ, prepared by
  ``.ci/run``; skipped with the reason when it is absent;
- the NATS server's MQTT listener (3.1.1, JetStream), started per test.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.cli import main as cli_main
from edge_agent.core.commands import load_private_key, sign
from edge_agent.core.model import utcnow
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox
from tests.support.broker import (
    AnyBroker,
    Broker,
    NatsBroker,
    Subscriber,
    issue_client_cert,
    rabbitmq_mqtt,
    start_agent,
    write_agent_config,
)

ROOT = "edge/gw-1"
EVENTS = 50

# The per-device ACL of docs/brokers.md: a device reads and writes under its own
# root only; the dashboard reads everything and may send commands.
DEVICE_ACL = [
    "pattern readwrite edge/%u/#",
    "user dashboard",
    "topic read edge/#",
    "topic write edge/+/cmd/#",
]


def produce(tmp: Path, n: int, kind: str = "test.broker") -> list[str]:
    """``n`` events committed the way the agent's components commit them."""
    cat = Catalog.open(tmp / "catalog.db", device_id="gw-1", storage_root=tmp / "recordings")
    try:
        outbox = Outbox(cat)
        return [outbox.enqueue(kind, {"n": i}, ts=utcnow()).id for i in range(n)]
    finally:
        cat.close()


def signed_status(tmp: Path, cmd_id: str) -> str:
    key = load_private_key((tmp / "keys" / "central.key").read_bytes(), name="central")
    env = sign(
        key,
        device="gw-1",
        name="status",
        args={},
        issued_at=utcnow(),
        ttl=timedelta(minutes=10),
        cmd_id=cmd_id,
    )
    return json.dumps(env.model_dump(mode="json"))


def exercise(
    tmp: Path,
    broker: AnyBroker,
    *,
    protocol: str,
    dash_cert: tuple[Path, Path] | None = None,
) -> dict[str, Any]:
    """The whole agent against ``broker``; returns what the dashboard saw."""
    assert cli_main(["keys", "generate", "--out", str(tmp / "keys"), "--name", "central"]) == 0
    cfg = write_agent_config(
        tmp,
        broker,
        protocol=protocol,
        trusted_keys=(tmp / "keys" / "central.pub",),
        telemetry_interval=1.0,
    )
    log = tmp / "agent.log"
    agent = start_agent(cfg, log)
    dash = Subscriber(
        broker, [f"{ROOT}/#"], client_id="dashboard", cert=dash_cert, protocol=protocol
    )
    late: Subscriber | None = None
    try:
        dash.wait_for(f"{ROOT}/status", lambda g: any(p["state"] == "online" for p in g), 30)
        dash.wait_for(f"{ROOT}/telemetry", bool, 30)

        ids = produce(tmp, EVENTS)
        events = dash.wait_for(
            f"{ROOT}/events", lambda g: set(ids) <= {e["id"] for e in g}, timeout=30
        )
        by_id = {e["id"]: e for e in events}
        seqs = [by_id[i]["seq"] for i in ids]
        assert seqs == list(range(seqs[0], seqs[0] + EVENTS)), "seq not gap-free, in order"

        # A signed command; on MQTT 5 with a response topic and correlation data.
        cmd_id = f"c-{uuid.uuid4()}"
        props = None
        if protocol == "5":
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = f"{ROOT}/reply/dashboard"
            props.CorrelationData = b"corr-42"
        dash.client.publish(
            f"{ROOT}/cmd/status", signed_status(tmp, cmd_id), qos=1, properties=props
        ).wait_for_publish(10)
        results = dash.wait_for(
            f"{ROOT}/cmd-result/{cmd_id}", lambda g: any(r["state"] == "done" for r in g), 30
        )
        assert [r["state"] for r in results] == ["accepted", "done"], results
        replies = []
        if protocol == "5":
            dash.wait_for(f"{ROOT}/reply/dashboard", lambda g: len(g) >= 2, 30)
            replies = dash.raw(f"{ROOT}/reply/dashboard")
            assert {m.properties.CorrelationData for m in replies} == {b"corr-42"}

        # Retained: a dashboard that connects now still learns the state.
        late = Subscriber(
            broker,
            [f"{ROOT}/status", f"{ROOT}/telemetry"],
            client_id="late",
            cert=dash_cert,
            protocol=protocol,
        )
        late.wait_for(f"{ROOT}/status", lambda g: any(p["state"] == "online" for p in g), 15)
        late.wait_for(f"{ROOT}/telemetry", bool, 15)
        assert all(m.retain for m in late.raw(f"{ROOT}/status")[:1])

        # The will: a dead agent turns offline (keepalive 5 s: within 1.5 x 5 s).
        killed = time.monotonic()
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        dash.wait_for(f"{ROOT}/status", lambda g: g[-1]["state"] == "offline", 30)
        return {
            "events": len(events),
            "will_after_s": time.monotonic() - killed,
            "replies": len(replies),
        }
    except BaseException:
        print(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        dash.close()
        if late is not None:
            late.close()
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(15)


def test_mosquitto_mqtt5_tls_client_certificates_and_device_acl(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", tls=True, acl=DEVICE_ACL, client_cn="gw-1")
    broker.start()
    assert broker.tls is not None
    dash_cert = issue_client_cert(broker.tls, "dashboard")
    try:
        got = exercise(tmp_path, broker, protocol="5", dash_cert=dash_cert)
        assert got["replies"] == 2
        # The ACL is live: the same device certificate may not write under another root.
        intruder = Subscriber(broker, [], client_id="gw-1-probe", protocol="5")
        codes: list[Any] = []
        intruder.client.on_publish = lambda _c, _u, _mid, rc, _p: codes.append(rc)
        intruder.client.publish("edge/gw-2/status", b"{}", qos=1).wait_for_publish(10)
        intruder.close()
        assert [str(c) for c in codes] == ["Not authorized"]
    finally:
        broker.stop()


def test_rabbitmq_mqtt_plugin_mqtt311(tmp_path: Path) -> None:
    endpoint, why = rabbitmq_mqtt()
    if endpoint is None:
        pytest.skip(why)
    # RabbitMQ is shared by the machine: a device id of its own per run would
    # need per-run ACLs; the retained status of an earlier run is overwritten.
    exercise(tmp_path, endpoint, protocol="3.1.1")


@pytest.mark.skipif(
    shutil.which("nats-server") is None, reason="no nats-server (Debian: nats-server)"
)
def test_nats_server_mqtt_listener_jetstream(tmp_path: Path) -> None:
    broker = NatsBroker(tmp_path / "nats")
    broker.start()
    try:
        exercise(tmp_path, broker, protocol="3.1.1")
    finally:
        broker.stop()
