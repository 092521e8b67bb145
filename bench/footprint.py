"""Idle footprint of ``edge-agent run``: RSS and CPU with two cameras, live view off and on.

"Idle" means what a deployed gateway does all day: two cameras recorded by
stream copy (no encoding in the agent), MQTT connected, janitor and telemetry
running, nobody watching. ``testsrc://`` would encode video inside the agent,
so the cameras here are two ``file://`` sources playing a 720p25 H.264 file
at real time (looped), which costs what an RTSP camera costs: demux and mux.

The agent runs as a subprocess against a private mosquitto, from a copy of
the package with compiled bytecode, as pip installs it on a device. After
``--seconds`` it reports RSS (and USS, the memory only this process holds)
and CPU% over the window after start-up (``--warmup`` excluded). Then the same
over mutual TLS (as deployed), with ``[liveview]`` enabled (aiortc loaded, no
viewer), and with no cameras at all (what the daemon itself costs). Finally
the biggest imports of the daemon (``python -X importtime``), which is where
the RSS goes.

RSS is reported split into anonymous memory (the heap: what the agent really
costs) and file-backed pages (shared library code, which the kernel can drop
and re-read). Kernels from 6.16 on cache ext4 files in large folios and map a
whole folio on a fault, so touching one page of libavcodec's code can add up
to 4 MiB of RSS; ``--tmpfs`` runs the same agent with its site-packages copied
to a 4 KiB-page tmpfs, which shows what a kernel without large folios reports.

    python bench/footprint.py --seconds 60
    python bench/footprint.py --only two_cameras --repeat 5   # the README's target
    python bench/footprint.py --seconds 60 --tmpfs
    python bench/footprint.py --soak --seconds 1800   # anonymous memory growth per hour
    python bench/footprint.py --soak --seconds 2400 --segment-seconds 2

"anon MiB/h" is the least-squares slope of anonymous memory after the warm-up
("2nd half": over the second half of the window only):
a leak shows as a steady positive figure over a long ``--soak``; over 60 s it
is mostly the allocator settling. Anonymous memory also grows with the
catalog until SQLite's page cache is full (its default, 2 MiB per
connection); with 2 s segments that takes about 20 minutes, and the slope
after it is what a device shows for months.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.broker import Broker  # noqa: E402

# The idle targets for two cameras, live view off (README, "Footprint").
TARGET_RSS = 72 * 1024 * 1024
TARGET_ANON = 34 * 1024 * 1024
RUNS = ("two_cameras", "two_cameras_tls", "no_cameras", "liveview_on", "liveview_no_console")


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


def write_config(
    folder: Path,
    clip: Path,
    broker: Broker,
    liveview: bool | str,
    cameras: int = 2,
    segment_seconds: float = 10,
) -> Path:
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
    if broker.tls is not None:
        lines += [
            f'ca_file = "{broker.tls.ca}"',
            f'cert_file = "{broker.tls.client_cert}"',
            f'key_file = "{broker.tls.client_key}"',
        ]
    for i in range(1, cameras + 1):
        lines += [
            "[[sources]]",
            f'id = "cam{i}"',
            f'url = "file://{clip}"',
            'location = "gate"',
            'purpose = "security"',
            f"segment_seconds = {segment_seconds:g}",
        ]
    if liveview:
        lines += [
            "[liveview]",
            f'listen = "127.0.0.1:{free_port()}"',
            'token = "bench-token-0123456789"',
        ]
        if liveview == "no_console":
            lines.append("console = false")
    path = folder / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def status_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0])
    return out


def biggest_mappings(pid: int, n: int = 6) -> dict[str, float]:
    """RSS per mapped file (site-packages folded per distribution) and anonymous."""
    agg: dict[str, int] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else "[anon]"
            if "/site-packages/" in name:
                name = name.split("/site-packages/")[1].split("/")[0]
            elif name.startswith("/"):
                name = name.rsplit("/", 1)[-1]
        elif head and head[0] == "Rss:":
            agg[name] = agg.get(name, 0) + int(head[1])
    top = sorted(agg.items(), key=lambda kv: -kv[1])[:n]
    return {k: v / 1024 for k, v in top}


def installed_copy(tmp: Path) -> Path:
    """The package as a device has it: a copy of ``edge_agent`` with compiled ``.pyc``.

    pip compiles bytecode when it installs the wheel (docs/deploy-image.md), so a
    device never compiles at start. Run from the checkout, with bytecode writes
    off (``PYTHONDONTWRITEBYTECODE``) or a fresh tree, the daemon would compile
    every module at each start, and the compiler's transient memory stays in
    the heap: about 1.5 MiB of anonymous memory a device does not have.
    """
    site = tmp / "site"
    shutil.copytree(
        REPO / "edge_agent",
        site / "edge_agent",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(site)], check=True)
    return site


def measure(config: Path, seconds: float, warmup: float, pythonpath: str) -> dict[str, object]:
    """``pythonpath`` names the package (``installed_copy``) and any site-packages copy."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    # Steady state, as on a device after its first boot: the catalog exists and is
    # migrated, so the daemon does not load the migration tooling (sqlite-utils).
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from edge_agent.config.config import load_config; "
         "from edge_agent.store.catalog import open_catalog_from_config; "
         "open_catalog_from_config(load_config(__import__('pathlib').Path(sys.argv[1]))).close()",
         str(config)],
        env=env, check=True, cwd=config.parent,
    )  # fmt: skip
    log = open(config.parent / "agent.log", "wb")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
        stdout=log,
        stderr=log,
        env=env,
        cwd=config.parent,  # not the checkout: ``-m`` would find its uncompiled source first
    )
    p = psutil.Process(proc.pid)
    try:
        time.sleep(warmup)
        t0, c0 = time.monotonic(), p.cpu_times()
        peak = 0
        samples: list[tuple[float, float]] = []  # (seconds, anonymous MiB)
        while time.monotonic() - t0 < seconds - warmup:
            time.sleep(1.0)
            peak = max(peak, p.memory_info().rss)
            anon = status_kib(proc.pid).get("RssAnon", 0) / 1024
            samples.append((time.monotonic() - t0, anon))
        t1, c1 = time.monotonic(), p.cpu_times()
        mem = p.memory_full_info()
        split = status_kib(proc.pid)
        top = biggest_mappings(proc.pid)
        cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0) * 100.0
        segments = len(list((config.parent / "recordings").rglob("*.mkv")))
        return {
            "rss_mib": mem.rss / 2**20,
            "anon_mib": split.get("RssAnon", 0) / 1024,
            "file_mib": (split.get("RssFile", 0) + split.get("RssShmem", 0)) / 1024,
            "uss_mib": mem.uss / 2**20,
            "peak_rss_mib": peak / 2**20,
            "anon_growth_mib_per_h": slope(samples) * 3600,
            # The second half alone: after the catalog's page cache has filled.
            "late_growth_mib_per_h": slope(samples[len(samples) // 2 :]) * 3600,
            "cpu_percent": cpu,
            "threads": p.num_threads(),
            "segments": segments,
            "biggest_mib": top,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def median_run(repeats: list[dict[str, object]]) -> dict[str, object]:
    """Each figure's median over the repeats; the run of median RSS for the mappings."""
    if len(repeats) == 1:
        return repeats[0]
    out: dict[str, object] = {}
    for key, value in repeats[0].items():
        if isinstance(value, (int, float)):
            out[key] = statistics.median(float(r[key]) for r in repeats)  # type: ignore[arg-type]
    by_rss = sorted(repeats, key=lambda r: float(r["rss_mib"]))  # type: ignore[arg-type]
    out["biggest_mib"] = by_rss[len(by_rss) // 2]["biggest_mib"]
    out["rss_mib_each"] = [r["rss_mib"] for r in repeats]
    out["anon_mib_each"] = [r["anon_mib"] for r in repeats]
    return out


def slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per second): growth, robust to allocator noise."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    den = sum((t - mx) ** 2 for t, _ in samples)
    return sum((t - mx) * (v - my) for t, v in samples) / den if den else 0.0


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
        "edge_agent.config.config",
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


def site_packages_on_tmpfs(tmp: Path) -> tuple[str, Path]:
    """Copy this venv's site-packages to a fresh tmpfs folder (4 KiB pages)."""
    import site

    src = Path(site.getsitepackages()[0])
    shm = Path(tempfile.mkdtemp(prefix="edge-footprint-", dir="/dev/shm"))
    shutil.copytree(src, shm / "sp", symlinks=True)
    return str(shm / "sp"), shm


def table(result: dict[str, dict[str, object]]) -> str:
    cols = ("rss_mib", "anon_mib", "file_mib", "uss_mib", "cpu_percent", "threads", "segments",
            "anon_growth_mib_per_h", "late_growth_mib_per_h")  # fmt: skip
    heads = ("rss", "anon", "file", "uss", "cpu %", "threads", "segments", "anon MiB/h",
             "2nd half")  # fmt: skip
    lines = [f"{'run':<16}" + "".join(f"{h:>11}" for h in heads)]
    for name, row in result.items():
        cells = "".join(f"{float(row[c]):>11.1f}" for c in cols)  # type: ignore[arg-type]
        lines.append(f"{name:<16}{cells}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--no-liveview", action="store_true", help="skip the live-view run")
    ap.add_argument(
        "--tmpfs", action="store_true", help="run from site-packages copied to /dev/shm"
    )
    ap.add_argument(
        "--soak",
        action="store_true",
        help="only the two-camera run, for --seconds (e.g. 1800): does memory grow?",
    )
    ap.add_argument("--only", choices=RUNS, action="append", help="only these runs (repeatable)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each case this many times and report the median (RSS varies run to run)",
    )
    ap.add_argument(
        "--segment-seconds",
        type=float,
        default=10.0,
        help="shorter segments age the catalog faster (a soak reaches its plateau sooner)",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edge-footprint-"))
    shm: Path | None = None
    try:
        pythonpath = str(installed_copy(tmp))
        if args.tmpfs:
            packages, shm = site_packages_on_tmpfs(tmp)
            pythonpath = os.pathsep.join((pythonpath, packages))
        clip = tmp / "clip.mp4"
        make_clip(clip)
        broker = Broker(tmp / "broker")
        tls_broker = Broker(tmp / "tls-broker", tls=True)
        broker.start()
        tls_broker.start()
        runs: dict[str, dict[str, object]] = {}
        try:
            plan = [("two_cameras", False, 2, broker)]
            if not args.soak or args.only:
                # A deployed gateway talks mutual TLS to its broker: OpenSSL's
                # context and the CA cost memory the plain run does not show.
                plan.append(("two_cameras_tls", False, 2, tls_broker))
                plan.append(("no_cameras", False, 0, broker))
            if not args.no_liveview and (not args.soak or args.only):
                plan.append(("liveview_on", True, 2, broker))
                # The console on the same server: what it costs while nobody looks.
                plan.append(("liveview_no_console", "no_console", 2, broker))
            if args.only:
                plan = [row for row in plan if row[0] in args.only]
            for name, lv, cameras, via in plan:
                repeats = []
                for i in range(max(1, args.repeat)):
                    folder = tmp / f"{name}-{i}"
                    folder.mkdir()
                    cfg = write_config(folder, clip, via, lv, cameras, args.segment_seconds)
                    repeats.append(measure(cfg, args.seconds, args.warmup, pythonpath))
                runs[name] = median_run(repeats)
        finally:
            broker.stop()
            tls_broker.stop()
        result: dict[str, object] = {"runs": runs, "tmpfs": args.tmpfs}
        result["import_rss_mib"] = {
            m: import_rss(m)
            for m in (
                "edge_agent.app.daemon",
                "av",
                "paho.mqtt.client",
                "pydantic",
                "aiortc",
            )
        }
        result["import_rss_steps_mib"] = import_rss_steps("edge_agent.app.daemon")
        result["import_time_ms_top"] = top_imports("edge_agent.app.daemon")
        print(json.dumps(result, indent=2, default=lambda x: round(x, 1)))
        print()
        times = f" (median of {args.repeat})" if args.repeat > 1 else ""
        print(
            f"edge-agent run after {args.seconds:.0f} s{times} (MiB; file = shared library pages)"
        )
        print(table(runs))
        off = runs.get("two_cameras")
        if off is not None:
            rss, anon = float(off["rss_mib"]), float(off["anon_mib"])  # type: ignore[arg-type]
            met = rss <= TARGET_RSS / 2**20 and anon <= TARGET_ANON / 2**20
            verdict = "met" if met else "missed"
            print(f"target for two_cameras: RSS <= {TARGET_RSS / 2**20:.0f} MiB, "
                  f"anon <= {TARGET_ANON / 2**20:.0f} MiB: {verdict}")  # fmt: skip
        on, no = runs.get("liveview_on"), runs.get("liveview_no_console")
        if on is not None and no is not None:
            keys = ("rss_mib", "anon_mib", "cpu_percent")
            d = {k: float(on[k]) - float(no[k]) for k in keys if k in on and k in no}  # type: ignore[arg-type]
            print("console enabled vs disabled (idle, nobody looking): "
                  + ", ".join(f"{k} {v:+.2f}" for k, v in d.items()))  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if shm is not None:
            shutil.rmtree(shm, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
