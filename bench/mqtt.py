"""MQTT drain benchmark: the outbox publisher vs plain paho, same broker, same payloads.

    python bench/mqtt.py [--events 10000] [--runs 3] [--window 100]

Starts its own mosquitto on a free loopback port. For each run:

1. queue ``--events`` events in a fresh catalog outbox while no broker is
   reachable (the "outage"), then start the agent's :class:`MqttLink` +
   :class:`Publisher` and time until the broker has acknowledged every one and
   the outbox is empty (deleted in the catalog, not merely sent);
2. publish the very same payload bytes with a plain paho client
   (``loop_start`` thread, QoS 1, same in-flight limit) and time until every
   PUBACK has arrived.

Prints events/s for both and the ratio (targets: >= 5,000 events/s, >= 0.4x).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.comms.mqtt import MqttLink, MqttSettings
from edge_agent.comms.publisher import Publisher
from edge_agent.core.model import utcnow
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox
from tests.support.broker import Broker

TOPIC = "bench/gw-1/events"


def queue_events(folder: Path, n: int) -> tuple[Catalog, list[str]]:
    cat = Catalog.open(folder / "catalog.db", device_id="gw-1", storage_root=folder / "rec")
    outbox = Outbox(cat)
    with cat.transaction():
        for i in range(n):
            outbox.enqueue(
                "recording.added",
                {"recording_id": f"rec-{i:06d}", "location": "gate", "size": 1_234_567},
                ts=utcnow(),
            )
    payloads = [str(r[0]) for r in cat.query("SELECT payload FROM outbox ORDER BY seq")]
    return cat, payloads


async def drain(cat: Catalog, port: int, window: int) -> float:
    link = MqttLink(MqttSettings(host="127.0.0.1", port=port, client_id="bench-agent"))
    pub = Publisher(cat, link, TOPIC, now=utcnow, window=window)
    stop = asyncio.Event()
    link_task = asyncio.create_task(link.run(stop))
    await link.wait_connected()
    t0 = time.perf_counter()
    pub_task = asyncio.create_task(pub.run(stop))
    # Polling, cheaply: the publisher has no "drained" signal to wait on.
    while cat.query("SELECT 1 FROM outbox LIMIT 1"):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    stop.set()
    await asyncio.gather(link_task, pub_task)
    return elapsed


def plain_paho(port: int, payloads: list[str], window: int) -> float:
    done = threading.Event()
    left = [len(payloads)]

    def on_publish(*_: object) -> None:
        left[0] -= 1
        if left[0] == 0:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-plain", protocol=paho.MQTTv5)
    c.max_inflight_messages_set(window)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    for p in payloads:
        c.publish(TOPIC, p, qos=1)
    done.wait(120)
    elapsed = time.perf_counter() - t0
    c.loop_stop()
    c.disconnect()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=100)
    args = ap.parse_args()
    n = args.events
    ours, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker")
        try:
            for run in range(args.runs):
                folder = Path(tmp) / f"run{run}"
                folder.mkdir()
                broker.stop()  # the outage: events pile up with no broker
                cat, payloads = queue_events(folder, n)
                broker.start()
                try:
                    ours.append(asyncio.run(drain(cat, broker.port, args.window)))
                finally:
                    cat.close()
                plain.append(plain_paho(broker.port, payloads, args.window))
                print(
                    f"run {run + 1}: outbox drain {n / ours[-1]:,.0f} events/s, "
                    f"plain paho {n / plain[-1]:,.0f} events/s"
                )
        finally:
            broker.stop()
    o, p = n / statistics.median(ours), n / statistics.median(plain)
    print(f"median over {args.runs} runs, {n} events, window {args.window}:")
    print(f"  outbox drain (durable, acked in SQLite): {o:,.0f} events/s (target >= 5,000)")
    print(f"  plain paho QoS 1 (memory only):          {p:,.0f} events/s")
    print(f"  ratio: {o / p:.2f}x (target >= 0.4x)")
    return 0 if o >= 5000 and o / p >= 0.4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
