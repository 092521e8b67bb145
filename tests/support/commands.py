"""Test helpers shared by several test modules (first written in test_mqtt_commands.py)."""

from __future__ import annotations

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from tests.support.broker import Broker

ROOT = "edge/gw-1"


def _publish(
    broker: Broker, name: str, payload: bytes | str, props: Properties | None = None
) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    c.publish(f"{ROOT}/cmd/{name}", payload, qos=1, properties=props).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()
