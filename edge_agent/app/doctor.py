"""Preflight checks for an installer (``edge-agent doctor``).

Each check returns one :class:`Check` line: OK, WARN or FAIL, what was seen,
and for anything not OK the fix. The checks touch the real things the agent
will touch (a probe file on the storage, the catalog, a real MQTT CONNECT, a
TCP connection and an RTSP ``OPTIONS`` to each camera) with short timeouts,
and change nothing except opening the catalog (which, like the agent, writes
the disk marker when it is missing and the catalog is empty).

Checks that cannot know (no ``timedatectl`` on a container) say so as WARN
rather than guessing OK.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_agent.config.config import Config, ConfigError, Mqtt, Source, load_config, redact_url
from edge_agent.config.name_clock import check_watch_names
from edge_agent.config.storage_checks import mount_problem
from edge_agent.host.sysclock import kernel_clock_synced

DEFAULT_TIMEOUT = 3.0
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


class Level(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.level.value:<4} {self.name}: {self.detail}"
        return f"{text} (fix: {self.fix})" if self.fix and self.level != Level.OK else text

    def doc(self) -> dict[str, str]:
        d = asdict(self)
        d["level"] = self.level.value
        return d


def ok(name: str, detail: str) -> Check:
    return Check(name, Level.OK, detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, Level.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, Level.FAIL, detail, fix)


def failed(checks: Iterable[Check]) -> bool:
    return any(c.level == Level.FAIL for c in checks)


# -- storage ------------------------------------------------------------------------


def mount_point(path: Path) -> Path:
    """The mount point holding ``path`` (its nearest existing ancestor's)."""
    p = Path(os.path.abspath(path))
    while not p.exists():
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


def fstab_mount_points(fstab: Path = Path("/etc/fstab")) -> list[Path]:
    try:
        text = fstab.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and fields[1].startswith("/"):
            points.append(Path(fields[1].replace("\\040", " ")))
    return points


def check_storage_mounted(root: Path, fstab: Path = Path("/etc/fstab")) -> Check:
    name = "storage mounted"
    if not root.is_dir():
        return fail(
            name,
            f"storage root {root} does not exist",
            f"mount the recordings disk there or create it: mkdir -p {root}",
        )
    mp = mount_point(root)
    # A disk listed in fstab for a folder above the root, but not mounted: the
    # agent would fill the empty mount point on the system disk.
    for point in fstab_mount_points(fstab):
        above = root == point or point in root.parents
        if point != Path("/") and above and not os.path.ismount(point):
            return fail(
                name,
                f"{point} is in /etc/fstab but not mounted; {root} is on the filesystem of {mp}",
                f"mount it (mount {point}) and check the disk",
            )
    if mp == Path("/"):
        return warn(
            name,
            f"{root} is on the root filesystem",
            "fine for a single-disk device; if recordings belong on a separate disk, mount "
            "it and point storage.root there",
        )
    return ok(name, f"{root} is on the filesystem mounted at {mp}")


def check_storage_writable(root: Path) -> Check:
    name = "storage writable"
    probe = root / f".edge-agent-doctor-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"edge-agent doctor probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        probe.unlink(missing_ok=True)
        return fail(
            name,
            f"cannot write, fsync and remove a file in {root}: {exc.strerror or exc}",
            f"give the agent's user write access (chown edge-agent: {root}), or remount "
            "the disk read-write",
        )
    return ok(name, f"wrote, synced and removed a probe file in {root}")


def check_free_space(cfg: Config) -> Check:
    name = "free space"
    root = cfg.storage.root
    try:
        usage = shutil.disk_usage(root)
    except OSError as exc:
        return fail(name, f"cannot read free space of {root}: {exc}", "mount the storage")
    floor = cfg.free_space_floor_bytes(usage.total)
    text = (
        f"{_human(usage.free)} free of {_human(usage.total)}; floor "
        f"{cfg.free_space_floor()} = {_human(floor)}"
    )
    if usage.free < floor:
        return fail(
            name,
            text,
            "free space on the disk, use a bigger disk, or lower storage.free_space_floor "
            "(below the floor the agent deletes the oldest unheld recordings)",
        )
    if usage.free < 2 * floor:
        return warn(name, text, "less than twice the floor: plan more space")
    return ok(name, text)


def _human(n: int) -> str:
    for unit, mult in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= mult:
            return f"{n / mult:.1f} {unit}"
    return f"{n} B"


# -- catalog ---------------------------------------------------------------------------


def check_catalog(cfg: Config, now: datetime) -> list[Check]:
    from edge_agent.store.catalog import Catalog, CatalogError, CatalogMismatch, MigrationError

    name = "catalog"
    path = cfg.storage.catalog
    if not path.exists():
        return [ok(name, f"no catalog at {path} yet; the agent creates it on first start")]
    try:
        catalog = Catalog.open(
            path, device_id=cfg.device.id, storage_root=cfg.storage.root, create=False
        )
    except CatalogMismatch as exc:
        return [fail(name, f"does not belong to this disk or device: {exc}", "see the message")]
    except (CatalogError, MigrationError, OSError) as exc:
        return [fail(name, f"cannot open {path}: {exc}", "check the path and its permissions")]
    try:
        newest = catalog.schedule.newest_trusted_start()
    finally:
        catalog.close()
    out = [ok(name, f"{path} belongs to device {cfg.device.id} and this disk")]
    if newest is not None and newest > now:
        out.append(
            fail(
                "clock",
                f"now ({now:%Y-%m-%dT%H:%M:%SZ}) is before the newest recording "
                f"({newest:%Y-%m-%dT%H:%M:%SZ})",
                "set the clock (enable NTP); the agent deletes nothing until it is right",
            )
        )
    return out


# -- locations that hold footage -----------------------------------------------------------


def check_location_drift(cfg: Config) -> list[Check]:
    """Footage at a location the config no longer has, or whose kind or audio flag changed."""
    from edge_agent.core.location_drift import configured, location_drift
    from edge_agent.store.recordings import read_footage_by_location

    rows = read_footage_by_location(cfg.storage.catalog)
    if rows is None:
        return []
    drift = location_drift(configured(cfg.locations), rows)
    if not drift:
        return [ok("locations", "every location with footage is configured as recorded")]
    fix = (
        "nothing to do if intended: the footage keeps its tags and deadlines; erase or "
        "restrict it by location and time if it should go sooner"
    )
    return [warn("locations", d.message, fix) for d in drift]


# -- clock ---------------------------------------------------------------------------------


def timedatectl_synced() -> bool | None:
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    if out.returncode != 0 or value not in ("yes", "no"):
        return None  # no systemd running (containers)
    return value == "yes"


def check_clock(cfg: Config, now: datetime) -> Check:
    """The wall clock, and each source of evidence the clock guard can use (docs/design/time.md)."""
    from edge_agent.retention.timesync import chrony_evidence, timesyncd_evidence

    name = "clock"
    release = cfg.clock.release_date
    stamp = f"{now:%Y-%m-%dT%H:%M:%SZ}"
    if now < release:
        return fail(
            name,
            f"{stamp} is before this release ({release:%Y-%m-%d}): the clock is wrong",
            "set the time (timedatectl set-ntp true, or date -s) and check the RTC battery",
        )
    flag = cfg.clock.timesync_flag
    timesyncd = timesyncd_evidence(flag) if flag is not None else None
    chrony = chrony_evidence(cfg.clock.chronyc) if cfg.clock.chronyc else None
    views: dict[str, tuple[bool | None, str]] = {
        "timedatectl": (timedatectl_synced(), "timedatectl"),
        "timesyncd": (
            True if timesyncd else None,
            timesyncd.describe() if timesyncd else "timesyncd",
        ),
        "chrony": (True if chrony else None, chrony.describe() if chrony else "chrony"),
        "kernel": (
            kernel_clock_synced() if cfg.clock.kernel_flag else None,
            "kernel NTP sync",
        ),
    }
    synced = [text for v, text in views.values() if v is True]
    unsynced = [k for k, (v, _) in views.items() if v is False]
    if synced:
        return ok(name, f"{stamp}, synchronised ({'; '.join(synced)})")
    if cfg.clock.trust_rtc:
        return ok(name, f"{stamp}, not known to be synchronised; clock.trust_rtc = true")
    fix = (
        "enable NTP (timedatectl set-ntp true, or chrony); on an isolated device with a "
        "battery-backed RTC set clock.trust_rtc = true"
    )
    if unsynced:
        return warn(name, f"{stamp} plausible but not synchronised (per {unsynced[0]})", fix)
    return warn(name, f"{stamp} plausible; synchronisation state unknown", fix)


def wait_sync_enabled(unit: str = "systemd-time-wait-sync.service") -> bool | None:
    """Whether the boot waits for the first time sync; None where systemd cannot say."""
    exe = shutil.which("systemctl")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "is-enabled", unit], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    state = out.stdout.strip()
    if state in ("enabled", "enabled-runtime", "static", "alias", "indirect"):
        return True
    if state in ("disabled", "masked", "masked-runtime", "not-found"):
        return False
    return None


