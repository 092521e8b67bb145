"""An image staged on this machine with ``install.sh --root``, booted under a real systemd.

A Debian bookworm minbase root (debootstrap, cached in /var/cache/edge-agent-ci or
$EDGE_AGENT_CI_CACHE) gets the agent from an offline wheelhouse and boots with
``systemd-nspawn --boot``. Everything is checked from outside through ``nsenter`` into
the container's PID 1 (systemctl and journalctl over the container's own sockets and
files): no D-Bus, no machined. The container shares this machine's network, so the
MQTT broker (TLS) and the live view are reached on loopback.

Skips, with the reason, where this cannot run: not root, no systemd-nspawn or
debootstrap, debootstrap cannot fetch, or systemd does not come up in the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.broker import Broker, Subscriber, free_port
from tests.support.mediagen import make_video

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGE_AGENT_CI_CACHE", "/var/cache/edge-agent-ci"))
MIRROR = os.environ.get("EDGE_AGENT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
PACKAGES = ("systemd", "python3", "python3-venv")
IMAGE_PY = "3.11"  # bookworm's
DEVICE = "gw-boot-test"
CONTAINER_LIFETIME = 600  # seconds; a booted container never outlives this
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the agent must never have met under the unit's sandbox.
DENIED = re.compile(r"permission denied|operation not permitted|\bEPERM\b", re.IGNORECASE)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (debootstrap, chroot, nspawn)"),
    pytest.mark.skipif(
        shutil.which("systemd-nspawn") is None or shutil.which("debootstrap") is None,
        reason="needs systemd-nspawn and debootstrap (apt-get install systemd-container "
        "debootstrap)",
    ),
    pytest.mark.skipif(shutil.which("nsenter") is None, reason="needs nsenter (util-linux)"),
]


def _run(*args: str | Path, timeout: float = 600, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,  # type: ignore[arg-type]
    )


def _tail(text: str, n: int = 6) -> str:
    return " | ".join(text.strip().splitlines()[-n:])


# -- the base image (cached) ------------------------------------------------------


def _base_image() -> Path:
    """Debian minbase with systemd and python3-venv; built once, then reused."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    base = CACHE / f"{SUITE}-minbase-{platform.machine()}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (base / ".complete").exists():
            return base
        work = CACHE / f"{base.name}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        res = _run(
            "nice", "-n", "10", "debootstrap", "--variant=minbase",
            f"--include={','.join(PACKAGES)}", SUITE, work, MIRROR,
            timeout=1200,
        )  # fmt: skip
        if res.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            pytest.skip(f"debootstrap cannot build {SUITE}: {_tail(res.stdout + res.stderr)}")
        # Nothing of the build host's identity in the cache.
        (work / "etc/machine-id").write_text("")
        (work / ".complete").write_text(f"{SUITE} {' '.join(PACKAGES)}\n")
        shutil.rmtree(base, ignore_errors=True)
        work.rename(base)
        return base


