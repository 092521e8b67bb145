"""Idle footprint of ``edge-agent run``: RSS and CPU with two cameras, live view off and on.

"Idle" means what a deployed gateway does all day: two cameras recorded by
stream copy (no encoding in the agent), MQTT connected, janitor and telemetry
running, nobody watching. ``testsrc://`` would encode video inside the agent,
so the cameras here are two ``file://`` sources playing a 720p25 H.264 file
at real time (looped), which costs what an RTSP camera costs: demux and mux.

The agent runs as a subprocess against a private mosquitto. After
``--seconds`` it reports RSS (and USS, the memory only this process holds)
and CPU% over the window after start-up (``--warmup`` excluded). Then the same
with ``[liveview]`` enabled (aiortc loaded, no viewer). Finally the biggest
imports of the daemon (``python -X importtime``), which is where the RSS goes.

    python bench/footprint.py --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from broker import Broker  # noqa: E402

TARGET_RSS = 64 * 1024 * 1024


def make_clip(path: Path, seconds: int = 20) -> None:
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y"),
            *("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"),
            *("-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "50"),
            *("-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M", str(path)),
        ],
        check=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(folder: Path, clip: Path, broker: Broker, liveview: bool) -> Path:
    lines = [
        "[device]",
        'id = "bench"',
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
        "telemetry_interval_seconds = 30",
    ]
    for i in (1, 2):
        lines += [
            "[[sources]]",
            f'id = "cam{i}"',
            f'url = "file://{clip}"',
            'location = "gate"',
            'purpose = "security"',
            "segment_seconds = 10",
        ]
    if liveview:
        lines += [
            "[liveview]",
            f'listen = "127.0.0.1:{free_port()}"',
            'token = "bench-token-0123456789"',
        ]
    path = folder / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def measure(config: Path, seconds: float, warmup: float) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Steady state, as on a device after its first boot: the catalog exists and is
    # migrated, so the daemon does not load the migration tooling (sqlite-utils).
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from edge_agent.config import load_config; "
         "from edge_agent.catalog import open_catalog_from_config; "
         "open_catalog_from_config(load_config(__import__('pathlib').Path(sys.argv[1]))).close()",
         str(config)],
        env=env, check=True,
    )  # fmt: skip
    log = open(config.parent / "agent.log", "wb")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
        stdout=log,
        stderr=log,
        env=env,
        cwd=REPO,
    )
    p = psutil.Process(proc.pid)
    try:
        time.sleep(warmup)
        t0, c0 = time.monotonic(), p.cpu_times()
        peak = 0
        while time.monotonic() - t0 < seconds - warmup:
            time.sleep(1.0)
            peak = max(peak, p.memory_info().rss)
        t1, c1 = time.monotonic(), p.cpu_times()
        mem = p.memory_full_info()
        cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0) * 100.0
        segments = len(list((config.parent / "recordings").rglob("*.mkv")))
        return {
            "rss_mib": mem.rss / 2**20,
            "uss_mib": mem.uss / 2**20,
            "peak_rss_mib": peak / 2**20,
            "cpu_percent": cpu,
            "threads": p.num_threads(),
            "segments": segments,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def import_rss(module: str) -> float:
    code = f"import {module}, psutil; print(psutil.Process().memory_info().rss)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    return int(out.stdout) / 2**20


def top_imports(module: str, n: int = 12) -> list[tuple[str, float]]:
    """Distributions by import time (self time summed per top-level package)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    ).stderr
    pkgs: dict[str, float] = {}
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            top = m.group(2).split(".")[0]
            pkgs[top] = pkgs.get(top, 0.0) + int(m.group(1)) / 1000
    return sorted(pkgs.items(), key=lambda kv: -kv[1])[:n]


def import_rss_steps(module: str) -> list[tuple[str, float]]:
    """RSS added by each heavy dependency, imported in turn before ``module``."""
    steps = [
        "pydantic",
        "av",
        "numpy",
        "sqlite_utils",
        "paho.mqtt.client",
        "cryptography.hazmat.primitives.asymmetric.ed25519",
        "edge_agent.config",
        module,
    ]
    code = (
        "import importlib, json, psutil\n"
        "p = psutil.Process(); out = [('python', p.memory_info().rss)]\n"
        f"for m in {steps!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ImportError:\n"
        "        continue  # e.g. numpy, only present when something else installed it\n"
        "    out.append((m, p.memory_info().rss))\n"
        "print(json.dumps(out))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    rows = json.loads(res.stdout)
    return [(rows[0][0], rows[0][1] / 2**20)] + [
        (name, (rss - rows[i][1]) / 2**20) for i, (name, rss) in enumerate(rows[1:])
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--no-liveview", action="store_true", help="skip the live-view run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edge-footprint-"))
    try:
        clip = tmp / "clip.mp4"
        make_clip(clip)
        broker = Broker(tmp / "broker")
        broker.start()
        try:
            result: dict[str, object] = {}
            runs = [("liveview_off", False)] + ([] if args.no_liveview else [("liveview_on", True)])
            for name, lv in runs:
                folder = tmp / name
                folder.mkdir()
                cfg = write_config(folder, clip, broker, lv)
                result[name] = measure(cfg, args.seconds, args.warmup)
        finally:
            broker.stop()
        result["import_rss_mib"] = {
            m: import_rss(m)
            for m in ("edge_agent.daemon", "av", "paho.mqtt.client", "pydantic", "aiortc")
        }
        result["import_rss_steps_mib"] = import_rss_steps("edge_agent.daemon")
        result["import_time_ms_top"] = top_imports("edge_agent.daemon")
        off = result["liveview_off"]
        assert isinstance(off, dict)
        result["target_rss_mib"] = TARGET_RSS / 2**20
        result["rss_within_target"] = off["rss_mib"] * 2**20 <= TARGET_RSS
        print(json.dumps(result, indent=2, default=lambda x: round(x, 1)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
