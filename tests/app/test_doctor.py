"""``edge-agent doctor`` against real things: a mosquitto, an RTSP answerer, the disk."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.app.doctor import Level, check_storage_mounted, run_checks
from tests.support.broker import free_port, running_broker


class RtspAnswerer:
    """Answers any request with ``RTSP/1.0 200 OK``, like a camera's OPTIONS reply."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.requests.append(conn.recv(4096))
                conn.sendall(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def rtsp() -> Iterator[RtspAnswerer]:
    server = RtspAnswerer()
    yield server
    server.close()


def _config(
    tmp_path: Path,
    *,
    broker_url: str | None,
    rtsp_port: int,
    gate_signage: bool = True,
    extra_mqtt: str = "",
) -> Path:
    (tmp_path / "rec").mkdir(exist_ok=True)
    (tmp_path / "drop").mkdir(exist_ok=True)
    mqtt = f'[mqtt]\nurl = "{broker_url}"\n{extra_mqtt}\n' if broker_url else ""
    text = f"""
[device]
id = "gw-doctor-01"
hw_profile = "generic-linux"

[storage]
root = "rec"
catalog = "catalog.db"
free_space_floor = "1MiB"

[[locations]]
id = "gate"
kind = "premises"
signage = {"true" if gate_signage else "false"}

[[locations]]
id = "lab"
kind = "premises"
audio_room = true
signage = true

[[sources]]
id = "cam-gate"
url = "rtsp://viewer:s3cret@127.0.0.1:{rtsp_port}/stream"
location = "gate"
purpose = "security"

[[sources]]
id = "cam-lab"
url = "testsrc://?tone=1"
location = "lab"
purpose = "rnd"
audio = true

[[watch]]
path = "drop"
location = "gate"
purpose = "security"

{mqtt}
"""
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def _doctor(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "doctor", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _levels(stdout: str) -> dict[str, str]:
    doc = json.loads(stdout)
    return {c["name"]: c["level"] for c in doc["checks"]}


def test_passing_run_with_a_real_broker(tmp_path: Path, rtsp: RtspAnswerer) -> None:
    with running_broker(tmp_path / "broker") as broker:
        config = _config(tmp_path, broker_url=broker.url, rtsp_port=rtsp.port)
        out = _doctor(config)
        assert out.returncode == 0, out.stdout + out.stderr
        lines = out.stdout.splitlines()
        assert any(
            line.startswith("OK   source cam-gate:") and "RTSP/1.0 200" in line for line in lines
        )
        # Plain MQTT is a warning, not a failure; the fix names TLS.
        assert any(
            line.startswith("WARN broker: connected") and "mqtts://" in line for line in lines
        )
        assert "0 FAIL" in lines[-1]
        # The password in the camera url never reaches the camera or the output.
        assert b"s3cret" not in b"".join(rtsp.requests) and rtsp.requests[0].startswith(b"OPTIONS ")
        assert "s3cret" not in out.stdout

        js = _doctor(config, "--json")
        assert js.returncode == 0
        levels = _levels(js.stdout)
        for name in (
            "storage writable",
            "free space",
            "source cam-gate",
            "source cam-lab",
            "signage gate",
            "signage lab",
            "audio rooms",
            "watch " + str(tmp_path / "drop"),
        ):
            assert levels[name] == "OK", (name, js.stdout)
        assert levels["catalog"] == "OK"  # none yet: the agent creates it
    assert not list((tmp_path / "rec").glob(".edge-agent-doctor-*"))


def test_tls_broker_connack(tmp_path: Path, rtsp: RtspAnswerer) -> None:
    with running_broker(tmp_path / "broker", tls=True) as broker:
        assert broker.tls is not None
        tls = broker.tls
        good = (
            f'ca_file = "{tls.ca}"\ncert_file = "{tls.client_cert}"\nkey_file = "{tls.client_key}"'
        )
        config = _config(tmp_path, broker_url=broker.url, rtsp_port=rtsp.port, extra_mqtt=good)
        out = _doctor(config)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "OK   broker: connected to 127.0.0.1" in out.stdout and "with TLS" in out.stdout

        # Without the CA the broker's certificate is not trusted: FAIL naming ca_file.
        config = _config(tmp_path, broker_url=broker.url, rtsp_port=rtsp.port)
        out = _doctor(config)
        assert out.returncode == 1
        line = next(x for x in out.stdout.splitlines() if x.startswith("FAIL broker"))
        assert "TLS" in line and "mqtt.ca_file" in line


def test_unreachable_broker_and_camera_fail(tmp_path: Path) -> None:
    dead = free_port()
    config = _config(tmp_path, broker_url=f"mqtt://127.0.0.1:{dead}", rtsp_port=free_port())
    out = _doctor(config, "--timeout", "1")
    assert out.returncode == 1
    fails = [x for x in out.stdout.splitlines() if x.startswith("FAIL")]
    assert any(x.startswith(f"FAIL broker: cannot reach 127.0.0.1:{dead}") for x in fails), fails
    assert any(x.startswith("FAIL source cam-gate: cannot reach") for x in fails), fails
    assert all("(fix: " in x for x in fails)


def test_location_without_signage_fails(tmp_path: Path, rtsp: RtspAnswerer) -> None:
    config = _config(tmp_path, broker_url=None, rtsp_port=rtsp.port, gate_signage=False)
    out = _doctor(config)
    assert out.returncode == 1
    line = next(x for x in out.stdout.splitlines() if x.startswith("FAIL signage gate"))
    assert "source cam-gate" in line and "set signage = true" in line
    assert "OK   broker: MQTT off" in out.stdout


def test_invalid_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[device]\nid = "gw-1"\n')
    out = _doctor(config)
    assert out.returncode == 2
    expected = "FAIL config: storage: required section is missing (add a [storage] table)\n"
    assert expected in out.stdout


def test_catalog_of_another_device_fails(tmp_path: Path, rtsp: RtspAnswerer) -> None:
    from edge_agent.store.catalog import Catalog

    Catalog.open(
        tmp_path / "catalog.db", device_id="someone-else", storage_root=tmp_path / "rec"
    ).close()
    config = _config(tmp_path, broker_url=None, rtsp_port=rtsp.port)
    checks = run_checks(config)
    catalog = next(c for c in checks if c.name == "catalog")
    assert catalog.level == Level.FAIL and "someone-else" in catalog.detail


def test_unmounted_fstab_disk_fails(tmp_path: Path) -> None:
    # /etc/fstab names a disk for this folder, but nothing is mounted there.
    disk = tmp_path / "disk"
    (disk / "recordings").mkdir(parents=True)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# comment\nUUID=1234 {disk} ext4 defaults 0 2\n")
    check = check_storage_mounted(disk / "recordings", fstab)
    assert check.level == Level.FAIL and f"mount {disk}" in check.fix
    assert check_storage_mounted(tmp_path / "missing", fstab).level == Level.FAIL


def test_clear_text_password_and_open_liveview_are_warned(tmp_path: Path) -> None:
    """Issue 12 items 6 and 11d: doctor shows what crosses the network in clear."""
    (tmp_path / "mqtt.pw").write_text("pw\n")
    (tmp_path / "mqtt.pw").chmod(0o640)
    (tmp_path / "live.token").write_text("0123456789abcdef0123\n")
    (tmp_path / "live.token").chmod(0o644)
    config = _config(
        tmp_path,
        broker_url=f"mqtt://127.0.0.1:{free_port()}",
        rtsp_port=free_port(),
        extra_mqtt='username = "gw"\npassword_file = "mqtt.pw"\n',
    )
    text = config.read_text().replace("[device]", "[device]", 1)
    config.write_text(text + '\n[liveview]\nlisten = "0.0.0.0:8088"\ntoken_file = "live.token"\n')
    out = _doctor(config, "--timeout", "1")
    warns = [x for x in out.stdout.splitlines() if x.startswith("WARN config")]
    assert any("mqtt.url" in x and "password crosses the network in clear" in x for x in warns)
    assert any("liveview.listen: '0.0.0.0:8088' is reachable from the network" in x for x in warns)
    assert any("chmod 640" in x and "live.token" in x for x in warns), warns


# -- clock evidence and boot-time sync (docs/design/time.md) ----------------------------


def _clock_cfg(tmp_path: Path, extra: str = "") -> Any:  # a Config
    from edge_agent.config.config import parse_config

    text = f"""
[device]
id = "gw-doc"
hw_profile = "generic-linux"
[storage]
root = "{tmp_path / "rec"}"
catalog = "{tmp_path / "catalog.db"}"
[clock]
kernel_flag = false
chronyc = ""
timesync_flag = "{tmp_path / "synchronized"}"
{extra}
"""
    return parse_config(text, tmp_path)


def test_doctor_names_the_timesyncd_evidence(tmp_path: Path) -> None:
    import os
    from datetime import UTC, datetime

    from edge_agent.app.doctor import check_clock

    cfg = _clock_cfg(tmp_path)
    now = datetime.now(UTC)
    flag = tmp_path / "synchronized"
    flag.touch()
    os.utime(flag, (now.timestamp(),) * 2)
    c = check_clock(cfg, now)
    assert c.level is Level.OK
    assert "systemd-timesyncd synchronised at" in c.detail


def test_doctor_warns_without_rtc_and_wait_sync(tmp_path: Path) -> None:
    from edge_agent.app.doctor import check_rtc_or_wait_sync

    cfg = _clock_cfg(tmp_path)
    no_rtc = tmp_path / "rtc"
    no_rtc.mkdir()
    c = check_rtc_or_wait_sync(cfg, rtc_dir=no_rtc, wait_sync=False)
    assert "no real-time clock" in c.detail
    assert "systemctl enable systemd-time-wait-sync.service" in c.fix
    assert "waits" in check_rtc_or_wait_sync(cfg, rtc_dir=no_rtc, wait_sync=True).detail
    (no_rtc / "rtc0").mkdir()
    assert "real-time clock keeps" in check_rtc_or_wait_sync(cfg, rtc_dir=no_rtc).detail