@pytest.fixture(scope="module")
def base_image() -> Path:
    return _base_image()


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("boot-wheelhouse")
    args: list[str] = []
    if sys.version_info[:2] != tuple(int(x) for x in IMAGE_PY.split(".")):
        # Wheels for the image's Python, not this one's.
        args = ["--platform", f"manylinux2014_{platform.machine()}", "--python-version", IMAGE_PY]
    res = _run(
        "bash", REPO / "deploy/build-wheelhouse.sh", *args, out,
        env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    return out


@pytest.fixture
def image_dir() -> Iterator[Path]:
    """Where the booted root lives: beside the cache (same disk), not in pytest's basetemp,
    which a concurrent pytest session may prune; removed afterwards."""
    (CACHE / "work").mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="boot-", dir=CACHE / "work"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _copy_base(base: Path, dest: Path) -> Path:
    res = _run("cp", "-a", "--reflink=auto", base, dest)
    assert res.returncode == 0, res.stderr
    return dest


# -- the booted container ----------------------------------------------------------


class Container:
    """``systemd-nspawn --boot`` of a root, driven through nsenter into its PID 1."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0

    def boot(self, timeout: float = 90) -> float:
        """Boot and wait for the boot to finish; returns seconds. Skips if it cannot."""
        t0 = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    # Bounded even if this test dies: timeout ends the container.
                    "timeout", "--kill-after=20", str(CONTAINER_LIFETIME),
                    "systemd-nspawn", "--boot", "--register=no", "--keep-unit",
                    "--console=read-only", f"--machine={DEVICE}", "-D", str(self.root),
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = t0 + timeout
        while not self.pid1:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"systemd-nspawn cannot boot here: {_tail(self.log_text())}")
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    if child.name() == "systemd" and child.parent().name() == "systemd-nspawn":
                        self.pid1 = child.pid
            time.sleep(0.2)
        while True:
            state = self.sh("systemctl", "is-system-running", timeout=10).stdout.strip()
            if state in ("running", "degraded"):
                return time.monotonic() - t0
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"systemd in the container did not finish booting ({state!r}): "
                            f"{_tail(self.log_text())}")  # fmt: skip
            time.sleep(0.3)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def sh(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command inside the container (its mounts, root, PIDs; a clean environment)."""
        return _run(
            "nsenter", "-t", str(self.pid1), "-a", "env", "-i", PATH_ENV, "LANG=C.UTF-8",
            "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", *cmd, timeout=timeout,
        )  # fmt: skip

    def show(self, unit: str, *props: str) -> dict[str, str]:
        res = self.sh("systemctl", "show", unit, *(f"--property={p}" for p in props))
        assert res.returncode == 0, res.stderr
        return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)

    def wait_unit(self, unit: str, pred: object, timeout: float, *props: str) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.show(unit, "ActiveState", "SubState", "MainPID", "NRestarts", *props)
            if pred(got):  # type: ignore[operator]
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{unit}: {got}\n{self.journal(unit)[-4000:]}")
            time.sleep(0.3)

    def journal(self, *units: str) -> str:
        args = [a for u in units for a in ("-u", u)]
        return self.sh("journalctl", "-b", "--no-pager", "-o", "short-monotonic", *args).stdout

    def poweroff(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # timeout passes SIGTERM on; nspawn makes it an orderly shutdown.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@contextlib.contextmanager
def booted(root: Path, log: Path) -> Iterator[tuple[Container, float]]:
    box = Container(root, log)
    try:
        yield box, box.boot()
    finally:
        if box.pid1:
            # Kept beside nspawn's log for a failed run.
            log.with_name("journal.txt").write_text(box.journal())
        box.poweroff()


# -- staging -----------------------------------------------------------------------


# One virtual camera recording 2 s segments into the image's state folder.
_RECORDING_CONFIG = [
    "[device]",
    f'id = "{DEVICE}"',
    'hw_profile = "generic-linux"',
    "[storage]",
    'root = "/var/lib/edge-agent/recordings"',
    'catalog = "/var/lib/edge-agent/catalog.db"',
    'free_space_floor = "64MiB"',
    "[[locations]]",
    'id = "lab"',
    'kind = "premises"',
    "signage = true",
    "[[sources]]",
    'id = "cam-boot"',
    'url = "testsrc://?size=320x240&rate=10&bitrate=200k"',
    'location = "lab"',
    'purpose = "security"',
    "segment_seconds = 2",
]


def _write_config(folder: Path, broker: Broker, live_port: int) -> Path:
    assert broker.tls is not None
    cfg = folder / "config.toml"
    cfg.write_text(
        "\n".join(
            [
                *_RECORDING_CONFIG,
                "[mqtt]",
                f'url = "{broker.url}"',
                'topic_prefix = "edge"',
                "keepalive = 5",
                "telemetry_interval_seconds = 5",
                'ca_file = "mqtt/ca.pem"',
                'cert_file = "mqtt/client.pem"',
                'key_file = "mqtt/client.key"',
                "[liveview]",
                f'listen = "127.0.0.1:{live_port}"',
                'token = "boot-test-token-0123456789abcdef"',
                "",
            ]
        )
    )
    return cfg


def _stage(root: Path, wheelhouse: Path, config: Path, *extra: str) -> str:
    res = _run(
        "bash", REPO / "deploy/install.sh", "--root", root, "--wheelhouse", wheelhouse,
        "--config", config, *extra,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    res2 = _run(
        "systemctl", f"--root={root}", "enable", "edge-agent.service",
        "edge-agent-reconcile.timer",
    )  # fmt: skip
    assert res2.returncode == 0, res2.stderr
    return res.stdout + res.stderr


def _assert_staged_for_the_image(root: Path) -> None:
    """The venv names the image's paths only; nothing is chowned at build time."""
    venv = root / "opt/edge-agent"
    assert (venv / "bin/edge-agent").read_text().splitlines()[0] == "#!/opt/edge-agent/bin/python"
    link = venv / "bin/python"
    hops = 0
    while link.is_symlink():
        target = os.readlink(link)
        link = root / target.lstrip("/") if target.startswith("/") else link.parent / target
        hops += 1
        assert hops < 10
    assert link.is_file() and root in link.parents, link
    assert "home = /usr/bin" in (venv / "pyvenv.cfg").read_text()
    assert str(root) not in (venv / "pyvenv.cfg").read_text()
    config = root / "etc/edge-agent/config.toml"
    assert config.stat().st_uid == 0 and config.stat().st_gid == 0
    assert (root / "usr/lib/sysusers.d/edge-agent.conf").read_bytes() == (
        REPO / "systemd/edge-agent.sysusers.conf"
    ).read_bytes()
    assert (root / "usr/lib/tmpfiles.d/edge-agent.conf").read_bytes() == (
        REPO / "systemd/edge-agent.tmpfiles.conf"
    ).read_bytes()


def _install_tls(root: Path, broker: Broker) -> None:
    """Client certificate and key as an operator would copy them: root-owned, 0640."""
    assert broker.tls is not None
    dest = root / "etc/edge-agent/mqtt"
    dest.mkdir(parents=True, exist_ok=True)
    for src, name in (
        (broker.tls.ca, "ca.pem"),
        (broker.tls.client_cert, "client.pem"),
        (broker.tls.client_key, "client.key"),
    ):
        shutil.copyfile(src, dest / name)
        (dest / name).chmod(0o640)
    dest.chmod(0o750)


# systemd's own set-up of PrivateNetwork= (reconcile service) cannot bring up the
# loopback device here: a container that shares the host's network has no
# CAP_NET_ADMIN. The service still gets its own, empty network namespace. A
# device's systemd has the capability; nothing else is excused.
NSPAWN_ONLY = ("Failed to configure loopback network device, ignoring: Operation not permitted",)


def _agent_denials(box: Container) -> list[str]:
    """Denials in the agent's units: its own messages, and systemd's while starting them."""
    units = ("edge-agent.service", "edge-agent-reconcile.service", "edge-agent-nice-probe.service")
    res = box.sh("journalctl", "-b", "--no-pager", "-o", "json", *(f"--unit={u}" for u in units))
    found = []
    for line in res.stdout.splitlines():
        entry = json.loads(line)
        msg = entry.get("MESSAGE")
        if not isinstance(msg, str) or not DENIED.search(msg):
            continue
        if entry.get("SYSLOG_IDENTIFIER", "").startswith("(") and msg in NSPAWN_ONLY:
            continue
        found.append(f"{entry.get('SYSLOG_IDENTIFIER')}[{entry.get('_PID')}]: {msg}")
    return found


# -- the tests -----------------------------------------------------------------------


def test_staged_image_boots_and_runs_the_agent_under_the_unit(
    tmp_path: Path, image_dir: Path, base_image: Path, wheelhouse: Path
) -> None:
    t_start = time.monotonic()
    root = _copy_base(base_image, image_dir / "root")
    live_port = free_port()
    broker = Broker(tmp_path / "broker", tls=True)
    broker.start()
    sub = Subscriber(broker, [f"edge/{DEVICE}/#"], client_id="boot-test-sub")
    try:
        config = _write_config(tmp_path, broker, live_port)
        out = _stage(root, wheelhouse, config)
        assert "(chroot)" in out, out
        _assert_staged_for_the_image(root)
        _install_tls(root, broker)
        _install_nice_probe(root)
        if SYSCALL_LOG:
            _log_instead_of_deny(root)
        t_staged = time.monotonic()

        with booted(root, tmp_path / "nspawn.log") as (box, boot_s):
            _check_running_agent(box, sub, live_port)
            if SYSCALL_LOG:
                _print_logged_syscalls(box, since=t_staged)
        print(
            f"\nboot test: staging {t_staged - t_start:.1f} s, boot {boot_s:.1f} s, "
            f"total {time.monotonic() - t_start:.1f} s"
        )
    finally:
        sub.close()
        broker.stop()


def _check_running_agent(box: Container, sub: Subscriber, live_port: int) -> None:
    unit = "edge-agent.service"
    # sysusers and tmpfiles did at boot what the build host could not.
    assert "video" in box.sh("id", "-nG", "edge-agent").stdout.split()
    res = box.sh("stat", "-c", "%U:%G %a %n", "/etc/edge-agent", "/etc/edge-agent/config.toml",
                 "/etc/edge-agent/mqtt/client.key", "/var/lib/edge-agent")  # fmt: skip
    assert res.stdout.splitlines() == [
        "root:edge-agent 750 /etc/edge-agent",
        "root:edge-agent 640 /etc/edge-agent/config.toml",
        "root:edge-agent 640 /etc/edge-agent/mqtt/client.key",
        "edge-agent:edge-agent 750 /var/lib/edge-agent",
    ], res.stdout + res.stderr

    # READY=1 makes it active (running) (Type=notify).
    st = box.wait_unit(
        unit,
        lambda s: s["ActiveState"] in ("active", "failed") or s["SubState"] == "auto-restart",
        120,
        "ExecMainStartTimestampMonotonic",
        "ActiveEnterTimestampMonotonic",
    )
    assert st["ActiveState"] == "active", box.journal(unit)[-4000:]
    status = box.sh("systemctl", "status", "--no-pager", unit).stdout
    assert "active (running)" in status, status
    ready_s = (
        int(st["ActiveEnterTimestampMonotonic"]) - int(st["ExecMainStartTimestampMonotonic"])
    ) / 1e6
    pid, t_ready = st["MainPID"], time.monotonic()
    print(f"\nboot test: READY {ready_s:.2f} s after exec")

    # Within the watchdog minute: MQTT over TLS, the live view, the reconcile
    # service, the low-priority slice, and the segments.
    sub.wait_for(f"edge/{DEVICE}/#", lambda got: len(got) > 0, timeout=30)
    req = urllib.request.Request(
        f"http://127.0.0.1:{live_port}/api/sources",
        headers={"Authorization": "Bearer boot-test-token-0123456789abcdef"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert "cam-boot" in resp.read().decode()
    # A WebRTC viewer: DTLS, SRTP and UDP through the unit's sandbox.
    assert asyncio.run(_watch_live(live_port)) >= 5

    t = time.monotonic()
    res = box.sh("systemctl", "start", "edge-agent-reconcile.service", timeout=300)
    rec = box.show("edge-agent-reconcile.service", "Result", "ExecMainStatus")
    assert res.returncode == 0 and rec["Result"] == "success", (
        rec,
        box.journal("edge-agent-reconcile.service")[-3000:],
    )
    print(f"boot test: reconcile service {time.monotonic() - t:.1f} s")

    _check_background_slice(box)

    time.sleep(max(0.0, t_ready + 20 - time.monotonic()))
    segs = _segments(box)
    assert len(segs) >= 3, segs
    assert {owner_mode for owner_mode, _ in segs} == {"edge-agent:edge-agent 640"}, segs
    listed = box.sh(
        "runuser", "-u", "edge-agent", "--", "/opt/edge-agent/bin/edge-agent", "recordings",
        "list", "--json",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) >= 3, listed.stdout[:2000]

    # The watchdog (30 s) holds for a minute: same process, no restart, pings seen.
    w0 = box.show(unit, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
    time.sleep(max(0.0, t_ready + 62 - time.monotonic()))
    st = box.show(unit, "ActiveState", "SubState", "MainPID", "NRestarts",
                  "WatchdogTimestampMonotonic")  # fmt: skip
    assert (st["ActiveState"], st["SubState"], st["MainPID"], st["NRestarts"]) == (
        "active",
        "running",
        pid,
        "0",
    ), st
    assert st["WatchdogTimestampMonotonic"] != w0

    # SIGKILL: restarted (Restart=on-failure), and the cut segment is adopted.
    # Killed once a cluster of the open segment is on disk: before that it holds
    # no video and is quarantined as empty, which is right but shows nothing.
    done = sorted(_sizes(box, "-not"))
    half = done[len(done) // 2] // 2
    deadline = time.monotonic() + 15
    # Only the open segment: a closed one still being filed is also a .partial-,
    # and killing then could leave the open one without video (quarantined).
    while (sizes := _sizes(box)) == [] or len(sizes) > 1 or sizes[0] < half:
        assert time.monotonic() < deadline, f"no lone partial segment grew to {half} bytes"
        time.sleep(0.1)
    assert box.sh("systemctl", "kill", "--kill-who=main", "--signal=SIGKILL", unit).returncode == 0
    st = box.wait_unit(
        unit,
        lambda s: s["NRestarts"] == "1" and s["ActiveState"] == "active" and s["MainPID"] != pid,
        90,
    )
    t_restarted = time.monotonic()
    assert st["SubState"] == "running"
    box.wait_unit(
        unit, lambda s: "adopted 1 segment(s) left by an earlier run" in box.journal(unit), 30
    )
    after = len(_segments(box))
    time.sleep(max(0.0, t_restarted + 6 - time.monotonic()))
    assert len(_segments(box)) > after, "no new segments after the restart"

    _check_watched_folder(box, unit)

    # Stop within TimeoutStopSec (15 s), cleanly (the media child is still up).
    t = time.monotonic()
    res = box.sh("systemctl", "stop", unit, timeout=60)
    stop_s = time.monotonic() - t
    st = box.show(unit, "ActiveState", "Result")
    assert res.returncode == 0 and st == {"ActiveState": "inactive", "Result": "success"}, st
    assert stop_s < 15, stop_s
    print(f"boot test: stop {stop_s:.2f} s")

    denied = _agent_denials(box)
    assert not denied, "\n".join(denied)


def _check_watched_folder(box: Container, unit: str) -> None:
    """A folder added by reload; its file is read by the media child
    (media/media_worker.py), which the unit's sandbox must let run."""
    incoming = "/var/lib/edge-agent/incoming"
    made = box.sh("install", "-d", "-m", "0750", "-o", "edge-agent", "-g", "edge-agent", incoming)
    assert made.returncode == 0, made.stderr
    cfg = box.root / "etc/edge-agent/config.toml"
    cfg.write_text(
        cfg.read_text()
        + f'\n[[watch]]\npath = "{incoming}"\nlocation = "lab"\npurpose = "security"\n'
        + "stable_seconds = 1\n"
    )
    # Reload is SIGHUP (the unit's ExecReload, which must work on a minimal image).
    reloaded = box.sh("systemctl", "reload", unit)
    assert reloaded.returncode == 0, reloaded.stderr + box.journal(unit)[-3000:]
    clip = make_video(box.root / "var/lib/edge-agent/.clip.mp4", seconds=2, audio="aac")
    dropped = box.root / incoming.lstrip("/") / "dvr_clip.mp4"
    os.rename(clip, dropped)
    deadline = time.monotonic() + 60
    while dropped.exists():
        assert time.monotonic() < deadline, box.journal(unit)[-3000:]
        time.sleep(0.2)
    log = box.journal(unit)
    assert re.search(r"adopted \S*dvr_clip\.mp4 as", log), log[-3000:]
    assert "media worker:" not in log, log[-3000:]
    # No pgrep in a minimal image (procps).
    child = box.sh("sh", "-c", "grep -l -a edge_agent.media.media_child /proc/[0-9]*/cmdline")
    assert child.returncode == 0, "the media child ran (and waits for the next file)"


async def _watch_live(port: int) -> int:
    """Frames a WHEP viewer on this machine decodes from the agent in the container."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    got: list[object] = []
    track_ready = asyncio.Event()
    pc.on("track", lambda t: (got.append(t), track_ready.set()))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"http://127.0.0.1:{port}/whep/cam-boot",
                data=pc.localDescription.sdp,
                headers={
                    "Authorization": "Bearer boot-test-token-0123456789abcdef",
                    "Content-Type": "application/sdp",
                },
            )
            assert resp.status == 201, await resp.text()
            answer = await resp.text()
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        n = 0
        async with asyncio.timeout(20):
            await track_ready.wait()
            while n < 5:
                await got[0].recv()  # type: ignore[attr-defined]
                n += 1
        return n
    finally:
        await pc.close()


# EDGE_AGENT_BOOT_SYSCALL_LOG=1: find what the filter denies. The agent's units
# then log (kernel audit, type=1326) instead of deny every call outside
# @system-service or in @resources; the test prints them by name at the end.
SYSCALL_LOG = os.environ.get("EDGE_AGENT_BOOT_SYSCALL_LOG") == "1"


def _log_instead_of_deny(root: Path) -> None:
    for unit in ("edge-agent.service", "edge-agent-reconcile.service"):
        dropin = root / "etc/systemd/system" / f"{unit}.d"
        dropin.mkdir(exist_ok=True)
        (dropin / "90-syscall-log.conf").write_text(
            "[Service]\nSystemCallFilter=\n"
            "SystemCallLog=~@system-service\nSystemCallLog=@resources\n"
        )


def _print_logged_syscalls(box: Container, since: float) -> None:
    """Audit lines of the kernel log after ``since`` (its stamps are CLOCK_MONOTONIC)."""
    names: dict[str, str] = {}
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if header.exists():
        for m in re.finditer(r"#define __NR_(\w+) (\d+)", header.read_text()):
            names[m.group(2)] = m.group(1)
    seen: dict[tuple[str, str], int] = {}
    for line in _run("dmesg").stdout.splitlines():
        m = re.search(r"^\[\s*([\d.]+)\].*type=1326 .*comm=\"([^\"]*)\".*syscall=(\d+)", line)
        if m and float(m.group(1)) >= since:
            key = (m.group(2), names.get(m.group(3), m.group(3)))
            seen[key] = seen.get(key, 0) + 1
    props = box.show("edge-agent.service", "SystemCallFilter", "SystemCallLog")
    # An empty deny list; logged: everything but @system-service, and @resources.
    log = props["SystemCallLog"]
    assert props["SystemCallFilter"] in ("", "~"), props
    assert log.startswith("~") and "setpriority" not in log[1:].split(), props
    print("\nboot test: calls the filter would deny (comm, syscall: count):")
    for (comm, call), n in sorted(seen.items()):
        print(f"  {comm} {call}: {n}")
    if not seen:
        print("  none")


def _segments(box: Container) -> list[tuple[str, str]]:
    res = box.sh("find", "/var/lib/edge-agent/recordings", "-type", "f", "-not", "-name",
                 ".partial-*", "-printf", "%u:%g %m\t%P\n")  # fmt: skip
    assert res.returncode == 0, res.stderr
    return [tuple(line.split("\t", 1)) for line in res.stdout.splitlines()]  # type: ignore[misc]


NICE_PROBE = """\
import os
print("nice", os.getpriority(os.PRIO_PROCESS, 0))
try:
    os.nice(1)
except PermissionError as exc:
    print("denied", exc.errno)
"""
# A worker's unit as docs/deploy-image.md describes it, with the agent's filter.
NICE_PROBE_UNIT = """\
[Service]
Type=oneshot
Slice=edge-agent-background.slice
User=edge-agent
Nice=10
IOSchedulingClass=idle
SystemCallFilter=@system-service
SystemCallFilter=~@resources
SystemCallErrorNumber=EPERM
ExecStart=/opt/edge-agent/bin/python /usr/local/lib/edge-agent-test/nice_probe.py
StandardOutput=truncate:/run/edge-agent-nice-probe.txt
StandardError=inherit
"""


def _install_nice_probe(root: Path) -> None:
    (root / "usr/local/lib/edge-agent-test").mkdir(parents=True, exist_ok=True)
    (root / "usr/local/lib/edge-agent-test/nice_probe.py").write_text(NICE_PROBE)
    (root / "etc/systemd/system/edge-agent-nice-probe.service").write_text(NICE_PROBE_UNIT)


def _sizes(box: Container, *neg: str) -> list[int]:
    """Sizes of the partial segments, or (with "-not") of the finished ones."""
    res = box.sh("find", "/var/lib/edge-agent/recordings", "-type", "f", *neg, "-name",
                 ".partial-*", "-printf", "%s\n")  # fmt: skip
    return [int(n) for n in res.stdout.split()]


def _check_background_slice(box: Container) -> None:
    """Priority through the unit works under the agent's filter; nice() itself is denied."""
    props = box.show("edge-agent-background.slice", "CPUWeight", "IOWeight", "LoadState")
    assert props == {"CPUWeight": "20", "IOWeight": "20", "LoadState": "loaded"}, props
    res = box.sh("systemctl", "start", "edge-agent-nice-probe.service")
    assert res.returncode == 0, res.stderr + box.journal("edge-agent-nice-probe.service")
    out = box.sh("cat", "/run/edge-agent-nice-probe.txt").stdout
    assert out.split() == ["nice", "10", "denied", "1"], out + res.stderr


def test_rewritten_venv_boots_too(
    tmp_path: Path, image_dir: Path, base_image: Path, wheelhouse: Path
) -> None:
    """``--venv rewrite`` (no chroot): built here, paths rewritten, and it starts in the image."""
    host = subprocess.run(
        [sys.executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if host != IMAGE_PY:
        pytest.skip(f"--venv rewrite needs Python {IMAGE_PY} here (this is {host})")
    root = _copy_base(base_image, image_dir / "root")
    config = tmp_path / "config.toml"
    config.write_text(
        "\n".join(
            [
                *_RECORDING_CONFIG,
                "",
            ]
        )
    )
    out = _stage(root, wheelhouse, config, "--venv", "rewrite", "--python", sys.executable)
    assert "rewrote the virtualenv" in out, out
    _assert_staged_for_the_image(root)
    with booted(root, tmp_path / "nspawn.log") as (box, _):
        st = box.wait_unit(
            "edge-agent.service",
            lambda s: s["ActiveState"] in ("active", "failed") or s["NRestarts"] != "0",
            120,
        )
        assert (st["ActiveState"], st["SubState"]) == ("active", "running"), box.journal(
            "edge-agent.service"
        )[-4000:]
        deadline = time.monotonic() + 20
        while not _segments(box) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert {om for om, _ in _segments(box)} == {"edge-agent:edge-agent 640"}
        assert not _agent_denials(box)
