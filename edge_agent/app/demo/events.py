"""Where the demo's events go: a local broker if one answers, else they stay queued."""

from __future__ import annotations

import os
import socket
from typing import Any

__all__ = ["broker_answers", "demo_broker", "publish_local"]


def demo_broker() -> tuple[str, int]:
    """Where the demo looks for a broker: ``$EDGE_AGENT_DEMO_BROKER`` or 127.0.0.1:1883."""
    host, _, port = os.environ.get("EDGE_AGENT_DEMO_BROKER", "127.0.0.1:1883").rpartition(":")
    return host or "127.0.0.1", int(port)


def broker_answers() -> bool:
    try:
        with socket.create_connection(demo_broker(), timeout=0.5):
            return True
    except OSError:
        return False


def publish_local(topic: str, payloads: list[dict[str, Any]]) -> int:
    """QoS 1 publish of the queued events; returns how many the broker acknowledged."""
    import json

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-agent-demo")
    try:
        host, port = demo_broker()
        client.connect(host, port, keepalive=10)
        client.loop_start()
        infos = [client.publish(topic, json.dumps(p), qos=1) for p in payloads]
        done = 0
        for info in infos:
            info.wait_for_publish(timeout=5)
            if not info.is_published():
                break
            done += 1
        return done
    except (OSError, RuntimeError, ValueError):
        return 0
    finally:
        client.loop_stop()
        client.disconnect()
