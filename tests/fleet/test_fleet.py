"""The fleet dashboard end to end: ``edge-agent fleet`` (a subprocess) on a real mosquitto.

200 simulated devices publish the agent's own payloads (edge_agent.fleet.sim);
the API and the page must count what was published, a status change must reach
an open page within a second (server-sent events), and a device whose
connection dies must turn offline (its will) within 2 s. The browser test
drives headless Chromium and saves a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.fleet.model import Fleet
from edge_agent.fleet.sim import Simulator
from tests.support.broker import REPO, Broker, free_port

TOKEN = "fleet-test-token-0123456789"
N = 200


@pytest.fixture()
def fleet(tmp_path: Path) -> Iterator[dict[str, Any]]:
    broker = Broker(tmp_path / "broker")
    broker.start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    log = open(tmp_path / "fleet.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "fleet",
            "--broker",
            broker.url,
            "--listen",
            f"127.0.0.1:{port}",
            "--token-file",
            str(token_file),
            "--client-id",
            "fleet-test",
        ],
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    sim = Simulator("127.0.0.1", broker.port, N)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "sim": sim, "proc": proc, "tmp": tmp_path}
    finally:
        sim.close()
        proc.terminate()
        proc.wait(15)
        log.close()
        broker.stop()


def expected(sim: Simulator) -> dict[str, int]:
    return {
        "devices": len(sim.devices),
        "overdue": sum(d.overdue for d in sim.devices),
        "untrusted": sum(not d.clock_trusted for d in sim.devices),
        "failing": sum(d.failing_source for d in sim.devices),
    }


async def _get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.get(url, **kw) as r:
        return r.status, await r.json(content_type=None)


async def _until(http: aiohttp.ClientSession, url: str, pred: Any, limit: float) -> Any:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + limit
    while True:
        try:
            status, doc = await _get(http, url, headers=auth)
            if status == 200 and pred(doc):
                return doc
        except aiohttp.ClientConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timeout on {url}")
        await asyncio.sleep(0.1)


async def test_counts_sse_and_the_will(fleet: dict[str, Any]) -> None:
    sim: Simulator = fleet["sim"]
    url = fleet["url"]
    killed = sim.devices[0]
    sim.own_connection(killed)
    await asyncio.sleep(0.3)
    sim.announce()
    want = expected(sim)
    async with aiohttp.ClientSession() as http:
        # Every status and every telemetry taken in.
        doc = await _until(
            http,
            f"{url}/api/fleet",
            lambda d: (
                d["summary"]["states"]["online"] == N
                and all(r["clock"] is not None for r in d["rows"])
            ),
            30,
        )
        # No token, a wrong one: refused.
        assert (await _get(http, f"{url}/api/fleet"))[0] == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await _get(http, f"{url}/api/fleet", headers=bad))[0] == 401
        s = doc["summary"]
        assert s["devices"] == want["devices"] and s["overdue"] == want["overdue"]
        rows = doc["rows"]
        assert sum(r["clock"] == "untrusted" for r in rows) == want["untrusted"]
        assert sum(bool(r["failing_sources"]) for r in rows) == want["failing"]

        # An open page (SSE) learns of a status change within a second.
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{url}/api/stream", headers=auth) as stream:
            await stream.content.readuntil(b"event: hello")
            target = sim.devices[5]
            t0 = time.monotonic()
            sim.publish(target, "status", target.status("degraded", ["disk"]), retain=True)
            while True:
                async with asyncio.timeout(5):
                    line = await stream.content.readline()
                if line.startswith(b"data: ") and b'"degraded"' in line:
                    rows = json.loads(line[6:])["rows"]
                    if any(r["id"] == target.id and r["state"] == "degraded" for r in rows):
                        break
            sse_delay = time.monotonic() - t0
        assert sse_delay < 1.0, sse_delay

        # Events land on the device page.
        for _ in range(3):
            sim.publish(target, "events", target.event("recording.added"), retain=False)
        dev = await _until(
            http, f"{url}/api/device/{target.id}", lambda d: len(d["events"]) >= 3, 10
        )
        assert [e["seq"] for e in dev["events"]] == [1, 2, 3]

        # The will: a dead connection turns the device offline within 2 s.
        t0 = time.monotonic()
        sim.kill(killed)
        await _until(http, f"{url}/api/fleet", lambda d: d["summary"]["states"]["offline"] == 1, 10)
        will_delay = time.monotonic() - t0
        assert will_delay < 2.0, will_delay
    print(f"fleet: SSE delay {sse_delay * 1000:.0f} ms, will to offline {will_delay:.2f} s")


@settings(max_examples=300, deadline=None)
@given(
    topic=st.sampled_from(["edge/d/status", "edge/d/telemetry", "edge/d/events", "x/y"]),
    payload=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["state", "session", "reasons", "clock", "retention", "health", "storage",
                     "sources", "outbox", "seq", "type", "ts", "site", "overdue_count", "depth"]
                ),
                inner,
                max_size=5,
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    ),
)  # fmt: skip
def test_any_payload_is_a_verdict_never_an_exception(topic: str, payload: bytes) -> None:
    f = Fleet()
    f.apply(topic, payload, 0.0)
    json.dumps(f.summary())
    json.dumps(f.rows())
    json.dumps(f.device("d"))


def test_the_model_stays_bounded() -> None:
    f = Fleet(max_devices=10, events_per_device=5, recent_events=20)
    for i in range(50):
        for k in range(20):
            payload = json.dumps({"id": "x", "seq": k, "ts": "t", "type": "a"}).encode()
            f.apply(f"edge/d{i}/events", payload, 0.0)
    assert len(f.devices) == 10 and f.rejected["too_many_devices"] == 40 * 20
    assert all(len(d.events) == 5 for d in f.devices.values()) and len(f.recent) == 20
    for bad in (b"[", b"1", b"x" * 70_000):
        assert f.apply("edge/d1/status", bad, 0.0) is None
    assert f.apply("edge/d1/extra/status", b"{}", 0.0) is None
    assert f.rejected["malformed"] == 2 and f.rejected["too_large"] == 1
    assert f.rejected["topic"] == 1


PAGE = """
(async () => {
  const until = async (check, ms) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const v = check();
      if (v) return v;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('timed out: ' + check);
  };
  const shown = (id) => document.getElementById(id)?.textContent;
  await until(() => shown('s-devices') === '%d' && shown('s-overdue') === '%d', 15000);
  return {
    devices: +document.getElementById('s-devices').textContent,
    online: +document.getElementById('s-online').textContent,
    offline: +document.getElementById('s-offline').textContent,
    overdue: +document.getElementById('s-overdue').textContent,
    rows: document.querySelectorAll('#rows tr').length,
    path: location.pathname + location.search,
  };
})()
"""

LOADED = "location.pathname === '/' && document.readyState === 'complete'"

OFFLINE = """
(async () => {
  const t0 = performance.now();
  while (performance.now() - t0 < 5000) {
    const tr = document.querySelector('#rows tr[data-id="%s"]');
    if (tr && tr.className === 'offline') return performance.now() - t0;
    await new Promise((r) => setTimeout(r, 20));
  }
  return -1;
})()
"""


async def test_page_in_chromium(fleet: dict[str, Any]) -> None:
    browser = pytest.importorskip("tests.support.browser")
    if browser.CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    sim: Simulator = fleet["sim"]
    killed = sim.devices[1]
    sim.own_connection(killed)
    await asyncio.sleep(0.3)
    sim.announce()
    want = expected(sim)
    tmp: Path = fleet["tmp"]
    async with browser.chromium(tmp) as cdp:
        await cdp.call("Page.enable")
        await cdp.call("Page.navigate", url=f"{fleet['url']}/?token={TOKEN}")
        # Past the redirect that turns the token into a cookie.
        async with asyncio.timeout(15):
            while True:
                try:
                    if await cdp.evaluate(LOADED):
                        break
                except (AssertionError, RuntimeError):
                    pass
                await asyncio.sleep(0.1)
        got = await cdp.evaluate(PAGE % (N, want["overdue"]))
        assert got["devices"] == N and got["online"] == N and got["offline"] == 0, got
        assert got["overdue"] == want["overdue"] and got["rows"] == N, got
        assert got["path"] == "/", "the token must leave the address bar"
        sim.kill(killed)
        t0 = time.monotonic()
        ms = await cdp.evaluate(OFFLINE % killed.id)
        assert ms >= 0 and time.monotonic() - t0 < 2.0, ms
        shot = await cdp.call("Page.captureScreenshot", format="png")
        (tmp / "fleet.png").write_bytes(base64.b64decode(shot["data"]))
        assert (tmp / "fleet.png").stat().st_size > 1000
    print(f"fleet page: offline shown {ms:.0f} ms after the kill; screenshot {tmp / 'fleet.png'}")
