"""A real ``mosquitto`` for tests: free loopback port, generated config, kill/restart, TLS.

Never the machine's own broker on 1883: every test gets its own on a free port.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_tls_files(folder: Path, client_cn: str = "edge-agent-test") -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-agent test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        return builder.sign(ca_key, hashes.SHA256()), key

    files = TlsFiles(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server, server_key = leaf("localhost", True)
    files.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(files.server_key, server_key)
    client, client_key = leaf(client_cn, False)
    files.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    _write_key(files.client_key, client_key)
    return files


class Broker:
    """``mosquitto -c <generated>`` on 127.0.0.1:<free port>; same port across restarts."""

    def __init__(self, folder: Path, *, tls: bool = False, port: int | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls: TlsFiles | None = make_tls_files(folder / "tls") if tls else None
        self.conf = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_conf()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        lines = [
            # As root, mosquitto would drop to user "mosquitto" and lose access to
            # the test's private folder.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.folder}/",
            # Subscriptions of persistent sessions must survive a SIGKILL.
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, like a crashed or unplugged broker."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()


@contextmanager
def running_broker(folder: Path, *, tls: bool = False) -> Iterator[Broker]:
    broker = Broker(folder, tls=tls)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# -- helpers for agent tests ---------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


class Subscriber:
    """A separate paho client (own thread) recording every message it gets."""

    def __init__(
        self,
        broker: Broker,
        topics: list[str],
        *,
        client_id: str = "test-sub",
        persistent: bool = False,
    ) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._cond = threading.Condition()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=not persistent,
        )
        if broker.tls is not None:
            self.client.tls_set(
                ca_certs=str(broker.tls.ca),
                certfile=str(broker.tls.client_cert),
                keyfile=str(broker.tls.client_key),
            )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: [c.subscribe(t, 1) for t in topics]
        self.client.reconnect_delay_set(0.2, 0.5)
        self.client.connect("127.0.0.1", broker.port, keepalive=5)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def payloads(self, topic_filter: str) -> list[dict[str, Any]]:
        with self._cond:
            msgs = list(self.messages)
        return [
            json.loads(m.payload) for m in msgs if paho.topic_matches_sub(topic_filter, m.topic)
        ]

    def wait_for(
        self, topic_filter: str, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 15
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.payloads(topic_filter)
            if pred(got):
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timeout waiting on {topic_filter}: got {got[-5:]}")
            with self._cond:
                self._cond.wait(min(left, 0.2))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def write_agent_config(
    folder: Path,
    broker: Broker,
    *,
    device: str = "gw-1",
    trusted_keys: tuple[Path, ...] = (),
    watch: Path | None = None,
    telemetry_interval: float = 2.0,
) -> Path:
    lines = [
        "[device]",
        f'id = "{device}"',
        'hw_profile = "generic-linux"',
        "[storage]",
        f'root = "{folder / "recordings"}"',
        f'catalog = "{folder / "catalog.db"}"',
        'free_space_floor = "1MiB"',
        "[[locations]]",
        'id = "gate"',
        'kind = "premises"',
        "signage = true",
        "[mqtt]",
        f'url = "{broker.url}"',
        'topic_prefix = "edge"',
        "keepalive = 5",
        f"telemetry_interval_seconds = {telemetry_interval}",
    ]
    if broker.tls is not None:
        lines += [
            f'ca_file = "{broker.tls.ca}"',
            f'cert_file = "{broker.tls.client_cert}"',
            f'key_file = "{broker.tls.client_key}"',
        ]
    lines += ["[commands]", f"trusted_keys = {json.dumps([str(k) for k in trusted_keys])}"]
    if watch is not None:
        lines += [
            "[[watch]]",
            f'path = "{watch}"',
            'location = "gate"',
            'purpose = "security"',
            "stable_seconds = 0.5",
            "poll_seconds = 0.5",
        ]
    path = folder / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
            stdout=fh,
            stderr=fh,
            env=env,
            cwd=REPO,
        )
