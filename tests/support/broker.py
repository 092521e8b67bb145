"""A real ``mosquitto`` for tests: free loopback port, generated config, kill/restart, TLS.

Never the machine's own broker on 1883: every test gets its own on a free port.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import pwd
import shutil
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
    _write_key(folder / "ca.key", ca_key)
    server, server_key = leaf("localhost", True)
    files.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(files.server_key, server_key)
    client, client_key = leaf(client_cn, False)
    files.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    _write_key(files.client_key, client_key)
    return files


def issue_client_cert(tls: TlsFiles, cn: str) -> tuple[Path, Path]:
    """Another client certificate from the test CA of ``tls``: (cert, key) paths."""
    folder = tls.ca.parent
    ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{cn}.pem", folder / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


class Broker:
    """``mosquitto -c <generated>`` on 127.0.0.1:<free port>; same port across restarts.

    ``acl``: lines of a mosquitto ACL file (``pattern readwrite edge/%u/#``);
    ``client_cn``: the CN of the TLS client certificate (the username with
    ``use_identity_as_username``); ``extra_conf``: more lines, e.g. a bridge;
    ``max_queued``: ``max_queued_messages`` (0, unlimited, by default).
    """

    username: str | None = None
    password: str | None = None

    def __init__(
        self,
        folder: Path,
        *,
        tls: bool = False,
        port: int | None = None,
        acl: list[str] | None = None,
        client_cn: str = "edge-agent-test",
        extra_conf: list[str] | None = None,
        max_queued: int = 0,
    ) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls: TlsFiles | None = (
            make_tls_files(folder / "tls", client_cn=client_cn) if tls else None
        )
        self.acl = acl
        self.extra_conf = extra_conf or []
        # 0 is unlimited; mosquitto 2.0.11 then closes an MQTT 5 connection right after
        # a "not authorized" PUBACK (docs/brokers.md), so refusal tests set a limit.
        self.max_queued = max_queued
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
            f"max_queued_messages {self.max_queued}",
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
        if self.acl is not None:
            acl_file = self.folder / "acl"
            acl_file.write_text("\n".join(self.acl) + "\n")
            lines.append(f"acl_file {acl_file}")
        lines += self.extra_conf
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


# -- other brokers: RabbitMQ's MQTT plugin, the NATS server's MQTT listener ----------


@dataclass(frozen=True)
class Endpoint:
    """An MQTT listener of a broker that is not a generated mosquitto (3.1.1 by default)."""

    port: int
    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def rabbitmq_mqtt() -> tuple[Endpoint | None, str]:
    """The machine's RabbitMQ MQTT listener on loopback, or None and why not.

    RabbitMQ is a system service (``.ci/run`` enables its MQTT plugin); its
    listeners are asked for, never assumed.
    """
    tool = shutil.which("rabbitmq-diagnostics") or "/usr/sbin/rabbitmq-diagnostics"
    if not Path(tool).exists():
        return None, "RabbitMQ is not installed (Debian: rabbitmq-server)"
    try:
        out = subprocess.run([tool, "-q", "listeners"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"rabbitmq-diagnostics failed: {exc}"
    if out.returncode != 0:
        return None, f"RabbitMQ is not running ({out.stderr.strip()[:200]})"
    for line in out.stdout.splitlines():
        if "protocol: mqtt," in line and "127.0.0.1" in line:
            port = int(line.split("port:")[1].split(",")[0])
            # The default user may log in from loopback only: what a test needs.
            return Endpoint(port, username="guest", password="guest"), ""
    return None, (
        "RabbitMQ runs without an MQTT listener on 127.0.0.1 "
        "(rabbitmq-plugins enable rabbitmq_mqtt; see .ci/run)"
    )


class NatsBroker:
    """``nats-server`` with JetStream and its MQTT listener on free loopback ports."""

    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.nats_port = free_port()
        self.conf = folder / "nats.conf"
        self.log = folder / "nats.log"
        # MQTT in NATS needs JetStream, and JetStream needs a server name.
        self.conf.write_text(
            f"server_name: edge_test_{self.port}\n"
            f"listen: 127.0.0.1:{self.nats_port}\n"
            f'jetstream {{ store_dir: "{folder / "js"}" }}\n'
            f"mqtt {{ listen: 127.0.0.1:{self.port} }}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                ["nats-server", "-c", str(self.conf)], stdout=fh, stderr=fh
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nats-server did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class CutProxy:
    """A TCP relay 127.0.0.1:port -> target that a test can cut and restore (a WAN link).

    ``cut`` closes every relayed connection and stops listening, so the
    client sees its connection drop and its reconnects refused.
    """

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown, not just close: a thread blocked in accept() would go on accepting.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.start()

    def stop(self) -> None:
        self.cut()


AnyBroker = Broker | Endpoint | NatsBroker


# -- helpers for agent tests ---------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


class Subscriber:
    """A separate paho client (own thread) recording every message it gets.

    ``cert``: its own client certificate (cert, key) instead of the broker's
    default client one; ``protocol``: "3.1.1" (default) or "5".
    """

    def __init__(
        self,
        broker: AnyBroker,
        topics: list[str],
        *,
        client_id: str = "test-sub",
        persistent: bool = False,
        cert: tuple[Path, Path] | None = None,
        protocol: str = "3.1.1",
    ) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._cond = threading.Condition()
        v5 = protocol == "5"
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else not persistent,
        )
        if broker.tls is not None:
            certfile, keyfile = cert or (broker.tls.client_cert, broker.tls.client_key)
            self.client.tls_set(
                ca_certs=str(broker.tls.ca), certfile=str(certfile), keyfile=str(keyfile)
            )
        if broker.username is not None:
            self.client.username_pw_set(broker.username, broker.password)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: [c.subscribe(t, 1) for t in topics]
        self.client.reconnect_delay_set(0.2, 0.5)
        clean = True if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY
        self.client.connect("127.0.0.1", broker.port, keepalive=5, clean_start=clean)
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

    def raw(self, topic_filter: str) -> list[paho.MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if paho.topic_matches_sub(topic_filter, m.topic)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def write_agent_config(
    folder: Path,
    broker: AnyBroker,
    *,
    protocol: str | None = None,
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
    if protocol is not None:
        lines.append(f'protocol = "{protocol}"')
    if broker.username is not None:
        password_file = folder / "mqtt.password"
        password_file.write_text(broker.password or "")
        password_file.chmod(0o600)
        lines += [f'username = "{broker.username}"', f'password_file = "{password_file}"']
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
