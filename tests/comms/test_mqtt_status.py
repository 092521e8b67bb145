"""Availability on a real mosquitto: retained online, will on SIGKILL, clean offline; TLS."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from edge_agent.comms.mqtt import MqttLink, MqttSettings
from tests.support.broker import Broker, Subscriber, start_agent, write_agent_config


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_online_will_on_sigkill_and_offline_on_sigterm(tmp_path: Path, broker: Broker) -> None:
    cfg = write_agent_config(tmp_path, broker)
    log = tmp_path / "agent.log"
    status = "edge/gw-1/status"
    agent = start_agent(cfg, log)
    sub = Subscriber(broker, [status, "edge/gw-1/telemetry"])
    try:
        online = sub.wait_for(status, lambda g: any(p["state"] == "online" for p in g))[-1]
        session = online["session"]
        assert session >= 1 and online["reasons"] == [] and online["version"]
        sub.wait_for("edge/gw-1/telemetry", lambda g: len(g) > 0)

        agent.kill()  # SIGKILL: only the broker's will can speak for it now
        agent.wait(10)
        offline = sub.wait_for(status, lambda g: g[-1]["state"] == "offline")[-1]
        assert offline["session"] == session

        # A late subscriber gets the retained offline with the same session.
        late = Subscriber(broker, [status], client_id="late")
        assert late.wait_for(status, lambda g: len(g) > 0)[0] == offline
        late.close()

        agent = start_agent(cfg, log)
        again = sub.wait_for(
            status, lambda g: g[-1]["state"] == "online" and g[-1]["session"] > session
        )[-1]
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(12) == 0
        bye = sub.wait_for(status, lambda g: g[-1]["state"] == "offline")[-1]
        assert bye["session"] == again["session"]
    finally:
        sub.close()
        _stop(agent)


async def test_tls_with_client_certificate(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", tls=True)
    broker.start()
    assert broker.tls is not None
    sub = Subscriber(broker, ["t/#"])
    try:
        settings = MqttSettings(
            host="127.0.0.1",
            port=broker.port,
            client_id="tls-agent",
            tls=True,
            ca_file=broker.tls.ca,
            cert_file=broker.tls.client_cert,
            key_file=broker.tls.client_key,
        )
        link = MqttLink(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(link.run(stop))
        await asyncio.wait_for(link.wait_connected(), 10)
        assert await link.publish_wait("t/hello", b'{"over": "tls"}', qos=1)
        await asyncio.to_thread(sub.wait_for, "t/hello", lambda g: g == [{"over": "tls"}])
        stop.set()
        await asyncio.wait_for(task, 10)

        # Without a client certificate the broker refuses the handshake.
        bare = MqttLink(
            MqttSettings(
                host="127.0.0.1",
                port=broker.port,
                client_id="no-cert",
                tls=True,
                ca_file=broker.tls.ca,
                reconnect_min=5,
            )
        )
        stop2 = asyncio.Event()
        task2 = asyncio.create_task(bare.run(stop2))
        await asyncio.sleep(1.0)
        assert not bare.connected and bare.last_error
        stop2.set()
        await asyncio.wait_for(task2, 10)
    finally:
        sub.close()
        broker.stop()


async def test_mqtt_311_selectable(tmp_path: Path, broker: Broker) -> None:
    sub = Subscriber(broker, ["t/#"])
    link = MqttLink(
        MqttSettings(host="127.0.0.1", port=broker.port, client_id="v311", protocol="3.1.1")
    )
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    try:
        await asyncio.wait_for(link.wait_connected(), 10)
        assert await link.publish_wait("t/x", b"[1]", qos=1)
        await asyncio.to_thread(sub.wait_for, "t/x", lambda g: g == [[1]])
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        sub.close()
