"""paho-mqtt 2 bridged to asyncio, with reconnect (the aiomqtt pattern).

paho does no IO of its own here: its socket callbacks register the socket
with the event loop (``add_reader``/``add_writer``) and a small task calls
``loop_misc`` for keepalive. Only the blocking TCP/TLS connect runs in a
worker thread. Every paho callback therefore runs on the loop thread.

Each connection attempt uses a fresh paho client. paho keeps unacknowledged
publishes in memory and re-sends them on reconnect; with a fresh client that
memory dies with the connection, and the durable outbox stays the only queue
(the publisher re-reads what was not acknowledged).

The session is persistent (MQTT 5 clean start off with a session expiry,
3.1.1 clean session off) so that commands sent while the device was away, or
received but not yet acknowledged when it crashed, are delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_agent.host import lean

# Without dnspython (about 90 modules and 4 MiB; live view imports it normally
# later) and with urllib.request lazy: see edge_agent.host.lean.
lean.paho()
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

log = logging.getLogger(__name__)

Protocol = Literal["5", "3.1.1"]


class NotConnected(Exception):
    """Publishing needs a live connection."""


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class MqttSettings:
    """The link's settings; ``edge_agent.app.settings.mqtt_settings`` makes them from a config."""

    host: str
    port: int
    client_id: str
    protocol: Protocol = "5"
    keepalive: int = 30
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    connect_timeout: float = 10.0
    session_expiry: int = 7 * 86400
    # paho's own in-flight limit; the publisher's window stays below it, so paho
    # never holds a queue of its own.
    max_inflight: int = 200


class Backoff:
    """Jittered exponential delay ("full jitter" over a doubling ceiling)."""

    def __init__(self, low: float, high: float, rng: random.Random | None = None) -> None:
        self.low, self.high = low, high
        self._attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.high, self.low * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        return float(self.low + self._rng.random() * max(0.0, ceiling - self.low))

    def reset(self) -> None:
        self._attempt = 0


@dataclass(frozen=True)
class InMessage:
    topic: str
    payload: bytes
    qos: int
    mid: int
    dup: bool
    response_topic: str | None
    correlation_data: bytes | None
    _ack: Callable[[], None]

    def ack(self) -> None:
        """Acknowledge to the broker (only after what it asked for is persisted)."""
        self._ack()


Handler = Callable[[InMessage], None]
ConnectHook = Callable[["MqttLink"], Awaitable[None]]


def _short(topic: str) -> str:
    return topic if len(topic) <= 120 else topic[:120] + "..."


def topic_matches(filter_: str, topic: str) -> bool:
    return bool(paho.topic_matches_sub(filter_, topic))