def check_rtc_or_wait_sync(
    cfg: Config,
    *,
    rtc_dir: Path = Path("/sys/class/rtc"),
    wait_sync: bool | None = None,
) -> Check:
    """A board without an RTC boots with a stale clock; waiting for sync avoids the step."""
    name = "clock-boot"
    try:
        has_rtc = any(rtc_dir.iterdir())
    except OSError:
        has_rtc = False
    if has_rtc:
        return ok(name, f"a real-time clock keeps the time across reboots ({rtc_dir})")
    if wait_sync is None:
        wait_sync = wait_sync_enabled()
    if wait_sync:
        return ok(name, "no RTC, but the boot waits for the first time sync")
    if cfg.clock.trust_rtc:
        return warn(
            name,
            "clock.trust_rtc = true, but no real-time clock was found",
            "set clock.trust_rtc = false unless the device has a battery-backed RTC",
        )
    return warn(
        name,
        "no real-time clock and the boot does not wait for time sync: after each boot the "
        "clock is stepped once NTP answers, and deletion pauses until that step is confirmed",
        "systemctl enable systemd-time-wait-sync.service (or chrony's chrony-wait.service), "
        "or fit an RTC",
    )


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


# -- policy checks ------------------------------------------------------------------------


def check_signage(cfg: Config) -> list[Check]:
    used: dict[str, list[str]] = {}
    for src in cfg.sources:
        used.setdefault(src.location, []).append(f"source {src.id}")
    for w in cfg.watch:
        used.setdefault(w.location, []).append(f"watch {w.path}")
    out = []
    for loc in cfg.locations:
        if loc.id not in used:
            continue
        users = ", ".join(used[loc.id])
        if loc.signage:
            out.append(ok(f"signage {loc.id}", f"signs confirmed ({users})"))
        else:
            out.append(
                fail(
                    f"signage {loc.id}",
                    f"signage = false but recorded by {users}: they will not record",
                    f"put up recording signs at {loc.id}, then set signage = true",
                )
            )
    return out


