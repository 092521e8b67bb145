"""Fleet benchmark: N simulated devices, one local mosquitto, the dashboard subscribed.

    python bench/fleet.py [--devices 100,1000,5000] [--seconds 20] [--speedup 10]

For each N: a fresh mosquitto on a free loopback port, ``edge-agent fleet``
(the real CLI, a subprocess) subscribed to it, and N devices
(``edge_agent.fleet.sim``: the agent's own status, telemetry and event
payloads) that announce themselves (status and telemetry, retained), then run
for ``--seconds`` at the configured cadences sped up ``--speedup`` times:
telemetry every ``--telemetry-interval`` (60 s, the agent's default), events
at ``--events-per-hour`` per device (48: two cameras, a segment every 5 min,
each added and later deleted). Meanwhile a status change goes to a random
device every 0.2 s and an SSE client of the dashboard times its arrival.

Reports per N: messages/s in the run, bytes per device per day at the real
cadence, broker and dashboard CPU (% of one core, and CPU-ms per 1,000
messages), dashboard memory (RSS), and the p50/p99 delay from a status
change to the dashboard's SSE stream. docs/fleet.md turns the per-message
costs into the arithmetic for 10,000 and 100,000 devices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import psutil

from edge_agent.fleet.sim import Simulator
from tests.support.broker import REPO, Broker, free_port

TOKEN = "bench-fleet-token-0123456789"


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def _fleet_doc(url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/fleet?limit=1", headers={"Authorization": f"Bearer {TOKEN}"}) as r,
    ):
        doc: dict[str, Any] = await r.json()
        return doc


async def _watch(
    url: str, sent: dict[str, float], delays: list[float], stop: asyncio.Event
) -> None:
    """The SSE stream: when a probe's reason shows up, how long after it was sent."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/stream", headers=auth) as r:
        while not stop.is_set():
            try:
                async with asyncio.timeout(0.5):
                    line = await r.content.readline()
            except TimeoutError:
                continue
            if not line.startswith(b"data: ") or b"probe-" not in line:
                continue
            now = time.monotonic()
            for row in json.loads(line[6:])["rows"]:
                for reason in row["reasons"]:
                    t = sent.pop(reason, None)
                    if t is not None:
                        delays.append(now - t)


def _drive(
    sim: Simulator, args: argparse.Namespace, stop: threading.Event, sent: dict[str, float]
) -> None:
    """Publish at the (sped-up) cadences until ``stop``; probes every 0.2 s."""
    rng = random.Random(7)
    tele_every = args.telemetry_interval / args.speedup
    event_rate = len(sim.devices) * args.events_per_hour * args.speedup / 3600.0  # per second
    next_tele = {d.id: time.monotonic() + rng.random() * tele_every for d in sim.devices}
    tick, k, last_probe, owed = 0.05, 0, 0.0, 0.0
    while not stop.is_set():
        now = time.monotonic()
        for d in sim.devices:
            if next_tele[d.id] <= now:
                sim.publish(d, "telemetry", d.telemetry(), retain=True)
                next_tele[d.id] = now + tele_every
        owed += event_rate * tick
        while owed >= 1:
            owed -= 1
            d = rng.choice(sim.devices)
            sim.publish(d, "events", d.event(), retain=False)
        if now - last_probe >= 0.2:
            last_probe, k = now, k + 1
            d = rng.choice(sim.devices)
            sent[f"probe-{k}"] = time.monotonic()
            sim.publish(d, "status", d.status("degraded", [f"probe-{k}"]), retain=True)
        time.sleep(max(0.0, tick - (time.monotonic() - now)))