class MqttLink:
    """One logical MQTT connection that keeps itself connected while ``run`` runs."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        will: Callable[[], Will | None] | None = None,
    ) -> None:
        self.settings = settings
        self._will = will
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._connack: asyncio.Future[tuple[bool, str, int]] | None = None
        self._subs: list[tuple[str, int, Handler]] = []
        self._hooks: list[ConnectHook] = []
        self._puback_listeners: list[Callable[[int, bool], None]] = []
        self._waiters: dict[int, asyncio.Future[bool]] = {}
        self._misc: asyncio.Task[None] | None = None
        self._fd = -1
        self._loop_thread = 0
        self.generation = 0
        self.receive_maximum = 65535
        self.last_error: str | None = None
        # When the last connection was lost (event loop clock): the publisher asks
        # whether it followed one publish (a 3.1.1 broker refusing it).
        self.lost_at: float | None = None

    # -- wiring ---------------------------------------------------------------

    def subscribe(self, filter_: str, handler: Handler, qos: int = 1) -> None:
        """Subscribe now and on every reconnect. Handlers must ack QoS>0 messages."""
        self._subs.append((filter_, qos, handler))
        if self._client is not None and self.connected:
            self._client.subscribe(filter_, qos)

    def on_connect(self, hook: ConnectHook) -> None:
        """Run ``hook`` after every CONNACK, before ``wait_connected`` returns."""
        self._hooks.append(hook)

    def on_puback(self, listener: Callable[[int, bool], None]) -> None:
        """``listener(mid, ok)`` for every completed QoS>0 publish."""
        self._puback_listeners.append(listener)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    # -- publishing ----------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> int:
        """Queue one PUBLISH on the live connection; returns its mid."""
        client = self._client
        if client is None or not self.connected:
            raise NotConnected(f"not connected to {self.settings.host}:{self.settings.port}")
        if properties is not None and self.settings.protocol != "5":
            properties = None
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnected(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        return int(info.mid)

    async def publish_wait(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
        wait: float = 10.0,
    ) -> bool:
        """Publish and wait for the broker's acknowledgement (PUBACK for QoS 1)."""
        mid = self.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos == 0:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[mid] = fut
        try:
            return await asyncio.wait_for(asyncio.shield(fut), wait)
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(mid, None)

    # -- the connection loop -------------------------------------------------

    async def run(
        self, stop: asyncio.Event, *, before_disconnect: ConnectHook | None = None
    ) -> None:
        """Stay connected until ``stop``; then ``before_disconnect`` and a clean DISCONNECT."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                ok = await self._connect_once()
                if ok:
                    backoff.reset()
                    await self._after_connect()
                    lost = asyncio.ensure_future(self._disconnected.wait())
                    await asyncio.wait({lost, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    lost.cancel()
                    if stop.is_set():
                        break
                    log.warning("MQTT connection lost: %s", self.last_error)
                self._teardown()
                delay = backoff.next()
                log.info("MQTT reconnect in %.1f s", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if self.connected and before_disconnect is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(before_disconnect(self), 5.0)
            await self._disconnect()
        finally:
            stopping.cancel()
            self._teardown()

    async def _connect_once(self) -> bool:
        loop = asyncio.get_running_loop()
        s = self.settings
        client = self._make_client()
        self._client = client
        self._connected.clear()
        self._disconnected.clear()
        self._connack = loop.create_future()
        will = self._will() if self._will is not None else None
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        props = None
        clean: bool | Literal[3] = paho.MQTT_CLEAN_START_FIRST_ONLY
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry
            clean = False
        try:
            rc = await asyncio.wait_for(
                loop.run_in_executor(
                    None,
                    lambda: client.connect(
                        s.host, s.port, s.keepalive, clean_start=clean, properties=props
                    ),
                ),
                s.connect_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ValueError) as exc:
            self.last_error = f"connect to {s.host}:{s.port} failed: {exc or type(exc).__name__}"
            log.warning("%s", self.last_error)
            return False
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.last_error = f"connect to {s.host}:{s.port} failed: {paho.error_string(rc)}"
            return False
        try:
            ok, reason, recv_max = await asyncio.wait_for(self._connack, s.connect_timeout)
        except TimeoutError:
            self.last_error = f"no CONNACK from {s.host}:{s.port} within {s.connect_timeout} s"
            return False
        if not ok:
            self.last_error = f"broker {s.host}:{s.port} refused the connection: {reason}"
            log.error("%s", self.last_error)
            return False
        self.receive_maximum = recv_max
        self.generation += 1
        return True

    async def _after_connect(self) -> None:
        client = self._client
        assert client is not None
        for filter_, qos, _ in self._subs:
            client.subscribe(filter_, qos)
        self._connected.set()
        for hook in self._hooks:
            try:
                await hook(self)
            except NotConnected:
                return
            except Exception:
                log.exception("MQTT connect hook %r failed", hook)
        log.info("MQTT connected to %s:%d", self.settings.host, self.settings.port)

    async def _disconnect(self) -> None:
        client = self._client
        if client is None or not self.connected:
            return
        client.disconnect()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._disconnected.wait(), 2.0)

    def _make_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=paho.MQTTv5 if s.protocol == "5" else paho.MQTTv311,
            clean_session=None if s.protocol == "5" else False,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(s.max_inflight)
        if s.tls:
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    def _teardown(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        client = self._client
        if client is not None:
            sock = client.socket()
            if self._fd >= 0:
                self._forget_fd(self._fd)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._client = None
        self._connected.clear()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_result(False)

    # -- paho callbacks (loop thread, except socket open during connect) ------

    def _on_connect(
        self, client: paho.Client, _ud: Any, _flags: Any, reason: Any, props: Any
    ) -> None:
        if client is not self._client or self._connack is None or self._connack.done():
            return
        recv_max = int(getattr(props, "ReceiveMaximum", 65535) or 65535)
        failed = bool(getattr(reason, "is_failure", False))
        self._connack.set_result((not failed, str(reason), recv_max))

    def _on_disconnect(
        self, client: paho.Client, _ud: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if client is not self._client:
            return
        self.last_error = f"disconnected: {reason}"
        if self._loop is not None:
            self.lost_at = self._loop.time()
        self._connected.clear()
        self._disconnected.set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((False, str(reason), 0))

    def _on_publish(
        self, client: paho.Client, _ud: Any, mid: int, reason: Any, _props: Any
    ) -> None:
        if client is not self._client:
            return
        ok = not bool(getattr(reason, "is_failure", False))
        fut = self._waiters.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(ok)
        for listener in self._puback_listeners:
            listener(mid, ok)

    def _on_message(self, client: paho.Client, _ud: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        mid, qos = msg.mid, msg.qos
        acked = False

        def ack() -> None:
            # Once only. A message received on a connection that is gone cannot be
            # acked; the broker re-delivers it on the persistent session.
            nonlocal acked
            if not acked and client is self._client and qos > 0:
                acked = True
                client.ack(mid, qos)

        message = InMessage(
            msg.topic, bytes(msg.payload), qos, mid, bool(msg.dup), response_topic, correlation, ack
        )
        handled = False
        for filter_, _, handler in self._subs:
            if topic_matches(filter_, msg.topic):
                handled = True
                try:
                    handler(message)
                except Exception:
                    # Unacked, it would hold a slot of the broker's in-flight window
                    # for good (and come back after every restart).
                    log.exception("MQTT handler for a message on %s failed", _short(msg.topic))
                    ack()
        if not handled:
            ack()

    def _in_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` now on the loop thread, or hand it over from a worker thread."""
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def _on_socket_open(self, client: paho.Client, _ud: Any, sock: Any) -> None:
        loop = self._loop
        assert loop is not None
        fd = sock.fileno()
        with contextlib.suppress(OSError, AttributeError):
            # Small control packets (PUBACKs for commands, status) go out at once.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def register() -> None:
            if client is not self._client:
                return
            self._fd = fd
            loop.add_reader(fd, self._readable, client, sock)
            if self._misc is None:
                self._misc = loop.create_task(self._misc_loop(client), name="mqtt-misc")

        self._in_loop(register)

    def _on_socket_close(self, _client: paho.Client, _ud: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._in_loop(lambda: self._forget_fd(fd))

    def _forget_fd(self, fd: int) -> None:
        assert self._loop is not None
        if fd < 0:
            return
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        if self._fd == fd:
            self._fd = -1

    def _on_register_write(self, client: paho.Client, _ud: Any, sock: Any) -> None:
        loop = self._loop
        assert loop is not None
        fd = sock.fileno()

        def register() -> None:
            if client is self._client and client.socket() is sock:
                loop.add_writer(fd, self._writable, client)

        self._in_loop(register)

    def _on_unregister_write(self, _client: paho.Client, _ud: Any, sock: Any) -> None:
        fd = sock.fileno()
        loop = self._loop
        assert loop is not None

        def unregister() -> None:
            loop.remove_writer(fd)

        self._in_loop(unregister)

    def _readable(self, client: paho.Client, sock: Any) -> None:
        client.loop_read()
        # TLS may hold whole records already decrypted; the fd will not wake us for them.
        tls_sock = sock if isinstance(sock, ssl.SSLSocket) else None
        while tls_sock is not None and tls_sock.pending() > 0 and client.socket() is tls_sock:
            client.loop_read()

    def _writable(self, client: paho.Client) -> None:
        client.loop_write()

    async def _misc_loop(self, client: paho.Client) -> None:
        # Keepalive pings and their timeout: a plain timer, nothing to wait on.
        while client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
            await asyncio.sleep(1.0)