def check_audio_rooms(cfg: Config) -> Check:
    rooms = [loc.id for loc in cfg.locations if loc.audio_room]
    wanting = [s.id for s in cfg.sources if s.audio]
    if rooms:
        return ok("audio rooms", f"declared: {', '.join(rooms)}")
    if wanting:
        return warn(
            "audio rooms",
            f"none declared, but {', '.join(wanting)} asks for audio: it will be dropped",
            "set audio_room = true on a closed-off, signed room, or audio = false on the source",
        )
    return ok("audio rooms", "none declared and no source wants audio: no audio is kept")


def check_watches(cfg: Config) -> list[Check]:
    out = []
    for w in cfg.watch:
        name = f"watch {w.path}"
        if not w.path.is_dir():
            out.append(fail(name, "folder does not exist", f"create it: mkdir -p {w.path}"))
        elif not os.access(w.path, os.R_OK | os.W_OK | os.X_OK):
            out.append(
                fail(
                    name,
                    "not readable and writable (adopted files are removed from it)",
                    f"give the agent's user access: chown edge-agent: {w.path}",
                )
            )
        else:
            out.append(ok(name, "folder exists and is writable"))
    return out


# -- all together ---------------------------------------------------------------------------


def run_checks(
    config_path: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    now: datetime | None = None,
    fstab: Path = Path("/etc/fstab"),
) -> list[Check]:
    """Every check for the config at ``config_path``, in the order an installer fixes them."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        # Each problem line already ends with its fix.
        return [fail("config", line, "") for line in exc.problems]
    now = now or datetime.now(UTC)
    checks = [ok("config", f"{config_path} is valid (device {cfg.device.id})")]
    checks += [warn("config", line, "") for line in cfg.warnings()]
    checks.append(check_storage_mounted(cfg.storage.root, fstab))
    if (
        lost := mount_problem(
            cfg.storage.root, external=cfg.profile.external_storage, profile=cfg.profile.name
        )
    ) is not None:
        checks.append(fail("storage disk", *lost))
    if cfg.storage.root.is_dir():
        checks.append(check_storage_writable(cfg.storage.root))
        checks.append(check_free_space(cfg))
    checks += check_catalog(cfg, now)
    checks += check_location_drift(cfg)
    checks.append(check_clock(cfg, now))
    checks.append(check_rtc_or_wait_sync(cfg))
    checks.append(check_broker(cfg, timeout))
    checks += [check_source(src, timeout) for src in cfg.sources]
    checks += check_watches(cfg)
    checks += [warn("watch names", d, fix) for d, fix in check_watch_names(cfg)]
    checks += check_signage(cfg)
    checks.append(check_audio_rooms(cfg))
    return checks


__all__ = [
    "Check",
    "Level",
    "check_audio_rooms",
    "check_broker",
    "check_catalog",
    "check_clock",
    "check_free_space",
    "check_location_drift",
    "check_rtc_or_wait_sync",
    "check_signage",
    "check_source",
    "check_storage_mounted",
    "check_storage_writable",
    "failed",
    "mount_point",
    "mqtt_connect",
    "redact_url",
    "rtsp_options",
    "run_checks",
]