def run_one(n: int, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    broker = Broker(folder / "broker")
    broker.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = folder / "token"
    token.write_text(TOKEN)
    with open(folder / "fleet.log", "wb") as log:
        dash = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "fleet", "--broker", broker.url,
             "--listen", f"127.0.0.1:{port}", "--token-file", str(token),
             "--client-id", "bench-fleet"],
            stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
        )  # fmt: skip
    sim = Simulator("127.0.0.1", broker.port, n, connections=max(4, n // 500))
    assert broker.proc is not None
    bproc, dproc = psutil.Process(broker.proc.pid), psutil.Process(dash.pid)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                asyncio.run(_fleet_doc(url))
                break
            except (aiohttp.ClientError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        t0 = time.monotonic()
        sim.announce()
        while asyncio.run(_fleet_doc(url))["summary"]["devices"] < n:
            time.sleep(0.2)
        announce_s = time.monotonic() - t0

        sent: dict[str, float] = {}
        delays: list[float] = []
        stop_drive = threading.Event()

        async def measure() -> None:
            stop = asyncio.Event()
            watcher = asyncio.create_task(_watch(url, sent, delays, stop))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(_drive_for, args.seconds)
            await asyncio.sleep(1.0)  # the last probes' deltas
            stop.set()
            await watcher

        marks: dict[str, float] = {}

        def _drive_for(seconds: float) -> None:
            driver = threading.Thread(target=_drive, args=(sim, args, stop_drive, sent))
            marks.update(m0=sim.sent, b0=sim.bytes, cb=_cpu(bproc), cd=_cpu(dproc))
            marks["w0"] = time.monotonic()
            driver.start()
            time.sleep(seconds)
            stop_drive.set()
            driver.join()
            marks.update(m1=sim.sent, b1=sim.bytes, cb1=_cpu(bproc), cd1=_cpu(dproc))
            marks["w1"] = time.monotonic()

        asyncio.run(measure())
        # Over the driving time only (the SSE watcher's start and tail are idle).
        wall = marks["w1"] - marks["w0"]
        msgs, nbytes = marks["m1"] - marks["m0"], marks["b1"] - marks["b0"]
        cpu_b, cpu_d = marks["cb1"] - marks["cb"], marks["cd1"] - marks["cd"]
        received = asyncio.run(_fleet_doc(url))["summary"]["messages"]
        delays.sort()
        # Bytes per device per day at the real cadence (the run was sped up).
        per_day = nbytes / n / wall * 86400 / args.speedup
        return {
            "devices": n,
            "announce_s": announce_s,
            "msgs_per_s": msgs / wall,
            "bytes_per_device_day": per_day,
            "broker_cpu_pct": 100 * cpu_b / wall,
            "dash_cpu_pct": 100 * cpu_d / wall,
            "broker_ms_per_1k": 1000 * cpu_b / msgs * 1000,
            "dash_ms_per_1k": 1000 * cpu_d / msgs * 1000,
            "dash_rss_mib": dproc.memory_info().rss / 2**20,
            "p50_ms": 1000 * statistics.median(delays) if delays else float("nan"),
            "p99_ms": 1000 * delays[min(len(delays) - 1, int(0.99 * len(delays)))]
            if delays
            else float("nan"),
            "probes": len(delays),
            "received": received,
        }
    finally:
        sim.close()
        dash.terminate()
        dash.wait(15)
        broker.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="100,1000,5000")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--speedup", type=float, default=10.0)
    ap.add_argument("--telemetry-interval", type=float, default=60.0)
    ap.add_argument("--events-per-hour", type=float, default=48.0)
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.devices.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            rows.append(run_one(n, args, Path(tmp)))
        print(json.dumps({k: round(v, 2) for k, v in rows[-1].items()}), flush=True)
    print(
        f"\n{args.seconds:.0f} s per N, cadences x{args.speedup:g} "
        f"(telemetry every {args.telemetry_interval / args.speedup:g} s, "
        f"{args.events_per_hour * args.speedup:g} events/h per device)\n"
    )
    print(
        "| devices | msgs/s | bytes/device/day | broker CPU | dashboard CPU "
        "| broker CPU-ms/1k msgs | dashboard CPU-ms/1k msgs | dashboard RSS "
        "| status->page p50 / p99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['devices']:,.0f} | {r['msgs_per_s']:,.0f} "
            f"| {r['bytes_per_device_day'] / 1e6:.2f} MB "
            f"| {r['broker_cpu_pct']:.1f} % | {r['dash_cpu_pct']:.1f} % "
            f"| {r['broker_ms_per_1k']:.0f} | {r['dash_ms_per_1k']:.0f} "
            f"| {r['dash_rss_mib']:.0f} MiB | {r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
