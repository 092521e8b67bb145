"""Doctor checks over the network: a real MQTT CONNECT, and each camera's RTSP ``OPTIONS``."""

from __future__ import annotations

import secrets
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_agent.app.doctor.model import DEFAULT_TIMEOUT, Check, fail, ok, warn
from edge_agent.config.config import Config, Mqtt, Source

__all__ = [
    "check_broker",
    "check_source",
    "mqtt_connect",
    "rtsp_options",
]

_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


# -- broker -----------------------------------------------------------------------------


def check_broker(cfg: Config, timeout: float = DEFAULT_TIMEOUT) -> Check:
    name = "broker"
    mqtt = cfg.mqtt
    if mqtt is None:
        return ok(name, "MQTT off (no [mqtt] section); events stay queued on the device")
    where = f"{mqtt.host}:{mqtt.port}" + (" with TLS" if mqtt.tls else " without TLS")
    try:
        code = mqtt_connect(mqtt, cfg.device.id, timeout)
    except ssl.SSLError as exc:
        return fail(
            name,
            f"TLS with {where} failed: {exc.reason or exc}",
            "check mqtt.ca_file (the CA that signed the broker's certificate) and the host name",
        )
    except (OSError, TimeoutError) as exc:
        return fail(
            name,
            f"cannot reach {where}: {exc.strerror if isinstance(exc, OSError) else exc}",
            "check mqtt.url, the network and firewall, and that the broker runs",
        )
    if code != 0:
        return fail(
            name,
            f"{where} refused the connection: {code}",
            "check mqtt.username / password_file and the client certificate",
        )
    if not mqtt.tls:
        clear = "; the password crossed the network in clear text" if mqtt.password_file else ""
        return warn(
            name,
            f"connected to {where}{clear}",
            "use mqtts:// with mqtt.ca_file outside a lab network",
        )
    return ok(name, f"connected to {where}, CONNACK accepted")


def mqtt_connect(mqtt: Mqtt, device_id: str, timeout: float) -> int | str:
    """CONNECT and wait for CONNACK: 0 when accepted, else the broker's reason."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    protocol = paho.MQTTv5 if mqtt.protocol == "5" else paho.MQTTv311
    # Our own client id: reusing the agent's would disconnect the running daemon.
    client_id = f"{device_id}-doctor-{secrets.token_hex(3)}"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        reconnect_on_failure=False,
    )
    client.connect_timeout = timeout
    if mqtt.tls:
        client.tls_set(
            ca_certs=str(mqtt.ca_file) if mqtt.ca_file else None,
            certfile=str(mqtt.cert_file) if mqtt.cert_file else None,
            keyfile=str(mqtt.key_file) if mqtt.key_file else None,
        )
    if mqtt.username:
        password = None
        if mqtt.password_file is not None:
            password = mqtt.password_file.read_text(encoding="utf-8").strip()
        client.username_pw_set(mqtt.username, password)
    result: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        result["code"] = 0 if not reason.is_failure else str(reason)
        done.set()

    client.on_connect = on_connect
    client.connect(mqtt.host, mqtt.port, keepalive=max(mqtt.keepalive, 5))
    deadline = time.monotonic() + timeout
    try:
        while not done.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no CONNACK within {timeout:g} s")
            rc = client.loop(timeout=0.1)
            if rc != paho.MQTT_ERR_SUCCESS and not done.is_set():
                raise OSError(f"connection lost before CONNACK ({paho.error_string(rc)})")
    finally:
        if result.get("code") == 0:
            client.disconnect()
            client.loop(timeout=0.1)  # flush DISCONNECT: the broker logs a clean exit
        sock = client.socket()
        if sock is not None:
            sock.close()
    code: int | str = result["code"]
    return code


# -- sources -------------------------------------------------------------------------------


def rtsp_options(host: str, port: int, url: str, timeout: float) -> str:
    """Send an RTSP OPTIONS request; return the status line."""
    request = f"OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: edge-agent-doctor\r\n\r\n"
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n" not in data and len(data) < 4096:
            chunk = sock.recv(1024)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1").strip()


def check_source(src: Source, timeout: float = DEFAULT_TIMEOUT) -> Check:
    name = f"source {src.id}"
    scheme = src.scheme
    shown = src.redacted_url
    if scheme == "testsrc":
        return ok(name, "virtual test camera")
    if scheme == "file":
        path = Path(urlsplit(src.url).path)
        if path.is_file():
            return ok(name, f"file {path} exists")
        return fail(name, f"file {path} not found", "fix the url or copy the file there")
    parts = urlsplit(src.url)
    host, port = parts.hostname or "", parts.port or _DEFAULT_PORTS[scheme]
    fix = "check the camera's power, address and port, and the network between them"
    try:
        if scheme == "rtsp":
            # Without the password: OPTIONS needs none and it must not reach a log.
            status = rtsp_options(host, port, shown, timeout)
        else:
            socket.create_connection((host, port), timeout=timeout).close()
            status = ""
    except OSError as exc:
        return fail(name, f"cannot reach {host}:{port} ({exc.strerror or exc})", fix)
    if scheme != "rtsp":
        return ok(name, f"{host}:{port} accepts connections ({shown})")
    if status.startswith("RTSP/1.0 200") or status.startswith("RTSP/1.0 401"):
        return ok(name, f"{host}:{port} answers RTSP ({status})")
    return fail(
        name,
        f"{host}:{port} accepts connections but OPTIONS got {status or 'no answer'!r}",
        "check that the url points at the camera's RTSP server",
    )
