"""A publish the broker refuses never wedges the outbox (issue #22, item 2).

Real parts: the agent's MqttLink and Publisher, a real catalog, and brokers
whose ACL denies one topic. Every tenth event is routed to the denied topic:
the others arrive in seq order, the refused ones are held, counted and
alarmed, retried with backoff (no hot loop), and delivered once the broker
accepts them again.

- mosquitto 2, MQTT 5: the refusal is a PUBACK with "not authorized" (0x87);
- RabbitMQ, MQTT 3.1.1: the broker closes the connection on the refused
  publish; the publisher finds the one it closes on (skipped, with the
  reason, without a RabbitMQ with its MQTT plugin and ``rabbitmqctl``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.app.settings import make_gatherer, mqtt_settings
from edge_agent.comms.mqtt import MqttLink
from edge_agent.comms.publisher import Publisher
from edge_agent.comms.telemetry import build_telemetry
from edge_agent.config.config import load_config
from edge_agent.core.model import utcnow
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox
from tests.support.broker import (
    AnyBroker,
    Broker,
    Endpoint,
    Subscriber,
    issue_client_cert,
    rabbitmq_mqtt,
    write_agent_config,
)


def _acl(deny: bool) -> list[str]:
    return [
        "pattern readwrite edge/%u/#",
        *(["pattern deny edge/%u/events/denied"] if deny else []),
        "user dashboard",
        "topic read edge/#",
    ]


async def _wait(pred: Any, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timeout: {what}")
        await asyncio.sleep(0.1)


@dataclasses.dataclass
class Run:
    tmp: Path
    broker: AnyBroker
    device: str
    protocol: str
    dash: Subscriber

    @property
    def root(self) -> str:
        return f"edge/{self.device}"

    def seqs(self, kind: str) -> list[int]:
        return [e["seq"] for e in self.dash.payloads(f"{self.root}/#") if e.get("type") == kind]


async def _scenario(
    run: Run, events: int, *, lift: Any = None, exact: bool = True
) -> dict[str, float]:
    """``exact``: no connection is lost, so nothing is sent twice."""
    cfg = load_config(
        write_agent_config(run.tmp, run.broker, device=run.device, protocol=run.protocol)
    )
    settings = dataclasses.replace(mqtt_settings(cfg), reconnect_max=1.0)
    cat = Catalog.open(cfg.storage.catalog, device_id=run.device, storage_root=cfg.storage.root)
    link = MqttLink(settings)
    events_topic, denied_topic = f"{run.root}/events", f"{run.root}/events/denied"
    pub = Publisher(
        cat,
        link,
        events_topic,
        now=utcnow,
        route=lambda t: denied_topic if t == "test.denied" else events_topic,
    )
    outbox = Outbox(cat)
    # One transaction per event, like real changes; every tenth on the denied topic.
    kinds = ["test.denied" if i % 10 == 9 else "test.ok" for i in range(events)]
    seqs = [outbox.enqueue(k, {"n": i}, ts=utcnow()).seq for i, k in enumerate(kinds)]
    ok = [s for s, k in zip(seqs, kinds, strict=True) if k == "test.ok"]
    denied = [s for s, k in zip(seqs, kinds, strict=True) if k == "test.denied"]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(link.run(stop)), asyncio.create_task(pub.run(stop))]
    figures: dict[str, float] = {}
    try:
        cpu0, wall0 = time.process_time(), time.monotonic()
        # Distinct seqs: under at-least-once a redelivered event must not stand in
        # for one that has not arrived yet.
        await _wait(lambda: len(set(run.seqs("test.ok"))) >= len(ok), 120, "the accepted events")
        figures["deliver_s"] = time.monotonic() - wall0
        figures["deliver_cpu_s"] = time.process_time() - cpu0
        got = run.seqs("test.ok")
        if not exact:
            # At least once: what a lost connection left unacknowledged comes again.
            got = list(dict.fromkeys(got))
        assert got == ok, "the accepted events out of order, lost or doubled"
        await _wait(lambda: pub.refused_counts()[1] == len(denied), 30, "all denied held")
        await _wait(lambda: run.seqs("alarm.publish_refused"), 15, "the alarm")
        alarm = [
            e
            for e in run.dash.payloads(f"{run.root}/events")
            if e["type"] == "alarm.publish_refused"
        ]
        assert len(alarm) == 1 and alarm[0]["topic"] == denied_topic, alarm
        assert alarm[0]["first_seq"] == denied[0]
        # Counted in the telemetry payload, the way the daemon wires it.
        gatherer = make_gatherer(cfg, cat)
        gatherer.refused = pub.refused_counts
        snap = await asyncio.to_thread(gatherer.gather, utcnow())
        tele = build_telemetry(snap).outbox
        assert tele.held == len(denied) and tele.refused >= 1, tele

        # Held with backoff: a quiet process, and only a few probes.
        refusals0 = pub.refusals
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(12)
        figures["held_cpu_share"] = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        figures["probes_in_12s"] = pub.refusals - refusals0
        assert figures["held_cpu_share"] < 0.05, figures
        assert 1 <= figures["probes_in_12s"] <= 4, figures
        assert not run.seqs("test.denied"), "a denied event got through"
        assert await asyncio.to_thread(outbox.depth) == len(denied)

        if lift is not None:
            # The ACL is fixed: the next probe is accepted and the held events follow.
            await asyncio.to_thread(lift)
            await _wait(lambda: len(set(run.seqs("test.denied"))) >= len(denied), 60, "the release")
            released = run.seqs("test.denied")
            assert (released if exact else list(dict.fromkeys(released))) == denied
            await _wait(lambda: run.seqs("alarm.cleared"), 15, "the cleared alarm")
            assert pub.refused_counts()[1] == 0
        figures["refusals"] = pub.refusals
        return figures
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        cat.close()


@pytest.fixture(params=[100_000, 0], ids=["queue-limit", "unlimited-queue"])
def mosquitto(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Broker]:
    # With an unlimited queue mosquitto 2.0.11 also closes the connection after the
    # refusal: the PUBACK path and the lost-connection path in one test.
    broker = Broker(
        tmp_path / "broker",
        tls=True,
        acl=_acl(deny=True),
        client_cn="gw-1",
        max_queued=request.param,
    )
    broker.start()
    yield broker
    broker.stop()


async def test_mqtt5_refused_puback_never_wedges_the_outbox(
    tmp_path: Path, mosquitto: Broker
) -> None:
    assert mosquitto.tls is not None
    dash = Subscriber(
        mosquitto,
        ["edge/gw-1/#"],
        client_id="dashboard",
        cert=issue_client_cert(mosquitto.tls, "dashboard"),
    )

    def lift() -> None:
        (mosquitto.folder / "acl").write_text("\n".join(_acl(deny=False)) + "\n")
        assert mosquitto.proc is not None
        os.kill(mosquitto.proc.pid, signal.SIGHUP)  # mosquitto re-reads its ACL file

    try:
        run = Run(tmp_path, mosquitto, "gw-1", "5", dash)
        figures = await _scenario(run, 1000, lift=lift, exact=mosquitto.max_queued > 0)
    finally:
        dash.close()
    print("mqtt5 refusal:", figures)


@pytest.fixture()
def rabbit_user() -> Iterator[tuple[Endpoint, str]]:
    endpoint, why = rabbitmq_mqtt()
    if endpoint is None:
        pytest.skip(why)
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    device = f"gw-r{uuid.uuid4().hex[:8]}"
    user, password = f"edge-{device}", uuid.uuid4().hex

    def ctl_run(*args: str) -> None:
        out = subprocess.run([ctl, "-q", *args], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            pytest.skip(f"rabbitmqctl {args[0]} failed: {out.stderr.strip()[:200]}")

    ctl_run("add_user", user, password)
    try:
        ctl_run("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        # MQTT topics are routing keys with "." for "/": the device may write its
        # own topics but not events/denied.
        root = rf"^edge\.{device}\."
        ctl_run(
            "set_topic_permissions",
            "-p",
            "/",
            user,
            "amq.topic",
            rf"{root}(status|telemetry|events)$",
            ".*",
        )
        yield dataclasses.replace(endpoint, username=user, password=password), device
    finally:
        subprocess.run([ctl, "-q", "delete_user", user], capture_output=True, timeout=60)


async def test_mqtt311_connection_closed_on_refusal_never_wedges_the_outbox(
    tmp_path: Path, rabbit_user: tuple[Endpoint, str]
) -> None:
    endpoint, device = rabbit_user
    guest = dataclasses.replace(endpoint, username="guest", password="guest")
    dash = Subscriber(guest, [f"edge/{device}/#"], client_id=f"dash-{device}")
    try:
        figures = await _scenario(Run(tmp_path, endpoint, device, "3.1.1", dash), 100, exact=False)
    finally:
        dash.close()
    print("mqtt3.1.1 refusal:", figures)
